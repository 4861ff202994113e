//! Import throughput: `import_ndjson` (parse, validate, classify, judge, charge, append
//! events and rollups through the pipeline) against SQLite's own bulk insert of the same
//! lines (parse each line, insert one row, 4096 rows per transaction), in the same run.
//!
//! `cargo bench --bench import` — prints one JSON line.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use adtally_core::catalog::{Ad, AdContent, Advertiser, Campaign, CampaignStatus, CreditKind, Format, Pacing};
use adtally_core::clock::{Clock, SystemClock};
use adtally_server::import::import_ndjson;
use adtally_server::{build_state, Options, ServerConfig};
use adtally_store::{SqliteStore, Store};

const LINES: usize = 200_000;

fn ndjson(campaign_id: i64, ad_id: i64, now_ms: i64) -> String {
    let mut out = String::with_capacity(LINES * 260);
    for i in 0..LINES {
        let at =
            adtally_core::jiff::Timestamp::from_millisecond(now_ms - 3_600_000 + (i as i64 * 3_600_000 / LINES as i64))
                .map(|t| t.to_string())
                .unwrap_or_default();
        let _ = writeln!(
            out,
            r#"{{"event_id":"bench-{i}","type":"impression","at":"{at}","campaign_id":{campaign_id},"ad_id":{ad_id},"placement":"sidebar-main","uid":"user-{i}","user_agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36","ip":"81.2.69.142"}}"#
        );
    }
    out
}

fn baseline(body: &str) -> f64 {
    let dir = tempfile::tempdir().expect("dir");
    let mut conn = rusqlite::Connection::open(dir.path().join("baseline.db")).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE events (id INTEGER PRIMARY KEY, event_id TEXT, kind TEXT, at TEXT, campaign_id INTEGER,
           ad_id INTEGER, placement TEXT, uid TEXT, user_agent TEXT, ip TEXT);",
    )
    .expect("schema");
    let started = Instant::now();
    let lines: Vec<&str> = body.lines().collect();
    for chunk in lines.chunks(4096) {
        let tx = conn.transaction().expect("tx");
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO events (event_id, kind, at, campaign_id, ad_id, placement, uid, user_agent, ip) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
                .expect("prepare");
            for line in chunk {
                let v: serde_json::Value = serde_json::from_str(line).expect("json");
                stmt.execute(rusqlite::params![
                    v["event_id"].as_str(),
                    v["type"].as_str(),
                    v["at"].as_str(),
                    v["campaign_id"].as_i64(),
                    v["ad_id"].as_i64(),
                    v["placement"].as_str(),
                    v["uid"].as_str(),
                    v["user_agent"].as_str(),
                    v["ip"].as_str()
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    LINES as f64 / started.elapsed().as_secs_f64()
}

fn adtally(body: &str, runtime: &tokio::runtime::Runtime) -> f64 {
    let dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let now = SystemClock.now_ms();
    let adv = store.create_advertiser(&Advertiser::new("Bench", "b@bench.example", "UTC", now)).expect("adv");
    store.add_credit(adv.id, CreditKind::Topup, 1_000_000_000_000, None, now).expect("credit");
    store.create_placement("sidebar-main", "s", Format::Sidebar, 0).expect("placement");
    let c = store
        .create_campaign(&Campaign {
            status: CampaignStatus::Active,
            pacing: Pacing::Asap,
            ..Campaign::draft(adv.id, "c", 2_000_000, 1_000_000_000_000, now)
        })
        .expect("campaign");
    let mut ad = Ad::new(c.id, adv.id, AdContent::new(Format::Sidebar, "h", "https://bench.example/"), now);
    ad.approve();
    let ad = store.create_ad(&ad).expect("ad");
    let body = body.replace("\"campaign_id\":0,\"ad_id\":0", &format!("\"campaign_id\":{},\"ad_id\":{}", c.id, ad.id));
    let options = Options {
        config: ServerConfig::default(),
        secret: None,
        admin_key: Some("bench".into()),
        clock: Arc::new(SystemClock),
    };
    runtime.block_on(async {
        let (state, _) = build_state(store.clone(), options).expect("state");
        let started = Instant::now();
        let summary = import_ndjson(&state, body.as_bytes()).await.expect("import");
        assert_eq!(summary.accepted, LINES);
        LINES as f64 / started.elapsed().as_secs_f64()
    })
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let body = ndjson(0, 0, SystemClock.now_ms());
    // Warm up once, then alternate and keep the best of three of each.
    let mut base: f64 = 0.0;
    let mut ours: f64 = 0.0;
    for _ in 0..3 {
        base = base.max(baseline(&body));
        ours = ours.max(adtally(&body, &runtime));
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "import",
            "lines": LINES,
            "sqlite_bulk_insert_lines_per_second": base.round(),
            "adtally_import_lines_per_second": ours.round(),
            "ratio": (ours / base * 100.0).round() / 100.0,
        })
    );
}
