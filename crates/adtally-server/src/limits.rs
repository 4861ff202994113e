//! Bounds on what one client can make the server do: failed authentications per client
//! address (key guessing), and how long a request may take (slow clients). The
//! connection bound and the header read timeout live in the accept loop (`serve.rs`).
//!
//! Tracking endpoints are never refused for volume (excess traffic is counted as
//! invalid instead), so only the authenticated API sits behind the failure limit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use adtally_core::clock::Millis;

use crate::client::{client_ip, client_prefix};
use crate::error::ApiError;
use crate::state::AppState;

/// How much a client may ask of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most; further ones are closed as soon as they are accepted.
    pub max_connections: usize,
    /// A client must send a request's complete header within this.
    pub header_read_timeout: Duration,
    /// A request, body included, must be answered within this, or it gets 408.
    pub request_timeout: Duration,
    /// Failed authentications per client address in [`AUTH_WINDOW_MS`] before the
    /// address is refused (429) for the rest of the window.
    pub max_auth_failures: u32,
    /// After the shutdown signal, how long open connections get to finish their
    /// requests before they are dropped unanswered.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_auth_failures: 20,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// The window failed authentications are counted in.
pub const AUTH_WINDOW_MS: Millis = 60_000;
/// Client addresses tracked at most. Beyond that (a distributed guesser), addresses not
/// tracked share one window, so the limit still holds for them, together.
const MAX_TRACKED_CLIENTS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: Millis,
    failures: u32,
}

/// Failed authentications per client (an IPv4 address, an IPv6 /64), in fixed windows
/// that start at a client's first failure. Memory is bounded by
/// [`MAX_TRACKED_CLIENTS`]; expired windows are dropped when the table fills.
#[derive(Debug)]
pub struct AuthFailureLimiter {
    max_failures: u32,
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    clients: HashMap<[u8; 16], Window>,
    /// Shared by clients that found the table full.
    overflow: Option<Window>,
    last_sweep_ms: Millis,
}

impl AuthFailureLimiter {
    pub fn new(max_failures: u32) -> Self {
        Self { max_failures: max_failures.max(1), inner: Mutex::new(Table::default()) }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // Plain counters: a panic elsewhere leaves nothing inconsistent behind.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds until `client` may try again, when it used up its failures.
    pub fn retry_after(&self, client: [u8; 16], now_ms: Millis) -> Option<u64> {
        let table = self.table();
        let window = table.clients.get(&client).or(if table.clients.len() >= MAX_TRACKED_CLIENTS {
            table.overflow.as_ref()
        } else {
            None
        })?;
        let ends = window.start_ms + AUTH_WINDOW_MS;
        (window.failures >= self.max_failures && now_ms < ends).then(|| ((ends - now_ms) as u64).div_ceil(1000).max(1))
    }

    /// Counts one failed authentication of `client`.
    pub fn record_failure(&self, client: [u8; 16], now_ms: Millis) {
        let mut table = self.table();
        if !table.clients.contains_key(&client) && table.clients.len() >= MAX_TRACKED_CLIENTS {
            // Sweep at most once a second: a full table of live windows must not make
            // every failure cost a pass over it.
            if now_ms - table.last_sweep_ms >= 1000 {
                table.last_sweep_ms = now_ms;
                table.clients.retain(|_, w| now_ms < w.start_ms + AUTH_WINDOW_MS);
            }
            if table.clients.len() >= MAX_TRACKED_CLIENTS {
                bump(&mut table.overflow, now_ms);
                return;
            }
        }
        let mut window = table.clients.get(&client).copied();
        bump(&mut window, now_ms);
        if let Some(w) = window {
            table.clients.insert(client, w);
        }
    }
}

/// One more failure in `window`, starting a new window when there is none or it ended.
fn bump(window: &mut Option<Window>, now_ms: Millis) {
    match window {
        Some(w) if now_ms < w.start_ms + AUTH_WINDOW_MS => w.failures = w.failures.saturating_add(1),
        _ => *window = Some(Window { start_ms: now_ms, failures: 1 }),
    }
}

/// Refuses clients that used up their failed authentications, and counts the failures
/// (401 answers to requests that sent a key; a request without one guesses nothing).
/// A promo code is a secret too: a redemption of a code that does not exist counts as a
/// failure, or a signed-in advertiser could try codes until one paid.
/// A refused client is refused whatever key it sends, the right one included, until its
/// window ends: checking the key first would answer a correct guess and make the limit
/// useless against guessing.
pub async fn limit_auth_failures(
    State((state, limiter)): State<(Arc<AppState>, Arc<AuthFailureLimiter>)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let client = client_prefix(client_ip(&state, peer.ip(), request.headers()));
    let now = state.clock.now_ms();
    if let Some(seconds) = limiter.retry_after(client, now) {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failed_authentications",
            format!("too many failed authentications from this address; retry in {seconds} s"),
        )
        .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    // A key in the Authorization header, or in the body of a dashboard sign-in.
    let post = request.method() == axum::http::Method::POST;
    let sent_key = request.headers().contains_key(header::AUTHORIZATION)
        || (post && matches!(request.uri().path(), "/v1/session" | "/sign-in"));
    let sent_promo_code = post && matches!(request.uri().path(), "/v1/promo-codes/redeem" | "/billing/redeem");
    let response = next.run(request).await;
    let failed = (sent_key && response.status() == StatusCode::UNAUTHORIZED)
        || (sent_promo_code && response.status() == StatusCode::NOT_FOUND);
    if failed {
        limiter.record_failure(client, state.clock.now_ms());
    }
    response
}

/// Answers 408 when a request, reading its body included, takes longer than the
/// configured timeout: a client trickling a body cannot hold a worker forever.
pub async fn request_deadline(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.config.limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response =
                ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", "the request took too long")
                    .into_response();
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 16] = [1; 16];
    const B: [u8; 16] = [2; 16];

    #[test]
    fn a_client_is_refused_after_its_failures_until_the_window_ends() {
        let limiter = AuthFailureLimiter::new(3);
        for _ in 0..2 {
            limiter.record_failure(A, 1_000);
        }
        assert_eq!(limiter.retry_after(A, 1_000), None);
        limiter.record_failure(A, 2_000);
        assert_eq!(limiter.retry_after(A, 2_000), Some(59));
        assert_eq!(limiter.retry_after(B, 2_000), None);
        assert_eq!(limiter.retry_after(A, 60_999), Some(1));
        assert_eq!(limiter.retry_after(A, 61_000), None);
        limiter.record_failure(A, 61_000);
        assert_eq!(limiter.retry_after(A, 61_000), None, "a new window starts");
    }

    #[test]
    fn a_full_table_sends_new_clients_to_a_shared_window() {
        let limiter = AuthFailureLimiter::new(2);
        for i in 0..MAX_TRACKED_CLIENTS as u32 {
            let mut client = [0u8; 16];
            client[..4].copy_from_slice(&i.to_le_bytes());
            limiter.record_failure(client, 0);
        }
        let newcomer = [9u8; 16];
        limiter.record_failure(newcomer, 500);
        limiter.record_failure([8u8; 16], 500);
        assert!(limiter.retry_after(newcomer, 500).is_some(), "the overflow window is shared");
        assert!(limiter.table().clients.len() <= MAX_TRACKED_CLIENTS);
        // Once the old windows end, a sweep makes room again.
        limiter.record_failure(newcomer, AUTH_WINDOW_MS + 1_000);
        assert_eq!(limiter.table().clients.len(), 1);
    }
}
