//! Report reads: the grouped statements over the quarter-hour rollups and the day
//! layer's tables, and how their rows and reach sketches become `RollupRow`s.

use super::*;

/// The columns a report query selects (see [`crate::columns::report_columns`]); SQLite
/// needs no casts.
pub(super) fn report_columns(q: &RollupQuery, bucket: &'static str) -> (Vec<&'static str>, Vec<&'static str>) {
    crate::columns::report_columns(q, bucket, false)
}

/// SQLite's `LIMIT`: one more row than asked, so that "too many" shows; -1 is none.
pub(crate) fn row_limit(q: &RollupQuery) -> i64 {
    q.max_rows.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX - 1).saturating_add(1))
}

/// A report row as [`report_columns`] selects it, then kind, verdict, sums and reach.
pub(super) fn rollup_row_from(r: &Row) -> rusqlite::Result<RollupRow> {
    let kind: i64 = r.get(6)?;
    let verdict: i64 = r.get(7)?;
    Ok(RollupRow {
        kind: EventKind::from_code(kind).ok_or_else(|| bad_column("kind", &kind.to_string()))?,
        verdict: Verdict::from_code(verdict).ok_or_else(|| bad_column("verdict", &verdict.to_string()))?,
        sums: RollupSums { events: r.get(8)?, cost_micros: wide(r, 9)?, value_micros: wide(r, 11)? },
        reach: match r.get_ref(13)? {
            ValueRef::Blob(bytes) => Some(Reach::Users(Sketch::from_bytes(bytes).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(13, rusqlite::types::Type::Blob, Box::new(e))
            })?)),
            _ => None,
        },
        ..keyed_row(r)?
    })
}

/// A row of the group whose key columns (as [`report_columns`] selects them) begin `r`:
/// no events yet, a valid impression row.
fn keyed_row(r: &Row) -> rusqlite::Result<RollupRow> {
    Ok(RollupRow {
        bucket_ms: r.get(0)?,
        campaign_id: id_from_db(r.get(1)?),
        ad_id: id_from_db(r.get(2)?),
        placement_id: id_from_db(r.get(3)?),
        device: Device::from_code(r.get(4)?).unwrap_or_default(),
        country: Country::parse(&r.get::<_, String>(5)?),
        kind: EventKind::Impression,
        verdict: Verdict::Valid,
        sums: RollupSums::default(),
        reach: None,
    })
}

/// A report query over the quarter-hour rollups: any grouping, any range.
pub(super) fn quarter_hour_rows(c: &Connection, q: &RollupQuery) -> Result<Vec<RollupRow>> {
    query_all(
        c,
        &quarter_hour_sql(q),
        params![q.from_ms, q.to_ms, q.advertiser_id, q.campaign_id, q.ad_id, row_limit(q)],
        rollup_row_from,
    )
}

/// The statement of [`quarter_hour_rows`]. One advertiser's report reads the range of
/// its (advertiser, time) index, not every tenant's rows of the time range.
pub(super) fn quarter_hour_sql(q: &RollupQuery) -> String {
    let (select, mut group) = report_columns(q, "bucket_ms");
    group.extend(["kind", "verdict"]);
    // `+?3`: see `day_filter_on`.
    let advertiser = if q.advertiser_id.is_some() { "advertiser_id = +?3" } else { "?3 IS NULL" };
    format!(
        "SELECT {}, kind, verdict, SUM(events), {}, {}, {} FROM rollups
         WHERE bucket_ms >= ?1 AND bucket_ms < ?2 AND {advertiser}
           AND (?4 IS NULL OR campaign_id = +?4) AND (?5 IS NULL OR ad_id = +?5)
         GROUP BY {} LIMIT +?6",
        select.join(", "),
        wide_sum("cost_micros"),
        wide_sum("value_micros"),
        if q.reach.any() { "reach_union(reach)" } else { "NULL" },
        group.join(", ")
    )
}

/// The IANA name a zone name stands for (`europe/berlin` → `Europe/Berlin`).
pub(super) fn canonical_zone(name: &str) -> Option<String> {
    adtally_core::jiff::tz::TimeZone::get(name).ok()?.iana_name().map(str::to_owned)
}

/// Whether the day layer answers `q`, and from which table and which days (`utc`).
/// It does when the query is in whole days of the zone the rows are kept in — the
/// advertiser's stored zone, or UTC for every advertiser — and groups by dimensions one
/// table holds. Otherwise the quarter hours answer.
pub(super) fn day_layer(c: &Connection, q: &RollupQuery) -> Result<Option<(DayTable, bool)>> {
    let Some(zone) = q.days_in.as_deref().and_then(canonical_zone) else { return Ok(None) };
    let Some(table) = DayTable::ALL.into_iter().find(|t| t.answers(&q.group_by, q.ad_id.is_some())) else {
        return Ok(None);
    };
    Ok(match q.advertiser_id {
        Some(id) => {
            let stored: Option<String> =
                c.query_row("SELECT timezone FROM advertisers WHERE id = ?1", [id], |r| r.get(0)).optional()?;
            stored.filter(|s| canonical_zone(s).as_deref() == Some(zone.as_str())).map(|s| (table, is_utc_name(&s)))
        }
        None => (table.has_utc_days() && zone == "UTC").then_some((table, true)),
    })
}

/// A report query over one day-layer table. `from_ms` and `to_ms` are midnights of the
/// table's days, so a day row is in the range exactly when its first instant is.
pub(super) fn day_rows(c: &Connection, q: &RollupQuery, table: DayTable, utc: bool) -> Result<Vec<RollupRow>> {
    let params = params![q.from_ms, q.to_ms, q.advertiser_id, q.campaign_id, q.ad_id, row_limit(q), utc];
    // A range without days reads sealed spans of days where built (spans.rs); they keep
    // no counts of users.
    let spans = (!q.by_bucket).then(|| spans::covers(c, q, utc)).transpose()?;
    let groups = match &spans {
        None => query_all(c, &day_sql(q, table), params, day_rows_from)?,
        Some(covers) => {
            spans::range_rows(c, &RollupQuery { reach: ReachAs::Nothing, ..q.clone() }, table, utc, covers)?
        }
    };
    // More groups than asked for: the caller refuses the report, so no sketch is read
    // (their number follows the range, not the limit).
    let truncated = q.max_rows.is_some_and(|max| groups.len() > max);
    let mut rows: Vec<RollupRow> = groups.into_iter().flatten().collect();
    // Groups the day rows gave a count of users need no sketch: sketches are read from
    // the first day of a group without one (sealed days are counted, so that is the
    // last few days of a report by day).
    let first_uncounted = rows
        .iter()
        .filter(|r| has_reach(r.kind, r.verdict) && r.reach.is_none())
        .map(|r| if q.by_bucket { r.bucket_ms } else { q.from_ms })
        .min();
    if let Some(from_ms) = first_uncounted.filter(|_| q.reach.any() && !truncated) {
        // Sketches apart from the sums: a GROUP BY out of key order sorts whole rows in a
        // temporary B-tree, and copying every 16 KiB sketch through it took 5× the time
        // of reading them. Here they are read in key order, without a GROUP BY, and
        // merged per group straight from SQLite's buffer.
        let q = RollupQuery { from_ms: from_ms.max(q.from_ms), ..q.clone() };
        let mut sketches = match &spans {
            None => day_sketches(c, &q, table, utc)?,
            Some(covers) => spans::range_sketches(c, &q, table, utc, covers)?,
        };
        for row in rows.iter_mut().filter(|r| has_reach(r.kind, r.verdict) && r.reach.is_none()) {
            row.reach = sketches.remove(&group_of(row)).map(Reach::Users);
        }
    }
    Ok(rows)
}

/// What identifies a report row's group: bucket and the five dimensions.
pub(crate) type GroupKey = (Millis, Option<i64>, Option<i64>, Option<i64>, u8, [u8; 2]);

pub(crate) fn group_of(r: &RollupRow) -> GroupKey {
    (r.bucket_ms, r.campaign_id, r.ad_id, r.placement_id, r.device.code(), r.country.0)
}

/// The union of the reach sketches of each group of a day-layer query.
pub(super) fn day_sketches(
    c: &Connection,
    q: &RollupQuery,
    table: DayTable,
    utc: bool,
) -> Result<FastMap<GroupKey, Sketch>> {
    let (select, _) = report_columns(q, "day_ms");
    let sql = format!("SELECT {}, reach FROM {} WHERE {}", select.join(", "), table.reach_name(), day_filter(q, table));
    let mut out: FastMap<GroupKey, Sketch> = FastMap::default();
    merge_group_sketches(
        &mut c.prepare_cached(&sql)?,
        params![q.from_ms, q.to_ms, q.advertiser_id, q.campaign_id, q.ad_id, row_limit(q), utc],
        &mut out,
    )?;
    Ok(out)
}

/// Merges each row's sketch (the last column, after the group's columns as
/// `report_columns` selects them) into its group's, straight from SQLite's buffer.
pub(crate) fn merge_group_sketches(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    out: &mut FastMap<GroupKey, Sketch>,
) -> Result<()> {
    let mut rows = stmt.query(params)?;
    while let Some(r) = rows.next()? {
        let key: GroupKey = (
            r.get(0)?,
            id_from_db(r.get(1)?),
            id_from_db(r.get(2)?),
            id_from_db(r.get(3)?),
            Device::from_code(r.get(4)?).unwrap_or_default().code(),
            Country::parse(&r.get::<_, String>(5)?).0,
        );
        if let ValueRef::Blob(bytes) = r.get_ref(6)? {
            out.entry(key)
                .or_default()
                .merge_bytes(bytes)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Blob, Box::new(e)))?;
        }
    }
    Ok(())
}

/// The WHERE clause of a day-layer query; parameters as [`day_sql`]'s.
pub(crate) fn day_filter(q: &RollupQuery, table: DayTable) -> String {
    day_filter_on(q, table, q.advertiser_id.is_some())
}

/// [`day_filter`], for one advertiser (`?3`) or for every one (`one` false).
pub(crate) fn day_filter_on(q: &RollupQuery, table: DayTable, one: bool) -> String {
    // `column = +?n`, not `column = ?n`: the same key seek, but the planner of a grouped
    // query reads the value of a bare parameter compared for equality, and SQLite must
    // then prepare the statement again whenever that value changes — on most executions
    // of a cached statement that serves every advertiser. (`LIMIT +?6` likewise: with a
    // bare `LIMIT ?6`, binding the limit anew made every report prepare them again.)
    let advertisers = if one {
        "advertiser_id = +?3"
    } else {
        // Every advertiser, each one a range of the key.
        "advertiser_id IN (SELECT id FROM advertisers) AND ?3 IS NULL"
    };
    // Written out, not `?4 IS NULL OR …`, so that the planner can seek the key.
    let campaign = if q.campaign_id.is_some() { "campaign_id = +?4" } else { "?4 IS NULL" };
    let ad = if q.ad_id.is_some() && table == DayTable::Ad { "ad_id = +?5" } else { "?5 IS NULL" };
    format!("{advertisers} AND utc = +?7 AND day_ms >= ?1 AND day_ms < ?2 AND {campaign} AND {ad} AND ?6 = ?6")
}

/// The statement of [`day_rows`]; parameters: from, to, advertiser, campaign, ad, limit,
/// utc. One result row per group, its (kind, verdict) pairs as columns.
pub(super) fn day_sql(q: &RollupQuery, table: DayTable) -> String {
    day_sums_sql(q, table.name(), &day_filter(q, table))
}

/// The grouped sums of `from` (a day table, or a span table of the same key and sums)
/// under `filter`: one result row per group, its (kind, verdict) pairs as columns.
pub(crate) fn day_sums_sql(q: &RollupQuery, from: &str, filter: &str) -> String {
    let (select, group) = report_columns(q, "day_ms");
    let counts: Vec<String> = slots().into_iter().map(|(_, _, c)| format!("SUM({c})")).collect();
    format!(
        "SELECT {}, {}, {}, {}, {}, {} FROM {} WHERE {}
         GROUP BY {} LIMIT +?6",
        select.join(", "),
        counts.join(", "),
        wide_sum("cost_micros"),
        wide_sum("value_micros"),
        wide_sum("revenue_micros"),
        // Reach: a group that is one day row has that row's count of users, where kept;
        // sketches are read apart ([`day_sketches`]). Span tables keep no counts.
        if q.reach == ReachAs::Counts { "CASE WHEN COUNT(*) = 1 THEN MAX(users) END" } else { "NULL" },
        from,
        filter,
        // Without a grouped column, the one group of the constant first column: no rows
        // in, no row out.
        if group.is_empty() { "1".to_owned() } else { group.join(", ") }
    )
}

/// A day-layer result row as the quarter hours would give it: one row per (kind,
/// verdict) with events. Spend goes with the valid impressions (or the first row), and
/// value is the revenue of valid conversions — all that a report sums.
pub(crate) fn day_rows_from(r: &Row) -> rusqlite::Result<Vec<RollupRow>> {
    let first = 6 + SLOTS;
    let cost_micros = wide(r, first)?;
    let revenue_micros = wide(r, first + 4)?;
    // Zero users: no valid impression had one, so no sketch either.
    let mut reach =
        r.get::<_, Option<i64>>(first + 6)?.and_then(|n| u64::try_from(n).ok()).filter(|n| *n > 0).map(Reach::Counted);
    let template = keyed_row(r)?;
    let mut out = Vec::new();
    for (i, (kind, verdict)) in slot_pairs().enumerate() {
        let events: i64 = r.get::<_, Option<i64>>(6 + i)?.unwrap_or(0);
        let valid_impressions = kind == EventKind::Impression && verdict.is_valid();
        if events == 0 && !(valid_impressions && reach.is_some()) {
            continue;
        }
        let mut row =
            RollupRow { kind, verdict, sums: RollupSums { events, ..Default::default() }, ..template.clone() };
        if valid_impressions {
            row.reach = reach.take();
        }
        if kind == EventKind::Conversion && verdict.is_valid() {
            row.sums.value_micros = revenue_micros;
        }
        out.push(row);
    }
    let spend_row = out.iter().position(|x| x.kind == EventKind::Impression && x.verdict.is_valid()).unwrap_or(0);
    match out.get_mut(spend_row) {
        Some(row) => row.sums.cost_micros = cost_micros,
        None if cost_micros != 0 => {
            out.push(RollupRow { sums: RollupSums { cost_micros, ..Default::default() }, ..template })
        }
        None => {}
    }
    Ok(out)
}
