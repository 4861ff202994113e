//! Report query parameters: any combination parses to a spec or a clear error, never a
//! panic, and an accepted spec gives a sane UTC range in any zone.
#![no_main]

use adtally_core::jiff::civil::date;
use adtally_core::jiff::tz::TimeZone;
use adtally_core::report::{RawReportRequest, ReportSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.split('\u{0}').map(|s| (!s.is_empty()).then(|| s.to_owned()));
    let raw = RawReportRequest {
        range: parts.next().flatten(),
        from: parts.next().flatten(),
        to: parts.next().flatten(),
        granularity: parts.next().flatten(),
        group_by: parts.next().flatten(),
    };
    if let Ok(spec) = ReportSpec::parse(&raw, date(2026, 11, 26)) {
        for zone in ["UTC", "Asia/Kathmandu", "Pacific/Kiritimati", "America/St_Johns"] {
            let tz = TimeZone::get(zone).unwrap_or(TimeZone::UTC);
            let (from, to) = spec.utc_range(&tz);
            assert!(from <= to, "{raw:?} in {zone}");
        }
    }
});
