//! Who is on the other end: the connection's peer address or, behind a reverse proxy that
//! `--trusted-proxies` names, the client address that proxy reports in `X-Forwarded-For`.
//!
//! Per-IP limits (connections, streams, failed logins) key on this address, so a client must not
//! be able to choose it: `X-Forwarded-For` is read only when the peer is a trusted proxy, and
//! then from the right, skipping the trusted hops, so that entries a client wrote itself at the
//! left are never taken.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use crate::state::AppState;

/// The proxies whose `X-Forwarded-For` is believed: IP addresses and CIDR networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl FromStr for TrustedProxies {
    type Err = String;

    /// Parses a comma-separated list such as `127.0.0.1,10.0.0.0/8,::1` (empty: none).
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("'{item}' is neither an IP address nor a CIDR network"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether no proxy is trusted (the default).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client's address for a request that came from `peer`: `peer` itself unless it is a
    /// trusted proxy, else the rightmost `X-Forwarded-For` entry that is not a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            // A hop that is not an address (`unknown`, garbage) ends the chain: the last
            // trusted hop is the best answer there is.
            let Ok(ip) = parse_hop(hop.trim()) else {
                break;
            };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, with or without a port (`[::1]:80`, `1.2.3.4:80`).
fn parse_hop(hop: &str) -> Result<IpAddr, std::net::AddrParseError> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|addr| addr.ip()))
}

/// The calling client's IP address, as per-IP limits see it (see the module doc). A router
/// served without connection info (mounted into another app) sees `0.0.0.0` for every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The client address of a request from its parts.
    pub fn of(parts: &Parts, trusted: &TrustedProxies) -> Self {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        Self(trusted.client_ip(peer, &parts.headers))
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts, &state.config.trusted_proxies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in xff {
            map.append("x-forwarded-for", value.parse().expect("header value"));
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn parses_addresses_and_networks() {
        let t: TrustedProxies = "127.0.0.1, 10.0.0.0/8,::1".parse().expect("list");
        assert!(t.trusts(ip("127.0.0.1")));
        assert!(t.trusts(ip("10.9.8.7")));
        assert!(t.trusts(ip("::1")));
        assert!(
            t.trusts(ip("::ffff:10.1.1.1")),
            "IPv4-mapped addresses count"
        );
        assert!(!t.trusts(ip("11.0.0.1")));
        assert!("".parse::<TrustedProxies>().expect("empty").is_empty());
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.local".parse::<TrustedProxies>().is_err());
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_peers() {
        let none = TrustedProxies::default();
        let spoofed = headers(&["1.2.3.4"]);
        assert_eq!(none.client_ip(ip("9.9.9.9"), &spoofed), ip("9.9.9.9"));

        let t: TrustedProxies = "10.0.0.0/8".parse().expect("list");
        assert_eq!(t.client_ip(ip("9.9.9.9"), &spoofed), ip("9.9.9.9"));
        assert_eq!(t.client_ip(ip("10.0.0.1"), &spoofed), ip("1.2.3.4"));
        // A client's own entries at the left are skipped: the rightmost untrusted hop wins.
        let chain = headers(&["6.6.6.6, 1.2.3.4", "10.0.0.2"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &chain), ip("1.2.3.4"));
        // Only trusted hops: the leftmost of them.
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &headers(&["10.0.0.3"])),
            ip("10.0.0.3")
        );
        // No header: the proxy itself.
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        // Garbage ends the chain at the last trusted hop.
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &headers(&["1.2.3.4, unknown"])),
            ip("10.0.0.1")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &headers(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
    }
}
