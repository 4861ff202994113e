//! Three nodes on one PostgreSQL (issue 13): real `adtally serve` processes, driven
//! round-robin by many clients — each decision on one node, its impression on the next,
//! the same impression again on the third, its click on two — while one node is killed
//! with SIGKILL and restarted. Budgets must be spent exactly, no decision counted twice,
//! no acknowledged beacon lost, and every node must answer the same reports.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::durability::{start_server_with, Server};
use crate::support::{postgres_url, BROWSER};

const ADMIN: &str = crate::support::ADMIN;
/// Impressions cost 1 000 micros (a 1.00 CPM): campaign A has 1 500 in its budget,
/// advertiser B's balance pays for 600.
const BUDGET_A: i64 = 1_500_000;
const BALANCE_B: i64 = 600_000;
/// Small leases (20 impressions), so nodes lease, run dry and give back many times.
const SLICE: &str = "20000";

fn start_node(dir: &std::path::Path, db: &str, name: &str) -> Server {
    start_server_with(dir, &["--database", db, "--node-name", name, "--lease-slice", SLICE])
}

struct Counters {
    decisions: AtomicUsize,
    acked_impressions: AtomicUsize,
    sent_impressions: AtomicUsize,
    /// Decisions with at least one acknowledged impression beacon.
    acked_decisions: Mutex<HashSet<String>>,
    served_while_down: AtomicUsize,
}

async fn post(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    let r = client.post(format!("{base}{path}")).bearer_auth(ADMIN).json(&body).send().await.expect("post");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

/// One raw number from the shared database.
async fn db_count(db: &str, sql: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(db, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client.query_one(sql, &[]).await.expect(sql).get::<_, Option<i64>>(0).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: .ci/run starts a cluster and sets ADTALLY_TEST_POSTGRES"]
async fn three_nodes_spend_budgets_exactly_and_count_each_decision_once() {
    let url = postgres_url().expect("ADTALLY_TEST_POSTGRES must name a PostgreSQL server");
    let name = format!("cluster_{}", std::process::id());
    let db = adtally_store::PgStore::create_database(&url, &name).expect("database");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut nodes: Vec<Server> =
        dirs.iter().enumerate().map(|(i, d)| start_node(d.path(), &db, &format!("node-{i}"))).collect();
    let bases: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(nodes.iter().map(|n| n.base.clone()).collect()));
    let client = reqwest::Client::new();
    let base0 = nodes[0].base.clone();

    post(
        &client,
        &base0,
        "/v1/placements",
        json!({"id": "side", "name": "s", "format": "sidebar", "floor_cpm_micros": 1_000_000}),
    )
    .await;
    let mut advertisers = Vec::new();
    let mut campaigns = Vec::new();
    for (name, credit, budget) in [("A", 1_000_000_000i64, BUDGET_A), ("B", BALANCE_B, 1_000_000_000)] {
        let a = post(&client, &base0, "/v1/advertisers", json!({"name": name, "email": "a@a.example"})).await;
        let id = a["id"].as_i64().expect("id");
        post(
            &client,
            &base0,
            &format!("/v1/advertisers/{id}/credits"),
            json!({"amount_micros": credit, "kind": "topup"}),
        )
        .await;
        let c = post(
            &client,
            &base0,
            "/v1/campaigns",
            json!({"advertiser_id": id, "name": name, "cpm_bid_micros": 1_000_000, "total_budget_micros": budget}),
        )
        .await;
        let cid = c["id"].as_i64().expect("id");
        let ad = post(
            &client,
            &base0,
            &format!("/v1/campaigns/{cid}/ads"),
            json!({"format": "sidebar", "headline": name, "target_url": "https://a.example/"}),
        )
        .await;
        post(&client, &base0, &format!("/v1/campaigns/{cid}/submit"), json!({})).await;
        post(&client, &base0, &format!("/v1/ads/{}/review", ad["id"]), json!({"decision": "approve"})).await;
        advertisers.push(id);
        campaigns.push(cid);
    }
    // The catalog reaches the other nodes within seconds.
    let all: Vec<String> = bases.lock().expect("bases").clone();
    for base in &all {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = client
                .get(format!("{base}/v1/decision?placement=side&uid=probe"))
                .header("user-agent", BROWSER)
                .send()
                .await;
            if let Ok(r) = r {
                if r.status().as_u16() == 200 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "{base} never served the new campaigns");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let counters = Arc::new(Counters {
        decisions: AtomicUsize::new(0),
        acked_impressions: AtomicUsize::new(0),
        sent_impressions: AtomicUsize::new(0),
        acked_decisions: Mutex::new(HashSet::new()),
        served_while_down: AtomicUsize::new(0),
    });
    let node_down = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..12usize {
        let (client, bases, counters, stop, node_down) =
            (client.clone(), bases.clone(), counters.clone(), stop.clone(), node_down.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let b = bases.lock().expect("bases").clone();
                let (first, second, third) = (&b[(w + i) % 3], &b[(w + i + 1) % 3], &b[(w + i + 2) % 3]);
                let get = |url: String| client.get(url).header("user-agent", BROWSER).send();
                let Ok(r) = get(format!("{first}/v1/decision?placement=side&uid=w{w}-{i}")).await else { continue };
                if r.status().as_u16() != 200 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let Ok(d) = r.json::<Value>().await else { continue };
                counters.decisions.fetch_add(1, Ordering::SeqCst);
                if node_down.load(Ordering::SeqCst) && *first != b[2] {
                    counters.served_while_down.fetch_add(1, Ordering::SeqCst);
                }
                let impression = d["impression_url"].as_str().expect("impression url").to_owned();
                let click = d["click_url"].as_str().expect("click url").to_owned();
                let on = |base: &str, url: &str| {
                    let path = &url[url.find("/t/").expect("path")..];
                    format!("{base}{path}")
                };
                // The same impression on two nodes at once: one counts.
                let (a, c) = tokio::join!(get(on(second, &impression)), get(on(third, &impression)));
                counters.sent_impressions.fetch_add(2, Ordering::SeqCst);
                for r in [a, c] {
                    if r.is_ok_and(|r| r.status().is_success()) {
                        counters.acked_impressions.fetch_add(1, Ordering::SeqCst);
                        counters.acked_decisions.lock().expect("set").insert(d["request_id"].to_string());
                    }
                }
                if i.is_multiple_of(4) {
                    let no_redirect =
                        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
                    let _ = tokio::join!(
                        no_redirect.get(on(third, &click)).header("user-agent", BROWSER).send(),
                        no_redirect.get(on(first, &click)).header("user-agent", BROWSER).send()
                    );
                }
            }
        }));
    }

    let spent = |campaign: i64| {
        let db = db.clone();
        async move {
            db_count(&db, &format!("SELECT SUM(cost_micros)::bigint FROM events WHERE campaign_id = {campaign}")).await
        }
    };
    // One node dies when a fifth of A's budget is spent, and comes back under its name
    // (it waits out its lease timeout).
    let deadline = Instant::now() + Duration::from_secs(30);
    while spent(campaigns[0]).await < BUDGET_A / 5 {
        assert!(Instant::now() < deadline, "no traffic");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node_down.store(true, Ordering::SeqCst);
    nodes[2].child.kill().expect("SIGKILL");
    nodes[2].child.wait().expect("reaped");
    // The others serve on (most of A's budget is left; between two readings of the room
    // a node may have used its share and answer 204 for a moment).
    for base in [&nodes[0].base, &nodes[1].base] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = client
                .get(format!("{base}/v1/decision?placement=side&uid=while-down"))
                .header("user-agent", BROWSER)
                .send()
                .await
                .expect("decision");
            if r.status().as_u16() == 200 {
                break;
            }
            if Instant::now() >= deadline {
                let (a, b) = (spent(campaigns[0]).await, spent(campaigns[1]).await);
                panic!("{base} stopped serving while a node was down (spent {a} of {BUDGET_A}, {b} of {BALANCE_B})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let dir2 = dirs[2].path().to_owned();
    let db2 = db.clone();
    let restarted = tokio::task::spawn_blocking(move || start_node(&dir2, &db2, "node-2")).await.expect("restart");
    bases.lock().expect("bases")[2] = restarted.base.clone();
    nodes[2] = restarted;
    node_down.store(false, Ordering::SeqCst);

    // Until both budgets are spent (idle and dead nodes' leases come back to the others).
    let deadline = Instant::now() + Duration::from_secs(60);
    while (spent(campaigns[0]).await, spent(campaigns[1]).await) != (BUDGET_A, BALANCE_B) {
        assert!(
            Instant::now() < deadline,
            "budgets not spent: {} {}",
            spent(campaigns[0]).await,
            spent(campaigns[1]).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("worker");
    }
    // Every node has committed what it acknowledged (each authenticated read waits for
    // its own node's journal), then every node is asked the same questions.
    let bases = bases.lock().expect("bases").clone();
    for base in &bases {
        let r = client.get(format!("{base}/v1/advertisers")).bearer_auth(ADMIN).send().await.expect("barrier");
        assert_eq!(r.status().as_u16(), 200);
    }
    let mut reports = Vec::new();
    for base in &bases {
        let mut per_node = Vec::new();
        for a in &advertisers {
            let r = client
                .get(format!("{base}/v1/reports?range=lifetime&advertiser_id={a}&group_by=campaign"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .expect("report");
            assert_eq!(r.status().as_u16(), 200);
            per_node.push(r.json::<Value>().await.expect("json"));
        }
        reports.push(per_node);
    }
    assert_eq!(reports[0], reports[1], "nodes 0 and 1 answer the same reports");
    assert_eq!(reports[0], reports[2], "nodes 0 and 2 answer the same reports");

    // Spend is exact, to the micro, and never more.
    assert_eq!(spent(campaigns[0]).await, BUDGET_A);
    assert_eq!(spent(campaigns[1]).await, BALANCE_B);
    assert_eq!(reports[0][0]["totals"]["spend_micros"], BUDGET_A);
    assert_eq!(reports[0][1]["totals"]["spend_micros"], BALANCE_B);
    // At most one counted impression and click per decision, across nodes.
    for kind in [1, 3] {
        let twice = db_count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM (SELECT decision_id FROM events WHERE kind = {kind} AND verdict = 0
                 GROUP BY decision_id HAVING COUNT(*) > 1) t"
            ),
        )
        .await;
        assert_eq!(twice, 0, "decisions with kind {kind} counted twice");
    }
    // Every acknowledged beacon is stored (once), and every decision with an impression
    // stored has exactly one counted.
    let stored = db_count(&db, "SELECT COUNT(*) FROM events WHERE kind = 1").await as usize;
    let (acked, sent) =
        (counters.acked_impressions.load(Ordering::SeqCst), counters.sent_impressions.load(Ordering::SeqCst));
    assert!(acked <= stored && stored <= sent, "acked {acked}, stored {stored}, sent {sent}");
    let counted = db_count(&db, "SELECT COUNT(*) FROM events WHERE kind = 1 AND verdict = 0").await;
    let with_impression = db_count(&db, "SELECT COUNT(DISTINCT decision_id) FROM events WHERE kind = 1").await;
    assert_eq!(counted, with_impression);
    assert!(counted as usize >= counters.acked_decisions.lock().expect("set").len());
    assert!(counted > BUDGET_A / 1000 + BALANCE_B / 1000 - 1, "the run reached both budgets: {counted}");
    // Rollups equal the raw events.
    assert_eq!(
        db_count(&db, "SELECT SUM(events)::bigint FROM rollups").await,
        db_count(&db, "SELECT COUNT(*) FROM events").await
    );
    let charged = db_count(&db, "SELECT COUNT(*) FROM events WHERE kind = 1 AND cost_micros > 0").await;
    eprintln!(
        "cluster: {} decisions, {acked} impressions acknowledged of {sent} sent, {counted} counted ({charged} charged, \
         {} served beyond the budgets), {} served by the other nodes while one was down",
        counters.decisions.load(Ordering::SeqCst),
        counted - charged,
        counters.served_while_down.load(Ordering::SeqCst)
    );
    for mut n in nodes {
        let _ = n.child.kill();
        let _ = n.child.wait();
    }
}
