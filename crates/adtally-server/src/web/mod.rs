//! The browser faces: the ad tag publishers embed (`/tag.js`), the CORS layer that lets
//! any publisher's page call the decision and beacons, and the dashboard: server-rendered
//! HTML pages (askama templates under `templates/`, escaping by default) with plain HTML
//! forms, one style sheet and one small script (`/assets/app.css`, `/assets/app.js`), all
//! embedded in the binary.
//!
//! - [`pages`]: the `GET` pages (overview, campaign, forms, billing, the operator's pages);
//! - [`forms`]: the `POST` handlers behind every form (each checks the session's CSRF
//!   token, then Post/Redirect/Get, or the form again with the error);
//! - [`chart`]: the campaign page's daily chart, drawn as SVG on the server;
//! - [`format`]: numbers, money and percentages for people.
//!
//! Pages sign in to the server session of [`crate::session`] and read and write through
//! the same functions the JSON API's handlers call, so their numbers are the API's by
//! construction; the CSV buttons link to the API's own CSV URLs (the API accepts the
//! session cookie for `GET`s).

mod chart;
mod format;
mod forms;
mod pages;

use std::sync::Arc;
use std::sync::OnceLock;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use adtally_store::Session;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Redirect;

use crate::api::{Admin, Caller};
use crate::error::{ApiError, Path};
use crate::state::AppState;

/// One embedded file.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    cache_control: &'static str,
    etag: OnceLock<HeaderValue>,
}

/// The minified tag; `scripts/minify-tag.sh` writes it from `assets/tag.js`.
static TAG: Asset = Asset {
    body: include_str!("../../assets/tag.min.js"),
    content_type: "text/javascript; charset=utf-8",
    // Publishers' pages load it on every view: cache it, but let a new version reach
    // them within minutes; the ETag makes the revalidation a 304.
    cache_control: "public, max-age=300",
    etag: OnceLock::new(),
};
static APP_JS: Asset = Asset {
    body: include_str!("../../assets/dashboard/app.js"),
    content_type: "text/javascript; charset=utf-8",
    cache_control: "no-cache",
    etag: OnceLock::new(),
};
static APP_CSS: Asset = Asset {
    body: include_str!("../../assets/dashboard/app.css"),
    content_type: "text/css; charset=utf-8",
    cache_control: "no-cache",
    etag: OnceLock::new(),
};

/// No inline script or style anywhere; ad previews may show https images and videos.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; \
                   media-src https:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

/// 64-bit FNV-1a: stable across builds and platforms, enough to tell versions apart.
fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The body's hash, computed once: a stable ETag without a hashing crate.
fn etag(asset: &Asset) -> &HeaderValue {
    asset.etag.get_or_init(|| {
        HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a64(asset.body))).unwrap_or(HeaderValue::from_static("\"0\""))
    })
}

fn serve(asset: &Asset, request_headers: &HeaderMap) -> Response {
    let tag = etag(asset).clone();
    let mut response = if request_headers.get(header::IF_NONE_MATCH) == Some(&tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, tag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(asset.cache_control));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// `GET /tag.js`: the ad tag. Any origin may load it (it is a script include).
pub async fn tag(headers: HeaderMap) -> Response {
    let mut response = serve(&TAG, &headers);
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

pub use pages::home;

/// The dashboard's pages and forms (`GET /` is mounted by the main router). HTML pages are
/// not part of the JSON API, so they are not in its OpenAPI document.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/sign-in", post(forms::sign_in))
        .route("/sign-out", post(forms::sign_out))
        .route("/campaigns/new", get(pages::new_campaign).post(forms::create_campaign))
        .route("/campaigns/{id}", get(pages::campaign))
        .route("/campaigns/{id}/edit", get(pages::edit_campaign).post(forms::update_campaign))
        .route("/campaigns/{id}/ads/new", get(pages::new_ad).post(forms::create_ad))
        .route("/campaigns/{id}/do/{action}", post(forms::campaign_action))
        .route("/ads/{id}/edit", get(pages::edit_ad).post(forms::update_ad))
        .route("/billing", get(pages::billing))
        .route("/billing/redeem", post(forms::redeem))
        .route("/billing/weekly-report", post(forms::weekly_report))
        .route("/admin/review", get(pages::review_queue))
        .route("/admin/ads/{id}/review", post(forms::review))
        .route("/admin/advertisers", get(pages::advertisers).post(forms::advertiser))
        .route("/admin/advertisers/{id}", get(pages::advertiser_campaigns))
        .route("/admin/advertisers/{id}/keys", post(forms::key))
        .route("/admin/advertisers/{id}/credits", post(forms::credit))
        .route("/admin/promo-codes", post(forms::promo))
        .route("/admin/placements", get(pages::placements).post(forms::placement))
        .layer(DefaultBodyLimit::max(MAX_FORM_BODY))
}

/// Largest form body a page accepts.
const MAX_FORM_BODY: usize = 64 * 1024;

/// Security headers on every HTML page: the CSP (no inline script or style), no framing,
/// no referrer, and no caching of pages that show an account's figures.
pub async fn page_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        let h = response.headers_mut();
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// `GET /assets/{name}`: the dashboard's script (range picker, live ad preview) and style.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    match name.as_str() {
        "app.js" => Ok(serve(&APP_JS, &headers)),
        "app.css" => Ok(serve(&APP_CSS, &headers)),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such asset")),
    }
}

// ---- the frame every page shares --------------------------------------------------------

/// What the frame of a page (title, navigation, the sign-out form) needs.
pub struct Layout {
    pub title: String,
    /// The navigation entry of this page: `campaigns`, `new`, `billing`, `review`,
    /// `advertisers`, `placements`, or empty.
    pub nav: &'static str,
    pub signed_in: bool,
    pub admin: bool,
    /// The session's CSRF token, for the hidden field of every form.
    pub csrf: String,
}

impl Layout {
    /// The frame of a page shown to nobody in particular (sign-in, errors).
    pub fn anonymous(title: impl Into<String>) -> Self {
        Layout { title: title.into(), nav: "", signed_in: false, admin: false, csrf: String::new() }
    }
}

/// A request from a signed-in browser: who it is, and its session (for the CSRF token).
pub struct Signed {
    pub caller: Caller,
    pub session: Session,
}

impl Signed {
    pub fn layout(&self, title: impl Into<String>, nav: &'static str) -> Layout {
        Layout {
            title: title.into(),
            nav,
            signed_in: true,
            admin: self.caller == Caller::Admin,
            csrf: self.session.csrf_token.clone(),
        }
    }

    /// Refuses (403) a form whose `csrf` field is not this session's token.
    pub fn check(&self, form: &FormData) -> Result<(), PageError> {
        if crate::session::token_ok(form.get("csrf"), &self.session) {
            Ok(())
        } else {
            Err(PageError::new(
                StatusCode::FORBIDDEN,
                "This form was refused: it did not carry this session's security token. Reload the page and try again.",
            ))
        }
    }

    /// The operator, for the operator's pages and forms (403 for an advertiser).
    pub fn admin(&self) -> Result<Admin, PageError> {
        match self.caller {
            Caller::Admin => Ok(Admin(Caller::Admin)),
            Caller::Advertiser(_) => Err(PageError::new(StatusCode::FORBIDDEN, "This page is for the operator.")),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Signed {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        match crate::session::page(state, &parts.headers).await {
            Ok(Some((caller, session))) => Ok(Signed { caller, session }),
            // Not signed in (or the session ended): pages lead to the sign-in form, forms
            // are refused (there is no token to check them against).
            Ok(None) if parts.method == Method::GET || parts.method == Method::HEAD => {
                Err(Redirect::to("/").into_response())
            }
            Ok(None) => Err(PageError::new(
                StatusCode::FORBIDDEN,
                "You are not signed in (or your session ended): sign in again.",
            )
            .into_response()),
            Err(e) => Err(PageError::from(e).into_response()),
        }
    }
}

/// A form's fields, in order; repeated names (check boxes) keep every value. Parsing
/// never fails: a malformed body is just a form without the fields.
pub struct FormData(Vec<(String, String)>);

impl FormData {
    pub fn parse(body: &[u8]) -> Self {
        FormData(url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }
    /// The first value of a field, or "".
    pub fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }
    /// The first value of a field, trimmed, if it is not empty.
    pub fn opt(&self, name: &str) -> Option<&str> {
        Some(self.get(name).trim()).filter(|v| !v.is_empty())
    }
    /// Every value of a field.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// A page that could not be shown: its status and a message for people. Validation
/// errors are 4xx with the API's own message; a store failure is the API's 5xx.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PageError { status, message: message.into() }
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("There is no such {what}, or it belongs to another account."))
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e.status {
            StatusCode::NOT_FOUND => PageError::not_found(e.message.strip_suffix(" not found").unwrap_or("page")),
            status => PageError::new(status, sentence(&e.message)),
        }
    }
}

/// An API message as a sentence: capitalized (unless it starts with a field name), with a
/// full stop.
pub fn sentence(message: &str) -> String {
    let field = message.split(' ').next().is_some_and(|w| w.contains('_'));
    let mut chars = message.chars();
    let mut out: String = match chars.next() {
        Some(c) if !field => c.to_uppercase().chain(chars).collect(),
        _ => message.to_owned(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = match self.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            s if s.is_server_error() => "Something went wrong",
            _ => "Please check your request",
        };
        render(
            self.status,
            &ErrorPage { layout: Layout::anonymous(title), status: self.status.as_u16(), message: self.message },
        )
    }
}

/// A template as an HTML response.
pub fn render<T: askama::Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render; the error was logged").into_response()
        }
    }
}

/// A path's numeric id; anything else is a page that does not exist.
pub fn id_of(text: &str, what: &str) -> Result<i64, PageError> {
    text.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| PageError::not_found(what))
}

/// CORS for the decision and beacon routes: any origin may call them, without
/// credentials (the tag passes `uid` in the query instead of relying on third-party
/// cookies). Preflights are answered here, before routing, so they never reach a handler
/// and never count.
pub async fn cors(request: Request, next: Next) -> Response {
    let preflight = request.method() == Method::OPTIONS;
    let mut response = if preflight { StatusCode::NO_CONTENT.into_response() } else { next.run(request).await };
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    if preflight {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped tag is the minified form of the current source: its header names the
    /// source's hash. After editing `assets/tag.js`, run `scripts/minify-tag.sh`.
    #[test]
    fn the_minified_tag_is_built_from_the_current_source() {
        let source = include_str!("../../assets/tag.js");
        let header = TAG.body.lines().next().unwrap_or_default();
        let want = format!("(fnv1a64 {:016x})", fnv1a64(source));
        assert!(header.contains(&want), "tag.min.js is stale: run scripts/minify-tag.sh ({header} vs {want})");
        // The size the issue aims for: under 6 KB minified.
        assert!(TAG.body.len() < 6 * 1024, "the tag grew to {} bytes", TAG.body.len());
    }
}
