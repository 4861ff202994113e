//! Dashboard sessions: an API key is traded for a session cookie once (the dashboard's
//! sign-in form, or `POST /v1/session`), so no page keeps the key; `GET /v1/session`
//! tells who is signed in and the CSRF token; `DELETE` (or the sign-out form) ends it.
//! [`caller`] is how the `Caller` extractor accepts the cookie when a request has no
//! `Authorization` header; [`page`] is how the dashboard's pages find their session.
//!
//! The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page
//! sends it) and `Secure` when the request came over https through a trusted proxy. On
//! top of that, every state-changing request authenticated by the cookie must carry the
//! session's token: in `X-CSRF-Token` for the JSON API (a header a cross-site form cannot
//! set), in a hidden `csrf` field for the dashboard's forms (see [`token_ok`]). Bearer
//! clients are unaffected. The session id only ever travels in the cookie, never in a
//! query string, and the store keeps only its hash.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use adtally_core::clock::{Millis, DAY, HOUR};
use adtally_core::token::api_key_hash;
use adtally_store::{KeyOwner, Session};

use crate::api::Caller;
use crate::error::{ApiError, Json};
use crate::state::AppState;

const COOKIE: &str = "adtally_session";
/// A session unused this long ends.
const IDLE: Millis = 12 * HOUR;
/// A session ends this long after sign-in, however active.
const ABSOLUTE: Millis = 7 * DAY;
/// Session ids and CSRF tokens: 256 random bits as 64 hex digits.
const ID_LEN: usize = 64;
/// The longest API key accepted, as on the Bearer path.
const MAX_KEY_LEN: usize = 200;
/// At most this many `adtally_session` cookies are tried (a sibling subdomain could set
/// one of its own beside ours).
const MAX_CANDIDATES: usize = 4;

fn random_hex() -> Result<String, ApiError> {
    let mut bytes = [0u8; ID_LEN / 2];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::internal())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equal without revealing, through timing, how long a prefix matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn csrf_refused() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "csrf", "send the session's CSRF token in the X-CSRF-Token header")
}

fn bad_key() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "this API key is not valid")
}

fn no_session() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "not signed in: POST /v1/session with an API key")
}

/// Well-formed `adtally_session` values from the `Cookie` headers.
fn session_ids(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, v)| *k == COOKIE && v.len() == ID_LEN && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|(_, v)| v)
        .take(MAX_CANDIDATES)
        .collect()
}

/// A live session from the request's cookie, with its id hash.
async fn current(state: &Arc<AppState>, headers: &HeaderMap) -> Result<Option<(String, Session)>, ApiError> {
    for id in session_ids(headers) {
        let id_hash = api_key_hash(id);
        let now = state.clock.now_ms();
        let lookup = id_hash.clone();
        let Some(found) = state.blocking(move |s| s.session(&lookup, now)).await? else { continue };
        let session = found.session;
        // The key it was opened with must still be good: an unrevoked stored key, or the
        // configured admin key (a new ADTALLY_ADMIN_KEY ends the old one's sessions).
        let key_good = found.key_live || (session.owner == KeyOwner::Admin && session.key_hash == state.admin_key_hash);
        let expired = now >= session.expires_at_ms || now - session.last_seen_at_ms >= IDLE;
        if !key_good || expired {
            let gone = id_hash.clone();
            state.blocking(move |s| s.delete_session(&gone)).await?;
            continue;
        }
        return Ok(Some((id_hash, session)));
    }
    Ok(None)
}

fn caller_of(owner: KeyOwner) -> Caller {
    match owner {
        KeyOwner::Admin => Caller::Admin,
        KeyOwner::Advertiser(id) => Caller::Advertiser(id),
    }
}

/// Whether two tokens are equal, compared in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    constant_time_eq(a.as_bytes(), b.as_bytes())
}

/// Whether a form's `csrf` field is the session's token.
pub fn token_ok(sent: &str, session: &Session) -> bool {
    constant_time_eq(sent.as_bytes(), session.csrf_token.as_bytes())
}

/// The live session of a dashboard page's request and the caller it signs in, if any.
pub async fn page(state: &Arc<AppState>, headers: &HeaderMap) -> Result<Option<(Caller, Session)>, ApiError> {
    Ok(current(state, headers).await?.map(|(_, session)| (caller_of(session.owner), session)))
}

/// A fresh random token (the sign-in form's double-submit cookie).
pub fn new_token() -> Result<String, ApiError> {
    random_hex()
}

/// Whether the request's `X-CSRF-Token` is the session's.
fn csrf_ok(headers: &HeaderMap, session: &Session) -> bool {
    headers.get("x-csrf-token").is_some_and(|v| constant_time_eq(v.as_bytes(), session.csrf_token.as_bytes()))
}

/// The caller a session cookie authenticates, for requests without an `Authorization`
/// header; `None` when there is no live session. A state-changing method also needs the
/// session's CSRF token (403 `csrf` without it).
pub async fn caller(parts: &Parts, state: &Arc<AppState>) -> Result<Option<Caller>, ApiError> {
    let Some((_, session)) = current(state, &parts.headers).await? else { return Ok(None) };
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && !csrf_ok(&parts.headers, &session) {
        return Err(csrf_refused());
    }
    Ok(Some(caller_of(session.owner)))
}

/// Over https when a trusted proxy says so, as the tracking routes decide it.
pub fn https(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    state.is_trusted_proxy(peer.ip())
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// `Set-Cookie` for the session, or (`id` empty) one that removes it.
fn cookie(id: &str, secure: bool) -> HeaderValue {
    let expire = if id.is_empty() { "; Max-Age=0" } else { "" };
    let secure = if secure { "; Secure" } else { "" };
    // Only hex digits and fixed text: always a valid header value.
    HeaderValue::from_str(&format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/{expire}{secure}"))
        .unwrap_or(HeaderValue::from_static("adtally_session=; Max-Age=0; Path=/"))
}

fn session_json(session: &Session) -> Value {
    let mut out = json!({"csrf_token": session.csrf_token,
        "expires_at": adtally_core::jiff::Timestamp::from_millisecond(session.expires_at_ms)
            .map(|t| t.to_string()).unwrap_or_default()});
    match session.owner {
        KeyOwner::Admin => out["role"] = json!("admin"),
        KeyOwner::Advertiser(id) => {
            out["role"] = json!("advertiser");
            out["advertiser_id"] = json!(id);
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    api_key: String,
}

/// `POST /v1/session`: checks the key as the Bearer path does and opens a session.
pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<SignIn>,
) -> Result<Response, ApiError> {
    let (session, set_cookie) = open(&state, https(&state, peer, &headers), &body.api_key).await?;
    let mut response = (StatusCode::CREATED, axum::Json(session_json(&session))).into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Checks an API key as the Bearer path does and opens a session: the session and the
/// `Set-Cookie` value that carries it (`Secure` when `secure`). 401 for a bad key.
pub async fn open(state: &Arc<AppState>, secure: bool, api_key: &str) -> Result<(Session, HeaderValue), ApiError> {
    let key = api_key.trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(bad_key());
    }
    let key_hash = api_key_hash(key);
    let now = state.clock.now_ms();
    let owner = if key_hash == state.admin_key_hash {
        KeyOwner::Admin
    } else {
        let lookup = key_hash.clone();
        state.blocking(move |s| s.api_key_owner(&lookup, now)).await?.ok_or_else(bad_key)?
    };
    let id = random_hex()?;
    let session = Session {
        owner,
        key_hash,
        csrf_token: random_hex()?,
        created_at_ms: now,
        last_seen_at_ms: now,
        expires_at_ms: now + ABSOLUTE,
    };
    let stored = session.clone();
    let id_hash = api_key_hash(&id);
    // Sign-ins are rare: a good moment to forget sessions that have ended.
    state
        .blocking(move |s| {
            s.purge_sessions(now, now - IDLE)?;
            s.create_session(&id_hash, &stored)
        })
        .await?;
    Ok((session, cookie(&id, secure)))
}

/// `GET /v1/session`: who the cookie signs in, and the CSRF token (for a reloaded page).
pub async fn show(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some((_, session)) = current(&state, &headers).await? else { return Err(no_session()) };
    let mut response = axum::Json(session_json(&session)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `DELETE /v1/session`: signs out (with the CSRF token) and removes the cookie. Without a
/// live session there is nothing to end; the cookie is removed all the same.
pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some((_, session)) = current(&state, &headers).await? {
        if !csrf_ok(&headers, &session) {
            return Err(csrf_refused());
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, close(&state, &headers, https(&state, peer, &headers)).await?);
    Ok(response)
}

/// Ends the request's session, if it has one (the caller has checked its CSRF token),
/// and returns the `Set-Cookie` value that removes the cookie.
pub async fn close(state: &Arc<AppState>, headers: &HeaderMap, secure: bool) -> Result<HeaderValue, ApiError> {
    if let Some((id_hash, _)) = current(state, headers).await? {
        state.blocking(move |s| s.delete_session(&id_hash)).await?;
    }
    Ok(cookie("", secure))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_read_only_from_well_formed_cookies() {
        let id = "a".repeat(ID_LEN);
        let mut headers = HeaderMap::new();
        let line = format!("other=1; {COOKIE}=short; {COOKIE}={id}; {COOKIE}x={id}");
        headers.insert(header::COOKIE, HeaderValue::from_str(&line).expect("header"));
        assert_eq!(session_ids(&headers), vec![id.as_str()]);
        let bad = format!("{COOKIE}={}", "g".repeat(ID_LEN));
        headers.insert(header::COOKIE, HeaderValue::from_str(&bad).expect("header"));
        assert!(session_ids(&headers).is_empty());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abcd", b"abcd"));
        assert!(!constant_time_eq(b"abcd", b"abce"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn cookies_are_http_only_and_strict() {
        assert_eq!(cookie("ab", false).to_str().ok(), Some("adtally_session=ab; HttpOnly; SameSite=Strict; Path=/"));
        assert_eq!(
            cookie("", true).to_str().ok(),
            Some("adtally_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure")
        );
    }
}
