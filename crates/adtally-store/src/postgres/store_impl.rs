//! [`Store`] for [`PgStore`]: each method takes a pooled connection and runs the query
//! functions of `accounts.rs` and `catalog.rs` on the calling thread; the event methods
//! (and the spend part of the ledger) belong to `events.rs`.

use adtally_core::catalog::{Ad, AdStamp, Advertiser, Campaign, CreditKind, Format, LedgerEntry, Placement};
use adtally_core::clock::Millis;
use adtally_core::event::Event;

use super::{accounts, block_on, catalog, events, PgStore};
use crate::{
    AdPerformance, ApiKeyInfo, ApprovedVersion, AuditEntry, CampaignSpend, ConsistencyCheck, FoundSession, KeyOwner,
    PendingEvent, PromoCode, Result, RollupQuery, RollupRow, Session, Store, TouchPaths,
};

impl Store for PgStore {
    fn cluster(&self) -> Option<&dyn crate::Cluster> {
        Some(self)
    }

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

    fn credits(&self, advertiser_id: i64) -> Result<Vec<LedgerEntry>> {
        let c = self.conn()?;
        block_on(accounts::ledger_credits(&c, advertiser_id))
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

    fn update_ad(&self, ad: &Ad, read: AdStamp, now: Millis) -> Result<()> {
        let mut c = self.conn()?;
        block_on(catalog::update_ad(&mut c, ad, read, now))
    }

    fn review_ad(&self, ad: &Ad, read: AdStamp, now: Millis) -> Result<()> {
        let mut c = self.conn()?;
        block_on(catalog::review_ad(&mut c, ad, read, now))
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
        judge: &mut crate::Judge<'_>,
    ) -> Result<()> {
        events::append_events(self, now_ms, batch, journal_through, judge)
    }

    /// Per node, in the node registry (each node has its own journal), not in `meta`.
    fn journal_applied(&self) -> Result<u64> {
        events::journal_applied(self)
    }

    fn each_valid_event_since(
        &self,
        since_ms: Millis,
        clicks_since_ms: Millis,
        each: &mut dyn FnMut(Event),
    ) -> Result<()> {
        events::each_valid_event_since(self, since_ms, clicks_since_ms, each)
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

    fn release_mail(&self, advertiser_id: i64, report: &str) -> Result<()> {
        let c = self.conn()?;
        block_on(accounts::release_mail(&c, advertiser_id, report))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Barrier};

    use adtally_core::attribution::Windows;
    use adtally_core::catalog::{AdContent, AdStatus, CampaignStatus, FrequencyCap, Pacing};
    use adtally_core::event::Device;

    use super::*;
    use crate::StoreError;

    const SKIP: &str = "needs PostgreSQL: set ADTALLY_TEST_POSTGRES";

    /// Runs one statement on the server named by `ADTALLY_TEST_POSTGRES`.
    fn admin(url: &str, sql: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
            let driver = tokio::spawn(connection);
            client.batch_execute(sql).await.expect(sql);
            drop(client);
            let _ = driver.await;
        });
    }

    /// A store on a database of its own, dropped with it.
    struct TestDb {
        store: Option<PgStore>,
        admin_url: String,
        name: String,
    }

    impl TestDb {
        fn new(test: &str) -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let admin_url = std::env::var("ADTALLY_TEST_POSTGRES").expect(SKIP);
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            let name =
                format!("pgcrud_{test}_{}_{nanos}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
            admin(&admin_url, &format!("CREATE DATABASE {name}"));
            let (base, query) = match admin_url.split_once('?') {
                Some((base, query)) => (base, format!("?{query}")),
                None => (admin_url.as_str(), String::new()),
            };
            let scheme_end = base.find("://").map_or(0, |i| i + 3);
            let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
            let url = format!("{}/{name}{query}", &base[..host_end]);
            let store = PgStore::connect(&url, "test-node").expect("connect to the test database");
            Self { store: Some(store), admin_url, name }
        }

        fn store(&self) -> &PgStore {
            self.store.as_ref().expect("present until dropped")
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            drop(self.store.take());
            admin(&self.admin_url, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }

    fn new_advertiser(s: &PgStore, name: &str) -> Advertiser {
        s.create_advertiser(&Advertiser::new(name, &format!("{name}@example.com"), "Europe/Berlin", 1_000))
            .expect("advertiser")
    }

    /// A restart reads its events in parts (a cursor of `RESTART_ROWS_PER_FETCH` rows):
    /// every valid one comes, once, in commit order, across several parts.
    #[test]
    #[ignore = "needs PostgreSQL: set ADTALLY_TEST_POSTGRES"]
    fn postgres_a_restart_reads_every_valid_event_in_parts() {
        use adtally_core::event::{Country, Device, Event, EventKind, Verdict};
        let db = TestDb::new("restart");
        let s = db.store();
        let a = new_advertiser(s, "acme");
        let now = 1_000 * adtally_core::clock::DAY;
        let total = 2 * super::events::RESTART_ROWS_PER_FETCH as u64 + 5;
        let mut batch: Vec<PendingEvent> = (0..total + total / 10)
            .map(|i| {
                PendingEvent::new(Event {
                    at_ms: now - 1_000 + (i % 1_000) as i64,
                    kind: EventKind::Impression,
                    // Every eleventh is a duplicate: not read back.
                    verdict: if i % 11 == 10 { Verdict::Duplicate } else { Verdict::Valid },
                    decision_id: Some(i + 1),
                    advertiser_id: a.id,
                    campaign_id: None,
                    ad_id: None,
                    placement_id: None,
                    user_key: i,
                    ip_key: None,
                    device: Device::Desktop,
                    country: Country::UNKNOWN,
                    cost_micros: 0,
                    value_micros: 0,
                })
            })
            .collect();
        for part in batch.chunks_mut(4_096) {
            s.append_events(now, part, None, &mut |_, _, _| {}).expect("append");
        }
        let mut users = Vec::new();
        s.each_valid_event_since(now - 2_000, now - 2_000, &mut |e| users.push(e.user_key)).expect("read");
        let expected: Vec<u64> = (0..total + total / 10).filter(|i| i % 11 != 10).collect();
        assert_eq!(users.len(), expected.len());
        assert!(users.len() > 2 * super::events::RESTART_ROWS_PER_FETCH as usize);
        assert_eq!(users, expected);
    }

    #[test]
    #[ignore = "needs PostgreSQL: set ADTALLY_TEST_POSTGRES"]
    fn postgres_meta_and_advertisers() {
        let db = TestDb::new("adv");
        let s = db.store();
        assert_eq!(s.meta("secret").expect("meta"), None);
        assert_eq!(s.meta_init("secret", "one").expect("init"), "one");
        assert_eq!(s.meta_init("secret", "two").expect("init again"), "one");
        assert_eq!(s.meta("secret").expect("meta"), Some("one".into()));

        let a = new_advertiser(s, "acme");
        let b = new_advertiser(s, "bolt");
        assert!(a.id > 0 && b.id > a.id);
        assert_eq!(s.advertiser(a.id).expect("read"), Some(a.clone()));
        assert_eq!(s.advertiser(b.id + 100).expect("read"), None);

        let changed = Advertiser {
            name: "Acme Ltd".into(),
            email: "billing@acme.example".into(),
            timezone: "America/New_York".into(),
            max_conversion_value_micros: 5_000_000,
            attribution: Windows::new(14, 2, 3).expect("windows"),
            ..a.clone()
        };
        s.update_advertiser(&changed).expect("update");
        assert_eq!(s.advertiser(a.id).expect("read"), Some(changed.clone()));
        assert_eq!(s.advertisers().expect("list"), vec![changed, b.clone()]);
        let missing = Advertiser { id: b.id + 100, ..b };
        assert!(
            matches!(s.update_advertiser(&missing), Err(StoreError::NotFound(what)) if what == format!("advertiser {}", missing.id))
        );
    }

    #[test]
    #[ignore = "needs PostgreSQL: set ADTALLY_TEST_POSTGRES"]
    fn postgres_keys_sessions_and_revocation() {
        let db = TestDb::new("keys");
        let s = db.store();
        let a = new_advertiser(s, "acme");
        let admin_key = s.add_api_key(KeyOwner::Admin, "h-admin", 10_000).expect("admin key");
        let key = s.add_api_key(KeyOwner::Advertiser(a.id), "h-acme", 20_000).expect("key");
        assert!(matches!(s.add_api_key(KeyOwner::Admin, "h-acme", 1), Err(StoreError::Conflict(_))));

        assert_eq!(s.api_key_owner("h-admin", 30_000).expect("owner"), Some(KeyOwner::Admin));
        assert_eq!(s.api_key_owner("h-acme", 30_000).expect("owner"), Some(KeyOwner::Advertiser(a.id)));
        assert_eq!(s.api_key_owner("h-nobody", 30_000).expect("owner"), None);
        // Within a minute of the last noted use, the use is not written again.
        assert_eq!(s.api_key_owner("h-acme", 80_000).expect("owner"), Some(KeyOwner::Advertiser(a.id)));
        let info = |last_used, revoked| ApiKeyInfo {
            id: key,
            advertiser_id: Some(a.id),
            created_at_ms: 20_000,
            last_used_at_ms: last_used,
            revoked_at_ms: revoked,
        };
        assert_eq!(s.api_keys(a.id).expect("keys"), vec![info(Some(30_000), None)]);
        s.api_key_owner("h-acme", 90_001).expect("owner");
        assert_eq!(s.api_keys(a.id).expect("keys"), vec![info(Some(90_001), None)]);

        let session = |key_hash: &str, owner| Session {
            owner,
            key_hash: key_hash.into(),
            csrf_token: format!("csrf-{key_hash}"),
            created_at_ms: 100_000,
            last_seen_at_ms: 100_000,
            expires_at_ms: 1_000_000,
        };
        s.create_session("s1", &session("h-acme", KeyOwner::Advertiser(a.id))).expect("s1");
        s.create_session("s2", &session("h-acme", KeyOwner::Advertiser(a.id))).expect("s2");
        s.create_session("s3", &session("h-admin", KeyOwner::Admin)).expect("s3");
        s.create_session("s4", &session("h-config-admin", KeyOwner::Admin)).expect("s4");
        assert!(matches!(s.create_session("s1", &session("h-acme", KeyOwner::Admin)), Err(StoreError::Conflict(_))));

        // A session is returned as stored before the call, which notes its use when the
        // last noted one is more than a minute old.
        let found = s.session("s1", 160_001).expect("s1").expect("found");
        assert_eq!(found, FoundSession { session: session("h-acme", KeyOwner::Advertiser(a.id)), key_live: true });
        let seen = |now| s.session("s1", now).expect("s1").expect("found").session.last_seen_at_ms;
        assert_eq!(seen(200_000), 160_001);
        assert_eq!(seen(220_001), 160_001);
        assert_eq!(seen(220_002), 160_001);
        assert_eq!(seen(220_003), 220_002);
        let config_admin = s.session("s4", 100_000).expect("s4").expect("found");
        assert_eq!(config_admin, FoundSession { session: session("h-config-admin", KeyOwner::Admin), key_live: false });
        assert_eq!(s.session("nope", 100_000).expect("none"), None);

        // Admin keys are not revoked here, nor another advertiser's keys.
        assert!(!s.revoke_api_key(admin_key, None, 300_000).expect("admin"));
        assert!(!s.revoke_api_key(key, Some(a.id + 1), 300_000).expect("other advertiser"));
        assert!(s.revoke_api_key(key, Some(a.id), 300_000).expect("revoke"));
        assert!(!s.revoke_api_key(key, None, 300_001).expect("again"));
        assert_eq!(s.api_keys(a.id).expect("keys"), vec![info(Some(90_001), Some(300_000))]);
        assert_eq!(s.api_key_owner("h-acme", 400_000).expect("owner"), None);
        assert_eq!(s.session("s1", 300_000).expect("s1"), None);
        assert_eq!(s.session("s2", 300_000).expect("s2"), None);
        assert!(s.session("s3", 300_000).expect("s3").is_some_and(|f| f.key_live));

        assert!(s.delete_session("s3").expect("delete"));
        assert!(!s.delete_session("s3").expect("delete again"));
        // s4 was last seen at 100 000: idle since before 100 001.
        s.create_session("s5", &Session { expires_at_ms: 500_000, ..session("h-admin", KeyOwner::Admin) }).expect("s5");
        s.create_session("s6", &session("h-admin", KeyOwner::Admin)).expect("s6");
        s.session("s6", 400_000).expect("touch s6");
        assert_eq!(s.purge_sessions(500_000, 100_001).expect("purge"), 2);
        assert!(s.session("s6", 400_000).expect("s6").is_some());
    }

    #[test]
    #[ignore = "needs PostgreSQL: set ADTALLY_TEST_POSTGRES"]
    fn postgres_promo_redemption_limits() {
        let mut db = TestDb::new("promo");
        let s = db.store();
        let (a, b, c) = (new_advertiser(s, "a"), new_advertiser(s, "b"), new_advertiser(s, "c"));
        let promo = |code: &str, max, expires| PromoCode {
            code: code.into(),
            amount_micros: 25_000_000,
            expires_at_ms: expires,
            max_redemptions: max,
            created_at_ms: 1_000,
        };
        s.create_promo(&promo("TWO", 2, Some(100_000))).expect("promo");
        assert!(matches!(s.create_promo(&promo("TWO", 5, None)), Err(StoreError::Conflict(_))));

        let entry = s.redeem_promo("TWO", a.id, 50_000).expect("first");
        assert_eq!(
            entry,
            LedgerEntry {
                id: entry.id,
                at_ms: 50_000,
                kind: "promo".into(),
                amount_micros: 25_000_000,
                note: Some("promo code TWO".into())
            }
        );
        assert!(entry.id.is_some());
        let refused = |r: Result<LedgerEntry>| match r {
            Err(StoreError::Refused { code, message }) => (code, message),
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(
            refused(s.redeem_promo("TWO", a.id, 50_001)),
            ("promo_already_redeemed", "this advertiser has already redeemed this code".into())
        );
        s.redeem_promo("TWO", b.id, 50_002).expect("second");
        assert_eq!(
            refused(s.redeem_promo("TWO", c.id, 50_003)),
            ("promo_exhausted", "this promo code has been used up".into())
        );
        assert_eq!(
            refused(s.redeem_promo("NONE", c.id, 50_003)),
            ("promo_not_found", "no promo code has this name".into())
        );
        s.create_promo(&promo("OLD", 10, Some(100_000))).expect("promo");
        assert_eq!(
            refused(s.redeem_promo("OLD", c.id, 100_000)),
            ("promo_expired", "this promo code has expired".into())
        );
        assert_eq!(s.credit_totals().expect("totals"), vec![(a.id, 25_000_000), (b.id, 25_000_000)]);

        // Two redemptions at once of a code with one left: exactly one gets it, and
        // the count never passes the limit. Several rounds, since one race can be won
        // by timing alone.
        const ROUNDS: usize = 30;
        for round in 0..ROUNDS {
            s.create_promo(&promo(&format!("ONE{round}"), 1, None)).expect("promo");
        }
        let store = Arc::new(db.store.take().expect("store"));
        for round in 0..ROUNDS {
            let code = format!("ONE{round}");
            let start = Arc::new(Barrier::new(2));
            let handles: Vec<_> = [a.id, b.id]
                .into_iter()
                .map(|advertiser| {
                    let (store, start, code) = (Arc::clone(&store), Arc::clone(&start), code.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        store.redeem_promo(&code, advertiser, 60_000)
                    })
                })
                .collect();
            let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
            assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "round {round}: {outcomes:?}");
            assert!(outcomes.iter().any(|r| matches!(r, Err(StoreError::Refused { code: "promo_exhausted", .. }))));
        }
        let promos: i64 = store.credit_totals().expect("totals").into_iter().map(|(_, total)| total).sum();
        assert_eq!(promos, (2 + ROUNDS as i64) * 25_000_000);
        db.store = Some(Arc::try_unwrap(store).expect("the threads are done"));
    }

    #[test]
    #[ignore = "needs PostgreSQL: set ADTALLY_TEST_POSTGRES"]
    fn postgres_credits_audit_and_mail() {
        let db = TestDb::new("credits");
        let s = db.store();
        let a = new_advertiser(s, "acme");
        let b = new_advertiser(s, "bolt");
        let credit = s.add_credit(a.id, CreditKind::Promo, 7_000_000, Some("welcome"), 5_000).expect("credit");
        assert_eq!(credit.kind, "promo");
        assert_eq!((credit.at_ms, credit.amount_micros, credit.note.as_deref()), (5_000, 7_000_000, Some("welcome")));
        let (topup, bonus) =
            s.add_topup(a.id, 100_000_000, Some("invoice 12"), Some(10_000_000), 6_000).expect("topup");
        let topup_id = topup.id.expect("id");
        assert_eq!(
            topup,
            LedgerEntry {
                id: Some(topup_id),
                at_ms: 6_000,
                kind: "topup".into(),
                amount_micros: 100_000_000,
                note: Some("invoice 12".into())
            }
        );
        let bonus = bonus.expect("bonus");
        assert!(bonus.id.expect("id") > topup_id);
        assert_eq!(
            (bonus.kind.as_str(), bonus.amount_micros, bonus.note.clone()),
            ("bonus", 10_000_000, Some(format!("top-up bonus on {topup_id}")))
        );
        let (plain, none) = s.add_topup(b.id, 1, None, None, 7_000).expect("topup");
        assert_eq!((plain.note, none), (None, None));
        // An unknown advertiser: a conflict, as on SQLite, and nothing written.
        assert!(matches!(s.add_topup(b.id + 100, 5, None, Some(1), 8_000), Err(StoreError::Conflict(_))));
        assert_eq!(s.credit_totals().expect("totals"), vec![(a.id, 117_000_000), (b.id, 1)]);
        let credits = block_on(accounts::ledger_credits(&s.conn().expect("conn"), a.id)).expect("credits");
        assert_eq!(credits, vec![credit, topup, bonus]);

        for (at, action) in [(1, "first"), (2, "second"), (3, "third")] {
            let entry = AuditEntry {
                at_ms: at,
                actor: "admin".into(),
                action: action.into(),
                target: format!("advertiser:{}", a.id),
                detail: "{}".into(),
            };
            s.audit(&entry).expect("audit");
        }
        let log = s.audit_log(2).expect("log");
        assert_eq!(
            log.iter().map(|e| (e.at_ms, e.action.as_str())).collect::<Vec<_>>(),
            vec![(3, "third"), (2, "second")]
        );

        s.set_weekly_report(a.id, false, 1).expect("opt out");
        s.set_weekly_report(a.id, false, 2).expect("opt out again");
        s.set_weekly_report(b.id, false, 2).expect("opt out");
        s.set_weekly_report(b.id, true, 3).expect("opt in");
        assert_eq!(s.weekly_report_optouts().expect("optouts"), vec![a.id]);
        assert!(s.claim_mail(a.id, "weekly:2026-11-23", 1).expect("claim"));
        assert!(!s.claim_mail(a.id, "weekly:2026-11-23", 2).expect("claimed"));
        assert!(s.claim_mail(b.id, "weekly:2026-11-23", 2).expect("claim"));
    }

    #[test]
    #[ignore = "needs PostgreSQL: set ADTALLY_TEST_POSTGRES"]
    fn postgres_placements_campaigns_and_ads() {
        let db = TestDb::new("catalog");
        let s = db.store();
        let p = s.create_placement("sidebar-main", "Sidebar", Format::Sidebar, 1_500_000).expect("placement");
        let q = s.create_placement("video-top", "Video", Format::Video, 0).expect("placement");
        match s.create_placement("sidebar-main", "Again", Format::Compact, 1) {
            Err(StoreError::Conflict(what)) => assert_eq!(what, "UNIQUE constraint failed: placements.slug"),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(s.placements().expect("placements"), vec![p.clone(), q]);
        assert_eq!(
            (p.slug.as_str(), p.name.as_str(), p.format, p.floor_cpm_micros),
            ("sidebar-main", "Sidebar", Format::Sidebar, 1_500_000)
        );

        let a = new_advertiser(s, "acme");
        let b = new_advertiser(s, "bolt");
        let mut k = Campaign::draft(a.id, "Spring", 2_000_000, 500_000_000, 9_000);
        k.daily_budget_micros = Some(20_000_000);
        k.start_at_ms = Some(10_000);
        k.end_at_ms = Some(90_000_000);
        k.pacing = Pacing::Asap;
        k.targeting.devices = vec![Device::Mobile, Device::Tablet];
        k.targeting.placements = vec!["sidebar-main".into(), "video-top".into()];
        k.frequency_cap = Some(FrequencyCap { impressions: 3, per_hours: 24 });
        let k = s.create_campaign(&k).expect("campaign");
        assert_eq!(s.campaign(k.id).expect("read"), Some(k.clone()));
        assert!(matches!(s.create_campaign(&Campaign::draft(b.id + 100, "x", 1, 1, 1)), Err(StoreError::Conflict(_))));

        let content = AdContent {
            body: "Fresh".into(),
            image_url: Some("https://acme.example/a.png".into()),
            ..AdContent::new(Format::Sidebar, "Spring sale", "https://acme.example/spring")
        };
        let approved = Ad { status: AdStatus::Approved, ..Ad::new(0, a.id, content.clone(), 9_500) };
        let pending = Ad::new(0, a.id, AdContent::new(Format::Compact, "Two", "https://acme.example/two"), 9_600);
        let clone = Campaign { name: "Spring (copy)".into(), ..k.clone() };
        let k2 = s.create_campaign_with_ads(&clone, &[approved.clone(), pending.clone()]).expect("with ads");
        assert_eq!(k2, Campaign { id: k2.id, ..clone });
        let ads = s.ads(Some(k2.id)).expect("ads");
        assert_eq!(ads.len(), 2);
        assert_eq!(ads[0], Ad { id: ads[0].id, campaign_id: k2.id, ..approved.clone() });
        assert_eq!(ads[1], Ad { id: ads[1].id, campaign_id: k2.id, ..pending.clone() });
        // The cloned approved ad's version is resolvable at once.
        assert_eq!(
            s.approved_versions().expect("versions"),
            vec![ApprovedVersion { ad_id: ads[0].id, version: 1, target_url: "https://acme.example/spring".into() }]
        );
        // An ad of a campaign that does not exist: a conflict, as on SQLite.
        let orphan = Ad { advertiser_id: a.id, ..pending.clone() };
        assert!(matches!(s.create_ad(&Ad { campaign_id: k2.id + 100, ..orphan }), Err(StoreError::Conflict(_))));

        let kb = s.create_campaign(&Campaign::draft(b.id, "Bolt", 1, 2, 3)).expect("campaign");
        assert_eq!(s.campaigns(Some(a.id)).expect("a").iter().map(|c| c.id).collect::<Vec<_>>(), vec![k.id, k2.id]);
        assert_eq!(s.campaigns(None).expect("all").iter().map(|c| c.id).collect::<Vec<_>>(), vec![k.id, k2.id, kb.id]);

        let mut edited = k.clone();
        edited.name = "Summer".into();
        edited.status = CampaignStatus::Paused;
        edited.daily_budget_micros = None;
        edited.start_at_ms = None;
        edited.targeting.devices = vec![];
        edited.targeting.placements = vec![];
        edited.frequency_cap = None;
        s.update_campaign(&edited).expect("update");
        assert_eq!(s.campaign(k.id).expect("read"), Some(edited));
        let missing = Campaign { id: kb.id + 100, ..kb };
        assert!(
            matches!(s.update_campaign(&missing), Err(StoreError::NotFound(what)) if what == format!("campaign {}", missing.id))
        );
        assert_eq!(s.campaign(missing.id).expect("read"), None);
    }

    #[test]
    #[ignore = "needs PostgreSQL: set ADTALLY_TEST_POSTGRES"]
    fn postgres_ad_edit_revision_review_and_versions() {
        let db = TestDb::new("review");
        let s = db.store();
        let a = new_advertiser(s, "acme");
        let k = Campaign { status: CampaignStatus::PendingReview, ..Campaign::draft(a.id, "Launch", 1, 100, 1) };
        let k = s.create_campaign(&k).expect("campaign");
        let v1 = AdContent::new(Format::Video, "Launch", "https://acme.example/v1");
        let v1 = AdContent { video_url: Some("https://acme.example/v1.mp4".into()), ..v1 };
        let mut ad = s.create_ad(&Ad::new(k.id, a.id, v1.clone(), 2_000)).expect("ad");
        assert_eq!(s.ad(ad.id).expect("read"), Some(ad.clone()));
        assert_eq!(s.approved_versions().expect("versions"), vec![]);

        // Rejected first: the campaign keeps waiting.
        let read = ad.stamp();
        ad.reject("blurry".into());
        s.review_ad(&ad, read, 3_000).expect("reject");
        assert_eq!(s.ad(ad.id).expect("read"), Some(ad.clone()));
        assert_eq!(s.campaign(k.id).expect("read").map(|c| c.status), Some(CampaignStatus::PendingReview));
        // Edited (a new version in place, back to review), then approved.
        let read = ad.stamp();
        ad.edit(AdContent { headline: "Launch!".into(), ..v1.clone() }, 3_500);
        s.update_ad(&ad, read, 3_500).expect("edit");
        assert_eq!((ad.version, ad.status), (2, AdStatus::PendingReview));
        let read = ad.stamp();
        assert_eq!(ad.approve(), (2, "https://acme.example/v1".into()));
        s.review_ad(&ad, read, 4_000).expect("approve");
        assert_eq!(s.campaign(k.id).expect("read").map(|c| c.status), Some(CampaignStatus::Active));

        // An edit of the approved ad is a revision; the approved content keeps serving.
        let v3 = AdContent { target_url: "https://acme.example/v3".into(), ..ad.content.clone() };
        let read = ad.stamp();
        ad.edit(v3.clone(), 5_000);
        s.update_ad(&ad, read, 5_000).expect("revision");
        let stored = s.ad(ad.id).expect("read").expect("ad");
        assert_eq!(stored, ad);
        let revision = stored.revision.as_deref().expect("revision");
        assert_eq!((revision.version, revision.status, revision.created_at_ms), (3, AdStatus::PendingReview, 5_000));
        assert_eq!(revision.content, v3);
        assert_eq!((stored.version, stored.content.target_url.as_str()), (2, "https://acme.example/v1"));

        // The revision rejected, edited again (the revision replaced), then approved.
        // A write made from the read before the rejection is refused: an edit cannot
        // undo a review that landed after it read the ad.
        let stale = ad.clone();
        let read = ad.stamp();
        ad.reject("typo".into());
        s.review_ad(&ad, read, 5_500).expect("reject revision");
        assert_eq!(s.ad(ad.id).expect("read"), Some(ad.clone()));
        let mut late = stale.clone();
        late.edit(AdContent { headline: "Late".into(), ..v3.clone() }, 5_600);
        assert!(
            matches!(s.update_ad(&late, stale.stamp(), 5_600), Err(StoreError::Refused { code: "ad_changed", .. })),
            "a stale edit was written"
        );
        assert_eq!(s.ad(ad.id).expect("read"), Some(ad.clone()));
        let v3b = AdContent { target_url: "https://acme.example/v3b".into(), ..v3 };
        let read = ad.stamp();
        ad.edit(v3b, 6_000);
        s.update_ad(&ad, read, 6_000).expect("revision again");
        assert_eq!(s.ad(ad.id).expect("read"), Some(ad.clone()));
        // Version 3 was the rejected content; the new content has a number of its own.
        let read = ad.stamp();
        assert_eq!(ad.approve(), (4, "https://acme.example/v3b".into()));
        s.review_ad(&ad, read, 7_000).expect("approve revision");
        let stored = s.ad(ad.id).expect("read").expect("ad");
        assert_eq!(stored, ad);
        assert_eq!(stored.revision, None);
        // Re-writing an approved version keeps its first approval.
        s.update_ad(&ad, ad.stamp(), 8_000).expect("rewrite");
        assert_eq!(
            s.approved_versions().expect("versions"),
            vec![
                ApprovedVersion { ad_id: ad.id, version: 2, target_url: "https://acme.example/v1".into() },
                ApprovedVersion { ad_id: ad.id, version: 4, target_url: "https://acme.example/v3b".into() },
            ]
        );
        let approved_at: Vec<i64> = block_on(async {
            let c = s.conn()?;
            let rows = c.query("SELECT approved_at_ms FROM ad_versions ORDER BY version", &[]).await?;
            Ok::<_, StoreError>(rows.iter().map(|r| r.get(0)).collect())
        })
        .expect("approved at");
        assert_eq!(approved_at, vec![4_000, 7_000]);
        assert_eq!(s.ads(None).expect("ads"), vec![ad.clone()]);
        let gone = Ad { id: ad.id + 100, ..ad.clone() };
        assert!(
            matches!(s.update_ad(&gone, gone.stamp(), 9_000), Err(StoreError::NotFound(what)) if what == format!("ad {}", gone.id))
        );
        crate::tests::racing_writes_from_one_read_of_an_ad_land_once(s, &ad);
    }
}
