//! The event pipeline: handlers submit events, one writer thread judges them against the
//! counting rules, charges the valid impressions, and appends each batch — events and
//! rollups — in one transaction. A handler's submission resolves only after its batch
//! committed, so a 2xx answer means the event is on disk.
//!
//! Batching is natural group commit: while a batch is being written, new submissions
//! queue up, and the next batch takes all of them (up to [`MAX_BATCH`]). Under light load
//! a batch is one event; under heavy load each fsync is shared by thousands.
//!
//! The writer is the only place where counting state and spend change, which is what
//! makes "at most one impression per decision" and "spend never exceeds the budget" hold
//! without locks around the rules themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use adtally_core::attribution::{LastTouches, Touch, CLICK_WINDOW_MS};
use adtally_core::clock::{Clock, Millis, DAY};
use adtally_core::counting::{Arrival, CountingConfig, CountingState, DecisionRef};
use adtally_core::event::{Event, EventKind, Verdict};
use adtally_core::money::CpmCarry;
use adtally_store::{PendingEvent, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Most events one transaction takes.
pub const MAX_BATCH: usize = 4096;
/// How long the writer waits for more events when a batch is already forming, and how
/// many times in a row.
const LINGER: std::time::Duration = std::time::Duration::from_micros(100);
const MAX_LINGERS: u32 = 4;
/// Submissions waiting for the writer before handlers have to wait to enqueue.
const QUEUE_DEPTH: usize = 16_384;

/// An event on its way to the writer, with what the rules need to judge it.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Everything but the verdict, decision (for imports) and cost, which the writer sets.
    pub event: Event,
    pub decision: DecisionRef,
    /// `bot`, `prefetch` or `datacenter`, when the request gave it away.
    pub givt: Option<Verdict>,
    /// What a valid impression of this decision costs per thousand.
    pub clearing_cpm_micros: i64,
    /// Idempotency key (imported event id, conversion order id).
    pub dedup_key: Option<String>,
}

/// What became of a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored {
        verdict: Verdict,
        cost_micros: i64,
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

struct Job {
    submissions: Vec<Submission>,
    reply: Reply,
}

/// Per-campaign money as the writer sees it.
#[derive(Debug, Clone, Default)]
struct CampaignMoney {
    advertiser_id: i64,
    total_budget_micros: i64,
    spent_micros: i64,
    carry: CpmCarry,
}

/// Budgets and balances, shared by the writer (which spends) and the decision path
/// (which only serves campaigns that can still pay).
#[derive(Debug, Default)]
pub struct Billing {
    campaigns: HashMap<i64, CampaignMoney>,
    balances: HashMap<i64, i64>,
}

impl Billing {
    /// Sets a campaign's budget (on start and whenever the catalog changes).
    pub fn set_budget(&mut self, campaign_id: i64, advertiser_id: i64, total_budget_micros: i64) {
        let c = self.campaigns.entry(campaign_id).or_default();
        c.advertiser_id = advertiser_id;
        c.total_budget_micros = total_budget_micros;
    }

    pub fn credit(&mut self, advertiser_id: i64, amount_micros: i64) {
        *self.balances.entry(advertiser_id).or_default() += amount_micros;
    }

    pub fn balance(&self, advertiser_id: i64) -> i64 {
        self.balances.get(&advertiser_id).copied().unwrap_or(0)
    }

    pub fn spent(&self, campaign_id: i64) -> i64 {
        self.campaigns.get(&campaign_id).map_or(0, |c| c.spent_micros)
    }

    /// Whether the campaign has budget left and its advertiser a positive balance.
    pub fn can_spend(&self, campaign_id: i64, advertiser_id: i64) -> bool {
        let budget_left = self.campaigns.get(&campaign_id).is_some_and(|c| c.spent_micros < c.total_budget_micros);
        budget_left && self.balance(advertiser_id) > 0
    }

    /// Charges one valid impression at `cpm_micros`, never past the budget or balance.
    /// What cannot be paid is not charged; the impression still counts.
    fn charge(&mut self, campaign_id: i64, cpm_micros: i64) -> i64 {
        let Some(c) = self.campaigns.get_mut(&campaign_id) else { return 0 };
        let owed = c.carry.charge(cpm_micros);
        let balance = self.balances.entry(c.advertiser_id).or_default();
        let payable = owed.min(c.total_budget_micros - c.spent_micros).min(*balance).max(0);
        c.spent_micros += payable;
        *balance -= payable;
        payable
    }

    fn record_spend(&mut self, campaign_id: i64, advertiser_id: i64, spent_micros: i64) {
        let c = self.campaigns.entry(campaign_id).or_default();
        c.advertiser_id = advertiser_id;
        c.spent_micros += spent_micros;
        *self.balances.entry(advertiser_id).or_default() -= spent_micros;
    }
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
    queue: mpsc::Sender<Job>,
    billing: Arc<Mutex<Billing>>,
    counters: Arc<EventCounters>,
}

impl Pipeline {
    /// Rebuilds the hot state from the store and starts the writer thread.
    pub fn start(store: Arc<dyn Store>, config: CountingConfig, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let now = clock.now_ms();
        let mut billing = Billing::default();
        for (advertiser_id, credits) in store.credit_totals()? {
            billing.credit(advertiser_id, credits);
        }
        for spend in store.campaign_spend()? {
            billing.record_spend(spend.campaign_id, spend.advertiser_id, spend.spend_micros);
        }
        for c in store.campaigns(None)? {
            billing.set_budget(c.id, c.advertiser_id, c.total_budget_micros);
        }
        let mut writer = Writer {
            store: store.clone(),
            clock,
            counting: CountingState::new(config),
            touches: LastTouches::new(config.max_entries),
            billing: Arc::new(Mutex::new(billing)),
            counters: Arc::new(EventCounters::default()),
        };
        writer.rebuild(now)?;
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        let pipeline = Pipeline { queue, billing: writer.billing.clone(), counters: writer.counters.clone() };
        std::thread::Builder::new()
            .name("adtally-writer".into())
            .spawn(move || writer.run(jobs))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(pipeline)
    }

    /// Submits events and waits until they are committed.
    pub async fn submit(&self, submissions: Vec<Submission>) -> Result<Vec<Outcome>, PipelineError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job { submissions, reply }).await.map_err(|_| PipelineError::Stopped)?;
        answer.await.map_err(|_| PipelineError::Stopped)?
    }

    /// Submits one event and waits until it is committed.
    pub async fn submit_one(&self, submission: Submission) -> Result<Outcome, PipelineError> {
        let outcomes = self.submit(vec![submission]).await?;
        outcomes.into_iter().next().ok_or(PipelineError::Stopped)
    }

    pub fn billing(&self) -> MutexGuard<'_, Billing> {
        // A panic while holding this lock leaves plain integers behind; keep serving.
        self.billing.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn counters(&self) -> &EventCounters {
        &self.counters
    }
}

struct Writer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    counting: CountingState,
    touches: LastTouches,
    billing: Arc<Mutex<Billing>>,
    counters: Arc<EventCounters>,
}

impl Writer {
    /// Replays recent counted events so that a restart lets no duplicate through.
    fn rebuild(&mut self, now: Millis) -> Result<(), StoreError> {
        let config = *self.counting.config();
        self.counting = CountingState::new(config);
        self.touches = LastTouches::new(config.max_entries);
        let since = now - config.token_ttl_ms.max(DAY).max(CLICK_WINDOW_MS);
        for e in self.store.valid_events_since(since)? {
            if e.kind == EventKind::Click || now - e.at_ms <= config.token_ttl_ms.max(DAY) {
                let arrival =
                    arrival_of(&e, DecisionRef::Token { decision_id: e.decision_id, issued_at_ms: e.at_ms }, None);
                if now - e.at_ms <= config.token_ttl_ms {
                    self.counting.remember(&arrival, e.decision_id, now);
                }
                self.remember_touch(&e);
            }
        }
        Ok(())
    }

    fn remember_touch(&mut self, e: &Event) {
        let touch = Touch { at_ms: e.at_ms, campaign_id: e.campaign_id, ad_id: e.ad_id, placement_id: e.placement_id };
        match e.kind {
            EventKind::Click => self.touches.record_click(e.user_key, e.advertiser_id, touch),
            EventKind::Impression => self.touches.record_impression(e.user_key, e.advertiser_id, touch),
            _ => {}
        }
    }

    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut batch = vec![first];
            let mut size = batch[0].submissions.len();
            let mut grew_since_linger = false;
            let mut lingers = 0;
            while size < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => {
                        size += job.submissions.len();
                        batch.push(job);
                        grew_since_linger = true;
                    }
                    // Under load, a moment's wait fills the batch: fewer commits and
                    // fewer wake-ups per event. Keep waiting only while events keep
                    // arriving; when idle, the first event goes alone at once.
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

    fn write(&mut self, jobs: Vec<Job>) {
        let now = self.clock.now_ms();
        self.counting.expire(now);
        let submissions: Vec<&Submission> = jobs.iter().flat_map(|j| j.submissions.iter()).collect();
        let mut pending: Vec<PendingEvent> = submissions
            .iter()
            .map(|s| PendingEvent {
                event: s.event.clone(),
                dedup_key: s.dedup_key.clone(),
                skipped_as_duplicate: false,
            })
            .collect();
        let result = {
            let mut billing = self.billing.lock().unwrap_or_else(|p| p.into_inner());
            let counting = &mut self.counting;
            let touches = &mut self.touches;
            self.store.append_events(now, &mut pending, &mut |i, event| {
                judge(counting, touches, &mut billing, submissions[i], event, now);
            })
        };
        match result {
            Ok(()) => {
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters.batch_events.fetch_add(pending.len() as u64, Ordering::Relaxed);
                let mut outcomes = pending.into_iter().map(|p| {
                    if p.skipped_as_duplicate {
                        Outcome::AlreadyStored
                    } else {
                        self.counters.add(p.event.kind, p.event.verdict);
                        Outcome::Stored { verdict: p.event.verdict, cost_micros: p.event.cost_micros }
                    }
                });
                for job in jobs {
                    let mine: Vec<Outcome> = outcomes.by_ref().take(job.submissions.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "event batch failed; nothing in it was stored");
                // The rules already remembered events that were not stored: start over
                // from what the store holds.
                if let Err(e) = self.rebuild_all(now) {
                    tracing::error!(error = %e, "could not rebuild state after a failed batch");
                }
                for job in jobs {
                    let _ = job.reply.send(Err(PipelineError::Store(e.to_string())));
                }
            }
        }
    }

    fn rebuild_all(&mut self, now: Millis) -> Result<(), StoreError> {
        let mut billing = Billing::default();
        for (advertiser_id, credits) in self.store.credit_totals()? {
            billing.credit(advertiser_id, credits);
        }
        for spend in self.store.campaign_spend()? {
            billing.record_spend(spend.campaign_id, spend.advertiser_id, spend.spend_micros);
        }
        for c in self.store.campaigns(None)? {
            billing.set_budget(c.id, c.advertiser_id, c.total_budget_micros);
        }
        *self.billing.lock().unwrap_or_else(|p| p.into_inner()) = billing;
        self.rebuild(now)
    }
}

fn arrival_of(e: &Event, decision: DecisionRef, givt: Option<Verdict>) -> Arrival {
    Arrival { kind: e.kind, at_ms: e.at_ms, decision, ad_id: e.ad_id, user_key: e.user_key, ip_key: e.ip_key, givt }
}

/// Applies the rules to one event inside the writer's transaction.
fn judge(
    counting: &mut CountingState,
    touches: &mut LastTouches,
    billing: &mut Billing,
    submission: &Submission,
    event: &mut Event,
    now: Millis,
) {
    if event.kind == EventKind::Conversion {
        event.verdict = submission.givt.unwrap_or(Verdict::Valid);
        if event.verdict.is_valid() && event.campaign_id == 0 {
            if let Some(t) = touches.credit(event.user_key, event.advertiser_id, event.at_ms) {
                event.campaign_id = t.campaign_id;
                event.ad_id = t.ad_id;
                event.placement_id = t.placement_id;
            }
        }
        return;
    }
    let judgement = counting.judge(&arrival_of(event, submission.decision, submission.givt), now);
    event.verdict = judgement.verdict;
    event.decision_id = judgement.decision_id;
    if !event.verdict.is_valid() {
        return;
    }
    let touch = Touch {
        at_ms: event.at_ms,
        campaign_id: event.campaign_id,
        ad_id: event.ad_id,
        placement_id: event.placement_id,
    };
    match event.kind {
        EventKind::Impression => {
            event.cost_micros = billing.charge(event.campaign_id, submission.clearing_cpm_micros);
            touches.record_impression(event.user_key, event.advertiser_id, touch);
        }
        EventKind::Click => touches.record_click(event.user_key, event.advertiser_id, touch),
        EventKind::Viewable | EventKind::Conversion => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_exactly_at_the_budget_and_the_balance() {
        let mut b = Billing::default();
        b.set_budget(1, 10, 2_500);
        b.credit(10, 1_000_000);
        let total: i64 = (0..10).map(|_| b.charge(1, 1_000_000)).sum();
        assert_eq!(total, 2_500);
        assert!(!b.can_spend(1, 10));

        let mut b = Billing::default();
        b.set_budget(1, 10, 1_000_000);
        b.set_budget(2, 10, 1_000_000);
        b.credit(10, 1_500);
        let total: i64 = (0..4).map(|i| b.charge(1 + i % 2, 1_000_000)).sum();
        assert_eq!(total, 1_500);
        assert_eq!(b.balance(10), 0);
    }
}
