//! The embedded store: one SQLite file in the data directory, in WAL mode.
//!
//! One connection belongs to the event writer; management calls and reports share a
//! small pool of others. SQLite serialises writers, so a management write waits (busy
//! timeout) for the writer's current batch rather than failing.
//!
//! This file holds the store itself: connections, the writer's batch append (events,
//! quarter hours and day layer in one transaction), the catalog and accounts. The
//! schema and its migrations are in [`schema`], the report reads in [`reads`], the spans
//! of days in `crate::spans`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row};

use adtally_core::attribution::{ConversionFact, PathTouch, TouchKind};
use adtally_core::catalog::{
    Ad, AdStamp, AdStatus, Advertiser, Campaign, CampaignStatus, CreditKind, Format, LedgerEntry, Placement,
};
use adtally_core::clock::Millis;
use adtally_core::event::{Country, Device, Event, EventKind, Verdict};
use adtally_core::fasthash::FastMap;
use adtally_core::metrics::saturate;
use adtally_core::report::bucket_of;
use adtally_core::sketch::Sketch;

use crate::columns::targeting_columns;
use crate::columns::{
    ad_from, advertiser_from, campaign_from, event_from, format_from, id_from_db, owner_from, session_from,
    ADVERTISER_COLUMNS, AD_SELECT, CAMPAIGN_COLUMNS, EVENT_COLUMNS, SESSION_SELECT,
};
use crate::rollup::{
    aggregate, aggregate_days, has_reach, is_utc_name, slot_column, slot_pairs, slots, utc_day, DayKey, DayTable,
    DayZone, Reach, ReachAs, RollupKey, RollupQuery, RollupRow, RollupSums, SLOTS,
};
use crate::spans;
pub(crate) mod reads;
pub(crate) mod schema;

use reads::*;
use schema::*;

use crate::{
    AdPerformance, ApiKeyInfo, ApprovedVersion, AuditEntry, CampaignSpend, ConsistencyCheck, CountedElsewhere,
    FoundSession, Idempotency, Judge, KeyOwner, PendingEvent, PromoCode, Result, Session, Store, StoreError, Totals,
    TouchPaths,
};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::SqliteFailure(f, ref msg) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                StoreError::Conflict(msg.clone().unwrap_or_else(|| "row".into()))
            }
            other => StoreError::Database(other.to_string()),
        }
    }
}

/// The upsert of one day-layer row, written once per table: the writer runs it for every
/// day row of every batch, and the statement cache is looked up by its text.
fn day_upsert(table: DayTable) -> &'static str {
    static SQL: PerTable = std::sync::OnceLock::new();
    per_table(&SQL, table, day_upsert_sql)
}

/// The upsert of one day-layer row's reach (its key, then the batch's sketch), merged
/// as the quarter hours' is; written once per table as [`day_upsert`].
fn reach_upsert(table: DayTable) -> &'static str {
    static SQL: PerTable = std::sync::OnceLock::new();
    per_table(&SQL, table, |table| {
        let columns = day_key_columns(table);
        let marks: Vec<String> = (1..=columns.split(", ").count() + 1).map(|i| format!("?{i}")).collect();
        format!(
            "INSERT INTO {} ({columns}, reach) VALUES ({}) ON CONFLICT DO UPDATE SET reach = reach_merge(reach, excluded.reach)",
            table.reach_name(),
            marks.join(", ")
        )
    })
}

/// One statement per day table, written once.
type PerTable = std::sync::OnceLock<[String; DayTable::ALL.len()]>;

/// `table`'s statement in `cell`, writing every table's with `write` the first time.
fn per_table(cell: &'static PerTable, table: DayTable, write: fn(DayTable) -> String) -> &'static str {
    let all = cell.get_or_init(|| DayTable::ALL.map(write));
    let i = DayTable::ALL.iter().position(|t| *t == table).unwrap_or(0);
    &all[i]
}

/// The upsert of one day-layer row's sums; money saturates as in the quarter hours.
fn day_upsert_sql(table: DayTable) -> String {
    let columns = day_key_columns(table);
    let sums = day_sum_columns();
    let n = columns.split(", ").count() + sums.len();
    let marks: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
    let mut updates: Vec<String> = slots().into_iter().map(|(_, _, c)| format!("{c} = {c} + excluded.{c}")).collect();
    for money in ["cost_micros", "value_micros", "revenue_micros"] {
        updates.push(format!("{money} = MIN({money}, 9223372036854775807 - excluded.{money}) + excluded.{money}"));
    }
    // The row's count of users is the estimate of its reach sketch, which this batch may
    // change: counted again when its day is sealed (`spans::count_users`).
    updates.push("users = NULL".into());
    format!(
        "INSERT INTO {} ({columns}, {}) VALUES ({}) ON CONFLICT DO UPDATE SET {}",
        table.name(),
        sums.join(", "),
        marks.join(", "),
        updates.join(", ")
    )
}

/// The zone an advertiser's day layer is kept in, as stored (UTC when the advertiser
/// is unknown, as [`rebuild_day_layer`] takes it).
fn stored_zone(c: &Connection, advertiser_id: i64) -> Result<DayZone> {
    let name: Option<String> =
        c.query_row("SELECT timezone FROM advertisers WHERE id = ?1", [advertiser_id], |r| r.get(0)).optional()?;
    Ok(DayZone::named(name.as_deref().unwrap_or("UTC")))
}

/// Absent ids (a conversion's campaign, ad and placement before attribution; its
/// decision always) are stored as 0: they are key columns of a `WITHOUT ROWID` table,
/// which cannot hold NULL, and store ids start at 1. These two functions are the only
/// place that knows the encoding; everything above the store sees `Option`.
fn db_id(id: Option<i64>) -> i64 {
    id.unwrap_or(0)
}

/// `SUM` of a money column that cannot overflow: SQLite's `SUM` fails on integer
/// overflow, which would turn every later report into an error. The high and low 32 bits
/// are summed apart (each sum stays far inside `i64` for any possible number of rows) and
/// joined in `i128` by [`wide`].
fn wide_sum(column: &str) -> String {
    format!("SUM({column} >> 32), SUM({column} & 4294967295)")
}

fn wide(row: &Row, first: usize) -> rusqlite::Result<i128> {
    let high: Option<i64> = row.get(first)?;
    let low: Option<i64> = row.get(first + 1)?;
    Ok((i128::from(high.unwrap_or(0)) << 32) + i128::from(low.unwrap_or(0)))
}

/// The writer's connection and the last event id it assigned.
struct EventWriter {
    conn: Connection,
    last_id: i64,
    /// The zone each advertiser's day layer is kept in; changed only under this
    /// writer's lock (see `update_advertiser`), so it always matches the stored rows.
    zones: FastMap<i64, DayZone>,
}

impl EventWriter {
    fn zone(zones: &mut FastMap<i64, DayZone>, c: &Connection, advertiser_id: i64) -> Result<DayZone> {
        if let Some(z) = zones.get(&advertiser_id) {
            return Ok(z.clone());
        }
        let known: bool =
            c.query_row("SELECT EXISTS (SELECT 1 FROM advertisers WHERE id = ?1)", [advertiser_id], |r| r.get(0))?;
        let zone = stored_zone(c, advertiser_id)?;
        // An unknown advertiser is not remembered: it may be created later.
        if known {
            zones.insert(advertiser_id, zone.clone());
        }
        Ok(zone)
    }
}

/// Events per multi-row `INSERT`: fewer statement executions, same transaction.
const ROWS_PER_INSERT: usize = 32;
const EVENT_COLUMN_COUNT: usize = 15;

fn insert_events_sql(rows: usize) -> String {
    let row = format!("({})", vec!["?"; EVENT_COLUMN_COUNT].join(","));
    format!(
        "INSERT INTO events (id, at_ms, kind, verdict, decision_id, advertiser_id, campaign_id, ad_id, placement_id,
         user_key, ip_key, device, country, cost_micros, value_micros) VALUES {}",
        vec![row; rows].join(",")
    )
}

/// Binds one event's columns starting at parameter `first` (1-based).
fn bind_event(stmt: &mut rusqlite::CachedStatement<'_>, first: usize, id: i64, e: &Event) -> rusqlite::Result<()> {
    let ints = [
        id,
        e.at_ms,
        e.kind.code().into(),
        e.verdict.code().into(),
        e.decision_id.map_or(0, |d| d as i64),
        e.advertiser_id,
        db_id(e.campaign_id),
        db_id(e.ad_id),
        db_id(e.placement_id),
        e.user_key as i64,
        // An unknown address is stored as 0 (a NOT NULL column; a keyed hash is 0 with
        // probability 2^-64).
        e.ip_key.map_or(0, |k| k as i64),
        e.device.code().into(),
    ];
    for (i, v) in ints.iter().enumerate() {
        stmt.raw_bind_parameter(first + i, v)?;
    }
    stmt.raw_bind_parameter(first + 12, e.country.as_str())?;
    stmt.raw_bind_parameter(first + 13, e.cost_micros)?;
    stmt.raw_bind_parameter(first + 14, e.value_micros)?;
    Ok(())
}

pub struct SqliteStore {
    writer: Mutex<EventWriter>,
    pool: Mutex<Vec<Connection>>,
    path: std::path::PathBuf,
    /// Every commit flushed to disk (`--fsync`), not only at checkpoints.
    power_loss_durable: bool,
    /// Held for the store's lifetime: one writing process per data directory.
    _lock: DataDirLock,
}

/// What a backup copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupSummary {
    pub events: i64,
    pub bytes: u64,
}

/// The name of the lock file in a data directory.
pub const LOCK_FILE: &str = "adtally.lock";

/// An exclusive OS lock (`flock`/`LockFileEx`) on `adtally.lock` in a data directory,
/// released when dropped or when the process dies, however it dies. Two writers on one
/// directory would each judge and charge events against their own in-memory state, so
/// budgets could be spent twice and duplicates counted: the second one must not start.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock, or refuses with `data_dir_in_use` when another store holds it
    /// (another process, or another store in this one).
    pub fn acquire(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Refused {
                code: "data_dir_in_use",
                message: format!(
                    "the data directory {} is in use: another adtally process holds its lock ({}); \
                     stop that process or use another --data directory",
                    data_dir.display(),
                    path.display()
                ),
            }),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(StoreError::Database(format!("cannot lock {}: {e}", path.display())))
            }
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

/// A stored sketch, or `None` for SQL NULL; anything else is a damaged row.
fn sketch_arg(ctx: &Context<'_>, index: usize) -> rusqlite::Result<Option<Sketch>> {
    match ctx.get_raw(index) {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(bytes) => {
            Sketch::from_bytes(bytes).map(Some).map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))
        }
        _ => Err(rusqlite::Error::UserFunctionError("reach sketch: not a blob".into())),
    }
}

/// `reach_union(sketch)`: the union of a group's sketches, NULL when it has none.
struct ReachUnion;

impl Aggregate<Option<Sketch>, Option<Vec<u8>>> for ReachUnion {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Option<Sketch>> {
        Ok(None)
    }
    fn step(&self, ctx: &mut Context<'_>, acc: &mut Option<Sketch>) -> rusqlite::Result<()> {
        match (acc.as_mut(), ctx.get_raw(0)) {
            // Merged straight from the stored bytes: no sketch built per row.
            (Some(union), ValueRef::Blob(bytes)) => {
                union.merge_bytes(bytes).map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))?
            }
            _ => {
                if let Some(sketch) = sketch_arg(ctx, 0)? {
                    *acc = Some(sketch);
                }
            }
        }
        Ok(())
    }
    fn finalize(&self, _: &mut Context<'_>, acc: Option<Option<Sketch>>) -> rusqlite::Result<Option<Vec<u8>>> {
        Ok(acc.flatten().map(|s| s.to_bytes()))
    }
}

/// `reach_sketch(user_key)`: the sketch of a group's users (the migration that builds
/// sketches from raw events).
struct ReachSketch;

impl Aggregate<Sketch, Vec<u8>> for ReachSketch {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Sketch> {
        Ok(Sketch::default())
    }
    fn step(&self, ctx: &mut Context<'_>, acc: &mut Sketch) -> rusqlite::Result<()> {
        acc.insert(ctx.get::<i64>(0)? as u64);
        Ok(())
    }
    fn finalize(&self, _: &mut Context<'_>, acc: Option<Sketch>) -> rusqlite::Result<Vec<u8>> {
        Ok(acc.unwrap_or_default().to_bytes())
    }
}

/// `sat_sum(x)`: a sum that saturates at the `i64` bounds, like the rollup cells it
/// adds up (SQLite's `SUM` fails on overflow).
struct SaturatingSum;

impl Aggregate<i64, i64> for SaturatingSum {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<i64> {
        Ok(0)
    }
    fn step(&self, ctx: &mut Context<'_>, acc: &mut i64) -> rusqlite::Result<()> {
        *acc = acc.saturating_add(ctx.get::<i64>(0)?);
        Ok(())
    }
    fn finalize(&self, _: &mut Context<'_>, acc: Option<i64>) -> rusqlite::Result<i64> {
        Ok(acc.unwrap_or(0))
    }
}

/// Sketch functions for SQL, so that merging happens inside the statement that reads
/// or upserts a row instead of a read, a round trip through Rust and a write.
fn register_sketch_functions(conn: &Connection) -> Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    // `reach_merge(a, b)`: the union of two sketches, either of which may be NULL.
    conn.create_scalar_function("reach_merge", 2, flags, |ctx| {
        Ok(match (sketch_arg(ctx, 0)?, sketch_arg(ctx, 1)?) {
            (Some(mut a), Some(b)) => {
                a.merge(&b);
                Some(a.to_bytes())
            }
            (a, b) => a.or(b).map(|s| s.to_bytes()),
        })
    })?;
    // `reach_count(sketch)`: its estimate of distinct users, as a report would give it.
    conn.create_scalar_function("reach_count", 1, flags, |ctx| {
        Ok(sketch_arg(ctx, 0)?.map(|s| i64::try_from(s.estimate()).unwrap_or(i64::MAX)))
    })?;
    conn.create_aggregate_function("reach_union", 1, flags, ReachUnion)?;
    conn.create_aggregate_function("reach_sketch", 1, flags, ReachSketch)?;
    conn.create_aggregate_function("sat_sum", 1, flags, SaturatingSum)?;
    // `utc_day(ms)`, `local_day(ms, zone)`: the day-layer day of an instant, exactly as
    // the writer's `DayKey::of` computes it.
    conn.create_scalar_function("utc_day", 1, flags, |ctx| Ok(utc_day(ctx.get::<i64>(0)?)))?;
    let zones: Mutex<FastMap<String, DayZone>> = Mutex::default();
    conn.create_scalar_function("local_day", 2, flags, move |ctx| {
        let at: i64 = ctx.get(0)?;
        let name: String = ctx.get(1)?;
        let mut zones = zones.lock().map_err(|_| rusqlite::Error::UserFunctionError("poisoned".into()))?;
        let zone = zones.entry(name).or_insert_with_key(|n| DayZone::named(n));
        let key = RollupKey {
            bucket_ms: at,
            advertiser_id: 0,
            campaign_id: None,
            ad_id: None,
            placement_id: None,
            device: Device::default(),
            country: Country::default(),
            kind: EventKind::Impression,
            verdict: Verdict::Valid,
        };
        Ok(DayKey::of(&key, zone).next().map_or(at, |d| d.day_ms))
    })?;
    Ok(())
}

/// Prepared statements each connection keeps (see [`open_connection`]).
const STATEMENT_CACHE: usize = 256;

fn open_connection(path: &Path, power_loss_durable: bool) -> Result<Connection> {
    let conn = Connection::open(path)?;
    register_sketch_functions(&conn)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // NORMAL in WAL mode: a committed transaction survives a process crash (kill -9);
    // only an operating-system crash or power loss can lose the last commits. FULL
    // (`--fsync`) flushes the WAL at every commit, so they survive that too: a commit
    // that records the journal offset it reached must be on disk before the journal's
    // segments up to there are deleted.
    let synchronous = if power_loss_durable { "FULL" } else { "NORMAL" };
    conn.execute_batch(&format!("PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; PRAGMA foreign_keys=ON;"))?;
    // Report readers: 64 MB of pages each (SQLite's default is 2 MB), and the file
    // mapped (up to 1 TiB; .cargo/config.toml raises SQLite's 2 GB cap): a reach sketch
    // is 16 KiB on overflow pages, which SQLite otherwise reads with one `pread` per page
    // on every request, bypassing its cache (60% of the operator's report at 10M
    // events). Writes still go through `write`, so durability is unchanged.
    conn.execute_batch("PRAGMA cache_size = -65536; PRAGMA mmap_size = 1099511627776;")?;
    // Every statement the writer or a report runs stays prepared: rusqlite keeps 16 by
    // default, fewer than one batch uses (the day layer's upserts, the spans' deletes),
    // so the least recently used were parsed and planned again on every batch.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) `adtally.db` in `data_dir` and applies migrations.
    /// Takes the data directory's [`DataDirLock`] first and holds it while the store
    /// lives: a second store on the same directory refuses with `data_dir_in_use`.
    /// Commits survive a crash of the process; see [`SqliteStore::open_power_loss_durable`].
    pub fn open(data_dir: &Path) -> Result<Self> {
        Self::open_with(data_dir, false)
    }

    /// [`SqliteStore::open`], with every commit flushed to disk before it returns, so
    /// it survives power loss too (`serve --fsync`).
    pub fn open_power_loss_durable(data_dir: &Path) -> Result<Self> {
        Self::open_with(data_dir, true)
    }

    fn open_with(data_dir: &Path, power_loss_durable: bool) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Database(format!("{}: {e}", data_dir.display())))?;
        let lock = DataDirLock::acquire(data_dir)?;
        let path = data_dir.join("adtally.db");
        let mut conn = open_connection(&path, power_loss_durable)?;
        // The writer's page cache: the rollup upserts of a batch touch pages all over
        // the rollup B-trees; with SQLite's default 2 MB most of them were read again
        // from the OS on every batch (a third of the writer's time at 10M events).
        conn.execute_batch("PRAGMA cache_size = -65536;")?;
        migrate(&mut conn)?;
        let last_id: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?;
        let writer = EventWriter { conn, last_id, zones: FastMap::default() };
        Ok(Self { writer: Mutex::new(writer), pool: Mutex::new(Vec::new()), path, power_loss_durable, _lock: lock })
    }

    /// Copies the database of `data_dir` to `out` with SQLite's online backup, while a
    /// server may be writing to it: the copy is one consistent snapshot (all pages are
    /// copied inside one read transaction, which in WAL mode does not block the writer).
    /// Takes no data-dir lock — it only reads. The copy is written beside `out` and
    /// renamed into place, so `out` is never a partial file; an existing `out` is refused.
    pub fn backup(data_dir: &Path, out: &Path) -> Result<BackupSummary> {
        let io = |what: &Path, e: std::io::Error| StoreError::Database(format!("{}: {e}", what.display()));
        let source_path = data_dir.join("adtally.db");
        if !source_path.is_file() {
            return Err(StoreError::NotFound(format!("a store in {}", data_dir.display())));
        }
        if out.exists() {
            return Err(StoreError::Conflict(out.display().to_string()));
        }
        let source = Connection::open_with_flags(&source_path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        source.busy_timeout(std::time::Duration::from_secs(10))?;
        let partial = out.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        {
            let mut copy = Connection::open(&partial)?;
            let backup = rusqlite::backup::Backup::new(&source, &mut copy)?;
            // -1: every page in one step, so the snapshot is consistent even while the
            // writer commits (a stepwise copy restarts whenever another connection writes).
            loop {
                match backup.step(-1)? {
                    rusqlite::backup::StepResult::Done => break,
                    _ => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        }
        let copy = Connection::open(&partial)?;
        // The copy stands alone: fold any WAL content into the file itself.
        copy.execute_batch("PRAGMA journal_mode=DELETE;")?;
        let events: i64 = copy.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
        drop(copy);
        std::fs::rename(&partial, out).map_err(|e| io(out, e))?;
        let bytes = std::fs::metadata(out).map_err(|e| io(out, e))?.len();
        Ok(BackupSummary { events, bytes })
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let pooled = self.pool.lock().map_err(|_| poisoned())?.pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.path, self.power_loss_durable)?,
        };
        let out = f(&mut conn);
        let mut pool = self.pool.lock().map_err(|_| poisoned())?;
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }
}

/// Runs a query and maps every row.
fn query_all<T, P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
    map: impl FnMut(&Row) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(params, map)?.collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

fn poisoned() -> StoreError {
    StoreError::Database("a connection lock was poisoned by an earlier panic".into())
}

/// What an insert or update writes of an advertiser, besides its id and creation time:
/// name, email, time zone, pixel cap, then the attribution windows.
fn advertiser_values(a: &Advertiser) -> [Value; 7] {
    [
        a.name.clone().into(),
        a.email.clone().into(),
        a.timezone.clone().into(),
        a.max_conversion_value_micros.into(),
        i64::from(a.attribution.click_days()).into(),
        i64::from(a.attribution.view_days()).into(),
        i64::from(a.attribution.half_life_days()).into(),
    ]
}

/// A `columns` reader's error as rusqlite's query functions carry it.
fn row_err(e: StoreError) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(Box::new(e))
}

fn bad_column(what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, format!("{what}={value}"), rusqlite::types::Type::Text)
}

/// The columns a campaign's owner may change, in the order both the insert and the
/// update bind them.
fn campaign_values(k: &Campaign) -> [Value; 12] {
    let int = |v: Option<i64>| v.map_or(Value::Null, Value::Integer);
    let (devices, placements) = targeting_columns(&k.targeting);
    [
        Value::Text(k.name.clone()),
        Value::Text(k.status.as_str().into()),
        Value::Integer(k.cpm_bid_micros),
        Value::Integer(k.total_budget_micros),
        int(k.daily_budget_micros),
        int(k.start_at_ms),
        int(k.end_at_ms),
        Value::Text(k.pacing.as_str().into()),
        Value::Text(devices),
        Value::Text(placements),
        int(k.frequency_cap.map(|f| i64::from(f.impressions))),
        int(k.frequency_cap.map(|f| i64::from(f.per_hours))),
    ]
}

fn insert_credit(
    c: &Connection,
    advertiser_id: i64,
    kind: CreditKind,
    amount_micros: i64,
    note: Option<&str>,
    now: Millis,
) -> Result<LedgerEntry> {
    c.execute(
        "INSERT INTO credits (advertiser_id, at_ms, kind, amount_micros, note) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![advertiser_id, now, kind.as_str(), amount_micros, note],
    )?;
    Ok(LedgerEntry {
        id: Some(c.last_insert_rowid()),
        at_ms: now,
        kind: kind.as_str().into(),
        amount_micros,
        note: note.map(String::from),
    })
}

fn insert_campaign(c: &Connection, k: &Campaign) -> Result<Campaign> {
    let mut values = campaign_values(k).to_vec();
    values.extend([Value::Integer(k.advertiser_id), Value::Integer(k.created_at_ms)]);
    c.execute(
        "INSERT INTO campaigns (name, status, cpm_bid_micros, total_budget_micros, daily_budget_micros,
         start_at_ms, end_at_ms, pacing, target_devices, target_placements, cap_impressions, cap_per_hours,
         advertiser_id, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        rusqlite::params_from_iter(values),
    )?;
    Ok(Campaign { id: c.last_insert_rowid(), ..k.clone() })
}

fn insert_ad(tx: &rusqlite::Transaction<'_>, ad: &Ad) -> Result<Ad> {
    tx.execute(
        "INSERT INTO ads (campaign_id, advertiser_id, format, headline, body, image_url, cta, target_url,
         status, rejection_reason, created_at_ms, version) VALUES (?1, ?2, ?3, '', '', NULL, '', '', ?4, NULL, ?5, ?6)",
        params![
            ad.campaign_id,
            ad.advertiser_id,
            ad.content.format.as_str(),
            ad.status.as_str(),
            ad.created_at_ms,
            ad.version
        ],
    )?;
    let ad = Ad { id: tx.last_insert_rowid(), ..ad.clone() };
    write_ad(tx, &ad, None, ad.created_at_ms)?;
    Ok(ad)
}

/// Writes an ad's row and its revision, and records the target URL of the version that
/// serves when it is approved: every approved version stays resolvable for clicks. An
/// existing ad is written only if it still stands where `read` says (see
/// [`Store::update_ad`]); the transaction is `IMMEDIATE`, so nothing changes between that
/// check and the write.
fn write_ad(tx: &rusqlite::Transaction<'_>, ad: &Ad, read: Option<AdStamp>, now: Millis) -> Result<()> {
    if let Some(read) = read {
        let stored = tx
            .query_row(
                "SELECT a.version, a.status, r.version, r.status
                 FROM ads a LEFT JOIN ad_revisions r ON r.ad_id = a.id WHERE a.id = ?1",
                [ad.id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        crate::check_ad_stamp(ad.id, stored, read)?;
    }
    let changed = tx.execute(
        "UPDATE ads SET format = ?2, headline = ?3, body = ?4, image_url = ?5, cta = ?6, target_url = ?7,
         status = ?8, rejection_reason = ?9, version = ?10, video_url = ?11 WHERE id = ?1",
        params![
            ad.id,
            ad.content.format.as_str(),
            ad.content.headline,
            ad.content.body,
            ad.content.image_url,
            ad.content.cta,
            ad.content.target_url,
            ad.status.as_str(),
            ad.rejection_reason,
            ad.version,
            ad.content.video_url
        ],
    )?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("ad {}", ad.id)));
    }
    match &ad.revision {
        None => {
            tx.execute("DELETE FROM ad_revisions WHERE ad_id = ?1", [ad.id])?;
        }
        Some(r) => {
            tx.execute(
                "INSERT OR REPLACE INTO ad_revisions (ad_id, version, format, headline, body, image_url, cta,
                 target_url, status, rejection_reason, created_at_ms, video_url)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    ad.id,
                    r.version,
                    r.content.format.as_str(),
                    r.content.headline,
                    r.content.body,
                    r.content.image_url,
                    r.content.cta,
                    r.content.target_url,
                    r.status.as_str(),
                    r.rejection_reason,
                    r.created_at_ms,
                    r.content.video_url
                ],
            )?;
        }
    }
    if ad.status == AdStatus::Approved {
        tx.execute(
            "INSERT OR IGNORE INTO ad_versions (ad_id, version, target_url, approved_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![ad.id, ad.version, ad.content.target_url, now],
        )?;
    }
    Ok(())
}

/// A rollup key's columns, in the order of the table's key (`bucket_ms` … `verdict`).
fn key_values(k: &RollupKey) -> [Value; 9] {
    [
        k.bucket_ms.into(),
        k.advertiser_id.into(),
        db_id(k.campaign_id).into(),
        db_id(k.ad_id).into(),
        db_id(k.placement_id).into(),
        i64::from(k.device.code()).into(),
        k.country.as_str().to_owned().into(),
        i64::from(k.kind.code()).into(),
        i64::from(k.verdict.code()).into(),
    ]
}

/// Marks a stored conversion `duplicate` because an authoritative one replaced it, and
/// takes it out of its rollup row. Returns the event as it now is, for the caller to add
/// to the rollups under its new verdict in the same transaction; `None` when it was not
/// counted anyway.
fn supersede(tx: &rusqlite::Transaction<'_>, zones: &mut FastMap<i64, DayZone>, id: i64) -> Result<Option<Event>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1");
    let Some(mut event) = tx.query_row(&sql, [id], |r: &Row| event_from(r, 0).map_err(row_err)).optional()? else {
        return Ok(None);
    };
    if event.verdict == Verdict::Duplicate {
        return Ok(None);
    }
    tx.execute("UPDATE events SET verdict = ?2 WHERE id = ?1", params![id, Verdict::Duplicate.code()])?;
    let key =
        key_values(&RollupKey::of(&event)).into_iter().chain([event.cost_micros.into(), event.value_micros.into()]);
    tx.execute(
        "UPDATE rollups SET events = events - 1, cost_micros = cost_micros - ?10, value_micros = value_micros - ?11
         WHERE bucket_ms = ?1 AND advertiser_id = ?2 AND campaign_id = ?3 AND ad_id = ?4 AND placement_id = ?5
           AND device = ?6 AND country = ?7 AND kind = ?8 AND verdict = ?9",
        rusqlite::params_from_iter(key),
    )?;
    let zone = EventWriter::zone(zones, tx, event.advertiser_id)?;
    let count = slots()
        .into_iter()
        .find(|(k, v, _)| *k == event.kind && *v == event.verdict)
        .map(|(_, _, name)| name)
        .ok_or_else(|| StoreError::Database("no day-layer column for an event's kind and verdict".into()))?;
    let revenue = if event.kind == EventKind::Conversion && event.verdict.is_valid() { event.value_micros } else { 0 };
    for day in DayKey::of(&RollupKey::of(&event), &zone) {
        let columns = day_key_columns(day.table);
        let n = columns.split(", ").count();
        let condition: Vec<String> =
            columns.split(", ").enumerate().map(|(i, c)| format!("{c} = ?{}", i + 1)).collect();
        let sql = format!(
            "UPDATE {} SET {count} = {count} - 1, cost_micros = cost_micros - ?{}, value_micros = value_micros - ?{},
               revenue_micros = revenue_micros - ?{} WHERE {}",
            day.table.name(),
            n + 1,
            n + 2,
            n + 3,
            condition.join(" AND ")
        );
        let values = day_key_values(&day).into_iter().chain([
            event.cost_micros.into(),
            event.value_micros.into(),
            revenue.into(),
        ]);
        tx.execute(&sql, rusqlite::params_from_iter(values))?;
    }
    event.verdict = Verdict::Duplicate;
    Ok(Some(event))
}

impl Store for SqliteStore {
    fn meta(&self, key: &str) -> Result<Option<String>> {
        self.with_conn(|c| Ok(c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?))
    }

    fn meta_init(&self, key: &str, value: &str) -> Result<String> {
        self.with_conn(|c| {
            c.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)", [key, value])?;
            Ok(c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?)
        })
    }

    fn create_advertiser(&self, a: &Advertiser) -> Result<Advertiser> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO advertisers (name, email, timezone, max_conversion_value_micros, click_window_days,
                                          view_window_days, half_life_days, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                rusqlite::params_from_iter(advertiser_values(a).into_iter().chain([a.created_at_ms.into()])),
            )?;
            Ok(Advertiser { id: c.last_insert_rowid(), ..a.clone() })
        })
    }

    fn update_advertiser(&self, a: &Advertiser) -> Result<()> {
        // On the writer's connection, under its lock: a new time zone rebuilds the
        // advertiser's day layer in the same transaction, and no batch can be summed
        // into the old zone's days in between.
        let mut writer = self.writer.lock().map_err(|_| poisoned())?;
        let writer = &mut *writer;
        let tx = writer.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let old: Option<String> =
            tx.query_row("SELECT timezone FROM advertisers WHERE id = ?1", [a.id], |r| r.get(0)).optional()?;
        let Some(old) = old else {
            return Err(StoreError::NotFound(format!("advertiser {}", a.id)));
        };
        tx.execute(
            "UPDATE advertisers SET name = ?2, email = ?3, timezone = ?4, max_conversion_value_micros = ?5,
                    click_window_days = ?6, view_window_days = ?7, half_life_days = ?8
             WHERE id = ?1",
            rusqlite::params_from_iter([a.id.into()].into_iter().chain(advertiser_values(a))),
        )?;
        if old != a.timezone {
            rebuild_day_layer(&tx, Some(a.id))?;
            spans::forget_advertiser(&tx, a.id)?;
        }
        tx.commit()?;
        writer.zones.remove(&a.id);
        Ok(())
    }

    fn advertiser(&self, id: i64) -> Result<Option<Advertiser>> {
        self.with_conn(|c| {
            Ok(c.query_row(&format!("SELECT {ADVERTISER_COLUMNS} FROM advertisers WHERE id = ?1"), [id], |r: &Row| {
                advertiser_from(r).map_err(row_err)
            })
            .optional()?)
        })
    }

    fn advertisers(&self) -> Result<Vec<Advertiser>> {
        self.with_conn(|c| {
            query_all(c, &format!("SELECT {ADVERTISER_COLUMNS} FROM advertisers ORDER BY id"), [], |r: &Row| {
                advertiser_from(r).map_err(row_err)
            })
        })
    }

    fn add_api_key(&self, owner: KeyOwner, key_hash: &str, now: Millis) -> Result<i64> {
        let advertiser = match owner {
            KeyOwner::Admin => None,
            KeyOwner::Advertiser(id) => Some(id),
        };
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO api_keys (key_hash, advertiser_id, created_at_ms) VALUES (?1, ?2, ?3)",
                params![key_hash, advertiser, now],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    fn api_key_owner(&self, key_hash: &str, now: Millis) -> Result<Option<KeyOwner>> {
        self.with_conn(|c| {
            let owner: Option<Option<i64>> = c
                .query_row(
                    "SELECT advertiser_id FROM api_keys WHERE key_hash = ?1 AND revoked_at_ms IS NULL",
                    [key_hash],
                    |r| r.get(0),
                )
                .optional()?;
            if owner.is_some() {
                // At most one write a minute per key, so reads stay reads.
                c.execute(
                    "UPDATE api_keys SET last_used_at_ms = ?2
                     WHERE key_hash = ?1 AND (last_used_at_ms IS NULL OR last_used_at_ms < ?2 - 60000)",
                    params![key_hash, now],
                )?;
            }
            Ok(owner.map(owner_from))
        })
    }

    fn api_keys(&self, advertiser_id: i64) -> Result<Vec<ApiKeyInfo>> {
        self.with_conn(|c| {
            query_all(
                c,
                "SELECT id, advertiser_id, created_at_ms, last_used_at_ms, revoked_at_ms FROM api_keys
                 WHERE advertiser_id = ?1 ORDER BY id",
                [advertiser_id],
                |r| {
                    Ok(ApiKeyInfo {
                        id: r.get(0)?,
                        advertiser_id: r.get(1)?,
                        created_at_ms: r.get(2)?,
                        last_used_at_ms: r.get(3)?,
                        revoked_at_ms: r.get(4)?,
                    })
                },
            )
        })
    }

    fn revoke_api_key(&self, key_id: i64, advertiser_id: Option<i64>, now: Millis) -> Result<bool> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let changed = tx.execute(
                "UPDATE api_keys SET revoked_at_ms = ?2 WHERE id = ?1 AND advertiser_id IS NOT NULL
                 AND (?3 IS NULL OR advertiser_id = ?3) AND revoked_at_ms IS NULL",
                params![key_id, now, advertiser_id],
            )?;
            if changed == 1 {
                tx.execute(
                    "DELETE FROM sessions WHERE key_hash = (SELECT key_hash FROM api_keys WHERE id = ?1)",
                    [key_id],
                )?;
            }
            tx.commit()?;
            Ok(changed == 1)
        })
    }

    fn create_session(&self, id_hash: &str, s: &Session) -> Result<()> {
        let advertiser = match s.owner {
            KeyOwner::Admin => None,
            KeyOwner::Advertiser(id) => Some(id),
        };
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO sessions (id_hash, advertiser_id, key_hash, csrf_token, created_at_ms, last_seen_at_ms,
                 expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id_hash,
                    advertiser,
                    s.key_hash,
                    s.csrf_token,
                    s.created_at_ms,
                    s.last_seen_at_ms,
                    s.expires_at_ms
                ],
            )?;
            Ok(())
        })
    }

    fn session(&self, id_hash: &str, now: Millis) -> Result<Option<FoundSession>> {
        self.with_conn(|c| {
            let found = c
                .query_row(&format!("{SESSION_SELECT} FROM sessions s WHERE s.id_hash = ?1"), [id_hash], |r| {
                    session_from(r).map_err(row_err)
                })
                .optional()?;
            if found.as_ref().is_some_and(|f| f.session.last_seen_at_ms < now - 60_000) {
                c.execute("UPDATE sessions SET last_seen_at_ms = ?2 WHERE id_hash = ?1", params![id_hash, now])?;
            }
            Ok(found)
        })
    }

    fn delete_session(&self, id_hash: &str) -> Result<bool> {
        self.with_conn(|c| Ok(c.execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])? == 1))
    }

    fn purge_sessions(&self, now: Millis, idle_since: Millis) -> Result<usize> {
        self.with_conn(|c| {
            Ok(c.execute(
                "DELETE FROM sessions WHERE expires_at_ms <= ?1 OR last_seen_at_ms < ?2",
                params![now, idle_since],
            )?)
        })
    }

    fn create_promo(&self, promo: &PromoCode) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO promo_codes (code, amount_micros, expires_at_ms, max_redemptions, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    promo.code,
                    promo.amount_micros,
                    promo.expires_at_ms,
                    promo.max_redemptions,
                    promo.created_at_ms
                ],
            )?;
            Ok(())
        })
    }

    fn redeem_promo(&self, code: &str, advertiser_id: i64, now: Millis) -> Result<LedgerEntry> {
        self.with_conn(|c| {
            // IMMEDIATE takes the write lock first, so concurrent redemptions queue up
            // and each sees the count the previous one left.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let promo: Option<(i64, Option<i64>, i64, i64)> = tx
                .query_row(
                    "SELECT amount_micros, expires_at_ms, max_redemptions, redemptions FROM promo_codes WHERE code = ?1",
                    [code],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((amount, expires, max, used)) = promo else {
                return Err(StoreError::Refused { code: "promo_not_found", message: "no promo code has this name".into() });
            };
            if expires.is_some_and(|e| e <= now) {
                return Err(StoreError::Refused { code: "promo_expired", message: "this promo code has expired".into() });
            }
            if used >= max {
                return Err(StoreError::Refused { code: "promo_exhausted", message: "this promo code has been used up".into() });
            }
            let fresh = tx.execute(
                "INSERT OR IGNORE INTO promo_redemptions (code, advertiser_id, at_ms) VALUES (?1, ?2, ?3)",
                params![code, advertiser_id, now],
            )?;
            if fresh == 0 {
                return Err(StoreError::Refused {
                    code: "promo_already_redeemed",
                    message: "this advertiser has already redeemed this code".into(),
                });
            }
            tx.execute("UPDATE promo_codes SET redemptions = redemptions + 1 WHERE code = ?1", [code])?;
            let note = format!("promo code {code}");
            tx.execute(
                "INSERT INTO credits (advertiser_id, at_ms, kind, amount_micros, note) VALUES (?1, ?2, 'promo', ?3, ?4)",
                params![advertiser_id, now, amount, note],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(LedgerEntry { id: Some(id), at_ms: now, kind: "promo".into(), amount_micros: amount, note: Some(note) })
        })
    }

    fn audit(&self, entry: &AuditEntry) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO audit_log (at_ms, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![entry.at_ms, entry.actor, entry.action, entry.target, entry.detail],
            )?;
            Ok(())
        })
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.with_conn(|c| {
            query_all(
                c,
                "SELECT at_ms, actor, action, target, detail FROM audit_log ORDER BY id DESC LIMIT ?1",
                [limit as i64],
                |r| {
                    Ok(AuditEntry {
                        at_ms: r.get(0)?,
                        actor: r.get(1)?,
                        action: r.get(2)?,
                        target: r.get(3)?,
                        detail: r.get(4)?,
                    })
                },
            )
        })
    }

    fn add_credit(
        &self,
        advertiser_id: i64,
        kind: CreditKind,
        amount_micros: i64,
        note: Option<&str>,
        now: Millis,
    ) -> Result<LedgerEntry> {
        self.with_conn(|c| insert_credit(c, advertiser_id, kind, amount_micros, note, now))
    }

    fn add_topup(
        &self,
        advertiser_id: i64,
        amount_micros: i64,
        note: Option<&str>,
        bonus_micros: Option<i64>,
        now: Millis,
    ) -> Result<(LedgerEntry, Option<LedgerEntry>)> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let topup = insert_credit(&tx, advertiser_id, CreditKind::Topup, amount_micros, note, now)?;
            let bonus = match bonus_micros {
                Some(bonus) => {
                    let note = format!("top-up bonus on {}", topup.id.unwrap_or_default());
                    Some(insert_credit(&tx, advertiser_id, CreditKind::Bonus, bonus, Some(&note), now)?)
                }
                None => None,
            };
            tx.commit()?;
            Ok((topup, bonus))
        })
    }

    fn credit_totals(&self) -> Result<Vec<(i64, i64)>> {
        self.with_conn(|c| {
            let sql =
                format!("SELECT advertiser_id, {} FROM credits GROUP BY advertiser_id", wide_sum("amount_micros"));
            query_all(c, &sql, [], |r| Ok((r.get(0)?, saturate(wide(r, 1)?))))
        })
    }

    fn credits(&self, advertiser_id: i64) -> Result<Vec<LedgerEntry>> {
        self.with_conn(|c| {
            query_all(
                c,
                "SELECT id, at_ms, kind, amount_micros, note FROM credits WHERE advertiser_id = ?1 ORDER BY id",
                [advertiser_id],
                |r| {
                    Ok(LedgerEntry {
                        id: r.get(0)?,
                        at_ms: r.get(1)?,
                        kind: r.get(2)?,
                        amount_micros: r.get(3)?,
                        note: r.get(4)?,
                    })
                },
            )
        })
    }

    fn create_placement(&self, slug: &str, name: &str, format: Format, floor_cpm_micros: i64) -> Result<Placement> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO placements (slug, name, format, floor_cpm_micros) VALUES (?1, ?2, ?3, ?4)",
                params![slug, name, format.as_str(), floor_cpm_micros],
            )?;
            Ok(Placement { id: c.last_insert_rowid(), slug: slug.into(), name: name.into(), format, floor_cpm_micros })
        })
    }

    fn placements(&self) -> Result<Vec<Placement>> {
        self.with_conn(|c| {
            query_all(c, "SELECT id, slug, name, format, floor_cpm_micros FROM placements ORDER BY id", [], |r| {
                Ok(Placement {
                    id: r.get(0)?,
                    slug: r.get(1)?,
                    name: r.get(2)?,
                    format: format_from(&r.get::<_, String>(3)?).map_err(row_err)?,
                    floor_cpm_micros: r.get(4)?,
                })
            })
        })
    }

    fn create_campaign(&self, k: &Campaign) -> Result<Campaign> {
        self.with_conn(|c| insert_campaign(c, k))
    }

    fn create_campaign_with_ads(&self, k: &Campaign, ads: &[Ad]) -> Result<Campaign> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let campaign = insert_campaign(&tx, k)?;
            for ad in ads {
                insert_ad(&tx, &Ad { campaign_id: campaign.id, ..ad.clone() })?;
            }
            tx.commit()?;
            Ok(campaign)
        })
    }

    fn update_campaign(&self, k: &Campaign) -> Result<()> {
        self.with_conn(|c| {
            let mut values = campaign_values(k).to_vec();
            values.push(Value::Integer(k.id));
            let changed = c.execute(
                "UPDATE campaigns SET name = ?1, status = ?2, cpm_bid_micros = ?3, total_budget_micros = ?4,
                 daily_budget_micros = ?5, start_at_ms = ?6, end_at_ms = ?7, pacing = ?8, target_devices = ?9,
                 target_placements = ?10, cap_impressions = ?11, cap_per_hours = ?12 WHERE id = ?13",
                rusqlite::params_from_iter(values),
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("campaign {}", k.id)));
            }
            Ok(())
        })
    }

    fn campaign(&self, id: i64) -> Result<Option<Campaign>> {
        self.with_conn(|c| {
            Ok(c.query_row(&format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?1"), [id], |r: &Row| {
                campaign_from(r).map_err(row_err)
            })
            .optional()?)
        })
    }

    fn campaigns(&self, advertiser_id: Option<i64>) -> Result<Vec<Campaign>> {
        self.with_conn(|c| {
            query_all(
                c,
                &format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE ?1 IS NULL OR advertiser_id = ?1 ORDER BY id"),
                [advertiser_id],
                |r: &Row| campaign_from(r).map_err(row_err),
            )
        })
    }

    fn create_ad(&self, ad: &Ad) -> Result<Ad> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let ad = insert_ad(&tx, ad)?;
            tx.commit()?;
            Ok(ad)
        })
    }

    fn update_ad(&self, ad: &Ad, read: AdStamp, now: Millis) -> Result<()> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            write_ad(&tx, ad, Some(read), now)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn review_ad(&self, ad: &Ad, read: AdStamp, now: Millis) -> Result<()> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            write_ad(&tx, ad, Some(read), now)?;
            if ad.status == AdStatus::Approved {
                // A campaign waiting for review goes live with its first approved ad.
                tx.execute(
                    "UPDATE campaigns SET status = ?2 WHERE id = ?1 AND status = ?3",
                    params![ad.campaign_id, CampaignStatus::Active.as_str(), CampaignStatus::PendingReview.as_str()],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn approved_versions(&self) -> Result<Vec<ApprovedVersion>> {
        self.with_conn(|c| {
            query_all(c, "SELECT ad_id, version, target_url FROM ad_versions", [], |r| {
                Ok(ApprovedVersion { ad_id: r.get(0)?, version: r.get(1)?, target_url: r.get(2)? })
            })
        })
    }

    fn ad(&self, id: i64) -> Result<Option<Ad>> {
        self.with_conn(|c| {
            Ok(c.query_row(&format!("{AD_SELECT} WHERE ads.id = ?1"), [id], |r: &Row| ad_from(r).map_err(row_err))
                .optional()?)
        })
    }

    fn ads(&self, campaign_id: Option<i64>) -> Result<Vec<Ad>> {
        self.with_conn(|c| {
            let sql = format!("{AD_SELECT} WHERE ?1 IS NULL OR ads.campaign_id = ?1 ORDER BY ads.id");
            query_all(c, &sql, [campaign_id], |r: &Row| ad_from(r).map_err(row_err))
        })
    }

    fn append_events(
        &self,
        now_ms: Millis,
        batch: &mut [PendingEvent],
        journal_through: Option<u64>,
        judge: &mut Judge<'_>,
    ) -> Result<()> {
        let mut writer = self.writer.lock().map_err(|_| poisoned())?;
        let writer = &mut *writer;
        let first_id = writer.last_id.max((now_ms.max(0) << 20) - 1) + 1;
        let zones = &mut writer.zones;
        let tx = writer.conn.transaction()?;
        let mut next_id = first_id;
        // Stored events of this batch by id, and conversions this batch superseded.
        let mut ids: Vec<Option<i64>> = vec![None; batch.len()];
        let mut superseded: Vec<Event> = Vec::new();
        {
            let mut claim_import = tx.prepare_cached(
                "INSERT OR IGNORE INTO dedup_keys (key, event_id, authoritative) VALUES (?1, NULL, 1)",
            )?;
            let mut holder = tx.prepare_cached("SELECT event_id, authoritative FROM dedup_keys WHERE key = ?1")?;
            let mut claim_order = tx.prepare_cached(
                "INSERT INTO dedup_keys (key, event_id, authoritative) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET event_id = excluded.event_id, authoritative = excluded.authoritative",
            )?;
            for index in 0..batch.len() {
                match batch[index].idempotency.clone() {
                    None => {}
                    Some(Idempotency::Import(key)) if claim_import.execute([&key])? == 0 => {
                        batch[index].skipped_as_duplicate = true;
                        continue;
                    }
                    Some(Idempotency::Import(_)) => {}
                    Some(Idempotency::Order { key, authoritative }) => {
                        let held: Option<(Option<i64>, bool)> =
                            holder.query_row([&key], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
                        match held {
                            None => {}
                            Some((Some(old_id), false)) if authoritative => {
                                // The advertiser's own postback wins over an anonymous pixel.
                                if let Some(old) = ids.iter().position(|id| *id == Some(old_id)) {
                                    // Not inserted yet: it goes in as `duplicate`.
                                    batch[old].event.verdict = Verdict::Duplicate;
                                } else {
                                    superseded.extend(supersede(&tx, zones, old_id)?);
                                }
                            }
                            Some(_) => {
                                batch[index].skipped_as_duplicate = true;
                                continue;
                            }
                        }
                        claim_order.execute(params![key, next_id, authoritative])?;
                    }
                }
                judge(index, &mut batch[index].event, &CountedElsewhere::default());
                ids[index] = Some(next_id);
                next_id += 1;
            }
            let stored: Vec<(i64, &Event)> =
                batch.iter().zip(&ids).filter_map(|(p, id)| Some(((*id)?, &p.event))).collect();
            let mut chunks = stored.chunks_exact(ROWS_PER_INSERT);
            let mut insert_many = tx.prepare_cached(&insert_events_sql(ROWS_PER_INSERT))?;
            for chunk in chunks.by_ref() {
                for (i, (id, e)) in chunk.iter().enumerate() {
                    bind_event(&mut insert_many, 1 + i * EVENT_COLUMN_COUNT, *id, e)?;
                }
                insert_many.raw_execute()?;
            }
            let mut insert_one = tx.prepare_cached(&insert_events_sql(1))?;
            for (id, e) in chunks.remainder() {
                bind_event(&mut insert_one, 1, *id, e)?;
                insert_one.raw_execute()?;
            }
            let mut upsert = tx.prepare_cached(
                "INSERT INTO rollups (bucket_ms, advertiser_id, campaign_id, ad_id, placement_id, device, country,
                 kind, verdict, events, cost_micros, value_micros, reach)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT DO UPDATE SET events = events + excluded.events,
                   reach = reach_merge(reach, excluded.reach),
                   cost_micros = MIN(cost_micros, 9223372036854775807 - excluded.cost_micros) + excluded.cost_micros,
                   value_micros = MIN(value_micros, 9223372036854775807 - excluded.value_micros) + excluded.value_micros",
            )?;
            let events = stored.iter().map(|(_, e)| *e).chain(superseded.iter());
            let quarter_hours = aggregate(events);
            for (k, (s, reach)) in &quarter_hours {
                let reach = has_reach(k.kind, k.verdict).then(|| reach.to_bytes());
                let sums = [s.events.into(), saturate(s.cost_micros).into(), saturate(s.value_micros).into()];
                let reach = reach.map_or(Value::Null, Value::Blob);
                upsert.execute(rusqlite::params_from_iter(key_values(k).into_iter().chain(sums).chain([reach])))?;
            }
            // The day layer, from the same aggregate, in the same transaction.
            let mut batch_zones: FastMap<i64, DayZone> = FastMap::default();
            for k in quarter_hours.keys() {
                if let std::collections::hash_map::Entry::Vacant(slot) = batch_zones.entry(k.advertiser_id) {
                    slot.insert(EventWriter::zone(zones, &tx, k.advertiser_id)?);
                }
            }
            let days = aggregate_days(quarter_hours.iter(), |id| {
                batch_zones.get(&id).cloned().unwrap_or_else(|| DayZone::named("UTC"))
            });
            for (k, (s, reach)) in days {
                if k.table == DayTable::Campaign {
                    // Every event has its campaign-table days; spans hold sums too.
                    spans::invalidate(&tx, now_ms, k.advertiser_id, k.utc, k.day_ms)?;
                }
                let key = day_key_values(&k);
                if !reach.is_empty() {
                    let values = key.iter().cloned().chain([Value::Blob(reach.to_bytes())]);
                    tx.prepare_cached(reach_upsert(k.table))?.execute(rusqlite::params_from_iter(values))?;
                }
                let mut values = key;
                values.extend(s.events.iter().map(|n| Value::Integer(*n)));
                values.extend([s.cost_micros, s.value_micros, s.revenue_micros].map(|m| Value::Integer(saturate(m))));
                let mut upsert = tx.prepare_cached(day_upsert(k.table))?;
                upsert.execute(rusqlite::params_from_iter(values))?;
            }
        }
        if let Some(seq) = journal_through {
            tx.prepare_cached("INSERT INTO meta (key, value) VALUES ('journal_applied', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value")?
                .execute([seq.to_string()])?;
        }
        tx.commit()?;
        writer.last_id = next_id - 1;
        Ok(())
    }

    fn each_valid_event_since(
        &self,
        since_ms: Millis,
        clicks_since_ms: Millis,
        each: &mut dyn FnMut(Event),
    ) -> Result<()> {
        // Ids start with their commit time: nothing committed before a time can have
        // happened after it. Commits older than `since_ms` are read for their clicks
        // alone, from the valid clicks' own index (a click in a hundred events).
        let clicks_since_ms = clicks_since_ms.min(since_ms);
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {EVENT_COLUMNS}, id FROM events INDEXED BY events_valid_clicks
                 WHERE kind = {click} AND verdict = 0 AND id >= ?1 AND id < ?3 AND at_ms >= ?2
                 UNION ALL
                 SELECT {EVENT_COLUMNS}, id FROM events
                 WHERE id >= ?3 AND verdict = 0 AND (at_ms >= ?4 OR (kind = {click} AND at_ms >= ?2))
                 ORDER BY id",
                click = EventKind::Click.code()
            ))?;
            let mut rows =
                stmt.query([clicks_since_ms.max(0) << 20, clicks_since_ms, since_ms.max(0) << 20, since_ms])?;
            while let Some(r) = rows.next()? {
                each(event_from(r, 0)?);
            }
            Ok(())
        })
    }

    fn campaign_spend(&self, since_ms: Millis) -> Result<Vec<CampaignSpend>> {
        // Whole UTC days before `since_ms` from the day layer (every advertiser has UTC
        // days in its campaign table); the quarter hours from the day it falls in. At 100M
        // events, summing every quarter hour made each start take a minute.
        let parts = self.with_conn(|c| {
            query_all(
                c,
                &format!(
                    "SELECT advertiser_id, campaign_id, 0, {sum} FROM rollups_day_campaign
                     WHERE utc = 1 AND day_ms < ?2 AND cost_micros != 0 GROUP BY advertiser_id, campaign_id
                     UNION ALL
                     SELECT advertiser_id, campaign_id, CASE WHEN bucket_ms >= ?1 THEN bucket_ms ELSE 0 END AS b,
                     {sum} FROM rollups WHERE bucket_ms >= ?2 AND cost_micros != 0
                     GROUP BY advertiser_id, campaign_id, b",
                    sum = wide_sum("cost_micros")
                ),
                [since_ms, utc_day(since_ms)],
                |r| Ok(((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Millis>(2)?), wide(r, 3)?)),
            )
        })?;
        // Bucket 0 of a campaign may come from both parts: one row per campaign and bucket.
        let mut spend: BTreeMap<(i64, i64, Millis), i128> = BTreeMap::new();
        for (key, micros) in parts {
            *spend.entry(key).or_default() += micros;
        }
        Ok(spend
            .into_iter()
            .map(|((advertiser_id, campaign_id, bucket_ms), micros)| CampaignSpend {
                advertiser_id,
                campaign_id,
                bucket_ms,
                spend_micros: saturate(micros),
            })
            .collect())
    }

    fn ad_performance(&self) -> Result<Vec<AdPerformance>> {
        // From the day layer's ad table, which holds each day once (in the advertiser's
        // own zone), not from every quarter hour.
        let column = |kind: EventKind| slot_column(kind, Verdict::Valid);
        self.with_conn(|c| {
            query_all(
                c,
                &format!(
                    "SELECT ad_id, SUM({0}), SUM({1}) FROM rollups_day_ad GROUP BY ad_id HAVING SUM({0}) + SUM({1}) > 0",
                    column(EventKind::Impression),
                    column(EventKind::Click)
                ),
                [],
                |r| Ok(AdPerformance { ad_id: r.get(0)?, impressions: r.get(1)?, clicks: r.get(2)? }),
            )
        })
    }

    fn rollup_rows(&self, q: &RollupQuery) -> Result<Vec<RollupRow>> {
        self.with_conn(|c| {
            // One read transaction: the zone check and the rows see the same state.
            let tx = c.transaction()?;
            let rows = match day_layer(&tx, q)? {
                Some((table, utc)) => day_rows(&tx, q, table, utc)?,
                None => quarter_hour_rows(&tx, q)?,
            };
            tx.commit()?;
            Ok(rows)
        })
    }

    fn set_weekly_report(&self, advertiser_id: i64, enabled: bool, now: Millis) -> Result<()> {
        self.with_conn(|c| {
            if enabled {
                c.execute("DELETE FROM weekly_report_optouts WHERE advertiser_id = ?1", [advertiser_id])?;
            } else {
                c.execute(
                    "INSERT OR IGNORE INTO weekly_report_optouts (advertiser_id, at_ms) VALUES (?1, ?2)",
                    [advertiser_id, now],
                )?;
            }
            Ok(())
        })
    }

    fn weekly_report_optouts(&self) -> Result<Vec<i64>> {
        self.with_conn(|c| query_all(c, "SELECT advertiser_id FROM weekly_report_optouts", [], |r| r.get(0)))
    }

    fn claim_mail(&self, advertiser_id: i64, report: &str, now: Millis) -> Result<bool> {
        self.with_conn(|c| {
            let inserted = c.execute(
                "INSERT OR IGNORE INTO sent_mail (advertiser_id, report, sent_at_ms) VALUES (?1, ?2, ?3)",
                params![advertiser_id, report, now],
            )?;
            Ok(inserted == 1)
        })
    }

    fn release_mail(&self, advertiser_id: i64, report: &str) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                "DELETE FROM sent_mail WHERE advertiser_id = ?1 AND report = ?2",
                params![advertiser_id, report],
            )?;
            Ok(())
        })
    }

    fn touch_paths(
        &self,
        advertiser_id: i64,
        from_ms: Millis,
        to_ms: Millis,
        lookback_ms: Millis,
        limit: usize,
    ) -> Result<TouchPaths> {
        let (conversion, click, impression) =
            (EventKind::Conversion.code(), EventKind::Click.code(), EventKind::Impression.code());
        let fetch = limit.saturating_add(1).min(i64::MAX as usize) as i64;
        self.with_conn(|c| {
            // One read transaction: both lists see the same snapshot.
            let tx = c.transaction()?;
            let mut conversions = query_all(
                &tx,
                "SELECT user_key, at_ms, value_micros FROM events
                 WHERE advertiser_id = ?1 AND at_ms >= ?2 AND at_ms < ?3 AND kind = ?4 AND verdict = 0
                 ORDER BY at_ms, id LIMIT ?5",
                params![advertiser_id, from_ms, to_ms, conversion, fetch],
                |r| {
                    Ok(ConversionFact {
                        user_key: r.get::<_, i64>(0)? as u64,
                        at_ms: r.get(1)?,
                        value_micros: r.get(2)?,
                    })
                },
            )?;
            let mut truncated = conversions.len() > limit;
            conversions.truncate(limit);
            // Only the touches of users who converted in the range.
            let mut touches = query_all(
                &tx,
                "SELECT user_key, at_ms, kind, decision_id, campaign_id, ad_id FROM events
                 WHERE advertiser_id = ?1 AND at_ms >= ?2 AND at_ms < ?3 AND kind IN (?5, ?6) AND verdict = 0
                   AND user_key IN (SELECT user_key FROM events WHERE advertiser_id = ?1 AND at_ms >= ?4
                                    AND at_ms < ?3 AND kind = ?7 AND verdict = 0)
                 ORDER BY at_ms, id LIMIT ?8",
                params![
                    advertiser_id,
                    from_ms.saturating_sub(lookback_ms.max(0)),
                    to_ms,
                    from_ms,
                    click,
                    impression,
                    conversion,
                    fetch
                ],
                |r| {
                    let kind: i64 = r.get(2)?;
                    let kind = if kind == i64::from(click) { TouchKind::Click } else { TouchKind::Impression };
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        PathTouch {
                            at_ms: r.get(1)?,
                            kind,
                            decision_id: id_from_db(r.get(3)?).map(|d| d as u64),
                            campaign_id: r.get(4)?,
                            ad_id: r.get(5)?,
                        },
                    ))
                },
            )?;
            truncated |= touches.len() > limit;
            touches.truncate(limit);
            tx.commit()?;
            Ok(TouchPaths { conversions, touches, truncated })
        })
    }

    fn purge_events_before(&self, before_ms: Millis, max_rows: usize) -> Result<usize> {
        let cutoff = bucket_of(before_ms);
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let kept_from: i64 = tx
                .query_row("SELECT value FROM meta WHERE key = 'events_kept_from_ms'", [], |r| r.get::<_, String>(0))
                .optional()?
                .and_then(|v| v.parse().ok())
                .unwrap_or(i64::MIN);
            // Per advertiser, so each delete is a range of the (advertiser, time) index.
            let advertisers: Vec<i64> = query_all(&tx, "SELECT id FROM advertisers", [], |r| r.get(0))?;
            let mut deleted = 0;
            for advertiser in advertisers {
                let left = max_rows.saturating_sub(deleted);
                if left == 0 {
                    break;
                }
                deleted += tx.execute(
                    "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events
                     WHERE advertiser_id = ?1 AND at_ms < ?2 LIMIT ?3)",
                    params![advertiser, cutoff, left as i64],
                )?;
            }
            if cutoff > kept_from {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('events_kept_from_ms', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [cutoff.to_string()],
                )?;
            }
            tx.commit()?;
            Ok(deleted)
        })
    }

    fn seal_spans(&self, now_ms: Millis) -> Result<usize> {
        let advertisers: Vec<(i64, String)> = self
            .with_conn(|c| query_all(c, "SELECT id, timezone FROM advertisers", [], |r| Ok((r.get(0)?, r.get(1)?))))?;
        let mut built = 0;
        for (id, zone) in advertisers {
            // On the writer's connection, one advertiser at a time: no batch changes a
            // day between its reading and its span's recording, and none waits long.
            let mut writer = self.writer.lock().map_err(|_| poisoned())?;
            let tx = writer.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Read again under the lock: a zone change since would have dropped its spans.
            let zone = tx
                .query_row("SELECT timezone FROM advertisers WHERE id = ?1", [id], |r| r.get::<_, String>(0))
                .optional()?
                .unwrap_or(zone);
            let own = DayZone::named(&zone);
            built += spans::seal(&tx, now_ms, id, true, &adtally_core::jiff::tz::TimeZone::UTC)?;
            spans::count_users(&tx, now_ms, id, true, &adtally_core::jiff::tz::TimeZone::UTC)?;
            if !own.is_utc {
                built += spans::seal(&tx, now_ms, id, false, &own.tz)?;
                spans::count_users(&tx, now_ms, id, false, &own.tz)?;
            }
            tx.commit()?;
        }
        Ok(built)
    }

    fn consistency_check(&self) -> Result<ConsistencyCheck> {
        self.with_conn(|c| {
            // Raw events before the retention cut are gone; their rollups stay.
            let kept_from: i64 = c
                .query_row("SELECT value FROM meta WHERE key = 'events_kept_from_ms'", [], |r| r.get::<_, String>(0))
                .optional()?
                .and_then(|v| v.parse().ok())
                .unwrap_or(i64::MIN);
            let per_advertiser = |sql: &str| -> Result<BTreeMap<i64, Totals>> {
                let rows = query_all(c, sql, [kept_from], |r| {
                    Ok((r.get(0)?, Totals { events: r.get(1)?, cost_micros: wide(r, 2)?, value_micros: wide(r, 4)? }))
                })?;
                Ok(rows.into_iter().collect())
            };
            let raw = per_advertiser(&format!(
                "SELECT advertiser_id, COUNT(*), {}, {} FROM events WHERE at_ms >= ?1 GROUP BY advertiser_id",
                wide_sum("cost_micros"),
                wide_sum("value_micros")
            ))?;
            let rollups = per_advertiser(&format!(
                "SELECT advertiser_id, SUM(events), {}, {} FROM rollups WHERE bucket_ms >= ?1 GROUP BY advertiser_id",
                wide_sum("cost_micros"),
                wide_sum("value_micros")
            ))?;
            // The day layer against the quarter hours over all time, per advertiser. Own-zone
            // rows of the main table exist only for advertisers not in UTC.
            let all_slots: Vec<String> = slots().into_iter().map(|(_, _, c)| c).collect();
            let day_events = all_slots.join(" + ");
            let totals = |table: &str, filter: &str| {
                let events = if table == "rollups" { "events" } else { day_events.as_str() };
                format!(
                    "SELECT advertiser_id, SUM({events}), {}, {} FROM {table} WHERE ?1 = ?1 AND {filter}
                     GROUP BY advertiser_id",
                    wide_sum("cost_micros"),
                    wide_sum("value_micros")
                )
            };
            let all = per_advertiser(&totals("rollups", "1"))?;
            let non_utc: std::collections::BTreeSet<i64> =
                query_all(c, "SELECT id FROM advertisers WHERE timezone != 'UTC'", [], |r| r.get(0))?
                    .into_iter()
                    .collect();
            let mut day_layer = Vec::new();
            for (name, filter, only_non_utc) in [
                ("rollups_day_campaign", "utc = 1", false),
                ("rollups_day_campaign", "utc = 0", true),
                ("rollups_day_ad", "1", false),
                ("rollups_day_placement", "1", false),
                ("rollups_day_device", "1", false),
                ("rollups_day_country", "1", false),
            ] {
                let mut expected = all.clone();
                if only_non_utc {
                    expected.retain(|id, _| non_utc.contains(id));
                }
                day_layer.push((format!("{name} where {filter}"), expected, per_advertiser(&totals(name, filter))?));
            }
            Ok(ConsistencyCheck { raw, rollups, day_layer })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adtally_core::clock::DAY;
    use adtally_core::report::Dimension;

    fn temp_store(name: &str) -> (SqliteStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("adtally-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (SqliteStore::open(&dir).expect("open"), dir)
    }

    fn event(at_ms: Millis, kind: EventKind, verdict: Verdict, advertiser_id: i64, user_key: u64) -> Event {
        let served = kind != EventKind::Conversion;
        Event {
            at_ms,
            kind,
            verdict,
            decision_id: served.then_some(at_ms as u64 + 1),
            advertiser_id,
            campaign_id: served.then_some(10 * advertiser_id),
            ad_id: served.then_some(100 * advertiser_id),
            placement_id: served.then_some(1),
            user_key,
            ip_key: None,
            device: Device::Desktop,
            country: Country::UNKNOWN,
            cost_micros: 0,
            value_micros: if served { 0 } else { 7 },
        }
    }

    /// `--fsync` reaches SQLite: every connection of a power-loss-durable store, the
    /// writer's and the pooled ones, flushes at every commit (FULL = 2); a plain store
    /// at checkpoints (NORMAL = 1).
    #[test]
    fn a_power_loss_durable_store_syncs_every_commit() {
        let synchronous = |c: &Connection| c.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0));
        for (durable, expected) in [(false, 1), (true, 2)] {
            let dir = std::env::temp_dir().join(format!("adtally-store-sync-{durable}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let store = if durable { SqliteStore::open_power_loss_durable(&dir) } else { SqliteStore::open(&dir) };
            let store = store.expect("open");
            let writer = synchronous(&store.writer.lock().expect("writer").conn).expect("pragma");
            let pooled = store.with_conn(|c| Ok(synchronous(c)?)).expect("pragma");
            assert_eq!((writer, pooled), (expected, expected), "durable: {durable}");
            drop(store);
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// An edit or review computed from a stale read of an ad is refused, not written over
    /// the change that came first (an edit racing a takedown).
    #[test]
    fn a_write_from_a_stale_read_of_an_ad_is_refused() {
        use adtally_core::catalog::AdContent;
        let (store, dir) = temp_store("ad-stamp");
        let a =
            store.create_advertiser(&Advertiser::new("acme", "acme@example.com", "UTC", 1_000)).expect("advertiser");
        let k = store.create_campaign(&Campaign::draft(a.id, "Launch", 1, 100, 1)).expect("campaign");
        let content = AdContent::new(Format::Sidebar, "Launch", "https://acme.example/");
        let mut ad = store.create_ad(&Ad::new(k.id, a.id, content, 1_000)).expect("ad");
        let read = ad.stamp();
        ad.approve();
        store.review_ad(&ad, read, 2_000).expect("approve");

        // The operator takes the ad down after an advertiser's edit read it.
        let stale = ad.clone();
        let read = ad.stamp();
        ad.reject("counterfeit goods".into());
        store.review_ad(&ad, read, 3_000).expect("take down");
        let mut late = stale.clone();
        late.edit(AdContent { headline: "Sale".into(), ..stale.latest_content() }, 3_100);
        let refused = store.update_ad(&late, stale.stamp(), 3_100);
        assert!(matches!(refused, Err(StoreError::Refused { code: "ad_changed", .. })), "{refused:?}");
        assert_eq!(store.ad(ad.id).expect("read").map(|a| a.status), Some(AdStatus::Rejected));
        let gone = Ad { id: ad.id + 100, ..ad.clone() };
        assert!(matches!(store.update_ad(&gone, gone.stamp(), 3_200), Err(StoreError::NotFound(_))));

        crate::tests::racing_writes_from_one_read_of_an_ad_land_once(&store, &ad);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn touch_paths_are_one_advertisers_valid_touches_of_converting_users_by_index() {
        let (store, dir) = temp_store("touch-paths");
        let (c, i, k) = (EventKind::Conversion, EventKind::Impression, EventKind::Click);
        let day0 = 40 * DAY;
        let events = [
            event(day0 - 31 * DAY, k, Verdict::Valid, 1, 5), // before the 30-day lead
            event(day0 - 29 * DAY, k, Verdict::Valid, 1, 5), // in the lead
            event(day0 - 10, i, Verdict::Valid, 1, 5),
            event(day0 - 9, i, Verdict::Bot, 1, 5),   // invalid
            event(day0 - 8, k, Verdict::Valid, 2, 5), // another advertiser
            event(day0 - 7, k, Verdict::Valid, 1, 6), // a user who does not convert
            event(day0, c, Verdict::Valid, 1, 5),
            event(day0 + 1, c, Verdict::Duplicate, 1, 6), // not counted
            event(day0 + DAY, c, Verdict::Valid, 1, 5),   // after the range
        ];
        let mut batch: Vec<PendingEvent> = events.iter().cloned().map(PendingEvent::new).collect();
        store.append_events(day0 + DAY, &mut batch, None, &mut |_, _, _| {}).expect("append");

        let paths = store.touch_paths(1, day0, day0 + DAY, 30 * DAY, 100).expect("paths");
        assert_eq!(paths.conversions, vec![ConversionFact { user_key: 5, at_ms: day0, value_micros: 7 }]);
        let touches: Vec<(u64, Millis, TouchKind)> = paths.touches.iter().map(|(u, t)| (*u, t.at_ms, t.kind)).collect();
        assert_eq!(touches, vec![(5, day0 - 29 * DAY, TouchKind::Click), (5, day0 - 10, TouchKind::Impression)]);
        assert_eq!(paths.touches[0].1.campaign_id, 10);
        assert!(!paths.truncated);
        assert!(store.touch_paths(1, day0, day0 + DAY, 30 * DAY, 1).expect("paths").truncated);
        assert_eq!(store.touch_paths(2, day0, day0 + DAY, 30 * DAY, 100).expect("paths"), TouchPaths::default());

        // Both reads are range reads of the (advertiser, time) index.
        let plan: Vec<String> = store
            .with_conn(|c| {
                query_all(
                    c,
                    "EXPLAIN QUERY PLAN SELECT user_key FROM events WHERE advertiser_id = 1 AND at_ms >= 0
                     AND at_ms < 10 AND kind = 4 AND verdict = 0",
                    [],
                    |r| r.get::<_, String>(3),
                )
            })
            .expect("plan");
        assert!(plan.iter().any(|p| p.contains("events_advertiser_at")), "{plan:?}");
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn reach_merges_across_batches_and_the_migration_rebuilds_it_from_raw_events() {
        let (store, dir) = temp_store("reach");
        let (i, k) = (EventKind::Impression, EventKind::Click);
        let day0 = 40 * DAY;
        // Two batches into the same quarter hour, a second bucket, and events without reach.
        for (offset, users) in [(0, vec![1, 2, 2]), (60_000, vec![2, 3]), (DAY, vec![1, 4])] {
            let mut batch: Vec<PendingEvent> =
                users.iter().map(|&u| PendingEvent::new(event(day0 + offset, i, Verdict::Valid, 1, u))).collect();
            batch.push(PendingEvent::new(event(day0 + offset, i, Verdict::Bot, 1, 99)));
            batch.push(PendingEvent::new(event(day0 + offset, k, Verdict::Valid, 1, 98)));
            store.append_events(day0 + 2 * DAY, &mut batch, None, &mut |_, _, _| {}).expect("append");
        }
        let reach_of = |store: &SqliteStore, by_bucket: bool| -> Vec<(Millis, u64)> {
            let q = RollupQuery { to_ms: i64::MAX, by_bucket, reach: ReachAs::Sketches, ..Default::default() };
            let rows = store.rollup_rows(&q).expect("rows");
            assert!(rows.iter().all(|r| r.reach.is_some() == (r.kind == i && r.verdict == Verdict::Valid)));
            let mut out: Vec<_> =
                rows.iter().filter_map(|r| Some((r.bucket_ms, r.reach.as_ref()?.estimate()))).collect();
            out.sort();
            out
        };
        assert_eq!(reach_of(&store, true), vec![(day0, 3), (day0 + DAY, 2)]);
        assert_eq!(reach_of(&store, false), vec![(0, 4)]);
        assert!(store.consistency_check().expect("check").is_consistent());

        // A store from before reach (and the day layer): no column, no tables. Reopening
        // rebuilds both.
        store
            .with_conn(|c| {
                let version = DAY_LAYER_MIGRATION - 1;
                Ok(c.execute_batch(&format!(
                    "ALTER TABLE rollups DROP COLUMN reach; {DROP_DAY_LAYER} {UNDO_AFTER_DAY_LAYER}
                     PRAGMA user_version = {version};"
                ))?)
            })
            .expect("downgrade");
        drop(store);
        let store = SqliteStore::open(&dir).expect("reopen");
        assert_eq!(reach_of(&store, true), vec![(day0, 3), (day0 + DAY, 2)]);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A report's rows, with quarter hours folded into `tz`'s days as the server does,
    /// as comparable values: (period, ids, device, country) → (events per kind and
    /// verdict, spend, revenue of valid conversions, reach) — what a report sums.
    type Folded = BTreeMap<(Millis, i64, i64, i64, u8, String), (BTreeMap<(u8, u8), i64>, i128, i128, Option<u64>)>;

    fn folded(rows: Vec<RollupRow>, tz: &adtally_core::jiff::tz::TimeZone) -> Folded {
        use adtally_core::report::{period_start, Granularity};
        type Sums = (BTreeMap<(u8, u8), i64>, i128, i128, Option<Reach>);
        let mut out: BTreeMap<_, Sums> = BTreeMap::new();
        for r in rows {
            let period = if r.bucket_ms == 0 { 0 } else { period_start(r.bucket_ms, Granularity::Day, tz) };
            let key = (
                period,
                db_id(r.campaign_id),
                db_id(r.ad_id),
                db_id(r.placement_id),
                r.device.code(),
                r.country.as_str().to_owned(),
            );
            let e = out.entry(key).or_default();
            if r.sums.events != 0 {
                *e.0.entry((r.kind.code(), r.verdict.code())).or_default() += r.sums.events;
            }
            e.1 += r.sums.cost_micros;
            if r.kind == EventKind::Conversion && r.verdict.is_valid() {
                e.2 += r.sums.value_micros;
            }
            match (r.reach, &mut e.3) {
                (None, _) => {}
                (Some(Reach::Users(s)), Some(Reach::Users(users))) => users.merge(&s),
                (reach, slot @ None) => *slot = reach,
                // A counted group is a row on its own: nothing merges with it.
                (reach, slot) => panic!("two rows of one group with reach: {reach:?}, {slot:?}"),
            }
        }
        out.into_iter().map(|(k, (a, b, c, s))| (k, (a, b, c, s.map(|s| s.estimate())))).collect()
    }

    /// Every grouping and range the day layer answers gives what the quarter hours give,
    /// for advertisers in UTC, Kathmandu (+05:45) and New York (DST), for the operator,
    /// after a superseded conversion, after a time-zone change, and after the migration
    /// builds the layer from the quarter hours.
    #[test]
    fn the_day_layer_answers_exactly_what_the_quarter_hours_answer() {
        let (store, dir) = temp_store("day-layer");
        let zones = ["UTC", "Asia/Kathmandu", "America/New_York"];
        let mut ids = Vec::new();
        for (i, zone) in zones.iter().enumerate() {
            let a = store
                .create_advertiser(&Advertiser::new(&format!("a{i}"), "a@example.com", zone, 0))
                .expect("advertiser");
            ids.push(a.id);
        }
        // 2026-03-05 .. 2026-03-12 spans New York's switch to summer time (03-08).
        let start = 1_772_668_800_000_i64;
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for batch in 0..40 {
            let mut events = Vec::new();
            for _ in 0..100 {
                let advertiser_id = ids[(next() % 3) as usize];
                let kind = EventKind::ALL[(next() % 4) as usize];
                let verdict = if next() % 5 == 0 { Verdict::ALL[(next() % 9) as usize] } else { Verdict::Valid };
                let mut e =
                    event(start + (next() % (7 * DAY as u64)) as i64, kind, verdict, advertiser_id, next() % 50);
                if kind != EventKind::Conversion {
                    e.campaign_id = Some(10 * advertiser_id + (next() % 2) as i64);
                    e.ad_id = Some(100 * advertiser_id + (next() % 3) as i64);
                    e.placement_id = Some(1 + (next() % 2) as i64);
                }
                e.device = Device::ALL[(next() % 3) as usize];
                e.country = Country::parse(["DE", "IN", "US"][(next() % 3) as usize]);
                e.cost_micros = (next() % 1000) as i64;
                events.push(PendingEvent::new(e));
            }
            if batch == 5 {
                // A pixel conversion, superseded by the advertiser's postback in a later batch.
                let mut e = event(start + DAY, EventKind::Conversion, Verdict::Valid, ids[1], 7);
                e.value_micros = 5_000;
                let mut p = PendingEvent::new(e);
                p.idempotency = Some(Idempotency::Order { key: "o-1".into(), authoritative: false });
                events.push(p);
            }
            if batch == 9 {
                let mut p = PendingEvent::new(event(start + DAY, EventKind::Conversion, Verdict::Valid, ids[1], 7));
                p.idempotency = Some(Idempotency::Order { key: "o-1".into(), authoritative: true });
                events.push(p);
            }
            store.append_events(start + 8 * DAY, &mut events, None, &mut |_, _, _| {}).expect("append");
        }

        let groupings: Vec<Vec<Dimension>> = vec![
            vec![],
            vec![Dimension::Campaign],
            vec![Dimension::Ad],
            vec![Dimension::Campaign, Dimension::Ad, Dimension::Placement],
            vec![Dimension::Placement],
            vec![Dimension::Campaign, Dimension::Placement],
            vec![Dimension::Device],
            vec![Dimension::Campaign, Dimension::Device],
            vec![Dimension::Country],
            vec![Dimension::Country, Dimension::Campaign],
        ];
        let check = |store: &SqliteStore, zones: &[&str]| {
            let (mut answered, mut counted) = (0, 0);
            let who: Vec<(Option<i64>, &str)> =
                ids.iter().zip(zones).map(|(id, z)| (Some(*id), *z)).chain([(None, "UTC")]).collect();
            for (advertiser_id, zone) in who {
                let tz = adtally_core::jiff::tz::TimeZone::get(zone).expect("zone");
                let day = |d: i8| adtally_core::report::start_of_day(adtally_core::jiff::civil::date(2026, 3, d), &tz);
                for (from_ms, to_ms) in [(Millis::MIN / 2, Millis::MAX / 2), (day(6), day(9)), (day(8), day(9))] {
                    for group_by in &groupings {
                        for by_bucket in [false, true] {
                            for campaign_id in [None, advertiser_id.map(|a| 10 * a)] {
                                let q = RollupQuery {
                                    advertiser_id,
                                    campaign_id,
                                    from_ms,
                                    to_ms,
                                    by_bucket,
                                    group_by: group_by.clone(),
                                    reach: ReachAs::Sketches,
                                    days_in: Some(zone.to_owned()),
                                    ..Default::default()
                                };
                                let layer = store.with_conn(|c| day_layer(c, &q)).expect("layer");
                                let by_campaign = group_by.iter().all(|d| *d == Dimension::Campaign);
                                // Ad × placement is no dashboard view: the quarter hours answer it.
                                let one_table = DayTable::ALL.iter().any(|t| t.answers(group_by, false));
                                assert_eq!(layer.is_some(), one_table && (advertiser_id.is_some() || by_campaign));
                                answered += usize::from(layer.is_some());
                                let days = store.rollup_rows(&q).expect("days");
                                let quarters =
                                    store.rollup_rows(&RollupQuery { days_in: None, ..q.clone() }).expect("quarters");
                                assert!(!quarters.is_empty());
                                let quarters = folded(quarters, &tz);
                                assert_eq!(folded(days, &tz), quarters, "{q:?}");
                                // Counted groups (sealed days) give the same reach.
                                let counts = RollupQuery { reach: ReachAs::Counts, ..q.clone() };
                                let rows = store.rollup_rows(&counts).expect("counts");
                                counted += rows.iter().filter(|r| matches!(r.reach, Some(Reach::Counted(_)))).count();
                                assert_eq!(folded(rows, &tz), quarters, "{counts:?}");
                            }
                        }
                    }
                }
            }
            assert!(answered > 100);
            let consistency = store.consistency_check().expect("check");
            assert!(consistency.is_consistent(), "{consistency:?}");
            counted
        };
        // Nothing is sealed yet, so nothing is counted.
        assert_eq!(check(&store, &zones), 0);
        let spans = |store: &SqliteStore| {
            store
                .with_conn(|c| Ok(c.query_row("SELECT COUNT(*) FROM spans_built", [], |r| r.get::<_, i64>(0))?))
                .expect("count")
        };
        // Nothing is sealed while the first day may still get beacons; two days after
        // the last one every span is, and the campaigns' reach over ranges comes from them.
        assert_eq!(store.seal_spans(start + 2 * DAY).expect("seal"), 0);
        let early = store.seal_spans(start + 6 * DAY).expect("seal");
        let built = early + store.seal_spans(start + 40 * DAY).expect("seal");
        assert!(early > 0 && built > early + 3, "{early} {built}");
        assert_eq!(spans(&store), built as i64);
        assert_eq!(store.seal_spans(start + 40 * DAY).expect("seal"), 0);
        assert!(check(&store, &zones) > 100);

        // Kathmandu → Berlin, New York → UTC: the own-zone rows are rebuilt.
        for (id, zone) in [(ids[1], "Europe/Berlin"), (ids[2], "UTC")] {
            let mut a = store.advertiser(id).expect("read").expect("exists");
            a.timezone = zone.into();
            store.update_advertiser(&a).expect("update");
        }
        let zones = ["UTC", "Europe/Berlin", "UTC"];
        assert!(spans(&store) < built as i64);
        check(&store, &zones);
        assert!(store.seal_spans(start + 40 * DAY).expect("seal") > 0);
        check(&store, &zones);
        // And new events land in the new zone's days, a new user in a sealed day too: the
        // spans over that day go in the same batch.
        let before = spans(&store);
        let mut late = vec![
            PendingEvent::new(event(start + 2 * DAY + 60_000, EventKind::Impression, Verdict::Valid, ids[1], 3)),
            PendingEvent::new(event(start + 2 * DAY + 60_000, EventKind::Impression, Verdict::Valid, ids[0], 1 << 40)),
            PendingEvent::new(event(start + 3 * DAY + 60_000, EventKind::Click, Verdict::Valid, ids[2], 5)),
        ];
        store.append_events(start + 9 * DAY, &mut late, None, &mut |_, _, _| {}).expect("append");
        assert!(spans(&store) < before);
        check(&store, &zones);
        assert!(store.seal_spans(start + 40 * DAY).expect("seal") > 0);
        check(&store, &zones);

        // A store whose reach tables are `WITHOUT ROWID`, as first shipped, with sealed
        // spans: the migration rebuilds them as rowid tables, rows and all.
        let before_rowid = spans(&store);
        assert!(before_rowid > 0);
        let reach_tables: Vec<&str> =
            DayTable::ALL.into_iter().flat_map(|t| [t.reach_name(), spans::reach_table(t)]).collect();
        let without_rowid = |store: &SqliteStore| {
            store
                .with_conn(|c| {
                    let sql = |name: &str| -> Result<String> {
                        Ok(c.query_row("SELECT sql FROM sqlite_schema WHERE name = ?1", [name], |r| r.get(0))?)
                    };
                    reach_tables
                        .iter()
                        .map(|name| Ok(sql(name)?.ends_with("WITHOUT ROWID")))
                        .collect::<Result<Vec<bool>>>()
                })
                .expect("schema")
        };
        assert_eq!(without_rowid(&store), vec![false; reach_tables.len()]);
        store
            .with_conn(|c| {
                for name in &reach_tables {
                    let sql: String =
                        c.query_row("SELECT sql FROM sqlite_schema WHERE name = ?1", [name], |r| r.get(0))?;
                    let columns = sql.find('(').map_or("", |at| &sql[at..]);
                    c.execute_batch(&format!(
                        "CREATE TABLE {name}_old {columns} WITHOUT ROWID; INSERT INTO {name}_old SELECT * FROM {name}; DROP TABLE {name};
                         ALTER TABLE {name}_old RENAME TO {name};"
                    ))?;
                }
                Ok(c.execute_batch(&format!("PRAGMA user_version = {ROWID_REACH_MIGRATION};"))?)
            })
            .expect("first reach tables");
        assert_eq!(without_rowid(&store), vec![true; reach_tables.len()]);
        drop(store);
        let store = SqliteStore::open(&dir).expect("reopen");
        assert_eq!(without_rowid(&store), vec![false; reach_tables.len()]);
        assert_eq!(spans(&store), before_rowid);
        check(&store, &zones);

        // A store whose day layer has the first layout (sketches in a `reach` column, one
        // ad × placement table): the migration builds this one from its tables.
        store.with_conn(|c| Ok(c.execute_batch(&day_layer_v1())?)).expect("first layout");
        drop(store);
        let store = SqliteStore::open(&dir).expect("reopen");
        check(&store, &zones);

        // A store from before the day layer: the migration builds it from the quarter hours.
        store
            .with_conn(|c| {
                Ok(c.execute_batch(&format!(
                    "{DROP_DAY_LAYER} {UNDO_AFTER_DAY_LAYER} PRAGMA user_version = {DAY_LAYER_MIGRATION};"
                ))?)
            })
            .expect("downgrade");
        drop(store);
        let store = SqliteStore::open(&dir).expect("reopen");
        check(&store, &zones);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Takes a store's day layer back to its first layout (migration 7 as first shipped,
    /// at the version before the upgrade): the campaign, device and country tables with
    /// their sketches in a `reach` column, and one ad × placement table built from the
    /// quarter hours as that migration did.
    fn day_layer_v1() -> String {
        let mut sql = String::new();
        for table in [DayTable::Campaign, DayTable::Device, DayTable::Country] {
            let (sums, reach) = (table.name(), table.reach_name());
            let key: Vec<String> =
                day_key_columns(table).split(", ").map(|k| format!("{reach}.{k} = {sums}.{k}")).collect();
            sql += &format!(
                "ALTER TABLE {sums} ADD COLUMN reach BLOB;
                 UPDATE {sums} SET reach = (SELECT reach FROM {reach} WHERE {});
                 DROP TABLE {reach};",
                key.join(" AND ")
            );
        }
        let counts: Vec<String> = slots().into_iter().map(|(_, _, c)| format!("{c} INTEGER NOT NULL")).collect();
        let zone = "COALESCE(a.timezone, 'UTC')";
        sql += &format!(
            "DROP TABLE rollups_day_ad; DROP TABLE rollups_day_ad_reach; DROP TABLE rollups_day_placement;
             DROP TABLE rollups_day_placement_reach;
             CREATE TABLE rollups_day_ad (advertiser_id INTEGER NOT NULL, utc INTEGER NOT NULL,
                campaign_id INTEGER NOT NULL, day_ms INTEGER NOT NULL, ad_id INTEGER NOT NULL,
                placement_id INTEGER NOT NULL, {}, cost_micros INTEGER NOT NULL, value_micros INTEGER NOT NULL,
                revenue_micros INTEGER NOT NULL, reach BLOB,
                PRIMARY KEY (advertiser_id, utc, campaign_id, day_ms, ad_id, placement_id)) WITHOUT ROWID;
             INSERT INTO rollups_day_ad SELECT r.advertiser_id, {zone} = 'UTC', r.campaign_id,
                local_day(r.bucket_ms, {zone}) AS d, r.ad_id, r.placement_id, {}, reach_union(r.reach)
             FROM rollups r LEFT JOIN advertisers a ON a.id = r.advertiser_id
             GROUP BY r.advertiser_id, r.campaign_id, d, r.ad_id, r.placement_id;
             PRAGMA user_version = {DAY_LAYER_V2_MIGRATION};",
            counts.join(", "),
            quarter_hour_sums()
        );
        sql
    }

    /// Each table answers its reports by a range of its key that starts with the
    /// advertiser (the operator's: one range per advertiser), never by a scan; so do its
    /// span tables and the day rows between spans, for a range without days.
    #[test]
    fn day_layer_reads_are_key_ranges_of_one_advertiser() {
        let (store, dir) = temp_store("day-plans");
        let cases = [
            (DayTable::Campaign, Some(1), None, vec![Dimension::Campaign]),
            (DayTable::Campaign, None, None, vec![Dimension::Campaign]),
            (DayTable::Ad, Some(1), Some(10), vec![Dimension::Ad]),
            (DayTable::Placement, Some(1), Some(10), vec![Dimension::Placement]),
            (DayTable::Device, Some(1), Some(10), vec![Dimension::Device]),
            (DayTable::Country, Some(1), Some(10), vec![Dimension::Country]),
        ];
        // Every table read of a statement's plan: a search of its key, as described.
        let assert_key_ranges = |sql: &str, params: &[&dyn rusqlite::ToSql], table: DayTable| {
            let plan: Vec<String> = store
                .with_conn(|c| query_all(c, &format!("EXPLAIN QUERY PLAN {sql}"), params, |r| r.get::<_, String>(3)))
                .expect("plan");
            let reads: Vec<&String> =
                plan.iter().filter(|p| p.starts_with("SEARCH") || p.starts_with("SCAN")).collect();
            assert!(!reads.is_empty(), "{plan:?}");
            for read in reads.into_iter().filter(|r| !r.contains(" advertisers")) {
                assert!(
                    read.starts_with("SEARCH")
                        && (read.contains("PRIMARY KEY (advertiser_id=? AND utc=?")
                            || read.contains("INDEX sqlite_autoindex_")
                                && read.contains(" (advertiser_id=? AND utc=?")),
                    "{sql}: {plan:?}"
                );
                if table != DayTable::Campaign {
                    assert!(read.contains("campaign_id=? AND day_ms>? AND day_ms<?"), "{sql}: {plan:?}");
                } else {
                    assert!(read.contains("day_ms>? AND day_ms<?"), "{sql}: {plan:?}");
                }
            }
        };
        for (table, advertiser_id, campaign_id, group_by) in cases {
            let q = RollupQuery { advertiser_id, campaign_id, group_by, by_bucket: true, ..Default::default() };
            assert_eq!(DayTable::ALL.into_iter().find(|t| t.answers(&q.group_by, false)), Some(table));
            let days = params![0, 1, advertiser_id, campaign_id, None::<i64>, -1, true];
            assert_key_ranges(&day_sql(&q, table), days, table);
            // Spans read one advertiser at a time, whether or not the report is one's.
            let range = RollupQuery { by_bucket: false, ..q };
            for sql in spans::statements(&range, table) {
                assert_key_ranges(&sql, params![0, 1, 1, campaign_id, None::<i64>, -1, true, 2], table);
            }
        }
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Reach sketches live on overflow pages: readers map the file, beyond SQLite's
    /// default 2 GB cap (raised in .cargo/config.toml), so large stores are mapped too.
    #[test]
    fn connections_map_large_databases() {
        let (store, dir) = temp_store("mmap");
        let mapped: i64 = store.with_conn(|c| Ok(c.query_row("PRAGMA mmap_size", [], |r| r.get(0))?)).expect("pragma");
        assert!(mapped > 1 << 36, "{mapped}");
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Report statements are cached and shared by every advertiser's reports: a new
    /// advertiser, campaign, day range or span must not make SQLite prepare them again.
    #[test]
    fn report_statements_are_prepared_once_for_every_advertiser() {
        let (store, dir) = temp_store("reprepare");
        for table in DayTable::ALL {
            let group_by = vec![match table {
                DayTable::Campaign => Dimension::Campaign,
                DayTable::Ad => Dimension::Ad,
                DayTable::Placement => Dimension::Placement,
                DayTable::Device => Dimension::Device,
                DayTable::Country => Dimension::Country,
            }];
            let q = RollupQuery {
                advertiser_id: Some(1),
                campaign_id: (table != DayTable::Campaign).then_some(10),
                group_by,
                max_rows: Some(1_000),
                ..Default::default()
            };
            let mut statements = vec![day_sql(&q, table), quarter_hour_sql(&q)];
            statements.extend(spans::statements(&RollupQuery { by_bucket: false, ..q.clone() }, table));
            for sql in statements {
                let reprepared = store
                    .with_conn(|c| {
                        for i in 0..6i64 {
                            // From the cache each time, as the reports take it (which
                            // clears the bindings in between).
                            let mut stmt = c.prepare_cached(&sql)?;
                            let n = stmt.parameter_count();
                            // Callers differ in their row limits too (none is -1).
                            let limit = if i % 2 == 0 { row_limit(&q) } else { -1 };
                            let values = [i * DAY, (i + 3) * DAY, 1 + i % 3, 10 + i % 2, 0, limit, i % 2, i * DAY];
                            let mut rows = stmt.query(rusqlite::params_from_iter(&values[..n]))?;
                            while rows.next()?.is_some() {}
                        }
                        Ok(c.prepare_cached(&sql)?.get_status(rusqlite::StatementStatus::RePrepare))
                    })
                    .expect("query");
                assert_eq!(reprepared, 0, "{sql}");
            }
        }
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_advertisers_quarter_hour_report_reads_its_own_index_range() {
        let (store, dir) = temp_store("quarter-plan");
        let q = RollupQuery { advertiser_id: Some(1), by_bucket: true, ..Default::default() };
        let sql = format!("EXPLAIN QUERY PLAN {}", quarter_hour_sql(&q));
        let plan: Vec<String> = store
            .with_conn(|c| {
                query_all(c, &sql, params![0, 1, 1, None::<i64>, None::<i64>, -1], |r| r.get::<_, String>(3))
            })
            .expect("plan");
        assert!(
            plan.iter().any(|p| p.contains("rollups_advertiser (advertiser_id=? AND bucket_ms>? AND bucket_ms<?)")),
            "{plan:?}"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A restart reads every valid event of the last days, and older valid clicks only
    /// (from their own index: the statement names it, so without it the read fails).
    #[test]
    fn a_restart_reads_recent_valid_events_and_older_valid_clicks() {
        let (store, dir) = temp_store("restart-events");
        let now = 100 * DAY;
        let kinds = [EventKind::Impression, EventKind::Viewable, EventKind::Click, EventKind::Conversion];
        // At 40, 20, 5 and 0.5 days ago, committed then (the last also late: committed now).
        let mut user = 0;
        for ago in [40 * DAY, 20 * DAY, 5 * DAY, DAY / 2] {
            for kind in kinds {
                for verdict in [Verdict::Valid, Verdict::Duplicate] {
                    user += 1;
                    let at = now - ago;
                    let mut batch = vec![PendingEvent::new(event(at, kind, verdict, 1, user))];
                    store.append_events(at + 1, &mut batch, None, &mut |_, _, _| {}).expect("append");
                }
            }
        }
        let mut late = vec![PendingEvent::new(event(now - 6 * DAY, EventKind::Click, Verdict::Valid, 1, 999))];
        store.append_events(now, &mut late, None, &mut |_, _, _| {}).expect("append");
        let mut found = Vec::new();
        store.each_valid_event_since(now - DAY, now - 30 * DAY, &mut |e| found.push(e)).expect("read");
        let got: Vec<(Millis, EventKind)> = found.iter().map(|e| (now - e.at_ms, e.kind)).collect();
        assert_eq!(
            got,
            vec![
                (20 * DAY, EventKind::Click),
                (5 * DAY, EventKind::Click),
                (DAY / 2, EventKind::Impression),
                (DAY / 2, EventKind::Viewable),
                (DAY / 2, EventKind::Click),
                (DAY / 2, EventKind::Conversion),
                (6 * DAY, EventKind::Click),
            ]
        );
        assert!(found.iter().all(|e| e.verdict == Verdict::Valid));
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// What a start loads into delivery (spend per campaign, clicks and impressions per
    /// ad) comes from the day layer and the last quarter hours, and equals the sums over
    /// every quarter hour, in any advertiser's zone.
    #[test]
    fn delivery_state_loads_the_same_sums_as_every_quarter_hour_gives() {
        let (store, dir) = temp_store("delivery-sums");
        let start = 1_000 * DAY;
        let mut ids = Vec::new();
        for zone in ["UTC", "Asia/Kathmandu", "America/New_York"] {
            let a = Advertiser::new(zone, "a@example.com", zone, 0);
            ids.push(store.create_advertiser(&a).expect("advertiser").id);
        }
        let kinds = [EventKind::Impression, EventKind::Click, EventKind::Conversion];
        let mut n: u64 = 0;
        for hour in 0..(6 * 24) {
            let mut batch = Vec::new();
            for (i, &id) in ids.iter().enumerate() {
                for kind in kinds.iter().take(1 + (hour as usize + i) % 3) {
                    n += 1;
                    let verdict = if n.is_multiple_of(5) { Verdict::Duplicate } else { Verdict::Valid };
                    let mut e = event(start + hour * 3_600_000 + 60_000, *kind, verdict, id, n);
                    e.cost_micros =
                        if *kind == EventKind::Impression && verdict.is_valid() { 1_000 + n as i64 } else { 0 };
                    batch.push(PendingEvent::new(e));
                }
            }
            store
                .append_events(start + hour * 3_600_000 + 120_000, &mut batch, None, &mut |_, _, _| {})
                .expect("append");
        }
        let since = start + 3 * DAY + 5 * 3_600_000;
        let old_spend: Vec<(i64, i64, Millis, i64)> = store
            .with_conn(|c| {
                query_all(
                    c,
                    "SELECT advertiser_id, campaign_id, CASE WHEN bucket_ms >= ?1 THEN bucket_ms ELSE 0 END AS b,
                     SUM(cost_micros) FROM rollups WHERE cost_micros != 0 GROUP BY advertiser_id, campaign_id, b",
                    [since],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
            })
            .expect("quarter hours");
        let new_spend: Vec<(i64, i64, Millis, i64)> = store
            .campaign_spend(since)
            .expect("spend")
            .into_iter()
            .map(|s| (s.advertiser_id, s.campaign_id, s.bucket_ms, s.spend_micros))
            .collect();
        assert!(old_spend.len() > 150, "{}", old_spend.len());
        assert_eq!(new_spend, old_spend);
        let old_ads: Vec<(i64, i64, i64)> = store
            .with_conn(|c| {
                query_all(
                    c,
                    "SELECT ad_id, SUM(CASE WHEN kind = ?1 THEN events ELSE 0 END),
                     SUM(CASE WHEN kind = ?2 THEN events ELSE 0 END)
                     FROM rollups WHERE verdict = 0 AND kind IN (?1, ?2) GROUP BY ad_id",
                    [EventKind::Impression.code(), EventKind::Click.code()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
            })
            .expect("quarter hours");
        let mut new_ads: Vec<(i64, i64, i64)> =
            store.ad_performance().expect("ads").into_iter().map(|p| (p.ad_id, p.impressions, p.clicks)).collect();
        new_ads.sort_unstable();
        assert_eq!(old_ads.len(), ids.len());
        assert_eq!(new_ads, old_ads);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_query_returns_at_most_max_rows_plus_one() {
        let (store, dir) = temp_store("max-rows");
        let mut batch: Vec<PendingEvent> = (0..10)
            .map(|i| PendingEvent::new(event(40 * DAY + i * DAY, EventKind::Impression, Verdict::Valid, 1, 1)))
            .collect();
        store.append_events(60 * DAY, &mut batch, None, &mut |_, _, _| {}).expect("append");
        let q = |max_rows| RollupQuery { to_ms: i64::MAX, by_bucket: true, max_rows, ..Default::default() };
        assert_eq!(store.rollup_rows(&q(None)).expect("rows").len(), 10);
        assert_eq!(store.rollup_rows(&q(Some(3))).expect("rows").len(), 4);
        assert_eq!(store.rollup_rows(&q(Some(10))).expect("rows").len(), 10);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
