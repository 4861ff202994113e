//! The writer's side of several nodes on one database (issue 13): leasing budget before
//! a batch is judged, giving idle leases back, learning the other nodes' counted events,
//! and the heartbeat.
//!
//! What each node learns from the others arrives within one tick ([`TICK`]) plus the
//! commit: their counted events (so per-decision marks, click dedup windows, click
//! limits, frequency caps, spend and pacing see the whole cluster's traffic) and their
//! credits. Within that window a node judges with what it knows; money never depends on
//! it (leases and the database's checks do), and "one impression, viewable and click per
//! decision" is the database's own unique key.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adtally_core::clock::Millis;
use adtally_core::delivery::{DeliveryState, Lease};
use adtally_core::event::EventKind;
use adtally_store::{Cluster, PeerEvent, Store, StoreError};

use crate::pipeline::Submission;

/// How often the writer wakes to learn the other nodes' events and give back idle leases.
pub const TICK: Duration = Duration::from_millis(250);
/// How often a node tells the database it is alive (the lease timeout is ten times this).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A lease untouched this long is given back for other nodes to use.
pub const IDLE_LEASE: Duration = Duration::from_secs(1);
/// Peer events are read again this far back (the database's clock): a batch's insert
/// time precedes its commit, so a batch may become visible after a later one.
const PEER_OVERLAP_MS: Millis = 5_000;
/// What a node leases at least, when it leases (1.00 in the account currency).
pub const DEFAULT_LEASE_SLICE_MICROS: i64 = 1_000_000;

/// The writer's cluster bookkeeping.
pub struct ClusterSync {
    slice_micros: i64,
    /// Claims older than this (the token TTL and a margin) are forgotten.
    claims_kept_ms: Millis,
    last_forget: Option<Instant>,
    last_tick: Option<Instant>,
    last_credits: Option<Instant>,
    /// Peer events are read from here on (the database's clock).
    peer_cursor: Option<Millis>,
    /// Peer events already learnt, with the cursor when they were seen, until they are
    /// out of the overlap.
    seen: HashMap<i64, Millis>,
    /// When each campaign's lease here was last leased or charged.
    last_charged: HashMap<i64, Instant>,
}

impl ClusterSync {
    pub fn new(slice_micros: i64, token_ttl_ms: Millis) -> Self {
        Self {
            slice_micros: slice_micros.max(1),
            claims_kept_ms: token_ttl_ms.max(0).saturating_add(adtally_core::clock::HOUR),
            last_forget: None,
            last_tick: None,
            last_credits: None,
            peer_cursor: None,
            seen: HashMap::new(),
            last_charged: HashMap::new(),
        }
    }

    /// Leases, before a batch is judged, what its impressions may cost: for each
    /// campaign and local day, up to one slice more whenever the lease would not cover
    /// every impression at its clearing price. Fails (and so fails the batch, which is
    /// retried) when the database cannot be asked.
    pub fn lease_for(
        &mut self,
        cluster: &dyn Cluster,
        delivery: &Mutex<DeliveryState>,
        submissions: &[&Submission],
    ) -> Result<(), StoreError> {
        let mut need: BTreeMap<(i64, i32), i64> = BTreeMap::new();
        {
            let delivery = delivery.lock().unwrap_or_else(|p| p.into_inner());
            for s in submissions {
                let e = &s.event;
                let (EventKind::Impression, Some(campaign)) = (e.kind, e.campaign_id) else { continue };
                if s.decision.is_none() || s.givt.is_some() {
                    continue;
                }
                let Some(day) = delivery.local_day_index(campaign, e.at_ms) else { continue };
                // CPM: a thousandth of the price, rounded up (the carry never owes more).
                let owed = s.clearing_cpm_micros.max(0) / 1000 + 1;
                *need.entry((campaign, day)).or_default() += owed;
            }
        }
        for ((campaign, day), owed) in need {
            let left = {
                let delivery = delivery.lock().unwrap_or_else(|p| p.into_inner());
                delivery.lease(campaign, day).map_or(0, |l| l.left_micros)
            };
            if left >= owed {
                continue;
            }
            let want = (owed - left).max(self.slice_micros);
            let grant = match cluster.lease(campaign, day, want) {
                Ok(grant) => grant,
                // A campaign deleted meanwhile has nothing to lease; its impressions
                // are judged without a lease and charge nothing.
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let exhausted = grant.left_micros < owed;
            self.last_charged.insert(campaign, Instant::now());
            delivery
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_lease(campaign, Lease { day: grant.day, left_micros: grant.left_micros, exhausted });
        }
        Ok(())
    }

    /// Notes the campaigns a committed batch charged (their leases are in use).
    pub fn charged(&mut self, campaigns: impl IntoIterator<Item = i64>) {
        let now = Instant::now();
        for c in campaigns {
            self.last_charged.insert(c, now);
        }
    }

    /// Whether a tick is due.
    pub fn due(&self) -> bool {
        self.last_tick.is_none_or(|t| t.elapsed() >= TICK)
    }

    /// Gives back leases idle for [`IDLE_LEASE`] and syncs credits; returns the peer
    /// events not learnt yet, for the writer to apply to its state.
    pub fn tick(
        &mut self,
        store: &dyn Store,
        cluster: &dyn Cluster,
        delivery: &Mutex<DeliveryState>,
        now_ms: Millis,
    ) -> Result<Vec<PeerEvent>, StoreError> {
        self.last_tick = Some(Instant::now());
        // What the cluster leaves of each campaign's budget today: decisions serve by it.
        let days = delivery.lock().unwrap_or_else(|p| p.into_inner()).campaign_days(now_ms);
        // Each node's share: between two readings, every node may be deciding.
        let room = cluster.room(&days)?;
        {
            let mut d = delivery.lock().unwrap_or_else(|p| p.into_inner());
            for (campaign, day, micros) in room.campaigns {
                d.set_room(campaign, day, micros / room.live_nodes as i64);
            }
        }
        // Leases unused for a moment go back: the budget may be needed where the beacons
        // arrive. A lease starts its idle time when it is first seen here.
        let now = Instant::now();
        let held = delivery.lock().unwrap_or_else(|p| p.into_inner()).leased_campaigns();
        self.last_charged.retain(|c, _| held.binary_search(c).is_ok());
        let idle: Vec<i64> = held
            .into_iter()
            .filter(|c| now.duration_since(*self.last_charged.entry(*c).or_insert(now)) >= IDLE_LEASE)
            .collect();
        if !idle.is_empty() {
            cluster.release(&idle)?;
            let mut d = delivery.lock().unwrap_or_else(|p| p.into_inner());
            for c in &idle {
                d.clear_leases(*c);
                self.last_charged.remove(c);
            }
        }
        // Every 2 s: another try for dry leases, and credits added on other nodes.
        if self.last_credits.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
            self.last_credits = Some(Instant::now());
            let dry = delivery.lock().unwrap_or_else(|p| p.into_inner()).exhausted_leases(now_ms);
            for (campaign, day) in dry {
                let grant = cluster.lease(campaign, day, self.slice_micros)?;
                let lease = Lease { day, left_micros: grant.left_micros, exhausted: grant.left_micros <= 0 };
                delivery.lock().unwrap_or_else(|p| p.into_inner()).set_lease(campaign, lease);
            }
            let totals = store.credit_totals()?;
            let mut d = delivery.lock().unwrap_or_else(|p| p.into_inner());
            for (advertiser, total) in totals {
                d.sync_credits(advertiser, total);
            }
        }
        // Once a minute: claims no valid token can need any more.
        if self.last_forget.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            self.last_forget = Some(Instant::now());
            cluster.forget_claims_before(now_ms.saturating_sub(self.claims_kept_ms))?;
        }
        let since = self.peer_cursor.unwrap_or(Millis::MIN);
        let (db_now, events) = cluster.peer_events(since)?;
        let cursor = db_now - PEER_OVERLAP_MS;
        let fresh: Vec<PeerEvent> = events.into_iter().filter(|p| self.seen.insert(p.id, db_now).is_none()).collect();
        self.seen.retain(|_, seen_at| *seen_at >= cursor - PEER_OVERLAP_MS);
        // The first tick after a (re)start skips history: the rebuild read it already.
        if self.peer_cursor.is_none() {
            self.peer_cursor = Some(cursor);
            return Ok(Vec::new());
        }
        self.peer_cursor = Some(cursor);
        Ok(fresh)
    }

    /// Forgets what the writer knew of its leases (after a failed batch the rebuild
    /// reads them again from the database).
    pub fn reset(&mut self) {
        self.last_charged.clear();
    }

    /// After a rebuild from the store: the next tick starts learning peer events anew.
    pub fn restart(&mut self) {
        self.peer_cursor = None;
        self.last_tick = None;
    }
}

/// The leases this node holds as the database has them, into a fresh delivery state.
pub fn load_leases(cluster: &dyn Cluster, delivery: &mut DeliveryState) -> Result<(), StoreError> {
    delivery.use_leases();
    for (campaign, grant) in cluster.leases()? {
        delivery.set_lease(campaign, Lease { day: grant.day, left_micros: grant.left_micros, exhausted: false });
    }
    Ok(())
}

/// Beats every [`HEARTBEAT`] until `alive` says the pipeline is gone.
pub fn spawn_heartbeat(store: Arc<dyn Store>, alive: impl Fn() -> bool + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new().name("adtally-heartbeat".into()).spawn(move || {
        while alive() {
            if let Some(cluster) = store.cluster() {
                match cluster.heartbeat() {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!("this node was silent too long; its leases were given back"),
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
            std::thread::sleep(HEARTBEAT);
        }
    })?;
    Ok(())
}
