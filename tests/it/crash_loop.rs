//! The crash loop: `kill -9` the real binary at random moments under mixed load —
//! decisions and beacons, clicks, conversion pixels, imports and operator top-ups — 20
//! times. After every restart: every acknowledged event and credit is there, rollups
//! equal the raw events per advertiser, the ledger balances, no budget is overspent.
//! Beacons are acknowledged from the journal before their commit, so kills land between
//! the two: the loop counts the records each restart had to replay, and asserts that
//! some did.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adtally_store::journal::Journal;
use adtally_store::{SqliteStore, Store};
use serde_json::{json, Value};

use crate::durability::{lifetime_totals, start_server};
use crate::support::{ADMIN, BROWSER};

const CYCLES: usize = 20;
/// Budget of the campaign that runs out during the loop (1 000 impressions at 1.00 CPM).
const SMALL_BUDGET: i64 = 1_000_000;

#[derive(Default)]
struct Acked {
    impressions: AtomicUsize,
    impressions_sent: AtomicUsize,
    conversions: AtomicUsize,
    imported: AtomicUsize,
    credits_micros: AtomicUsize,
}

async fn post(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    let r = client.post(format!("{base}{path}")).bearer_auth(ADMIN).json(&body).send().await.expect("post");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.expect("json")
}

/// One advertiser with one campaign and one approved ad; returns (advertiser, campaign).
async fn setup(client: &reqwest::Client, base: &str, name: &str, budget: i64) -> (i64, i64) {
    let adv = post(client, base, "/v1/advertisers", json!({"name": name, "email": "a@a.example"})).await;
    let id = adv["id"].as_i64().expect("id");
    post(
        client,
        base,
        &format!("/v1/advertisers/{id}/credits"),
        json!({"amount_micros": 100_000_000, "kind": "topup"}),
    )
    .await;
    let c = post(
        client,
        base,
        "/v1/campaigns",
        json!({"advertiser_id": id, "name": name, "cpm_bid_micros": 1_000_000, "total_budget_micros": budget, "pacing": "asap"}),
    )
    .await;
    let cid = c["id"].as_i64().expect("id");
    let ad = post(
        client,
        base,
        &format!("/v1/campaigns/{cid}/ads"),
        json!({"format": "sidebar", "headline": name, "target_url": "https://a.example/"}),
    )
    .await;
    post(client, base, &format!("/v1/campaigns/{cid}/submit"), json!({})).await;
    post(client, base, &format!("/v1/ads/{}/review", ad["id"]), json!({"decision": "approve"})).await;
    (id, cid)
}

fn spawn_load(
    base: String,
    advertisers: [i64; 2],
    cycle: usize,
    acked: Arc<Acked>,
) -> Vec<tokio::task::JoinHandle<()>> {
    // Clicks redirect to the advertiser's site, which is not ours to load.
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let uid = format!("c{cycle}w{w}i{i}");
                let Ok(r) = client
                    .get(format!("{base}/v1/decision?placement=sidebar-main&uid={uid}"))
                    .header("user-agent", BROWSER)
                    .send()
                    .await
                else {
                    break;
                };
                if r.status().as_u16() == 204 {
                    continue;
                }
                let Ok(d) = r.json::<Value>().await else { break };
                let Some(url) = d["impression_url"].as_str() else { break };
                acked.impressions_sent.fetch_add(1, Ordering::SeqCst);
                match client.get(url).header("user-agent", BROWSER).send().await {
                    Ok(r) if r.status().is_success() => acked.impressions.fetch_add(1, Ordering::SeqCst),
                    _ => break,
                };
                if i % 5 == 0 {
                    let click = d["click_url"].as_str().unwrap_or_default();
                    if client.get(click).header("user-agent", BROWSER).send().await.is_err() {
                        break;
                    }
                    let pixel = format!("{base}/t/conv?advertiser={}&uid={uid}&value_micros=1000", advertisers[w % 2]);
                    match client.get(pixel).header("user-agent", BROWSER).send().await {
                        Ok(r) if r.status().is_success() => acked.conversions.fetch_add(1, Ordering::SeqCst),
                        _ => break,
                    };
                }
            }
        }));
    }
    // The operator: imports of conversions and top-ups, acknowledged one by one.
    let (client, acked) = (client.clone(), acked.clone());
    tasks.push(tokio::spawn(async move {
        for i in 0.. {
            let at = adtally_core::jiff::Timestamp::now();
            let line = format!(
                "{{\"event_id\":\"imp-{cycle}-{i}\",\"type\":\"conversion\",\"at\":\"{at}\",\"advertiser_id\":{},\"uid\":\"i{i}\",\"value_micros\":500}}",
                advertisers[i % 2]
            );
            match client.post(format!("{base}/v1/events")).bearer_auth(ADMIN).body(line).send().await {
                Ok(r) if r.status().is_success() => acked.imported.fetch_add(1, Ordering::SeqCst),
                _ => break,
            };
            let credit = json!({"amount_micros": 1_000, "kind": "bonus"});
            match client
                .post(format!("{base}/v1/advertisers/{}/credits", advertisers[i % 2]))
                .bearer_auth(ADMIN)
                .json(&credit)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => acked.credits_micros.fetch_add(1_000, Ordering::SeqCst),
                _ => break,
            };
        }
    }));
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "20 kill -9 cycles of the real binary, about a minute; .ci/run runs it"]
async fn twenty_kill_nine_cycles_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("dir");
    let client = reqwest::Client::new();
    let mut server = start_server(dir.path());
    post(
        &client,
        &server.base,
        "/v1/placements",
        json!({"id": "sidebar-main", "name": "s", "format": "sidebar", "floor_cpm_micros": 1_000_000}),
    )
    .await;
    let (a, small) = setup(&client, &server.base, "A", SMALL_BUDGET).await;
    let (b, _) = setup(&client, &server.base, "B", 1_000_000_000).await;
    let acked = Arc::new(Acked::default());
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64);
    println!("crash loop seed {seed}");
    let mut replayed = 0;
    for cycle in 0..CYCLES {
        let load = spawn_load(server.base.clone(), [a, b], cycle, acked.clone());
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        tokio::time::sleep(Duration::from_millis(300 + (seed >> 33) % 900)).await;
        server.child.kill().expect("SIGKILL");
        server.child.wait().expect("reaped");
        for t in load {
            let _ = t.await;
        }
        let store = SqliteStore::open(dir.path()).expect("open");
        let check = store.consistency_check().expect("check");
        assert!(check.is_consistent(), "cycle {cycle}: {check:?}");
        // Acknowledged beacons the kill caught between journal append and commit.
        let applied = store.journal_applied().expect("journal position");
        drop(store);
        let (_, pending) = Journal::open(&dir.path().join("journal"), applied, false).expect("journal");
        replayed += pending.len();
        println!("cycle {cycle}: {} journaled beacons not yet committed at the kill", pending.len());
        server = start_server(dir.path());

        let (ta, tb) =
            (lifetime_totals(&client, &server.base, a).await, lifetime_totals(&client, &server.base, b).await);
        let count = |t: &Value, m: &str| t[m].as_u64().unwrap_or(0) as usize;
        let impressions = count(&ta, "impressions") + count(&tb, "impressions");
        let (sent, got) = (acked.impressions_sent.load(Ordering::SeqCst), acked.impressions.load(Ordering::SeqCst));
        assert!(
            impressions >= got && impressions <= sent,
            "cycle {cycle}: acked {got}, counted {impressions}, sent {sent}"
        );
        let conversions = count(&ta, "conversions") + count(&tb, "conversions");
        let acked_conversions = acked.conversions.load(Ordering::SeqCst) + acked.imported.load(Ordering::SeqCst);
        assert!(conversions >= acked_conversions, "cycle {cycle}: acked {acked_conversions}, counted {conversions}");
        // No budget overspent, and each ledger balances against /v1/me.
        let (_, campaign) = {
            let r =
                client.get(format!("{}/v1/campaigns/{small}", server.base)).bearer_auth(ADMIN).send().await.expect("c");
            (r.status(), r.json::<Value>().await.expect("json"))
        };
        assert!(campaign["spend_micros"].as_i64().unwrap_or(i64::MAX) <= SMALL_BUDGET, "cycle {cycle}: {campaign}");
        let mut credits = 0i64;
        for advertiser in [a, b] {
            let ledger: Value = client
                .get(format!("{}/v1/ledger?advertiser_id={advertiser}", server.base))
                .bearer_auth(ADMIN)
                .send()
                .await
                .expect("ledger")
                .json()
                .await
                .expect("json");
            let items = ledger["items"].as_array().cloned().unwrap_or_default();
            let sum: i64 = items.iter().filter_map(|e| e["amount_micros"].as_i64()).sum();
            assert_eq!(Some(sum), ledger["balance_micros"].as_i64(), "cycle {cycle}: ledger of {advertiser}");
            assert!(sum >= 0, "cycle {cycle}: advertiser {advertiser} balance {sum}");
            credits +=
                items.iter().filter(|e| e["kind"] != "spend").filter_map(|e| e["amount_micros"].as_i64()).sum::<i64>();
        }
        let acked_credits = 200_000_000 + acked.credits_micros.load(Ordering::SeqCst) as i64;
        assert!(credits >= acked_credits, "cycle {cycle}: credits {credits}, acked {acked_credits}");
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
    assert!(replayed > 0, "no kill landed between a journal append and its commit");
    println!(
        "crash loop: {CYCLES} cycles, {replayed} beacons replayed from the journal, {} impressions, {} conversions, {} imports, {} credit micros acknowledged; 0 lost",
        acked.impressions.load(Ordering::SeqCst),
        acked.conversions.load(Ordering::SeqCst),
        acked.imported.load(Ordering::SeqCst),
        acked.credits_micros.load(Ordering::SeqCst)
    );
}
