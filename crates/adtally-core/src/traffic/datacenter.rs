//! Published cloud and hosting address ranges (`data/datacenter-ranges.txt`), searchable
//! by address, minus every IANA special-purpose range.
//!
//! Special-purpose addresses (RFC 6890 and its registries: private, loopback, link-local,
//! documentation, benchmarking, 6to4, Teredo, NAT64 …) are never a data centre's, whatever a
//! published list says: a list that claimed `203.0.113.0/24` would turn every test and
//! every client behind a private proxy into invalid traffic. The refresh script strips them
//! when it builds the list, and [`DatacenterRanges::parse`] clips them again at load time,
//! so neither can let one through alone.

use std::net::IpAddr;

const DATACENTER_RANGES: &str = include_str!("../../../../data/datacenter-ranges.txt");

/// IPv4 special-purpose blocks (IANA IPv4 Special-Purpose Address Registry, plus multicast
/// and the limited broadcast address): network, prefix length.
const SPECIAL_V4: &[([u8; 4], u32)] = &[
    ([0, 0, 0, 0], 8),          // "this network"
    ([10, 0, 0, 0], 8),         // private
    ([100, 64, 0, 0], 10),      // shared address space (carrier-grade NAT)
    ([127, 0, 0, 0], 8),        // loopback
    ([169, 254, 0, 0], 16),     // link-local
    ([172, 16, 0, 0], 12),      // private
    ([192, 0, 0, 0], 24),       // IETF protocol assignments
    ([192, 0, 2, 0], 24),       // documentation (TEST-NET-1)
    ([192, 31, 196, 0], 24),    // AS112-v4
    ([192, 52, 193, 0], 24),    // AMT
    ([192, 88, 99, 0], 24),     // deprecated 6to4 relay anycast
    ([192, 168, 0, 0], 16),     // private
    ([192, 175, 48, 0], 24),    // direct delegation AS112
    ([198, 18, 0, 0], 15),      // benchmarking
    ([198, 51, 100, 0], 24),    // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),     // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),        // multicast: never a client's source address
    ([240, 0, 0, 0], 4),        // reserved
    ([255, 255, 255, 255], 32), // limited broadcast
];

/// IPv6 special-purpose blocks (IANA IPv6 Special-Purpose Address Registry, plus
/// unique-local, link-local and multicast).
const SPECIAL_V6: &[(u128, u32)] = &[
    (0, 128),                                        // unspecified ::
    (1, 128),                                        // loopback ::1
    (0xffff_0000_0000, 96),                          // IPv4-mapped ::ffff:0:0/96
    (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96), // NAT64 well-known prefix
    (0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48), // local-use NAT64
    (0x0100_0000_0000_0000_0000_0000_0000_0000, 64), // discard-only
    (0x2001_0000_0000_0000_0000_0000_0000_0000, 23), // IETF protocol assignments (Teredo …)
    (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32), // documentation
    (0x2002_0000_0000_0000_0000_0000_0000_0000, 16), // 6to4
    (0x2620_004f_8000_0000_0000_0000_0000_0000, 48), // direct delegation AS112
    (0x3fff_0000_0000_0000_0000_0000_0000_0000, 20), // documentation (RFC 9637)
    (0x5f00_0000_0000_0000_0000_0000_0000_0000, 16), // segment routing SIDs
    (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7),  // unique-local
    (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10), // link-local
    (0xff00_0000_0000_0000_0000_0000_0000_0000, 8),  // multicast
];

/// Published cloud and hosting address ranges, searchable by address.
#[derive(Debug)]
pub struct DatacenterRanges {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl Default for DatacenterRanges {
    fn default() -> Self {
        Self::bundled()
    }
}

fn v4_range(start: u32, len: u32) -> (u32, u32) {
    let start = start & u32::MAX.checked_shl(32 - len).unwrap_or(0);
    (start, start | u32::MAX.checked_shr(len).unwrap_or(0))
}

fn v6_range(start: u128, len: u32) -> (u128, u128) {
    let start = start & u128::MAX.checked_shl(128 - len).unwrap_or(0);
    (start, start | u128::MAX.checked_shr(len).unwrap_or(0))
}

/// The special-purpose IPv4 blocks as sorted, merged inclusive ranges.
fn special_v4() -> Vec<(u32, u32)> {
    merge(SPECIAL_V4.iter().map(|&(net, len)| v4_range(u32::from_be_bytes(net), len)).collect())
}

/// The special-purpose IPv6 blocks as sorted, merged inclusive ranges.
fn special_v6() -> Vec<(u128, u128)> {
    merge(SPECIAL_V6.iter().map(|&(net, len)| v6_range(net, len)).collect())
}

/// Whether an address is in an IANA special-purpose block (never a data centre's).
/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
pub fn is_special_purpose(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => SPECIAL_V4.iter().any(|&(net, len)| {
            let (start, end) = v4_range(u32::from_be_bytes(net), len);
            (start..=end).contains(&u32::from(a))
        }),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_special_purpose(IpAddr::V4(v4)),
            None => SPECIAL_V6.iter().any(|&(net, len)| {
                let (start, end) = v6_range(net, len);
                (start..=end).contains(&u128::from(a))
            }),
        },
    }
}

impl DatacenterRanges {
    /// The list compiled into the binary.
    pub fn bundled() -> Self {
        Self::parse(DATACENTER_RANGES)
    }

    /// Parses `CIDR[<TAB>provider]` lines; `#` starts a comment; bad lines are skipped.
    /// Whatever part of a range lies in a special-purpose block is clipped off.
    pub fn parse(text: &str) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let cidr = line.split('\t').next().unwrap_or("").trim();
            let Some((addr, len)) = cidr.split_once('/') else {
                continue;
            };
            let (Ok(addr), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u32>()) else {
                continue;
            };
            match addr {
                IpAddr::V4(a) if len <= 32 => v4.push(v4_range(u32::from(a), len)),
                IpAddr::V6(a) if len <= 128 => v6.push(v6_range(u128::from(a), len)),
                _ => {}
            }
        }
        Self { v4: subtract(&merge(v4), &special_v4()), v6: subtract(&merge(v6), &special_v6()) }
    }

    /// Number of disjoint ranges after merging and clipping.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => in_ranges(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => in_ranges(&self.v4, u32::from(v4)),
                None => in_ranges(&self.v6, u128::from(a)),
            },
        }
    }
}

/// Sorts and merges overlapping or adjacent inclusive ranges.
fn merge<T: Ord + Copy + Step>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1 || last.1.next() == Some(start) => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// `ranges` minus `holes`; both sorted, merged and inclusive.
fn subtract<T: Ord + Copy + Step>(ranges: &[(T, T)], holes: &[(T, T)]) -> Vec<(T, T)> {
    let mut out = Vec::with_capacity(ranges.len());
    for &(start, end) in ranges {
        let mut from = Some(start);
        for &(hole_start, hole_end) in holes {
            let Some(lo) = from else { break };
            if hole_end < lo || hole_start > end {
                continue;
            }
            if hole_start > lo {
                // hole_start > lo ≥ T::MIN, so it has a predecessor.
                out.push((lo, hole_start.prev().unwrap_or(lo)));
            }
            from = if hole_end >= end { None } else { hole_end.next() };
        }
        if let Some(lo) = from {
            out.push((lo, end));
        }
    }
    out
}

/// Integer neighbours without overflow, for inclusive range arithmetic.
trait Step: Sized {
    fn next(self) -> Option<Self>;
    fn prev(self) -> Option<Self>;
}

impl Step for u32 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn prev(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

impl Step for u128 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn prev(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|(start, _)| *start <= x);
    i > 0 && ranges[i - 1].1 >= x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datacenter_ranges_cover_the_big_clouds() {
        let ranges = DatacenterRanges::bundled();
        assert!(ranges.len() > 10_000);
        for ip in [
            "52.95.110.1",
            "34.82.1.5",
            "129.146.0.1",
            "104.131.0.1",
            "20.42.0.1",
            "2600:1f18::1",
            "::ffff:52.95.110.1",
        ] {
            assert!(ranges.contains(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["1.1.1.1", "192.168.1.1", "81.2.69.142", "127.0.0.1", "::1"] {
            assert!(!ranges.contains(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn documentation_addresses_are_never_datacentre() {
        let ranges = DatacenterRanges::bundled();
        for ip in [
            "192.0.2.1",
            "198.51.100.23",
            "203.0.113.7",
            "10.1.2.3",
            "100.64.0.1",
            "172.16.5.4",
            "169.254.169.254",
            "198.18.0.1",
            "240.0.0.1",
            "2001:db8::1",
            "2001:db8:ffff::1",
            "2002:c000:0204::1",
            "2001:0:4136:e378::1",
            "fd00::1",
            "fe80::1",
            "64:ff9b::cb00:7107",
            "::ffff:203.0.113.7",
            "::",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(is_special_purpose(ip), "{ip} is special-purpose");
            assert!(!ranges.contains(ip), "{ip} must not be a data-centre address");
        }
        // Iterate the shipped list: no surviving range may touch a special-purpose block.
        let (v4, v6) = (&ranges.v4, &ranges.v6);
        for &(start, end) in v4.iter() {
            for &(s, e) in &special_v4() {
                assert!(end < s || start > e, "{start:#x}..{end:#x} overlaps a special-purpose block");
            }
        }
        for &(start, end) in v6.iter() {
            for &(s, e) in &special_v6() {
                assert!(end < s || start > e, "{start:#x}..{end:#x} overlaps a special-purpose block");
            }
        }
        // And the file itself, as the refresh script writes it, carries none (the loader's
        // clipping is the second line of defence, not the first).
        for line in DATACENTER_RANGES.lines().filter(|l| !l.starts_with('#')) {
            let cidr = line.split('\t').next().unwrap_or("");
            let Some((addr, len)) = cidr.split_once('/') else { continue };
            let len: u32 = len.parse().expect("prefix length");
            let overlaps = match addr.parse::<IpAddr>().expect("shipped list parses") {
                IpAddr::V4(a) => {
                    let (start, end) = v4_range(u32::from(a), len);
                    special_v4().iter().any(|&(s, e)| !(end < s || start > e))
                }
                IpAddr::V6(a) => {
                    let (start, end) = v6_range(u128::from(a), len);
                    special_v6().iter().any(|&(s, e)| !(end < s || start > e))
                }
            };
            assert!(!overlaps, "shipped list carries {cidr}, which overlaps a special-purpose block");
        }
    }

    #[test]
    fn ranges_that_overlap_a_special_block_are_clipped_not_kept() {
        let r = DatacenterRanges::parse("192.0.0.0/16\tX\n2001::/16\tY\n10.0.0.0/7\tZ\n");
        assert!(r.contains("192.0.1.1".parse().expect("ip")));
        assert!(r.contains("192.0.3.1".parse().expect("ip")));
        assert!(!r.contains("192.0.2.1".parse().expect("ip")));
        assert!(!r.contains("192.0.0.9".parse().expect("ip")));
        assert!(r.contains("11.0.0.1".parse().expect("ip")));
        assert!(!r.contains("10.0.0.1".parse().expect("ip")));
        assert!(r.contains("2001:200::1".parse().expect("ip")));
        assert!(!r.contains("2001:db8::1".parse().expect("ip")));
        assert!(!r.contains("2001:1::1".parse().expect("ip")));
        let all = DatacenterRanges::parse("0.0.0.0/0\n::/0\n");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        assert!(!all.contains("255.255.255.255".parse().expect("ip")));
        assert!(!all.contains("127.0.0.1".parse().expect("ip")));
        assert!(!all.contains("::1".parse().expect("ip")));
    }
}
