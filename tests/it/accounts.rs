//! Self-serve accounts: who may call what, the campaign lifecycle, moderation, keys,
//! promo codes, bonuses and the audit log.

use serde_json::{json, Value};

use crate::support::*;

#[derive(Clone, Copy, Debug)]
enum Who {
    Admin,
    Owner,
    Other,
    Nobody,
    Garbage,
}

async fn call(app: &TestApp, who: Who, keys: &(String, String), method: &str, path: &str, body: Option<Value>) -> u16 {
    let mut req = match method {
        "GET" => app.client.get(app.url(path)),
        "POST" => app.client.post(app.url(path)),
        "PATCH" => app.client.patch(app.url(path)),
        other => panic!("method {other}"),
    };
    req = match who {
        Who::Admin => req.bearer_auth(ADMIN),
        Who::Owner => req.bearer_auth(&keys.0),
        Who::Other => req.bearer_auth(&keys.1),
        Who::Nobody => req,
        Who::Garbage => req.bearer_auth("adt_0000garbage"),
    };
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    if status >= 400 {
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(body["error"]["code"].is_string(), "{method} {path} as {who:?}: {status} without the error shape");
    }
    status
}

#[tokio::test]
async fn every_endpoint_answers_each_caller_as_it_should() {
    // Dozens of wrong keys from one address: more than the failed-authentication limit.
    let limits = adtally_server::limits::Limits { max_auth_failures: 10_000, ..Default::default() };
    let app = spawn_app_with(adtally_server::ServerConfig { limits, ..Default::default() }).await;
    let owner = fixture(&app, "sidebar-main", 2_000_000).await;
    let other = fixture_for_existing_placement(&app, "UTC", 2_000_000, 1_000_000).await;
    let keys = (owner.key.clone(), other.key.clone());
    let (a, c, ad) = (owner.advertiser_id, owner.campaign_id, owner.ad_id);
    let mut n = 0;
    let mut unique = || {
        n += 1;
        n
    };
    let campaign_body = |advertiser: i64| json!({"advertiser_id": advertiser, "name": "x", "cpm_bid_micros": 1_000_000, "total_budget_micros": 1_000_000});
    // (method, path, body for admin/owner/other, expected [admin, owner, other]); no or
    // garbage key is always 401.
    type Row = (&'static str, String, Box<dyn Fn(Who) -> Option<Value>>, [u16; 3]);
    let table: Vec<Row> = vec![
        (
            "POST",
            "/v1/advertisers".into(),
            Box::new(|_| Some(json!({"name": "n", "email": "n@n.example"}))),
            [201, 403, 403],
        ),
        ("GET", "/v1/advertisers".into(), Box::new(|_| None), [200, 403, 403]),
        ("POST", format!("/v1/advertisers/{a}/keys"), Box::new(|_| None), [201, 403, 403]),
        ("GET", format!("/v1/advertisers/{a}/keys"), Box::new(|_| None), [200, 200, 404]),
        (
            "POST",
            format!("/v1/advertisers/{a}/credits"),
            Box::new(|_| Some(json!({"amount_micros": 1, "kind": "bonus"}))),
            [201, 403, 403],
        ),
        ("GET", "/v1/me".into(), Box::new(|_| None), [200, 200, 200]),
        ("GET", format!("/v1/ledger?advertiser_id={a}"), Box::new(|_| None), [200, 200, 404]),
        ("GET", "/v1/placements".into(), Box::new(|_| None), [200, 200, 200]),
        (
            "POST",
            "/v1/campaigns".into(),
            Box::new(move |w| {
                Some(campaign_body(match w {
                    Who::Other => other.advertiser_id,
                    _ => a,
                }))
            }),
            [201, 201, 201],
        ),
        ("GET", "/v1/campaigns".into(), Box::new(|_| None), [200, 200, 200]),
        ("GET", format!("/v1/campaigns/{c}"), Box::new(|_| None), [200, 200, 404]),
        ("PATCH", format!("/v1/campaigns/{c}"), Box::new(|_| Some(json!({"name": "renamed"}))), [200, 200, 404]),
        ("POST", format!("/v1/campaigns/{c}/clone"), Box::new(|_| None), [201, 201, 404]),
        (
            "POST",
            format!("/v1/campaigns/{c}/ads"),
            Box::new(|_| Some(json!({"format": "sidebar", "headline": "h", "target_url": "https://a.example"}))),
            [201, 201, 404],
        ),
        ("GET", format!("/v1/ads/{ad}"), Box::new(|_| None), [200, 200, 404]),
        ("PATCH", format!("/v1/ads/{ad}"), Box::new(|_| Some(json!({"cta": "Apply"}))), [200, 200, 404]),
        ("GET", "/v1/ads?status=pending_review".into(), Box::new(|_| None), [200, 200, 200]),
        ("POST", format!("/v1/ads/{ad}/review"), Box::new(|_| Some(json!({"decision": "approve"}))), [200, 403, 403]),
        (
            "POST",
            "/v1/conversions".into(),
            Box::new(move |_| Some(json!({"uid": "u", "advertiser_id": a}))),
            [201, 201, 404],
        ),
        ("GET", format!("/v1/reports?campaign_id={c}"), Box::new(|_| None), [200, 200, 404]),
        ("GET", format!("/v1/reports?advertiser_id={a}"), Box::new(|_| None), [200, 200, 404]),
        ("GET", format!("/v1/reports/ivt?ad_id={ad}"), Box::new(|_| None), [200, 200, 404]),
        ("GET", "/v1/audit".into(), Box::new(|_| None), [200, 403, 403]),
    ];
    for (method, path, body, expected) in &table {
        for (who, want) in [
            (Who::Admin, expected[0]),
            (Who::Owner, expected[1]),
            (Who::Other, expected[2]),
            (Who::Nobody, 401),
            (Who::Garbage, 401),
        ] {
            let got = call(&app, who, &keys, method, path, body(who)).await;
            assert_eq!(got, want, "{method} {path} as {who:?}");
        }
    }
    for who in [Who::Admin, Who::Owner, Who::Other, Who::Nobody] {
        let id = unique();
        let want = match who {
            Who::Admin => 201,
            Who::Nobody => 401,
            _ => 403,
        };
        let got = call(
            &app,
            who,
            &keys,
            "POST",
            "/v1/placements",
            Some(json!({"id": format!("p{id}"), "name": "p", "format": "compact"})),
        )
        .await;
        assert_eq!(got, want, "POST /v1/placements as {who:?}");
        let got = call(
            &app,
            who,
            &keys,
            "POST",
            "/v1/promo-codes",
            Some(json!({"code": format!("CODE{id}"), "amount_micros": 5})),
        )
        .await;
        assert_eq!(got, want, "POST /v1/promo-codes as {who:?}");
        let import_want = if let Who::Admin = who { 200 } else { want };
        let got = call(&app, who, &keys, "POST", "/v1/events", None).await;
        assert_eq!(got, import_want, "POST /v1/events as {who:?}");
    }
    // State-changing calls on someone else's things, and without a key.
    let (_, key_list) = app.get(&owner.key, &format!("/v1/advertisers/{a}/keys")).await;
    let key_id = key_list["items"][0]["id"].as_i64().expect("key id");
    let mut foreign = vec![format!("/v1/keys/{key_id}/revoke")];
    foreign.extend(
        ["submit", "pause", "resume", "archive", "restore"].map(|action| format!("/v1/campaigns/{c}/{action}")),
    );
    for path in &foreign {
        assert_eq!(call(&app, Who::Other, &keys, "POST", path, None).await, 404, "POST {path} as Other");
        assert_eq!(call(&app, Who::Nobody, &keys, "POST", path, None).await, 401, "POST {path} as Nobody");
        assert_eq!(call(&app, Who::Garbage, &keys, "POST", path, None).await, 401, "POST {path} as Garbage");
    }
    assert_eq!(
        call(&app, Who::Admin, &keys, "POST", "/v1/promo-codes/redeem", Some(json!({"code": "CODE1"}))).await,
        400
    );
    assert_eq!(
        call(&app, Who::Nobody, &keys, "POST", "/v1/promo-codes/redeem", Some(json!({"code": "CODE1"}))).await,
        401
    );
    assert_eq!(
        call(&app, Who::Owner, &keys, "POST", "/v1/promo-codes/redeem", Some(json!({"code": "CODE1"}))).await,
        201
    );
    // Public endpoints need no key.
    assert_eq!(call(&app, Who::Nobody, &keys, "GET", "/healthz", None).await, 200);
    assert_eq!(call(&app, Who::Nobody, &keys, "GET", "/openapi.json", None).await, 200);
    assert_eq!(
        call(&app, Who::Nobody, &keys, "GET", &format!("/t/conv?advertiser={a}&uid=u1&value_micros=5"), None).await,
        200
    );

    // Ids that do not exist look exactly like ids of others.
    assert_eq!(call(&app, Who::Other, &keys, "GET", "/v1/campaigns/999999", None).await, 404);
    assert_eq!(call(&app, Who::Other, &keys, "GET", "/v1/ads/999999", None).await, 404);
}

#[tokio::test]
async fn campaigns_move_only_along_the_lifecycle() {
    let app = spawn_app().await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let act = |action: &'static str| {
        let app = &app;
        let key = f.key.clone();
        let id = f.campaign_id;
        async move { app.post(&key, &format!("/v1/campaigns/{id}/{action}"), json!({})).await }
    };
    // active → submit/resume/restore refused with the current status in the error.
    for refused in ["submit", "resume", "restore"] {
        let (s, e) = act(refused).await;
        assert_eq!((s, e["error"]["code"].as_str()), (409, Some("invalid_transition")), "{refused}");
        assert!(e["error"]["message"].as_str().unwrap_or("").contains("active"), "{e}");
    }
    let steps = [
        ("pause", "paused"),
        ("pause", ""),
        ("resume", "active"),
        ("archive", "archived"),
        ("archive", ""),
        ("restore", "paused"),
        ("resume", "active"),
    ];
    for (action, to) in steps {
        let (s, c) = act(action).await;
        if to.is_empty() {
            assert_eq!(s, 409, "{action} twice");
        } else {
            assert_eq!((s, c["status"].as_str()), (200, Some(to)), "{action}");
        }
    }
    let (s, e) = act("fly").await;
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("not_found")));

    // A clone is a draft with copies of the ads, waiting for review.
    let (s, copy) = act("clone").await;
    assert_eq!(s, 201);
    assert_eq!((copy["status"].as_str(), copy["name"].as_str()), (Some("draft"), Some("Spring (copy)")));
    let copy_id = copy["id"].as_i64().expect("id");
    let (_, ads) = app.get(&f.key, &format!("/v1/ads?campaign_id={copy_id}")).await;
    assert_eq!(ads["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(ads["items"][0]["status"], "pending_review");
    // A draft can be archived, a campaign waiting for review cannot.
    let (s, _) = app.post(&f.key, &format!("/v1/campaigns/{copy_id}/submit"), json!({})).await;
    assert_eq!(s, 200);
    let (s, _) = app.post(&f.key, &format!("/v1/campaigns/{copy_id}/archive"), json!({})).await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn moderation_round_trip() {
    let app = spawn_app().await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let (_, ad) = app
        .post(
            &f.key,
            &format!("/v1/campaigns/{}/ads", f.campaign_id),
            json!({"format": "sidebar", "headline": "Best jobs!!!", "target_url": "https://a.example"}),
        )
        .await;
    let id = ad["id"].as_i64().expect("id");
    let (s, _) = app.post(ADMIN, &format!("/v1/ads/{id}/review"), json!({"decision": "reject"})).await;
    assert_eq!(s, 400, "a rejection needs a reason");
    let (_, r) = app
        .post(
            ADMIN,
            &format!("/v1/ads/{id}/review"),
            json!({"decision": "reject", "reason": "No shouting in headlines"}),
        )
        .await;
    assert_eq!(r["status"], "rejected");
    let (_, seen) = app.get(&f.key, &format!("/v1/ads/{id}")).await;
    assert_eq!(seen["rejection_reason"], "No shouting in headlines");
    let (_, queue) = app.get(ADMIN, "/v1/ads?status=pending_review").await;
    assert_eq!(queue["items"].as_array().map(Vec::len), Some(0));
    let r = app
        .client
        .patch(app.url(&format!("/v1/ads/{id}")))
        .bearer_auth(&f.key)
        .json(&json!({"headline": "Good jobs"}))
        .send()
        .await
        .expect("patch");
    let fixed: Value = r.json().await.expect("json");
    assert_eq!((fixed["status"].as_str(), fixed["rejection_reason"].as_str()), (Some("pending_review"), None));
    let (_, queue) = app.get(ADMIN, "/v1/ads?status=pending_review").await;
    assert_eq!(queue["items"][0]["id"], id);
    // Editing an approved ad puts the edit in review; the approved version keeps serving
    // (the full story is in trust::clicks_go_to_the_reviewed_version_that_was_served).
    let r = app
        .client
        .patch(app.url(&format!("/v1/ads/{}", f.ad_id)))
        .bearer_auth(&f.key)
        .json(&json!({"body": "new"}))
        .send()
        .await
        .expect("patch");
    let edited: Value = r.json().await.expect("json");
    assert_eq!(
        (edited["status"].as_str(), edited["revision"]["status"].as_str()),
        (Some("approved"), Some("pending_review"))
    );
    let r = app
        .client
        .get(app.url("/v1/decision?placement=sidebar-main"))
        .header("user-agent", BROWSER)
        .send()
        .await
        .expect("decision");
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn fifty_clients_racing_for_a_single_use_promo_code_get_one_credit() {
    let app = spawn_app().await;
    let (s, _) = app
        .post(ADMIN, "/v1/promo-codes", json!({"code": "LAUNCH", "amount_micros": 25_000_000, "max_redemptions": 1}))
        .await;
    assert_eq!(s, 201);
    let mut keys = Vec::new();
    for i in 0..50 {
        let (_, a) = app.post(ADMIN, "/v1/advertisers", json!({"name": format!("a{i}"), "email": "a@a.example"})).await;
        let (_, k) = app.post(ADMIN, &format!("/v1/advertisers/{}/keys", a["id"]), json!({})).await;
        keys.push(k["api_key"].as_str().expect("key").to_owned());
    }
    let mut tasks = Vec::new();
    for key in keys.clone() {
        let (client, url) = (app.client.clone(), app.url("/v1/promo-codes/redeem"));
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).bearer_auth(key).json(&json!({"code": "LAUNCH"})).send().await.expect("redeem");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json"))
        }));
    }
    let mut won = 0;
    for t in tasks {
        let (status, body) = t.await.expect("task");
        match status {
            201 => won += 1,
            409 => assert_eq!(body["error"]["code"], "promo_exhausted"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(won, 1);
    let mut credited = 0;
    for key in &keys {
        credited += app.get(key, "/v1/me").await.1["balance_micros"].as_i64().expect("balance");
    }
    assert_eq!(credited, 25_000_000);

    // Expired, unknown, and twice by the same advertiser.
    app.post(
        ADMIN,
        "/v1/promo-codes",
        json!({"code": "OLD", "amount_micros": 1, "expires_at": "2020-01-01T00:00:00Z"}),
    )
    .await;
    app.post(ADMIN, "/v1/promo-codes", json!({"code": "MANY", "amount_micros": 1, "max_redemptions": 10})).await;
    let (s, e) = app.post(&keys[0], "/v1/promo-codes/redeem", json!({"code": "OLD"})).await;
    assert_eq!((s, e["error"]["code"].as_str()), (409, Some("promo_expired")));
    let (s, e) = app.post(&keys[0], "/v1/promo-codes/redeem", json!({"code": "NOPE"})).await;
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("promo_not_found")));
    assert_eq!(app.post(&keys[0], "/v1/promo-codes/redeem", json!({"code": "MANY"})).await.0, 201);
    let (s, e) = app.post(&keys[0], "/v1/promo-codes/redeem", json!({"code": "MANY"})).await;
    assert_eq!((s, e["error"]["code"].as_str()), (409, Some("promo_already_redeemed")));
}

#[tokio::test]
async fn keys_can_be_listed_and_revoked_and_changes_are_audited() {
    let app = spawn_app().await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let (_, second) = app.post(ADMIN, &format!("/v1/advertisers/{}/keys", f.advertiser_id), json!({})).await;
    let second_key = second["api_key"].as_str().expect("key").to_owned();
    assert_eq!(app.get(&second_key, "/v1/me").await.0, 200);
    let (_, keys) = app.get(&f.key, &format!("/v1/advertisers/{}/keys", f.advertiser_id)).await;
    let listed = keys["items"].as_array().expect("items");
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|k| k.get("api_key").is_none()), "keys are never shown again");
    assert!(listed[0]["last_used_at"].is_string());
    let (s, _) = app.post(&f.key, &format!("/v1/keys/{}/revoke", second["id"]), json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(app.get(&second_key, "/v1/me").await.0, 401);
    assert_eq!(app.get(&f.key, "/v1/me").await.0, 200);

    let (_, log) = app.get(ADMIN, "/v1/audit").await;
    let actions: Vec<&str> =
        log["items"].as_array().expect("items").iter().filter_map(|e| e["action"].as_str()).collect();
    for expected in [
        "key.revoke",
        "ad.review",
        "campaign.submit",
        "ad.create",
        "campaign.create",
        "credit.add",
        "key.create",
        "advertiser.create",
        "placement.create",
    ] {
        assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
    }
    assert_eq!(log["items"][0]["actor"], format!("advertiser:{}", f.advertiser_id));
}

#[tokio::test]
async fn large_top_ups_earn_the_configured_bonus() {
    let config = adtally_server::ServerConfig {
        topup_bonus: adtally_server::state::TopupBonus::parse("10%@100000000"),
        ..adtally_server::ServerConfig::default()
    };
    let app = spawn_app_with(config).await;
    let (_, a) = app.post(ADMIN, "/v1/advertisers", json!({"name": "Big", "email": "b@b.example"})).await;
    let id = a["id"].as_i64().expect("id");
    let (_, small) = app
        .post(ADMIN, &format!("/v1/advertisers/{id}/credits"), json!({"amount_micros": 99_999_999, "kind": "topup"}))
        .await;
    assert!(small.get("bonus").is_none());
    let (_, big) = app
        .post(ADMIN, &format!("/v1/advertisers/{id}/credits"), json!({"amount_micros": 200_000_000, "kind": "topup"}))
        .await;
    assert_eq!(big["bonus"]["amount_micros"], 20_000_000);
    assert_eq!(big["balance_micros"], 99_999_999 + 200_000_000 + 20_000_000);
    let (_, ledger) = app.get(ADMIN, &format!("/v1/ledger?advertiser_id={id}")).await;
    let kinds: Vec<&str> =
        ledger["items"].as_array().expect("items").iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["topup", "topup", "bonus"]);
}
