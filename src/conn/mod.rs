//! Connection admission: how many connections Broker holds, from whom, and for how long.
//!
//! Every accepted connection is counted from `accept` until its socket is closed, on the plain
//! and the TLS listener alike, and on the lean stream path too. A connection is in one of four
//! phases:
//!
//! - **head**: accepted, no complete request head yet (TLS handshake and the lean path's first
//!   look included), closed after `--header-timeout`;
//! - **body**: every request on it is still receiving its body; `/insert` and the other JSON
//!   endpoints answer 408 after `--body-timeout`, and the connection is closed a little later
//!   if nothing did;
//! - **idle**: between requests (keep-alive), closed after `--idle-timeout`;
//! - **busy**: a request is being handled or answered (an event stream stays busy for its
//!   life): never timed out here.
//!
//! The first three are *waiting* for their client. When `--max-connections` are open, a new
//! connection closes the oldest waiting one to make room, so half-open connections, however
//! many and from however many addresses, cannot keep a prompt client out; only when every
//! connection is busy is the new one refused. The process therefore never runs out of file
//! descriptors and its accept loop never stalls. Per address, `--max-connections-per-ip`
//! caps the open connections (a trusted proxy is exempt: its clients are told apart by
//! `X-Forwarded-For` once their request arrives).
//!
//! The timeouts need no timer per connection: one sweeper task closes expired connections,
//! which are kept in order of their phase's start.

mod acceptor;
mod io;
pub mod listeners;
mod per_ip;
mod service;

pub use acceptor::AdmitAcceptor;
pub use io::{ConnSlot, Tracked};
pub use per_ip::{IpSlot, PerIp};
pub use service::{RequestBody, ResponseBody, TrackService};

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

use crate::client_ip::TrustedProxies;
use crate::metrics::Metrics;

/// Connections evicted but not yet closed beyond which new ones are refused instead: every
/// eviction frees its descriptor a moment later, so the count never overshoots the cap by more.
const EVICTION_SLACK: usize = 64;

/// Extra time a connection receiving a body gets after `--body-timeout`, so that the 408 of a
/// handler reading it goes out before the connection is closed.
const BODY_GRACE: Duration = Duration::from_secs(2);

/// Most connections one sweep closes; more expired ones wait for the next sweep, [`SWEEP_PACE`]
/// later (10,000 a second: a flood of 20,000 half-open connections is closed within 2 s of
/// its timeout).
const SWEEP_BUDGET: usize = 500;

/// Pause between sweeps while expired connections remain.
const SWEEP_PACE: Duration = Duration::from_millis(50);

/// The limits a [`Connections`] enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most open connections (streams included).
    pub max_connections: usize,
    /// Most open connections from one address.
    pub max_per_ip: u32,
    /// Time to send a complete request head (and finish the TLS handshake).
    pub header_timeout: Duration,
    /// Time to send a request body.
    pub body_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time a write to the client may make no progress (`--write-timeout`): a client that
    /// stops reading a response or an event stream served by the general server (TLS, HTTP/2)
    /// is cut off after it, as the lean stream path does.
    pub write_timeout: Duration,
}

/// The phases of a connection; the first three are waiting and have a queue each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Head = 0,
    Body = 1,
    Idle = 2,
    Busy = 3,
}

impl Phase {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Head,
            1 => Self::Body,
            2 => Self::Idle,
            _ => Self::Busy,
        }
    }
}

/// Every open connection of a server, and the limits they are held to.
pub struct Connections {
    limits: Limits,
    trusted: TrustedProxies,
    metrics: Arc<Metrics>,
    /// Open connections (their sockets not yet closed).
    open: AtomicUsize,
    /// Connections told to close whose sockets are not closed yet.
    closing: AtomicUsize,
    per_ip: PerIp,
    waiting: Mutex<Waiting>,
}

/// The waiting connections, one queue per waiting phase, oldest first.
#[derive(Default)]
struct Waiting {
    next_key: u64,
    queues: [BTreeMap<u64, Entry>; 3],
}

struct Entry {
    since: Instant,
    conn: Arc<Conn>,
}

/// What admission knows of one connection, shared by its socket, its service and its
/// requests. The counters and the phase change only with the waiting queues locked.
#[derive(Debug, Default)]
pub struct Conn {
    phase: AtomicU8,
    /// Key in its phase's queue.
    key: AtomicU64,
    /// Requests whose response has not ended.
    requests: AtomicU32,
    /// Requests whose body has not ended.
    bodies: AtomicU32,
    /// Told to close: its socket fails every read and write from now on.
    closed: AtomicBool,
    /// The task reading the socket, woken to see `closed`.
    waker: AtomicWaker,
}

impl Conn {
    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    /// Whether the connection was told to close.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address has `--max-connections-per-ip` open.
    PerIp,
    /// `--max-connections` are open and all of them busy.
    Full,
}

impl Connections {
    /// Connection bookkeeping under `limits`; peers in `trusted` skip the per-address cap.
    pub fn new(limits: Limits, trusted: TrustedProxies, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            per_ip: PerIp::new(limits.max_per_ip),
            limits,
            trusted,
            metrics,
            open: AtomicUsize::new(0),
            closing: AtomicUsize::new(0),
            waiting: Mutex::new(Waiting::default()),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a connection from `peer`: counts it (making room by closing the oldest waiting
    /// connection at the cap) and queues it in the head phase.
    ///
    /// # Errors
    /// The [`Refusal`]; the connection should be closed.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<(Arc<Conn>, ConnSlot), Refusal> {
        let ip = peer.ip().to_canonical();
        let counted_ip = if self.trusted.trusts(ip) {
            None
        } else if self.per_ip.try_take(ip) {
            Some(ip)
        } else {
            self.metrics.refused_connections.inc();
            return Err(Refusal::PerIp);
        };
        // From here the slot gives everything back if the connection is refused.
        let slot = ConnSlot::new(self.clone(), counted_ip);
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics.connections.inc();
        if open > self.limits.max_connections && !self.evict_oldest() {
            self.metrics.refused_connections.inc();
            return Err(Refusal::Full);
        }
        let conn = Arc::new(Conn::default());
        let mut waiting = self.lock();
        Self::enqueue(&mut waiting, &conn, Phase::Head, Instant::now());
        drop(waiting);
        Ok((conn, slot))
    }

    /// Closes the oldest waiting connection; `false` when none is waiting or too many are
    /// already closing.
    fn evict_oldest(&self) -> bool {
        if self.closing.load(Ordering::Acquire) >= EVICTION_SLACK {
            return false;
        }
        let mut waiting = self.lock();
        let oldest = (0..waiting.queues.len())
            .filter_map(|q| waiting.queues[q].keys().next().map(|&key| (key, q)))
            .min();
        let Some((key, queue)) = oldest else {
            return false;
        };
        if let Some(entry) = waiting.queues[queue].remove(&key) {
            self.close(&entry.conn);
            self.metrics.evicted_connections.inc();
        }
        true
    }

    /// Tells a connection (already out of its queue) to close.
    fn close(&self, conn: &Conn) {
        conn.phase.store(Phase::Busy as u8, Ordering::Relaxed);
        conn.closed.store(true, Ordering::Release);
        self.closing.fetch_add(1, Ordering::AcqRel);
        conn.waker.wake();
    }

    fn enqueue(waiting: &mut Waiting, conn: &Arc<Conn>, phase: Phase, now: Instant) {
        conn.phase.store(phase as u8, Ordering::Relaxed);
        if phase == Phase::Busy {
            return;
        }
        let key = waiting.next_key;
        waiting.next_key += 1;
        conn.key.store(key, Ordering::Relaxed);
        waiting.queues[phase as usize].insert(
            key,
            Entry {
                since: now,
                conn: conn.clone(),
            },
        );
    }

    fn dequeue(waiting: &mut Waiting, conn: &Conn) {
        let phase = conn.phase();
        if phase != Phase::Busy {
            waiting.queues[phase as usize].remove(&conn.key.load(Ordering::Relaxed));
            conn.phase.store(Phase::Busy as u8, Ordering::Relaxed);
        }
    }

    /// Moves `conn` to the phase its request counters say, unless it is already there.
    fn settle(waiting: &mut Waiting, conn: &Arc<Conn>) {
        if conn.is_closed() {
            return;
        }
        let requests = conn.requests.load(Ordering::Relaxed);
        let bodies = conn.bodies.load(Ordering::Relaxed);
        let phase = if requests == 0 {
            Phase::Idle
        } else if bodies >= requests {
            Phase::Body
        } else {
            Phase::Busy
        };
        if phase != conn.phase() {
            Self::dequeue(waiting, conn);
            Self::enqueue(waiting, conn, phase, Instant::now());
        }
    }

    /// A request head has arrived on `conn`; `body` when a body follows it.
    pub fn request_started(&self, conn: &Arc<Conn>, body: bool) {
        let mut waiting = self.lock();
        conn.requests.fetch_add(1, Ordering::Relaxed);
        if body {
            conn.bodies.fetch_add(1, Ordering::Relaxed);
        }
        Self::settle(&mut waiting, conn);
    }

    /// A request body on `conn` has been read to its end, or dropped.
    pub fn body_ended(&self, conn: &Arc<Conn>) {
        let mut waiting = self.lock();
        let bodies = conn.bodies.load(Ordering::Relaxed);
        conn.bodies
            .store(bodies.saturating_sub(1), Ordering::Relaxed);
        Self::settle(&mut waiting, conn);
    }

    /// A response on `conn` has ended (or was dropped).
    pub fn response_ended(&self, conn: &Arc<Conn>) {
        let mut waiting = self.lock();
        let requests = conn.requests.load(Ordering::Relaxed);
        conn.requests
            .store(requests.saturating_sub(1), Ordering::Relaxed);
        Self::settle(&mut waiting, conn);
    }

    /// `conn` carries an event stream from now on (the lean path): busy for good.
    pub fn stream_started(&self, conn: &Conn) {
        let mut waiting = self.lock();
        Self::dequeue(&mut waiting, conn);
    }

    /// `conn`'s socket is closed: it leaves its queue.
    fn forget(&self, conn: &Conn) {
        let mut waiting = self.lock();
        if conn.is_closed() {
            self.closing.fetch_sub(1, Ordering::AcqRel);
        } else {
            Self::dequeue(&mut waiting, conn);
        }
    }

    /// A slot of the count and of `ip`'s share is given back.
    fn release(&self, ip: Option<IpAddr>) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.metrics.connections.dec();
        if let Some(ip) = ip {
            self.per_ip.give_back(ip);
        }
    }

    /// Closes connections whose phase has lasted longer than its timeout, as of `now`, oldest
    /// first and at most `budget` of them; returns how many it closed.
    pub fn sweep(&self, now: Instant, budget: usize) -> usize {
        let timeouts = [
            self.limits.header_timeout,
            self.limits.body_timeout + BODY_GRACE,
            self.limits.idle_timeout,
        ];
        let mut closed = 0;
        let mut waiting = self.lock();
        for (queue, timeout) in timeouts.into_iter().enumerate() {
            while closed < budget {
                let Some(entry) = waiting.queues[queue].first_entry() else {
                    break;
                };
                if now.saturating_duration_since(entry.get().since) < timeout {
                    break;
                }
                let entry = entry.remove();
                self.close(&entry.conn);
                self.metrics.timed_out_connections.inc();
                closed += 1;
            }
        }
        closed
    }

    /// Runs [`Connections::sweep`] a few times per shortest timeout, until the connections
    /// are dropped. While many connections expire at once (a flood of half-open ones reaching
    /// the header timeout together), it closes [`SWEEP_BUDGET`] every [`SWEEP_PACE`] rather
    /// than all at once: each close wakes the connection's task, and tens of thousands woken
    /// together would queue a prompt client's request behind them.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let shortest = self
            .limits
            .header_timeout
            .min(self.limits.idle_timeout)
            .min(self.limits.body_timeout);
        let period = (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let connections = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                loop {
                    let Some(connections) = connections.upgrade() else {
                        return;
                    };
                    if connections.sweep(Instant::now(), SWEEP_BUDGET) < SWEEP_BUDGET {
                        break;
                    }
                    drop(connections);
                    tokio::time::sleep(SWEEP_PACE).await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
