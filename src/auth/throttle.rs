//! Failed-login throttling, per client address and per username.
//!
//! Each failed password check (at `/login`, with `Authorization: Basic`, or as the old password
//! of a password change) counts against the client's address and against the username. A count
//! runs in a fixed window of `--login-window` seconds from its first failure; once it reaches its
//! limit, further attempts get `429` with `Retry-After` (the rest of the window) without any
//! Argon2 work. So a lockout never lasts longer than one window.
//!
//! An attacker must not be able to lock a user out: the per-username limit does not apply to an
//! address that has signed in successfully as that user in the last [`KNOWN_FOR`] (a "known"
//! address), and failures from a known address do not count against the username. A user
//! under attack keeps signing in from where they did before; only from a new address may they
//! wait, at most one window.
//!
//! A router served without connection info (mounted into another app that does not provide
//! it) sees every client as `0.0.0.0`: then no address is known, the per-address limit is
//! skipped (it would be one limit for everyone), and the per-username limit applies to all.
//!
//! Attempts are charged when they start and refunded when they succeed, so concurrent attempts
//! cannot overrun a limit. Each map holds at most [`MAX_TRACKED`] entries: expired ones go first,
//! then the oldest.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::rejection::AuthError;

/// How long a successful sign-in makes its address "known" for that user.
pub const KNOWN_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most entries in each tracking map (addresses, usernames, known addresses).
pub const MAX_TRACKED: usize = 65_536;

/// Limits of the throttle.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures one address may make per window (0: unlimited).
    pub per_ip: u32,
    /// Failures from addresses not known for the user, per username and window (0: unlimited).
    pub per_user: u32,
    /// Length of a window, and so the longest lockout.
    pub window: Duration,
}

/// A failure count in a window.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u32,
}

impl Window {
    fn active(&self, now: Instant, length: Duration) -> bool {
        now.saturating_duration_since(self.started) < length
    }

    /// Whole seconds (rounded up) until the window ends.
    fn retry_after(&self, now: Instant, length: Duration) -> u64 {
        let left = (self.started + length).saturating_duration_since(now);
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
    }
}

#[derive(Default)]
struct Maps {
    by_ip: HashMap<IpAddr, Window>,
    by_user: HashMap<String, Window>,
    known: HashMap<(IpAddr, String), Instant>,
}

/// Failed-login counts and known addresses.
pub struct LoginThrottle {
    limits: Limits,
    max_tracked: usize,
    maps: Mutex<Maps>,
}

impl LoginThrottle {
    /// A throttle with these limits.
    pub fn new(limits: Limits) -> Self {
        Self::with_capacity(limits, MAX_TRACKED)
    }

    fn with_capacity(limits: Limits, max_tracked: usize) -> Self {
        Self {
            limits,
            max_tracked: max_tracked.max(1),
            maps: Mutex::new(Maps::default()),
        }
    }

    /// Starts a password check by `ip` for `user` (`None` for a name that cannot exist, which
    /// counts against the address only).
    ///
    /// # Errors
    /// 429 with `Retry-After` while the address, or the username (from an address not known for
    /// it), is over its limit.
    pub fn begin(&self, ip: IpAddr, user: Option<&str>) -> Result<Attempt<'_>, AuthError> {
        self.begin_at(ip, user, Instant::now())
    }

    fn begin_at(
        &self,
        ip: IpAddr,
        user: Option<&str>,
        now: Instant,
    ) -> Result<Attempt<'_>, AuthError> {
        let Limits {
            per_ip,
            per_user,
            window,
        } = self.limits;
        // Without a client address, one per-address count would be everyone's.
        let per_ip = if ip.is_unspecified() { 0 } else { per_ip };
        let mut maps = self.maps.lock().unwrap_or_else(PoisonError::into_inner);
        if per_ip > 0
            && let Some(w) = maps.by_ip.get(&ip)
            && w.active(now, window)
            && w.count >= per_ip
        {
            return Err(AuthError::throttled(
                w.retry_after(now, window),
                "too many failed logins from this address; retry later",
            ));
        }
        let user = user.map(str::to_owned);
        let known = |name: &String| {
            maps.known
                .get(&(ip, name.clone()))
                .is_some_and(|at| now.saturating_duration_since(*at) < KNOWN_FOR)
        };
        let charge_user = per_user > 0 && user.as_ref().is_some_and(|name| !known(name));
        if let Some(name) = user.as_ref().filter(|_| charge_user)
            && let Some(w) = maps.by_user.get(name)
            && w.active(now, window)
            && w.count >= per_user
        {
            return Err(AuthError::throttled(
                w.retry_after(now, window),
                "too many failed logins for this user; retry later",
            ));
        }
        if per_ip > 0 {
            charge(&mut maps.by_ip, ip, now, window, self.max_tracked);
        }
        if let Some(name) = user.as_ref().filter(|_| charge_user) {
            charge(
                &mut maps.by_user,
                name.clone(),
                now,
                window,
                self.max_tracked,
            );
        }
        Ok(Attempt {
            throttle: self,
            ip,
            user,
            charged_ip: per_ip > 0,
            charged_user: charge_user,
            settled: false,
        })
    }

    fn settle(&self, attempt: &Attempt<'_>, succeeded: bool, now: Instant) {
        let mut maps = self.maps.lock().unwrap_or_else(PoisonError::into_inner);
        if attempt.charged_ip {
            refund(&mut maps.by_ip, &attempt.ip);
        }
        if let Some(user) = attempt.user.as_ref() {
            if attempt.charged_user {
                refund(&mut maps.by_user, user);
            }
            if succeeded && !attempt.ip.is_unspecified() {
                let key = (attempt.ip, user.clone());
                if !maps.known.contains_key(&key) {
                    make_room(
                        &mut maps.known,
                        self.max_tracked,
                        |at| now.saturating_duration_since(*at) >= KNOWN_FOR,
                        |at| *at,
                    );
                }
                maps.known.insert(key, now);
            }
        }
    }
}

/// One password check in progress. [`succeeded`](Self::succeeded) refunds its charge and makes
/// the address known for the user; [`failed`](Self::failed) keeps the charge; dropping it
/// unsettled (the check never ran) refunds it.
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    ip: IpAddr,
    user: Option<String>,
    charged_ip: bool,
    charged_user: bool,
    settled: bool,
}

impl Attempt<'_> {
    /// The password was right.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.throttle.settle(&self, true, Instant::now());
    }

    /// The password was wrong (or the user unknown or revoked): the failure counts.
    pub fn failed(mut self) {
        self.settled = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle.settle(self, false, Instant::now());
        }
    }
}

/// Counts one failure for `key`, opening a new window when there is none or it has ended.
fn charge<K: Hash + Eq + Clone>(
    map: &mut HashMap<K, Window>,
    key: K,
    now: Instant,
    window: Duration,
    max: usize,
) {
    if let Some(w) = map.get_mut(&key) {
        if w.active(now, window) {
            w.count = w.count.saturating_add(1);
        } else {
            *w = Window {
                started: now,
                count: 1,
            };
        }
        return;
    }
    make_room(map, max, |w| !w.active(now, window), |w| w.started);
    map.insert(
        key,
        Window {
            started: now,
            count: 1,
        },
    );
}

/// Takes back one charged failure.
fn refund<K: Hash + Eq>(map: &mut HashMap<K, Window>, key: &K) {
    if let Some(w) = map.get_mut(key) {
        w.count = w.count.saturating_sub(1);
        if w.count == 0 {
            map.remove(key);
        }
    }
}

/// Makes room for one more entry: drops expired entries, then the oldest, below `max`.
fn make_room<K: Hash + Eq + Clone, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    expired: impl Fn(&V) -> bool,
    age: impl Fn(&V) -> Instant,
) {
    if map.len() < max {
        return;
    }
    map.retain(|_, v| !expired(v));
    while map.len() >= max {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| age(v))
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    const MINUTE: Duration = Duration::from_secs(60);

    fn throttle(per_ip: u32, per_user: u32) -> LoginThrottle {
        LoginThrottle::new(Limits {
            per_ip,
            per_user,
            window: MINUTE,
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn fail(t: &LoginThrottle, from: IpAddr, user: &str, now: Instant) {
        t.begin_at(from, Some(user), now)
            .expect("admitted")
            .failed();
    }

    #[test]
    fn an_address_is_limited_across_usernames() {
        let t = throttle(3, 0);
        let now = Instant::now();
        for name in ["a", "b", "c"] {
            fail(&t, ip(1), name, now);
        }
        let err = t
            .begin_at(ip(1), Some("d"), now + Duration::from_millis(500))
            .err()
            .expect("limited");
        assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.retry_after, Some(60), "rounded up");
        assert!(t.begin_at(ip(2), Some("d"), now).is_ok(), "another address");
        assert!(
            t.begin_at(ip(1), None, now + MINUTE).is_ok(),
            "the lockout ends with the window"
        );
    }

    #[test]
    fn a_username_is_limited_except_from_known_addresses() {
        let t = throttle(0, 2);
        let now = Instant::now();
        t.begin_at(ip(1), Some("ada"), now)
            .expect("admitted")
            .succeeded();
        fail(&t, ip(6), "ada", now);
        fail(&t, ip(7), "ada", now);
        let err = t.begin_at(ip(8), Some("ada"), now).err().expect("limited");
        assert_eq!(err.retry_after, Some(60));
        // Ada's own address still gets through, and her typos there do not lock her out.
        for _ in 0..5 {
            fail(&t, ip(1), "ada", now);
        }
        t.begin_at(ip(1), Some("ada"), now)
            .expect("known address")
            .succeeded();
        // Other users are not affected.
        assert!(t.begin_at(ip(8), Some("bob"), now).is_ok());
        // Known addresses are forgotten after a while.
        assert!(
            t.begin_at(ip(1), Some("ada"), now + KNOWN_FOR + MINUTE / 2)
                .is_ok(),
            "the window has ended too"
        );
    }

    #[test]
    fn without_an_address_only_usernames_count() {
        let t = throttle(1, 2);
        let nowhere = IpAddr::from([0, 0, 0, 0]);
        let now = Instant::now();
        t.begin_at(nowhere, Some("ada"), now)
            .expect("admitted")
            .succeeded();
        fail(&t, nowhere, "ada", now);
        fail(&t, nowhere, "bob", now);
        fail(&t, nowhere, "ada", now);
        assert!(
            t.begin_at(nowhere, Some("ada"), now).is_err(),
            "no address is known"
        );
        assert!(
            t.begin_at(nowhere, Some("bob"), now).is_ok(),
            "no shared limit"
        );
    }

    #[test]
    fn concurrent_attempts_are_charged_and_successes_refunded() {
        let t = throttle(2, 0);
        let now = Instant::now();
        let first = t.begin_at(ip(1), Some("a"), now).expect("first");
        let second = t.begin_at(ip(1), Some("a"), now).expect("second");
        assert!(t.begin_at(ip(1), Some("a"), now).is_err(), "both in flight");
        first.succeeded();
        drop(second);
        assert!(t.begin_at(ip(1), Some("a"), now).is_ok(), "refunded");
    }

    #[test]
    fn maps_are_bounded() {
        let t = LoginThrottle::with_capacity(
            Limits {
                per_ip: 5,
                per_user: 5,
                window: MINUTE,
            },
            8,
        );
        let now = Instant::now();
        for i in 0..100u8 {
            let at = now + Duration::from_millis(u64::from(i));
            fail(&t, ip(i), &format!("user{i}"), at);
            t.begin_at(ip(i), Some("known"), at)
                .expect("admitted")
                .succeeded();
        }
        let maps = t.maps.lock().expect("lock");
        assert!(maps.by_ip.len() <= 8, "{}", maps.by_ip.len());
        assert!(maps.by_user.len() <= 8);
        assert!(maps.known.len() <= 8);
        assert!(
            maps.known.contains_key(&(ip(99), "known".to_owned())),
            "the newest stays"
        );
    }
}
