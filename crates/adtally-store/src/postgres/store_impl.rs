//! [`Store`] for [`PgStore`]: each method takes a pooled connection and runs the query
//! functions of `accounts.rs` and `catalog.rs` on the calling thread; events go to
//! `events.rs`, which has its own writer connection.

use adtally_core::catalog::{Ad, Advertiser, Campaign, CreditKind, Format, LedgerEntry, Placement};
use adtally_core::clock::Millis;
use adtally_core::event::Event;

use super::{accounts, block_on, catalog, events, PgStore};
use crate::{
    AdPerformance, ApiKeyInfo, ApprovedVersion, AuditEntry, CampaignSpend, ConsistencyCheck, FoundSession, KeyOwner,
    PendingEvent, PromoCode, Result, RollupQuery, RollupRow, Session, Store, TouchPaths,
};

impl Store for PgStore {
    fn meta(&self, key: &str) -> Result<Option<String>> {
        let c = self.conn()?;
        block_on(accounts::meta(&c, key))
    }

    fn meta_init(&self, key: &str, value: &str) -> Result<String> {
        let c = self.conn()?;
        block_on(accounts::meta_init(&c, key, value))
    }

    fn create_advertiser(&self, advertiser: &Advertiser) -> Result<Advertiser> {
        let c = self.conn()?;
        block_on(accounts::create_advertiser(&c, advertiser))
    }

    fn update_advertiser(&self, advertiser: &Advertiser) -> Result<()> {
        let c = self.conn()?;
        block_on(accounts::update_advertiser(&c, advertiser))
    }

    fn advertiser(&self, id: i64) -> Result<Option<Advertiser>> {
        let c = self.conn()?;
        block_on(accounts::advertiser(&c, id))
    }

    fn advertisers(&self) -> Result<Vec<Advertiser>> {
        let c = self.conn()?;
        block_on(accounts::advertisers(&c))
    }

    fn add_api_key(&self, owner: KeyOwner, key_hash: &str, now: Millis) -> Result<i64> {
        let c = self.conn()?;
        block_on(accounts::add_api_key(&c, owner, key_hash, now))
    }

    fn api_key_owner(&self, key_hash: &str, now: Millis) -> Result<Option<KeyOwner>> {
        let c = self.conn()?;
        block_on(accounts::api_key_owner(&c, key_hash, now))
    }

    fn api_keys(&self, advertiser_id: i64) -> Result<Vec<ApiKeyInfo>> {
        let c = self.conn()?;
        block_on(accounts::api_keys(&c, advertiser_id))
    }

    fn revoke_api_key(&self, key_id: i64, advertiser_id: Option<i64>, now: Millis) -> Result<bool> {
        let mut c = self.conn()?;
        block_on(accounts::revoke_api_key(&mut c, key_id, advertiser_id, now))
    }

    fn create_session(&self, id_hash: &str, session: &Session) -> Result<()> {
        let c = self.conn()?;
        block_on(accounts::create_session(&c, id_hash, session))
    }

    fn session(&self, id_hash: &str, now: Millis) -> Result<Option<FoundSession>> {
        let c = self.conn()?;
        block_on(accounts::session(&c, id_hash, now))
    }

    fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let c = self.conn()?;
        block_on(accounts::delete_session(&c, id_hash))
    }

    fn purge_sessions(&self, now: Millis, idle_since: Millis) -> Result<usize> {
        let c = self.conn()?;
        block_on(accounts::purge_sessions(&c, now, idle_since))
    }

    fn create_promo(&self, promo: &PromoCode) -> Result<()> {
        let c = self.conn()?;
        block_on(accounts::create_promo(&c, promo))
    }

    fn redeem_promo(&self, code: &str, advertiser_id: i64, now: Millis) -> Result<LedgerEntry> {
        let mut c = self.conn()?;
        block_on(accounts::redeem_promo(&mut c, code, advertiser_id, now))
    }

    fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let c = self.conn()?;
        block_on(accounts::audit(&c, entry))
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let c = self.conn()?;
        block_on(accounts::audit_log(&c, limit))
    }

    fn add_credit(
        &self,
        advertiser_id: i64,
        kind: CreditKind,
        amount_micros: i64,
        note: Option<&str>,
        now: Millis,
    ) -> Result<LedgerEntry> {
        let c = self.conn()?;
        block_on(accounts::add_credit(&c, advertiser_id, kind, amount_micros, note, now))
    }

    fn add_topup(
        &self,
        advertiser_id: i64,
        amount_micros: i64,
        note: Option<&str>,
        bonus_micros: Option<i64>,
        now: Millis,
    ) -> Result<(LedgerEntry, Option<LedgerEntry>)> {
        let mut c = self.conn()?;
        block_on(accounts::add_topup(&mut c, advertiser_id, amount_micros, note, bonus_micros, now))
    }

    fn credit_totals(&self) -> Result<Vec<(i64, i64)>> {
        let c = self.conn()?;
        block_on(accounts::credit_totals(&c))
    }

    fn ledger(&self, advertiser_id: i64) -> Result<Vec<LedgerEntry>> {
        let mut entries = {
            let c = self.conn()?;
            block_on(accounts::ledger_credits(&c, advertiser_id))?
        };
        entries.extend(events::ledger_spend(self, advertiser_id)?);
        // As SQLite's store sorts: by time, a day's credits before its spend.
        entries.sort_by_key(|e| (e.at_ms, e.id.is_none()));
        Ok(entries)
    }

    fn create_placement(&self, slug: &str, name: &str, format: Format, floor_cpm_micros: i64) -> Result<Placement> {
        let c = self.conn()?;
        block_on(catalog::create_placement(&c, slug, name, format, floor_cpm_micros))
    }

    fn placements(&self) -> Result<Vec<Placement>> {
        let c = self.conn()?;
        block_on(catalog::placements(&c))
    }

    fn create_campaign(&self, campaign: &Campaign) -> Result<Campaign> {
        let c = self.conn()?;
        block_on(catalog::create_campaign(&c, campaign))
    }

    fn create_campaign_with_ads(&self, campaign: &Campaign, ads: &[Ad]) -> Result<Campaign> {
        let mut c = self.conn()?;
        block_on(catalog::create_campaign_with_ads(&mut c, campaign, ads))
    }

    fn update_campaign(&self, campaign: &Campaign) -> Result<()> {
        let c = self.conn()?;
        block_on(catalog::update_campaign(&c, campaign))
    }

    fn campaign(&self, id: i64) -> Result<Option<Campaign>> {
        let c = self.conn()?;
        block_on(catalog::campaign(&c, id))
    }

    fn campaigns(&self, advertiser_id: Option<i64>) -> Result<Vec<Campaign>> {
        let c = self.conn()?;
        block_on(catalog::campaigns(&c, advertiser_id))
    }

    fn create_ad(&self, ad: &Ad) -> Result<Ad> {
        let mut c = self.conn()?;
        block_on(catalog::create_ad(&mut c, ad))
    }

    fn update_ad(&self, ad: &Ad, now: Millis) -> Result<()> {
        let mut c = self.conn()?;
        block_on(catalog::update_ad(&mut c, ad, now))
    }

    fn review_ad(&self, ad: &Ad, now: Millis) -> Result<()> {
        let mut c = self.conn()?;
        block_on(catalog::review_ad(&mut c, ad, now))
    }

    fn approved_versions(&self) -> Result<Vec<ApprovedVersion>> {
        let c = self.conn()?;
        block_on(catalog::approved_versions(&c))
    }

    fn ad(&self, id: i64) -> Result<Option<Ad>> {
        let c = self.conn()?;
        block_on(catalog::ad(&c, id))
    }

    fn ads(&self, campaign_id: Option<i64>) -> Result<Vec<Ad>> {
        let c = self.conn()?;
        block_on(catalog::ads(&c, campaign_id))
    }

    fn append_events(
        &self,
        now_ms: Millis,
        batch: &mut [PendingEvent],
        journal_through: Option<u64>,
        judge: &mut dyn FnMut(usize, &mut Event),
    ) -> Result<()> {
        events::append_events(self, now_ms, batch, journal_through, judge)
    }

    /// Per node, in the node registry (each node has its own journal), not in `meta`.
    fn journal_applied(&self) -> Result<u64> {
        events::journal_applied(self)
    }

    fn valid_events_since(&self, since_ms: Millis) -> Result<Vec<Event>> {
        events::valid_events_since(self, since_ms)
    }

    fn campaign_spend(&self, since_ms: Millis) -> Result<Vec<CampaignSpend>> {
        events::campaign_spend(self, since_ms)
    }

    fn ad_performance(&self) -> Result<Vec<AdPerformance>> {
        events::ad_performance(self)
    }

    fn rollup_rows(&self, query: &RollupQuery) -> Result<Vec<RollupRow>> {
        events::rollup_rows(self, query)
    }

    fn touch_paths(
        &self,
        advertiser_id: i64,
        from_ms: Millis,
        to_ms: Millis,
        lookback_ms: Millis,
        limit: usize,
    ) -> Result<TouchPaths> {
        events::touch_paths(self, advertiser_id, from_ms, to_ms, lookback_ms, limit)
    }

    fn consistency_check(&self) -> Result<ConsistencyCheck> {
        events::consistency_check(self)
    }

    fn purge_events_before(&self, before_ms: Millis, max_rows: usize) -> Result<usize> {
        events::purge_events_before(self, before_ms, max_rows)
    }

    fn set_weekly_report(&self, advertiser_id: i64, enabled: bool, now: Millis) -> Result<()> {
        let c = self.conn()?;
        block_on(accounts::set_weekly_report(&c, advertiser_id, enabled, now))
    }

    fn weekly_report_optouts(&self) -> Result<Vec<i64>> {
        let c = self.conn()?;
        block_on(accounts::weekly_report_optouts(&c))
    }

    fn claim_mail(&self, advertiser_id: i64, report: &str, now: Millis) -> Result<bool> {
        let c = self.conn()?;
        block_on(accounts::claim_mail(&c, advertiser_id, report, now))
    }
}
