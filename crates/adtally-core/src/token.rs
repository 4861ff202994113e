//! Tracking tokens: everything a beacon needs to know about its decision, signed with
//! HMAC-SHA256 so that nobody can mint or alter one. A token that fails verification
//! counts nothing.
//!
//! Layout (little endian) before base64url: version, decision id, issue time, advertiser,
//! campaign, ad, ad version, placement, user key, device, country, clearing CPM, ad format, then the
//! first [`TAG_LEN`] bytes of the HMAC over all of that. Layout version 2 added the ad
//! version (the click goes to the target URL of the version that was served); tokens of
//! version 1 are refused as malformed.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::catalog::Format;
use crate::clock::Millis;
use crate::event::{Country, Device};

fn format_code(format: Format) -> u8 {
    match format {
        Format::Compact => 0,
        Format::Sidebar => 1,
        Format::Video => 2,
    }
}

fn format_from_code(code: u8) -> Option<Format> {
    [Format::Compact, Format::Sidebar, Format::Video].into_iter().find(|f| format_code(*f) == code)
}

type HmacSha256 = hmac::Hmac<Sha256>;

const VERSION: u8 = 2;
const PAYLOAD_LEN: usize = 1 + 8 + 8 + 5 * 4 + 8 + 1 + 2 + 8 + 1;
/// 128 bits of tag: forging one is as hard as guessing a 128-bit key.
pub const TAG_LEN: usize = 16;
const TOKEN_LEN: usize = PAYLOAD_LEN + TAG_LEN;
/// Length of a token in its base64url text form.
pub const TOKEN_TEXT_LEN: usize = (TOKEN_LEN * 4).div_ceil(3);

/// What a click id says: whose click it was, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClickId {
    pub advertiser_id: i64,
    pub user_key: u64,
    pub clicked_at_ms: Millis,
}

const CLICK_ID_VERSION: u8 = 1;
const CLICK_PAYLOAD_LEN: usize = 1 + 8 + 8 + 8;
/// Length of a click id in its base64url text form.
pub const CLICK_ID_TEXT_LEN: usize = ((CLICK_PAYLOAD_LEN + TAG_LEN) * 4).div_ceil(3);

/// What a decision hands to its beacons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackingToken {
    pub decision_id: u64,
    pub issued_at_ms: Millis,
    pub advertiser_id: u32,
    pub campaign_id: u32,
    pub ad_id: u32,
    /// The version of the ad's content this decision served.
    pub ad_version: u32,
    pub placement_id: u32,
    pub user_key: u64,
    pub device: Device,
    pub country: Country,
    pub clearing_cpm_micros: u64,
    /// The served ad's format: a video needs longer in view before it is viewable.
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the tracking token is malformed")]
    Malformed,
    #[error("the tracking token's signature does not match")]
    BadSignature,
}

/// Signs and verifies tokens with one secret key.
#[derive(Clone)]
pub struct TokenSigner {
    mac: HmacSha256,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(..)")
    }
}

impl TokenSigner {
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <HmacSha256 as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
        Self { mac }
    }

    /// The token's base64url text, ready to put in a URL path.
    pub fn sign(&self, token: &TrackingToken) -> String {
        let mut bytes = [0u8; TOKEN_LEN];
        let payload = encode_payload(token);
        bytes[..PAYLOAD_LEN].copy_from_slice(&payload);
        let mut mac = self.mac.clone();
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        bytes[PAYLOAD_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Checks the signature in constant time and decodes the token.
    pub fn verify(&self, text: &str) -> Result<TrackingToken, TokenError> {
        if text.len() != TOKEN_TEXT_LEN {
            return Err(TokenError::Malformed);
        }
        let mut bytes = [0u8; TOKEN_LEN + 2];
        let len = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(text.as_bytes(), &mut bytes)
            .map_err(|_| TokenError::Malformed)?;
        if len != TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = bytes[..TOKEN_LEN].split_at(PAYLOAD_LEN);
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac.verify_truncated_left(tag).map_err(|_| TokenError::BadSignature)?;
        decode_payload(payload).ok_or(TokenError::Malformed)
    }

    /// A click id: the advertiser and the (pseudonymous) user of a click, signed, for the
    /// advertiser's landing page to pass back with a conversion. It names no ad, so a
    /// conversion by click id is credited like any other (to the user's journey).
    pub fn sign_click_id(&self, id: &ClickId) -> String {
        let mut payload = [0u8; CLICK_PAYLOAD_LEN];
        payload[0] = CLICK_ID_VERSION;
        payload[1..9].copy_from_slice(&id.advertiser_id.to_le_bytes());
        payload[9..17].copy_from_slice(&id.user_key.to_le_bytes());
        payload[17..25].copy_from_slice(&id.clicked_at_ms.to_le_bytes());
        let mut mac = self.mac.clone();
        mac.update(b"adtally-click\0");
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        let mut bytes = [0u8; CLICK_PAYLOAD_LEN + TAG_LEN];
        bytes[..CLICK_PAYLOAD_LEN].copy_from_slice(&payload);
        bytes[CLICK_PAYLOAD_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Checks a click id's signature in constant time and decodes it.
    pub fn verify_click_id(&self, text: &str) -> Result<ClickId, TokenError> {
        if text.len() != CLICK_ID_TEXT_LEN {
            return Err(TokenError::Malformed);
        }
        let mut bytes = [0u8; CLICK_PAYLOAD_LEN + TAG_LEN + 2];
        let len = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(text.as_bytes(), &mut bytes)
            .map_err(|_| TokenError::Malformed)?;
        if len != CLICK_PAYLOAD_LEN + TAG_LEN || bytes[0] != CLICK_ID_VERSION {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = bytes[..len].split_at(CLICK_PAYLOAD_LEN);
        let mut mac = self.mac.clone();
        mac.update(b"adtally-click\0");
        mac.update(payload);
        mac.verify_truncated_left(tag).map_err(|_| TokenError::BadSignature)?;
        let field = |range: std::ops::Range<usize>| {
            let mut out = [0u8; 8];
            out.copy_from_slice(&payload[range]);
            out
        };
        Ok(ClickId {
            advertiser_id: i64::from_le_bytes(field(1..9)),
            user_key: u64::from_le_bytes(field(9..17)),
            clicked_at_ms: i64::from_le_bytes(field(17..25)),
        })
    }

    /// A keyed 64-bit hash, for pseudonymous user and address keys.
    pub fn keyed_hash(&self, parts: &[&[u8]]) -> u64 {
        let mut mac = self.mac.clone();
        mac.update(b"adtally-key\0");
        for part in parts {
            mac.update(&(part.len() as u32).to_le_bytes());
            mac.update(part);
        }
        let out = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&out[..8]);
        u64::from_le_bytes(first)
    }
}

fn encode_payload(t: &TrackingToken) -> [u8; PAYLOAD_LEN] {
    let mut out = [0u8; PAYLOAD_LEN];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&[VERSION]);
    put(&t.decision_id.to_le_bytes());
    put(&t.issued_at_ms.to_le_bytes());
    put(&t.advertiser_id.to_le_bytes());
    put(&t.campaign_id.to_le_bytes());
    put(&t.ad_id.to_le_bytes());
    put(&t.ad_version.to_le_bytes());
    put(&t.placement_id.to_le_bytes());
    put(&t.user_key.to_le_bytes());
    put(&[t.device.code()]);
    put(&t.country.0);
    put(&t.clearing_cpm_micros.to_le_bytes());
    put(&[format_code(t.format)]);
    out
}

fn decode_payload(bytes: &[u8]) -> Option<TrackingToken> {
    let mut rest = bytes;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let u64_at = |b: &[u8]| b.try_into().ok().map(u64::from_le_bytes);
    let u32_at = |b: &[u8]| b.try_into().ok().map(u32::from_le_bytes);
    if take(1)? != [VERSION] {
        return None;
    }
    Some(TrackingToken {
        decision_id: u64_at(take(8)?)?,
        issued_at_ms: u64_at(take(8)?)? as i64,
        advertiser_id: u32_at(take(4)?)?,
        campaign_id: u32_at(take(4)?)?,
        ad_id: u32_at(take(4)?)?,
        ad_version: u32_at(take(4)?)?,
        placement_id: u32_at(take(4)?)?,
        user_key: u64_at(take(8)?)?,
        device: Device::from_code(take(1)?[0] as i64)?,
        country: Country(take(2)?.try_into().ok()?),
        clearing_cpm_micros: u64_at(take(8)?)?,
        format: format_from_code(take(1)?[0])?,
    })
}

/// How API keys are kept at rest: the SHA-256 of the key, in hex. Keys are 256-bit
/// random values, so a fast hash is enough (no password stretching needed).
pub fn api_key_hash(key: &str) -> String {
    use sha2::Digest;
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TrackingToken {
        TrackingToken {
            decision_id: 0x0123_4567_89ab_cdef,
            issued_at_ms: 1_764_000_000_000,
            advertiser_id: 7,
            campaign_id: 11,
            ad_id: 13,
            ad_version: 3,
            placement_id: 2,
            user_key: 42,
            device: Device::Tablet,
            country: Country(*b"DE"),
            clearing_cpm_micros: 2_500_000,
            format: Format::Video,
        }
    }

    #[test]
    fn round_trips() {
        let signer = TokenSigner::new(b"secret");
        let text = signer.sign(&sample());
        assert_eq!(text.len(), TOKEN_TEXT_LEN);
        assert_eq!(signer.verify(&text), Ok(sample()));
    }

    #[test]
    fn any_flipped_character_is_refused() {
        let signer = TokenSigner::new(b"secret");
        let text = signer.sign(&sample());
        for i in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap_or_default();
            assert!(signer.verify(&tampered).is_err(), "position {i}");
        }
    }

    #[test]
    fn click_ids_round_trip_and_refuse_tampering_and_tokens() {
        let signer = TokenSigner::new(b"secret");
        let id = ClickId { advertiser_id: 7, user_key: 42, clicked_at_ms: 1_764_000_000_000 };
        let text = signer.sign_click_id(&id);
        assert_eq!(text.len(), CLICK_ID_TEXT_LEN);
        assert_eq!(signer.verify_click_id(&text), Ok(id));
        assert!(TokenSigner::new(b"other").verify_click_id(&text).is_err());
        let mut bytes = text.clone().into_bytes();
        bytes[5] = if bytes[5] == b'A' { b'B' } else { b'A' };
        assert!(signer.verify_click_id(&String::from_utf8(bytes).unwrap_or_default()).is_err());
        // A tracking token is not a click id, whatever its length.
        assert!(signer.verify_click_id(&signer.sign(&sample())).is_err());
    }

    #[test]
    fn another_key_is_refused_and_garbage_is_malformed() {
        let text = TokenSigner::new(b"one").sign(&sample());
        assert_eq!(TokenSigner::new(b"two").verify(&text), Err(TokenError::BadSignature));
        assert_eq!(TokenSigner::new(b"one").verify("nope"), Err(TokenError::Malformed));
        let long = "é".repeat(TOKEN_TEXT_LEN / 2);
        assert!(TokenSigner::new(b"one").verify(&long).is_err());
    }
}
