//! Storage for adtally: the [`Store`] trait the server talks to, its embedded SQLite
//! implementation, and the PostgreSQL one that several nodes share (which also
//! implements [`Cluster`]). Nothing outside this crate knows which database is
//! underneath.
//!
//! Events are only ever appended, in batches, by one writer per node ([`Store::append_events`]);
//! each batch's rollups are aggregated in memory and upserted in the same transaction,
//! so the rollups always equal a `GROUP BY` over the raw events.

mod columns;
pub mod journal;
mod postgres;
mod rollup;
mod spans;
mod sqlite;

use std::collections::BTreeMap;

use adtally_core::attribution::{ConversionFact, PathTouch};
use adtally_core::catalog::{Ad, AdStamp, Advertiser, Campaign, CreditKind, LedgerEntry, Placement};
use adtally_core::clock::Millis;
use adtally_core::event::Event;

pub use postgres::PgStore;
pub use rollup::{DayTable, Reach, ReachAs, RollupKey, RollupQuery, RollupRow, RollupSums};
pub use sqlite::{BackupSummary, DataDirLock, SqliteStore, LOCK_FILE};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} was not found")]
    NotFound(String),
    /// The store refused a request that broke a rule it enforces atomically.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
}

/// An ad's stamp as a store reads it back: version, status, and the revision's version
/// and status, as stored.
type StoredStamp = (i64, String, Option<i64>, Option<String>);

/// Refuses a write made from a stale read of ad `id` (see [`Store::update_ad`]): two
/// writers that read the same ad cannot both write, so an edit cannot undo a takedown that
/// landed after it read the ad, nor an approval apply to content that changed meanwhile.
fn check_ad_stamp(id: i64, stored: Option<StoredStamp>, read: AdStamp) -> Result<()> {
    let Some((version, status, revision_version, revision_status)) = stored else {
        return Err(StoreError::NotFound(format!("ad {id}")));
    };
    let expected_revision = read.revision.map(|(v, s)| (i64::from(v), s.as_str()));
    let same = version == i64::from(read.version)
        && status == read.status.as_str()
        && revision_version.zip(revision_status.as_deref()) == expected_revision;
    if same {
        Ok(())
    } else {
        Err(StoreError::Refused {
            code: "ad_changed",
            message: format!("ad {id} changed since it was read; read it again and retry"),
        })
    }
}

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: i64,
    pub advertiser_id: Option<i64>,
    pub created_at_ms: Millis,
    pub last_used_at_ms: Option<Millis>,
    pub revoked_at_ms: Option<Millis>,
}

/// An ad version that was approved, and where its clicks go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedVersion {
    pub ad_id: i64,
    pub version: u32,
    pub target_url: String,
}

/// A promo code the operator created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromoCode {
    pub code: String,
    pub amount_micros: i64,
    pub expires_at_ms: Option<Millis>,
    pub max_redemptions: i64,
    pub created_at_ms: Millis,
}

/// Who changed what, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_ms: Millis,
    /// `admin` or `advertiser:ID`.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// What attributing one advertiser's conversions of a range needs: the valid
/// conversions in the range, and the valid clicks and impressions of the users who
/// converted, from its click window before the range to its end, in time order (equal times in
/// commit order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TouchPaths {
    pub conversions: Vec<ConversionFact>,
    /// (user key, touch).
    pub touches: Vec<(u64, PathTouch)>,
    /// More rows than the limit asked for: the lists are incomplete.
    pub truncated: bool,
}

/// What other writers (other nodes on a shared PostgreSQL) already counted for an event's
/// decision, and when. The judge learns it before it judges the event, so "at most one
/// counted impression, viewable and click per decision" holds whichever node each
/// beacon reaches. Always empty with one writer (SQLite): its own state knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountedElsewhere {
    pub impression_at_ms: Option<Millis>,
    pub viewable_at_ms: Option<Millis>,
    pub click_at_ms: Option<Millis>,
}

impl CountedElsewhere {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Sets an event's verdict and cost; see [`Store::append_events`].
pub type Judge<'a> = dyn FnMut(usize, &mut Event, &CountedElsewhere) + 'a;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Who an API key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOwner {
    Admin,
    Advertiser(i64),
}

/// A dashboard sign-in. The store keeps only the hash of the session id, so reading the
/// database does not let anyone act as a signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub owner: KeyOwner,
    /// Hash of the API key the session was opened with: revoking the key ends it.
    pub key_hash: String,
    /// Sent back in `X-CSRF-Token` with every state-changing request.
    pub csrf_token: String,
    pub created_at_ms: Millis,
    pub last_seen_at_ms: Millis,
    /// Absolute end, however active the session is.
    pub expires_at_ms: Millis,
}

/// A stored session and whether the key it was opened with is still an unrevoked key
/// in the store (the configured admin key is not stored there; the server checks it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundSession {
    pub session: Session,
    pub key_live: bool,
}

/// What makes an event unique beyond its own id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idempotency {
    /// An imported event's id: an event whose id was stored before is skipped.
    Import(String),
    /// A conversion's order id (the key names the advertiser). An `authoritative` one
    /// (the advertiser's authenticated postback, or the operator's import) replaces a
    /// pixel conversion stored under the same order id, which becomes `duplicate`; a
    /// pixel never replaces anything, and an order id already held by an
    /// authoritative conversion is skipped.
    Order { key: String, authoritative: bool },
}

/// An event on its way into the store.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub event: Event,
    pub idempotency: Option<Idempotency>,
    /// Set by the store: the key was seen before and the event was not stored.
    pub skipped_as_duplicate: bool,
}

impl PendingEvent {
    pub fn new(event: Event) -> Self {
        Self { event, idempotency: None, skipped_as_duplicate: false }
    }
}

/// Spend of a campaign in one rollup bucket, or (bucket 0) everything before the
/// requested start, for rebuilding the delivery state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CampaignSpend {
    pub advertiser_id: i64,
    pub campaign_id: i64,
    pub bucket_ms: Millis,
    pub spend_micros: i64,
}

/// An ad's counted impressions and clicks over its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdPerformance {
    pub ad_id: i64,
    pub impressions: i64,
    pub clicks: i64,
}

/// Events, cost and value of one advertiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub events: i64,
    pub cost_micros: i128,
    pub value_micros: i128,
}

/// Totals per advertiser over the raw events and over the rollups; equal, advertiser by
/// advertiser, when the store is consistent. Grand totals alone would hide events
/// credited to the wrong advertiser.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsistencyCheck {
    pub raw: BTreeMap<i64, Totals>,
    pub rollups: BTreeMap<i64, Totals>,
    /// Each part of the day layer against the quarter-hour rollups it is derived from,
    /// over all time (retention keeps both): (part, quarter hours, days).
    pub day_layer: Vec<DayLayerCheck>,
}

/// (part of the day layer, totals of the quarter hours it covers, its own totals).
pub type DayLayerCheck = (String, BTreeMap<i64, Totals>, BTreeMap<i64, Totals>);

impl ConsistencyCheck {
    pub fn is_consistent(&self) -> bool {
        self.raw == self.rollups && self.day_layer.iter().all(|(_, quarter_hours, days)| quarter_hours == days)
    }

    /// Raw events over all advertisers.
    pub fn raw_events(&self) -> i64 {
        self.raw.values().map(|t| t.events).sum()
    }

    /// Raw cost over all advertisers.
    pub fn raw_cost_micros(&self) -> i128 {
        self.raw.values().map(|t| t.cost_micros).sum()
    }
}

/// What a node leased of a campaign's budget (see [`Cluster::lease`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// Days since 1970-01-01 in the campaign's advertiser's zone.
    pub day: i32,
    /// Leased and not yet spent by this node.
    pub left_micros: i64,
}

/// What is left of campaigns' budgets for new decisions (see [`Cluster::room`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Room {
    /// Nodes alive now, this one included.
    pub live_nodes: usize,
    /// (campaign, local day, micros).
    pub campaigns: Vec<(i64, i32, i64)>,
}

/// An event another node committed.
#[derive(Debug, Clone)]
pub struct PeerEvent {
    pub id: i64,
    pub event: Event,
}

/// What several nodes on one database need beyond [`Store`]: budget leases, liveness and
/// each other's events. Only a shared database implements it (PostgreSQL).
pub trait Cluster: Send + Sync {
    /// This node's id in the database's registry.
    fn node_id(&self) -> i64;
    /// This node's decision-id slot: no other live node has it (`0..64`).
    fn decision_slot(&self) -> u64;
    /// Leases up to `want_micros` more of the campaign's budget for `day` (its local
    /// day), atomically against its total and daily budget and its advertiser's balance,
    /// counting what every live node holds; returns this node's lease of that day as it
    /// now stands.
    fn lease(&self, campaign_id: i64, day: i32, want_micros: i64) -> Result<LeaseGrant>;
    /// For each (campaign, local day): what is left of its budget for new decisions —
    /// the least of its total room, its day's room and its advertiser's balance, after
    /// all spend and every other live node's unspent lease (this node's own lease is
    /// room: alone, its decisions' beacons come back to it). Campaigns that are not
    /// active are left out. With the number of live nodes (this one included).
    fn room(&self, campaign_days: &[(i64, i32)]) -> Result<Room>;
    /// This node's leases, as the database has them (after a restart or a failed batch).
    fn leases(&self) -> Result<Vec<(i64, LeaseGrant)>>;
    /// Gives back what is left of this node's leases of these campaigns.
    fn release(&self, campaign_ids: &[i64]) -> Result<()>;
    /// Tells the database this node is alive. A node silent for longer than the lease
    /// timeout counts as dead and its leases as free; if that happened, this gives its
    /// leases back and returns `false`.
    fn heartbeat(&self) -> Result<bool>;
    /// Forgets the per-decision claims of beacons from before `before_ms`: no token that
    /// old is valid any more, so no beacon can need them. Returns how many.
    fn forget_claims_before(&self, before_ms: Millis) -> Result<u64>;
    /// Valid events other nodes committed from `since_ms` on (the database's clock), and
    /// the database's time now.
    fn peer_events(&self, since_ms: Millis) -> Result<(Millis, Vec<PeerEvent>)>;
}

/// Everything the server needs from storage. Methods block; async callers run them on
/// a blocking thread.
pub trait Store: Send + Sync + 'static {
    /// `Some` when several nodes share this store (PostgreSQL): budgets are spent only
    /// through leases, and each node learns the others' events from it.
    fn cluster(&self) -> Option<&dyn Cluster> {
        None
    }

    // Settings kept with the data.
    fn meta(&self, key: &str) -> Result<Option<String>>;
    /// Stores `value` unless the key has one; returns the value now stored.
    fn meta_init(&self, key: &str, value: &str) -> Result<String>;

    // Accounts and keys.
    /// Inserts an advertiser (its `id` is ignored) and returns it with its id.
    fn create_advertiser(&self, advertiser: &Advertiser) -> Result<Advertiser>;
    fn update_advertiser(&self, advertiser: &Advertiser) -> Result<()>;
    fn advertiser(&self, id: i64) -> Result<Option<Advertiser>>;
    fn advertisers(&self) -> Result<Vec<Advertiser>>;
    /// Stores a key's hash; returns the key's id.
    fn add_api_key(&self, owner: KeyOwner, key_hash: &str, now: Millis) -> Result<i64>;
    /// The owner of an unrevoked key, noting when it was last used.
    fn api_key_owner(&self, key_hash: &str, now: Millis) -> Result<Option<KeyOwner>>;
    fn api_keys(&self, advertiser_id: i64) -> Result<Vec<ApiKeyInfo>>;
    /// Revokes an advertiser key (of `advertiser_id`, when given) and ends the sessions
    /// opened with it, in one transaction; false if no key matched.
    fn revoke_api_key(&self, key_id: i64, advertiser_id: Option<i64>, now: Millis) -> Result<bool>;

    // Dashboard sessions, by the hash of their id.
    fn create_session(&self, id_hash: &str, session: &Session) -> Result<()>;
    /// The session with this id hash, as stored before this call; notes `now` as its last
    /// use (at most one write a minute per session, so reads stay reads).
    fn session(&self, id_hash: &str, now: Millis) -> Result<Option<FoundSession>>;
    /// Ends a session; false if there was none.
    fn delete_session(&self, id_hash: &str) -> Result<bool>;
    /// Deletes sessions past their absolute end at `now` or unused since `idle_since`.
    fn purge_sessions(&self, now: Millis, idle_since: Millis) -> Result<usize>;

    // Promo codes and the audit log.
    fn create_promo(&self, promo: &PromoCode) -> Result<()>;
    /// Redeems a code for an advertiser atomically: once per advertiser, within its
    /// expiry and redemption limit; the credit is written in the same transaction.
    fn redeem_promo(&self, code: &str, advertiser_id: i64, now: Millis) -> Result<LedgerEntry>;
    fn audit(&self, entry: &AuditEntry) -> Result<()>;
    /// The newest entries first.
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>>;

    // Money in.
    fn add_credit(
        &self,
        advertiser_id: i64,
        kind: CreditKind,
        amount_micros: i64,
        note: Option<&str>,
        now: Millis,
    ) -> Result<LedgerEntry>;
    /// A top-up and the bonus it earns, in one transaction: both or neither.
    fn add_topup(
        &self,
        advertiser_id: i64,
        amount_micros: i64,
        note: Option<&str>,
        bonus_micros: Option<i64>,
        now: Millis,
    ) -> Result<(LedgerEntry, Option<LedgerEntry>)>;
    /// Sum of credits per advertiser.
    fn credit_totals(&self) -> Result<Vec<(i64, i64)>>;
    /// The credits of one advertiser, in the order they were written. (The ledger's
    /// spend per local day is a report read: see the server's `/v1/ledger`.)
    fn credits(&self, advertiser_id: i64) -> Result<Vec<LedgerEntry>>;

    // Placements, campaigns, ads.
    fn create_placement(
        &self,
        slug: &str,
        name: &str,
        format: adtally_core::catalog::Format,
        floor_cpm_micros: i64,
    ) -> Result<Placement>;
    fn placements(&self) -> Result<Vec<Placement>>;
    /// Inserts a campaign (its `id` is ignored) and returns it with its id.
    fn create_campaign(&self, campaign: &Campaign) -> Result<Campaign>;
    /// Inserts a campaign and its ads (their `campaign_id` is the new campaign's) in one
    /// transaction, as a clone needs.
    fn create_campaign_with_ads(&self, campaign: &Campaign, ads: &[Ad]) -> Result<Campaign>;
    fn update_campaign(&self, campaign: &Campaign) -> Result<()>;
    fn campaign(&self, id: i64) -> Result<Option<Campaign>>;
    fn campaigns(&self, advertiser_id: Option<i64>) -> Result<Vec<Campaign>>;
    /// Inserts an ad (its `id` is ignored) and returns it with its id.
    fn create_ad(&self, ad: &Ad) -> Result<Ad>;
    /// Writes an ad and its revision, if the stored ad still stands where `read` says it
    /// did when the change was made (else [`StoreError::Refused`] `ad_changed`, and nothing
    /// is written). Whenever the ad is approved, the target URL of its version is kept for
    /// good (see [`Store::approved_versions`]).
    fn update_ad(&self, ad: &Ad, read: AdStamp, now: Millis) -> Result<()>;
    /// A review's outcome, in one transaction: the ad as [`Store::update_ad`] writes it
    /// (on the same condition), and its campaign activated if it was waiting for review
    /// and the ad is approved.
    fn review_ad(&self, ad: &Ad, read: AdStamp, now: Millis) -> Result<()>;
    /// The target URL of every ad version ever approved.
    fn approved_versions(&self) -> Result<Vec<ApprovedVersion>>;
    fn ad(&self, id: i64) -> Result<Option<Ad>>;
    fn ads(&self, campaign_id: Option<i64>) -> Result<Vec<Ad>>;

    // Events.
    /// Appends a batch in one transaction, with ids that start with `now_ms`. For each
    /// event whose idempotency key is new or absent (or an authoritative order that
    /// replaces a pixel's; see [`Idempotency`]), calls `judge` with its index and what
    /// other writers counted for its decision — the judge sets the verdict and cost — then
    /// stores it and its rollup. `journal_through`, the last
    /// [`journal`] record the batch contains, is recorded in the same transaction (see
    /// [`Store::journal_applied`]). Only the single event writer calls this.
    fn append_events(
        &self,
        now_ms: Millis,
        batch: &mut [PendingEvent],
        journal_through: Option<u64>,
        judge: &mut Judge<'_>,
    ) -> Result<()>;
    /// The last journal record a committed batch contained (0: none ever): the records
    /// after it are the ones to replay.
    fn journal_applied(&self) -> Result<u64> {
        match self.meta("journal_applied")? {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| StoreError::Database(format!("journal_applied is not a number: {v:?}"))),
        }
    }
    /// Valid events for rebuilding the counting state after a restart, in commit order:
    /// every one that happened at or after `since_ms`, and the clicks that happened at
    /// or after `clicks_since_ms` (earlier: attribution keeps clicks for up to 90 days,
    /// and nothing else needs events that old — at 100M events a month, reading every
    /// event of the click window made a restart take minutes). Each is handed to `each`
    /// as it is read: a day of a busy store is millions of events, too many to hold.
    fn each_valid_event_since(
        &self,
        since_ms: Millis,
        clicks_since_ms: Millis,
        each: &mut dyn FnMut(Event),
    ) -> Result<()>;
    /// Spend per campaign: per bucket from `since_ms` on, summed before it (bucket 0);
    /// one row per campaign and bucket.
    fn campaign_spend(&self, since_ms: Millis) -> Result<Vec<CampaignSpend>>;
    fn ad_performance(&self) -> Result<Vec<AdPerformance>>;
    fn rollup_rows(&self, query: &RollupQuery) -> Result<Vec<RollupRow>>;
    /// The touch path for attributing `advertiser_id`'s conversions in
    /// `[from_ms, to_ms)`: touches from `lookback_ms` (its click window) before the range
    /// on; at most `limit` conversions and `limit` touches (else `truncated`). Only that
    /// advertiser's events: other advertisers' touches on the same user never count.
    fn touch_paths(
        &self,
        advertiser_id: i64,
        from_ms: Millis,
        to_ms: Millis,
        lookback_ms: Millis,
        limit: usize,
    ) -> Result<TouchPaths>;
    /// Compares raw events and rollups per advertiser, over the time raw events are
    /// still kept (see [`Store::purge_events_before`]), and the day layer with the
    /// quarter-hour rollups over all time.
    fn consistency_check(&self) -> Result<ConsistencyCheck>;
    /// Retention: deletes at most `max_rows` raw events that happened before `before_ms`
    /// (rounded down to a rollup bucket), keeping their rollups, so reports still cover
    /// them. Returns how many were deleted; call again until it returns less than
    /// `max_rows`. Short transactions: the event writer is never held up for long.
    fn purge_events_before(&self, before_ms: Millis, max_rows: usize) -> Result<usize>;
    /// Builds what makes reports over long ranges cheap once their days can no longer
    /// change (SQLite: sums and reach over aligned spans of days, `spans.rs`); reports
    /// answer the same with or without it. Returns how much it built. Call now and then.
    fn seal_spans(&self, _now_ms: Millis) -> Result<usize> {
        Ok(0)
    }

    // Weekly email reports.
    /// Opts an advertiser in (the default) or out.
    fn set_weekly_report(&self, advertiser_id: i64, enabled: bool, now: Millis) -> Result<()>;
    fn weekly_report_optouts(&self) -> Result<Vec<i64>>;
    /// Records in the sent-mail log that `report` (e.g. `weekly:2026-11-23`) goes to
    /// the advertiser; false when it was claimed before. Claimed before sending: a crash
    /// between the two loses that report rather than ever sending it twice.
    fn claim_mail(&self, advertiser_id: i64, report: &str, now: Millis) -> Result<bool>;
    /// Takes back a claim whose mail could not be sent (the mail server was down), so a
    /// later pass sends it.
    fn release_mail(&self, advertiser_id: i64, report: &str) -> Result<()>;
}

/// Checks both stores run alike.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use adtally_core::catalog::AdContent;

    /// Eight writers read `ad` once and each writes its own edit at the same moment: one
    /// lands, seven are refused `ad_changed`, and the stored ad is the one that landed.
    /// Without the store's check every write lands and the last one silently wins.
    pub(crate) fn racing_writes_from_one_read_of_an_ad_land_once(store: &dyn Store, ad: &Ad) {
        let read = ad.stamp();
        let outcomes: Vec<(Ad, Result<()>)> = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..8)
                .map(|i| {
                    scope.spawn(move || {
                        let mut edited = ad.clone();
                        let target = format!("https://race.example/{i}");
                        edited.edit(AdContent { target_url: target, ..ad.latest_content() }, 10_000 + i);
                        let outcome = store.update_ad(&edited, read, 10_000 + i);
                        (edited, outcome)
                    })
                })
                .collect();
            writers.into_iter().map(|w| w.join().expect("writer")).collect()
        });
        let landed: Vec<&Ad> = outcomes.iter().filter(|(_, o)| o.is_ok()).map(|(a, _)| a).collect();
        assert_eq!(landed.len(), 1, "{:?}", outcomes.iter().map(|(_, o)| o).collect::<Vec<_>>());
        assert!(outcomes
            .iter()
            .all(|(_, o)| matches!(o, Ok(()) | Err(StoreError::Refused { code: "ad_changed", .. }))));
        assert_eq!(store.ad(ad.id).expect("read").as_ref(), Some(landed[0]));
    }
}
