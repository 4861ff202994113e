//! How a beacon's submission is written into the journal (see
//! [`adtally_store::journal`]) and read back for replay: a fixed little-endian layout
//! behind a version byte, so a record written by one build is either read exactly by
//! the next or refused at start-up, never misread.
//!
//! Only beacons are journaled: they name their decision by token, carry no idempotency
//! key, and their answer does not depend on the verdict. Conversions and imports wait
//! for their commit, because their answers do.

use adtally_core::counting::DecisionRef;
use adtally_core::event::{Country, Device, Event, EventKind, Verdict};

use crate::pipeline::Submission;

const VERSION: u8 = 1;
/// Bytes of an encoded beacon.
pub const LEN: usize = 1 + 1 + 8 * 10 + 1 + 2 + 1 + 1 + 1;
const NONE: u8 = u8::MAX;

/// The beacon's record, or `None` for a submission that is not a beacon.
pub fn encode(s: &Submission) -> Option<[u8; LEN]> {
    let e = &s.event;
    let (Some(DecisionRef::Token { decision_id, issued_at_ms }), None) = (s.decision, &s.idempotency) else {
        return None;
    };
    let (Some(campaign), Some(ad), Some(placement)) = (e.campaign_id, e.ad_id, e.placement_id) else {
        return None;
    };
    if e.kind == EventKind::Conversion || e.decision_id != Some(decision_id) {
        return None;
    }
    let mut out = [0u8; LEN];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&[VERSION, e.kind.code()]);
    for word in [e.at_ms, e.advertiser_id, campaign, ad, placement, issued_at_ms, s.clearing_cpm_micros] {
        put(&word.to_le_bytes());
    }
    for word in [decision_id, e.user_key, e.ip_key.unwrap_or(0)] {
        put(&word.to_le_bytes());
    }
    put(&[u8::from(e.ip_key.is_some()), e.country.0[0], e.country.0[1], e.device.code()]);
    put(&[s.givt.map_or(NONE, |v| v.code()), u8::from(s.video)]);
    Some(out)
}

/// Why a journal record could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("journal record {seq} cannot be read by this build: {why}")]
pub struct DecodeError {
    pub seq: u64,
    pub why: &'static str,
}

/// The submission a record was written from.
pub fn decode(seq: u64, bytes: &[u8]) -> Result<Submission, DecodeError> {
    let fail = |why| DecodeError { seq, why };
    if bytes.len() != LEN {
        return Err(fail("wrong length"));
    }
    if bytes[0] != VERSION {
        return Err(fail("unknown version"));
    }
    let kind = EventKind::from_code(bytes[1].into()).filter(|k| *k != EventKind::Conversion);
    let kind = kind.ok_or_else(|| fail("not a beacon kind"))?;
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[2 + 8 * i..10 + 8 * i]);
        w
    };
    let signed = |i| i64::from_le_bytes(word(i));
    let unsigned = |i| u64::from_le_bytes(word(i));
    let tail = &bytes[2 + 8 * 10..];
    let device = Device::from_code(tail[3].into()).ok_or_else(|| fail("unknown device"))?;
    let givt = match tail[4] {
        NONE => None,
        code => Some(Verdict::from_code(code.into()).ok_or_else(|| fail("unknown verdict"))?),
    };
    let decision_id = unsigned(7);
    Ok(Submission {
        event: Event {
            at_ms: signed(0),
            kind,
            verdict: Verdict::Valid,
            decision_id: Some(decision_id),
            advertiser_id: signed(1),
            campaign_id: Some(signed(2)),
            ad_id: Some(signed(3)),
            placement_id: Some(signed(4)),
            user_key: unsigned(8),
            ip_key: (tail[0] == 1).then(|| unsigned(9)),
            device,
            country: Country([tail[1], tail[2]]),
            cost_micros: 0,
            value_micros: 0,
        },
        decision: Some(DecisionRef::Token { decision_id, issued_at_ms: signed(5) }),
        givt,
        clearing_cpm_micros: signed(6),
        video: tail[5] == 1,
        idempotency: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use adtally_store::Idempotency;

    fn beacon(kind: EventKind, ip_key: Option<u64>, givt: Option<Verdict>, video: bool) -> Submission {
        Submission {
            event: Event {
                at_ms: 1_795_176_000_123,
                kind,
                verdict: Verdict::Valid,
                decision_id: Some(u64::MAX - 7),
                advertiser_id: 3,
                campaign_id: Some(i64::MAX),
                ad_id: Some(11),
                placement_id: Some(2),
                user_key: 0xdead_beef_0bad_f00d,
                ip_key,
                device: Device::Tablet,
                country: Country(*b"DE"),
                cost_micros: 0,
                value_micros: 0,
            },
            decision: Some(DecisionRef::Token { decision_id: u64::MAX - 7, issued_at_ms: 1_795_176_000_000 }),
            givt,
            clearing_cpm_micros: 2_500_000,
            video,
            idempotency: None,
        }
    }

    #[test]
    fn every_beacon_reads_back_as_written() {
        for kind in [EventKind::Impression, EventKind::Viewable, EventKind::Click] {
            for (ip_key, givt, video) in [
                (Some(0), None, false),
                (None, Some(Verdict::Bot), true),
                (Some(u64::MAX), Some(Verdict::Datacenter), false),
            ] {
                let s = beacon(kind, ip_key, givt, video);
                let bytes = encode(&s).expect("a beacon");
                let back = decode(9, &bytes).expect("decodes");
                assert_eq!(format!("{back:?}"), format!("{s:?}"));
            }
        }
    }

    #[test]
    fn what_is_not_a_beacon_is_not_journaled_and_bad_records_are_refused() {
        let mut s = beacon(EventKind::Impression, None, None, false);
        s.idempotency = Some(Idempotency::Import("e-1".into()));
        assert!(encode(&s).is_none());
        let mut s = beacon(EventKind::Conversion, None, None, false);
        s.decision = None;
        assert!(encode(&s).is_none());
        let bytes = encode(&beacon(EventKind::Click, None, None, false)).expect("a beacon");
        assert!(decode(1, &bytes[..LEN - 1]).is_err());
        for (at, value) in [(0, 2), (1, 4), (1, 0), (LEN - 3, 99), (LEN - 2, 200)] {
            let mut bad = bytes;
            bad[at] = value;
            assert!(decode(1, &bad).is_err(), "byte {at} = {value}");
        }
    }
}
