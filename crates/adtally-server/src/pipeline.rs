//! The event pipeline: handlers submit events, one writer thread judges them against the
//! counting rules, charges the valid impressions, and appends each batch — events and
//! rollups — in one transaction.
//!
//! Two ways in. A beacon ([`Pipeline::record`]) is appended to the journal
//! ([`adtally_store::journal`]) and answered at once: the record survives kill -9, the
//! writer commits it moments later together with the journal position it reached, and a
//! restart replays the records past that position through the same rules, in the same
//! order. Everything whose answer depends on the outcome (conversions, imports) is
//! [`Pipeline::submit`]ted and resolves after its batch committed. Either way a 2xx means
//! the event survives a crash. Reads that must see every acknowledged beacon (the API's
//! reports) wait for the writer to catch up first ([`Pipeline::caught_up`]).
//!
//! Batching is natural group commit: while a batch is being written, new submissions
//! queue up, and the next batch takes all of them (up to [`MAX_BATCH`]). Under light load
//! a batch is one event; under heavy load each fsync is shared by thousands.
//!
//! The writer is the only place where counting state and spend change, which is what
//! makes "at most one impression per decision" and "spend never exceeds the budget" hold
//! without locks around the rules themselves.
//!
//! Its [`Health`] is what `/healthz` and the decision path ask: a writer that exited
//! (panicked included: a guard sets the flag as the thread unwinds) or whose last batch
//! failed cannot record events, so no ad is served that could never be counted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use adtally_core::attribution::{LastTouches, Touch, Windows};
use adtally_core::catalog::Campaign;
use adtally_core::clock::HOUR;
use adtally_core::clock::{Clock, Millis, DAY};
use adtally_core::counting::{Arrival, CountingConfig, CountingState, DecisionRef};
use adtally_core::delivery::{CampaignLimits, DayIndex, DeliveryState, MAX_CAP_HOURS, RECENT_SPEND_MS};
use adtally_core::event::{Event, EventKind, Verdict};
use adtally_core::jiff::tz::TimeZone;
use adtally_store::journal::{Flusher, Journal};
use adtally_store::{CountedElsewhere, Idempotency, PendingEvent, RollupQuery, Store, StoreError};

use crate::cluster::ClusterSync;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::journal_record;

/// Most events one transaction takes.
pub const MAX_BATCH: usize = 4096;
/// How long the writer waits for more events when a batch is already forming, and how
/// many times in a row.
const LINGER: std::time::Duration = std::time::Duration::from_micros(100);
const MAX_LINGERS: u32 = 4;
/// How long a batch of journaled beacons alone gathers more before it is committed.
/// Nobody waits for that commit (each beacon was answered once journaled), so a longer
/// wait only makes batches larger: fewer transactions, and fewer rewrites of the same
/// rollup rows and reach sketches, per event.
const JOURNALED_LINGER: std::time::Duration = std::time::Duration::from_millis(2);
/// Submissions waiting for the writer before handlers have to wait to enqueue.
const QUEUE_DEPTH: usize = 16_384;
/// How long a read waits for the writer to catch up with the journal before it goes
/// ahead with what is committed (only a failing or stalled writer takes this long).
const CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Pause between attempts to commit journaled events whose batch failed.
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Where the beacon journal lives, and whether each append waits for the disk.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    pub dir: PathBuf,
    /// `fdatasync` every record before answering: survives power loss, not only kill -9.
    pub fsync: bool,
}

/// An event on its way to the writer, with what the rules need to judge it.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Everything but the verdict, decision (for imports) and cost, which the writer sets.
    pub event: Event,
    /// The decision a beacon belongs to; `None` for conversions, which have none.
    pub decision: Option<DecisionRef>,
    /// `bot`, `prefetch` or `datacenter`, when the request gave it away.
    pub givt: Option<Verdict>,
    /// What a valid impression of this decision costs per thousand.
    pub clearing_cpm_micros: i64,
    /// The served ad is a video (from the token).
    pub video: bool,
    /// Imported event id or conversion order id.
    pub idempotency: Option<Idempotency>,
}

impl Job {
    /// An empty job nobody waits for: the cluster tick's wake-up call.
    fn is_tick(&self) -> bool {
        self.submissions.is_empty() && self.reply.is_none() && self.journal_seq.is_none()
    }
}

/// What became of a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored {
        verdict: Verdict,
    },
    /// Its idempotency key was seen before; nothing was stored.
    AlreadyStored,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PipelineError {
    #[error("the event store failed: {0}")]
    Store(String),
    #[error("the event writer has stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<Vec<Outcome>, PipelineError>>;

/// Submissions in the writer's queue ([`Pipeline::enqueue`]).
#[must_use = "the outcome says whether the events were committed"]
pub struct Queued(oneshot::Receiver<Result<Vec<Outcome>, PipelineError>>);

impl Queued {
    /// Waits until the submissions are committed: their outcomes, in order.
    pub async fn committed(self) -> Result<Vec<Outcome>, PipelineError> {
        self.0.await.map_err(|_| PipelineError::Stopped)?
    }
}

struct Job {
    submissions: Vec<Submission>,
    /// Who waits for the commit; nobody for a journaled beacon, which was answered.
    reply: Option<Reply>,
    /// The journal record holding this job's one beacon.
    journal_seq: Option<u64>,
    /// Released when the job is done with (`None` for a replayed record).
    _permit: Option<OwnedSemaphorePermit>,
}

/// Events counted per kind and verdict since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct EventCounters {
    counts: [[AtomicU64; Verdict::ALL.len()]; EventKind::ALL.len()],
    pub batches: AtomicU64,
    pub batch_events: AtomicU64,
}

impl EventCounters {
    fn add(&self, kind: EventKind, verdict: Verdict) {
        self.counts[kind as usize - 1][verdict as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self, kind: EventKind, verdict: Verdict) -> u64 {
        self.counts[kind as usize - 1][verdict as usize].load(Ordering::Relaxed)
    }
}

/// The handle handlers use to submit events.
#[derive(Clone)]
pub struct Pipeline {
    queue: mpsc::UnboundedSender<Job>,
    /// One per job waiting for the writer: handlers wait here when it is far behind.
    permits: Arc<Semaphore>,
    journal: Option<Arc<Mutex<Journal>>>,
    flusher: Arc<Flusher>,
    /// The last journal record appended, and the last one committed.
    appended: Arc<AtomicU64>,
    applied: watch::Receiver<u64>,
    delivery: Arc<Mutex<DeliveryState>>,
    attribution: SharedAttribution,
    counters: Arc<EventCounters>,
    health: Arc<WriterHealth>,
}

/// Whether events can be recorded now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// The writer thread exited or its queue is closed: nothing will be recorded again
    /// until the process restarts.
    Stopped,
    /// The last batch failed to commit (the message says why). Cleared by the next
    /// commit that succeeds; housekeeping probes with an empty batch meanwhile.
    Failing(String),
    /// The writer has been working on one batch for longer than any healthy commit
    /// takes (a hung disk, a lock never released): events wait instead of committing.
    Stalled {
        seconds: u64,
    },
}

/// How long one batch may take before the writer counts as stalled: above SQLite's
/// 10 s busy timeout, so waiting for a lock once is not a stall.
pub const STALL_AFTER: std::time::Duration = std::time::Duration::from_secs(15);

/// Milliseconds on a monotonic clock, from 1 (0 means "not busy").
fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1
}

/// A failure the writer can be told to simulate, so tests drive its real failure paths
/// (the failed-batch branch, and a dead thread) against a real store. Not reachable
/// over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterFault {
    /// Every batch fails as if the store refused the transaction.
    FailBatches = 1,
    /// The writer thread panics on its next batch.
    Panic = 2,
    /// The writer hangs in its next batch until the fault is cleared.
    Stall = 3,
}

/// What the writer thread shares about its own state.
#[derive(Debug, Default)]
struct WriterHealth {
    exited: AtomicBool,
    failing: AtomicBool,
    failure: Mutex<String>,
    /// When the batch being written started ([`monotonic_ms`]), 0 when idle.
    busy_since_ms: AtomicU64,
    /// [`STALL_AFTER`] in milliseconds, unless a test shortened it (0: the default).
    stall_after_ms: AtomicU64,
    fault: AtomicU8,
}

impl WriterHealth {
    fn set_failure(&self, failure: Option<String>) {
        // The flag is what the hot path reads; the message only when it is set.
        if let Some(message) = failure {
            *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = message;
            self.failing.store(true, Ordering::Release);
        } else if self.failing.load(Ordering::Acquire) {
            self.failing.store(false, Ordering::Release);
        }
    }

    fn fault(&self) -> Option<WriterFault> {
        match self.fault.load(Ordering::Relaxed) {
            1 => Some(WriterFault::FailBatches),
            2 => Some(WriterFault::Panic),
            3 => Some(WriterFault::Stall),
            _ => None,
        }
    }
}

/// Marks the writer as exited when its thread ends, whether it returns or unwinds.
struct ExitFlag(Arc<WriterHealth>);

impl Drop for ExitFlag {
    fn drop(&mut self) {
        self.0.exited.store(true, Ordering::Release);
    }
}

/// Marks the writer as exited as soon as a batch panics: before the batch's replies are
/// dropped, so a handler that sees its submission fail already sees the writer dead.
struct PanicFlag<'a>(&'a WriterHealth);

impl Drop for PanicFlag<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.exited.store(true, Ordering::Release);
        }
    }
}

/// Marks the writer busy for as long as a batch is being written.
struct Busy<'a>(&'a WriterHealth);

impl<'a> Busy<'a> {
    fn start(health: &'a WriterHealth) -> Self {
        health.busy_since_ms.store(monotonic_ms(), Ordering::Release);
        Self(health)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy_since_ms.store(0, Ordering::Release);
    }
}

/// Delivery limits of a campaign, in its advertiser's time zone.
pub fn campaign_limits(c: &Campaign, timezone: TimeZone) -> CampaignLimits {
    CampaignLimits {
        advertiser_id: c.advertiser_id,
        total_budget_micros: c.total_budget_micros,
        daily_budget_micros: c.daily_budget_micros,
        pacing: c.pacing,
        frequency_cap: c.frequency_cap,
        timezone,
    }
}

/// Delivery state as the store has it: budgets, spend (per bucket for the last days, so
/// daily budgets hold across a restart), balances and ad performance.
fn load_delivery(store: &dyn Store, max_entries: usize, now: Millis) -> Result<DeliveryState, StoreError> {
    let mut state = DeliveryState::new(max_entries);
    let zones: std::collections::HashMap<i64, TimeZone> =
        store.advertisers()?.into_iter().map(|a| (a.id, TimeZone::get(&a.timezone).unwrap_or(TimeZone::UTC))).collect();
    for c in store.campaigns(None)? {
        let tz = zones.get(&c.advertiser_id).cloned().unwrap_or(TimeZone::UTC);
        state.set_campaign(c.id, campaign_limits(&c, tz));
    }
    for (advertiser_id, credits) in store.credit_totals()? {
        state.credit(advertiser_id, credits);
    }
    for spend in store.campaign_spend(now - RECENT_SPEND_MS)? {
        state.restore_spend(spend.campaign_id, spend.bucket_ms, spend.spend_micros);
    }
    for p in store.ad_performance()? {
        state.restore_performance(p.ad_id, p.impressions.max(0) as u64, p.clicks.max(0) as u64);
    }
    if let Some(cluster) = store.cluster() {
        crate::cluster::load_leases(cluster, &mut state)?;
    }
    Ok(state)
}

/// Each advertiser's attribution windows as the catalog last loaded them, which the
/// writer applies when it credits a conversion, and the longest of them, which says how
/// long it keeps touches.
#[derive(Debug, Default)]
struct AttributionSettings {
    by_advertiser: HashMap<i64, Windows>,
    longest: Windows,
}

impl AttributionSettings {
    fn new(all: impl IntoIterator<Item = (i64, Windows)>) -> Self {
        let by_advertiser: HashMap<i64, Windows> = all.into_iter().collect();
        let longest = Windows::longest(by_advertiser.values().copied());
        Self { by_advertiser, longest }
    }

    fn of(&self, advertiser_id: i64) -> Windows {
        self.by_advertiser.get(&advertiser_id).copied().unwrap_or_default()
    }
}

/// Replaced whole on every catalog load; the writer takes the current one per batch.
type SharedAttribution = Arc<RwLock<Arc<AttributionSettings>>>;

impl Pipeline {
    /// Rebuilds the hot state from the store, replays the journal's uncommitted records
    /// (with `journal`) and starts the writer thread.
    pub fn start(
        store: Arc<dyn Store>,
        config: CountingConfig,
        clock: Arc<dyn Clock>,
        journal: Option<&JournalConfig>,
    ) -> Result<Self, StoreError> {
        Self::start_with_lease_slice(store, config, clock, journal, crate::cluster::DEFAULT_LEASE_SLICE_MICROS)
    }

    /// [`Pipeline::start`] with the slice a node leases at least, when several nodes
    /// share the store (see `cluster.rs`).
    pub fn start_with_lease_slice(
        store: Arc<dyn Store>,
        config: CountingConfig,
        clock: Arc<dyn Clock>,
        journal: Option<&JournalConfig>,
        lease_slice_micros: i64,
    ) -> Result<Self, StoreError> {
        let now = clock.now_ms();
        let delivery = load_delivery(store.as_ref(), config.max_entries, now)?;
        let attribution = AttributionSettings::new(store.advertisers()?.into_iter().map(|a| (a.id, a.attribution)));
        let applied = store.journal_applied()?;
        let (applied_tx, applied_rx) = watch::channel(applied);
        let mut writer = Writer {
            store: store.clone(),
            clock,
            counting: CountingState::new(config),
            touches: LastTouches::new(config.max_entries, attribution.longest),
            attribution: Arc::new(RwLock::new(Arc::new(attribution))),
            delivery: Arc::new(Mutex::new(delivery)),
            counters: Arc::new(EventCounters::default()),
            health: Arc::new(WriterHealth::default()),
            journal: None,
            applied: applied_tx,
            retry: Vec::new(),
            cluster: store.cluster().map(|_| ClusterSync::new(lease_slice_micros, config.token_ttl_ms)),
        };
        writer.rebuild(now)?;
        // The other nodes' events are learnt from here on (the rebuild read the rest).
        writer.learn_from_cluster();
        let journal_error = |e: std::io::Error| StoreError::Database(format!("journal: {e}"));
        let journal = match journal {
            None => None,
            Some(c) => {
                let (journal, records) = Journal::open(&c.dir, applied, c.fsync).map_err(journal_error)?;
                writer.journal = Some(Arc::new(Mutex::new(journal)));
                writer.replay(records)?;
                writer.journal.clone()
            }
        };
        let appended = Arc::new(AtomicU64::new(*writer.applied.borrow()));
        let (queue, jobs) = mpsc::unbounded_channel();
        let health = writer.health.clone();
        let pipeline = Pipeline {
            queue,
            permits: Arc::new(Semaphore::new(QUEUE_DEPTH)),
            journal,
            flusher: Arc::new(Flusher::default()),
            appended,
            applied: applied_rx,
            delivery: writer.delivery.clone(),
            attribution: writer.attribution.clone(),
            counters: writer.counters.clone(),
            health,
        };
        if store.cluster().is_some() {
            // Wakes the writer every tick (to learn the other nodes' events and give back
            // idle leases) and beats, while the pipeline lives.
            let weak = pipeline.queue.downgrade();
            let ticks = weak.clone();
            std::thread::Builder::new()
                .name("adtally-tick".into())
                .spawn(move || {
                    while let Some(queue) = ticks.upgrade() {
                        let tick = Job { submissions: Vec::new(), reply: None, journal_seq: None, _permit: None };
                        if queue.send(tick).is_err() {
                            break;
                        }
                        drop(queue);
                        std::thread::sleep(crate::cluster::TICK);
                    }
                })
                .map_err(|e| StoreError::Database(format!("cannot start the tick thread: {e}")))?;
            crate::cluster::spawn_heartbeat(store.clone(), move || weak.upgrade().is_some())
                .map_err(|e| StoreError::Database(format!("cannot start the heartbeat thread: {e}")))?;
        }
        let exit_flag = ExitFlag(writer.health.clone());
        std::thread::Builder::new()
            .name("adtally-writer".into())
            .spawn(move || {
                let _exit_flag = exit_flag;
                writer.run(jobs)
            })
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(pipeline)
    }

    /// Records a beacon: with a journal, appends it there and returns without waiting
    /// for the commit (the record survives a crash and is replayed); without one, waits
    /// for the commit like [`Pipeline::submit`].
    pub async fn record(&self, submission: Submission) -> Result<(), PipelineError> {
        let (Some(journal), Some(bytes)) = (&self.journal, journal_record::encode(&submission)) else {
            return self.submit_one(submission).await.map(drop);
        };
        // A writer that cannot commit would leave the beacon in the journal until the
        // next restart: say so instead of acknowledging it.
        match self.health() {
            Health::Ok => {}
            Health::Stopped => return Err(PipelineError::Stopped),
            other => return Err(PipelineError::Store(format!("{other:?}"))),
        }
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| PipelineError::Stopped)?;
        let (seq, fsync) = {
            // Appending and queueing under one lock keeps the queue in journal order,
            // which is what makes "committed through record N" mean every record up to N.
            let mut j = journal.lock().unwrap_or_else(|p| p.into_inner());
            let seq = j.append(&bytes).map_err(|e| PipelineError::Store(format!("journal: {e}")))?;
            self.appended.store(seq, Ordering::Release);
            let job = Job { submissions: vec![submission], reply: None, journal_seq: Some(seq), _permit: Some(permit) };
            // A closed queue means the writer is gone; the record is replayed on restart.
            self.queue.send(job).map_err(|_| PipelineError::Stopped)?;
            (seq, j.fsync())
        };
        if fsync {
            let (journal, flusher) = (journal.clone(), self.flusher.clone());
            tokio::task::spawn_blocking(move || Journal::sync_through(&journal, &flusher, seq))
                .await
                .map_err(|e| PipelineError::Store(format!("journal flush: {e}")))?
                .map_err(|e| PipelineError::Store(format!("journal flush: {e}")))?;
        }
        Ok(())
    }

    /// Waits until every beacon acknowledged before this call is committed (at most
    /// [`CATCH_UP_WAIT`]): the API's reads see what the tracking endpoints answered.
    pub async fn caught_up(&self) {
        let target = self.appended.load(Ordering::Acquire);
        if *self.applied.borrow() >= target {
            return;
        }
        let mut applied = self.applied.clone();
        let _ = tokio::time::timeout(CATCH_UP_WAIT, applied.wait_for(|&a| a >= target)).await;
    }

    /// Submits events and waits until they are committed.
    pub async fn submit(&self, submissions: Vec<Submission>) -> Result<Vec<Outcome>, PipelineError> {
        self.enqueue(submissions).await?.committed().await
    }

    /// Queues events for the writer without waiting for their commit: the caller can
    /// prepare its next submissions while the writer commits these (the import does),
    /// then waits with [`Queued::committed`]. Jobs are written in the order queued.
    pub async fn enqueue(&self, submissions: Vec<Submission>) -> Result<Queued, PipelineError> {
        let (reply, answer) = oneshot::channel();
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| PipelineError::Stopped)?;
        let job = Job { submissions, reply: Some(reply), journal_seq: None, _permit: Some(permit) };
        self.queue.send(job).map_err(|_| PipelineError::Stopped)?;
        Ok(Queued(answer))
    }

    /// Submits one event and waits until it is committed.
    pub async fn submit_one(&self, submission: Submission) -> Result<Outcome, PipelineError> {
        let outcomes = self.submit(vec![submission]).await?;
        outcomes.into_iter().next().ok_or(PipelineError::Stopped)
    }

    /// Sets every advertiser's attribution windows (on each catalog load): conversions
    /// credited from now on use them.
    pub fn set_attribution_windows(&self, all: impl IntoIterator<Item = (i64, Windows)>) {
        let settings = Arc::new(AttributionSettings::new(all));
        *self.attribution.write().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    /// Budgets, balances, caps and ad quality. Hold the guard briefly: the writer needs
    /// it for every batch.
    pub fn delivery(&self) -> MutexGuard<'_, DeliveryState> {
        // A panic while holding this lock leaves plain numbers behind; keep serving.
        self.delivery.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn counters(&self) -> &EventCounters {
        &self.counters
    }

    /// Whether events can be recorded now. Cheap: two atomic loads when healthy.
    pub fn health(&self) -> Health {
        if self.health.exited.load(Ordering::Acquire) || self.queue.is_closed() {
            return Health::Stopped;
        }
        if self.health.failing.load(Ordering::Acquire) {
            return Health::Failing(self.health.failure.lock().unwrap_or_else(|p| p.into_inner()).clone());
        }
        let since = self.health.busy_since_ms.load(Ordering::Acquire);
        let limit = match self.health.stall_after_ms.load(Ordering::Relaxed) {
            0 => STALL_AFTER.as_millis() as u64,
            ms => ms,
        };
        let busy_for = if since == 0 { 0 } else { monotonic_ms().saturating_sub(since) };
        if busy_for > limit {
            return Health::Stalled { seconds: busy_for / 1000 };
        }
        Health::Ok
    }

    /// Commits an empty batch: a failing writer that can commit again is healthy again.
    pub async fn probe(&self) -> Result<(), PipelineError> {
        self.submit(Vec::new()).await.map(drop)
    }

    /// Makes the writer simulate `fault` from its next batch on (`None`: behave).
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: Option<WriterFault>) {
        self.health.fault.store(fault.map_or(0, |f| f as u8), Ordering::Relaxed);
    }

    /// Shortens [`STALL_AFTER`], so a test need not wait 15 s.
    #[doc(hidden)]
    pub fn set_stall_after(&self, after: std::time::Duration) {
        self.health.stall_after_ms.store((after.as_millis() as u64).max(1), Ordering::Relaxed);
    }
}

struct Writer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    counting: CountingState,
    touches: LastTouches,
    attribution: SharedAttribution,
    delivery: Arc<Mutex<DeliveryState>>,
    counters: Arc<EventCounters>,
    health: Arc<WriterHealth>,
    journal: Option<Arc<Mutex<Journal>>>,
    /// The last journal record committed.
    applied: watch::Sender<u64>,
    /// Journaled jobs of a batch that failed: acknowledged already, so committed before
    /// anything else, however many attempts it takes.
    retry: Vec<Job>,
    /// Leases and the other nodes' events, when several nodes share the store.
    cluster: Option<ClusterSync>,
}

impl Writer {
    /// Replays recent counted events so that a restart lets no duplicate through.
    fn rebuild(&mut self, now: Millis) -> Result<(), StoreError> {
        let config = *self.counting.config();
        self.counting = CountingState::new(config);
        let longest = self.attribution().longest;
        self.touches = LastTouches::new(config.max_entries, longest);
        let shared = self.delivery.clone();
        let mut delivery = shared.lock().unwrap_or_else(|p| p.into_inner());
        // Every counted event as long as counting, the campaigns' frequency caps or
        // view-through attribution look back; clicks as long as click-through attribution
        // does. (At 100M events a month, a day of events takes seconds to replay.)
        let since = now - config.token_ttl_ms.max(DAY).max(delivery.longest_cap_ms()).max(longest.view_ms());
        let store = self.store.clone();
        store.each_valid_event_since(since, now - longest.click_ms(), &mut |e| {
            self.remember_counted(&mut delivery, &e, now);
        })
    }

    /// Puts a counted event (stored before a restart, or counted by another node) into
    /// the counting state, the frequency caps and the touches.
    fn remember_counted(&mut self, delivery: &mut DeliveryState, e: &Event, now: Millis) {
        let config = *self.counting.config();
        // Conversions name no decision and change no counting state.
        let (Some(served), Some(decision_id)) = (Served::of(e), e.decision_id) else { return };
        if e.kind == EventKind::Impression && now - e.at_ms <= i64::from(MAX_CAP_HOURS) * HOUR {
            delivery.remember_capped_impression(served.campaign_id, e.user_key, e.at_ms);
        }
        let age = now - e.at_ms;
        let touch = e.kind == EventKind::Click
            || age <= config.token_ttl_ms.max(DAY)
            || (e.kind == EventKind::Impression && age <= self.attribution().longest.view_ms());
        if touch {
            // Decision ids start with the millisecond their token was issued, which is
            // where the live state files them.
            let decision = DecisionRef::Token { decision_id, issued_at_ms: (decision_id >> 20) as Millis };
            // Counted already: only their marks matter, not timing.
            let arrival = arrival_of(e, served.ad_id, decision, None, false);
            if now - e.at_ms <= config.token_ttl_ms {
                self.counting.remember(&arrival, decision_id, now);
            }
            self.remember_touch(e, served);
        }
    }

    fn attribution(&self) -> Arc<AttributionSettings> {
        self.attribution.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn remember_touch(&mut self, e: &Event, served: Served) {
        let touch = served.touch(e.at_ms);
        match e.kind {
            EventKind::Click => self.touches.record_click(e.user_key, e.advertiser_id, touch),
            EventKind::Impression => self.touches.record_impression(e.user_key, e.advertiser_id, touch),
            _ => {}
        }
    }

    /// Commits the journal's uncommitted records at start-up, before any new event, as
    /// if they were arriving again: each judged at its own arrival time.
    fn replay(&mut self, records: Vec<adtally_store::journal::Record>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let count = records.len();
        let mut jobs = Vec::with_capacity(records.len());
        for r in records {
            let submission =
                journal_record::decode(r.seq, &r.payload).map_err(|e| StoreError::Database(e.to_string()))?;
            jobs.push(Job { submissions: vec![submission], reply: None, journal_seq: Some(r.seq), _permit: None });
        }
        while !jobs.is_empty() {
            let rest = jobs.split_off(jobs.len().min(MAX_BATCH));
            self.write(std::mem::replace(&mut jobs, rest));
            if !self.retry.is_empty() {
                return Err(StoreError::Database(format!(
                    "cannot commit the journal's uncommitted records: {}",
                    self.health.failure.lock().unwrap_or_else(|p| p.into_inner())
                )));
            }
        }
        tracing::info!(events = count, "journal replayed: acknowledged beacons committed after a restart");
        Ok(())
    }

    fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        loop {
            let mut batch = std::mem::take(&mut self.retry);
            if batch.is_empty() {
                match jobs.blocking_recv() {
                    Some(first) => batch.push(first),
                    None => return,
                }
            } else {
                std::thread::sleep(RETRY_EVERY);
            }
            let mut size: usize = batch.iter().map(|j| j.submissions.len()).sum();
            let mut grew_since_linger = false;
            let mut lingers = 0;
            let started = std::time::Instant::now();
            let mut awaited = batch.iter().any(|j| j.reply.is_some());
            while size < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => {
                        size += job.submissions.len();
                        awaited |= job.reply.is_some();
                        batch.push(job);
                        grew_since_linger = true;
                    }
                    // In quarters of the wait, not in `LINGER` steps: each step is a
                    // sleep and a wake-up of this thread (a tenth of its time under load).
                    Err(_) if !awaited && started.elapsed() < JOURNALED_LINGER => {
                        std::thread::sleep(JOURNALED_LINGER / 4);
                    }
                    // Under load, a moment's wait fills the batch: fewer commits and
                    // fewer wake-ups per event. Keep waiting only while events keep
                    // arriving; when idle, a waited-for event goes alone at once.
                    Err(_) if grew_since_linger && lingers < MAX_LINGERS => {
                        grew_since_linger = false;
                        lingers += 1;
                        std::thread::sleep(LINGER);
                    }
                    Err(_) => break,
                }
            }
            self.write(batch);
        }
    }

    /// Judges and commits one batch.
    ///
    /// Live beacons are judged at their arrival, not at the moment the writer reaches
    /// them: a journaled beacon may wait in the queue (or, replayed after a restart,
    /// for days), and windows such as the click dedup window are about when things
    /// happened. So state expires as of the earliest arrival in the batch. Imported
    /// events keep their history's own times and are judged now, as before.
    fn write(&mut self, jobs: Vec<Job>) {
        if self.cluster.as_ref().is_some_and(ClusterSync::due) {
            self.learn_from_cluster();
        }
        if jobs.iter().all(Job::is_tick) {
            return;
        }
        // Declared after `jobs`, so dropped before it when unwinding.
        let health = self.health.clone();
        let _panic_flag = PanicFlag(&health);
        let busy = Busy::start(&health);
        let now = self.clock.now_ms();
        let journal_through = jobs.iter().filter_map(|j| j.journal_seq).max();
        let submissions: Vec<&Submission> = jobs.iter().flat_map(|j| j.submissions.iter()).collect();
        let judged_at = |s: &Submission| match s.decision {
            Some(DecisionRef::Token { .. }) => s.event.at_ms.min(now),
            _ => now,
        };
        self.counting.expire(submissions.iter().map(|s| judged_at(s)).min().unwrap_or(now));
        let mut pending: Vec<PendingEvent> = submissions
            .iter()
            .map(|s| PendingEvent {
                event: s.event.clone(),
                idempotency: s.idempotency.clone(),
                skipped_as_duplicate: false,
            })
            .collect();
        let fault = self.health.fault();
        if fault == Some(WriterFault::Panic) {
            panic!("injected writer fault: the event writer panics");
        }
        while self.health.fault() == Some(WriterFault::Stall) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let leased = match (&mut self.cluster, self.store.cluster()) {
            (Some(sync), Some(cluster)) => sync.lease_for(cluster, &self.delivery, &submissions),
            _ => Ok(()),
        };
        let result = if fault == Some(WriterFault::FailBatches) {
            Err(StoreError::Database("injected writer fault: the store refuses every batch".into()))
        } else if let Err(e) = leased {
            Err(e)
        } else {
            let attribution = self.attribution();
            self.touches.keep_for(attribution.longest);
            let counting = &mut self.counting;
            let touches = &mut self.touches;
            let delivery = &self.delivery;
            let mut past_days = PastDaySpend { store: self.store.as_ref(), now, spent: HashMap::new() };
            self.store.append_events(now, &mut pending, journal_through, &mut |i, event, elsewhere| {
                // Locked per event, not per batch: decisions read this state and must not
                // wait for the batch's inserts and commit.
                let mut delivery = delivery.lock().unwrap_or_else(|p| p.into_inner());
                let rules = Rules {
                    counting: &mut *counting,
                    touches: &mut *touches,
                    attribution: &attribution,
                    past_days: &mut past_days,
                };
                judge(rules, &mut delivery, submissions[i], event, elsewhere, judged_at(submissions[i]));
            })
        };
        // Before any reply: a handler that got its answer must not see a stall.
        drop(busy);
        match result {
            Ok(()) => {
                self.health.set_failure(None);
                if let Some(sync) = &mut self.cluster {
                    sync.charged(
                        pending.iter().filter(|p| p.event.cost_micros > 0).filter_map(|p| p.event.campaign_id),
                    );
                }
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters.batch_events.fetch_add(pending.len() as u64, Ordering::Relaxed);
                let mut outcomes = pending.into_iter().map(|p| {
                    if p.skipped_as_duplicate {
                        Outcome::AlreadyStored
                    } else {
                        self.counters.add(p.event.kind, p.event.verdict);
                        Outcome::Stored { verdict: p.event.verdict }
                    }
                });
                for job in jobs {
                    let mine: Vec<Outcome> = outcomes.by_ref().take(job.submissions.len()).collect();
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Ok(mine));
                    }
                }
                if let Some(seq) = journal_through {
                    self.applied.send_if_modified(|applied| std::mem::replace(applied, (*applied).max(seq)) < seq);
                    if let Some(journal) = &self.journal {
                        let released = journal.lock().unwrap_or_else(|p| p.into_inner()).release(seq);
                        if let Err(e) = released {
                            tracing::warn!(error = %e, "could not delete a committed journal segment");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "event batch failed; nothing in it was stored");
                if let Some(sync) = &mut self.cluster {
                    sync.reset();
                }
                self.health.set_failure(Some(e.to_string()));
                // The rules already remembered events that were not stored: start over
                // from what the store holds.
                if let Err(e) = self.rebuild_all(now) {
                    tracing::error!(error = %e, "could not rebuild state after a failed batch");
                }
                for job in jobs {
                    match job.reply {
                        Some(reply) => {
                            let _ = reply.send(Err(PipelineError::Store(e.to_string())));
                        }
                        // Acknowledged from the journal: it must still be committed.
                        None => self.retry.push(job),
                    }
                }
            }
        }
    }

    /// A cluster tick: idle leases back, credits synced, the other nodes' counted events
    /// learnt as if they had been counted here.
    fn learn_from_cluster(&mut self) {
        let (Some(sync), Some(cluster)) = (&mut self.cluster, self.store.cluster()) else { return };
        let events = match sync.tick(self.store.as_ref(), cluster, &self.delivery, self.clock.now_ms()) {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "could not learn the other nodes' events");
                return;
            }
        };
        let now = self.clock.now_ms();
        let shared = self.delivery.clone();
        let mut delivery = shared.lock().unwrap_or_else(|p| p.into_inner());
        for peer in events {
            let e = &peer.event;
            if let Some(campaign) = e.campaign_id {
                if e.cost_micros != 0 {
                    delivery.observe_spend(campaign, e.at_ms, e.cost_micros);
                }
            }
            if let Some(ad) = e.ad_id {
                match e.kind {
                    EventKind::Impression => delivery.restore_performance(ad, 1, 0),
                    EventKind::Click => delivery.restore_performance(ad, 0, 1),
                    _ => {}
                }
            }
            self.remember_counted(&mut delivery, e, now);
        }
    }

    fn rebuild_all(&mut self, now: Millis) -> Result<(), StoreError> {
        let delivery = load_delivery(self.store.as_ref(), self.counting.config().max_entries, now)?;
        *self.delivery.lock().unwrap_or_else(|p| p.into_inner()) = delivery;
        self.rebuild(now)?;
        if let Some(sync) = &mut self.cluster {
            sync.restart();
        }
        self.learn_from_cluster();
        Ok(())
    }
}

/// The campaign, ad and placement of an event that was served (every impression,
/// viewable and click; a conversion only once attributed).
#[derive(Debug, Clone, Copy)]
struct Served {
    campaign_id: i64,
    ad_id: i64,
    placement_id: i64,
}

impl Served {
    fn of(e: &Event) -> Option<Self> {
        Some(Self { campaign_id: e.campaign_id?, ad_id: e.ad_id?, placement_id: e.placement_id? })
    }

    fn touch(self, at_ms: Millis) -> Touch {
        Touch { at_ms, campaign_id: self.campaign_id, ad_id: self.ad_id, placement_id: self.placement_id }
    }
}

fn arrival_of(e: &Event, ad_id: i64, decision: DecisionRef, givt: Option<Verdict>, video: bool) -> Arrival {
    Arrival { kind: e.kind, at_ms: e.at_ms, decision, ad_id, user_key: e.user_key, ip_key: e.ip_key, givt, video }
}

/// The writer's state the rules read and change, apart from delivery.
struct Rules<'a, 's> {
    counting: &'a mut CountingState,
    touches: &'a mut LastTouches,
    attribution: &'a AttributionSettings,
    past_days: &'a mut PastDaySpend<'s>,
}

/// The spend of the days delivery does not keep ([`DeliveryState::past_day`]) that one
/// batch charges: read from the store the first time the batch meets a (campaign, day),
/// then added to here. Batch-local, so nothing can expire it half-way; the next batch
/// reads again, after this one committed. The read happens under the delivery lock, so
/// decisions wait for it: once per batch and (campaign, past day), which only imports
/// (and a journal replayed after days of downtime) reach.
struct PastDaySpend<'a> {
    store: &'a dyn Store,
    now: Millis,
    spent: HashMap<(i64, DayIndex), i64>,
}

impl PastDaySpend<'_> {
    fn of(
        &mut self,
        advertiser_id: i64,
        campaign_id: i64,
        (day, from_ms, to_ms): (DayIndex, Millis, Millis),
    ) -> &mut i64 {
        let store = self.store;
        self.spent.entry((campaign_id, day)).or_insert_with(|| {
            let query = RollupQuery {
                advertiser_id: Some(advertiser_id),
                campaign_id: Some(campaign_id),
                from_ms,
                to_ms,
                ..RollupQuery::default()
            };
            match store.rollup_rows(&query) {
                Ok(rows) => adtally_core::metrics::saturate(rows.iter().map(|r| r.sums.cost_micros).sum()),
                Err(e) => {
                    // A day that cannot be read is full: nothing is charged on it.
                    tracing::warn!(campaign_id, error = %e, "could not read a past day's spend; not charging it");
                    i64::MAX
                }
            }
        })
    }
}

/// Applies the rules to one event inside the writer's transaction.
fn judge(
    rules: Rules<'_, '_>,
    delivery: &mut DeliveryState,
    submission: &Submission,
    event: &mut Event,
    elsewhere: &CountedElsewhere,
    now: Millis,
) {
    let Rules { counting, touches, attribution, past_days } = rules;
    if event.kind == EventKind::Conversion {
        event.verdict = submission.givt.unwrap_or(Verdict::Valid);
        if event.verdict.is_valid() && event.campaign_id.is_none() {
            let windows = attribution.of(event.advertiser_id);
            if let Some(t) = touches.credit(event.user_key, event.advertiser_id, event.at_ms, windows) {
                event.campaign_id = Some(t.campaign_id);
                event.ad_id = Some(t.ad_id);
                event.placement_id = Some(t.placement_id);
            }
        }
        return;
    }
    // Tracking and import always name what was served and its decision; an event that
    // does not cannot belong to any decision.
    let (Some(served), Some(decision)) = (Served::of(event), submission.decision) else {
        event.verdict = Verdict::NoImpression;
        return;
    };
    let arrival = arrival_of(event, served.ad_id, decision, submission.givt, submission.video);
    if let DecisionRef::Token { decision_id, .. } = decision {
        for (kind, at) in [
            (EventKind::Impression, elsewhere.impression_at_ms),
            (EventKind::Viewable, elsewhere.viewable_at_ms),
            (EventKind::Click, elsewhere.click_at_ms),
        ] {
            if let Some(at_ms) = at {
                counting.learn(&Arrival { kind, at_ms, givt: None, ..arrival }, decision_id, now);
            }
        }
    }
    let judgement = counting.judge(&arrival, now);
    event.verdict = judgement.verdict;
    event.decision_id = Some(judgement.decision_id);
    if !event.verdict.is_valid() {
        return;
    }
    let touch = served.touch(event.at_ms);
    match event.kind {
        EventKind::Impression => {
            let past_day = delivery.past_day(served.campaign_id, event.at_ms, past_days.now);
            let past_day_spent = past_day.map(|day| past_days.of(event.advertiser_id, served.campaign_id, day));
            event.cost_micros = delivery.record_impression(
                served.campaign_id,
                served.ad_id,
                event.user_key,
                submission.clearing_cpm_micros,
                event.at_ms,
                past_day_spent,
            );
            touches.record_impression(event.user_key, event.advertiser_id, touch);
        }
        EventKind::Click => {
            delivery.record_click(served.ad_id);
            touches.record_click(event.user_key, event.advertiser_id, touch);
        }
        EventKind::Viewable | EventKind::Conversion => {}
    }
}
