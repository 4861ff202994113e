//! Who the client is, as far as an address can say: the address itself (from the socket,
//! or from the one header a trusted proxy is configured to set) and the prefix that keys
//! per-address rules (`excessive_activity`, the failed-authentication limit).
//!
//! Only the header the proxy sets is read: a proxy appends to the header it owns and
//! passes any other header through untouched, so a second header is the client's own
//! word. Of the header's entries, the rightmost one that is not a trusted proxy is the
//! client; everything to its left was written by the client and could be forged.

use std::net::IpAddr;

use axum::http::HeaderMap;

use crate::state::AppState;

/// The header a trusted proxy writes the client address into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl ClientIpHeader {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Some(Self::XForwardedFor),
            "forwarded" => Some(Self::Forwarded),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

/// Entries of a forwarding header looked at, from the right. Real chains are a few
/// proxies long; the bound keeps a header stuffed with trusted addresses cheap.
const MAX_HOPS: usize = 16;

/// The client's address: the socket peer, or, when the peer is a trusted proxy, what
/// that proxy reports in its configured header.
pub fn client_ip(state: &AppState, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !state.is_trusted_proxy(peer) {
        return peer;
    }
    forwarded_client(headers, state.config.client_ip_header, |ip| state.is_trusted_proxy(ip)).unwrap_or(peer)
}

/// The rightmost entry of `header` that is not a trusted proxy. Several lines of the
/// header are one comma-separated list, in order (a client can send a line of its own
/// before the proxy's). `None` when the header is absent, or when the entry that would
/// be the client is not an address (`unknown`, an obfuscated node): walking further
/// left would believe what the client wrote.
pub fn forwarded_client(
    headers: &HeaderMap,
    header: ClientIpHeader,
    trusted: impl Fn(IpAddr) -> bool,
) -> Option<IpAddr> {
    let mut entries: Vec<&str> = Vec::new();
    for line in headers.get_all(header.name()) {
        // Split the bytes, not the text: a client's own entry with bytes that are not
        // UTF-8 is one entry that is not an address, and must not hide the entries a
        // proxy appended to the same line after it.
        entries.extend(line.as_bytes().split(|b| *b == b',').map(|e| std::str::from_utf8(e).unwrap_or("unknown")));
    }
    let mut last = None;
    for entry in entries.into_iter().rev().take(MAX_HOPS) {
        let ip = match header {
            ClientIpHeader::XForwardedFor => parse_node(entry)?,
            ClientIpHeader::Forwarded => forwarded_for(entry)?,
        };
        last = Some(ip);
        if !trusted(ip) {
            return Some(ip);
        }
    }
    last
}

/// The `for=` node of one RFC 7239 element (`for=192.0.2.60;proto=https`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then(|| parse_node(value))?
    })
}

/// An address as proxies write it: `192.0.2.1`, `"192.0.2.1:4711"`, `2001:db8::1`,
/// `"[2001:db8::1]:4711"`.
pub fn parse_node(value: &str) -> Option<IpAddr> {
    let v = value.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse().ok().or_else(|| v.rsplit_once(':').and_then(|(host, _)| host.parse().ok()))
}

/// The part of an address that identifies one client for per-address rules, as 16
/// bytes: an IPv4 address whole (also when written IPv4-mapped, `::ffff:a.b.c.d`), an
/// IPv6 address by its /64. One home or phone gets a /64 and picks new addresses in it
/// at will (privacy extensions), so a /128 would let it rotate past every limit.
pub fn client_prefix(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_ipv6_mapped().octets(),
            None => {
                let mut octets = a.octets();
                octets[8..].fill(0);
                octets
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn loopback(ip: IpAddr) -> bool {
        ip.is_loopback()
    }

    #[test]
    fn forwarded_nodes() {
        assert_eq!(parse_node("192.0.2.60"), "192.0.2.60".parse().ok());
        assert_eq!(parse_node("\"192.0.2.60:4711\""), "192.0.2.60".parse().ok());
        assert_eq!(parse_node("\"[2001:db8:cafe::17]:4711\""), "2001:db8:cafe::17".parse().ok());
        assert_eq!(parse_node("unknown"), None);
        assert_eq!(parse_node("_hidden"), None);
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("3.5.140.2"));
        h.insert("forwarded", HeaderValue::from_static("for=198.51.100.7"));
        assert_eq!(forwarded_client(&h, ClientIpHeader::XForwardedFor, loopback), Some(ip("3.5.140.2")));
        assert_eq!(forwarded_client(&h, ClientIpHeader::Forwarded, loopback), Some(ip("198.51.100.7")));
        h.remove("x-forwarded-for");
        assert_eq!(forwarded_client(&h, ClientIpHeader::XForwardedFor, loopback), None);
    }

    #[test]
    fn several_lines_are_one_list_and_the_rightmost_untrusted_entry_wins() {
        let mut h = HeaderMap::new();
        // The client's own line first, then the proxy's.
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
        h.append("x-forwarded-for", HeaderValue::from_static("3.5.140.2, 127.0.0.1"));
        assert_eq!(forwarded_client(&h, ClientIpHeader::XForwardedFor, loopback), Some(ip("3.5.140.2")));
    }

    /// A client that sends bytes that are not text in its own entry used to blank the
    /// whole line, so the address the proxy appended to it was lost and a data-centre
    /// bot passed as the proxy (loopback, never a data centre).
    #[test]
    fn a_client_entry_that_is_not_text_does_not_hide_the_proxys() {
        let mut h = HeaderMap::new();
        let line = HeaderValue::from_bytes(b"\xe9t\xe9, 3.5.140.2").expect("obs-text is a valid header value");
        h.insert("x-forwarded-for", line);
        assert_eq!(forwarded_client(&h, ClientIpHeader::XForwardedFor, loopback), Some(ip("3.5.140.2")));
        let line = HeaderValue::from_bytes(b"3.5.140.2, \xe9t\xe9").expect("header");
        h.insert("x-forwarded-for", line);
        assert_eq!(
            forwarded_client(&h, ClientIpHeader::XForwardedFor, loopback),
            None,
            "the client's entry is unreadable"
        );
    }

    #[test]
    fn an_unreadable_client_entry_does_not_fall_back_to_forged_ones() {
        let mut h = HeaderMap::new();
        h.insert("forwarded", HeaderValue::from_static("for=198.51.100.7, for=unknown;proto=https"));
        assert_eq!(forwarded_client(&h, ClientIpHeader::Forwarded, loopback), None);
    }

    #[test]
    fn ipv6_clients_are_keyed_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(client_prefix(ip("2001:db8:1:2:aaaa::1")), client_prefix(ip("2001:db8:1:2:bbbb::9")));
        assert_ne!(client_prefix(ip("2001:db8:1:2::1")), client_prefix(ip("2001:db8:1:3::1")));
        assert_eq!(client_prefix(ip("::ffff:192.0.2.1")), client_prefix(ip("192.0.2.1")));
        assert_ne!(client_prefix(ip("::ffff:192.0.2.1")), client_prefix(ip("::ffff:192.0.2.2")));
        assert_ne!(client_prefix(ip("192.0.2.1")), client_prefix(ip("192.0.2.2")));
    }
}
