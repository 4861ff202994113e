//! The adtally HTTP server: tracking endpoints, the JSON API, operations routes and the
//! dashboard's server-rendered pages (`web`), built on axum. Only this crate knows HTTP,
//! JSON and HTML; it turns requests into calls on the core rules, the event [`pipeline`]
//! and the store.

pub mod api;
pub mod attribution;
pub mod client;
pub mod cluster;
pub mod error;
pub mod import;
pub mod insights;
mod journal_record;
pub mod limits;
pub mod mailer;
mod ops;
pub mod pipeline;
pub mod reports;
mod serve;
pub mod session;
pub mod state;
pub mod tracking;
mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, patch, post};
use axum::Router;
use tokio::net::TcpListener;

use adtally_core::clock::Clock;
use adtally_core::token::{api_key_hash, TokenSigner};
use adtally_store::{Store, StoreError};

pub use crate::pipeline::Pipeline;
pub use crate::state::{AppState, ServerConfig};

/// Largest JSON body the API accepts.
const MAX_JSON_BODY: usize = 64 * 1024;
/// How often campaigns are checked for completion and cap state is expired.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// How often spans of days are sealed (`Store::seal_spans`): a day seals once, two
/// days after it ended, so this only bounds how long a long-range report still reads
/// that day's own sketches.
const SEAL_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
/// With several nodes on one database, how often each reloads the catalog.
const CATALOG_SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Largest NDJSON import body.
const MAX_IMPORT_BODY: usize = 64 * 1024 * 1024;

/// All routes.
pub fn router(state: Arc<AppState>) -> Router {
    let tracking = Router::new()
        .route("/v1/decision", get(tracking::decision))
        .route("/t/i/{token}", get(tracking::impression).post(tracking::impression))
        .route("/t/v/{token}", get(tracking::viewable).post(tracking::viewable))
        .route("/t/c/{token}", get(tracking::click))
        .route("/t/conv", get(tracking::conversion_pixel))
        .layer(axum::middleware::from_fn(web::cors));
    let api = Router::new()
        .route("/v1/advertisers", post(api::create_advertiser).get(api::list_advertisers))
        .route("/v1/advertisers/{id}", patch(api::patch_advertiser))
        .route("/v1/advertisers/{id}/keys", post(api::create_key).get(api::list_keys))
        .route("/v1/keys/{id}/revoke", post(api::revoke_key))
        .route("/v1/promo-codes", post(api::create_promo))
        .route("/v1/promo-codes/redeem", post(api::redeem_promo))
        .route("/v1/audit", get(api::audit_log))
        .route("/v1/advertisers/{id}/credits", post(api::add_credit))
        .route("/v1/me", get(api::me).patch(api::patch_me))
        .route("/v1/session", post(session::sign_in).get(session::show).delete(session::sign_out))
        .route("/v1/ledger", get(api::ledger))
        .route("/v1/placements", post(api::create_placement).get(api::list_placements))
        .route("/v1/campaigns", post(api::create_campaign).get(api::list_campaigns))
        .route("/v1/campaigns/{id}", get(api::get_campaign).patch(api::patch_campaign))
        .route("/v1/campaigns/{id}/ads", post(api::create_ad))
        .route("/v1/campaigns/{id}/insights", get(insights::campaign_insights))
        .route("/v1/campaigns/{id}/{action}", post(api::campaign_action))
        .route("/v1/ads", get(api::list_ads))
        .route("/v1/ads/{id}", get(api::get_ad).patch(api::patch_ad))
        .route("/v1/ads/{id}/review", post(api::review_ad))
        .route("/v1/conversions", post(tracking::conversion_postback))
        .route("/v1/reports", get(reports::report))
        .route("/v1/reports/ivt", get(reports::ivt_report))
        .route("/v1/attribution", get(attribution::attribution))
        .route("/v1/weekly-report", get(mailer::get_weekly_report).put(mailer::put_weekly_report))
        .route("/v1/unsubscribe", get(mailer::unsubscribe_page).post(mailer::unsubscribe))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY));
    let import =
        Router::new().route("/v1/events", post(import::import_events)).layer(DefaultBodyLimit::max(MAX_IMPORT_BODY));
    // Every route that takes a key counts its failed authentications per client.
    let limiter = Arc::new(limits::AuthFailureLimiter::new(state.config.limits.max_auth_failures));
    // The dashboard's pages sign in with a key too (the sign-in form), and read reports.
    let authenticated = api
        .merge(import)
        .merge(web::router())
        .layer(middleware::from_fn_with_state(state.clone(), catch_up))
        .layer(middleware::from_fn_with_state((state.clone(), limiter), limits::limit_auth_failures));
    // The tracking routes are the hot path: outside the page headers (they answer no
    // HTML) and the request deadline (they read no body worth trickling, and a timer per
    // request is a measurable share of a beacon).
    let others = Router::new()
        .merge(authenticated)
        .route("/healthz", get(ops::healthz))
        .merge(
            Router::new()
                .route("/metrics", get(ops::metrics))
                .layer(middleware::from_fn_with_state(state.clone(), catch_up)),
        )
        .route("/openapi.json", get(ops::openapi))
        .route("/", get(web::home))
        .route("/tag.js", get(web::tag))
        .route("/assets/{name}", get(web::asset))
        .fallback(ops::not_found)
        .layer(middleware::from_fn(web::page_headers))
        .layer(middleware::from_fn_with_state(state.clone(), limits::request_deadline));
    Router::new().merge(tracking).merge(others).with_state(state)
}

/// Lets a read of the API see every beacon the tracking endpoints acknowledged before it
/// arrived (they answer once the beacon is journaled, before it is committed).
async fn catch_up(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    state.pipeline.caught_up().await;
    next.run(request).await
}

/// How to start a server on a store.
pub struct Options {
    pub config: ServerConfig,
    /// Token signing key; generated and kept with the data when absent.
    pub secret: Option<String>,
    /// `ADTALLY_ADMIN_KEY`; generated on first start and printed once when absent.
    pub admin_key: Option<String>,
    pub clock: Arc<dyn Clock>,
}

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
    /// The admin key, if this start generated it (print it once).
    pub generated_admin_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("cannot generate a random key: {0}")]
    Random(String),
}

fn random_hex(bytes: usize) -> Result<String, StartError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| StartError::Random(e.to_string()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Builds the shared state: keys, the signer, the pipeline (which rebuilds its hot
/// state from the store) and the serving catalog.
pub fn build_state(store: Arc<dyn Store>, options: Options) -> Result<(Arc<AppState>, Option<String>), StartError> {
    let secret = match options.secret {
        Some(s) => s,
        None => store.meta_init("token_secret", &random_hex(32)?)?,
    };
    let mut generated = None;
    let admin_key_hash = match options.admin_key {
        Some(key) => api_key_hash(&key),
        None => match store.meta("admin_key_hash")? {
            Some(hash) => hash,
            None => {
                let key = format!("adta_{}", random_hex(24)?);
                let hash = store.meta_init("admin_key_hash", &api_key_hash(&key))?;
                generated = Some(key);
                hash
            }
        },
    };
    let pipeline = Pipeline::start_with_lease_slice(
        store.clone(),
        options.config.counting,
        options.clock.clone(),
        options.config.journal.as_ref(),
        options.config.lease_slice_micros,
    )?;
    let state = AppState::new(
        store,
        pipeline,
        TokenSigner::new(secret.as_bytes()),
        options.config,
        options.clock,
        admin_key_hash,
    )?;
    Ok((Arc::new(state), generated))
}

impl Application {
    pub async fn build(listen: SocketAddr, store: Arc<dyn Store>, options: Options) -> Result<Self, StartError> {
        let (state, generated_admin_key) = build_state(store, options)?;
        let listener = TcpListener::bind(listen).await.map_err(|e| StartError::Bind(listen, e))?;
        Ok(Self { listener, state, generated_admin_key })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests (each of which
    /// waits for its events' commit).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        // Background tasks are aborted when serving ends, so the state (and the store's
        // data-dir lock) is released once the last connection closes.
        let mailer = mailer::spawn(self.state.clone());
        let housekeeping = self.state.clone();
        let housekeeping = tokio::spawn(async move {
            let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
            let mut sealed_at: Option<tokio::time::Instant> = None;
            loop {
                tick.tick().await;
                if sealed_at.is_none_or(|at| at.elapsed() >= SEAL_EVERY) {
                    sealed_at = Some(tokio::time::Instant::now());
                    let state = housekeeping.clone();
                    let sealed =
                        tokio::task::spawn_blocking(move || state.store.seal_spans(state.clock.now_ms())).await;
                    match sealed {
                        Ok(Ok(n)) if n > 0 => tracing::info!(spans = n, "spans of days sealed"),
                        Ok(Err(e)) => tracing::error!(error = %e, "sealing spans of days failed"),
                        _ => {}
                    }
                }
                if let pipeline::Health::Failing(_) = housekeeping.pipeline.health() {
                    // Decisions are off while the writer fails; without a probe nothing
                    // would ever tell it that the store works again. Bounded: a writer
                    // that hangs must not stop housekeeping too.
                    let _ = tokio::time::timeout(HOUSEKEEPING_EVERY, housekeeping.pipeline.probe()).await;
                }
                let state = housekeeping.clone();
                match tokio::task::spawn_blocking(move || state.housekeeping()).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(campaigns = n, "campaigns completed"),
                    Ok(Err(e)) => tracing::error!(error = %e, "housekeeping failed"),
                    _ => {}
                }
            }
        });
        // Several nodes: what another node changed in the catalog (campaigns, ads, review
        // outcomes, advertisers' zones and windows) serves here within a second.
        let catalog_sync = self.state.store.cluster().is_some().then(|| {
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(CATALOG_SYNC_EVERY);
                loop {
                    tick.tick().await;
                    if let Err(e) = state.reload_catalog().await {
                        tracing::warn!(error = %e.message, "could not reload the catalog");
                    }
                }
            })
        });
        let limits = self.state.config.limits;
        let pipeline = self.state.pipeline.clone();
        let served = serve::serve(self.listener, router(self.state), limits, shutdown).await;
        housekeeping.abort();
        if let Some(sync) = catalog_sync {
            sync.abort();
        }
        if let Some(mailer) = mailer {
            mailer.stop();
        }
        // Jobs are committed in order: once this empty one is, everything submitted
        // before it is on disk (or failed).
        let _ = tokio::time::timeout(limits.shutdown_timeout, pipeline.probe()).await;
        served
    }
}

#[cfg(test)]
mod tests {
    /// Every route the router declares is described in the OpenAPI document, with each
    /// of its methods (the document is generated by `scripts/openapi.py`).
    #[test]
    fn openapi_describes_every_route() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("openapi.json")).expect("valid JSON");
        let source = include_str!("lib.rs");
        let mut checked = 0;
        for line in source.lines().map(str::trim).filter(|l| l.starts_with(".route(\"")) {
            let path = line.split('"').nth(1).expect("quoted path");
            let handlers = line.split_once(',').map_or("", |(_, rest)| rest);
            let actions = ["submit", "pause", "resume", "archive", "restore", "clone"];
            let paths: Vec<String> = if path.contains("{action}") {
                actions.iter().map(|a| path.replace("{action}", a)).collect()
            } else {
                vec![path.to_owned()]
            };
            for path in &paths {
                for method in ["get", "post", "patch", "delete"] {
                    if handlers.contains(&format!("{method}(")) {
                        assert!(doc["paths"][path][method].is_object(), "{method} {path} is not in openapi.json");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked >= 30, "only {checked} routes found");
    }
}
