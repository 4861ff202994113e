//! Dashboard sessions over HTTP: signing in sets an HttpOnly, SameSite=Strict cookie
//! (Secure behind an https proxy); the cookie authenticates reads, and writes only with
//! the session's CSRF token; signing out, revoking the key, idling and the absolute limit
//! end it; a restart does not.

use std::sync::Arc;

use adtally_core::clock::{Clock, ManualClock, HOUR, MINUTE};
use adtally_server::ServerConfig;
use serde_json::{json, Value};

use crate::support::{fixture, spawn_app, spawn_app_in, TestApp, ADMIN};

/// A signed-in browser, as far as the server can tell: the cookie and the CSRF token.
struct Signed {
    cookie: String,
    set_cookie: String,
    body: Value,
}

impl Signed {
    fn csrf(&self) -> &str {
        self.body["csrf_token"].as_str().expect("csrf token")
    }
}

async fn sign_in_with(app: &TestApp, key: &str, headers: &[(&str, &str)]) -> (u16, Option<Signed>, Value) {
    let mut req = app.client.post(app.url("/v1/session")).json(&json!({"api_key": key}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("sign in");
    let status = r.status().as_u16();
    let set_cookie = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let signed = set_cookie.map(|set_cookie| {
        let cookie = set_cookie.split(';').next().unwrap_or_default().to_owned();
        Signed { cookie, set_cookie, body: body.clone() }
    });
    (status, signed, body)
}

async fn sign_in(app: &TestApp, key: &str) -> Signed {
    let (s, signed, body) = sign_in_with(app, key, &[]).await;
    assert_eq!(s, 201, "{body}");
    signed.expect("a session cookie")
}

/// A request with the cookie (and no Authorization header), and an optional CSRF token.
async fn with_cookie(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path)).header("cookie", cookie);
    if let Some(csrf) = csrf {
        req = req.header("x-csrf-token", csrf);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn me(app: &TestApp, cookie: &str) -> (u16, Value) {
    with_cookie(app, reqwest::Method::GET, "/v1/me", cookie, None, None).await
}

#[tokio::test]
async fn a_session_cookie_signs_in_and_writes_need_the_csrf_token() {
    let app = spawn_app().await;
    let f = fixture(&app, "side", 1_000_000).await;
    let s = sign_in(&app, &f.key).await;
    assert_eq!(s.body["role"], "advertiser");
    assert_eq!(s.body["advertiser_id"], f.advertiser_id);
    assert_eq!(s.csrf().len(), 64);
    // The cookie: a 256-bit id, HttpOnly, SameSite=Strict, the whole site, not Secure
    // over plain http.
    let attributes: Vec<&str> = s.set_cookie.split(';').map(str::trim).collect();
    let id = s.cookie.strip_prefix("adtally_session=").expect("cookie name");
    assert_eq!(id.len(), 64, "{}", s.set_cookie);
    assert!(attributes.contains(&"HttpOnly"), "{}", s.set_cookie);
    assert!(attributes.contains(&"SameSite=Strict"), "{}", s.set_cookie);
    assert!(attributes.contains(&"Path=/"), "{}", s.set_cookie);
    assert!(!attributes.iter().any(|a| a.eq_ignore_ascii_case("secure")), "{}", s.set_cookie);
    // The store keeps only the hash of the id.
    assert!(app.store.session(id, app.clock.now_ms()).expect("store").is_none());

    // The cookie reads like the key does.
    let (status, who) = me(&app, &s.cookie).await;
    assert_eq!((status, who["id"].as_i64()), (200, Some(f.advertiser_id)), "{who}");
    let (status, again) = with_cookie(&app, reqwest::Method::GET, "/v1/session", &s.cookie, None, None).await;
    assert_eq!(status, 200);
    assert_eq!((again["role"].as_str(), again["csrf_token"].as_str()), (Some("advertiser"), Some(s.csrf())));

    // A write without the token, or with a wrong one, is refused and changes nothing.
    let pause = format!("/v1/campaigns/{}/pause", f.campaign_id);
    let wrong = "0".repeat(64);
    for csrf in [None, Some(wrong.as_str()), Some(""), Some(&s.csrf()[..63])] {
        let (status, body) = with_cookie(&app, reqwest::Method::POST, &pause, &s.cookie, csrf, Some(json!({}))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("csrf")), "{csrf:?}: {body}");
    }
    let (status, body) = with_cookie(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/campaigns/{}", f.campaign_id),
        &s.cookie,
        None,
        Some(json!({"name": "Forged"})),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("csrf")));
    let (_, c) = app.get(&f.key, &format!("/v1/campaigns/{}", f.campaign_id)).await;
    assert_eq!((c["status"].as_str(), c["name"].as_str()), (Some("active"), Some("Spring")), "nothing changed");

    // With the token it works.
    let (status, c) =
        with_cookie(&app, reqwest::Method::POST, &pause, &s.cookie, Some(s.csrf()), Some(json!({}))).await;
    assert_eq!((status, c["status"].as_str()), (200, Some("paused")), "{c}");

    // A Bearer client is unaffected by the CSRF rule, and its key wins over any cookie.
    let resume = format!("/v1/campaigns/{}/resume", f.campaign_id);
    let r = app
        .client
        .post(app.url(&resume))
        .bearer_auth(&f.key)
        .header("cookie", &s.cookie)
        .json(&json!({}))
        .send()
        .await
        .expect("resume");
    assert_eq!(r.status().as_u16(), 200);
    let r = app.client.get(app.url("/v1/me")).bearer_auth("not-a-key").header("cookie", &s.cookie).send().await;
    assert_eq!(r.expect("me").status().as_u16(), 401, "a bad Bearer key is not rescued by the cookie");

    // The session id is never taken from a query string.
    let r = app.client.get(app.url(&format!("/v1/me?adtally_session={id}"))).send().await.expect("me");
    assert_eq!(r.status().as_u16(), 401);

    // Signing out needs the token too, then ends the session and removes the cookie.
    let (status, body) = with_cookie(&app, reqwest::Method::DELETE, "/v1/session", &s.cookie, None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("csrf")));
    let r = app
        .client
        .delete(app.url("/v1/session"))
        .header("cookie", &s.cookie)
        .header("x-csrf-token", s.csrf())
        .send()
        .await
        .expect("sign out");
    assert_eq!(r.status().as_u16(), 204);
    let cleared = r.headers()["set-cookie"].to_str().expect("set-cookie").to_owned();
    assert!(cleared.starts_with("adtally_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(me(&app, &s.cookie).await.0, 401);
    let (status, body) = with_cookie(&app, reqwest::Method::GET, "/v1/session", &s.cookie, None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) =
        with_cookie(&app, reqwest::Method::POST, &pause, &s.cookie, Some(s.csrf()), Some(json!({}))).await;
    assert_eq!(status, 401);
    // Signing out again is harmless.
    let (status, _) = with_cookie(&app, reqwest::Method::DELETE, "/v1/session", &s.cookie, None, None).await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn sign_in_refuses_bad_keys_and_bad_bodies() {
    let app = spawn_app().await;
    let long = "k".repeat(10_000);
    for key in ["", "   ", "adt_0000", long.as_str()] {
        let (s, signed, body) = sign_in_with(&app, key, &[]).await;
        assert_eq!((s, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{key:.20}: {body}");
        assert!(signed.is_none());
    }
    let post = |body: &'static str, content_type: &'static str| {
        app.client.post(app.url("/v1/session")).header("content-type", content_type).body(body).send()
    };
    for (body, content_type, want) in [
        ("api_key=x", "application/x-www-form-urlencoded", 415),
        ("{", "application/json", 400),
        (r#"{"api_key": 5}"#, "application/json", 422),
        (r#"{"api_key": "x", "extra": 1}"#, "application/json", 422),
    ] {
        let r = post(body, content_type).await.expect("post");
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status == want || (want == 422 && status == 400), "{status} {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    let huge = format!(r#"{{"api_key": "{}"}}"#, "k".repeat(200_000));
    let r = app.client.post(app.url("/v1/session")).header("content-type", "application/json").body(huge).send().await;
    assert_eq!(r.expect("huge").status().as_u16(), 413);
    // A malformed or unknown cookie is no session.
    for cookie in ["adtally_session=x", &format!("adtally_session={}", "a".repeat(64)), "adtally_session="] {
        assert_eq!(me(&app, cookie).await.0, 401, "{cookie}");
    }
}

#[tokio::test]
async fn the_admin_signs_in_and_the_cookie_is_secure_behind_an_https_proxy() {
    let app = spawn_app().await;
    // The test client connects from 127.0.0.1, a trusted proxy by default.
    let (s, signed, body) = sign_in_with(&app, ADMIN, &[("x-forwarded-proto", "https")]).await;
    assert_eq!((s, body["role"].as_str()), (201, Some("admin")), "{body}");
    assert!(body.get("advertiser_id").is_none());
    let signed = signed.expect("cookie");
    assert!(signed.set_cookie.split(';').any(|a| a.trim() == "Secure"), "{}", signed.set_cookie);
    let (status, who) = me(&app, &signed.cookie).await;
    assert_eq!((status, who["role"].as_str()), (200, Some("admin")));
    let (status, list) = with_cookie(&app, reqwest::Method::GET, "/v1/advertisers", &signed.cookie, None, None).await;
    assert_eq!((status, list["items"].is_array()), (200, true), "admin routes accept the admin's session");
    let new_advertiser = json!({"name": "Via cookie", "email": "c@example.com"});
    let (status, _) = with_cookie(
        &app,
        reqwest::Method::POST,
        "/v1/advertisers",
        &signed.cookie,
        Some(signed.csrf()),
        Some(new_advertiser),
    )
    .await;
    assert_eq!(status, 201);
    let (_, audit) = app.get(ADMIN, "/v1/audit").await;
    assert_eq!(audit["items"][0]["actor"], "admin");
}

#[tokio::test]
async fn revoking_the_key_ends_its_sessions() {
    let app = spawn_app().await;
    let f = fixture(&app, "side", 1_000_000).await;
    let (s, key) = app.post(ADMIN, &format!("/v1/advertisers/{}/keys", f.advertiser_id), json!({})).await;
    assert_eq!(s, 201);
    let second = key["api_key"].as_str().expect("key");
    let doomed = sign_in(&app, second).await;
    let kept = sign_in(&app, &f.key).await;
    assert_eq!(me(&app, &doomed.cookie).await.0, 200);
    let (s, _) = app.post(ADMIN, &format!("/v1/keys/{}/revoke", key["id"]), json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(me(&app, &doomed.cookie).await.0, 401, "the revoked key's session ended");
    assert_eq!(me(&app, &kept.cookie).await.0, 200, "another key's session goes on");
    let (s, _, _) = sign_in_with(&app, second, &[]).await;
    assert_eq!(s, 401, "a revoked key cannot sign in");
}

#[tokio::test]
async fn sessions_survive_a_restart_and_end_when_idle_or_old() {
    let dir = Arc::new(tempfile::tempdir().expect("dir"));
    let clock = Arc::new(ManualClock::new(adtally_core::clock::SystemClock.now_ms()));
    let (key, idle, busy) = {
        let app = spawn_app_in(dir.clone(), ServerConfig::default(), clock.clone()).await;
        let f = fixture(&app, "side", 1_000_000).await;
        let idle = sign_in(&app, &f.key).await;
        let busy = sign_in(&app, &f.key).await;
        (f.key, idle, busy)
    };
    let app = spawn_app_in(dir, ServerConfig::default(), clock.clone()).await;
    assert_eq!(me(&app, &idle.cookie).await.0, 200, "a restart does not sign anyone out");
    // Used every 11 hours, a session lives on; unused for 12 hours, it ends.
    for _ in 0..15 {
        clock.advance(11 * HOUR);
        assert_eq!(me(&app, &busy.cookie).await.0, 200);
    }
    assert_eq!(me(&app, &idle.cookie).await.0, 401, "idle for days");
    // Seven days after sign-in it ends however busy (15 × 11 h = 165 h, then 3 h more).
    clock.advance(3 * HOUR + MINUTE);
    assert_eq!(me(&app, &busy.cookie).await.0, 401, "past the absolute limit");
    let fresh = sign_in(&app, &key).await;
    assert_eq!(me(&app, &fresh.cookie).await.0, 200);
}
