//! The browser faces: the ad tag publishers embed (`/tag.js`) and the dashboard (`/`, a
//! static page and its script and style under `/assets/`), all embedded in the binary,
//! plus the CORS layer that lets any publisher's page call the decision and beacons.
//!
//! The dashboard is a static app over the `/v1` JSON API: it signs in once with an API key
//! to a server session (an HttpOnly cookie plus a CSRF token for writes, see
//! [`crate::session`]) and keeps the key nowhere. Everything it shows is what the API
//! answers, so the dashboard's numbers and CSV are the API's by construction.

use std::sync::OnceLock;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Path};

/// One embedded file.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    cache_control: &'static str,
    etag: OnceLock<HeaderValue>,
}

/// The minified tag; `scripts/minify-tag.sh` writes it from `assets/tag.js`.
static TAG: Asset = Asset {
    body: include_str!("../assets/tag.min.js"),
    content_type: "text/javascript; charset=utf-8",
    // Publishers' pages load it on every view: cache it, but let a new version reach
    // them within minutes; the ETag makes the revalidation a 304.
    cache_control: "public, max-age=300",
    etag: OnceLock::new(),
};
static INDEX: Asset = Asset {
    body: include_str!("../assets/dashboard/index.html"),
    content_type: "text/html; charset=utf-8",
    cache_control: "no-cache",
    etag: OnceLock::new(),
};
static APP_JS: Asset = Asset {
    body: include_str!("../assets/dashboard/app.js"),
    content_type: "text/javascript; charset=utf-8",
    cache_control: "no-cache",
    etag: OnceLock::new(),
};
static APP_CSS: Asset = Asset {
    body: include_str!("../assets/dashboard/app.css"),
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

/// `GET /`: the dashboard page.
pub async fn dashboard(headers: HeaderMap) -> Response {
    let mut response = serve(&INDEX, &headers);
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// `GET /assets/{name}`: the dashboard's script and style.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    match name.as_str() {
        "app.js" => Ok(serve(&APP_JS, &headers)),
        "app.css" => Ok(serve(&APP_CSS, &headers)),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such asset")),
    }
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
        let source = include_str!("../assets/tag.js");
        let header = TAG.body.lines().next().unwrap_or_default();
        let want = format!("(fnv1a64 {:016x})", fnv1a64(source));
        assert!(header.contains(&want), "tag.min.js is stale: run scripts/minify-tag.sh ({header} vs {want})");
        // The size the issue aims for: under 6 KB minified.
        assert!(TAG.body.len() < 6 * 1024, "the tag grew to {} bytes", TAG.body.len());
    }
}
