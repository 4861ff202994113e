//! The `adtally` command: serve, demo, import, report and loadgen over the library
//! crates. Every flag also reads an `ADTALLY_*` environment variable.

mod demo;
mod loadgen;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use adtally_core::clock::{parse_duration, Clock, SystemClock};
use adtally_core::counting::CountingConfig;
use adtally_server::client::ClientIpHeader;
use adtally_server::limits::Limits;
use adtally_server::state::parse_cidr;
use adtally_server::{Application, Options, ServerConfig};
use adtally_store::{SqliteStore, Store};

#[derive(Parser)]
#[command(name = "adtally", version, about = "Self-hosted ad server: decide, count honestly, bill by CPM, report.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct StoreArgs {
    /// Data directory of the embedded SQLite store.
    #[arg(long, env = "ADTALLY_DATA", default_value = "./adtally-data")]
    data: PathBuf,
    /// PostgreSQL URL (`postgres://user:password@host:port/db`) instead of the embedded
    /// store: several nodes may share it. The data directory still holds this node's
    /// beacon journal.
    #[arg(long, env = "ADTALLY_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// This node's name on a shared database (default: host name and data directory).
    /// A restarted node must keep its name: its journal position is kept under it.
    #[arg(long, env = "ADTALLY_NODE_NAME")]
    node_name: Option<String>,
    /// Token signing key; generated and kept in the data dir when absent. It also keys
    /// the hashes of user ids and addresses, so `import`, `demo` and `report` need the
    /// one `serve` uses: imported users would otherwise never match live ones.
    #[arg(long, env = "ADTALLY_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on.
    #[arg(long, env = "ADTALLY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Admin API key; generated on first start and printed once when absent.
    #[arg(long, env = "ADTALLY_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Proxy whose forwarding header is trusted (CIDR, repeatable). Default: loopback.
    #[arg(long = "trusted-proxy", env = "ADTALLY_TRUSTED_PROXY", value_delimiter = ',')]
    trusted_proxies: Vec<String>,
    /// The header the trusted proxy sets to the client address: x-forwarded-for or
    /// forwarded. The other one is ignored (the client could have sent it).
    #[arg(long, env = "ADTALLY_CLIENT_IP_HEADER", default_value = "x-forwarded-for")]
    client_ip_header: String,
    /// Same user, same ad: clicks closer than this are duplicates.
    #[arg(long, env = "ADTALLY_CLICK_DEDUP_WINDOW", default_value = "30s")]
    click_dedup_window: String,
    /// How long tracking URLs stay valid.
    #[arg(long, env = "ADTALLY_TOKEN_TTL", default_value = "24h")]
    token_ttl: String,
    /// Counted clicks per user or address per hour before `excessive_activity`.
    #[arg(long, env = "ADTALLY_MAX_CLICKS_PER_HOUR", default_value_t = 10)]
    max_clicks_per_hour: u32,
    /// Base URL for tracking links (default: from the request's Host header).
    #[arg(long, env = "ADTALLY_PUBLIC_URL")]
    public_url: Option<String>,
    /// Bonus on large top-ups, as PERCENT%@MIN_MICROS (e.g. 10%@100000000).
    #[arg(long, env = "ADTALLY_TOPUP_BONUS")]
    topup_bonus: Option<String>,
    /// Open connections at most; more are closed as soon as they are accepted.
    #[arg(long, env = "ADTALLY_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// A client must send a request's complete header within this.
    #[arg(long, env = "ADTALLY_HEADER_READ_TIMEOUT", default_value = "10s")]
    header_read_timeout: String,
    /// A request, body included, must be answered within this (else 408).
    #[arg(long, env = "ADTALLY_REQUEST_TIMEOUT", default_value = "60s")]
    request_timeout: String,
    /// After SIGTERM/Ctrl-C, how long in-flight requests get to finish.
    #[arg(long, env = "ADTALLY_SHUTDOWN_TIMEOUT", default_value = "30s")]
    shutdown_timeout: String,
    /// Failed authentications per client address per minute before it gets 429.
    #[arg(long, env = "ADTALLY_MAX_AUTH_FAILURES", default_value_t = 20)]
    max_auth_failures: u32,
    /// Skip the bot, prefetch and data-centre checks (only to benchmark their cost).
    #[arg(long, hide = true)]
    skip_traffic_filters: bool,
    /// Rows a report may have; larger reports are refused with `report_too_large`.
    #[arg(long, env = "ADTALLY_MAX_REPORT_ROWS", default_value_t = adtally_server::state::MAX_REPORT_ROWS)]
    max_report_rows: usize,
    /// Answer reports from the quarter-hour rollups only (only to benchmark the day layer).
    #[arg(long, hide = true)]
    reports_from_quarter_hours: bool,
    /// With --database: what a node leases of a campaign's budget at least (micros).
    #[arg(long = "lease-slice", env = "ADTALLY_LEASE_SLICE", default_value_t = adtally_server::cluster::DEFAULT_LEASE_SLICE_MICROS)]
    lease_slice_micros: i64,
    /// Fill an empty data dir with the demo first.
    #[arg(long, env = "ADTALLY_DEMO")]
    demo: bool,
    /// Delete raw events older than this many days (at least 35); rollups and so
    /// reports keep them. Default: keep everything.
    #[arg(long, env = "ADTALLY_RETENTION_DAYS")]
    retention_days: Option<u32>,
    /// SMTP server for weekly email reports: smtp://[user:pass@]host[:port][?from=ADDR], smtps://… for TLS.
    #[arg(long, env = "ADTALLY_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// Flush every beacon's journal record to disk before answering: survives power loss,
    /// not only a crash of the process, at the cost of one disk flush per beacon.
    #[arg(long, env = "ADTALLY_FSYNC")]
    fsync: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ad server.
    Serve(Box<ServeArgs>),
    /// Create the demo data set (advertisers, campaigns, 30 days of traffic).
    Demo {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Import historical events (NDJSON) through the same filters as live traffic.
    /// Refuses to run while a server uses the data dir (use POST /v1/events then).
    Import {
        #[command(flatten)]
        store: StoreArgs,
        file: PathBuf,
    },
    /// Copy the store to FILE while the server runs (SQLite online backup). Restore:
    /// stop the server, put FILE in an empty data dir as adtally.db.
    Backup {
        /// Data directory of the embedded SQLite store.
        #[arg(long, env = "ADTALLY_DATA", default_value = "./adtally-data")]
        data: PathBuf,
        /// Where to write the copy (must not exist).
        #[arg(long, env = "ADTALLY_BACKUP_OUT")]
        out: PathBuf,
    },
    /// Print a report (total, last 30 days, per campaign) as CSV.
    Report {
        #[command(flatten)]
        store: StoreArgs,
        /// Advertiser id (default: all, in UTC).
        #[arg(long)]
        advertiser: Option<i64>,
        #[arg(long, default_value = "last_30_days")]
        range: String,
        #[arg(long, default_value = "campaign")]
        group_by: String,
        #[arg(long, default_value = "total")]
        granularity: String,
        /// Print the advertiser's weekly email report instead (needs --advertiser and --dry-run).
        #[arg(long)]
        email: bool,
        /// With --email: print the message, send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Generate decision and beacon load against a running server.
    Loadgen(loadgen::LoadgenArgs),
    /// A bare HTTP server answering 204: the baseline for tracking benchmarks.
    #[command(hide = true)]
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
    },
}

/// Opens an existing embedded store for a command that only makes sense on one (`import`,
/// `report`): a mistyped `--data` is an error, not a new empty store and an empty report.
fn open_existing_store(args: &StoreArgs) -> Result<Arc<dyn Store>> {
    if args.database.is_none() && !args.data.join("adtally.db").is_file() {
        bail!("no adtally store in {}: check --data (serve or demo creates one)", args.data.display());
    }
    open_store(args, false)
}

/// Opens the store the arguments name; `fsync` (`serve --fsync`) makes the embedded
/// store flush every commit, as the journal flushes every beacon.
fn open_store(args: &StoreArgs, fsync: bool) -> Result<Arc<dyn Store>> {
    if let Some(url) = &args.database {
        let scheme = url.split(':').next().unwrap_or("");
        if scheme != "postgres" && scheme != "postgresql" {
            bail!("--database {scheme}:… is not supported: give a postgres:// URL, or omit it for the embedded store");
        }
        let name = match &args.node_name {
            Some(name) => name.clone(),
            None => {
                std::fs::create_dir_all(&args.data).with_context(|| format!("creating {}", args.data.display()))?;
                let dir = std::fs::canonicalize(&args.data).unwrap_or_else(|_| args.data.clone());
                let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
                format!("{}:{}", host.trim(), dir.display())
            }
        };
        // The journal still lives in the data directory: one process per directory.
        std::fs::create_dir_all(&args.data).with_context(|| format!("creating {}", args.data.display()))?;
        let lock = adtally_store::DataDirLock::acquire(&args.data)?;
        let store = adtally_store::PgStore::connect(url, &name).context("connecting to PostgreSQL")?;
        return Ok(Arc::new(store.holding(lock)));
    }
    let store = if fsync { SqliteStore::open_power_loss_durable(&args.data) } else { SqliteStore::open(&args.data) };
    let store = store.with_context(|| format!("opening the store in {}", args.data.display()))?;
    Ok(Arc::new(store))
}

fn server_config(args: &ServeArgs) -> Result<ServerConfig> {
    let mut config = ServerConfig::default();
    let duration = |flag: &str, text: &str| parse_duration(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"));
    config.counting = CountingConfig {
        token_ttl_ms: duration("token-ttl", &args.token_ttl)?,
        click_dedup_window_ms: duration("click-dedup-window", &args.click_dedup_window)?,
        max_clicks_per_hour: args.max_clicks_per_hour,
        ..CountingConfig::default()
    };
    if !args.trusted_proxies.is_empty() {
        config.trusted_proxies = args
            .trusted_proxies
            .iter()
            .map(|c| parse_cidr(c.trim()).with_context(|| format!("--trusted-proxy {c:?} is not an address or CIDR")))
            .collect::<Result<_>>()?;
    }
    config.client_ip_header = ClientIpHeader::parse(&args.client_ip_header)
        .context("--client-ip-header must be x-forwarded-for or forwarded")?;
    config.public_url = args.public_url.clone();
    let timeout = |flag: &str, text: &str| -> Result<std::time::Duration> {
        let ms = duration(flag, text)?;
        anyhow::ensure!(ms > 0, "--{flag} must be positive");
        Ok(std::time::Duration::from_millis(ms as u64))
    };
    config.limits = Limits {
        max_connections: args.max_connections.max(1),
        header_read_timeout: timeout("header-read-timeout", &args.header_read_timeout)?,
        request_timeout: timeout("request-timeout", &args.request_timeout)?,
        max_auth_failures: args.max_auth_failures.max(1),
        shutdown_timeout: timeout("shutdown-timeout", &args.shutdown_timeout)?,
    };
    config.traffic_filters = !args.skip_traffic_filters;
    config.journal = Some(journal_config(&args.store.data, args.fsync));
    config.max_report_rows = args.max_report_rows.max(1);
    config.reports_from_quarter_hours = args.reports_from_quarter_hours;
    config.lease_slice_micros = args.lease_slice_micros.max(1);
    if let Some(days) = args.retention_days {
        anyhow::ensure!(
            days >= adtally_server::state::MIN_RETENTION_DAYS,
            "--retention-days must be at least {}",
            adtally_server::state::MIN_RETENTION_DAYS
        );
        config.retention_days = Some(days);
    }
    if let Some(url) = &args.smtp_url {
        adtally_server::mailer::transport(url).map_err(|e| anyhow::anyhow!("{e}"))?;
        // Every report carries a one-click unsubscribe link; without the address
        // recipients reach, it would point at this machine's loopback.
        anyhow::ensure!(
            config.public_url.is_some(),
            "--smtp-url needs --public-url (the address recipients open the dashboard and unsubscribe links at)"
        );
        config.smtp_url = Some(url.clone());
    }
    config.topup_bonus = args
        .topup_bonus
        .as_deref()
        .map(|t| adtally_server::state::TopupBonus::parse(t).context("--topup-bonus must look like 10%@100000000"))
        .transpose()?;
    Ok(config)
}

fn options(args: &ServeArgs) -> Result<Options> {
    Ok(Options {
        config: server_config(args)?,
        secret: args.store.secret.clone(),
        admin_key: args.admin_key.clone(),
        clock: Arc::new(SystemClock),
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn is_empty_store(store: &dyn Store) -> Result<bool> {
    Ok(store.advertisers()?.is_empty() && store.placements()?.is_empty())
}

async fn serve(args: ServeArgs) -> Result<()> {
    let store = open_store(&args.store, args.fsync)?;
    if args.demo && is_empty_store(store.as_ref())? {
        demo::create(store.clone(), &args.store).await?;
    }
    let app = Application::build(args.listen, store, options(&args)?).await?;
    if let Some(key) = &app.generated_admin_key {
        println!("adtally: generated the admin key (shown once, stored hashed): {key}");
    }
    let addr = app.local_addr()?;
    println!("adtally: listening on http://{addr} (data in {})", args.store.data.display());
    tracing::info!(%addr, "listening");
    app.run_until(shutdown_signal()).await?;
    Ok(())
}

async fn import(store: Arc<dyn Store>, args: &StoreArgs, file: &Path) -> Result<()> {
    use adtally_server::import::{import_ndjson_from, ImportSummary, MAX_LINES};
    let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let (state, _) = adtally_server::build_state(store, offline_options(args))?;
    let mut total = ImportSummary::default();
    // One request of the HTTP endpoint takes at most MAX_LINES; a file may be longer.
    let (mut start, mut first_line) = (0, 1);
    while start < body.len() {
        let end = body[start..]
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(MAX_LINES - 1)
            .map_or(body.len(), |(i, _)| start + i + 1);
        let part =
            import_ndjson_from(&state, &body[start..end], first_line).await.map_err(|e| anyhow::anyhow!(e.message))?;
        total.absorb(part);
        first_line += MAX_LINES;
        start = end;
    }
    println!("{}", total.to_json());
    Ok(())
}

/// The beacon journal of a data directory.
fn journal_config(data: &Path, fsync: bool) -> adtally_server::pipeline::JournalConfig {
    adtally_server::pipeline::JournalConfig { dir: data.join("journal"), fsync }
}

/// Options for commands that use the server's state in-process without serving HTTP.
/// They must not create the admin key (only `serve` does, and prints it), so they get
/// a throwaway one that nothing can reach. They open the data directory's journal, so
/// beacons a crashed server acknowledged are committed before anything else happens.
fn offline_options(store: &StoreArgs) -> Options {
    let throwaway = format!("offline-{}-{}", std::process::id(), SystemClock.now_ms());
    let config = ServerConfig { journal: Some(journal_config(&store.data, false)), ..ServerConfig::default() };
    Options { config, secret: store.secret.clone(), admin_key: Some(throwaway), clock: Arc::new(SystemClock) }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ADTALLY_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(*args).await,
        Command::Demo { store } => {
            let s = open_store(&store, false)?;
            if !is_empty_store(s.as_ref())? {
                bail!("{} already holds data; the demo only fills an empty data dir", store.data.display());
            }
            demo::create(s, &store).await
        }
        Command::Import { store, file } => import(open_existing_store(&store)?, &store, &file).await,
        Command::Backup { data, out } => {
            let summary = tokio::task::spawn_blocking(move || SqliteStore::backup(&data, &out))
                .await?
                .context("backing up the store")?;
            println!("{}", serde_json::json!({"events": summary.events, "bytes": summary.bytes}));
            Ok(())
        }
        Command::Loadgen(args) => loadgen::run(args).await,
        Command::BaselineServer { listen } => loadgen::baseline_server(listen).await,
        Command::Report { store, advertiser, email: true, dry_run, .. } => {
            let advertiser = advertiser.context("--email needs --advertiser ID")?;
            if !dry_run {
                bail!("the server sends weekly reports on schedule (--smtp-url); use --dry-run to print one");
            }
            let (state, _) = adtally_server::build_state(open_existing_store(&store)?, offline_options(&store))?;
            let text =
                tokio::task::spawn_blocking(move || adtally_server::mailer::preview(&state, advertiser)).await??;
            print!("{text}");
            Ok(())
        }
        Command::Report { store, advertiser, range, group_by, granularity, .. } => {
            demo::print_report(open_existing_store(&store)?, &store, advertiser, &range, &group_by, &granularity).await
        }
    }
}
