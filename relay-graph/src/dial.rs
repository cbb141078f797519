//! The address others should dial this relay at, for the `[[peers]]`
//! snippet it prints: the config's `public_addr`, else the bound address,
//! else (bound to a wildcard such as `0.0.0.0`, which nobody can dial) the
//! address of the interface outbound traffic leaves by, with the bound port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// An address to dial and a comment line saying where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dialable {
    /// `HOST:PORT` (IPv6 in brackets).
    pub address: String,
    /// `# address: ...`, for the line above the snippet.
    pub comment: &'static str,
}

/// The address for the snippet of a relay bound to `bound`, looking up the
/// outbound interface only when `bound` is a wildcard and `public_addr` is
/// not set.
pub fn dialable(public_addr: Option<&str>, bound: SocketAddr) -> Dialable {
    let outbound = if public_addr.is_none() && bound.ip().is_unspecified() {
        outbound_ip(bound.ip())
    } else {
        None
    };
    choose(public_addr, bound, outbound)
}

/// [`dialable`] with the outbound interface's address given (`None`: not
/// found), so the choice is testable without a network.
pub fn choose(public_addr: Option<&str>, bound: SocketAddr, outbound: Option<IpAddr>) -> Dialable {
    if let Some(p) = public_addr {
        return Dialable {
            address: p.to_string(),
            comment: "# address: the config's public_addr",
        };
    }
    if !bound.ip().is_unspecified() {
        return Dialable {
            address: bound.to_string(),
            comment: "# address: the bound address (set public_addr to override)",
        };
    }
    match outbound.filter(|ip| !ip.is_unspecified()) {
        Some(ip) => Dialable {
            address: SocketAddr::new(ip, bound.port()).to_string(),
            comment: "# address: the outbound interface's (set public_addr to override)",
        },
        None => Dialable {
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bound.port()).to_string(),
            comment: "# address: loopback, as no outbound interface was found (set public_addr to override)",
        },
    }
}

/// The local address of the interface traffic to the public internet
/// leaves by: a UDP socket `connect`ed to a documentation address (which
/// sends nothing) reports it. IPv6 first when bound to `[::]`, then IPv4.
pub fn outbound_ip(wildcard: IpAddr) -> Option<IpAddr> {
    let v4 = || source_towards(SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), 9));
    match wildcard {
        IpAddr::V4(_) => v4(),
        IpAddr::V6(_) => source_towards(SocketAddr::new(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
            9,
        ))
        .or_else(v4),
    }
}

/// The address this host would send from towards `to`, if it has a route
/// there: a UDP socket of `to`'s family `connect`ed to it (which sends
/// nothing) reports it.
pub fn source_towards(to: SocketAddr) -> Option<IpAddr> {
    let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(to).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_snippet_address_is_always_dialable() {
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        let cases: &[(Option<&str>, &str, Option<IpAddr>, &str, &str)] = &[
            (
                Some("relay.example.org:4433"),
                "0.0.0.0:4433",
                Some(lan),
                "relay.example.org:4433",
                "public_addr",
            ),
            (
                None,
                "10.0.0.5:4433",
                Some(lan),
                "10.0.0.5:4433",
                "bound address",
            ),
            (
                None,
                "0.0.0.0:4433",
                Some(lan),
                "192.168.1.20:4433",
                "outbound interface",
            ),
            (
                None,
                "[::]:4433",
                Some("2001:db8::7".parse().unwrap()),
                "[2001:db8::7]:4433",
                "outbound interface",
            ),
            (None, "0.0.0.0:5000", None, "127.0.0.1:5000", "loopback"),
            (
                None,
                "0.0.0.0:5000",
                Some(Ipv4Addr::UNSPECIFIED.into()),
                "127.0.0.1:5000",
                "loopback",
            ),
        ];
        for (public, bound, outbound, address, why) in cases {
            let d = choose(*public, sa(bound), *outbound);
            assert_eq!(d.address, *address, "{public:?} {bound} {outbound:?}");
            assert!(d.comment.starts_with("# address: "), "{}", d.comment);
            assert!(d.comment.contains(why), "{}: {}", address, d.comment);
        }
    }

    #[test]
    fn a_wildcard_gets_a_real_address_with_the_bound_port() {
        let d = dialable(None, sa("0.0.0.0:4433"));
        let a: SocketAddr = d.address.parse().unwrap();
        assert!(!a.ip().is_unspecified(), "{d:?}");
        assert_eq!(a.port(), 4433);
    }
}
