//! Where webhooks may go. Endpoints reach public addresses only: loopback, private,
//! link-local, shared (CGNAT), multicast and other special addresses are refused
//! unless `webhooks.allow_networks` holds them. The check runs on every address a
//! name resolves to, at each connection (so a name that later resolves inward is
//! refused then), and on addresses written in the URL.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Parses the allow-list; `Err` holds the index and reason of the first bad entry.
pub fn parse_networks(list: &[String]) -> Result<Vec<IpNet>, (usize, String)> {
    list.iter()
        .enumerate()
        .map(|(i, text)| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| (i, format!("{text:?} is not a network such as 10.0.0.0/8 or an address")))
        })
        .collect()
}

fn special_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn special_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || (first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 (embeds IPv4)
        || ip.segments()[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible
}

/// Which addresses endpoints may reach.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allowed: Arc<[IpNet]>,
}

impl Guard {
    /// A guard allowing `allowed` besides public addresses.
    pub fn new(allowed: Vec<IpNet>) -> Guard {
        Guard { allowed: allowed.into() }
    }

    /// Whether an endpoint may reach `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let special = match ip {
            IpAddr::V4(v4) => special_v4(v4),
            IpAddr::V6(v6) => special_v6(v6),
        };
        !special || self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// Checks a URL before it is saved or used: `http` or `https`, a host, no
    /// credentials, and an address written in it permitted. `Err` says why not.
    pub fn check_url(&self, text: &str) -> Result<reqwest::Url, String> {
        if text.len() > 2048 {
            return Err("at most 2048 characters".into());
        }
        let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be http or https".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials (the signature authenticates tierlog)".into());
        }
        let ip = match url.host() {
            None => return Err("has no host".into()),
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => name.parse::<IpAddr>().ok(),
        };
        if let Some(ip) = ip.filter(|ip| !self.permits(*ip)) {
            return Err(format!("{ip} is an internal address; add it to webhooks.allow_networks to allow it"));
        }
        if url.host_str().is_some_and(|h| h.eq_ignore_ascii_case("localhost") || h.ends_with(".localhost")) && !self.permits(IpAddr::V4(Ipv4Addr::LOCALHOST)) {
            return Err("localhost is an internal address; add 127.0.0.1 to webhooks.allow_networks to allow it".into());
        }
        Ok(url)
    }
}

/// The resolver of the webhook client: the system's, keeping only permitted addresses.
#[derive(Debug, Clone)]
pub struct GuardedResolver(pub Guard);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = found.iter().copied().filter(|a| guard.permits(a.ip())).collect();
            if permitted.is_empty() {
                let why = if found.is_empty() { format!("{host} resolves to no address") } else { format!("{host} resolves only to internal addresses (webhooks.allow_networks)") };
                return Err(why.into());
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let guard = Guard::default();
        for internal in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "224.0.0.1"] {
            assert!(!guard.permits(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(guard.permits(public.parse().unwrap()), "{public}");
        }
        let allowed = Guard::new(parse_networks(&["127.0.0.0/8".into(), "fd00::1".into()]).unwrap());
        assert!(allowed.permits("127.0.0.1".parse().unwrap()));
        assert!(allowed.permits("fd00::1".parse().unwrap()));
        assert!(!allowed.permits("10.0.0.1".parse().unwrap()));
        assert_eq!(parse_networks(&["8.8.8.8/8".into(), "nope".into()]).unwrap_err().0, 1);
    }

    /// A name is checked at each connection, on every address it resolves to (here
    /// through the system's real resolver).
    #[tokio::test]
    async fn a_name_resolving_inward_is_refused_at_connection() {
        let name: Name = "localhost".parse().unwrap();
        // (A `Name` is used up by a resolution.)
        let refused = GuardedResolver(Guard::default()).resolve(name).await.err().expect("refused");
        assert!(refused.to_string().contains("internal addresses"), "{refused}");
        let allowed = GuardedResolver(Guard::new(parse_networks(&["127.0.0.0/8".into(), "::1".into()]).unwrap()));
        let addresses: Vec<SocketAddr> = allowed.resolve("localhost".parse().unwrap()).await.expect("allowed").collect();
        assert!(addresses.iter().all(|a| a.ip().is_loopback()) && !addresses.is_empty(), "{addresses:?}");
    }

    #[test]
    fn urls_are_checked_before_use() {
        let guard = Guard::default();
        assert!(guard.check_url("https://hooks.example.com/x").is_ok());
        assert!(guard.check_url("ftp://hooks.example.com/x").unwrap_err().contains("http"));
        assert!(guard.check_url("http://127.0.0.1:9/x").unwrap_err().contains("internal"));
        assert!(guard.check_url("http://[::1]/x").unwrap_err().contains("internal"));
        assert!(guard.check_url("http://localhost/x").unwrap_err().contains("internal"));
        assert!(guard.check_url("https://user:pw@hooks.example.com/").unwrap_err().contains("credentials"));
    }
}
