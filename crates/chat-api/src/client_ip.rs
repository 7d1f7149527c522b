//! Which client a request comes from, for per-address rate limits: the peer address, or, when the
//! peer is a reverse proxy the operator trusts (`TRUSTED_PROXIES`), the address that proxy reports
//! in `X-Forwarded-For`.
//!
//! Only a trusted peer's header counts: anyone can send `X-Forwarded-For`, so honouring it from
//! everyone would let a client pick a fresh address per request and escape every per-address
//! limit. Behind a chain of trusted proxies, the header is read from the right (the entry the
//! nearest proxy added) and the first address that is not itself a trusted proxy is the client.

use std::{fmt, net::IpAddr, str::FromStr};

use axum::http::HeaderMap;

/// Addresses and networks whose `X-Forwarded-For` is believed, e.g. `127.0.0.1,10.0.0.0/8`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Network>);

#[derive(Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(ToString::to_string))
            .finish()
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of addresses and CIDR networks; empty trusts no one.
    fn from_str(list: &str) -> Result<Self, String> {
        let mut networks = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, prefix) = match item.split_once('/') {
                Some((addr, prefix)) => (addr, Some(prefix)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or network"))?;
            let addr = addr.to_canonical();
            let bits = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => bits,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= bits)
                    .ok_or_else(|| format!("{item:?}: the prefix must be 0 to {bits}"))?,
            };
            networks.push(Network { addr, prefix });
        }
        Ok(TrustedProxies(networks))
    }
}

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client of a request from `peer` with `headers` (see the module docs). `None` when the
    /// server recorded no peer (in-process tests).
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.contains(peer) {
            return Some(peer);
        }
        // Every X-Forwarded-For header, in order, as one list; read from the right.
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for entry in forwarded.iter().rev() {
            let Ok(ip) = entry.parse::<IpAddr>() else {
                // Garbage a trusted proxy passed on: the last address known good stands.
                break;
            };
            client = ip.to_canonical();
            if !self.contains(client) {
                break;
            }
        }
        Some(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        headers
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn only_a_trusted_peer_may_name_the_client() {
        let trusted: TrustedProxies = "127.0.0.1, 10.0.0.0/8".parse().unwrap();
        let spoofed = headers(&["6.6.6.6"]);
        // An untrusted peer's header is ignored.
        assert_eq!(trusted.client_ip(ip("8.8.8.8"), &spoofed), ip("8.8.8.8"));
        // The proxy's entry (the rightmost) names the client.
        assert_eq!(
            trusted.client_ip(ip("127.0.0.1"), &headers(&["6.6.6.6, 1.2.3.4"])),
            ip("1.2.3.4")
        );
        // Through a chain of trusted proxies, across repeated headers.
        assert_eq!(
            trusted.client_ip(ip("10.1.1.1"), &headers(&["1.2.3.4", "10.0.0.7"])),
            ip("1.2.3.4")
        );
        // No header, or garbage: the peer (or the last good entry).
        assert_eq!(
            trusted.client_ip(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        assert_eq!(
            trusted.client_ip(ip("127.0.0.1"), &headers(&["1.2.3.4, junk"])),
            ip("127.0.0.1")
        );
        // IPv4-mapped IPv6 peers match IPv4 entries.
        assert_eq!(
            trusted.client_ip(ip("::ffff:127.0.0.1"), &headers(&["2001:db8::1"])),
            ip("2001:db8::1")
        );
        assert_eq!(TrustedProxies::default().client_ip(None, &spoofed), None);
        assert_eq!(
            TrustedProxies::default().client_ip(ip("127.0.0.1"), &spoofed),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn lists_parse_or_say_what_is_wrong() {
        let list: TrustedProxies = "::1, 192.168.0.0/16,,".parse().unwrap();
        assert_eq!(format!("{list:?}"), r#"["::1/128", "192.168.0.0/16"]"#);
        assert!(list.contains("192.168.4.2".parse().unwrap()));
        assert!(!list.contains("192.169.0.1".parse().unwrap()));
        assert_eq!(
            "".parse::<TrustedProxies>().unwrap(),
            TrustedProxies::default()
        );
        assert!(
            "10.0.0.0/33"
                .parse::<TrustedProxies>()
                .unwrap_err()
                .contains("prefix")
        );
        assert!("proxy.local".parse::<TrustedProxies>().is_err());
        let all: TrustedProxies = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
    }
}
