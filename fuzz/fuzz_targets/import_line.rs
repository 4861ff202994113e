//! One NDJSON import line, parsed against a real catalog (an advertiser, a placement, a
//! campaign and an ad in a real SQLite store): a submission or a clear error, never a
//! panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use adtally_core::catalog::{Ad, AdContent, Advertiser, Campaign, Format};
use adtally_core::clock::{Clock, SystemClock};
use adtally_server::{build_state, AppState, Options, ServerConfig};
use adtally_store::{SqliteStore, Store};
use libfuzzer_sys::fuzz_target;

fn state() -> &'static Arc<AppState> {
    static STATE: OnceLock<(tempfile::TempDir, Arc<AppState>)> = OnceLock::new();
    &STATE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("dir");
            let store = SqliteStore::open(dir.path()).expect("store");
            let now = SystemClock.now_ms();
            let a = store.create_advertiser(&Advertiser::new("A", "a@a.example", "UTC", now)).expect("advertiser");
            store.create_placement("sidebar-main", "s", Format::Sidebar, 0).expect("placement");
            let c = store.create_campaign(&Campaign::draft(a.id, "c", 1_000_000, 1_000_000_000, now)).expect("campaign");
            let mut ad = Ad::new(c.id, a.id, AdContent::new(Format::Sidebar, "h", "https://a.example/"), now);
            ad.approve();
            store.create_ad(&ad).expect("ad");
            let options =
                Options { config: ServerConfig::default(), secret: Some("s".into()), admin_key: Some("k".into()), clock: Arc::new(SystemClock) };
            let store: Arc<dyn Store> = Arc::new(store);
            let (state, _) = build_state(store, options).expect("state");
            (dir, state)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let state = state();
    let catalog = state.catalog();
    let _ = adtally_server::import::parse_line(state, &catalog, data);
});
