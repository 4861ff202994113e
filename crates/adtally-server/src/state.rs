//! What every handler shares: the store, the event pipeline, the serving catalog (an
//! in-memory snapshot of what can be shown), the token signer and the traffic
//! classifiers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use adtally_core::catalog::{Ad, AdStatus, Advertiser, Campaign, CampaignStatus, Format, Placement};
use adtally_core::clock::Clock;
use adtally_core::counting::CountingConfig;
use adtally_core::jiff::tz::TimeZone;
use adtally_core::token::TokenSigner;
use adtally_core::traffic::{DatacenterRanges, UserAgentClassifier};
use adtally_store::{Store, StoreError};

use crate::client::ClientIpHeader;
use crate::error::ApiError;
use crate::limits::Limits;
use crate::pipeline::{campaign_limits, Pipeline};

/// Settings the server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub counting: CountingConfig,
    /// Peers whose forwarding header is believed: (network, prefix length).
    pub trusted_proxies: Vec<(IpAddr, u8)>,
    /// The one header the trusted proxies set; the other is ignored.
    pub client_ip_header: ClientIpHeader,
    /// Base of tracking URLs (`https://ads.example.com`); by default taken from the
    /// request's `Host` header.
    pub public_url: Option<String>,
    /// Extra credit on large top-ups.
    pub topup_bonus: Option<TopupBonus>,
    /// Apply the bot, prefetch and data-centre checks. Off only to measure what they
    /// cost (`serve --skip-traffic-filters`, hidden).
    pub traffic_filters: bool,
    /// Connections, timeouts and failed authentications.
    pub limits: Limits,
    /// Where weekly email reports are sent from (`--smtp-url`); none: no email.
    pub smtp_url: Option<String>,
    /// Raw events older than this many days are deleted (rollups, and so reports, keep
    /// them); none: kept for ever. At least [`MIN_RETENTION_DAYS`].
    pub retention_days: Option<u32>,
    /// The beacon journal (`serve`: `journal/` in the data directory); none: beacons
    /// wait for their commit before they are answered.
    pub journal: Option<crate::pipeline::JournalConfig>,
    /// Rows a report may have (`--max-report-rows`); a larger one is refused with
    /// `report_too_large` (400) before it is built.
    pub max_report_rows: usize,
    /// Answer every report from the quarter-hour rollups, as before the day layer. Only
    /// to measure what the day layer gains (`serve --reports-from-quarter-hours`, hidden).
    pub reports_from_quarter_hours: bool,
    /// With several nodes on one database: what a node leases of a campaign's budget at
    /// least, when it leases (`--lease-slice`). Larger: fewer leases; smaller: less
    /// budget idle on other nodes near the end.
    pub lease_slice_micros: i64,
}

/// Default of [`ServerConfig::max_report_rows`].
pub const MAX_REPORT_ROWS: usize = 100_000;

/// The least retention: a restart rebuilds attribution touches from 30 days of clicks,
/// and attribution journeys reach 30 days back. An advertiser with a longer click window
/// keeps raw events that much longer (plus the same margin): see
/// [`AppState::housekeeping`].
pub const MIN_RETENTION_DAYS: u32 = 35;
/// Days kept beyond the longest click window, so a report's first day still finds the
/// touches before it.
const RETENTION_MARGIN_DAYS: u32 = MIN_RETENTION_DAYS - 30;
/// Raw events deleted per housekeeping round at most: short write transactions.
const PURGE_ROWS_PER_ROUND: usize = 20_000;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            counting: CountingConfig::default(),
            trusted_proxies: vec![(IpAddr::from([127, 0, 0, 0]), 8), (IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), 128)],
            client_ip_header: ClientIpHeader::default(),
            public_url: None,
            traffic_filters: true,
            topup_bonus: None,
            limits: Limits::default(),
            smtp_url: None,
            retention_days: None,
            journal: None,
            max_report_rows: MAX_REPORT_ROWS,
            reports_from_quarter_hours: false,
            lease_slice_micros: crate::cluster::DEFAULT_LEASE_SLICE_MICROS,
        }
    }
}

/// "+`percent`% on every top-up of at least `min_topup_micros`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopupBonus {
    pub min_topup_micros: i64,
    pub percent: u32,
}

impl TopupBonus {
    /// The bonus a top-up earns, if any.
    pub fn bonus_for(&self, topup_micros: i64) -> Option<i64> {
        (topup_micros >= self.min_topup_micros && self.percent > 0)
            .then(|| (i128::from(topup_micros) * i128::from(self.percent) / 100) as i64)
    }

    /// Parses `10%@100000000`: ten percent on top-ups of at least 100.00.
    pub fn parse(text: &str) -> Option<Self> {
        let (percent, min) = text.trim().split_once("%@")?;
        Some(Self { percent: percent.parse().ok().filter(|p| *p <= 100)?, min_topup_micros: min.parse().ok()? })
    }
}

/// An active campaign and its approved ads of one format.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub campaign: Arc<Campaign>,
    pub ads: Vec<Arc<Ad>>,
}

/// A candidate with the qualities it competes with, as of the last ranking.
#[derive(Debug, Clone)]
pub struct Ranked {
    pub candidate: Candidate,
    /// Each ad's smoothed CTR; an ad is shown with probability proportional to it.
    pub ad_quality: Vec<f64>,
    /// The quality the campaign bids with: the expected quality of the ad it will show
    /// under that rotation, Σq² / Σq.
    pub quality: f64,
    /// `cpm_bid_micros × quality`.
    pub rank: f64,
}

/// Candidates per format, best rank first. Rebuilt when the catalog changes and by
/// housekeeping every few seconds, so that a decision walks only as far down the list
/// as it needs to find the winner and the runner-up.
#[derive(Debug, Default)]
pub struct Ranking {
    pub by_format: HashMap<Format, Vec<Ranked>>,
}

impl Ranking {
    pub fn build(catalog: &ServingCatalog, delivery: &adtally_core::delivery::DeliveryState) -> Self {
        let mut by_format = HashMap::new();
        for (format, candidates) in &catalog.candidates {
            let mut ranked: Vec<Ranked> = candidates
                .iter()
                .map(|c| {
                    let ad_quality: Vec<f64> = c.ads.iter().map(|a| delivery.quality(a.id)).collect();
                    let sum: f64 = ad_quality.iter().sum();
                    let quality = if sum > 0.0 { ad_quality.iter().map(|q| q * q).sum::<f64>() / sum } else { 0.0 };
                    let rank = c.campaign.cpm_bid_micros as f64 * quality;
                    Ranked { candidate: c.clone(), ad_quality, quality, rank }
                })
                .collect();
            ranked.sort_by(|a, b| b.rank.total_cmp(&a.rank));
            by_format.insert(*format, ranked);
        }
        Self { by_format }
    }
}

/// An immutable snapshot of everything the decision and tracking paths read; replaced
/// whole after every management change.
#[derive(Debug, Default)]
pub struct ServingCatalog {
    pub placements: HashMap<String, Placement>,
    pub placement_slugs: HashMap<i64, String>,
    /// Active campaigns with approved ads, per format.
    pub candidates: HashMap<Format, Vec<Candidate>>,
    /// Every ad and campaign, whatever their status (click redirects, imports).
    pub ads: HashMap<i64, Arc<Ad>>,
    pub campaigns: HashMap<i64, Arc<Campaign>>,
    pub advertisers: HashMap<i64, (Advertiser, TimeZone)>,
    /// Where a click on each approved version of an ad that is still approved goes,
    /// parsed once here rather than on every click. An ad the operator took down has
    /// none: its old click links must not keep sending visitors to a URL judged bad.
    pub click_targets: HashMap<(i64, u32), url::Url>,
}

impl ServingCatalog {
    pub fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let mut catalog = ServingCatalog::default();
        for p in store.placements()? {
            catalog.placement_slugs.insert(p.id, p.slug.clone());
            catalog.placements.insert(p.slug.clone(), p);
        }
        for a in store.advertisers()? {
            let tz = TimeZone::get(&a.timezone).unwrap_or(TimeZone::UTC);
            catalog.advertisers.insert(a.id, (a, tz));
        }
        let campaigns: HashMap<i64, Arc<Campaign>> =
            store.campaigns(None)?.into_iter().map(|c| (c.id, Arc::new(c))).collect();
        let mut serving: HashMap<(Format, i64), Vec<Arc<Ad>>> = HashMap::new();
        for ad in store.ads(None)? {
            let ad = Arc::new(ad);
            catalog.ads.insert(ad.id, ad.clone());
            if let Some(campaign) = campaigns.get(&ad.campaign_id) {
                if ad.status == AdStatus::Approved && campaign.status == CampaignStatus::Active {
                    serving.entry((ad.content.format, campaign.id)).or_default().push(ad);
                }
            }
        }
        for ((format, campaign_id), ads) in serving {
            if let Some(campaign) = campaigns.get(&campaign_id) {
                catalog.candidates.entry(format).or_default().push(Candidate { campaign: campaign.clone(), ads });
            }
        }
        catalog.campaigns = campaigns;
        // Targets are stored normalized, so each parses; one that does not (edited by hand
        // in the database) has no click target and its clicks answer 404.
        let still_approved = |ad_id: i64| catalog.ads.get(&ad_id).is_some_and(|a| a.status == AdStatus::Approved);
        catalog.click_targets = store
            .approved_versions()?
            .into_iter()
            .filter(|v| still_approved(v.ad_id))
            .filter_map(|v| Some(((v.ad_id, v.version), url::Url::parse(&v.target_url).ok()?)))
            .collect();
        Ok(catalog)
    }

    pub fn timezone(&self, advertiser_id: i64) -> TimeZone {
        self.advertisers.get(&advertiser_id).map_or(TimeZone::UTC, |(_, tz)| tz.clone())
    }
}

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub pipeline: Pipeline,
    catalog: RwLock<Arc<ServingCatalog>>,
    reload_lock: Mutex<()>,
    ranking: RwLock<Arc<Ranking>>,
    pub signer: TokenSigner,
    pub user_agents: UserAgentClassifier,
    pub datacenters: DatacenterRanges,
    pub config: ServerConfig,
    pub clock: Arc<dyn Clock>,
    pub admin_key_hash: String,
    decision_seq: AtomicU64,
    /// Decision ids of this node are `≡ decision_slot (mod DECISION_STRIDE)` when several
    /// nodes share one database, so no two nodes ever issue the same id.
    decision_slot: u64,
    pub decisions_served: AtomicU64,
    pub decisions_unfilled: AtomicU64,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        pipeline: Pipeline,
        signer: TokenSigner,
        config: ServerConfig,
        clock: Arc<dyn Clock>,
        admin_key_hash: String,
    ) -> Result<Self, StoreError> {
        let catalog = ServingCatalog::load(store.as_ref())?;
        let ranking = Ranking::build(&catalog, &pipeline.delivery());
        let decision_slot = store.cluster().map_or(0, |c| c.decision_slot() % DECISION_STRIDE);
        Ok(Self {
            store,
            pipeline,
            catalog: RwLock::new(Arc::new(catalog)),
            reload_lock: Mutex::new(()),
            ranking: RwLock::new(Arc::new(ranking)),
            signer,
            user_agents: UserAgentClassifier::new(),
            datacenters: DatacenterRanges::bundled(),
            config,
            clock,
            admin_key_hash,
            decision_seq: AtomicU64::new(0),
            decision_slot,
            decisions_served: AtomicU64::new(0),
            decisions_unfilled: AtomicU64::new(0),
        })
    }

    pub fn catalog(&self) -> Arc<ServingCatalog> {
        self.catalog.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn ranking(&self) -> Arc<Ranking> {
        self.ranking.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-ranks the candidates with the ads' current quality.
    pub fn rerank(&self) {
        let catalog = self.catalog();
        let ranking = Ranking::build(&catalog, &self.pipeline.delivery());
        *self.ranking.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ranking);
    }

    /// Reloads the serving catalog and budgets after a management change, on a blocking
    /// thread: the store reads must not stall the runtime's workers (and with them the
    /// tracking paths).
    pub async fn reload_catalog(self: &Arc<Self>) -> Result<(), ApiError> {
        let state = self.clone();
        Ok(tokio::task::spawn_blocking(move || state.reload_catalog_blocking()).await??)
    }

    /// [`AppState::reload_catalog`] for callers already on a blocking thread. Reloads are
    /// serialized, so a slower reload that read the store earlier can never replace the
    /// snapshot of a later one.
    pub fn reload_catalog_blocking(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let catalog = ServingCatalog::load(self.store.as_ref())?;
        self.pipeline.set_attribution_windows(catalog.advertisers.values().map(|(a, _)| (a.id, a.attribution)));
        let moved: Vec<i64> = {
            let mut delivery = self.pipeline.delivery();
            let limits = |c: &Campaign| campaign_limits(c, catalog.timezone(c.advertiser_id));
            catalog.campaigns.values().filter(|c| delivery.set_campaign(c.id, limits(c))).map(|c| c.id).collect()
        };
        if !moved.is_empty() {
            // An advertiser changed zone: its campaigns' daily spend is refiled under the
            // new zone's days, from the committed spend of the days delivery keeps. (A
            // charge of a batch still committing meanwhile is missed: one batch at most.)
            let since = self.clock.now_ms() - adtally_core::delivery::RECENT_SPEND_MS;
            let recent = self.store.campaign_spend(since)?;
            let mut delivery = self.pipeline.delivery();
            for id in moved {
                let spend = recent.iter().filter(|s| s.campaign_id == id && s.bucket_ms >= since);
                delivery.refile_daily_spend(id, spend.map(|s| (s.bucket_ms, s.spend_micros)));
            }
        }
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalog);
        self.rerank();
        self.refresh_room_blocking()
    }

    /// Several nodes: reads the cluster's room for every campaign now (the writer reads
    /// it every tick), so a change made here — a new campaign, a credit — serves at once.
    pub fn refresh_room_blocking(&self) -> Result<(), StoreError> {
        let Some(cluster) = self.store.cluster() else { return Ok(()) };
        let days = self.pipeline.delivery().campaign_days(self.clock.now_ms());
        // Each node's share: between two readings, every node may be deciding.
        let room = cluster.room(&days)?;
        let mut delivery = self.pipeline.delivery();
        for (campaign, day, micros) in room.campaigns {
            delivery.set_room(campaign, day, micros / room.live_nodes as i64);
        }
        Ok(())
    }

    /// [`AppState::refresh_room_blocking`] from a handler.
    pub async fn refresh_room(self: &Arc<Self>) -> Result<(), ApiError> {
        if self.store.cluster().is_none() {
            return Ok(());
        }
        let state = self.clone();
        Ok(tokio::task::spawn_blocking(move || state.refresh_room_blocking()).await??)
    }

    /// Marks active campaigns whose end date has passed or whose total budget is spent as
    /// `completed`, drops expired frequency-cap state, and re-ranks the candidates with
    /// the ads' latest quality. Run every few seconds.
    pub fn housekeeping(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        if let Some(days) = self.config.retention_days {
            let longest_click = adtally_core::attribution::Windows::longest(
                self.catalog().advertisers.values().map(|(a, _)| a.attribution),
            )
            .click_days();
            let needed = u32::from(longest_click) + RETENTION_MARGIN_DAYS;
            let days = i64::from(days.max(MIN_RETENTION_DAYS).max(needed));
            let purged = self.store.purge_events_before(now - days * adtally_core::clock::DAY, PURGE_ROWS_PER_ROUND)?;
            if purged > 0 {
                tracing::info!(events = purged, "raw events past retention deleted");
            }
        }
        let catalog = self.catalog();
        let finished: Vec<Campaign> = {
            let mut delivery = self.pipeline.delivery();
            delivery.expire_caps(now);
            catalog
                .campaigns
                .values()
                .filter(|c| c.status == CampaignStatus::Active)
                .filter(|c| c.end_at_ms.is_some_and(|end| end <= now) || delivery.spent(c.id) >= c.total_budget_micros)
                .map(|c| Campaign { status: CampaignStatus::Completed, ..Campaign::clone(c) })
                .collect()
        };
        for c in &finished {
            self.store.update_campaign(c)?;
        }
        if finished.is_empty() {
            self.rerank();
        } else {
            self.reload_catalog_blocking()?;
        }
        Ok(finished.len())
    }

    /// Runs a store call on a blocking thread.
    pub async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let state = self.clone();
        Ok(tokio::task::spawn_blocking(move || f(state.store.as_ref())).await??)
    }

    /// A new decision id: milliseconds since the epoch in the high bits and a counter in
    /// the low 20, so ids are unique and grow with time across restarts. With several
    /// nodes, each node's ids step by [`DECISION_STRIDE`] from its own slot.
    pub fn next_decision_id(&self, now_ms: i64) -> u64 {
        let (floor, step) = if self.store.cluster().is_some() {
            (((now_ms.max(0) as u64) << 20) + self.decision_slot, DECISION_STRIDE)
        } else {
            ((now_ms.max(0) as u64) << 20, 1)
        };
        let mut current = self.decision_seq.load(Ordering::Relaxed);
        loop {
            let next = floor.max(current + step);
            match self.decision_seq.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(seen) => current = seen,
            }
        }
    }

    /// The classifier keeps its own bounded cache per distinct agent.
    pub fn is_bot(&self, user_agent: &str) -> bool {
        self.user_agents.is_bot(user_agent)
    }

    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.config.trusted_proxies.iter().any(|&(net, len)| in_network(ip, net, len))
    }
}

/// How many nodes can share one database without their decision ids colliding (each live
/// node holds its own slot; see [`AppState::next_decision_id`]).
pub const DECISION_STRIDE: u64 = 64;

/// Whether `ip` is inside `net/len`.
pub fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a.to_ipv4_mapped().is_some_and(|v4| in_network(IpAddr::V4(v4), net, len)),
        _ => false,
    }
}

/// Parses `10.0.0.0/8`, `::1/128` or a bare address.
pub fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, l.parse().ok()?),
        None => (text, if text.contains(':') { 128 } else { 32 }),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}
