//! The browser faces end to end in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them): the ad tag on a publisher page served
//! from another origin, and the dashboard. Ignored in a plain `cargo test`; run with
//! `cargo test --test it browser -- --include-ignored`. Screenshots go to
//! `target/browser-screenshots/` (or `$ADTALLY_SCREENSHOTS`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use adtally_core::clock::{Clock, SystemClock};
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use serde_json::{json, Value};

use crate::support::{fixture, fixture_for_existing_placement, spawn_app, TestApp, ADMIN};
use crate::webdriver::Browser;

fn screenshots() -> PathBuf {
    std::env::var_os("ADTALLY_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots"))
}

/// Viewability is measured in real time by the page, so the server's clock must follow
/// the wall clock (test servers start on a manual clock).
fn follow_wall_clock(app: &TestApp) -> tokio::task::JoinHandle<()> {
    let clock = app.clock.clone();
    tokio::spawn(async move {
        loop {
            clock.set(SystemClock.now_ms());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

/// A publisher's site on its own port (another origin than the ad server): pages that
/// embed the tag, an image for the ads, and the advertisers' landing page. Under
/// `/edge/` it passes the ad server's tag and decisions through, serving video ads' media
/// itself (see the video test).
struct Site {
    ad_server: String,
    origin: String,
    /// A WebM clip recorded by the browser itself (no video file ships with the tests).
    clip: Mutex<Vec<u8>>,
}

async fn publisher(ad_server: &str) -> Arc<Site> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    let site = Arc::new(Site { ad_server: ad_server.to_owned(), origin, clip: Mutex::new(Vec::new()) });
    let app = axum::Router::new()
        .route("/article", get(article))
        .route("/slot", get(one_slot))
        .route("/landing", get(|| async { Html("<!doctype html><title>Landing</title><h1>Thanks for visiting</h1>") }))
        .route("/img.svg", get(|| async {
            ([("content-type", "image/svg+xml")],
             r##"<svg xmlns="http://www.w3.org/2000/svg" width="600" height="314"><rect width="600" height="314" fill="#f4a261"/><circle cx="300" cy="157" r="90" fill="#2a9d8f"/></svg>"##)
        }))
        .route("/recorder", get(|| async { Html(RECORDER) }))
        .route("/clip.webm", get(clip).post(save_clip))
        .route("/video", get(video_page))
        .route("/forge", get(forge))
        .route("/edge/tag.js", get(edge_tag))
        .route("/edge/v1/decision", get(edge_decision))
        .with_state(site.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    site
}

/// Collects the page's own errors so the test can assert there were none.
const ERROR_TRAP: &str =
    "<script>window.pageErrors=[];addEventListener('error',function(e){pageErrors.push(String(e.message))});\
addEventListener('unhandledrejection',function(e){pageErrors.push(String(e.reason))});</script>";

/// Two slots above the fold, one whose placement has no ad, one far below the fold.
async fn article(State(site): State<Arc<Site>>) -> impl IntoResponse {
    let ad_server = &site.ad_server;
    Html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Publisher</title>{ERROR_TRAP}
<script async src="{ad_server}/tag.js"></script>
<style>body{{font:16px sans-serif;margin:20px}} .spacer{{height:2400px;background:linear-gradient(#fff,#eee)}}</style></head>
<body><h1>A publisher's article</h1>
<div data-adtally-placement="top" id="top"></div>
<p id="before">Text before the empty slot.</p><div data-adtally-placement="nothing" id="nothing"></div><p id="after">Text after it.</p>
<div data-adtally-placement="side" id="side"></div>
<div class="spacer"></div>
<div data-adtally-placement="below" id="below"></div>
<div class="spacer"></div></body></html>"#
    ))
}

async fn one_slot(State(site): State<Arc<Site>>, Query(q): Query<HashMap<String, String>>) -> impl IntoResponse {
    let ad_server = &site.ad_server;
    let slug: String =
        q.get("p").map_or("", String::as_str).chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    Html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Slot</title>{ERROR_TRAP}
<script async src="{ad_server}/tag.js"></script></head>
<body><h1>One slot</h1><div data-adtally-placement="{slug}" id="slot"></div></body></html>"#
    ))
}

/// A forged form: it posts the dashboard's pause form as soon as it loads, as a malicious
/// page would, to pause campaign `c` with whatever cookie the browser sends along (it
/// cannot know the session's CSRF token).
async fn forge(State(site): State<Arc<Site>>, Query(q): Query<HashMap<String, String>>) -> impl IntoResponse {
    let ad_server = &site.ad_server;
    let campaign: String = q.get("c").map_or("", String::as_str).chars().filter(char::is_ascii_digit).collect();
    Html(format!(
        r#"<!doctype html><title>Win a prize</title>
<form id="f" method="post" action="{ad_server}/campaigns/{campaign}/do/pause">
<input name="x" value="y"></form><script>document.getElementById('f').submit();</script>"#
    ))
}

/// Records a 5-second animated WebM from a canvas and posts it back to the site.
const RECORDER: &str = r#"<!doctype html><title>recording</title><script>
var c=document.createElement('canvas');c.width=320;c.height=180;var g=c.getContext('2d'),t=0;
var iv=setInterval(function(){g.fillStyle='hsl('+(t*7%360)+',70%,50%)';g.fillRect(0,0,320,180);t++;},40);
var r=new MediaRecorder(c.captureStream(25),{mimeType:'video/webm;codecs=vp8'}),parts=[];
r.ondataavailable=function(e){parts.push(e.data);};
r.onstop=function(){clearInterval(iv);fetch('/clip.webm',{method:'POST',body:new Blob(parts,{type:'video/webm'})})
 .then(function(){document.title='saved';});};
r.start(250);setTimeout(function(){r.stop();},5000);
</script>"#;

async fn clip(State(site): State<Arc<Site>>) -> impl IntoResponse {
    let body = site.clip.lock().expect("clip").clone();
    ([("content-type", "video/webm")], body)
}

async fn save_clip(State(site): State<Arc<Site>>, body: axum::body::Bytes) -> &'static str {
    *site.clip.lock().expect("clip") = body.to_vec();
    "ok"
}

/// Three video slots: in view, in view but paused by the visitor, below the fold.
async fn video_page() -> impl IntoResponse {
    Html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Video</title>{ERROR_TRAP}
<script async src="/edge/tag.js"></script>
<style>body{{font:16px sans-serif;margin:20px}} .spacer{{height:2400px}} .row{{display:flex;gap:20px}}</style></head>
<body><h1>Videos</h1><div class="row"><div data-adtally-placement="v-top" id="v-top"></div>
<div data-adtally-placement="v-paused" id="v-paused"></div></div>
<div class="spacer"></div><div data-adtally-placement="v-below" id="v-below"></div><div class="spacer"></div></body></html>"#
    ))
}

/// The ad server's tag, through the publisher's edge.
async fn edge_tag(State(site): State<Arc<Site>>) -> impl IntoResponse {
    let tag = reqwest::get(format!("{}/tag.js", site.ad_server)).await.expect("tag").text().await.expect("tag");
    ([("content-type", "text/javascript")], tag)
}

/// The ad server's decision, through an edge that serves its video from here: the ad's
/// `video_url` must be https (the server refuses anything else), which a test cannot
/// serve, so the edge swaps in the clip the browser recorded. Everything else — the
/// decision, its signed tracking URLs on the real server — is the server's own.
async fn edge_decision(State(site): State<Arc<Site>>, request: axum::extract::Request) -> axum::response::Response {
    let query = request.uri().query().unwrap_or_default();
    let agent = request.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let r = reqwest::Client::new()
        .get(format!("{}/v1/decision?{query}", site.ad_server))
        .header("user-agent", agent)
        .send()
        .await
        .expect("decision");
    if r.status() != 200 {
        return axum::http::StatusCode::from_u16(r.status().as_u16()).expect("status").into_response();
    }
    let mut d: Value = r.json().await.expect("json");
    d["ad"]["video_url"] = json!(format!("{}/clip.webm", site.origin));
    ([("access-control-allow-origin", "*")], axum::Json(d)).into_response()
}

/// Valid counts per placement for the advertiser, lifetime.
async fn by_placement(app: &TestApp, key: &str) -> HashMap<String, (i64, i64, i64)> {
    let (s, r) = app.get(key, "/v1/reports?range=lifetime&group_by=placement").await;
    assert_eq!(s, 200, "{r}");
    let mut out = HashMap::new();
    for row in r["rows"].as_array().into_iter().flatten() {
        let n = |k: &str| row[k].as_i64().unwrap_or(0);
        out.insert(
            row["placement"].as_str().unwrap_or("?").to_owned(),
            (n("impressions"), n("viewable_impressions"), n("clicks")),
        );
    }
    out
}

fn counts(map: &HashMap<String, (i64, i64, i64)>, placement: &str) -> (i64, i64, i64) {
    map.get(placement).copied().unwrap_or((0, 0, 0))
}

async fn created(app: &TestApp, key: &str, path: &str, body: Value) -> Value {
    let (s, v) = app.post(key, path, body).await;
    assert!(s == 201 || s == 200, "{path}: {s} {v}");
    v
}

const SLOT_RENDERED: &str = "document.getElementById('{}').getAttribute('data-adtally-state') === 'rendered'";

/// A new advertiser with 100.00 of credit; its API key.
async fn funded_advertiser(app: &TestApp, name: &str, email: &str) -> String {
    let adv = created(app, ADMIN, "/v1/advertisers", json!({"name": name, "email": email})).await;
    let id = adv["id"].as_i64().expect("id");
    let key = created(app, ADMIN, &format!("/v1/advertisers/{id}/keys"), json!({})).await["api_key"]
        .as_str()
        .expect("key")
        .to_owned();
    created(
        app,
        ADMIN,
        &format!("/v1/advertisers/{id}/credits"),
        json!({"amount_micros": 100_000_000, "kind": "topup"}),
    )
    .await;
    key
}

fn rendered(id: &str) -> String {
    SLOT_RENDERED.replace("{}", id)
}

/// Polls `read` until `done` holds (at most 10 s) and returns the last reading.
async fn eventually<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    what: &str,
    mut read: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = read().await;
        if done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}: {value:?}");
        sleep_ms(100).await;
    }
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver (installed by .ci/run)"]
async fn browser_tag_renders_counts_viewability_and_clicks() {
    let app = spawn_app().await;
    let _clock = follow_wall_clock(&app);
    let site = publisher(&app.base).await.origin.clone();

    for (slug, format) in [("top", "compact"), ("side", "sidebar"), ("below", "sidebar"), ("nothing", "compact")] {
        created(
            &app,
            ADMIN,
            "/v1/placements",
            json!({"id": slug, "name": slug, "format": format, "floor_cpm_micros": 0}),
        )
        .await;
    }
    let key = funded_advertiser(&app, "Acme", "a@acme.example").await;
    // The campaign leaves out `nothing`: that slot has no eligible ad.
    let c = created(
        &app,
        &key,
        "/v1/campaigns",
        json!({"name": "Spring", "cpm_bid_micros": 2_000_000,
        "total_budget_micros": 50_000_000, "pacing": "asap", "targeting": {"placements": ["top", "side", "below"]}}),
    )
    .await;
    let cid = c["id"].as_i64().expect("id");
    for format in ["compact", "sidebar"] {
        let ad = created(
            &app,
            &key,
            &format!("/v1/campaigns/{cid}/ads"),
            json!({"format": format,
            "headline": format!("A {format} ad"), "body": "Rust jobs in Berlin", "cta": "Apply",
            "image_url": format!("{site}/img.svg"), "target_url": format!("{site}/landing?ad={format}")}),
        )
        .await;
        if format == "compact" {
            created(&app, &key, &format!("/v1/campaigns/{cid}/submit"), json!({})).await;
        }
        created(&app, ADMIN, &format!("/v1/ads/{}/review", ad["id"]), json!({"decision": "approve"})).await;
    }

    let browser = Browser::start().await;
    browser.goto(&format!("{site}/article")).await;
    for slot in ["top", "side", "below"] {
        browser.wait_for(&rendered(slot), slot).await;
    }
    browser
        .wait_for("document.getElementById('nothing').getAttribute('data-adtally-state') === 'empty'", "no fill")
        .await;
    // The slot without an ad is untouched: no children, no height, no layout shift.
    let empty = browser
        .js("var n=document.getElementById('nothing');return [n.childNodes.length, n.offsetHeight, \
             document.getElementById('after').offsetTop - document.getElementById('before').offsetTop - document.getElementById('before').offsetHeight];", json!([]))
        .await;
    assert_eq!(empty[0], 0, "{empty}");
    assert_eq!(empty[1], 0, "{empty}");
    // The ads are real links with alt text and an "Ad" label.
    let top = browser
        .js("var a=document.querySelector('#top a');return [a.href.indexOf('/t/c/')>0, a.querySelector('img').alt, a.textContent];", json!([]))
        .await;
    assert_eq!(top[0], true, "{top}");
    assert_eq!(top[1], "A compact ad");
    assert!(top[2].as_str().unwrap_or("").contains("Ad"), "{top}");
    browser.screenshot(&screenshots().join("tag-page.png")).await;

    // Above the fold for more than a second: viewable. Below the fold: rendered, counted
    // as an impression, never seen. (Positive outcomes are awaited, since a busy machine
    // may deliver them late; negative ones are checked after a fixed, ample time.)
    let placements = || by_placement(&app, &key);
    let m = eventually("the ads above the fold are viewable", placements, |m| {
        counts(m, "top").1 == 1 && counts(m, "side").1 == 1
    })
    .await;
    assert_eq!(counts(&m, "top"), (1, 1, 0), "{m:?}");
    assert_eq!(counts(&m, "side"), (1, 1, 0), "{m:?}");
    assert_eq!(counts(&m, "below"), (1, 0, 0), "{m:?}");
    assert_eq!(counts(&m, "nothing"), (0, 0, 0), "{m:?}");

    // Scrolled into view for half a second, then away: not viewable.
    let scroll_to_below = "document.getElementById('below').scrollIntoView({block:'center'});";
    browser.js(scroll_to_below, json!([])).await;
    sleep_ms(500).await;
    browser.js("window.scrollTo(0, 0);", json!([])).await;
    sleep_ms(1_600).await;
    assert_eq!(counts(&placements().await, "below"), (1, 0, 0));
    // In view and kept there past a second: counted.
    browser.js(scroll_to_below, json!([])).await;
    sleep_ms(1_000).await;
    browser.screenshot(&screenshots().join("tag-page-below.png")).await;
    eventually("the ad below the fold is viewable", placements, |m| counts(m, "below") == (1, 1, 0)).await;
    // Away and back again: still once.
    browser.js("window.scrollTo(0, 0);", json!([])).await;
    browser.js(scroll_to_below, json!([])).await;
    sleep_ms(1_600).await;
    let m = placements().await;
    assert_eq!(counts(&m, "below"), (1, 1, 0), "{m:?}");
    let errors = browser.js("return window.pageErrors;", json!([])).await;
    assert_eq!(errors, json!([]), "the page saw errors");

    // A double click lands on the target page and counts one click.
    browser.js("window.scrollTo(0, 0);", json!([])).await;
    browser.double_click("#side a").await;
    browser.wait_for("location.pathname === '/landing'", "landing page").await;
    assert_eq!(without_click_id(&browser.current_url().await), format!("{site}/landing?ad=sidebar"));
    eventually("the click is counted", placements, |m| counts(m, "side").2 == 1).await;
    sleep_ms(500).await;
    assert_eq!(counts(&placements().await, "side"), (1, 1, 1));

    // Another view of the page: new impressions; a single click on the compact ad.
    browser.goto(&format!("{site}/article")).await;
    for slot in ["top", "side", "below"] {
        browser.wait_for(&rendered(slot), slot).await;
    }
    eventually("three more impressions", placements, |m| {
        counts(m, "top").0 == 2 && counts(m, "side").0 == 2 && counts(m, "below").0 == 2
    })
    .await;
    browser.click("#top a").await;
    browser.wait_for("location.pathname === '/landing'", "landing page").await;
    assert_eq!(without_click_id(&browser.current_url().await), format!("{site}/landing?ad=compact"));
    eventually("the click is counted", placements, |m| counts(m, "top").2 == 1).await;
    sleep_ms(300).await;
    let m = placements().await;
    assert_eq!((counts(&m, "top").0, counts(&m, "top").2), (2, 1), "{m:?}");
    assert_eq!((counts(&m, "side").0, counts(&m, "side").2), (2, 1), "{m:?}");
    assert_eq!(counts(&m, "below").0, 2, "{m:?}");
    assert_eq!(counts(&m, "nothing"), (0, 0, 0), "{m:?}");
}

/// The tag's video rule, counted by the real server: a muted inline video counts as
/// viewable only after two continuous seconds at least half in view while playing; a
/// paused one never; one scrolled away after a second does not, and counts once when it
/// later stays in view. The server takes only https `video_url`s, which a test cannot
/// serve, so the publisher's edge (`/edge/`) swaps in a clip the browser recorded; the
/// decisions and their signed beacons are the server's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver (installed by .ci/run)"]
async fn browser_tag_video_needs_two_seconds_playing() {
    let app = spawn_app().await;
    let _clock = follow_wall_clock(&app);
    let site = publisher(&app.base).await;
    for slug in ["v-top", "v-paused", "v-below"] {
        created(
            &app,
            ADMIN,
            "/v1/placements",
            json!({"id": slug, "name": slug, "format": "video", "floor_cpm_micros": 0}),
        )
        .await;
    }
    let key = funded_advertiser(&app, "Reel", "r@reel.example").await;
    let c = created(
        &app,
        &key,
        "/v1/campaigns",
        json!({"name": "Reel", "cpm_bid_micros": 2_000_000, "total_budget_micros": 50_000_000, "pacing": "asap"}),
    )
    .await;
    let cid = c["id"].as_i64().expect("id");
    let ad = created(
        &app,
        &key,
        &format!("/v1/campaigns/{cid}/ads"),
        json!({"format": "video", "headline": "Video ad", "cta": "Watch",
               "video_url": "https://cdn.reel.example/clip.webm", "target_url": format!("{}/landing?ad=video", site.origin)}),
    )
    .await;
    created(&app, &key, &format!("/v1/campaigns/{cid}/submit"), json!({})).await;
    created(&app, ADMIN, &format!("/v1/ads/{}/review", ad["id"]), json!({"decision": "approve"})).await;

    let browser = Browser::start().await;
    browser.goto(&format!("{}/recorder", site.origin)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while browser.js("return document.title;", json!([])).await != "saved" {
        assert!(Instant::now() < deadline, "the browser could not record a clip");
        sleep_ms(100).await;
    }
    assert!(site.clip.lock().expect("clip").len() > 1000, "a clip was recorded");

    browser.goto(&format!("{}/video", site.origin)).await;
    for slot in ["v-top", "v-paused", "v-below"] {
        browser.wait_for(&rendered(slot), slot).await;
    }
    // The visitor pauses one video as soon as it shows.
    browser.js("document.querySelector('#v-paused video').pause();", json!([])).await;
    let video = |id: &str| format!("document.querySelector('#{id} video')");
    browser
        .wait_for(&format!("!{0}.paused && {0}.currentTime > 0 && {0}.muted", video("v-top")), "video playing")
        .await;
    let attrs = browser
        .js(&format!("var v={};return [v.muted, v.loop, v.playsInline, v.autoplay];", video("v-top")), json!([]))
        .await;
    assert_eq!(attrs, json!([true, true, true, true]), "muted, looping, inline");
    // (impressions, viewable) the server counted per slot.
    let counted = || async {
        let map = by_placement(&app, &key).await;
        ["v-top", "v-paused", "v-below"].map(|p| {
            let (i, v, _) = counts(&map, p);
            (i, v)
        })
    };
    eventually("one impression per slot", counted, |n| n.iter().all(|(i, _)| *i == 1)).await;
    // One second is enough for a display ad, not for a video.
    sleep_ms(1_200).await;
    assert_eq!(counted().await[0].1, 0, "viewable after 1.2 s of video");
    eventually("viewable after 2 s of video", counted, |n| n[0].1 == 1).await;
    assert_eq!(counted().await[1].1, 0, "a paused video is not viewable");
    browser.screenshot(&screenshots().join("tag-page-video.png")).await;

    // Below the fold: one second in view, then away, is not enough.
    let scroll_to_below = "document.getElementById('v-below').scrollIntoView({block:'center'});";
    browser.js(scroll_to_below, json!([])).await;
    sleep_ms(1_000).await;
    browser.js("window.scrollTo(0, 0);", json!([])).await;
    sleep_ms(2_500).await;
    assert_eq!(counted().await[2].1, 0);
    browser.js(scroll_to_below, json!([])).await;
    eventually("viewable below the fold", counted, |n| n[2].1 == 1).await;
    browser.js("window.scrollTo(0, 0);", json!([])).await;
    browser.js(scroll_to_below, json!([])).await;
    sleep_ms(2_700).await;
    assert_eq!(counted().await, [(1, 1), (1, 0), (1, 1)], "each viewable once");
    // Every beacon the tag sent was a counted one: none came too early or twice.
    let (_, ivt) = app.get(&key, "/v1/reports/ivt?range=lifetime").await;
    assert_eq!(ivt["rows"], json!([]), "{ivt}");
    let t = crate::support::totals(&app, &key, "range=lifetime").await;
    assert_eq!((t["invalid_impressions"].as_i64(), t["impressions"].as_i64()), (Some(0), Some(3)), "{t}");
    assert_eq!(browser.js("return window.pageErrors;", json!([])).await, json!([]));
}

fn thousands(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn percent(v: &Value) -> String {
    v.as_f64().map_or("—".to_owned(), |p| format!("{p:.2}%"))
}

/// The page a form redirected to with `?done=WHAT`, showing its notice. Waiting for the
/// notice alone would race: the page the form was sent from may show an earlier one.
fn notice_after(done: &str) -> String {
    format!("location.search.indexOf('done={done}') >= 0 && document.querySelector('.notice')")
}

async fn sign_in(browser: &Browser, base: &str, key: &str) {
    browser.goto(&format!("{base}/")).await;
    browser.fill("#key", key).await;
    browser.click("#signin button[type=submit]").await;
    browser.wait_for("document.getElementById('signout')", "signed in").await;
}

/// Signs out and waits for the sign-in form (the session has ended by then).
async fn sign_out(browser: &Browser) {
    browser.click("#signout").await;
    browser.wait_for("document.getElementById('signin')", "signed out").await;
}

/// The dashboard's session cookie as the browser holds it.
async fn session_cookie(browser: &Browser) -> Option<Value> {
    browser.cookies().await.into_iter().find(|c| c["name"] == "adtally_session")
}

/// The text of the page the browser shows once it has loaded one with `needle` in it.
async fn page_text(browser: &Browser, needle: &str) -> String {
    let expr = format!("document.body && document.body.textContent.indexOf({}) >= 0", json!(needle));
    browser.wait_for(&expr, needle).await;
    browser.js("return document.body.textContent;", json!([])).await.as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver (installed by .ci/run)"]
async fn browser_dashboard_matches_the_api_and_runs_a_campaign() {
    let app = spawn_app().await;
    let _clock = follow_wall_clock(&app);
    let site = publisher(&app.base).await.origin.clone();
    let f = fixture(&app, "side", 1_000_000).await;
    // Some traffic: three people see the ad, one clicks.
    for uid in ["u1", "u2", "u3"] {
        let d = app.decision("side", uid).await;
        app.hit(d["impression_url"].as_str().expect("url")).await;
        if uid == "u1" {
            app.hit(d["click_url"].as_str().expect("url")).await;
        }
    }
    let other = fixture_for_existing_placement(&app, "UTC", 1_000_000, 1_000_000_000).await;

    let browser = Browser::start().await;
    sign_in(&browser, &app.base, &f.key).await;
    // The sign-in is a server session: an HttpOnly, SameSite=Strict cookie that no script
    // can read, and the key is kept nowhere in the page's storage.
    let cookie = session_cookie(&browser).await.expect("a session cookie");
    assert_eq!(
        (&cookie["httpOnly"], &cookie["sameSite"], &cookie["path"]),
        (&json!(true), &json!("Strict"), &json!("/"))
    );
    assert_eq!(cookie["secure"], false, "plain http");
    assert_eq!(browser.js("return document.cookie;", json!([])).await, "");
    let stored = browser
        .js("return [sessionStorage.length, localStorage.length, document.documentElement.outerHTML];", json!([]))
        .await;
    assert_eq!((&stored[0], &stored[1]), (&json!(0), &json!(0)));
    assert!(!stored[2].as_str().unwrap_or_default().contains(&f.key), "the key is not in the page");
    // Only this advertiser's campaign; the overview's numbers are the API's.
    let rows = browser.js("return document.querySelectorAll('#campaigns tbody tr').length;", json!([])).await;
    assert_eq!(rows, 1);
    let (_, api) = app.get(&f.key, "/v1/reports?range=last_7_days&group_by=campaign").await;
    let t = &api["totals"];
    let cell = |col: &str| format!("return document.querySelector('#campaigns tfoot [data-col={col}]').textContent;");
    for (col, want) in [
        ("impressions", thousands(t["impressions"].as_i64().unwrap_or(-1))),
        ("clicks", thousands(t["clicks"].as_i64().unwrap_or(-1))),
        ("ctr", percent(&t["ctr"])),
    ] {
        assert_eq!(browser.js(&cell(col), json!([])).await, json!(want), "{col}");
    }
    assert_eq!(t["impressions"], 3);
    assert_eq!(t["clicks"], 1);
    let row = format!("#campaigns tbody tr[data-campaign='{}']", f.campaign_id);
    let row_cell = |col: &str| format!("return document.querySelector(\"{row} [data-col={col}]\").textContent;");
    let api_row = &api["rows"][0];
    assert_eq!(api_row["campaign_id"], f.campaign_id);
    assert_eq!(
        browser.js(&row_cell("impressions"), json!([])).await,
        json!(thousands(api_row["impressions"].as_i64().unwrap_or(-1)))
    );
    assert_eq!(browser.js(&row_cell("ctr"), json!([])).await, json!(percent(&api_row["ctr"])));
    browser.screenshot(&screenshots().join("dashboard-overview.png")).await;
    browser.resize(390, 844).await;
    browser.screenshot(&screenshots().join("dashboard-overview-phone.png")).await;
    let fits = "return document.documentElement.scrollWidth <= window.innerWidth;";
    assert_eq!(browser.js(fits, json!([])).await, true, "the page fits a phone's width (tables scroll in their card)");
    browser.resize(1280, 800).await;

    // The campaign page: same numbers as the API for the same range, a chart with one
    // group per day (days without traffic as zero), and CSV equal to the API's.
    browser.click("#campaigns tbody a").await;
    browser.wait_for("document.getElementById('kpis')", "campaign page").await;
    let (_, api) = app.get(&f.key, &format!("/v1/reports?range=last_7_days&campaign_id={}", f.campaign_id)).await;
    let t = &api["totals"];
    let tile = |m: &str| format!("document.querySelector('[data-metric={m}] strong').textContent");
    let shown = |m: &str| {
        let script = format!("return {};", tile(m));
        let browser = &browser;
        async move { browser.js(&script, json!([])).await }
    };
    assert_eq!(shown("impressions").await, json!(thousands(t["impressions"].as_i64().unwrap_or(-1))));
    assert_eq!(shown("clicks").await, json!(thousands(t["clicks"].as_i64().unwrap_or(-1))));
    assert_eq!(shown("ctr").await, json!(percent(&t["ctr"])));
    assert_eq!(shown("reach").await, json!(thousands(t["reach"].as_i64().unwrap_or(-1))));
    let days = browser.js("return document.querySelectorAll('#daily-chart g[data-date]').length;", json!([])).await;
    assert_eq!(days, 7, "last 7 days = 7 days drawn");
    let zero_days = browser
        .js("return Array.from(document.querySelectorAll('#daily-chart g[data-date] title')).filter(function (t) { return t.textContent.indexOf(': 0 impressions') > 0; }).length;", json!([]))
        .await;
    assert_eq!(zero_days, 6, "the six days without traffic are drawn as zero");
    browser.resize(1280, 1700).await;
    browser.screenshot(&screenshots().join("dashboard-campaign.png")).await;
    browser.resize(390, 844).await;
    browser.screenshot(&screenshots().join("dashboard-campaign-phone.png")).await;
    let wide = "return Array.from(document.querySelectorAll('body *')).filter(function (e) { return e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.scroll'); }).slice(0, 5).map(function (e) { return e.tagName + '.' + e.className + '#' + e.id; });";
    let too_wide = browser.js(wide, json!([])).await;
    assert_eq!(browser.js(fits, json!([])).await, true, "the campaign page fits a phone's width: {too_wide}");
    browser.resize(1280, 800).await;

    // The range picker is reflected in the URL and the numbers follow it.
    browser
        .js(
            "var s=document.getElementById('range');s.value='lifetime';s.dispatchEvent(new Event('change'));",
            json!([]),
        )
        .await;
    let (_, life) = app.get(&f.key, &format!("/v1/reports?range=lifetime&campaign_id={}", f.campaign_id)).await;
    browser
        .wait_for(
            &format!(
                "location.search.indexOf('range=lifetime') >= 0 && {} === '{}'",
                tile("impressions"),
                thousands(life["totals"]["impressions"].as_i64().unwrap_or(-1))
            ),
            "lifetime numbers",
        )
        .await;
    browser.js("history.back();", json!([])).await;
    browser
        .wait_for("location.search.indexOf('range=last_7_days') >= 0 && document.getElementById('kpis')", "back")
        .await;
    let csv_path =
        browser.js("return document.querySelector('#main a[data-csv]').getAttribute('href');", json!([])).await;
    let csv_path = csv_path.as_str().expect("csv path").to_owned();
    assert_eq!(
        csv_path,
        format!("/v1/reports?range=last_7_days&campaign_id={}&granularity=day&format=csv", f.campaign_id),
        "the API's own CSV URL"
    );
    browser.click("#main a[data-csv]").await;
    let downloaded = browser.downloaded("adtally-report.csv").await;
    let (s, api_csv) = app.get_text(&f.key, &csv_path).await;
    assert_eq!(s, 200);
    assert_eq!(downloaded, api_csv);
    assert_eq!(api_csv.lines().count(), 2, "a header and the one day with traffic: {api_csv}");

    // Another advertiser's campaign is not found, in the API and on the page.
    let (s, _) = app.get(&f.key, &format!("/v1/campaigns/{}", other.campaign_id)).await;
    assert_eq!(s, 404);
    browser.goto(&format!("{}/campaigns/{}", app.base, other.campaign_id)).await;
    browser.wait_for("document.getElementById('not-found')", "not found").await;

    // Form posts without the session's CSRF token are refused, wherever they come from: a
    // script on the dashboard's own origin that leaves the field out; a forged form on
    // another origin of the same site (127.0.0.1, another port), which the browser sends
    // with the SameSite=Strict cookie; and one from another site (localhost), which it
    // sends without. Nothing changes.
    let pause = format!("/campaigns/{}/do/pause", f.campaign_id);
    let no_token = browser
        .js_async(
            "var done = arguments[arguments.length - 1];
             fetch(arguments[0], {method: 'POST', credentials: 'same-origin',
                   headers: {'content-type': 'application/x-www-form-urlencoded'}, body: 'x=y'})
               .then(function (r) { done(r.status); }, function (e) { done(String(e)); });",
            json!([pause]),
        )
        .await;
    assert_eq!(no_token, json!(403));
    browser.goto(&format!("{site}/forge?c={}", f.campaign_id)).await;
    page_text(&browser, "security token").await;
    let cross_site = site.replace("127.0.0.1", "localhost");
    browser.goto(&format!("{cross_site}/forge?c={}", f.campaign_id)).await;
    page_text(&browser, "not signed in").await;
    let (_, c) = app.get(&f.key, &format!("/v1/campaigns/{}", f.campaign_id)).await;
    assert_eq!(c["status"], "active", "no forged post paused the campaign");

    // A campaign and an ad created through the forms, submitted, approved by the
    // operator in the review queue, and served on a publisher's page.
    browser.goto(&format!("{}/campaigns/new", app.base)).await;
    browser.fill("#c-name", "Winter sale").await;
    browser.fill("#c-bid", "50").await;
    browser.fill("#c-total", "100.00").await;
    browser.fill("#c-cap-n", "3").await;
    browser.fill("#c-cap-h", "24").await;
    browser.js("document.getElementById('c-end').value = '2030-01-31T18:00';", json!([])).await;
    browser.click("#c-save").await;
    browser.wait_for("document.getElementById('ad-form')", "ad form").await;
    browser.fill("#a-headline", "Winter sale: all jobs boards half price").await;
    browser.fill("#a-body", "Two weeks only").await;
    browser.fill("#a-target", &format!("{site}/landing?ad=winter")).await;
    browser.fill("#a-image", &format!("{site}/img.svg")).await;
    assert_eq!(
        browser.js("return document.querySelector('#a-preview .adtally-h').textContent;", json!([])).await,
        "Winter sale: all jobs boards half price",
        "live preview"
    );
    browser.js("var f=document.getElementById('a-format');f.value='compact';f.dispatchEvent(new Event('change',{bubbles:true}));", json!([])).await;
    browser.wait_for("document.querySelector('#a-preview .adtally-compact img')", "the compact preview").await;
    browser.screenshot(&screenshots().join("dashboard-ad-form.png")).await;
    browser.js("var f=document.getElementById('a-format');f.value='sidebar';f.dispatchEvent(new Event('change',{bubbles:true}));", json!([])).await;
    browser.wait_for("document.querySelector('#a-preview .adtally-sidebar')", "the sidebar preview").await;
    browser.click("#a-save").await;
    browser.wait_for("document.getElementById('action-submit')", "campaign page").await;
    assert_eq!(browser.text("#campaign-name").await, "Winter sale");
    let (_, campaigns) = app.get(&f.key, "/v1/campaigns").await;
    let winter = campaigns["items"].as_array().into_iter().flatten().find(|c| c["name"] == "Winter sale").cloned();
    let winter = winter.expect("the campaign made in the browser");
    assert_eq!(winter["cpm_bid_micros"], 50_000_000);
    assert_eq!(winter["total_budget_micros"], 100_000_000);
    assert_eq!(winter["end_at"], "2030-01-31T18:00:00Z", "end time read in the advertiser's zone (UTC)");
    assert_eq!(winter["frequency_cap"], json!({"impressions": 3, "per_hours": 24}));
    browser.click("#action-submit").await;
    browser.wait_for("document.querySelector('.head .badge').textContent === 'pending review'", "submitted").await;

    // Signing out ends the session on the server and removes the cookie.
    let id = session_cookie(&browser).await.expect("cookie")["value"].as_str().expect("value").to_owned();
    sign_out(&browser).await;
    assert!(session_cookie(&browser).await.is_none(), "the cookie is gone");
    let me = app.client.get(app.url("/v1/me")).header("cookie", format!("adtally_session={id}")).send().await;
    assert_eq!(me.expect("me").status().as_u16(), 401, "the old session no longer works");
    sign_in(&browser, &app.base, ADMIN).await;
    let (_, pending) = app.get(ADMIN, "/v1/ads?status=pending_review").await;
    let ad_id = pending["items"][0]["id"].as_i64().expect("a pending ad");
    assert_eq!(pending["items"][0]["headline"], "Winter sale: all jobs boards half price");
    browser.find(&format!("#approve-{ad_id}")).await;
    browser.screenshot(&screenshots().join("dashboard-moderation.png")).await;
    browser.click(&format!("#approve-{ad_id}")).await;
    browser.wait_for("document.getElementById('queue-empty')", "queue empty").await;
    let (_, ad) = app.get(ADMIN, &format!("/v1/ads/{ad_id}")).await;
    assert_eq!(ad["status"], "approved");

    // The operator credits the advertiser, makes a promo code and finds a placement's
    // embed code.
    let (_, before) = app.get(&f.key, "/v1/me").await;
    browser.goto(&format!("{}/admin/advertisers", app.base)).await;
    browser.fill(&format!("#credit-{}", f.advertiser_id), "25").await;
    browser.click(&format!("#credit-{} ~ button", f.advertiser_id)).await;
    browser.wait_for(&notice_after("credited"), "credited").await;
    let (_, me) = app.get(&f.key, "/v1/me").await;
    assert_eq!(me["balance_micros"].as_i64(), Some(before["balance_micros"].as_i64().unwrap_or(0) + 25_000_000));
    browser.fill("#p-code", "WINTER5").await;
    browser.fill("#p-amount", "5").await;
    browser.click("#promo button").await;
    browser.wait_for(&notice_after("promo"), "promo code").await;
    browser.goto(&format!("{}/admin/placements", app.base)).await;
    let snippet = browser.text("[data-placement=side] pre").await;
    assert_eq!(
        snippet,
        format!("<script async src=\"{}/tag.js\"></script>\n<div data-adtally-placement=\"side\"></div>", app.base)
    );

    // Bid 50.00 against 1.00: the new campaign wins the slot.
    browser.goto(&format!("{site}/slot?p=side")).await;
    browser.wait_for(&rendered("slot"), "slot").await;
    assert_eq!(browser.text("#slot .adtally-h").await, "Winter sale: all jobs boards half price");
    browser.screenshot(&screenshots().join("tag-page-new-campaign.png")).await;

    // The advertiser redeems the promo code, stops the weekly email, and edits the live
    // ad: the edit waits for review beside the version that keeps serving; the operator
    // rejects it with a reason the advertiser sees.
    browser.goto(&format!("{}/", app.base)).await;
    sign_out(&browser).await;
    sign_in(&browser, &app.base, &f.key).await;
    browser.goto(&format!("{}/billing", app.base)).await;
    browser.fill("#promo-code", "WINTER5").await;
    browser.click("#redeem button").await;
    browser.wait_for(&notice_after("redeemed"), "redeemed").await;
    let (_, ledger) = app.get(&f.key, "/v1/ledger").await;
    assert_eq!(browser.text("#balance").await, money(ledger["balance_micros"].as_i64().unwrap_or(-1)));
    browser.click("#weekly-toggle").await;
    browser
        .wait_for("document.querySelector('.notice') && location.search.indexOf('weekly-off') > 0", "opted out")
        .await;
    let (_, weekly) = app.get(&f.key, "/v1/weekly-report").await;
    assert_eq!(weekly["enabled"], false);
    browser.screenshot(&screenshots().join("dashboard-billing.png")).await;
    browser.goto(&format!("{}/ads/{ad_id}/edit", app.base)).await;
    browser.fill("#a-headline", "Winter sale: 90% off everything").await;
    browser.click("#a-save").await;
    browser.wait_for("document.getElementById('campaign-name')", "campaign page").await;
    sign_out(&browser).await;
    sign_in(&browser, &app.base, ADMIN).await;
    let item = format!("[data-ad='{ad_id}']");
    assert_eq!(browser.text(&format!("{item} .pending .adtally-h")).await, "Winter sale: 90% off everything");
    assert_eq!(browser.text(&format!("{item} .serving .adtally-h")).await, "Winter sale: all jobs boards half price");
    assert_eq!(browser.text(&format!("{item} .pending h3")).await, "Pending: version 2");
    browser.screenshot(&screenshots().join("dashboard-moderation-edit.png")).await;
    browser.fill(&format!("#reason-{ad_id}"), "Claims must be accurate").await;
    browser.click(&format!("#reject-{ad_id}")).await;
    browser.wait_for("document.getElementById('queue-empty')", "queue empty").await;
    let (_, ad) = app.get(&f.key, &format!("/v1/ads/{ad_id}")).await;
    assert_eq!(
        (ad["status"].as_str(), ad["revision"]["status"].as_str()),
        (Some("approved"), Some("rejected")),
        "{ad}"
    );
    assert_eq!(ad["revision"]["rejection_reason"], "Claims must be accurate");
    browser.goto(&format!("{site}/slot?p=side")).await;
    browser.wait_for(&rendered("slot"), "slot").await;
    assert_eq!(
        browser.text("#slot .adtally-h").await,
        "Winter sale: all jobs boards half price",
        "the approved version"
    );
}

fn money(micros: i64) -> String {
    let cents = (micros + 5_000) / 10_000;
    format!("{}.{:02}", thousands(cents / 100), cents % 100)
}

/// What the browser faces promise over HTTP, checked without a browser (runs in plain
/// `cargo test`): content types, caching, the CSP, and CORS on the tracking routes.
#[tokio::test]
async fn web_assets_headers_and_cors() {
    let app = spawn_app().await;
    let get = |path: &str, headers: Vec<(&'static str, String)>| {
        let mut req = app.client.get(app.url(path));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let tag = get("/tag.js", vec![]).await.expect("tag");
    assert_eq!(tag.status().as_u16(), 200);
    assert_eq!(tag.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(tag.headers()["cache-control"], "public, max-age=300");
    let etag = tag.headers()["etag"].to_str().expect("etag").to_owned();
    let again = get("/tag.js", vec![("if-none-match", etag)]).await.expect("tag again");
    assert_eq!(again.status().as_u16(), 304);

    let page = get("/", vec![]).await.expect("dashboard");
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"].to_str().expect("csp").to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let html = page.text().await.expect("html");
    assert!(!html.contains("<script>") && html.contains(r#"src="/assets/app.js""#), "no inline script");
    for (asset, kind) in [("/assets/app.js", "text/javascript"), ("/assets/app.css", "text/css")] {
        let r = get(asset, vec![]).await.expect("asset");
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap_or("").starts_with(kind));
    }
    let missing = get("/assets/../../etc/passwd", vec![]).await.expect("missing");
    assert_eq!(missing.status().as_u16(), 404);
    let missing = get("/assets/nope.js", vec![]).await.expect("missing");
    assert_eq!(missing.status().as_u16(), 404);
    let body: Value = missing.json().await.expect("error json");
    assert_eq!(body["error"]["code"], "not_found");

    // Preflights from any origin are answered, never routed to a handler.
    for path in ["/v1/decision?placement=x", "/t/i/abc", "/t/v/abc", "/t/c/abc", "/t/conv"] {
        let r = app
            .client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "https://news.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .expect("preflight");
        assert_eq!(r.status().as_u16(), 204, "{path}");
        assert_eq!(r.headers()["access-control-allow-origin"], "*", "{path}");
    }
    fixture(&app, "side", 1_000_000).await;
    let d =
        get("/v1/decision?placement=side&uid=v1", vec![("origin", "https://news.example".into())]).await.expect("d");
    assert_eq!(d.headers()["access-control-allow-origin"], "*");
    let d: Value = d.json().await.expect("decision");
    let pixel = app
        .client
        .post(d["impression_url"].as_str().expect("url"))
        .header("origin", "https://news.example")
        .header("user-agent", crate::support::BROWSER)
        .send()
        .await
        .expect("beacon");
    assert_eq!(pixel.status().as_u16(), 204);
    assert_eq!(pixel.headers()["access-control-allow-origin"], "*");
    // The management API is not opened to other origins.
    let me = get("/v1/me", vec![("origin", "https://news.example".into())]).await.expect("me");
    assert!(me.headers().get("access-control-allow-origin").is_none());
}

/// The landing page's URL without the click id the click redirect appends.
fn without_click_id(url: &str) -> String {
    match url.find("adtally_click=") {
        Some(at) => url[..at.saturating_sub(1)].to_owned(),
        None => url.to_owned(),
    }
}

/// The campaign page shows the campaign's alerts (issue 12): six weeks of history with a
/// fatigue pattern give one `ad_fatigue` alert with its advice, and a steady campaign of
/// the same advertiser shows none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver (installed by .ci/run)"]
async fn browser_campaign_page_shows_its_alerts() {
    let app = spawn_app().await;
    app.clock.set(crate::attribution::NOW);
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let (steady, steady_ad) = crate::attribution::second_campaign(&app, &f.key).await;
    let fatigue = crate::insights::six_weeks("f", f.campaign_id, f.ad_id, 400, |day| match day {
        0..21 => 12,
        21..28 => 10,
        28..35 => 8,
        _ => 5,
    });
    crate::attribution::import(&app, &fatigue).await;
    crate::attribution::import(&app, &crate::insights::six_weeks("s", steady, steady_ad, 400, |_| 12)).await;
    let (_, api) = app.get(&f.key, &format!("/v1/campaigns/{}/insights", f.campaign_id)).await;
    let action = api["items"][0]["action"].as_str().expect("an alert").to_owned();

    let browser = Browser::start().await;
    sign_in(&browser, &app.base, &f.key).await;
    browser.goto(&format!("{}/campaigns/{}", app.base, f.campaign_id)).await;
    browser.wait_for("document.querySelector('#alerts [data-kind=ad_fatigue]')", "the fatigue alert").await;
    let shown = browser.text("#alerts").await;
    assert!(shown.contains(&action), "the alert's advice is shown");
    assert!(shown.contains("Ad fatigue") && shown.contains("Why (against"), "its title and its evidence: {shown}");
    browser.screenshot(&screenshots().join("dashboard-alerts.png")).await;
    browser.goto(&format!("{}/campaigns/{steady}", app.base)).await;
    let steady_page = "document.getElementById('campaign-name') && document.getElementById('campaign-name').textContent === 'Autumn' && document.getElementById('kpis')";
    browser.wait_for(steady_page, "the steady campaign's page").await;
    assert_eq!(browser.js("return document.querySelectorAll('#alerts').length;", json!([])).await, json!(0));
}
