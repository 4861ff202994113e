//! Weekly email reports through a real SMTP conversation with a sink started by the test:
//! the message's figures, its unsubscribe headers, and the sent-mail log that keeps a
//! restart from sending the same report twice.

use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use adtally_core::clock::{ManualClock, DAY, HOUR, MINUTE};
use adtally_server::ServerConfig;

use crate::attribution::{import, line, second_campaign};
use crate::support::*;

/// Monday 2026-11-23 08:05 UTC.
const MONDAY_0805: i64 = 1_795_392_000_000 + 8 * HOUR + 5 * MINUTE;

/// A minimal SMTP server: accepts everything and keeps each message's DATA.
async fn smtp_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    smtp_sink_refusing("\0").await
}

/// [`smtp_sink`], but a recipient whose address contains `refused` gets a 550 (no such
/// user: a refusal for good).
async fn smtp_sink_refusing(refused: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let kept = messages.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let (mut in_data, mut data) = (false, String::new());
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            kept.lock().expect("lock").push(std::mem::take(&mut data));
                            let _ = write.write_all(b"250 queued\r\n").await;
                        } else {
                            data.push_str(line.strip_prefix('.').unwrap_or(&line));
                            data.push('\n');
                        }
                        continue;
                    }
                    let verb = line.to_ascii_uppercase();
                    let answer: &[u8] = if verb.starts_with("RCPT") && line.contains(refused) {
                        b"550 no such user\r\n"
                    } else if verb.starts_with("EHLO") {
                        b"250-sink\r\n250 8BITMIME\r\n"
                    } else if verb.starts_with("DATA") {
                        in_data = true;
                        b"354 go ahead\r\n"
                    } else if verb.starts_with("QUIT") {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = write.write_all(answer).await;
                }
            });
        }
    });
    (port, messages)
}

/// The decoded base64 body of the part with this content type.
fn part(message: &str, content_type: &str) -> String {
    let start = message.find(&format!("Content-Type: {content_type}")).expect("part");
    let rest = &message[start..];
    let body_start = rest.find("\n\n").expect("part body") + 2;
    let body: String = rest[body_start..].lines().take_while(|l| !l.starts_with("--")).collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(body.trim()).expect("base64");
    String::from_utf8(bytes).expect("utf-8")
}

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn send_due(app: &TestApp, url: &str) -> usize {
    let (state, url) = (app.state.clone(), url.to_owned());
    tokio::task::spawn_blocking(move || adtally_server::mailer::send_due(&state, &url))
        .await
        .expect("join")
        .expect("send_due")
}

#[tokio::test]
async fn the_weekly_report_goes_out_once_with_its_figures() {
    let (port, messages) = smtp_sink().await;
    let smtp_url = format!("smtp://127.0.0.1:{port}?from=reports@adtally.example");
    let config = ServerConfig {
        smtp_url: Some(smtp_url.clone()),
        public_url: Some("https://ads.example".into()),
        ..ServerConfig::default()
    };
    let dir = Arc::new(tempfile::tempdir().expect("dir"));
    let clock = Arc::new(ManualClock::new(MONDAY_0805));
    let app = spawn_app_in(dir.clone(), config.clone(), clock.clone()).await;
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let (c2, a2) = second_campaign(&app, &a.key).await;

    // Last week (Mon 16 – Sun 22): ad 1 200 impressions and 6 clicks, ad 2 200 and 2,
    // two conversions of 3.00. The week before: ad 1 100 impressions, 1 click.
    let week = MONDAY_0805 - 8 * HOUR - 5 * MINUTE - 7 * DAY;
    let mut lines = Vec::new();
    for (tag, campaign, ad, start, impressions, clicks) in [
        ("w1", a.campaign_id, a.ad_id, week, 200, 6),
        ("w2", c2, a2, week, 200, 2),
        ("p1", a.campaign_id, a.ad_id, week - 7 * DAY, 100, 1),
    ] {
        for i in 0..impressions {
            let (at, uid) = (start + i * 10 * MINUTE, format!("{tag}-{i}"));
            lines.push(line(&format!("{uid}-i"), "impression", at, campaign, ad, &uid));
            if i < clicks {
                lines.push(line(&format!("{uid}-c"), "click", at + MINUTE, campaign, ad, &uid));
            }
        }
    }
    for (i, uid) in ["w1-0", "w1-1"].iter().enumerate() {
        lines.push(
            json!({"event_id": format!("conv-{i}"), "type": "conversion", "at": crate::attribution::at(week + DAY),
                   "advertiser_id": a.advertiser_id, "uid": uid, "value_micros": 3_000_000, "order_id": format!("o-{i}")})
            .to_string(),
        );
    }
    import(&app, &lines).await;

    assert_eq!(send_due(&app, &smtp_url).await, 1);
    assert_eq!(send_due(&app, &smtp_url).await, 0, "claimed in the sent-mail log");
    let sent = messages.lock().expect("lock").clone();
    assert_eq!(sent.len(), 1);
    let m = &sent[0];
    assert!(m.contains("From: reports@adtally.example"), "{m}");
    assert!(m.contains("To: a@acme.example"));
    assert!(m.contains("Subject: Your week on adtally: 2026-11-16 to 2026-11-22"));
    let token = adtally_server::mailer::unsubscribe_token(&app.state, a.advertiser_id);
    let unsubscribe = format!("https://ads.example/v1/unsubscribe?token={token}");
    assert!(m.contains(&format!("List-Unsubscribe: <{unsubscribe}>")), "{m}");
    assert!(m.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));

    // Spend: 200 × 2 000 + 200 × 1 000 micros = 0.60 against 100 × 2 000 = 0.20.
    let text = squeeze(&part(m, "text/plain"));
    for row in [
        "Impressions 400 100 +300.0%",
        "Clicks 8 1 +700.0%",
        "CTR 2.00% 1.00% +100.0%",
        "Spend 0.60 0.20 +200.0%",
        "Conversions 2 0 new",
        "CPA 0.30 – new",
        "ROAS 10.00× 0.00× new",
    ] {
        assert!(text.contains(row), "{row:?} not in {text}");
    }
    assert!(text.contains(&format!("Best ads (by CTR): - Hello (ad {}): 200 impressions, 6 clicks, CTR 3.00% - Autumn (ad {a2}): 200 impressions, 2 clicks, CTR 1.00%", a.ad_id)), "{text}");
    assert!(text.contains(&format!("Unsubscribe: {unsubscribe}")));
    let html = part(m, "text/html");
    assert!(html.contains("<td>Spend</td><td>0.60</td><td>0.20</td><td>+200.0%</td>"), "{html}");

    // `adtally report --email --dry-run` prints the same report.
    let (state, id) = (app.state.clone(), a.advertiser_id);
    let preview = tokio::task::spawn_blocking(move || adtally_server::mailer::preview(&state, id))
        .await
        .expect("join")
        .expect("preview");
    assert!(preview.starts_with("To: a@acme.example\nSubject: Your week on adtally: 2026-11-16 to 2026-11-22\n"));
    assert!(squeeze(&preview).contains("Spend 0.60 0.20 +200.0%"), "{preview}");

    // A restart on the same data, still inside Monday's window: nothing is sent again.
    drop(app);
    clock.advance(HOUR);
    let app = spawn_app_in(dir, config, clock).await;
    assert_eq!(send_due(&app, &smtp_url).await, 0);
    assert_eq!(messages.lock().expect("lock").len(), 1);

    // Opting out: the one-click link (POST), the page behind it never changes anything.
    let r = app.client.get(unsubscribe.replace("https://ads.example", &app.base)).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 200);
    let (s, w) = app.get(&a.key, "/v1/weekly-report").await;
    assert_eq!((s, &w["enabled"]), (200, &json!(true)));
    let r = app.client.post(app.url(&format!("/v1/unsubscribe?token={token}"))).send().await.expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let (_, w) = app.get(&a.key, "/v1/weekly-report").await;
    assert_eq!(w["enabled"], false);
    let r = app.client.post(app.url(&format!("/v1/unsubscribe?token={}x", token))).send().await.expect("post");
    assert_eq!(r.status().as_u16(), 404);
    let r = app
        .client
        .put(app.url("/v1/weekly-report"))
        .bearer_auth(&a.key)
        .json(&json!({"enabled": true}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 200);
    let (_, w) = app.get(&a.key, "/v1/weekly-report").await;
    assert_eq!(w["enabled"], true);
}

/// A mail server that is down when reports fall due gets them on a later pass; one that
/// refuses an address for good is not asked again every minute.
#[tokio::test]
async fn a_report_the_mail_server_could_not_take_goes_out_on_a_later_pass() {
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("smtp://127.0.0.1:{}", listener.local_addr().expect("addr").port())
    };
    let config = ServerConfig {
        smtp_url: Some(down.clone()),
        public_url: Some("https://ads.example".into()),
        ..ServerConfig::default()
    };
    let clock = Arc::new(ManualClock::new(MONDAY_0805));
    let app = spawn_app_in(Arc::new(tempfile::tempdir().expect("dir")), config, clock).await;
    fixture(&app, "sidebar-main", 2_000_000).await;
    let b = fixture_for_existing_placement(&app, "UTC", 1_000_000, 1_000_000_000).await;
    let (s, _) =
        app.patch(ADMIN, &format!("/v1/advertisers/{}", b.advertiser_id), json!({"email": "b@gone.example"})).await;
    assert_eq!(s, 200);

    assert_eq!(send_due(&app, &down).await, 0, "nothing listens");
    let (port, messages) = smtp_sink_refusing("gone.example").await;
    let up = format!("smtp://127.0.0.1:{port}");
    assert_eq!(send_due(&app, &up).await, 1, "a@acme.example's report, released after the failed pass");
    assert_eq!(send_due(&app, &up).await, 0, "b@gone.example was refused for good: not retried");
    let sent = messages.lock().expect("lock").clone();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].contains("To: a@acme.example"), "{}", sent[0]);
}
