//! Spans of days: each day-layer row's key summed over aligned spans of 2, 4, 8, 16 and
//! 32 days, sums and reach (SQLite store). Sealing also counts each sealed day row's
//! users ([`count_users`]).
//!
//! A report over a range without days (the campaigns table, the operator's, a campaign's
//! ads, devices, countries over 30 days) read one row per day and key, and distinct
//! users do not add up, so one sketch per day and key too: a dense sketch is 16 KiB, and
//! the operator's 30-day campaigns table read 1 500 of them. A span row holds a key's
//! days `[day_ms, end_ms)` summed, so a range is a handful of spans plus the days at its
//! edges. Each day table ([`DayTable`]) has a span table (`spans_<dimension>`, the sums)
//! and its reach twin (`spans_<dimension>_reach`) with its key, `end_ms` after `day_ms`.
//!
//! Spans are *sealed*: built ([`seal`]) only over days that ended [`SEALED_AFTER_MS`]
//! ago, past the token TTL in which a late beacon may still count, so the beacon path
//! never rewrites them. An event that still lands in a sealed day (an import, a journal
//! replayed after days down, a postback superseding an old pixel conversion) drops every
//! span over that day in its own batch ([`invalidate`]); the next sealing builds it
//! again. A span is built for every table and key of its advertiser at once or not at
//! all: `spans_built` records which were, so a key without a row in a built span simply
//! had no events there. Spans follow the day tables' two kinds of days (`utc`); a new
//! time zone drops the advertiser's spans.
//!
//! Sums add and unions are exact (the same registers or hashes as merging the days one
//! by one), so a report answers the same numbers with or without spans; they only
//! change its cost.

use rusqlite::{params, Connection, OptionalExtension};

use adtally_core::clock::{Millis, DAY};
use adtally_core::fasthash::FastMap;
use adtally_core::jiff::tz::TimeZone;
use adtally_core::report::{local_date, start_of_day};
use adtally_core::sketch::Sketch;

use crate::columns::report_columns;
use crate::rollup::{DayTable, RollupQuery, RollupRow};
use crate::sqlite::reads::{
    day_filter_on, day_rows_from, day_sums_sql, group_of, merge_group_sketches, row_limit, GroupKey,
};
use crate::sqlite::schema::{
    day_key_columns, day_key_definitions, day_sum_columns, day_sum_definitions, day_sums_of_rows,
};
use crate::Result;

/// How long after a day ends its spans may be built: past the decision token's TTL (a
/// day), so live beacons never land in a sealed day, with a day to spare.
pub(crate) const SEALED_AFTER_MS: Millis = 2 * DAY;

/// Span lengths in days, shortest first. Each is aligned to a multiple of its length in
/// days since 1970-01-01 (local dates for own-zone days), so spans nest.
const SPANS: [i64; 5] = [2, 4, 8, 16, 32];

/// The span table (sums) of a day table.
fn span_table(table: DayTable) -> &'static str {
    match table {
        DayTable::Campaign => "spans_campaign",
        DayTable::Ad => "spans_ad",
        DayTable::Placement => "spans_placement",
        DayTable::Device => "spans_device",
        DayTable::Country => "spans_country",
    }
}

/// The span table's reach twin.
pub(crate) fn reach_table(table: DayTable) -> &'static str {
    match table {
        DayTable::Campaign => "spans_campaign_reach",
        DayTable::Ad => "spans_ad_reach",
        DayTable::Placement => "spans_placement_reach",
        DayTable::Device => "spans_device_reach",
        DayTable::Country => "spans_country_reach",
    }
}

/// A span table's key: its day table's, with `end_ms` after `day_ms`.
fn span_key(table: DayTable) -> String {
    day_key_columns(table).replace("day_ms", "day_ms, end_ms")
}

/// Creates the span tables and `spans_built` (migration 9); [`seal`] fills them. The
/// reach tables are rowid tables, as the day layer's are (see `create_reach_table`).
pub(crate) fn create_tables(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    for table in DayTable::ALL {
        let mut key = day_key_definitions(table);
        let day = key.iter().position(|c| c.starts_with("day_ms ")).unwrap_or(0);
        key.insert(day + 1, "end_ms INTEGER NOT NULL".into());
        tx.execute_batch(&format!(
            "CREATE TABLE {} ({}, {}, PRIMARY KEY ({k})) WITHOUT ROWID;
             CREATE TABLE {} ({}, reach BLOB NOT NULL, PRIMARY KEY ({k}));",
            span_table(table),
            key.join(", "),
            day_sum_definitions().join(", "),
            reach_table(table),
            key.join(", "),
            k = span_key(table)
        ))?;
    }
    tx.execute_batch(
        "CREATE TABLE spans_built (
            advertiser_id INTEGER NOT NULL, utc INTEGER NOT NULL, day_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
            PRIMARY KEY (advertiser_id, utc, day_ms, end_ms)
        ) WITHOUT ROWID;",
    )?;
    Ok(())
}

/// The date index (days since 1970-01-01) of the day of `tz` that holds `at_ms`.
fn day_index(at_ms: Millis, tz: &TimeZone) -> i64 {
    start_of_day(local_date(at_ms, tz), &TimeZone::UTC).div_euclid(DAY)
}

/// The date index of the first day not sealed at `now_ms`: the day holding the seal
/// line. Every day before it ended [`SEALED_AFTER_MS`] ago or more.
fn first_unsealed_day(now_ms: Millis, tz: &TimeZone) -> i64 {
    day_index(now_ms.saturating_sub(SEALED_AFTER_MS), tz)
}

/// The instant the day with date index `index` starts in `tz`.
fn day_start(index: i64, tz: &TimeZone) -> Millis {
    start_of_day(local_date(index.saturating_mul(DAY), &TimeZone::UTC), tz)
}

/// The aligned spans, as `(first, last + 1)` date indexes, that lie within
/// `first..=last`: every span length, every aligned start.
pub(crate) fn aligned_spans(first: i64, last: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for len in SPANS {
        let mut start = first.div_euclid(len) * len;
        if start < first {
            start += len;
        }
        while start + len - 1 <= last {
            out.push((start, start + len));
            start += len;
        }
    }
    out
}

/// The widest disjoint spans among `built` (each `[start, end)`): longest first, each
/// taken unless it overlaps one already taken. Aligned spans nest, so this covers every
/// day some built span covers, with the fewest spans. Sorted by start.
pub(crate) fn widest_cover(mut built: Vec<(Millis, Millis)>) -> Vec<(Millis, Millis)> {
    built.sort_by_key(|&(start, end)| (std::cmp::Reverse(end - start), start));
    let mut taken: Vec<(Millis, Millis)> = Vec::new();
    for (start, end) in built {
        if taken.iter().all(|&(s, e)| end <= s || start >= e) {
            taken.push((start, end));
        }
    }
    taken.sort_unstable();
    taken
}

/// The parts of `[from, to)` that `cover` (sorted, disjoint, inside the range) leaves.
pub(crate) fn gaps(from: Millis, to: Millis, cover: &[(Millis, Millis)]) -> Vec<(Millis, Millis)> {
    let mut out = Vec::new();
    let mut at = from;
    for &(start, end) in cover {
        if start > at {
            out.push((at, start));
        }
        at = at.max(end);
    }
    if at < to {
        out.push((at, to));
    }
    out
}

/// Every span table, and the table of which spans are built.
fn all_span_tables() -> impl Iterator<Item = &'static str> {
    DayTable::ALL.into_iter().flat_map(|t| [span_table(t), reach_table(t)]).chain(["spans_built"])
}

/// Drops the spans over one day of an advertiser (`utc` as the day tables), in the
/// writer's batch that changed that day. Spans exist only for sealed days, so
/// younger days (every live beacon's) cost nothing.
pub(crate) fn invalidate(c: &Connection, now_ms: Millis, advertiser_id: i64, utc: bool, day_ms: Millis) -> Result<()> {
    if day_ms >= now_ms.saturating_sub(SEALED_AFTER_MS) {
        return Ok(());
    }
    // A span over the day starts at most the longest span before it.
    let earliest = day_ms.saturating_sub(SPANS[SPANS.len() - 1] * DAY + DAY);
    for table in all_span_tables() {
        c.prepare_cached(&format!(
            "DELETE FROM {table} WHERE advertiser_id = ?1 AND utc = ?2 AND day_ms > ?3 AND day_ms <= ?4 AND end_ms > ?4"
        ))?
        .execute(params![advertiser_id, utc, earliest, day_ms])?;
    }
    Ok(())
}

/// Drops an advertiser's spans: its zone changed. Its UTC days did not, but which tables
/// hold UTC days did (an advertiser in UTC keeps every table in UTC days; one elsewhere
/// only the campaign table), so the UTC spans go too and are built again.
pub(crate) fn forget_advertiser(c: &Connection, advertiser_id: i64) -> Result<()> {
    for table in all_span_tables() {
        c.execute(&format!("DELETE FROM {table} WHERE advertiser_id = ?1"), [advertiser_id])?;
    }
    Ok(())
}

/// Builds the spans not built yet over one advertiser's sealed days, for its UTC days
/// (`utc`) or its own zone's (`tz`), for every day table. Run on the writer's
/// connection, so no batch can change a day between reading it and recording its span.
/// Returns how many spans it built.
pub(crate) fn seal(c: &Connection, now_ms: Millis, advertiser_id: i64, utc: bool, tz: &TimeZone) -> Result<usize> {
    let first: Option<Millis> = c
        .query_row(
            "SELECT MIN(day_ms) FROM rollups_day_campaign WHERE advertiser_id = ?1 AND utc = ?2",
            params![advertiser_id, utc],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let Some(first) = first else { return Ok(0) };
    let last = first_unsealed_day(now_ms, tz) - 1;
    let mut exists = c.prepare_cached(
        "SELECT 1 FROM spans_built WHERE advertiser_id = ?1 AND utc = ?2 AND day_ms = ?3 AND end_ms = ?4",
    )?;
    let mut built =
        c.prepare_cached("INSERT INTO spans_built (advertiser_id, utc, day_ms, end_ms) VALUES (?1, ?2, ?3, ?4)")?;
    let mut n = 0;
    for (start, end) in aligned_spans(day_index(first, tz), last) {
        let (day_ms, end_ms) = (day_start(start, tz), day_start(end, tz));
        let key = params![advertiser_id, utc, day_ms, end_ms];
        if exists.exists(key)? {
            continue;
        }
        for table in DayTable::ALL {
            let columns = day_key_columns(table);
            let group = columns.replace("advertiser_id, utc, ", "").replace("day_ms, ", "").replace(", day_ms", "");
            // One campaign at a time for the tables keyed by campaign before day, so
            // each read is a range of the key.
            let campaigns = if table == DayTable::Campaign {
                ""
            } else {
                "AND campaign_id IN (SELECT campaign_id FROM rollups_day_campaign
                     WHERE advertiser_id = ?1 AND utc = ?2 AND day_ms >= ?3 AND day_ms < ?4)"
            };
            let select = columns.replace("advertiser_id, utc", "?1, ?2").replace("day_ms", "?3, ?4");
            let range = format!("WHERE advertiser_id = ?1 AND utc = ?2 {campaigns} AND day_ms >= ?3 AND day_ms < ?4");
            c.prepare_cached(&format!(
                "INSERT INTO {} ({}, {}) SELECT {select}, {} FROM {} {range} GROUP BY {group}",
                span_table(table),
                span_key(table),
                day_sum_columns().join(", "),
                day_sums_of_rows(),
                table.name()
            ))?
            .execute(key)?;
            c.prepare_cached(&format!(
                "INSERT INTO {} ({}, reach) SELECT {select}, reach_union(reach) FROM {} {range} GROUP BY {group}",
                reach_table(table),
                span_key(table),
                table.reach_name()
            ))?
            .execute(key)?;
        }
        built.execute(key)?;
        n += 1;
    }
    Ok(n)
}

/// Counts the users of an advertiser's sealed day rows not counted yet (`users` NULL:
/// new, or changed by a batch since), for its UTC days (`utc`) or its own zone's (`tz`),
/// in every day table: a report by day then takes a sealed day's reach from its row and
/// reads no sketch for it. Younger days are left to the reports: live beacons change
/// them, and each change would undo the count. Run on the writer's connection, as
/// [`seal`]. A row without a sketch had no user: 0.
pub(crate) fn count_users(c: &Connection, now_ms: Millis, advertiser_id: i64, utc: bool, tz: &TimeZone) -> Result<()> {
    let sealed_before = day_start(first_unsealed_day(now_ms, tz), tz);
    for table in DayTable::ALL {
        let same_key: Vec<String> = day_key_columns(table).split(", ").map(|k| format!("r.{k} = d.{k}")).collect();
        c.prepare_cached(&format!(
            "UPDATE {} AS d SET users = COALESCE((SELECT reach_count(r.reach) FROM {} AS r WHERE {}), 0)
                 WHERE d.advertiser_id = ?1 AND d.utc = ?2 AND d.day_ms < ?3 AND d.users IS NULL",
            table.name(),
            table.reach_name(),
            same_key.join(" AND ")
        ))?
        .execute(params![advertiser_id, utc, sealed_before])?;
    }
    Ok(())
}

/// Each advertiser of a day-layer query over a range without days, with the widest
/// built spans inside the range (the rest of the range is read day by day).
pub(crate) type Covers = Vec<(i64, Vec<(Millis, Millis)>)>;

/// The [`Covers`] of a query (`utc` as the table's rows).
pub(crate) fn covers(c: &Connection, q: &RollupQuery, utc: bool) -> Result<Covers> {
    let advertisers: Vec<i64> = match q.advertiser_id {
        Some(id) => vec![id],
        None => {
            let mut stmt = c.prepare_cached("SELECT id FROM advertisers")?;
            let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            ids
        }
    };
    let mut built = c.prepare_cached(
        "SELECT day_ms, end_ms FROM spans_built
         WHERE advertiser_id = ?1 AND utc = ?2 AND day_ms >= ?3 AND day_ms < ?4 AND end_ms <= ?4",
    )?;
    let mut out = Vec::with_capacity(advertisers.len());
    for advertiser in advertisers {
        let spans: Vec<(Millis, Millis)> = built
            .query_map(params![advertiser, utc, q.from_ms, q.to_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        out.push((advertiser, widest_cover(spans)));
    }
    Ok(out)
}

/// Calls `read` once per part of the range: for each advertiser, each span of its cover
/// (`true`) and each gap between them (`false`), with the day layer's parameters (from,
/// to, advertiser, campaign, ad, limit, utc) and the span's end.
fn each_part(
    q: &RollupQuery,
    covers: &Covers,
    utc: bool,
    mut read: impl FnMut(bool, &[&dyn rusqlite::ToSql]) -> Result<()>,
) -> Result<()> {
    let limit = row_limit(q);
    for (advertiser, cover) in covers {
        for &(start, end) in cover {
            // The span [start, end): its first day is the only one in [start, start + 1).
            read(true, params![start, start + 1, advertiser, q.campaign_id, q.ad_id, limit, utc, end])?;
        }
        for (start, end) in gaps(q.from_ms, q.to_ms, cover) {
            read(false, params![start, end, advertiser, q.campaign_id, q.ad_id, limit, utc, end])?;
        }
    }
    Ok(())
}

/// The day-layer filter of a query on one advertiser (`?3`), for the spans (their end
/// is `?8`) and for the days.
fn filters(q: &RollupQuery, table: DayTable) -> (String, String) {
    let days = day_filter_on(q, table, true);
    // `?8 = ?8`: both statements take the same parameters.
    (format!("{days} AND end_ms = +?8"), format!("{days} AND ?8 = ?8"))
}

/// The statements a range without days reads with ([`each_part`]'s parameters): the
/// grouped sums of a span and of days, then the sketches of a span and of days.
pub(crate) fn statements(q: &RollupQuery, table: DayTable) -> [String; 4] {
    let (select, _) = report_columns(q, "day_ms", false);
    let select = select.join(", ");
    let (in_span, in_days) = filters(q, table);
    [
        day_sums_sql(q, span_table(table), &in_span),
        day_sums_sql(q, table.name(), &in_days),
        format!("SELECT {select}, reach FROM {} WHERE {in_span}", reach_table(table)),
        format!("SELECT {select}, reach FROM {} WHERE {in_days}", table.reach_name()),
    ]
}

/// The sums of each group of a day-layer query over a range without days, as the day
/// layer's grouped read gives them (one entry per group), from spans and days.
pub(crate) fn range_rows(
    c: &Connection,
    q: &RollupQuery,
    table: DayTable,
    utc: bool,
    covers: &Covers,
) -> Result<Vec<Vec<RollupRow>>> {
    let [span_sums, day_sums, _, _] = statements(q, table);
    let (mut spans, mut days) = (c.prepare_cached(&span_sums)?, c.prepare_cached(&day_sums)?);
    let mut groups: std::collections::BTreeMap<GroupKey, Vec<RollupRow>> = Default::default();
    each_part(q, covers, utc, |span, params| {
        let stmt = if span { &mut spans } else { &mut days };
        for group in stmt.query_map(params, day_rows_from)? {
            for row in group? {
                let rows = groups.entry(group_of(&row)).or_default();
                match rows.iter_mut().find(|r| r.kind == row.kind && r.verdict == row.verdict) {
                    Some(sum) => {
                        sum.sums.events = sum.sums.events.saturating_add(row.sums.events);
                        sum.sums.cost_micros += row.sums.cost_micros;
                        sum.sums.value_micros += row.sums.value_micros;
                    }
                    None => rows.push(row),
                }
            }
        }
        Ok(())
    })?;
    Ok(groups.into_values().collect())
}

/// The reach of each group of a day-layer query over a range without days, from spans
/// and days, merged per group.
pub(crate) fn range_sketches(
    c: &Connection,
    q: &RollupQuery,
    table: DayTable,
    utc: bool,
    covers: &Covers,
) -> Result<FastMap<GroupKey, Sketch>> {
    let [_, _, span_reach, day_reach] = statements(q, table);
    let (mut spans, mut days) = (c.prepare_cached(&span_reach)?, c.prepare_cached(&day_reach)?);
    let mut out: FastMap<GroupKey, Sketch> = FastMap::default();
    each_part(q, covers, utc, |span, params| {
        merge_group_sketches(if span { &mut spans } else { &mut days }, params, &mut out)
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_spans_nest_inside_the_range() {
        assert_eq!(aligned_spans(1, 4), vec![(2, 4)]);
        let all = aligned_spans(0, 31);
        assert_eq!(all.len(), 16 + 8 + 4 + 2 + 1);
        assert!(all.contains(&(0, 32)) && all.contains(&(30, 32)) && !all.iter().any(|s| s.1 > 32));
        // Before 1970 too (floor alignment).
        assert_eq!(aligned_spans(-4, -1), vec![(-4, -2), (-2, 0), (-4, 0)]);
        assert!(aligned_spans(5, 5).is_empty());
    }

    #[test]
    fn the_widest_cover_takes_long_spans_first_and_never_overlaps() {
        let d = |i: i64| i * DAY;
        let built = vec![(d(0), d(2)), (d(2), d(4)), (d(0), d(4)), (d(4), d(6)), (d(8), d(16)), (d(8), d(10))];
        assert_eq!(widest_cover(built), vec![(d(0), d(4)), (d(4), d(6)), (d(8), d(16))]);
        assert_eq!(gaps(d(0), d(20), &[(d(0), d(4)), (d(4), d(6)), (d(8), d(16))]), vec![(d(6), d(8)), (d(16), d(20))]);
        assert_eq!(gaps(d(1), d(3), &[]), vec![(d(1), d(3))]);
        assert!(gaps(d(0), d(4), &[(d(0), d(4))]).is_empty());
    }

    #[test]
    fn day_indexes_follow_local_dates() {
        let kathmandu = TimeZone::get("Asia/Kathmandu").expect("zone");
        let day = start_of_day(local_date(20 * DAY + 3 * 3_600_000, &kathmandu), &kathmandu);
        assert_eq!(day_index(day, &kathmandu), 20);
        assert_eq!(day_start(20, &kathmandu), day);
        assert_eq!(day_start(21, &kathmandu) - day, DAY);
        assert_eq!(day_index(-DAY, &TimeZone::UTC), -1);
    }
}
