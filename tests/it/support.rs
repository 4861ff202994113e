//! Starting servers and building the usual fixtures.

use std::sync::Arc;

use adtally_core::clock::{Clock, ManualClock, SystemClock};
use adtally_server::pipeline::JournalConfig;
use adtally_server::{Application, Options, ServerConfig};
use adtally_store::{SqliteStore, Store};
use serde_json::{json, Value};

pub const ADMIN: &str = "test-admin-key";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub store: Arc<dyn Store>,
    pub state: Arc<adtally_server::AppState>,
    /// Kept so the data directory lives as long as the server.
    dir: Arc<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

pub async fn spawn_app() -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    spawn_app_in(dir, ServerConfig::default(), Arc::new(ManualClock::new(SystemClock.now_ms()))).await
}

pub async fn spawn_app_with(config: ServerConfig) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    spawn_app_in(dir, config, Arc::new(ManualClock::new(SystemClock.now_ms()))).await
}

/// Starts a server on an existing data directory (to test restarts).
pub async fn spawn_app_in(dir: Arc<tempfile::TempDir>, mut config: ServerConfig, clock: Arc<ManualClock>) -> TestApp {
    let store = open_test_store(dir.path()).await;
    // As `serve` runs: beacons are acknowledged from the journal.
    config.journal.get_or_insert_with(|| JournalConfig { dir: dir.path().join("journal"), fsync: false });
    let options =
        Options { config, secret: Some("test-secret".into()), admin_key: Some(ADMIN.into()), clock: clock.clone() };
    let app =
        Application::build("127.0.0.1:0".parse().expect("addr"), store.clone(), options).await.expect("build app");
    let addr = app.local_addr().expect("local addr");
    let state = app.state();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    TestApp { base: format!("http://{addr}"), client, clock, store, state, dir, shutdown: Some(tx) }
}

/// With `ADTALLY_TEST_POSTGRES` (a server URL), tests that start a server run it on
/// PostgreSQL instead of SQLite: `.ci/run` runs the suite once each way.
pub fn postgres_url() -> Option<String> {
    std::env::var("ADTALLY_TEST_POSTGRES").ok().filter(|u| !u.is_empty())
}

/// The store a test's server runs on: SQLite in the data directory, or with
/// [`postgres_url`] a database of its own on that server (named after the directory,
/// so a restart in the same test finds the same data), with the directory holding the
/// node's journal.
pub async fn open_test_store(dir: &std::path::Path) -> Arc<dyn Store> {
    let Some(url) = postgres_url() else { return Arc::new(open_store_when_free(dir).await) };
    let name = format!(
        "it_{}",
        dir.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_lowercase()
    );
    let db_url = adtally_store::PgStore::create_database(&url, &name).expect("create a test database");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lock = loop {
        match adtally_store::DataDirLock::acquire(dir) {
            Ok(lock) => break lock,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("data dir: {e}"),
        }
    };
    let store = tokio::task::spawn_blocking(move || adtally_store::PgStore::connect(&db_url, "test-node"))
        .await
        .expect("join")
        .expect("connect to PostgreSQL");
    Arc::new(store.holding(lock))
}

/// The PostgreSQL database of a test's data directory.
fn test_database(dir: &std::path::Path) -> String {
    let name: String =
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("x").chars().filter(char::is_ascii_alphanumeric).collect();
    format!("it_{}", name.to_lowercase())
}

/// One number from the raw tables of a test server's store (SQL both databases read
/// alike), bypassing the server and its rollups.
pub fn raw_count(dir: &std::path::Path, sql: &str) -> i64 {
    let Some(url) = postgres_url() else {
        let conn = rusqlite::Connection::open(dir.join("adtally.db")).expect("open");
        return conn.query_row(sql, [], |r| r.get(0)).expect("count");
    };
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b).to_owned();
    let db_url = format!("{base}/{}", test_database(dir));
    let sql = sql.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(connection);
            client.query_one(&sql, &[]).await.expect("count").get::<_, i64>(0)
        })
    })
    .join()
    .expect("join")
}

/// Opens the store of a data directory, waiting for a server of the same test that was
/// just dropped to let go of it (its shutdown, and so its data-dir lock, is asynchronous).
pub async fn open_store_when_free(dir: &std::path::Path) -> SqliteStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SqliteStore::open(dir) {
            Ok(store) => return store,
            Err(adtally_store::StoreError::Refused { code: "data_dir_in_use", .. })
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("open store: {e}"),
        }
    }
}

pub const BROWSER: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

impl TestApp {
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self.client.post(self.url(path)).bearer_auth(key).json(&body).send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn patch(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self.client.patch(self.url(path)).bearer_auth(key).json(&body).send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).bearer_auth(key).send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, key: &str, path: &str) -> (u16, String) {
        let r = self.client.get(self.url(path)).bearer_auth(key).send().await.expect("request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// A beacon or click as a browser sends it. Returns once the writer has committed
    /// it (the server answered as soon as it was journaled), so that a decision made
    /// next sees its effect, as the API's reads do on their own.
    pub async fn hit(&self, url: &str) -> reqwest::Response {
        let r = self.client.get(url).header("user-agent", BROWSER).send().await.expect("beacon");
        self.state.pipeline.caught_up().await;
        r
    }

    pub async fn decision(&self, placement: &str, uid: &str) -> Value {
        let r = self
            .client
            .get(self.url(&format!("/v1/decision?placement={placement}&uid={uid}")))
            .header("user-agent", BROWSER)
            .send()
            .await
            .expect("decision");
        assert_eq!(r.status().as_u16(), 200, "decision for {placement}");
        r.json().await.expect("decision json")
    }
}

/// An advertiser with a key and money, a placement, and one active campaign with one
/// approved ad.
pub struct Fixture {
    pub advertiser_id: i64,
    pub key: String,
    pub campaign_id: i64,
    pub ad_id: i64,
}

pub async fn fixture(app: &TestApp, placement: &str, cpm_bid_micros: i64) -> Fixture {
    let (s, _) =
        app.post(ADMIN, "/v1/placements", json!({"id": placement, "name": placement, "format": "sidebar"})).await;
    assert!(s == 201 || s == 409, "placement: {s}");
    fixture_for_existing_placement(app, "UTC", cpm_bid_micros, 1_000_000_000).await
}

pub async fn fixture_for_existing_placement(app: &TestApp, tz: &str, cpm_bid_micros: i64, budget: i64) -> Fixture {
    let (s, adv) =
        app.post(ADMIN, "/v1/advertisers", json!({"name": "Acme", "email": "a@acme.example", "timezone": tz})).await;
    assert_eq!(s, 201, "{adv}");
    let advertiser_id = adv["id"].as_i64().expect("id");
    let (s, key) = app.post(ADMIN, &format!("/v1/advertisers/{advertiser_id}/keys"), json!({})).await;
    assert_eq!(s, 201, "{key}");
    let key = key["api_key"].as_str().expect("key").to_owned();
    let (s, _) = app
        .post(
            ADMIN,
            &format!("/v1/advertisers/{advertiser_id}/credits"),
            json!({"amount_micros": 5_000_000_000i64, "kind": "topup"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, c) = app
        .post(&key, "/v1/campaigns", json!({"name": "Spring", "cpm_bid_micros": cpm_bid_micros, "total_budget_micros": budget, "pacing": "asap"}))
        .await;
    assert_eq!(s, 201, "{c}");
    let campaign_id = c["id"].as_i64().expect("id");
    let (s, ad) = app
        .post(&key, &format!("/v1/campaigns/{campaign_id}/ads"), json!({"format": "sidebar", "headline": "Hello", "body": "World", "target_url": "https://acme.example/landing?x=1"}))
        .await;
    assert_eq!(s, 201, "{ad}");
    let ad_id = ad["id"].as_i64().expect("id");
    let (s, c) = app.post(&key, &format!("/v1/campaigns/{campaign_id}/submit"), json!({})).await;
    assert_eq!((s, c["status"].as_str()), (200, Some("pending_review")), "{c}");
    let (s, ad) = app.post(ADMIN, &format!("/v1/ads/{ad_id}/review"), json!({"decision": "approve"})).await;
    assert_eq!((s, ad["status"].as_str()), (200, Some("approved")));
    let (_, c) = app.get(&key, &format!("/v1/campaigns/{campaign_id}")).await;
    assert_eq!(c["status"], "active");
    Fixture { advertiser_id, key, campaign_id, ad_id }
}

/// Reads a report and returns its totals.
pub async fn totals(app: &TestApp, key: &str, query: &str) -> Value {
    let (s, r) = app.get(key, &format!("/v1/reports?{query}")).await;
    assert_eq!(s, 200, "{r}");
    r["totals"].clone()
}

/// A click's `Location` without the click id the server appends (`adtally_click`).
pub fn landing(location: &reqwest::header::HeaderValue) -> String {
    let text = location.to_str().unwrap_or_default();
    match text.find("adtally_click=") {
        Some(at) => text[..at.saturating_sub(1)].to_owned(),
        None => text.to_owned(),
    }
}
