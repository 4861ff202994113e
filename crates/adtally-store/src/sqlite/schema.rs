//! The SQLite schema: the migrations in order, the day layer's tables (their keys,
//! sums and reach tables) and how they are built from the quarter-hour rollups.

use super::*;

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE advertisers (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, timezone TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, advertiser_id INTEGER REFERENCES advertisers(id),
    created_at_ms INTEGER NOT NULL, last_used_at_ms INTEGER, revoked_at_ms INTEGER
);
CREATE TABLE promo_codes (
    code TEXT PRIMARY KEY, amount_micros INTEGER NOT NULL, expires_at_ms INTEGER,
    max_redemptions INTEGER NOT NULL, redemptions INTEGER NOT NULL DEFAULT 0, created_at_ms INTEGER NOT NULL
);
CREATE TABLE promo_redemptions (
    code TEXT NOT NULL REFERENCES promo_codes(code), advertiser_id INTEGER NOT NULL REFERENCES advertisers(id),
    at_ms INTEGER NOT NULL, PRIMARY KEY (code, advertiser_id)
);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE credits (
    id INTEGER PRIMARY KEY, advertiser_id INTEGER NOT NULL REFERENCES advertisers(id),
    at_ms INTEGER NOT NULL, kind TEXT NOT NULL, amount_micros INTEGER NOT NULL, note TEXT
);
CREATE INDEX credits_advertiser ON credits(advertiser_id);
CREATE TABLE placements (
    id INTEGER PRIMARY KEY, slug TEXT NOT NULL UNIQUE, name TEXT NOT NULL, format TEXT NOT NULL,
    floor_cpm_micros INTEGER NOT NULL
);
CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY, advertiser_id INTEGER NOT NULL REFERENCES advertisers(id),
    name TEXT NOT NULL, status TEXT NOT NULL, cpm_bid_micros INTEGER NOT NULL,
    total_budget_micros INTEGER NOT NULL, daily_budget_micros INTEGER,
    start_at_ms INTEGER, end_at_ms INTEGER, pacing TEXT NOT NULL,
    target_devices TEXT NOT NULL, target_placements TEXT NOT NULL,
    cap_impressions INTEGER, cap_per_hours INTEGER, created_at_ms INTEGER NOT NULL
);
CREATE INDEX campaigns_advertiser ON campaigns(advertiser_id);
CREATE TABLE ads (
    id INTEGER PRIMARY KEY, campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    advertiser_id INTEGER NOT NULL, format TEXT NOT NULL, headline TEXT NOT NULL, body TEXT NOT NULL,
    image_url TEXT, cta TEXT NOT NULL, target_url TEXT NOT NULL, status TEXT NOT NULL,
    rejection_reason TEXT, created_at_ms INTEGER NOT NULL
);
CREATE INDEX ads_campaign ON ads(campaign_id);
-- Raw events. Ids are (commit milliseconds << 20) + sequence, so inserts append and
-- "events committed since T" is a range of ids.
CREATE TABLE events (
    id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, kind INTEGER NOT NULL, verdict INTEGER NOT NULL,
    decision_id INTEGER NOT NULL, advertiser_id INTEGER NOT NULL, campaign_id INTEGER NOT NULL,
    ad_id INTEGER NOT NULL, placement_id INTEGER NOT NULL, user_key INTEGER NOT NULL,
    ip_key INTEGER NOT NULL, device INTEGER NOT NULL, country TEXT NOT NULL,
    cost_micros INTEGER NOT NULL, value_micros INTEGER NOT NULL
);
-- Idempotency keys of imported events and conversion order ids.
CREATE TABLE dedup_keys (key TEXT PRIMARY KEY) WITHOUT ROWID;
-- Events summed per UTC quarter hour and every dimension, kind and verdict.
CREATE TABLE rollups (
    bucket_ms INTEGER NOT NULL, advertiser_id INTEGER NOT NULL, campaign_id INTEGER NOT NULL,
    ad_id INTEGER NOT NULL, placement_id INTEGER NOT NULL, device INTEGER NOT NULL,
    country TEXT NOT NULL, kind INTEGER NOT NULL, verdict INTEGER NOT NULL,
    events INTEGER NOT NULL, cost_micros INTEGER NOT NULL, value_micros INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, ad_id, placement_id, device, country, kind, verdict)
) WITHOUT ROWID;
CREATE INDEX rollups_advertiser ON rollups(advertiser_id, bucket_ms);
"#,
    r#"
-- The rollup key carries the advertiser and the campaign: before, two advertisers'
-- unattributed conversions in one quarter hour shared a row. Rebuilt from the raw
-- events, which also repairs rows merged that way.
CREATE TABLE rollups_v2 (
    bucket_ms INTEGER NOT NULL, advertiser_id INTEGER NOT NULL, campaign_id INTEGER NOT NULL,
    ad_id INTEGER NOT NULL, placement_id INTEGER NOT NULL, device INTEGER NOT NULL,
    country TEXT NOT NULL, kind INTEGER NOT NULL, verdict INTEGER NOT NULL,
    events INTEGER NOT NULL, cost_micros INTEGER NOT NULL, value_micros INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, advertiser_id, campaign_id, ad_id, placement_id, device, country, kind, verdict)
) WITHOUT ROWID;
INSERT INTO rollups_v2
    SELECT (at_ms / 900000) * 900000, advertiser_id, campaign_id, ad_id, placement_id, device, country, kind,
           verdict, COUNT(*), SUM(cost_micros), SUM(value_micros)
    FROM events GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9;
DROP TABLE rollups;
ALTER TABLE rollups_v2 RENAME TO rollups;
CREATE INDEX rollups_advertiser ON rollups(advertiser_id, bucket_ms);
-- Which event holds an order id, and whether an authoritative postback put it there (a
-- pixel's conversion may be replaced by the postback, never the reverse). Keys from
-- before count as authoritative: the event they name was not recorded.
-- Ad versions: the content that serves carries a version; an edit of an approved ad
-- waits in ad_revisions; every version ever approved keeps its target URL, which clicks
-- on decisions that served it redirect to.
ALTER TABLE ads ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE ads ADD COLUMN video_url TEXT;
CREATE TABLE ad_revisions (
    ad_id INTEGER PRIMARY KEY REFERENCES ads(id), version INTEGER NOT NULL, format TEXT NOT NULL,
    headline TEXT NOT NULL, body TEXT NOT NULL, image_url TEXT, cta TEXT NOT NULL, target_url TEXT NOT NULL,
    status TEXT NOT NULL, rejection_reason TEXT, created_at_ms INTEGER NOT NULL, video_url TEXT
);
CREATE TABLE ad_versions (
    ad_id INTEGER NOT NULL REFERENCES ads(id), version INTEGER NOT NULL, target_url TEXT NOT NULL,
    approved_at_ms INTEGER NOT NULL, PRIMARY KEY (ad_id, version)
) WITHOUT ROWID;
INSERT INTO ad_versions SELECT id, 1, target_url, created_at_ms FROM ads WHERE status = 'approved';
ALTER TABLE dedup_keys ADD COLUMN event_id INTEGER;
ALTER TABLE dedup_keys ADD COLUMN authoritative INTEGER NOT NULL DEFAULT 1;
ALTER TABLE advertisers ADD COLUMN max_conversion_value_micros INTEGER NOT NULL DEFAULT 1000000000;
"#,
    r#"
-- Attribution reads one advertiser's events of a time range (its conversions, then the
-- touches of the users who converted): a range read instead of a scan of every event.
CREATE INDEX events_advertiser_at ON events(advertiser_id, at_ms);
"#,
    r#"
-- Weekly email reports: who opted out (everyone else gets them once SMTP is configured),
-- and every report sent, so that a restart never sends one twice.
CREATE TABLE weekly_report_optouts (
    advertiser_id INTEGER PRIMARY KEY REFERENCES advertisers(id), at_ms INTEGER NOT NULL
);
CREATE TABLE sent_mail (
    advertiser_id INTEGER NOT NULL REFERENCES advertisers(id), report TEXT NOT NULL, sent_at_ms INTEGER NOT NULL,
    PRIMARY KEY (advertiser_id, report)
) WITHOUT ROWID;
"#,
    r#"
-- Dashboard sessions: the hash of the session id (never the id), the owner (NULL for
-- admin), and the hash of the key it was opened with, so revoking the key ends it.
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY, advertiser_id INTEGER REFERENCES advertisers(id), key_hash TEXT NOT NULL,
    csrf_token TEXT NOT NULL, created_at_ms INTEGER NOT NULL, last_seen_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_key ON sessions(key_hash);
"#,
    r#"
-- Reach: the users of each valid-impression rollup row as a mergeable sketch (see
-- adtally_core::sketch; NULL on every other row). Rebuilt from the raw events, so
-- reach also covers what was counted before the upgrade. Buckets as bucket_of
-- (floor division, also for times before 1970).
ALTER TABLE rollups ADD COLUMN reach BLOB;
UPDATE rollups SET reach = s.sketch FROM (
    SELECT at_ms - ((at_ms % 900000) + 900000) % 900000 AS bucket_ms, advertiser_id, campaign_id, ad_id,
           placement_id, device, country, reach_sketch(user_key) AS sketch
    FROM events WHERE kind = 1 AND verdict = 0 GROUP BY 1, 2, 3, 4, 5, 6, 7
) AS s
WHERE rollups.bucket_ms = s.bucket_ms AND rollups.advertiser_id = s.advertiser_id
  AND rollups.campaign_id = s.campaign_id AND rollups.ad_id = s.ad_id AND rollups.placement_id = s.placement_id
  AND rollups.device = s.device AND rollups.country = s.country AND rollups.kind = 1 AND rollups.verdict = 0;
"#,
    r#"
-- The day layer (see rollup.rs and ARCHITECTURE.md): its four tables have a column per
-- (kind, verdict) pair, so their statements are written by `create_day_layer`, which
-- runs right after this script, in the same transaction, and fills them from the
-- quarter-hour rollups.
"#,
    r#"
-- Each advertiser's attribution windows and time-decay half-life, in days (see
-- adtally_core::attribution::Windows for the bounds); the defaults are the old fixed ones.
ALTER TABLE advertisers ADD COLUMN click_window_days INTEGER NOT NULL DEFAULT 30;
ALTER TABLE advertisers ADD COLUMN view_window_days INTEGER NOT NULL DEFAULT 1;
ALTER TABLE advertisers ADD COLUMN half_life_days INTEGER NOT NULL DEFAULT 7;
"#,
    r#"
-- Sums and reach over aligned spans of days, for every day table (see spans.rs):
-- `spans::create_tables` runs right after this script, in the same transaction.
"#,
    r#"
-- The day layer's second layout: sketches in reach tables apart from the sums, one table
-- per dimension. `upgrade_day_layer_v1` runs right after this script, in the same
-- transaction, and builds it from the first layout's tables.
"#,
    r#"
-- Reach tables (the day layer's and the spans') become rowid tables: `rowid_reach_tables`
-- runs right after this script, in the same transaction.
"#,
    r#"
-- The valid clicks, for rebuilding attribution's touches after a restart: clicks are
-- kept for the longest click window (up to 90 days), other events for a day or two.
-- (Click is kind 3, valid is verdict 0: see adtally_core::event.)
CREATE INDEX IF NOT EXISTS events_valid_clicks ON events(id) WHERE kind = 3 AND verdict = 0;
"#,
    r#"
-- The day-layer rows' counts of users: `add_user_counts` runs right after this script.
"#,
];

/// Undoes the migrations after the day layer's, for tests that take a store back to an
/// earlier version to see the migrations run again. Each later migration adds its undo.
#[cfg(test)]
pub(super) const UNDO_AFTER_DAY_LAYER: &str = "ALTER TABLE advertisers DROP COLUMN click_window_days;
     ALTER TABLE advertisers DROP COLUMN view_window_days;
     ALTER TABLE advertisers DROP COLUMN half_life_days;
     DROP TABLE spans_campaign; DROP TABLE spans_ad; DROP TABLE spans_placement; DROP TABLE spans_device;
     DROP TABLE spans_country; DROP TABLE spans_campaign_reach; DROP TABLE spans_ad_reach;
     DROP TABLE spans_placement_reach; DROP TABLE spans_device_reach; DROP TABLE spans_country_reach;
     DROP TABLE spans_built;";

/// Drops the day layer's tables (tests that take a store back before it).
#[cfg(test)]
pub(super) const DROP_DAY_LAYER: &str =
    "DROP TABLE rollups_day_campaign; DROP TABLE rollups_day_ad; DROP TABLE rollups_day_device;
     DROP TABLE rollups_day_country; DROP TABLE rollups_day_campaign_reach; DROP TABLE rollups_day_ad_reach;
     DROP TABLE rollups_day_device_reach; DROP TABLE rollups_day_country_reach; DROP TABLE rollups_day_placement;
     DROP TABLE rollups_day_placement_reach;";

/// The migration (index into [`MIGRATIONS`]) after whose script the day layer is
/// created and built from the quarter-hour rollups, in the same transaction.
pub(super) const DAY_LAYER_MIGRATION: usize = 6;

/// The migration after whose script the span tables are created.
pub(super) const SPANS_MIGRATION: usize = 8;

/// The migration after whose script a day layer of the first layout is upgraded.
pub(super) const DAY_LAYER_V2_MIGRATION: usize = 9;

/// The migration after whose script reach tables kept `WITHOUT ROWID` are rebuilt.
pub(super) const ROWID_REACH_MIGRATION: usize = 10;

/// The migration after whose script the day layer's rows get their `users` column.
pub(super) const USER_COUNTS_MIGRATION: usize = 12;

/// Migration 13: each day-layer row's count of distinct users, the estimate of its
/// reach sketch, kept for sealed days (`spans::count_users`) so that a report by day
/// reads no sketch for them. NULL: not counted (yet, or since a batch changed the row).
/// A column of the sums, not of the reach table: there it would follow the 16 KiB
/// sketch, and reading it would walk the sketch's overflow pages.
pub(super) fn add_user_counts(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    for table in DayTable::ALL {
        let name = table.name();
        let has: bool =
            tx.prepare(&format!("SELECT 1 FROM pragma_table_info('{name}') WHERE name = 'users'"))?.exists([])?;
        if !has {
            tx.execute_batch(&format!("ALTER TABLE {name} ADD COLUMN users INTEGER;"))?;
        }
    }
    Ok(())
}

/// The key columns of a day-layer table, in key order (the order [`day_key_values`]
/// binds them).
pub(crate) fn day_key_columns(table: DayTable) -> &'static str {
    match table {
        DayTable::Campaign => "advertiser_id, utc, day_ms, campaign_id",
        DayTable::Ad => "advertiser_id, utc, campaign_id, day_ms, ad_id",
        DayTable::Placement => "advertiser_id, utc, campaign_id, day_ms, placement_id",
        DayTable::Device => "advertiser_id, utc, campaign_id, day_ms, device",
        DayTable::Country => "advertiser_id, utc, campaign_id, day_ms, country",
    }
}

/// A day key's values, in the order of [`day_key_columns`].
pub(super) fn day_key_values(k: &DayKey) -> Vec<Value> {
    let (utc, day, campaign) = (i64::from(k.utc).into(), k.day_ms.into(), db_id(k.campaign_id).into());
    let mut out: Vec<Value> = vec![k.advertiser_id.into(), utc];
    if k.table == DayTable::Campaign {
        out.extend([day, campaign]);
    } else {
        out.extend([campaign, day]);
    }
    match k.table {
        DayTable::Campaign => {}
        DayTable::Ad => out.push(db_id(k.ad_id).into()),
        DayTable::Placement => out.push(db_id(k.placement_id).into()),
        DayTable::Device => out.push(i64::from(k.device.unwrap_or_default().code()).into()),
        DayTable::Country => out.push(k.country.unwrap_or_default().as_str().to_owned().into()),
    }
    out
}

/// The sum columns of a day-layer row, after its key: one per (kind, verdict), then
/// money. Its reach is a row of the same key in the table's reach table.
pub(crate) fn day_sum_columns() -> Vec<String> {
    let mut columns: Vec<String> = slots().into_iter().map(|(_, _, name)| name).collect();
    columns.extend(["cost_micros", "value_micros", "revenue_micros"].map(String::from));
    columns
}

/// The sum columns with their types, for `CREATE TABLE`.
pub(crate) fn day_sum_definitions() -> Vec<String> {
    day_sum_columns().into_iter().map(|c| format!("{c} INTEGER NOT NULL")).collect()
}

/// The sums of day-layer rows (or span rows), in [`day_sum_columns`]' order: counts add,
/// money saturates.
pub(crate) fn day_sums_of_rows() -> String {
    let counts = slots().into_iter().map(|(_, _, c)| format!("SUM({c})"));
    let money = ["cost_micros", "value_micros", "revenue_micros"].map(|m| format!("sat_sum({m})"));
    counts.chain(money).collect::<Vec<_>>().join(", ")
}

/// A day-layer table's key columns with their types, for `CREATE TABLE`.
pub(crate) fn day_key_definitions(table: DayTable) -> Vec<String> {
    day_key_columns(table)
        .split(", ")
        .map(|c| format!("{c} {} NOT NULL", if c == "country" { "TEXT" } else { "INTEGER" }))
        .collect()
}

/// Creates a day-layer table's reach table: the same key, and the sketch of the valid
/// impressions' users. Apart from the sums, because a 16 KiB sketch inside the row made
/// SQLite copy it with every row a sums query read (twice the time of the sums alone),
/// and every batch that changed a count rewrote it.
///
/// A rowid table, unlike the sums tables: its key lives in a separate index of small
/// entries. In a `WITHOUT ROWID` table the b-tree's own cells hold the sketch, and SQLite
/// copies a cell's whole payload, overflow pages and all, for every key comparison of a
/// seek — 16 KiB per step of every binary search, in the writer's upserts and the
/// reports' range reads alike.
pub(super) fn create_reach_table(tx: &rusqlite::Transaction<'_>, table: DayTable) -> Result<()> {
    let key = day_key_columns(table);
    tx.execute_batch(&format!(
        "CREATE TABLE {} ({}, reach BLOB NOT NULL, PRIMARY KEY ({key}));",
        table.reach_name(),
        day_key_definitions(table).join(", ")
    ))?;
    Ok(())
}

/// Migration 11: the reach tables (see [`create_reach_table`]) were created `WITHOUT
/// ROWID`; each one still so is rebuilt as a rowid table of the same columns and key.
pub(super) fn rowid_reach_tables(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    let names = DayTable::ALL.into_iter().flat_map(|t| [t.reach_name(), spans::reach_table(t)]);
    for name in names {
        let created: Option<String> = tx
            .query_row("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1", [name], |r| r.get(0))
            .optional()?;
        let Some(old) = created.filter(|sql| sql.ends_with("WITHOUT ROWID")) else { continue };
        // The column list as stored (the name before it may be quoted, after a rename).
        let Some(columns) = old.find('(').map(|at| old[at..].trim_end_matches("WITHOUT ROWID")) else { continue };
        tx.execute_batch(&format!(
            "CREATE TABLE {name}_rowid {columns};
             INSERT INTO {name}_rowid SELECT * FROM {name};
             DROP TABLE {name};
             ALTER TABLE {name}_rowid RENAME TO {name};"
        ))?;
    }
    Ok(())
}

/// Migration 10: the day layer as first shipped (migration 7) kept each row's sketch in
/// a `reach` column and had one ad × placement table; it now has reach tables apart from
/// the sums and one table per dimension. Each new table is summed from the old table that
/// holds its key (sums add; sketches union), so the upgrade reads the day layer, not the
/// quarter hours. A store whose day layer was created since has nothing to upgrade.
pub(super) fn upgrade_day_layer_v1(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    let v1: bool =
        tx.prepare("SELECT 1 FROM pragma_table_info('rollups_day_campaign') WHERE name = 'reach'")?.exists([])?;
    if !v1 {
        return Ok(());
    }
    let old = ["rollups_day_campaign", "rollups_day_ad", "rollups_day_device", "rollups_day_country"];
    for name in old {
        tx.execute_batch(&format!("ALTER TABLE {name} RENAME TO {name}_v1;"))?;
    }
    create_day_tables(tx)?;
    for table in DayTable::ALL {
        let source = match table {
            DayTable::Campaign => "rollups_day_campaign_v1",
            DayTable::Ad | DayTable::Placement => "rollups_day_ad_v1",
            DayTable::Device => "rollups_day_device_v1",
            DayTable::Country => "rollups_day_country_v1",
        };
        let key = day_key_columns(table);
        tx.execute_batch(&format!(
            "INSERT INTO {} ({key}, {}) SELECT {key}, {} FROM {source} GROUP BY {key};
             INSERT INTO {} ({key}, reach) SELECT {key}, reach_union(reach) FROM {source} WHERE reach IS NOT NULL
             GROUP BY {key};",
            table.name(),
            day_sum_columns().join(", "),
            day_sums_of_rows(),
            table.reach_name()
        ))?;
    }
    for name in old {
        tx.execute_batch(&format!("DROP TABLE {name}_v1;"))?;
    }
    Ok(())
}

/// Creates the day layer's tables (migration 7). Keys start with the advertiser, so one
/// tenant's report reads only its own rows. `utc` = 1: UTC days; 0: the days of the
/// advertiser's own zone. The campaign table has UTC days for every advertiser (the
/// operator's reports) and own days for advertisers not in UTC; the others only own days
/// (utc = 1 when that zone is UTC). The campaign table is keyed by day first (an
/// advertiser's campaigns over a range); the others by campaign first (a campaign's ads,
/// placements, devices, countries over a range).
pub(super) fn create_day_layer(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    create_day_tables(tx)?;
    rebuild_day_layer(tx, None)
}

/// The day layer's tables, empty.
pub(super) fn create_day_tables(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    for table in DayTable::ALL {
        let key = day_key_columns(table);
        let mut columns = day_key_definitions(table);
        columns.extend(day_sum_definitions());
        tx.execute_batch(&format!(
            "CREATE TABLE {} ({}, PRIMARY KEY ({key})) WITHOUT ROWID;",
            table.name(),
            columns.join(", ")
        ))?;
        create_reach_table(tx, table)?;
    }
    Ok(())
}

/// A day-layer row's sums ([`day_sum_columns`]) over quarter-hour rollups `r`.
pub(super) fn quarter_hour_sums() -> String {
    let mut sums: Vec<String> = slots()
        .into_iter()
        .map(|(k, v, _)| {
            format!("SUM(CASE WHEN r.kind = {} AND r.verdict = {} THEN r.events ELSE 0 END)", k.code(), v.code())
        })
        .collect();
    sums.extend([
        "sat_sum(r.cost_micros)".into(),
        "sat_sum(r.value_micros)".into(),
        format!(
            "sat_sum(CASE WHEN r.kind = {} AND r.verdict = {} THEN r.value_micros ELSE 0 END)",
            EventKind::Conversion.code(),
            Verdict::Valid.code()
        ),
    ]);
    sums.join(", ")
}

/// Builds the day layer from the quarter-hour rollups: for every advertiser
/// (`advertiser` `None`, the migration), or again for one whose time zone changed (its
/// own-zone rows only; UTC rows never change). Uses the same day functions as the
/// writer (`local_day` is [`DayKey::of`]'s), so both give the same rows.
pub(super) fn rebuild_day_layer(tx: &rusqlite::Transaction<'_>, advertiser: Option<i64>) -> Result<()> {
    let sums = quarter_hour_sums();
    let zone = "COALESCE(a.timezone, 'UTC')";
    let only = "(?1 IS NULL OR r.advertiser_id = ?1)";
    let mut statements = Vec::new();
    for table in DayTable::ALL {
        // UTC days never change with the zone: built once, by the migration.
        let own = if table == DayTable::Campaign { " AND utc = 0" } else { "" };
        for name in [table.name(), table.reach_name()] {
            statements.push(format!("DELETE FROM {name} WHERE (?1 IS NULL OR advertiser_id = ?1){own}"));
        }
    }
    // (table, its key as selected, FROM and WHERE, GROUP BY).
    let mut sources = vec![
        (
            DayTable::Campaign,
            "r.advertiser_id, 1, utc_day(r.bucket_ms) AS d, r.campaign_id".to_owned(),
            "FROM rollups r WHERE ?1 IS NULL".to_owned(),
            "r.advertiser_id, d, r.campaign_id".to_owned(),
        ),
        (
            DayTable::Campaign,
            "r.advertiser_id, 0, local_day(r.bucket_ms, a.timezone) AS d, r.campaign_id".to_owned(),
            format!("FROM rollups r JOIN advertisers a ON a.id = r.advertiser_id WHERE a.timezone != 'UTC' AND {only}"),
            "r.advertiser_id, d, r.campaign_id".to_owned(),
        ),
    ];
    for (table, columns) in [
        (DayTable::Ad, "r.ad_id"),
        (DayTable::Placement, "r.placement_id"),
        (DayTable::Device, "r.device"),
        (DayTable::Country, "r.country"),
    ] {
        sources.push((
            table,
            format!("r.advertiser_id, {zone} = 'UTC', r.campaign_id, local_day(r.bucket_ms, {zone}) AS d, {columns}"),
            format!("FROM rollups r LEFT JOIN advertisers a ON a.id = r.advertiser_id WHERE {only}"),
            format!("r.advertiser_id, r.campaign_id, d, {columns}"),
        ));
    }
    for (table, key, from_where, group) in sources {
        let columns = day_key_columns(table);
        statements.push(format!(
            "INSERT INTO {} ({columns}, {}) SELECT {key}, {sums} {from_where} GROUP BY {group}",
            table.name(),
            day_sum_columns().join(", ")
        ));
        statements.push(format!(
            "INSERT INTO {} ({columns}, reach) SELECT {key}, reach_union(r.reach) {from_where} AND r.reach IS NOT NULL
             GROUP BY {group}",
            table.reach_name()
        ));
    }
    for sql in statements {
        tx.execute(&sql, [advertiser])?;
    }
    Ok(())
}

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if i == DAY_LAYER_MIGRATION {
            create_day_layer(&tx)?;
        }
        if i == SPANS_MIGRATION {
            spans::create_tables(&tx)?;
        }
        if i == DAY_LAYER_V2_MIGRATION {
            upgrade_day_layer_v1(&tx)?;
        }
        if i == ROWID_REACH_MIGRATION {
            rowid_reach_tables(&tx)?;
        }
        if i == USER_COUNTS_MIGRATION {
            add_user_counts(&tx)?;
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}
