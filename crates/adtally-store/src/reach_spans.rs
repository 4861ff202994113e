//! Reach over many days without reading every day: the union of a campaign's daily reach
//! sketches over aligned spans of 2, 4, 8, 16 and 32 days (SQLite store).
//!
//! Distinct users do not add up, so a report over a range merges one sketch per
//! campaign-day, and a dense sketch is 16 KiB: the operator's 30-day campaigns table read
//! 1 500 of them. A span row holds the union of a campaign's days `[day_ms, end_ms)`, so
//! a range is a handful of spans plus the days at its edges.
//!
//! Spans are *sealed*: built ([`seal`]) only over days that ended [`SEALED_AFTER_MS`]
//! ago, past the token TTL in which a late beacon may still count, so the beacon path
//! never rewrites them. An event that still lands in a sealed day (an import, a journal
//! replayed after days down) drops every span over that day in its own batch
//! ([`invalidate`]); the next sealing builds it again. A span is complete for every
//! campaign of its advertiser or absent: `reach_spans_built` records which were built,
//! so a campaign without a row in a built span simply had no valid impressions there.
//! Spans are kept for the campaign table's two kinds of days (`utc`, as the table); a
//! new time zone drops the advertiser's own-zone spans with its own-zone days.
//!
//! Unions are exact (the same registers or hashes as merging the days one by one), so a
//! report answers the same numbers with or without spans; they only change its cost.

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};

use adtally_core::clock::{Millis, DAY};
use adtally_core::event::{Country, Device};
use adtally_core::fasthash::FastMap;
use adtally_core::jiff::tz::TimeZone;
use adtally_core::report::{local_date, start_of_day};
use adtally_core::sketch::Sketch;

use crate::columns::{id_from_db, report_columns};
use crate::rollup::RollupQuery;
use crate::Result;

/// How long after a day ends its spans may be built: past the decision token's TTL (a
/// day), so live beacons never land in a sealed day, with a day to spare.
pub(crate) const SEALED_AFTER_MS: Millis = 2 * DAY;

/// Span lengths in days, shortest first. Each is aligned to a multiple of its length in
/// days since 1970-01-01 (local dates for own-zone days), so spans nest.
const SPANS: [i64; 5] = [2, 4, 8, 16, 32];

/// The migration that creates both tables; they are filled by [`seal`].
pub(crate) const MIGRATION: &str = r#"
-- Reach over aligned spans of a campaign's days (see reach_spans.rs): the union of the
-- day rows' sketches of rollups_day_campaign, built once the days can no longer change.
CREATE TABLE reach_spans (
    advertiser_id INTEGER NOT NULL, utc INTEGER NOT NULL, day_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
    campaign_id INTEGER NOT NULL, reach BLOB NOT NULL,
    PRIMARY KEY (advertiser_id, utc, day_ms, end_ms, campaign_id)
) WITHOUT ROWID;
CREATE TABLE reach_spans_built (
    advertiser_id INTEGER NOT NULL, utc INTEGER NOT NULL, day_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
    PRIMARY KEY (advertiser_id, utc, day_ms, end_ms)
) WITHOUT ROWID;
"#;

/// The date index (days since 1970-01-01) of the day of `tz` that holds `at_ms`.
fn day_index(at_ms: Millis, tz: &TimeZone) -> i64 {
    start_of_day(local_date(at_ms, tz), &TimeZone::UTC).div_euclid(DAY)
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

/// Drops the spans over one campaign-table day (`utc` as the table), in the writer's
/// batch that changed that day's reach. Spans exist only for sealed days, so younger
/// days (every live beacon's) cost nothing.
pub(crate) fn invalidate(c: &Connection, now_ms: Millis, advertiser_id: i64, utc: bool, day_ms: Millis) -> Result<()> {
    if day_ms >= now_ms.saturating_sub(SEALED_AFTER_MS) {
        return Ok(());
    }
    // A span over the day starts at most the longest span before it.
    let earliest = day_ms.saturating_sub(SPANS[SPANS.len() - 1] * DAY + DAY);
    for table in ["reach_spans", "reach_spans_built"] {
        c.prepare_cached(&format!(
            "DELETE FROM {table} WHERE advertiser_id = ?1 AND utc = ?2 AND day_ms > ?3 AND day_ms <= ?4 AND end_ms > ?4"
        ))?
        .execute(params![advertiser_id, utc, earliest, day_ms])?;
    }
    Ok(())
}

/// Drops an advertiser's own-zone spans (its zone changed; UTC days never do).
pub(crate) fn forget_own_zone(c: &Connection, advertiser_id: i64) -> Result<()> {
    for table in ["reach_spans", "reach_spans_built"] {
        c.execute(&format!("DELETE FROM {table} WHERE advertiser_id = ?1 AND utc = 0"), [advertiser_id])?;
    }
    Ok(())
}

/// Builds the spans not built yet over one advertiser's sealed days, for its UTC days
/// (`utc`) or its own zone's (`tz`). Run on the writer's connection, so no batch can
/// change a day between reading it and recording its span. Returns how many spans it
/// built.
pub(crate) fn seal(c: &Connection, now_ms: Millis, advertiser_id: i64, utc: bool, tz: &TimeZone) -> Result<usize> {
    let first: Option<Millis> = c
        .query_row(
            "SELECT MIN(day_ms) FROM rollups_day_campaign_reach WHERE advertiser_id = ?1 AND utc = ?2",
            params![advertiser_id, utc],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let Some(first) = first else { return Ok(0) };
    // The day holding the seal line is not sealed; every day before it ended before it.
    let last = day_index(now_ms.saturating_sub(SEALED_AFTER_MS), tz) - 1;
    let mut exists = c.prepare_cached(
        "SELECT 1 FROM reach_spans_built WHERE advertiser_id = ?1 AND utc = ?2 AND day_ms = ?3 AND end_ms = ?4",
    )?;
    let mut build = c.prepare_cached(
        "INSERT INTO reach_spans (advertiser_id, utc, day_ms, end_ms, campaign_id, reach)
         SELECT ?1, ?2, ?3, ?4, campaign_id, reach_union(reach) FROM rollups_day_campaign_reach
         WHERE advertiser_id = ?1 AND utc = ?2 AND day_ms >= ?3 AND day_ms < ?4
         GROUP BY campaign_id",
    )?;
    let mut built =
        c.prepare_cached("INSERT INTO reach_spans_built (advertiser_id, utc, day_ms, end_ms) VALUES (?1, ?2, ?3, ?4)")?;
    let mut n = 0;
    for (start, end) in aligned_spans(day_index(first, tz), last) {
        let (day_ms, end_ms) = (day_start(start, tz), day_start(end, tz));
        let key = params![advertiser_id, utc, day_ms, end_ms];
        if exists.exists(key)? {
            continue;
        }
        build.execute(key)?;
        built.execute(key)?;
        n += 1;
    }
    Ok(n)
}

/// The reach of each group of a campaign-table query over a range without days (its
/// groups are campaigns, or one for everything): the built spans inside the range, and
/// the day rows where none covers. Parameters as the day layer's (`utc` as the table).
pub(crate) fn range_sketches(
    c: &Connection,
    q: &RollupQuery,
    utc: bool,
) -> Result<FastMap<crate::sqlite::GroupKey, Sketch>> {
    let advertisers: Vec<i64> = match q.advertiser_id {
        Some(id) => vec![id],
        None => {
            let mut stmt = c.prepare_cached("SELECT id FROM advertisers")?;
            let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            ids
        }
    };
    let (select, _) = report_columns(q, "day_ms", false);
    let select = select.join(", ");
    let campaign = if q.campaign_id.is_some() { "campaign_id = ?5" } else { "?5 IS NULL" };
    let mut spans_built = c.prepare_cached(
        "SELECT day_ms, end_ms FROM reach_spans_built
         WHERE advertiser_id = ?1 AND utc = ?2 AND day_ms >= ?3 AND day_ms < ?4 AND end_ms <= ?4",
    )?;
    let mut span_sketches = c.prepare_cached(&format!(
        "SELECT {select}, reach FROM reach_spans
         WHERE advertiser_id = ?1 AND utc = ?2 AND day_ms = ?3 AND end_ms = ?4 AND {campaign}"
    ))?;
    let mut day_sketches = c.prepare_cached(&format!(
        "SELECT {select}, reach FROM rollups_day_campaign_reach
         WHERE advertiser_id = ?1 AND utc = ?2 AND day_ms >= ?3 AND day_ms < ?4 AND {campaign}"
    ))?;
    let mut out: FastMap<crate::sqlite::GroupKey, Sketch> = FastMap::default();
    for advertiser in advertisers {
        let built: Vec<(Millis, Millis)> = spans_built
            .query_map(params![advertiser, utc, q.from_ms, q.to_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let cover = widest_cover(built);
        for &(start, end) in &cover {
            merge_rows(&mut span_sketches, params![advertiser, utc, start, end, q.campaign_id], &mut out)?;
        }
        for (start, end) in gaps(q.from_ms, q.to_ms, &cover) {
            merge_rows(&mut day_sketches, params![advertiser, utc, start, end, q.campaign_id], &mut out)?;
        }
    }
    Ok(out)
}

/// Merges each row's sketch (the last column, after the group's key columns as
/// `report_columns` selects them) into its group.
fn merge_rows(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    out: &mut FastMap<crate::sqlite::GroupKey, Sketch>,
) -> Result<()> {
    let mut rows = stmt.query(params)?;
    while let Some(r) = rows.next()? {
        let key: crate::sqlite::GroupKey = (
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
