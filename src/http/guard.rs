//! The SSRF guard: which destination addresses an endpoint may connect to.
//!
//! A webhook URL often comes from someone other than the operator (a tenant, a registry's
//! config, an API call). Its host can name, or resolve to, an address inside the operator's
//! network: loopback, a private range, link-local, or a cloud metadata service (a well-known
//! way to steal credentials). With [`EndpointConfig::allow_private`] off, the engine refuses to
//! connect to such an address.
//!
//! The check runs on the **resolved address, just before each connect** (every address of a
//! host is tried in turn, and each is checked), never on the name: a host that resolves to a
//! public address when the endpoint is added and to `127.0.0.1` later (DNS rebinding) is
//! refused at that later connect. An IP literal in the URL that is refused can never become
//! allowed, so adding the endpoint fails at once (`Error::Config` naming `url`).
//!
//! Addresses embedding an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
//! `::a.b.c.d`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`) are judged by
//! that IPv4 address.
//!
//! [`EndpointConfig::allow_private`]: crate::endpoint::EndpointConfig::allow_private

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` is not a public destination, or `None` if it is one.
///
/// The classes: `"unspecified"`, `"loopback"`, `"private"` (RFC 1918, IPv6 unique-local and
/// site-local), `"link-local"`, `"metadata"` (cloud instance metadata services: 169.254.169.254,
/// 100.100.100.200, fd00:ec2::254), `"shared"` (carrier-grade NAT, 100.64.0.0/10),
/// `"multicast"`, `"broadcast"`, `"reserved"` (240.0.0.0/4, 192.0.0.0/24, benchmarking
/// 198.18.0.0/15, and `0.0.0.0/8`).
///
/// ```
/// use hookwire::http::non_public;
///
/// assert_eq!(non_public("127.0.0.1".parse().unwrap()), Some("loopback"));
/// assert_eq!(non_public("169.254.169.254".parse().unwrap()), Some("metadata"));
/// assert_eq!(non_public("::ffff:10.0.0.1".parse().unwrap()), Some("private"));
/// assert_eq!(non_public("93.184.215.14".parse().unwrap()), None);
/// ```
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let class = match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "metadata",
        _ if ip == Ipv4Addr::new(100, 100, 100, 200) => "metadata",
        _ if ip.is_unspecified() => "unspecified",
        (0, ..) => "reserved",
        (127, ..) => "loopback",
        (10, ..) => "private",
        (172, 16..=31, _) => "private",
        (192, 168, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared",
        (192, 0, 0) => "reserved",
        (198, 18..=19, _) => "reserved",
        _ if ip.is_broadcast() => "broadcast",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved",
        _ => return None,
    };
    Some(class)
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some("metadata");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d, deprecated but still routed
    // over IPv4 by some hosts), NAT64 (64:ff9b::a.b.c.d) and local-use NAT64
    // (64:ff9b:1::/48, RFC 8215): the IPv4 address decides.
    if s[..5] == [0; 5] && s[5] == 0xffff
        || s[..6] == [0; 6]
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || s[..3] == [0x64, 0xff9b, 1]
    {
        return non_public_v4(embedded(s[6], s[7]));
    }
    // 6to4 (2002:a.b.c.d::/48) reaches the IPv4 address it embeds.
    if s[0] == 0x2002 {
        return non_public_v4(embedded(s[1], s[2]));
    }
    match s[0] {
        0xfc00..=0xfdff => Some("private"),    // unique-local fc00::/7
        0xfe80..=0xfebf => Some("link-local"), // fe80::/10
        0xfec0..=0xfeff => Some("private"),    // site-local fec0::/10 (deprecated)
        0xff00..=0xffff => Some("multicast"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<&'static str> {
        non_public(s.parse().unwrap())
    }

    #[test]
    fn every_internal_range_is_named() {
        for (ip, want) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "reserved"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.1.1", "link-local"),
            ("169.254.169.254", "metadata"),
            ("100.100.100.200", "metadata"),
            ("100.64.0.1", "shared"),
            ("100.127.255.255", "shared"),
            ("192.0.0.8", "reserved"),
            ("198.18.0.1", "reserved"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fc00::1", "private"),
            ("fd12:3456::1", "private"),
            ("fe80::1", "link-local"),
            ("fec0::1", "private"),
            ("ff02::1", "multicast"),
            ("fd00:ec2::254", "metadata"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "metadata"),
            ("64:ff9b::10.0.0.1", "private"),
            ("2002:7f00:1::", "loopback"),
            ("::169.254.169.254", "metadata"),
            ("::10.0.0.1", "private"),
            ("64:ff9b:1::a00:1", "private"),
        ] {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "169.253.1.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:82a::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }
}
