//! Trust under attack and operations (issue 8): one process per data directory, the
//! client address from the one header the proxy sets, IPv6 per /64, health that
//! reflects the event writer, failed-authentication limits and slow clients.

use std::process::Command;

use adtally_core::clock::SECOND;
use adtally_server::client::ClientIpHeader;
use adtally_server::pipeline::WriterFault;
use adtally_server::ServerConfig;
use adtally_store::SqliteStore;
use serde_json::Value;

use crate::durability::start_server;
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
        let out = Command::new(env!("CARGO_BIN_EXE_adtally"))
            .args(args)
            .arg("--data")
            .arg(dir.path())
            .env("ADTALLY_ADMIN_KEY", crate::support::ADMIN)
            .env("ADTALLY_LOG", "warn")
            .output()
            .expect("run adtally");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started on a data dir in use");
        assert!(stderr.contains(&dir.path().display().to_string()), "{args:?}: {stderr}");
        assert!(stderr.contains("another adtally process"), "{args:?}: {stderr}");
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
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

/// While batches fail to commit, health says so, decisions serve no ad, beacons answer
/// 503 in the error shape; the first commit that succeeds makes the server healthy again.
#[tokio::test]
async fn a_failing_event_writer_makes_health_fail_and_decisions_stop() {
    let app = spawn_app().await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let d = app.decision("sidebar-main", "before").await;
    assert_eq!(health(&app).await.0, 200);

    app.state.pipeline.inject_fault(Some(WriterFault::FailBatches));
    let (status, body) = beacon_status(&app, &url(&d, "impression_url")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    let (status, body) = health(&app).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("event_store_failing")), "{body}");
    assert_eq!(decision_status(&app, "during").await, 204);

    app.state.pipeline.inject_fault(None);
    assert_eq!(beacon_status(&app, &url(&d, "impression_url")).await.0, 200);
    assert_eq!(health(&app).await.0, 200);
    assert_eq!(decision_status(&app, "after").await, 200);
    assert_eq!(totals(&app, &f.key, "range=lifetime").await["impressions"], 1);
}

/// A writer thread that died (here: panicked) is detected by the flag its exit sets.
#[tokio::test]
async fn a_dead_event_writer_makes_health_fail_and_decisions_stop() {
    let app = spawn_app().await;
    fixture(&app, "sidebar-main", 2_000_000).await;
    let d = app.decision("sidebar-main", "before").await;

    app.state.pipeline.inject_fault(Some(WriterFault::Panic));
    assert_eq!(beacon_status(&app, &url(&d, "impression_url")).await.0, 503);
    let (status, body) = health(&app).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("event_writer_stopped")), "{body}");
    assert_eq!(decision_status(&app, "after").await, 204);
    let (status, body) = beacon_status(&app, &url(&d, "viewable_url")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
}
