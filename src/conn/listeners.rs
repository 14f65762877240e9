//! The listening sockets, and which one a new connection waits in.
//!
//! The kernel holds connections that completed their handshake in the listening socket's
//! accept queue until the server takes them, and that queue is at most `net.core.somaxconn`
//! long (4,096 here). A flood of new connections fills it faster than two cores can empty it,
//! and then the kernel drops handshakes: a prompt client waits a second or more for its
//! retry, whatever admission does once the connection is accepted.
//!
//! So Broker listens on several sockets bound to the same port (`SO_REUSEPORT`), each with a
//! queue of its own, and a classic BPF program attached to the group picks the queue of each
//! new connection from a hash of its source address (of its /64 for IPv6): every connection
//! from one address waits in the same queue. A flood from a few addresses fills only their
//! queues; a client at another address most likely lands in an empty one and is accepted at
//! once. [`queue_of`] is the same hash in Rust, for the tests.

use std::io;
use std::net::{IpAddr, SocketAddr};

use nix::libc;
use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::{TcpListener, TcpSocket};

/// Listen backlog asked for (the kernel caps it at `net.core.somaxconn`). The usual 128
/// overflows under a burst of new connections, and a client whose SYN is dropped then waits a
/// second or more for its retry.
const LISTEN_BACKLOG: u32 = 4096;

/// Multiplier of the hash (the golden ratio in 32 bits, as in Fibonacci hashing).
const GOLDEN: u32 = 0x9E37_79B1;

/// Binds `queues` listening sockets to `addr` (one, plainly, when `queues` is 1). When the
/// port is 0 they all share the one the kernel picks. With `shared` (`--reuse-port`: several
/// processes on one port) it binds one `SO_REUSEPORT` socket and lets the kernel spread
/// connections over the processes, since a steering program sees every process's sockets.
///
/// # Errors
/// When the address is in use or cannot be bound, or the steering program is refused.
pub fn bind(addr: SocketAddr, queues: u16, shared: bool) -> io::Result<Vec<TcpListener>> {
    if shared || queues <= 1 {
        return Ok(vec![socket(addr, shared)?.listen(LISTEN_BACKLOG)?]);
    }
    // A plain bind first: it fails if anything listens on the port already (a second Broker
    // with SO_REUSEPORT would otherwise join the group and get none of the connections), and
    // it picks the port when asked for 0.
    let addr = socket(addr, false)?.local_addr()?;
    let mut listeners = Vec::with_capacity(usize::from(queues));
    for _ in 0..queues {
        listeners.push(socket(addr, true)?.listen(LISTEN_BACKLOG)?);
    }
    let mut program = steering_program(u32::from(queues));
    let program = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(io::Error::other)?,
        filter: program.as_mut_ptr(),
    };
    // The program belongs to the group: attached once, it steers for every socket.
    setsockopt(&listeners[0], sockopt::AttachReusePortCbpf, &program).map_err(io::Error::from)?;
    Ok(listeners)
}

/// A TCP socket bound to `addr`, in its group of `SO_REUSEPORT` sockets when `reuse_port`.
fn socket(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    Ok(socket)
}

/// The queue that connections from `ip` wait in, of `queues`: what the steering program
/// computes in the kernel.
pub fn queue_of(ip: IpAddr, queues: u32) -> u32 {
    let key = match ip.to_canonical() {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            u32::from_be_bytes([o[0], o[1], o[2], o[3]])
                ^ u32::from_be_bytes([o[4], o[5], o[6], o[7]])
        }
    };
    let mixed = key.wrapping_mul(GOLDEN);
    (mixed ^ (mixed >> 16)) % queues.max(1)
}

/// The classic BPF program of [`queue_of`]: it reads the source address from the IP header
/// (`SKF_NET_OFF`), hashes it and returns the index of the socket in the group.
fn steering_program(queues: u32) -> Vec<libc::sock_filter> {
    // Offsets into the IP header, relative to the network header (negative `k`, as the
    // kernel's classic BPF defines them).
    let net = |offset: i32| (libc::SKF_NET_OFF + offset).cast_unsigned();
    let op = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let ld_word = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    vec![
        // A = IP version (the high nibble of the first byte).
        op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, net(0)),
        op(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 4),
        // X = 0; for IPv6, X = the source's first 32 bits and A's next 32 are XORed into it.
        op(libc::BPF_LDX | libc::BPF_IMM, 0),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 2,
            k: 6,
        },
        op(ld_word, net(8)),
        op(libc::BPF_MISC | libc::BPF_TAX, 0),
        // IPv4: the source address is at offset 12; IPv6: bits 32..64 of the source are.
        op(ld_word, net(12)),
        op(libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X, 0),
        // A = mix(A) % queues, as in `queue_of`.
        op(libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K, GOLDEN),
        op(libc::BPF_MISC | libc::BPF_TAX, 0),
        op(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 16),
        op(libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X, 0),
        op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, queues),
        op(libc::BPF_RET | libc::BPF_A, 0),
    ]
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use super::*;

    /// Connects from `source` to `addr` and returns the index of the listener whose queue
    /// the connection waits in.
    async fn landing(listeners: &[TcpListener], source: IpAddr, addr: SocketAddr) -> usize {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .expect("bind source");
        let _client = socket.connect(addr).await.expect("connect");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            for (i, listener) in listeners.iter().enumerate() {
                let accepted = tokio::time::timeout(Duration::from_millis(1), listener.accept());
                if let Ok(Ok((_, peer))) = accepted.await {
                    assert_eq!(peer.ip(), source);
                    return i;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "nothing accepted");
        }
    }

    #[tokio::test]
    async fn the_kernel_steers_each_source_address_to_its_queue() {
        let queues = 4;
        let listeners = bind("127.0.0.1:0".parse().expect("addr"), queues, false).expect("bind");
        let addr = listeners[0].local_addr().expect("local addr");
        assert!(listeners.iter().all(|l| l.local_addr().ok() == Some(addr)));
        let mut seen = std::collections::BTreeSet::new();
        for last in 1..=24u8 {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
            let expected = queue_of(source, u32::from(queues));
            // Twice: every connection from one address waits in the same queue.
            for _ in 0..2 {
                let got = landing(&listeners, source, addr).await;
                assert_eq!(got, expected as usize, "connection from {source}");
            }
            seen.insert(expected);
        }
        assert_eq!(
            seen.len(),
            usize::from(queues),
            "24 addresses spread over every queue"
        );
    }

    #[test]
    fn a_port_in_use_is_refused_rather_than_shared() {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = first.local_addr().expect("addr");
        let error = bind(addr, 4, false).expect_err("the port is taken");
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn ipv6_hashes_its_64_bit_prefix_and_mapped_ipv4_as_ipv4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().expect("v6");
        let b: Ipv6Addr = "2001:db8:1:2:ffff:1:2:3".parse().expect("v6");
        assert_eq!(queue_of(a.into(), 64), queue_of(b.into(), 64));
        let v4 = Ipv4Addr::new(203, 0, 113, 7);
        assert_eq!(
            queue_of(v4.to_ipv6_mapped().into(), 64),
            queue_of(v4.into(), 64)
        );
        assert_eq!(queue_of(v4.into(), 1), 0);
    }
}
