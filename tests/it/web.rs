//! The server-rendered dashboard over plain HTTP (no browser): signing in through the
//! form, CSRF refusal on every form, escaping, foreign ids, range validation and form
//! errors shown on the form.

use serde_json::json;

use crate::support::{fixture, fixture_for_existing_placement, spawn_app, TestApp, ADMIN};

/// `application/x-www-form-urlencoded` of the pairs.
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// The value of a `Set-Cookie` named `name`.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().and_then(|c| c.split_once('=')).map(|(_, v)| v.to_owned()).unwrap_or_default()
}

/// The first hidden `csrf` field of a page.
fn csrf_of(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a csrf field") + r#"name="csrf" value=""#.len();
    html[at..].split('"').next().unwrap_or_default().to_owned()
}

/// A browser-like session: its cookie header and CSRF token.
struct Web {
    cookie: String,
    csrf: String,
}

async fn sign_in(app: &TestApp, key: &str) -> Web {
    let page = app.client.get(app.url("/")).send().await.expect("sign-in page");
    assert_eq!(page.status().as_u16(), 200);
    let token_cookie = set_cookie(&page, "adtally_signin").expect("a sign-in cookie");
    assert!(token_cookie.contains("HttpOnly") && token_cookie.contains("SameSite=Strict"), "{token_cookie}");
    let html = page.text().await.expect("html");
    let token = csrf_of(&html);
    assert_eq!(cookie_value(&token_cookie), token);
    let r = app
        .client
        .post(app.url("/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("adtally_signin={token}"))
        .body(form(&[("csrf", &token), ("api_key", key)]))
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status().as_u16(), 303, "signed in");
    assert_eq!(r.headers()["location"], "/");
    let session = set_cookie(&r, "adtally_session").expect("a session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict") && !session.contains("Secure"));
    let cookie = format!("adtally_session={}", cookie_value(&session));
    let home = app.client.get(app.url("/campaigns/new")).header("cookie", &cookie).send().await.expect("page");
    let html = home.text().await.expect("html");
    Web { csrf: csrf_of(&html), cookie }
}

impl Web {
    async fn get(&self, app: &TestApp, path: &str) -> (u16, String) {
        let r = app.client.get(app.url(path)).header("cookie", &self.cookie).send().await.expect("get");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }
    async fn post(&self, app: &TestApp, path: &str, pairs: &[(&str, &str)]) -> reqwest::Response {
        app.client
            .post(app.url(path))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(pairs))
            .send()
            .await
            .expect("post")
    }
}

#[tokio::test]
async fn forms_need_the_csrf_token_and_pages_escape_what_they_show() {
    let app = spawn_app().await;
    let f = fixture(&app, "side", 1_000_000).await;
    let (s, _) = app
        .post(
            &f.key,
            &format!("/v1/campaigns/{}/ads", f.campaign_id),
            json!({"format": "compact", "headline": "<script>alert(1)</script>", "body": "a \"quoted\" & <b>bold</b> claim",
                   "target_url": "https://acme.example/"}),
        )
        .await;
    assert_eq!(s, 201);
    let web = sign_in(&app, &f.key).await;

    // The campaign page shows the headline as text, never as markup; pages carry the CSP.
    let r = app.client.get(app.url(&format!("/campaigns/{}", f.campaign_id))).header("cookie", &web.cookie).send();
    let r = r.await.expect("campaign page");
    assert_eq!(r.status().as_u16(), 200);
    let csp = r.headers()["content-security-policy"].to_str().expect("csp").to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.expect("html");
    assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "escaped headline");
    assert!(!html.contains("<script>alert(1)"), "no injected script");
    assert!(!html.contains("<b>bold</b>"));
    assert!(!html.contains("<script>"), "no inline script at all");

    // A form without the token, or with another one, is refused and changes nothing.
    let pause = format!("/campaigns/{}/do/pause", f.campaign_id);
    for pairs in [vec![], vec![("csrf", "0".repeat(64))]] {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = web.post(&app, &pause, &pairs).await;
        assert_eq!(r.status().as_u16(), 403);
        assert!(r.text().await.unwrap_or_default().contains("security token"));
    }
    // Without a session at all, too.
    let r = app.client.post(app.url(&pause)).body(form(&[("csrf", &web.csrf)])).send().await.expect("post");
    assert_eq!(r.status().as_u16(), 403);
    let (_, c) = app.get(&f.key, &format!("/v1/campaigns/{}", f.campaign_id)).await;
    assert_eq!(c["status"], "active", "nothing was paused");
    // With it, the action runs and the browser is sent back to the page (PRG).
    let r = web.post(&app, &pause, &[("csrf", &web.csrf)]).await;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], format!("/campaigns/{}", f.campaign_id));
    let (_, c) = app.get(&f.key, &format!("/v1/campaigns/{}", f.campaign_id)).await;
    assert_eq!(c["status"], "paused");

    // Signing in needs the form's own token (its cookie) and a good key.
    let r = app
        .client
        .post(app.url("/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", "abc"), ("api_key", &f.key)]))
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status().as_u16(), 403);
    assert!(set_cookie(&r, "adtally_session").is_none());
    let page = app.client.get(app.url("/")).send().await.expect("page");
    let token = cookie_value(&set_cookie(&page, "adtally_signin").expect("cookie"));
    let r = app
        .client
        .post(app.url("/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("adtally_signin={token}"))
        .body(form(&[("csrf", &token), ("api_key", "adt_wrong")]))
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.unwrap_or_default().contains("This API key is not valid"));

    // Signing out needs the token too, then ends the session.
    let r = web.post(&app, "/sign-out", &[]).await;
    assert_eq!(r.status().as_u16(), 403);
    let r = web.post(&app, "/sign-out", &[("csrf", &web.csrf)]).await;
    assert_eq!(r.status().as_u16(), 303);
    assert!(set_cookie(&r, "adtally_session").is_some_and(|c| c.contains("Max-Age=0")));
    let (s, _) = web.get(&app, "/billing").await;
    assert_eq!(s, 303, "signed out: back to the sign-in form");
}

#[tokio::test]
async fn foreign_ids_are_not_found_and_bad_ranges_are_explained() {
    let app = spawn_app().await;
    let f = fixture(&app, "side", 1_000_000).await;
    // Some traffic, before a second advertiser competes for the placement.
    for uid in ["u1", "u2"] {
        let d = app.decision("side", uid).await;
        app.hit(d["impression_url"].as_str().expect("url")).await;
    }
    let other = fixture_for_existing_placement(&app, "UTC", 1_000_000, 1_000_000_000).await;
    let web = sign_in(&app, &f.key).await;

    // The overview's figures are the report API's for the same range.
    let (_, api) = app.get(&f.key, "/v1/reports?range=today&group_by=campaign").await;
    let (s, html) = web.get(&app, "/?range=today").await;
    assert_eq!(s, 200, "{html}");
    let cell = |html: &str, col: &str| {
        let foot = &html[html.find("<tfoot>").expect("a table footer")..];
        let at = foot.find(&format!(r#"data-col="{col}">"#)).expect("a cell") + col.len() + 12;
        foot[at..].split('<').next().unwrap_or_default().to_owned()
    };
    assert_eq!(api["totals"]["impressions"], 2);
    assert_eq!(cell(&html, "impressions"), "2");
    assert_eq!(cell(&html, "clicks"), "0");
    assert_eq!(cell(&html, "ctr"), "0.00%");
    assert!(html.contains(r#"href="/v1/reports?range=today&#38;group_by=campaign&#38;format=csv""#), "CSV link");

    let (s, html) = web.get(&app, &format!("/campaigns/{}", f.campaign_id)).await;
    assert_eq!(s, 200, "{html}");
    for path in [
        format!("/campaigns/{}", other.campaign_id),
        format!("/campaigns/{}/edit", other.campaign_id),
        format!("/campaigns/{}/ads/new", other.campaign_id),
        format!("/ads/{}/edit", other.ad_id),
        "/campaigns/999999".to_owned(),
        "/campaigns/abc".to_owned(),
    ] {
        let (s, html) = web.get(&app, &path).await;
        assert_eq!(s, 404, "{path}");
        assert!(html.contains(r#"id="not-found""#), "{path}: {html}");
    }
    let r = web.post(&app, &format!("/campaigns/{}/do/pause", other.campaign_id), &[("csrf", &web.csrf)]).await;
    assert_eq!(r.status().as_u16(), 404);
    let (_, c) = app.get(&other.key, &format!("/v1/campaigns/{}", other.campaign_id)).await;
    assert_eq!(c["status"], "active");
    // The operator's pages are not an advertiser's.
    let (s, _) = web.get(&app, "/admin/review").await;
    assert_eq!(s, 403);

    // Ranges: the named ones and custom dates work; anything else is a clear 400 page.
    for query in
        ["range=today", "range=lifetime", "range=custom&from=2026-01-01&to=2026-01-31", "from=2026-01-01&to=2026-01-02"]
    {
        let (s, html) = web.get(&app, &format!("/campaigns/{}?{query}", f.campaign_id)).await;
        assert_eq!(s, 200, "{query}: {html}");
        let (s, _) = web.get(&app, &format!("/?{query}")).await;
        assert_eq!(s, 200, "{query}");
    }
    for (query, says) in [
        ("range=forever", "is not one this dashboard knows"),
        ("range=custom", "needs both a first and a last day"),
        ("range=custom&from=2026-13-01&to=2026-12-01", "must be a date like"),
        ("range=custom&from=2026-02-01&to=2026-01-01", "is after"),
        ("range=custom&from=1990-01-01&to=2026-01-01", "at most"),
    ] {
        for path in ["/".to_owned(), format!("/campaigns/{}", f.campaign_id)] {
            let (s, html) = web.get(&app, &format!("{path}?{query}")).await;
            assert_eq!(s, 400, "{path}?{query}");
            assert!(html.contains(says), "{path}?{query}: {html}");
        }
    }
}

#[tokio::test]
async fn refused_forms_show_the_error_on_the_form() {
    let app = spawn_app().await;
    let f = fixture(&app, "side", 1_000_000).await;
    let web = sign_in(&app, &f.key).await;
    let (s, html) = web.get(&app, "/campaigns/new").await;
    assert_eq!(s, 200, "{html}");

    let r = web
        .post(&app, "/campaigns/new", &[("csrf", &web.csrf), ("name", "Summer <b>"), ("bid", "abc"), ("total", "10")])
        .await;
    assert_eq!(r.status().as_u16(), 400);
    let html = r.text().await.unwrap_or_default();
    assert!(html.contains(r#"id="form-error""#) && html.contains("The CPM bid must be an amount like 12.50"), "{html}");
    assert!(html.contains(r#"value="Summer &#60;b&#62;""#), "what was typed is kept, escaped: {html}");
    // The API's own validation, on the form.
    let r = web
        .post(&app, "/campaigns/new", &[("csrf", &web.csrf), ("name", "Summer"), ("bid", "0.001"), ("total", "10")])
        .await;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap_or_default().contains("cpm_bid_micros must be between"));
    // A good form creates the draft and goes on to its first ad.
    let r = web
        .post(
            &app,
            "/campaigns/new",
            &[
                ("csrf", &web.csrf),
                ("name", "Summer"),
                ("bid", "2.5"),
                ("total", "100"),
                ("devices", "mobile"),
                ("end", "2030-01-31T18:00"),
            ],
        )
        .await;
    assert_eq!(r.status().as_u16(), 303);
    let location = r.headers()["location"].to_str().expect("location").to_owned();
    let id: i64 = location.trim_start_matches("/campaigns/").trim_end_matches("/ads/new").parse().expect("id");
    let (_, c) = app.get(&f.key, &format!("/v1/campaigns/{id}")).await;
    assert_eq!((c["cpm_bid_micros"].as_i64(), c["status"].as_str()), (Some(2_500_000), Some("draft")));
    assert_eq!(c["targeting"]["devices"], json!(["mobile"]));
    assert_eq!(c["end_at"], "2030-01-31T18:00:00Z");
    // Its edit form starts from what is stored; an edit is saved and leads back to the page.
    let (s, html) = web.get(&app, &format!("/campaigns/{id}/edit")).await;
    assert_eq!(s, 200);
    for field in [r#"value="2.5""#, r#"value="100""#, r#"value="2030-01-31T18:00""#, r#"value="mobile" checked"#] {
        assert!(html.contains(field), "{field}: {html}");
    }
    let edit = [("csrf", web.csrf.as_str()), ("name", "Summer sale"), ("bid", "3"), ("total", "100"), ("daily", "10")];
    let r = web.post(&app, &format!("/campaigns/{id}/edit"), &edit).await;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], format!("/campaigns/{id}"));
    let (_, c) = app.get(&f.key, &format!("/v1/campaigns/{id}")).await;
    assert_eq!((c["name"].as_str(), c["daily_budget_micros"].as_i64()), (Some("Summer sale"), Some(10_000_000)));
    assert_eq!((c["end_at"].clone(), c["targeting"]["devices"].clone()), (json!(null), json!([])), "cleared fields");
    // An ad with a bad landing page: the message, the typed headline kept.
    let r = web
        .post(
            &app,
            &location,
            &[("csrf", &web.csrf), ("format", "sidebar"), ("headline", "Hi"), ("target_url", "javascript:alert(1)")],
        )
        .await;
    assert_eq!(r.status().as_u16(), 400);
    let html = r.text().await.unwrap_or_default();
    assert!(html.contains("must be an absolute http") && html.contains(r#"value="Hi""#), "{html}");
    assert!(!html.contains(r#"href="javascript:"#), "the preview never links what was refused");
    // Submitting a campaign without ads is refused with the API's reason, not a 5xx.
    let r = web.post(&app, &format!("/campaigns/{id}/do/submit"), &[("csrf", &web.csrf)]).await;
    assert_eq!(r.status().as_u16(), 409);
    assert!(r.text().await.unwrap_or_default().contains("Add at least one ad before submitting"));
    // A promo code that does not exist.
    let r = web.post(&app, "/billing/redeem", &[("csrf", &web.csrf), ("code", "NOPE")]).await;
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.text().await.unwrap_or_default().contains(r#"id="form-error""#));

    // The operator: a rejection needs a reason; the page says so.
    let admin = sign_in(&app, ADMIN).await;
    let (s, html) = admin.get(&app, "/admin/review").await;
    assert_eq!(s, 200, "{html}");
    for path in ["/admin/advertisers", "/admin/placements", &format!("/campaigns/{}", f.campaign_id)] {
        let (s, html) = admin.get(&app, path).await;
        assert_eq!(s, 200, "{path}: {html}");
    }
    let (s, _) = admin.get(&app, "/").await;
    assert_eq!(s, 303, "the operator starts at the review queue");
    // The operator opens an account and gives it a key, shown once on the page.
    let new =
        [("csrf", admin.csrf.as_str()), ("name", "Beta & Co"), ("email", "b@beta.example"), ("timezone", "Mars/Base")];
    let r = admin.post(&app, "/admin/advertisers", &new).await;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap_or_default().contains("IANA time zone"));
    let new = [
        ("csrf", admin.csrf.as_str()),
        ("name", "Beta & Co"),
        ("email", "b@beta.example"),
        ("timezone", "Europe/Berlin"),
    ];
    let r = admin.post(&app, "/admin/advertisers", &new).await;
    assert_eq!(r.status().as_u16(), 303);
    let (_, list) = app.get(ADMIN, "/v1/advertisers").await;
    let beta = list["items"].as_array().into_iter().flatten().find(|a| a["name"] == "Beta & Co").cloned();
    let beta = beta.expect("the new advertiser")["id"].as_i64().expect("id");
    let r = admin.post(&app, &format!("/admin/advertisers/{beta}/keys"), &[("csrf", &admin.csrf)]).await;
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.unwrap_or_default();
    let at = html.find(r#"id="new-key" class="secret" value=""#).expect("the key") + 35;
    let key = html[at..].split('"').next().unwrap_or_default().to_owned();
    let (s, me) = app.get(&key, "/v1/me").await;
    assert_eq!((s, me["id"].as_i64()), (200, Some(beta)), "the key shown signs in as the new advertiser");
    let r = admin
        .post(&app, &format!("/admin/ads/{}/review", f.ad_id), &[("csrf", &admin.csrf), ("decision", "reject")])
        .await;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap_or_default().contains("A rejection needs a reason"));
}

/// The review page sends the version it showed: an Approve clicked after the advertiser
/// changed the ad is refused with the page shown again, never applied to content the
/// operator did not see.
#[tokio::test]
async fn the_review_page_decides_only_on_the_version_it_showed() {
    let app = spawn_app().await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let ad_path = format!("/v1/ads/{}", f.ad_id);
    let (s, _) = app.patch(&f.key, &ad_path, json!({"headline": "Spring sale"})).await;
    assert_eq!(s, 200);
    let admin = sign_in(&app, ADMIN).await;
    let (s, html) = admin.get(&app, "/admin/review").await;
    assert_eq!(s, 200);
    assert!(html.contains(r#"name="version" value="2""#), "{html}");

    let (s, _) = app.patch(&f.key, &ad_path, json!({"target_url": "https://phish.example/login"})).await;
    assert_eq!(s, 200);
    let form = [("csrf", admin.csrf.as_str()), ("decision", "approve"), ("version", "2")];
    let r = admin.post(&app, &format!("/admin/ads/{}/review", f.ad_id), &form).await;
    assert_eq!(r.status().as_u16(), 409);
    let html = r.text().await.unwrap_or_default();
    assert!(html.contains(r#"id="form-error""#) && html.contains("version 3 now, not 2"), "{html}");
    assert!(html.contains("phish.example"), "the page shows what is pending now: {html}");
    let (_, ad) = app.get(ADMIN, &ad_path).await;
    assert_eq!(
        (ad["target_url"].as_str(), ad["revision"]["status"].as_str()),
        (Some("https://acme.example/landing?x=1"), Some("pending_review"))
    );
}

/// The operator reaches any advertiser's campaigns from the advertisers page, as that
/// advertiser sees them; advertisers cannot.
#[tokio::test]
async fn the_operator_sees_an_advertisers_campaigns() {
    let app = spawn_app().await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let admin = sign_in(&app, ADMIN).await;
    let (s, html) = admin.get(&app, "/admin/advertisers").await;
    assert_eq!(s, 200);
    let link = format!(r#"href="/admin/advertisers/{}""#, f.advertiser_id);
    assert!(html.contains(&link), "{html}");

    let (s, html) = admin.get(&app, &format!("/admin/advertisers/{}?range=last_7_days", f.advertiser_id)).await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains(&format!(r#"data-campaign="{}""#, f.campaign_id)) && html.contains("Spring"), "{html}");
    assert!(!html.contains("New campaign"), "the advertiser's own links are not the operator's");
    assert!(html.contains(&format!("advertiser_id={}", f.advertiser_id)), "the CSV names whose: {html}");

    let (s, _) = admin.get(&app, "/admin/advertisers/999999").await;
    assert_eq!(s, 404);
    let advertiser = sign_in(&app, &f.key).await;
    let (s, _) = advertiser.get(&app, &format!("/admin/advertisers/{}", f.advertiser_id)).await;
    assert_eq!(s, 403);
}
