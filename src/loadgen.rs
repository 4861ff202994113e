//! `adtally loadgen`: HTTP load against a running server, to measure the tracking
//! paths, and `adtally baseline-server`: a bare axum server answering 204, the
//! ceiling those paths are measured against in the same run.
//!
//! The load generator speaks HTTP/1.1 keep-alive over plain TCP (no client library in
//! the way) and mints its own tracking tokens when given the server's secret, so every
//! impression beacon belongs to a distinct decision, as in real traffic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use adtally_core::clock::{Clock, SystemClock};
use adtally_core::token::{TokenSigner, TrackingToken};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `GET /v1/decision` with a new uid each time.
    Decisions,
    /// Impression beacons, each for a distinct decision (needs --secret).
    Impressions,
    /// Click beacons (`/t/c/…`, answered by a redirect), each for a distinct decision
    /// (needs --secret).
    Clicks,
    /// Decision, then its impression and click beacons, as a page would.
    Journeys,
    /// `GET /t/i/x` against the baseline server.
    Bare,
}

#[derive(clap::Args, Debug)]
pub struct LoadgenArgs {
    /// Server address (host:port).
    #[arg(long, env = "ADTALLY_LOADGEN_TARGET", default_value = "127.0.0.1:8080")]
    target: SocketAddr,
    #[arg(long, value_enum, default_value = "impressions")]
    mode: Mode,
    #[arg(long, default_value = "sidebar-main")]
    placement: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// How long to run, e.g. 10s.
    #[arg(long, default_value = "10s")]
    duration: String,
    /// The server's token secret (ADTALLY_SECRET), to mint impression tokens.
    #[arg(long, env = "ADTALLY_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Distinct users to spread decisions over.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Print this many beacon URLs (impressions or clicks, each for a distinct decision,
    /// signed with --secret) instead of sending load: the input of another load tool
    /// (`oha --urls-from-file`, bench/run.sh).
    #[arg(long)]
    print_urls: Option<u64>,
}

/// Runs the load and prints one line of JSON with the figures.
pub async fn run(args: LoadgenArgs) -> Result<()> {
    let duration =
        Duration::from_millis(adtally_core::clock::parse_duration(&args.duration).map_err(anyhow::Error::msg)? as u64);
    let template = match args.mode {
        Mode::Impressions | Mode::Clicks => Some(token_template(&args).await?),
        _ => None,
    };
    let signer = args.secret.as_deref().map(|s| TokenSigner::new(s.as_bytes()));
    if let (Some(count), Some(signer), Some(t)) = (args.print_urls, &signer, template) {
        use std::io::Write as _;
        let beacon = if args.mode == Mode::Clicks { "c" } else { "i" };
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for n in 1..=count {
            let token = beacon_token(signer, &t, n);
            writeln!(out, "http://{}/t/{beacon}/{token}", args.target)?;
        }
        out.flush()?;
        return Ok(());
    }
    let args = Arc::new(args);
    let sequence = Arc::new(AtomicU64::new(1));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (args, sequence, signer) = (args.clone(), sequence.clone(), signer.clone());
        tasks
            .push(tokio::spawn(async move { connection(&args, &sequence, signer.as_ref(), template, deadline).await }));
    }
    let mut latencies: Vec<u32> = Vec::new();
    let mut errors = 0u64;
    for t in tasks {
        let (lat, errs) = t.await.context("load task")??;
        latencies.extend(lat);
        errors += errs;
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let secs = duration.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "mode": format!("{:?}", args.mode).to_lowercase(),
            "requests": latencies.len(),
            "errors": errors,
            "seconds": secs,
            "requests_per_second": (latencies.len() as f64 / secs).round(),
            "p50_us": pct(0.5),
            "p99_us": pct(0.99),
        })
    );
    Ok(())
}

/// Learns campaign, ad and placement ids from one real decision.
async fn token_template(args: &LoadgenArgs) -> Result<TrackingToken> {
    let Some(secret) = &args.secret else { bail!("--mode impressions needs --secret (the server's ADTALLY_SECRET)") };
    let mut conn = Conn::connect(args.target).await?;
    let (status, body) = conn.get(&format!("/v1/decision?placement={}&uid=loadgen", args.placement)).await?;
    if status != 200 {
        bail!("the first decision answered {status}; create an active campaign for {} first", args.placement);
    }
    let body: serde_json::Value = serde_json::from_slice(&body)?;
    let url = body["impression_url"].as_str().context("decision without impression_url")?;
    let token = url.rsplit('/').next().unwrap_or("");
    TokenSigner::new(secret.as_bytes())
        .verify(token)
        .map_err(|e| anyhow::anyhow!("the secret does not match the server's: {e}"))
}

/// The token of the `n`th distinct decision, like the template's.
fn beacon_token(signer: &TokenSigner, t: &TrackingToken, n: u64) -> String {
    signer.sign(&TrackingToken {
        decision_id: t.decision_id + n,
        issued_at_ms: SystemClock.now_ms(),
        user_key: n,
        ..*t
    })
}

async fn connection(
    args: &LoadgenArgs,
    sequence: &AtomicU64,
    signer: Option<&TokenSigner>,
    template: Option<TrackingToken>,
    deadline: Instant,
) -> Result<(Vec<u32>, u64)> {
    let mut conn = Conn::connect(args.target).await?;
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut errors = 0;
    while Instant::now() < deadline {
        let n = sequence.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let ok = match args.mode {
            Mode::Bare => conn.get("/t/i/x").await?.0 == 204,
            Mode::Decisions => {
                conn.get(&format!("/v1/decision?placement={}&uid=u{}", args.placement, n % args.users)).await?.0 == 200
            }
            Mode::Impressions => {
                let (Some(signer), Some(t)) = (signer, template) else { bail!("impressions need a token template") };
                conn.get(&format!("/t/i/{}", beacon_token(signer, &t, n))).await?.0 == 200
            }
            Mode::Clicks => {
                let (Some(signer), Some(t)) = (signer, template) else { bail!("clicks need a token template") };
                conn.get(&format!("/t/c/{}", beacon_token(signer, &t, n))).await?.0 == 302
            }
            Mode::Journeys => {
                let (status, body) =
                    conn.get(&format!("/v1/decision?placement={}&uid=u{}", args.placement, n % args.users)).await?;
                let decision: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let path = |key: &str| decision[key].as_str().and_then(|u| u.find("/t/").map(|i| u[i..].to_owned()));
                match (status, path("impression_url"), path("click_url")) {
                    (200, Some(imp), Some(click)) => {
                        let a = conn.get(&imp).await?.0 == 200;
                        let b = if n.is_multiple_of(50) { conn.get(&click).await?.0 == 302 } else { true };
                        a && b
                    }
                    _ => false,
                }
            }
        };
        latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
        if !ok {
            errors += 1;
        }
    }
    Ok((latencies, errors))
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    host: String,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, buf: Vec::with_capacity(8192), host: addr.to_string() })
    }

    async fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>)> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\r\n", self.host);
        self.stream.write_all(request.as_bytes()).await?;
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).context("response head")?;
                let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("status line")?;
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.split_once(':')
                            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .map(|(_, v)| v.trim())
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + length {
                    self.fill().await?;
                }
                let body = self.buf[end + 4..end + 4 + length].to_vec();
                self.buf.drain(..end + 4 + length);
                return Ok((status, body));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Serves `GET /t/i/{token}` with an empty 204 and nothing else: the ceiling.
pub async fn baseline_server(listen: SocketAddr) -> Result<()> {
    async fn empty() -> axum::http::StatusCode {
        axum::http::StatusCode::NO_CONTENT
    }
    /// A decision's answer as bytes fixed in advance (same size and headers as a real
    /// one): the HTTP cost of a decision with none of its work, the second baseline.
    async fn canned_decision() -> impl axum::response::IntoResponse {
        const BODY: &str = concat!(
            r#"{"request_id":"1882953869240041472","ad":{"id":20,"campaign_id":20,"format":"sidebar","#,
            r#""headline":"Bench","body":"","image_url":null,"video_url":null,"cta":"Learn more"},"#,
            r#""impression_url":"http://127.0.0.1:18180/t/i/AgAAgFiRmCEaiBWJGaIBAAABAAAAFAAAABQAAAABAAAAAQAAAFzccaAKypykAFpacCgSAAAAAAABZVlLVn_YzTLZJ5Wdg7CrLw","#,
            r#""viewable_url":"http://127.0.0.1:18180/t/v/AgAAgFiRmCEaiBWJGaIBAAABAAAAFAAAABQAAAABAAAAAQAAAFzccaAKypykAFpacCgSAAAAAAABZVlLVn_YzTLZJ5Wdg7CrLw","#,
            r#""click_url":"http://127.0.0.1:18180/t/c/AgAAgFiRmCEaiBWJGaIBAAABAAAAFAAAABQAAAABAAAAAQAAAFzccaAKypykAFpacCgSAAAAAAABZVlLVn_YzTLZJ5Wdg7CrLw"}"#
        );
        (
            [
                (axum::http::header::CONTENT_TYPE, "application/json"),
                (axum::http::header::CACHE_CONTROL, "no-store"),
                (axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            ],
            BODY,
        )
    }
    let app = axum::Router::new()
        .route("/t/i/{token}", axum::routing::get(empty))
        .route("/v1/decision", axum::routing::get(canned_decision));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("adtally: baseline listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
