//! A 2xx means the event is on disk: kill -9 a server under load, restart it, and
//! every acknowledged event is in the report, with rollups equal to the raw events.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adtally_store::{SqliteStore, Store};
use serde_json::{json, Value};

use crate::support::ADMIN;

pub struct Server {
    pub child: Child,
    pub base: String,
}

pub fn start_server(data: &std::path::Path) -> Server {
    start_server_with(data, &[])
}

pub fn start_server_with(data: &std::path::Path, flags: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_adtally"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(flags)
        .env("ADTALLY_ADMIN_KEY", ADMIN)
        .env("ADTALLY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start adtally");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().expect("server printed its address").expect("line");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().expect("url").to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, base }
}

/// The lifetime report totals of one advertiser, as the operator reads them.
pub async fn lifetime_totals(client: &reqwest::Client, base: &str, advertiser_id: i64) -> Value {
    let r = client
        .get(format!("{base}/v1/reports?range=lifetime&advertiser_id={advertiser_id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("report");
    assert!(r.status().is_success(), "report: {}", r.status());
    r.json::<Value>().await.expect("json")["totals"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_loses_no_acknowledged_event() {
    killed_under_load(&[]).await;
}

/// The same with `--fsync`: every beacon's journal record is flushed to disk (shared
/// flushes) before it is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_with_fsync_loses_no_acknowledged_event() {
    killed_under_load(&["--fsync"]).await;
}

/// Impressions from 16 clients, `kill -9` after 1.5 s, restart: every acknowledged one
/// is counted (and charged), none that was never sent.
async fn killed_under_load(flags: &[&str]) {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = start_server_with(dir.path(), flags);
    let client = reqwest::Client::new();
    let post = |path: &str, key: &str, body: Value| {
        client.post(format!("{}{path}", server.base)).bearer_auth(key).json(&body).send()
    };
    post(
        "/v1/placements",
        ADMIN,
        json!({"id": "sidebar-main", "name": "s", "format": "sidebar", "floor_cpm_micros": 1_000_000}),
    )
    .await
    .expect("placement");
    let adv: Value = post("/v1/advertisers", ADMIN, json!({"name": "A", "email": "a@a.example"}))
        .await
        .expect("adv")
        .json()
        .await
        .expect("json");
    let id = adv["id"].as_i64().expect("id");
    post(&format!("/v1/advertisers/{id}/credits"), ADMIN, json!({"amount_micros": 1_000_000_000i64, "kind": "topup"}))
        .await
        .expect("credit");
    let c: Value = post(
        "/v1/campaigns",
        ADMIN,
        json!({"advertiser_id": id, "name": "c", "cpm_bid_micros": 1_000_000, "total_budget_micros": 1_000_000_000i64}),
    )
    .await
    .expect("campaign")
    .json()
    .await
    .expect("json");
    let cid = c["id"].as_i64().expect("id");
    let ad: Value = post(
        &format!("/v1/campaigns/{cid}/ads"),
        ADMIN,
        json!({"format": "sidebar", "headline": "h", "target_url": "https://a.example"}),
    )
    .await
    .expect("ad")
    .json()
    .await
    .expect("json");
    post(&format!("/v1/campaigns/{cid}/submit"), ADMIN, json!({})).await.expect("submit");
    post(&format!("/v1/ads/{}/review", ad["id"]), ADMIN, json!({"decision": "approve"})).await.expect("review");

    let acked = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..16 {
        let (client, base, acked, sent) = (client.clone(), server.base.clone(), acked.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            for i in 0.. {
                let Ok(r) = client
                    .get(format!("{base}/v1/decision?placement=sidebar-main&uid=w{w}-{i}"))
                    .header("user-agent", crate::support::BROWSER)
                    .send()
                    .await
                else {
                    break;
                };
                let Ok(d) = r.json::<Value>().await else { break };
                let Some(url) = d["impression_url"].as_str() else { break };
                sent.fetch_add(1, Ordering::SeqCst);
                match client.get(url).header("user-agent", crate::support::BROWSER).send().await {
                    Ok(r) if r.status().is_success() => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    for w in workers {
        let _ = w.await;
    }
    let acked = acked.load(Ordering::SeqCst);
    let sent = sent.load(Ordering::SeqCst);
    assert!(acked > 100, "the load was too light to mean anything: {acked}");

    let mut restarted = start_server_with(dir.path(), flags);
    let totals = lifetime_totals(&client, &restarted.base, id).await;
    let counted = totals["impressions"].as_u64().expect("impressions") as usize;
    assert!(counted >= acked && counted <= sent, "acked {acked}, counted {counted}, sent {sent}");
    let _ = restarted.child.kill();
    let _ = restarted.child.wait();
    let check = SqliteStore::open(dir.path()).expect("open").consistency_check().expect("check");
    assert!(check.is_consistent(), "{check:?}");
    // Every counted impression was charged the floor, 1.00 CPM = 1000 micros.
    assert_eq!(check.raw_cost_micros(), i128::from(counted as i64 * 1000));
}
