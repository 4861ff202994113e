//! Events on PostgreSQL: the batch append — decision claims, judging, raw events,
//! rollups, reach, spend and the journal position in one transaction — and the reads
//! over events and rollups.
//!
//! Several nodes append at once, each from its own single writer. What makes that safe:
//! - every row a batch locks is taken in key order (claims, rollups, reach, spend), so
//!   two nodes' batches wait for each other instead of deadlocking;
//! - a node claims `(decision, kind)` in `counted` before judging; a claim another node
//!   holds makes the insert wait for that node's commit and then fail, and the judge is
//!   told what the other nodes counted (see [`CountedElsewhere`]);
//! - reach sketches are merged into rows of this node's own (`rollup_reach.node_id`),
//!   which no other writer touches.

use std::collections::{BTreeMap, BTreeSet};

use adtally_core::attribution::{ConversionFact, PathTouch, TouchKind};
use adtally_core::clock::Millis;
use adtally_core::event::{Country, Device, Event, EventKind, Verdict};
use adtally_core::metrics::saturate;
use adtally_core::report::bucket_of;
use adtally_core::sketch::Sketch;
use tokio_postgres::{Client, GenericClient, Row, Transaction};

use super::schema::DB_NOW_MS;
use super::{block_on, PgStore};
use crate::columns::{event_from, id_from_db, EVENT_COLUMNS};
use crate::rollup::{aggregate, has_reach, RollupKey};
use crate::{
    AdPerformance, CampaignSpend, ConsistencyCheck, CountedElsewhere, Idempotency, Judge, PendingEvent, Reach, Result,
    RollupQuery, RollupRow, RollupSums, StoreError, Totals, TouchPaths,
};

/// The event writer's own connection.
pub(crate) struct Writer {
    pub(super) conn: Client,
    pub(super) node_id: i64,
}

impl Writer {
    pub(super) fn new(conn: Client, node_id: i64) -> Self {
        Self { conn, node_id }
    }
}

fn db_id(id: Option<i64>) -> i64 {
    id.unwrap_or(0)
}

fn bad(what: &str, value: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("unexpected {what} in the database: {value}"))
}

/// A `SUM(...)::text` of money: PostgreSQL sums `bigint` into `numeric`, which cannot
/// overflow; it is read back into `i128`.
fn wide(row: &Row, index: usize) -> Result<i128> {
    let text: Option<String> = row.try_get(index)?;
    match text {
        None => Ok(0),
        Some(t) => t.parse().map_err(|_| bad("sum", t)),
    }
}

/// The kinds a decision can have counted once, as stored in `counted.kind`.
fn claim_kind(kind: EventKind) -> Option<i16> {
    matches!(kind, EventKind::Impression | EventKind::Viewable | EventKind::Click).then(|| kind.code().into())
}

/// Whether an event takes part in the per-decision claims: live beacons (a signed
/// token named their decision). Imports carry their own idempotency key instead.
fn claimable(p: &PendingEvent) -> Option<(i64, i16)> {
    if matches!(p.idempotency, Some(Idempotency::Import(_))) {
        return None;
    }
    Some((p.event.decision_id? as i64, claim_kind(p.event.kind)?))
}

pub(super) fn append_events(
    s: &PgStore,
    now_ms: Millis,
    batch: &mut [PendingEvent],
    journal_through: Option<u64>,
    judge: &mut Judge<'_>,
) -> Result<()> {
    let _ = now_ms; // ids come from the database's sequence, not from the time
    let mut writer = s.writer.lock().map_err(|_| super::poisoned())?;
    let writer = &mut *writer;
    let node_id = writer.node_id;
    block_on(async {
        let tx = writer.conn.transaction().await?;
        append(&tx, node_id, batch, journal_through, judge).await?;
        tx.commit().await?;
        Ok(())
    })
}

async fn append(
    tx: &Transaction<'_>,
    node_id: i64,
    batch: &mut [PendingEvent],
    journal_through: Option<u64>,
    judge: &mut Judge<'_>,
) -> Result<()> {
    let n = batch.len() as i64;
    let ids: Vec<i64> = tx
        .query("SELECT nextval('event_ids') FROM generate_series(1, $1::bigint)", &[&n])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if ids.len() != batch.len() {
        return Err(StoreError::Database("the event id sequence gave too few ids".into()));
    }

    // Claims, in key order, before anything is judged.
    let wanted: BTreeMap<(i64, i16), Millis> =
        batch.iter().filter_map(|p| Some((claimable(p)?, p.event.at_ms))).rev().collect();
    let (claim_decisions, claim_kinds, claim_at): (Vec<i64>, Vec<i16>, Vec<i64>) =
        wanted.iter().map(|(&(d, k), &at)| (d, k, at)).fold((vec![], vec![], vec![]), |mut acc, (d, k, at)| {
            acc.0.push(d);
            acc.1.push(k);
            acc.2.push(at);
            acc
        });
    let won: BTreeSet<(i64, i16)> = if wanted.is_empty() {
        BTreeSet::new()
    } else {
        tx.query(
            "INSERT INTO counted (decision_id, kind, node_id, at_ms)
             SELECT d, k, $3, a FROM unnest($1::bigint[], $2::smallint[], $4::bigint[]) AS t(d, k, a) ORDER BY d, k
             ON CONFLICT DO NOTHING RETURNING decision_id, kind",
            &[&claim_decisions, &claim_kinds, &node_id, &claim_at],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    // What other nodes counted for the decisions of this batch.
    let mut elsewhere: BTreeMap<i64, CountedElsewhere> = BTreeMap::new();
    if !wanted.is_empty() {
        let decisions: Vec<i64> = claim_decisions.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
        for r in tx
            .query(
                "SELECT decision_id, kind, at_ms FROM counted WHERE decision_id = ANY($1) AND node_id <> $2",
                &[&decisions, &node_id],
            )
            .await?
        {
            let entry = elsewhere.entry(r.get(0)).or_default();
            let at: i64 = r.get(2);
            match EventKind::from_code(r.get::<_, i16>(1).into()) {
                Some(EventKind::Impression) => entry.impression_at_ms = Some(at),
                Some(EventKind::Viewable) => entry.viewable_at_ms = Some(at),
                Some(EventKind::Click) => entry.click_at_ms = Some(at),
                _ => {}
            }
        }
    }

    let mut stored: Vec<usize> = Vec::with_capacity(batch.len());
    let mut superseded: Vec<Event> = Vec::new();
    for index in 0..batch.len() {
        match batch[index].idempotency.clone() {
            None => {}
            Some(Idempotency::Import(key)) => {
                let claimed = tx
                    .execute(
                        "INSERT INTO dedup_keys (key, event_id, authoritative) VALUES ($1, NULL, TRUE)
                         ON CONFLICT DO NOTHING",
                        &[&key],
                    )
                    .await?;
                if claimed == 0 {
                    batch[index].skipped_as_duplicate = true;
                    continue;
                }
            }
            Some(Idempotency::Order { key, authoritative }) => {
                let id = ids[index];
                let claimed = tx
                    .execute(
                        "INSERT INTO dedup_keys (key, event_id, authoritative) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                        &[&key, &id, &authoritative],
                    )
                    .await?;
                if claimed == 0 {
                    // Held already (by a committed batch, any node's): locked, then decided.
                    let held = tx
                        .query_one("SELECT event_id, authoritative FROM dedup_keys WHERE key = $1 FOR UPDATE", &[&key])
                        .await?;
                    let (old_id, old_authoritative): (Option<i64>, bool) = (held.get(0), held.get(1));
                    match old_id {
                        Some(old_id) if authoritative && !old_authoritative => {
                            // The advertiser's own postback wins over an anonymous pixel.
                            if let Some(old) = stored.iter().position(|&i| ids[i] == old_id) {
                                batch[stored[old]].event.verdict = Verdict::Duplicate;
                            } else {
                                superseded.extend(supersede(tx, old_id).await?);
                            }
                            tx.execute(
                                "UPDATE dedup_keys SET event_id = $2, authoritative = $3 WHERE key = $1",
                                &[&key, &id, &authoritative],
                            )
                            .await?;
                        }
                        _ => {
                            batch[index].skipped_as_duplicate = true;
                            continue;
                        }
                    }
                }
            }
        }
        let counted = batch[index]
            .event
            .decision_id
            .filter(|_| claimable(&batch[index]).is_some())
            .and_then(|d| elsewhere.get(&(d as i64)).copied())
            .unwrap_or_default();
        judge(index, &mut batch[index].event, &counted);
        stored.push(index);
    }

    // Claims whose events turned out not to count are given back in this transaction.
    let mut kept: BTreeSet<(i64, i16)> = BTreeSet::new();
    for &i in &stored {
        let p = &batch[i];
        if p.event.verdict.is_valid() {
            if let Some(pair) = claimable(p) {
                kept.insert(pair);
            }
        }
    }
    let (give_d, give_k): (Vec<i64>, Vec<i16>) = won.difference(&kept).copied().unzip();
    if !give_d.is_empty() {
        tx.execute(
            "DELETE FROM counted WHERE (decision_id, kind) IN (SELECT * FROM unnest($1::bigint[], $2::smallint[]))",
            &[&give_d, &give_k],
        )
        .await?;
    }

    insert_events(tx, node_id, batch, &stored, &ids).await?;
    let events = stored.iter().map(|&i| &batch[i].event).chain(superseded.iter());
    let quarter_hours = aggregate(events);
    upsert_rollups(tx, node_id, quarter_hours).await?;
    add_spend(tx, node_id, batch, &stored).await?;
    if let Some(seq) = journal_through {
        let seq = i64::try_from(seq).map_err(|_| bad("journal position", seq))?;
        tx.execute("UPDATE nodes SET journal_applied = $2 WHERE id = $1", &[&node_id, &seq]).await?;
    }
    Ok(())
}

async fn insert_events(
    tx: &Transaction<'_>,
    node_id: i64,
    batch: &[PendingEvent],
    stored: &[usize],
    ids: &[i64],
) -> Result<()> {
    if stored.is_empty() {
        return Ok(());
    }
    let mut cols: [Vec<i64>; 12] = Default::default();
    let mut smalls: [Vec<i16>; 3] = Default::default();
    let mut countries: Vec<&str> = Vec::with_capacity(stored.len());
    for &i in stored {
        let e = &batch[i].event;
        for (col, v) in cols.iter_mut().zip([
            ids[i],
            e.at_ms,
            e.decision_id.map_or(0, |d| d as i64),
            e.advertiser_id,
            db_id(e.campaign_id),
            db_id(e.ad_id),
            db_id(e.placement_id),
            e.user_key as i64,
            // An unknown address is stored as 0, as in SQLite.
            e.ip_key.map_or(0, |k| k as i64),
            e.cost_micros,
            e.value_micros,
            0,
        ]) {
            col.push(v);
        }
        smalls[0].push(e.kind.code().into());
        smalls[1].push(e.verdict.code().into());
        smalls[2].push(e.device.code().into());
        countries.push(e.country.as_str());
    }
    let sql = format!(
        "INSERT INTO events (id, node_id, committed_ms, at_ms, kind, verdict, decision_id, advertiser_id, campaign_id,
                             ad_id, placement_id, user_key, ip_key, device, country, cost_micros, value_micros)
         SELECT id, $14, {DB_NOW_MS}, at_ms, kind, verdict, decision_id, advertiser_id, campaign_id, ad_id,
                placement_id, user_key, ip_key, device, country, cost_micros, value_micros
         FROM unnest($1::bigint[], $2::bigint[], $3::smallint[], $4::smallint[], $5::bigint[], $6::bigint[],
                     $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::smallint[],
                     $13::text[], $15::bigint[], $16::bigint[])
              AS t(id, at_ms, kind, verdict, decision_id, advertiser_id, campaign_id, ad_id, placement_id,
                   user_key, ip_key, device, country, cost_micros, value_micros)"
    );
    tx.execute(
        &sql,
        &[
            &cols[0], &cols[1], &smalls[0], &smalls[1], &cols[2], &cols[3], &cols[4], &cols[5], &cols[6], &cols[7],
            &cols[8], &smalls[2], &countries, &node_id, &cols[9], &cols[10],
        ],
    )
    .await?;
    Ok(())
}

/// The seven key columns of a rollup row before kind and verdict.
type RowKey = (i64, i64, i64, i64, i64, i16, String);

fn row_key(k: &RollupKey) -> RowKey {
    (
        k.advertiser_id,
        k.bucket_ms,
        db_id(k.campaign_id),
        db_id(k.ad_id),
        db_id(k.placement_id),
        k.device.code().into(),
        k.country.as_str().to_owned(),
    )
}

async fn upsert_rollups(
    tx: &Transaction<'_>,
    node_id: i64,
    quarter_hours: adtally_core::fasthash::FastMap<RollupKey, (RollupSums, Sketch)>,
) -> Result<()> {
    // Key order: two nodes' batches lock shared rows in the same order.
    let mut rows: Vec<(RowKey, i16, i16, RollupSums, Sketch)> = quarter_hours
        .into_iter()
        .map(|(k, (s, reach))| (row_key(&k), k.kind.code().into(), k.verdict.code().into(), s, reach))
        .collect();
    rows.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    if rows.is_empty() {
        return Ok(());
    }
    let mut ints: [Vec<i64>; 5] = Default::default();
    let mut devices = Vec::new();
    let mut countries = Vec::new();
    let (mut kinds, mut verdicts, mut counts, mut costs, mut values) = (vec![], vec![], vec![], vec![], vec![]);
    for (key, kind, verdict, s, _) in &rows {
        for (col, v) in ints.iter_mut().zip([key.0, key.1, key.2, key.3, key.4]) {
            col.push(v);
        }
        devices.push(key.5);
        countries.push(key.6.as_str());
        kinds.push(*kind);
        verdicts.push(*verdict);
        counts.push(s.events);
        costs.push(s.cost_micros.to_string());
        values.push(s.value_micros.to_string());
    }
    // Cells saturate instead of failing: a batch that cannot be stored would stop the writer.
    tx.execute(
        "INSERT INTO rollups (advertiser_id, bucket_ms, campaign_id, ad_id, placement_id, device, country, kind,
                              verdict, events, cost_micros, value_micros)
         SELECT a, b, c, d, p, dv, co, k, v, n,
                LEAST(GREATEST(cost::numeric, -9223372036854775808), 9223372036854775807)::bigint,
                LEAST(GREATEST(val::numeric, -9223372036854775808), 9223372036854775807)::bigint
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::smallint[],
                     $7::text[], $8::smallint[], $9::smallint[], $10::bigint[], $11::text[], $12::text[])
              AS t(a, b, c, d, p, dv, co, k, v, n, cost, val)
         ON CONFLICT (advertiser_id, bucket_ms, campaign_id, ad_id, placement_id, device, country, kind, verdict)
         DO UPDATE SET events = rollups.events + excluded.events,
           cost_micros = LEAST(GREATEST(rollups.cost_micros::numeric + excluded.cost_micros,
                                        -9223372036854775808), 9223372036854775807)::bigint,
           value_micros = LEAST(GREATEST(rollups.value_micros::numeric + excluded.value_micros,
                                         -9223372036854775808), 9223372036854775807)::bigint",
        &[
            &ints[0], &ints[1], &ints[2], &ints[3], &ints[4], &devices, &countries, &kinds, &verdicts, &counts, &costs,
            &values,
        ],
    )
    .await?;

    // Reach: this node's sketch of each valid-impression row, merged in Rust.
    let reach: Vec<(&RowKey, &Sketch)> = rows
        .iter()
        .filter(|(_, kind, verdict, _, sketch)| {
            let (k, v) = (EventKind::from_code((*kind).into()), Verdict::from_code((*verdict).into()));
            matches!((k, v), (Some(k), Some(v)) if has_reach(k, v)) && !sketch.is_empty()
        })
        .map(|(key, _, _, _, sketch)| (key, sketch))
        .collect();
    if reach.is_empty() {
        return Ok(());
    }
    let mut ints: [Vec<i64>; 5] = Default::default();
    let (mut devices, mut countries) = (vec![], vec![]);
    for (key, _) in &reach {
        for (col, v) in ints.iter_mut().zip([key.0, key.1, key.2, key.3, key.4]) {
            col.push(v);
        }
        devices.push(key.5);
        countries.push(key.6.as_str());
    }
    let existing = tx
        .query(
            "SELECT r.advertiser_id, r.bucket_ms, r.campaign_id, r.ad_id, r.placement_id, r.device, r.country, r.reach
             FROM rollup_reach r
             JOIN unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::smallint[],
                         $7::text[]) AS t(a, b, c, d, p, dv, co)
               ON r.advertiser_id = t.a AND r.bucket_ms = t.b AND r.campaign_id = t.c AND r.ad_id = t.d
              AND r.placement_id = t.p AND r.device = t.dv AND r.country = t.co
             WHERE r.node_id = $8",
            &[&ints[0], &ints[1], &ints[2], &ints[3], &ints[4], &devices, &countries, &node_id],
        )
        .await?;
    let mut merged: BTreeMap<RowKey, Sketch> = BTreeMap::new();
    for r in existing {
        let key: RowKey = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6));
        let bytes: Vec<u8> = r.get(7);
        merged.insert(key, Sketch::from_bytes(&bytes).map_err(|e| bad("reach sketch", e))?);
    }
    let mut blobs: Vec<Vec<u8>> = Vec::with_capacity(reach.len());
    for (key, sketch) in &reach {
        let mut s = merged.remove(*key).unwrap_or_default();
        s.merge(sketch);
        blobs.push(s.to_bytes());
    }
    tx.execute(
        "INSERT INTO rollup_reach (advertiser_id, bucket_ms, campaign_id, ad_id, placement_id, device, country,
                                   node_id, reach)
         SELECT a, b, c, d, p, dv, co, $8, r
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::smallint[],
                     $7::text[], $9::bytea[]) AS t(a, b, c, d, p, dv, co, r)
         ON CONFLICT (advertiser_id, bucket_ms, campaign_id, ad_id, placement_id, device, country, node_id)
         DO UPDATE SET reach = excluded.reach",
        &[&ints[0], &ints[1], &ints[2], &ints[3], &ints[4], &devices, &countries, &node_id, &blobs],
    )
    .await?;
    Ok(())
}

/// Adds the batch's charged spend to `campaign_spend` and `campaign_day_spend` (days of
/// the advertiser's zone), in campaign order, and to this node's leases, which must
/// cover it (see `cluster.rs`): otherwise the batch fails.
async fn add_spend(tx: &Transaction<'_>, node_id: i64, batch: &[PendingEvent], stored: &[usize]) -> Result<()> {
    let charged: Vec<&Event> =
        stored.iter().map(|&i| &batch[i].event).filter(|e| e.campaign_id.is_some() && e.cost_micros != 0).collect();
    if charged.is_empty() {
        return Ok(());
    }
    super::cluster::hold_alive(tx, node_id).await?;
    let advertisers: Vec<i64> = charged.iter().map(|e| e.advertiser_id).collect::<BTreeSet<_>>().into_iter().collect();
    let zones: BTreeMap<i64, String> = tx
        .query("SELECT id, timezone FROM advertisers WHERE id = ANY($1)", &[&advertisers])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // campaign -> (advertiser, spend per local day)
    let mut per_campaign: BTreeMap<i64, (i64, BTreeMap<i32, i64>)> = BTreeMap::new();
    for e in charged {
        let Some(campaign) = e.campaign_id else { continue };
        let zone = zones.get(&e.advertiser_id).map_or("UTC", String::as_str);
        let entry = per_campaign.entry(campaign).or_insert_with(|| (e.advertiser_id, BTreeMap::new()));
        *entry.1.entry(local_day_index(e.at_ms, zone)).or_default() += e.cost_micros;
    }
    let (mut campaigns, mut owners, mut totals) = (vec![], vec![], vec![]);
    let (mut day_campaigns, mut days, mut day_totals) = (vec![], vec![], vec![]);
    for (campaign, (advertiser, per_day)) in &per_campaign {
        campaigns.push(*campaign);
        owners.push(*advertiser);
        totals.push(per_day.values().sum::<i64>());
        for (day, spent) in per_day {
            day_campaigns.push(*campaign);
            days.push(*day);
            day_totals.push(*spent);
        }
    }
    let used = tx
        .query(
            "UPDATE leases l SET used_micros = l.used_micros + t.spent
             FROM unnest($1::bigint[], $2::integer[], $3::bigint[]) AS t(campaign, day, spent)
             WHERE l.campaign_id = t.campaign AND l.node_id = $4 AND l.day = t.day
               AND l.used_micros + t.spent <= l.granted_micros
             RETURNING l.campaign_id",
            &[&day_campaigns, &days, &day_totals, &node_id],
        )
        .await?;
    if used.len() != day_campaigns.len() {
        return Err(StoreError::Refused {
            code: "lease_exceeded",
            message: "a batch charged more than this node's leases hold; it is retried with new ones".into(),
        });
    }
    tx.execute(
        "INSERT INTO campaign_spend (campaign_id, advertiser_id, spent_micros)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])
         ON CONFLICT (campaign_id) DO UPDATE SET spent_micros = campaign_spend.spent_micros + excluded.spent_micros",
        &[&campaigns, &owners, &totals],
    )
    .await?;
    tx.execute(
        "INSERT INTO campaign_day_spend (campaign_id, day, spent_micros)
         SELECT * FROM unnest($1::bigint[], $2::integer[], $3::bigint[])
         ON CONFLICT (campaign_id, day)
         DO UPDATE SET spent_micros = campaign_day_spend.spent_micros + excluded.spent_micros",
        &[&day_campaigns, &days, &day_totals],
    )
    .await?;
    Ok(())
}

/// The local calendar day of `at_ms` in zone `zone`, as days since 1970-01-01 (the
/// delivery state's own day index).
pub(super) fn local_day_index(at_ms: Millis, zone: &str) -> i32 {
    use adtally_core::jiff::{tz::TimeZone, Timestamp};
    let tz = TimeZone::get(zone).unwrap_or(TimeZone::UTC);
    let ts = Timestamp::from_millisecond(at_ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let date = ts.to_zoned_datetime(tz).date();
    (date - adtally_core::jiff::civil::date(1970, 1, 1)).get_days()
}

/// Marks a stored conversion `duplicate` because an authoritative one replaced it, and
/// takes it out of its rollup row; returns it as it now is, to be summed again under
/// its new verdict. `None` when it was not counted anyway.
async fn supersede(tx: &Transaction<'_>, id: i64) -> Result<Option<Event>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1 FOR UPDATE");
    let Some(row) = tx.query_opt(&sql, &[&id]).await? else { return Ok(None) };
    let mut event = event_from(&row, 0)?;
    if event.verdict == Verdict::Duplicate {
        return Ok(None);
    }
    let duplicate: i16 = Verdict::Duplicate.code().into();
    tx.execute("UPDATE events SET verdict = $2 WHERE id = $1", &[&id, &duplicate]).await?;
    let k = RollupKey::of(&event);
    let key = row_key(&k);
    let (kind, verdict): (i16, i16) = (k.kind.code().into(), k.verdict.code().into());
    tx.execute(
        "UPDATE rollups SET events = events - 1, cost_micros = cost_micros - $10, value_micros = value_micros - $11
         WHERE advertiser_id = $1 AND bucket_ms = $2 AND campaign_id = $3 AND ad_id = $4 AND placement_id = $5
           AND device = $6 AND country = $7 AND kind = $8 AND verdict = $9",
        &[
            &key.0,
            &key.1,
            &key.2,
            &key.3,
            &key.4,
            &key.5,
            &key.6,
            &kind,
            &verdict,
            &event.cost_micros,
            &event.value_micros,
        ],
    )
    .await?;
    event.verdict = Verdict::Duplicate;
    Ok(Some(event))
}

pub(super) fn journal_applied(s: &PgStore) -> Result<u64> {
    let c = s.conn()?;
    let row = block_on(c.query_opt("SELECT journal_applied FROM nodes WHERE id = $1", &[&s.node_id]))?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
}

/// Rows a restart reads from the server at a time (see [`each_valid_event_since`]).
pub(super) const RESTART_ROWS_PER_FETCH: i32 = 10_000;

pub(super) fn each_valid_event_since(
    s: &PgStore,
    since_ms: Millis,
    clicks_since_ms: Millis,
    each: &mut dyn FnMut(Event),
) -> Result<()> {
    let mut c = s.conn()?;
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE verdict = 0 AND (at_ms >= $1 OR (kind = {} AND at_ms >= $2)) ORDER BY committed_ms, id",
        EventKind::Click.code()
    );
    let clicks_since_ms = clicks_since_ms.min(since_ms);
    block_on(async {
        // A portal (a cursor) in a read-only transaction: rows come in parts, so the
        // restart never holds them all.
        let tx = c.build_transaction().read_only(true).start().await?;
        let statement = tx.prepare(&sql).await?;
        let portal = tx.bind(&statement, &[&since_ms, &clicks_since_ms]).await?;
        loop {
            let rows = tx.query_portal(&portal, RESTART_ROWS_PER_FETCH).await?;
            for r in &rows {
                each(event_from(r, 0)?);
            }
            if rows.len() < RESTART_ROWS_PER_FETCH as usize {
                break;
            }
        }
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn campaign_spend(s: &PgStore, since_ms: Millis) -> Result<Vec<CampaignSpend>> {
    let c = s.conn()?;
    let rows = block_on(c.query(
        "SELECT advertiser_id, campaign_id, CASE WHEN bucket_ms >= $1 THEN bucket_ms ELSE 0 END AS b,
                SUM(cost_micros)::text
         FROM rollups WHERE cost_micros <> 0 GROUP BY advertiser_id, campaign_id, b",
        &[&since_ms],
    ))?;
    rows.iter()
        .map(|r| {
            Ok(CampaignSpend {
                advertiser_id: r.try_get(0)?,
                campaign_id: r.try_get(1)?,
                bucket_ms: r.try_get(2)?,
                spend_micros: saturate(wide(r, 3)?),
            })
        })
        .collect()
}

pub(super) fn ad_performance(s: &PgStore) -> Result<Vec<AdPerformance>> {
    let c = s.conn()?;
    let (impression, click): (i16, i16) = (EventKind::Impression.code().into(), EventKind::Click.code().into());
    let rows = block_on(c.query(
        "SELECT ad_id, SUM(CASE WHEN kind = $1 THEN events ELSE 0 END)::bigint,
                SUM(CASE WHEN kind = $2 THEN events ELSE 0 END)::bigint
         FROM rollups WHERE verdict = 0 AND kind IN ($1, $2) GROUP BY ad_id",
        &[&impression, &click],
    ))?;
    rows.iter()
        .map(|r| Ok(AdPerformance { ad_id: r.try_get(0)?, impressions: r.try_get(1)?, clicks: r.try_get(2)? }))
        .collect()
}

type GroupKey = (i64, i64, i64, i64, i16, String);

fn group_key(r: &Row) -> Result<GroupKey> {
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?))
}

pub(super) fn rollup_rows(s: &PgStore, q: &RollupQuery) -> Result<Vec<RollupRow>> {
    let (select, group) = crate::columns::report_columns(q, "bucket_ms", true);
    let mut group_all = group.clone();
    group_all.extend(["kind", "verdict"]);
    let filter = "bucket_ms >= $1 AND bucket_ms < $2 AND ($3::bigint IS NULL OR advertiser_id = $3)
                  AND ($4::bigint IS NULL OR campaign_id = $4) AND ($5::bigint IS NULL OR ad_id = $5)";
    let limit = q.max_rows.map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX - 1).saturating_add(1));
    let sums_sql = format!(
        "SELECT {}, kind, verdict, SUM(events)::bigint, SUM(cost_micros)::text, SUM(value_micros)::text
         FROM rollups WHERE {filter} GROUP BY {} LIMIT $6",
        select.join(", "),
        group_all.join(", ")
    );
    let reach_sql = format!(
        "SELECT {}, reach FROM rollup_reach WHERE {filter} ORDER BY {}",
        select.join(", "),
        if group.is_empty() { "1".to_owned() } else { group.join(", ") }
    );
    let c = s.conn()?;
    block_on(async {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
            [&q.from_ms, &q.to_ms, &q.advertiser_id, &q.campaign_id, &q.ad_id, &limit];
        let rows = c.query(&sums_sql, &params).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let kind: i16 = r.try_get(6)?;
            let verdict: i16 = r.try_get(7)?;
            let device: i16 = r.try_get(4)?;
            let country: String = r.try_get(5)?;
            out.push(RollupRow {
                bucket_ms: r.try_get(0)?,
                campaign_id: id_from_db(r.try_get(1)?),
                ad_id: id_from_db(r.try_get(2)?),
                placement_id: id_from_db(r.try_get(3)?),
                device: Device::from_code(device.into()).unwrap_or_default(),
                country: Country::parse(&country),
                kind: EventKind::from_code(kind.into()).ok_or_else(|| bad("kind", kind))?,
                verdict: Verdict::from_code(verdict.into()).ok_or_else(|| bad("verdict", verdict))?,
                sums: RollupSums { events: r.try_get(8)?, cost_micros: wide(r, 9)?, value_micros: wide(r, 10)? },
                reach: None,
            });
        }
        if q.reach.any() && !out.is_empty() {
            let mut sketches: BTreeMap<GroupKey, Sketch> = BTreeMap::new();
            for r in c.query(&reach_sql, &params[..5]).await? {
                let bytes: &[u8] = r.try_get(6)?;
                sketches.entry(group_key(&r)?).or_default().merge_bytes(bytes).map_err(|e| bad("reach sketch", e))?;
            }
            for row in out.iter_mut().filter(|r| has_reach(r.kind, r.verdict)) {
                let key = (
                    row.bucket_ms,
                    db_id(row.campaign_id),
                    db_id(row.ad_id),
                    db_id(row.placement_id),
                    row.device.code().into(),
                    row.country.as_str().to_owned(),
                );
                row.reach = sketches.get(&key).cloned().map(Reach::Users);
            }
        }
        Ok(out)
    })
}

pub(super) fn touch_paths(
    s: &PgStore,
    advertiser_id: i64,
    from_ms: Millis,
    to_ms: Millis,
    lookback_ms: Millis,
    limit: usize,
) -> Result<TouchPaths> {
    let (conversion, click, impression): (i16, i16, i16) =
        (EventKind::Conversion.code().into(), EventKind::Click.code().into(), EventKind::Impression.code().into());
    let fetch = limit.saturating_add(1).min(i64::MAX as usize) as i64;
    let mut c = s.conn()?;
    block_on(async {
        // One snapshot for both lists.
        let tx = c.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).start().await?;
        let mut conversions: Vec<ConversionFact> = tx
            .query(
                "SELECT user_key, at_ms, value_micros FROM events
                 WHERE advertiser_id = $1 AND at_ms >= $2 AND at_ms < $3 AND kind = $4 AND verdict = 0
                 ORDER BY at_ms, id LIMIT $5",
                &[&advertiser_id, &from_ms, &to_ms, &conversion, &fetch],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(ConversionFact {
                    user_key: r.try_get::<_, i64>(0)? as u64,
                    at_ms: r.try_get(1)?,
                    value_micros: r.try_get(2)?,
                })
            })
            .collect::<Result<_>>()?;
        let mut truncated = conversions.len() > limit;
        conversions.truncate(limit);
        let mut touches: Vec<(u64, PathTouch)> = tx
            .query(
                "SELECT user_key, at_ms, kind, decision_id, campaign_id, ad_id FROM events
                 WHERE advertiser_id = $1 AND at_ms >= $2 AND at_ms < $3 AND kind IN ($5, $6) AND verdict = 0
                   AND user_key IN (SELECT user_key FROM events WHERE advertiser_id = $1 AND at_ms >= $4
                                    AND at_ms < $3 AND kind = $7 AND verdict = 0)
                 ORDER BY at_ms, id LIMIT $8",
                &[
                    &advertiser_id,
                    &from_ms.saturating_sub(lookback_ms.max(0)),
                    &to_ms,
                    &from_ms,
                    &click,
                    &impression,
                    &conversion,
                    &fetch,
                ],
            )
            .await?
            .iter()
            .map(|r| {
                let kind: i16 = r.try_get(2)?;
                let kind = if kind == click { TouchKind::Click } else { TouchKind::Impression };
                Ok((
                    r.try_get::<_, i64>(0)? as u64,
                    PathTouch {
                        at_ms: r.try_get(1)?,
                        kind,
                        decision_id: id_from_db(r.try_get(3)?).map(|d| d as u64),
                        campaign_id: r.try_get(4)?,
                        ad_id: r.try_get(5)?,
                    },
                ))
            })
            .collect::<Result<_>>()?;
        truncated |= touches.len() > limit;
        touches.truncate(limit);
        tx.commit().await?;
        Ok(TouchPaths { conversions, touches, truncated })
    })
}

async fn kept_from(c: &impl GenericClient) -> Result<i64> {
    let row = c.query_opt("SELECT value FROM meta WHERE key = 'events_kept_from_ms'", &[]).await?;
    Ok(row.and_then(|r| r.get::<_, String>(0).parse().ok()).unwrap_or(i64::MIN))
}

pub(super) fn purge_events_before(s: &PgStore, before_ms: Millis, max_rows: usize) -> Result<usize> {
    let cutoff = bucket_of(before_ms);
    let mut c = s.conn()?;
    block_on(async {
        let tx = c.transaction().await?;
        let kept = kept_from(&tx).await?;
        let advertisers: Vec<i64> =
            tx.query("SELECT id FROM advertisers", &[]).await?.iter().map(|r| r.get(0)).collect();
        let mut deleted = 0usize;
        for advertiser in advertisers {
            let left = max_rows.saturating_sub(deleted);
            if left == 0 {
                break;
            }
            let left = i64::try_from(left).unwrap_or(i64::MAX);
            deleted += tx
                .execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events
                     WHERE advertiser_id = $1 AND at_ms < $2 LIMIT $3)",
                    &[&advertiser, &cutoff, &left],
                )
                .await? as usize;
        }
        if cutoff > kept {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('events_kept_from_ms', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&cutoff.to_string()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(deleted)
    })
}

pub(super) fn consistency_check(s: &PgStore) -> Result<ConsistencyCheck> {
    let mut c = s.conn()?;
    block_on(async {
        let tx = c.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).start().await?;
        let kept = kept_from(&tx).await?;
        let per_advertiser = |rows: Vec<Row>| -> Result<BTreeMap<i64, Totals>> {
            rows.iter()
                .map(|r| {
                    Ok((
                        r.try_get(0)?,
                        Totals { events: r.try_get(1)?, cost_micros: wide(r, 2)?, value_micros: wide(r, 3)? },
                    ))
                })
                .collect()
        };
        let raw = per_advertiser(
            tx.query(
                "SELECT advertiser_id, COUNT(*)::bigint, SUM(cost_micros)::text, SUM(value_micros)::text
                 FROM events WHERE at_ms >= $1 GROUP BY advertiser_id",
                &[&kept],
            )
            .await?,
        )?;
        let rollups = per_advertiser(
            tx.query(
                "SELECT advertiser_id, SUM(events)::bigint, SUM(cost_micros)::text, SUM(value_micros)::text
                 FROM rollups WHERE bucket_ms >= $1 GROUP BY advertiser_id",
                &[&kept],
            )
            .await?,
        )?;
        tx.commit().await?;
        // No day layer on PostgreSQL (yet): reports read the quarter hours.
        Ok(ConsistencyCheck { raw, rollups, day_layer: Vec::new() })
    })
}
