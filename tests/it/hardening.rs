//! Trust under attack and operations (issue 8): one process per data directory, the
//! client address from the one header the proxy sets, IPv6 per /64, health that
//! reflects the event writer, failed-authentication limits and slow clients.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adtally_core::clock::SECOND;
use adtally_server::client::ClientIpHeader;
use adtally_server::limits::Limits;
use adtally_server::pipeline::WriterFault;
use adtally_server::ServerConfig;
use adtally_store::SqliteStore;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::durability::{start_server, start_server_with};
use crate::support::*;

/// Two stores on one data directory would judge and charge the same traffic twice.
#[test]
fn a_second_store_on_a_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let first = SqliteStore::open(dir.path()).expect("first store");
    let err = SqliteStore::open(dir.path()).expect_err("a second store on the same directory");
    let message = err.to_string();
    assert!(message.contains(&dir.path().display().to_string()), "{message}");
    assert!(message.contains("another adtally process"), "{message}");
    drop(first);
    SqliteStore::open(dir.path()).expect("the lock is released with the store");
}

#[test]
fn a_second_process_on_a_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = start_server(dir.path());
    let ndjson = dir.path().join("events.ndjson");
    std::fs::write(&ndjson, "").expect("ndjson");
    let runs: [&[&str]; 3] =
        [&["serve", "--listen", "127.0.0.1:0"], &["import", ndjson.to_str().expect("utf-8 path")], &["demo"]];
    for args in runs {
        let mut second = Command::new(env!("CARGO_BIN_EXE_adtally"))
            .args(args)
            .arg("--data")
            .arg(dir.path())
            .env("ADTALLY_ADMIN_KEY", crate::support::ADMIN)
            .env("ADTALLY_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run adtally");
        // A second server that did start would run forever: give it 10 s to refuse.
        let started = Instant::now();
        while second.try_wait().expect("wait").is_none() {
            if started.elapsed() > Duration::from_secs(10) {
                let _ = second.kill();
                let _ = server.child.kill();
                panic!("{args:?} started on a data dir in use");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = second.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started on a data dir in use");
        assert!(stderr.contains(&dir.path().display().to_string()), "{args:?}: {stderr}");
        assert!(stderr.contains("another adtally process"), "{args:?}: {stderr}");
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
}

/// The signing key also keys the hashes of user ids, so `import` must use the one `serve`
/// uses. It ignored `--secret`/`ADTALLY_SECRET` and made up a key of its own: imported
/// users never matched live ones.
#[test]
fn offline_commands_take_the_servers_secret() {
    for secret in [Some("a-shared-signing-key-of-32-chars!"), None] {
        let dir = tempfile::tempdir().expect("dir");
        let ndjson = dir.path().join("events.ndjson");
        std::fs::write(&ndjson, "").expect("ndjson");
        drop(SqliteStore::open(dir.path()).expect("an empty store"));
        let mut import = Command::new(env!("CARGO_BIN_EXE_adtally"));
        import.args(["import", ndjson.to_str().expect("utf-8 path"), "--data"]).arg(dir.path());
        import.env_remove("ADTALLY_SECRET").env("ADTALLY_LOG", "warn");
        if let Some(secret) = secret {
            import.env("ADTALLY_SECRET", secret);
        }
        let out = import.output().expect("run adtally import");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let conn = rusqlite::Connection::open(dir.path().join("adtally.db")).expect("open");
        let made_up: i64 =
            conn.query_row("SELECT COUNT(*) FROM meta WHERE key = 'token_secret'", [], |r| r.get(0)).expect("meta");
        assert_eq!(made_up, i64::from(secret.is_none()), "secret given: {secret:?}");
    }
}

/// `import` and `report` on a mistyped `--data` used to create an empty store there and
/// succeed with nothing (an empty report, every line refused).
#[test]
fn offline_commands_refuse_a_data_dir_without_a_store() {
    let dir = tempfile::tempdir().expect("dir");
    let typo = dir.path().join("adtaly-data");
    let ndjson = dir.path().join("events.ndjson");
    std::fs::write(&ndjson, "").expect("ndjson");
    let runs: [&[&str]; 2] = [&["import", ndjson.to_str().expect("utf-8 path")], &["report"]];
    for args in runs {
        let out = Command::new(env!("CARGO_BIN_EXE_adtally"))
            .args(args)
            .arg("--data")
            .arg(&typo)
            .env("ADTALLY_LOG", "warn")
            .output()
            .expect("run adtally");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains("no adtally store in") && stderr.contains("adtaly-data"), "{args:?}: {stderr}");
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
}

fn url(decision: &Value, which: &str) -> String {
    decision[which].as_str().expect("tracking url").to_owned()
}

/// A beacon through our (loopback, so trusted) proxy with the given headers.
async fn hit_via_proxy(app: &TestApp, url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = app.client.get(url).header("user-agent", BROWSER);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("beacon").status().as_u16()
}

/// A cloud client cannot pass as a residential one by sending its own `Forwarded`
/// header: only the header the proxy sets is read, and several lines of it are one list.
#[tokio::test]
async fn a_client_supplied_forwarded_header_does_not_hide_a_datacentre_address() {
    let app = spawn_app().await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    // The proxy sets X-Forwarded-For (the default); the client adds `Forwarded`.
    let d = app.decision("sidebar-main", "cloud-1").await;
    let forged = [("x-forwarded-for", "52.95.110.1"), ("forwarded", "for=81.2.69.142")];
    assert_eq!(hit_via_proxy(&app, &url(&d, "impression_url"), &forged).await, 200);

    let (_, ivt) = app.get(&f.key, "/v1/reports/ivt?range=lifetime").await;
    assert_eq!(ivt["totals"]["by_reason"]["datacenter"]["impression"], 1, "{ivt}");
    assert_eq!(totals(&app, &f.key, "range=lifetime").await["impressions"], 0);
}

/// With `--client-ip-header forwarded`, `X-Forwarded-For` is the client's word, and a
/// `Forwarded` line the client sent before the proxy's does not win.
#[tokio::test]
async fn with_forwarded_configured_only_its_rightmost_untrusted_entry_counts() {
    let config = ServerConfig { client_ip_header: ClientIpHeader::Forwarded, ..ServerConfig::default() };
    let app = spawn_app_with(config).await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let d = app.decision("sidebar-main", "cloud-2").await;
    let request = app
        .client
        .get(url(&d, "impression_url"))
        .header("user-agent", BROWSER)
        .header("x-forwarded-for", "81.2.69.142")
        .header("forwarded", "for=81.2.69.142")
        .header("forwarded", "for=\"[2600:1f18::1]:443\";proto=https, for=127.0.0.1");
    assert_eq!(request.send().await.expect("beacon").status().as_u16(), 200);
    // A residential client through the same proxy counts.
    let d = app.decision("sidebar-main", "home-2").await;
    let home = [("x-forwarded-for", "52.95.110.1"), ("forwarded", "for=81.2.69.142")];
    assert_eq!(hit_via_proxy(&app, &url(&d, "impression_url"), &home).await, 200);

    let (_, ivt) = app.get(&f.key, "/v1/reports/ivt?range=lifetime").await;
    assert_eq!(ivt["totals"]["by_reason"]["datacenter"]["impression"], 1, "{ivt}");
    assert_eq!(totals(&app, &f.key, "range=lifetime").await["impressions"], 1);
}

/// One home's /64 is one client for per-address limits: 11 clicks in an hour from 11
/// addresses of one /64 (by 11 users) exceed the default 10.
#[tokio::test]
async fn eleven_clicks_from_one_ipv6_64_are_excessive_activity() {
    let app = spawn_app().await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    for i in 1..=11 {
        let address = format!("2a02:8108:1:2:{i:x}::{i:x}");
        let via = [("x-forwarded-for", address.as_str())];
        let d = app.decision("sidebar-main", &format!("rotating-{i}")).await;
        assert_eq!(hit_via_proxy(&app, &url(&d, "impression_url"), &via).await, 200);
        assert_eq!(hit_via_proxy(&app, &url(&d, "click_url"), &via).await, 302);
        app.clock.advance(60 * SECOND);
    }
    let (_, ivt) = app.get(&f.key, "/v1/reports/ivt?range=lifetime").await;
    assert_eq!(ivt["totals"]["by_reason"]["excessive_activity"]["click"], 1, "{ivt}");
    assert_eq!(totals(&app, &f.key, "range=lifetime").await["clicks"], 10);
}

async fn health(app: &TestApp) -> (u16, Value) {
    app.get("", "/healthz").await
}

async fn decision_status(app: &TestApp, uid: &str) -> u16 {
    let url = app.url(&format!("/v1/decision?placement=sidebar-main&uid={uid}"));
    app.client.get(url).header("user-agent", BROWSER).send().await.expect("decision").status().as_u16()
}

/// A beacon that must answer promptly, whatever the writer's state.
async fn beacon_status(app: &TestApp, url: &str) -> (u16, Value) {
    let r = tokio::time::timeout(std::time::Duration::from_secs(5), app.hit(url)).await.expect("the beacon hung");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits (a few seconds at most) until health answers `status`.
async fn health_becomes(app: &TestApp, status: u16) -> Value {
    for _ in 0..100 {
        let (s, body) = health(app).await;
        if s == status {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("health never answered {status}");
}

/// While batches fail to commit, health says so, decisions serve no ad, beacons answer
/// 503 in the error shape; a beacon acknowledged just before (it is in the journal) is
/// retried until the store takes it. The first commit that succeeds makes the server
/// healthy again, and that beacon is counted.
#[tokio::test]
async fn a_failing_event_writer_makes_health_fail_and_decisions_stop() {
    let app = spawn_app().await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let d = app.decision("sidebar-main", "before").await;
    assert_eq!(health(&app).await.0, 200);

    app.state.pipeline.inject_fault(Some(WriterFault::FailBatches));
    assert_eq!(beacon_status(&app, &url(&d, "impression_url")).await.0, 200, "journaled while healthy");
    let body = health_becomes(&app, 503).await;
    assert_eq!(body["error"]["code"].as_str(), Some("event_store_failing"), "{body}");
    let (status, body) = beacon_status(&app, &url(&d, "viewable_url")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    assert_eq!(decision_status(&app, "during").await, 204);
    // A click still takes the visitor to the landing page; it cannot be counted.
    let r = app.client.get(url(&d, "click_url")).header("user-agent", BROWSER).send().await.expect("click");
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(landing(&r.headers()["location"]), "https://acme.example/landing?x=1");

    app.state.pipeline.inject_fault(None);
    health_becomes(&app, 200).await;
    assert_eq!(decision_status(&app, "after").await, 200);
    let t = totals(&app, &f.key, "range=lifetime").await;
    assert_eq!((t["impressions"].as_i64(), t["clicks"].as_i64()), (Some(1), Some(0)), "the retried beacon only");
    assert_eq!(beacon_status(&app, &url(&d, "impression_url")).await.0, 200);
    assert_eq!(totals(&app, &f.key, "range=lifetime").await["impressions"], 1, "the same decision again");
}

/// A writer thread that died (here: panicked) is detected by the flag its exit sets. A
/// beacon acknowledged before it died is in the journal: the next start commits it.
#[tokio::test]
async fn a_dead_event_writer_makes_health_fail_and_decisions_stop() {
    let dir = Arc::new(tempfile::tempdir().expect("dir"));
    let clock = Arc::new(adtally_core::clock::ManualClock::new(adtally_core::clock::Clock::now_ms(
        &adtally_core::clock::SystemClock,
    )));
    let app = spawn_app_in(dir.clone(), ServerConfig::default(), clock.clone()).await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let d = app.decision("sidebar-main", "before").await;

    app.state.pipeline.inject_fault(Some(WriterFault::Panic));
    assert_eq!(beacon_status(&app, &url(&d, "impression_url")).await.0, 200, "journaled while alive");
    let body = health_becomes(&app, 503).await;
    assert_eq!(body["error"]["code"].as_str(), Some("event_writer_stopped"), "{body}");
    let (_, metrics) = app.get_text(ADMIN, "/metrics").await;
    assert!(metrics.contains("adtally_event_writer_up 0"), "{metrics}");
    assert_eq!(decision_status(&app, "after").await, 204);
    let (status, body) = beacon_status(&app, &url(&d, "viewable_url")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    drop(app);

    let app = spawn_app_in(dir, ServerConfig::default(), clock).await;
    assert_eq!(health(&app).await.0, 200);
    let t = totals(&app, &f.key, "range=lifetime").await;
    assert_eq!((t["impressions"].as_i64(), t["viewable_impressions"].as_i64()), (Some(1), Some(0)), "{t}");
}

async fn get_as(app: &TestApp, key: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url("/v1/campaigns")).bearer_auth(key);
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    request.send().await.expect("request")
}

/// Key guessing: after 20 wrong keys in a minute an address is refused (429, with
/// Retry-After) whatever key it sends, the right one included, until the minute is over;
/// other addresses are not affected.
#[tokio::test]
async fn twenty_one_wrong_keys_from_one_address_get_429_until_the_window_passes() {
    let app = spawn_app().await;
    let guesser = Some("81.2.69.142");
    for i in 0..20 {
        assert_eq!(get_as(&app, &format!("adta_guess_{i}"), guesser).await.status().as_u16(), 401);
    }
    let refused = get_as(&app, "adta_guess_21", guesser).await;
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_many_failed_authentications", "{body}");

    assert_eq!(get_as(&app, ADMIN, guesser).await.status().as_u16(), 429, "the right key is refused too");
    assert_eq!(get_as(&app, ADMIN, Some("81.2.69.143")).await.status().as_u16(), 200, "another address");
    assert_eq!(get_as(&app, ADMIN, None).await.status().as_u16(), 200, "the proxy itself");

    app.clock.advance(61 * SECOND);
    assert_eq!(get_as(&app, ADMIN, guesser).await.status().as_u16(), 200, "after the window");
}

async fn spawn_with_limits(limits: Limits) -> TestApp {
    spawn_app_with(ServerConfig { limits, ..ServerConfig::default() }).await
}

fn address(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or 5 s pass); what it sent, and when.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open: {}", String::from_utf8_lossy(&received)),
        }
    }
    (String::from_utf8_lossy(&received).into_owned(), started.elapsed())
}

/// Slowloris: a client that sends half a header line is disconnected after the header
/// read timeout.
#[tokio::test]
async fn a_client_sending_half_a_header_is_disconnected_after_the_timeout() {
    let limits = Limits { header_read_timeout: Duration::from_millis(500), ..Limits::default() };
    let app = spawn_with_limits(limits).await;
    let mut stream = TcpStream::connect(address(&app)).await.expect("connect");
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: loc").await.expect("half a header");
    let (_, after) = read_until_closed(&mut stream).await;
    assert!(after >= Duration::from_millis(400), "closed too early: {after:?}");
}

/// A client that trickles its body gets 408 in the error shape after the request timeout.
#[tokio::test]
async fn a_client_trickling_its_body_gets_408_after_the_request_timeout() {
    let limits = Limits { request_timeout: Duration::from_millis(500), ..Limits::default() };
    let app = spawn_with_limits(limits).await;
    let mut stream = TcpStream::connect(address(&app)).await.expect("connect");
    let head = format!(
        "POST /v1/placements HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\""
    );
    stream.write_all(head.as_bytes()).await.expect("head and a little body");
    let (response, after) = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("\"request_timeout\""), "{response}");
    assert!(after >= Duration::from_millis(400), "answered too early: {after:?}");
}

/// Connections beyond `max_connections` are closed at once; a freed slot serves again.
#[tokio::test]
async fn connections_beyond_the_bound_are_closed_at_once() {
    let limits = Limits { max_connections: 2, ..Limits::default() };
    let app = spawn_with_limits(limits).await;
    // Two served connections, kept open (keep-alive): the server holds both slots.
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(address(&app)).await.expect("connect");
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("request");
        let mut received = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&received).contains(r#"{"status":"ok"}"#) {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("an answer")
                .expect("read");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&buf[..n]);
        }
        open.push(stream);
    }
    let mut third = TcpStream::connect(address(&app)).await.expect("the kernel accepts the third");
    let (response, after) = read_until_closed(&mut third).await;
    assert!(response.is_empty() && after < Duration::from_secs(2), "{response:?} after {after:?}");

    // A freed slot is used again (once the server has seen the close).
    drop(open.pop());
    let started = Instant::now();
    loop {
        let mut next = TcpStream::connect(address(&app)).await.expect("connect");
        // Refused connections may already be reset when the request is written.
        if next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.is_ok()
            && read_until_closed(&mut next).await.0.starts_with("HTTP/1.1 200")
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the freed slot was not reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Events, and the events the rollups sum, in a database file (read directly: the
/// running server holds the store's lock).
fn counts(db: &std::path::Path) -> (i64, i64) {
    let c = rusqlite::Connection::open(db).expect("open db");
    let raw = c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).expect("events");
    let rolled = c.query_row("SELECT COALESCE(SUM(events), 0) FROM rollups", [], |r| r.get(0)).expect("rollups");
    (raw, rolled)
}

/// `adtally backup` copies a running server's store (no lock needed, no pause), and the
/// copy opens as a store of its own with the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_servers_store_is_backed_up_online() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = start_server(dir.path());
    let client = reqwest::Client::new();
    let admin = |path: &str, body: serde_json::Value| {
        client.post(format!("{}{path}", server.base)).bearer_auth(ADMIN).json(&body).send()
    };
    admin("/v1/placements", serde_json::json!({"id": "p", "name": "p", "format": "sidebar"})).await.expect("placement");
    for i in 0..50 {
        // Unattributed conversions: events without any campaign set-up.
        let r = admin("/v1/advertisers", serde_json::json!({"name": format!("A{i}"), "email": "a@a.example"}))
            .await
            .expect("advertiser");
        let id = r.json::<Value>().await.expect("json")["id"].as_i64().expect("id");
        let r = client
            .get(format!("{}/t/conv?advertiser={id}&uid=u{i}&value_micros=1000", server.base))
            .header("user-agent", BROWSER)
            .send()
            .await
            .expect("conversion");
        assert!(r.status().is_success(), "{}", r.status());
    }
    // Writes keep arriving while the copy is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, base, stop) = (client.clone(), server.base.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let url = format!("{base}/t/conv?advertiser=1&uid=during{i}&value_micros=1");
                let _ = client.get(url).header("user-agent", BROWSER).send().await;
            }
            i
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = dir.path().join("copy.db");
    let run = Command::new(env!("CARGO_BIN_EXE_adtally"))
        .args(["backup", "--data"])
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .env("ADTALLY_LOG", "warn")
        .output()
        .expect("run backup");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    stop.store(true, Ordering::Relaxed);
    let during = writer.await.expect("writer");
    let summary: Value = serde_json::from_slice(&run.stdout).expect("summary");
    let (raw, rolled) = counts(&out);
    // One consistent snapshot: its rollups sum its events, and it holds what was
    // acknowledged before the backup started.
    assert_eq!(summary["events"], raw, "{summary}");
    assert_eq!(raw, rolled, "the copy is a consistent snapshot");
    assert!(raw >= 50 && raw <= 50 + during, "{raw} events, {during} written during the backup");
    let _ = server.child.kill();
    let _ = server.child.wait();

    // Restore: the copy is the adtally.db of a new data dir.
    let restored = tempfile::tempdir().expect("dir");
    std::fs::copy(&out, restored.path().join("adtally.db")).expect("restore");
    let store = SqliteStore::open(restored.path()).expect("the copy opens as a store");
    assert_eq!(adtally_store::Store::advertisers(&store).expect("advertisers").len(), 50);
    drop(store);
    assert_eq!(counts(&restored.path().join("adtally.db")), (raw, rolled));
}

/// SIGTERM: the server stops accepting, lets requests finish, gives a stuck client no
/// more than `--shutdown-timeout`, and exits cleanly with every acknowledged event stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_within_its_deadline_keeping_every_acknowledged_event() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = start_server_with(dir.path(), &["--shutdown-timeout", "1s"]);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/advertisers", server.base))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": "A", "email": "a@a.example"}))
        .send()
        .await
        .expect("advertiser");
    let id = r.json::<Value>().await.expect("json")["id"].as_i64().expect("id");
    for i in 0..20 {
        let r = client
            .get(format!("{}/t/conv?advertiser={id}&uid=u{i}", server.base))
            .header("user-agent", BROWSER)
            .send()
            .await
            .expect("conversion");
        assert!(r.status().is_success(), "{}", r.status());
    }
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut stuck = TcpStream::connect(&address).await.expect("connect");
    stuck.write_all(b"GET /healthz HTTP/1.1\r\nHost: lo").await.expect("half a header");

    let signalled = Instant::now();
    let kill = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().expect("kill");
    assert!(kill.success());
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(signalled.elapsed() < Duration::from_secs(10), "the server did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(5), "took {:?}", signalled.elapsed());
    assert!(TcpStream::connect(&address).await.is_err(), "still accepting");
    assert_eq!(counts(&dir.path().join("adtally.db")).0, 20);
}

/// A writer stuck in one batch (a hung disk) is not healthy either: health names the
/// stall and decisions stop until the batch completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_event_writer_makes_health_fail_until_it_moves_again() {
    let app = spawn_app().await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let d = app.decision("sidebar-main", "before").await;
    app.state.pipeline.set_stall_after(Duration::from_millis(300));

    app.state.pipeline.inject_fault(Some(WriterFault::Stall));
    // Answered from the journal at once, though the writer hangs on it.
    let r = app.client.get(url(&d, "impression_url")).header("user-agent", BROWSER).send().await.expect("beacon");
    assert_eq!(r.status().as_u16(), 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, body) = health(&app).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("event_writer_stalled")), "{body}");
    assert_eq!(decision_status(&app, "during").await, 204);
    let (status, _) = beacon_status(&app, &url(&d, "viewable_url")).await;
    assert_eq!(status, 503, "not acknowledged while the writer is stalled");

    app.state.pipeline.inject_fault(None);
    health_becomes(&app, 200).await;
    assert_eq!(totals(&app, &f.key, "range=lifetime").await["impressions"], 1);
}
