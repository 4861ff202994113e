//! Several nodes on one PostgreSQL: budget leases, heartbeats and each other's events.
//!
//! Money stays exact because the database, not a node, decides what may be spent:
//! - a node charges an impression only from its lease of that campaign and local day;
//! - a lease is granted in one transaction that locks the advertiser (so grants of one
//!   advertiser's campaigns are serialized) and then, in one statement and so one
//!   snapshot, checks spend + every live node's unspent leases + the grant against the
//!   campaign's total and daily budget and the advertiser's credits;
//! - the transaction that stores a node's charged events adds them to its lease's
//!   `used` only while `used` stays within `granted` and the node is alive (its row
//!   locked `FOR SHARE`), else the whole batch fails and is retried with fresh leases;
//! - a node whose heartbeat is older than [`LEASE_TIMEOUT_MS`] is dead: its unspent
//!   leases stop counting. A grant first locks the dead nodes' rows, so it waits for any
//!   batch such a node still had in flight. A node that finds itself declared dead
//!   gives its leases back before it beats again.
//!
//! The cost of leasing is under-delivery, never over-spending: at any moment the other
//! nodes may hold up to one slice each of a campaign's remaining budget.

use adtally_core::clock::Millis;
use tokio_postgres::GenericClient;

use super::schema::DB_NOW_MS;
use super::{block_on, PgStore};
use crate::{Cluster, LeaseGrant, PeerEvent, Result, Room, StoreError};

/// A node silent this long is dead and holds no budget.
pub const LEASE_TIMEOUT_MS: i64 = 10_000;

pub(super) fn lease_lost() -> StoreError {
    StoreError::Refused {
        code: "lease_lost",
        message: "this node's leases lapsed (it was silent too long); the batch is retried with new ones".into(),
    }
}

/// Locks this node's registry row for the rest of the transaction if it is alive, so no
/// grant can count it dead before the transaction ends.
pub(super) async fn hold_alive(c: &impl GenericClient, node_id: i64) -> Result<()> {
    let sql = format!("SELECT 1 FROM nodes WHERE id = $1 AND heartbeat_ms > {DB_NOW_MS} - $2 FOR SHARE");
    match c.query_opt(&sql, &[&node_id, &LEASE_TIMEOUT_MS]).await? {
        Some(_) => Ok(()),
        None => Err(lease_lost()),
    }
}

/// Gives back what is left of a node's leases.
pub(super) async fn release_all(c: &impl GenericClient, node_id: i64) -> Result<()> {
    c.execute("UPDATE leases SET granted_micros = used_micros WHERE node_id = $1", &[&node_id]).await?;
    Ok(())
}

impl Cluster for PgStore {
    fn node_id(&self) -> i64 {
        self.node_id
    }

    fn decision_slot(&self) -> u64 {
        self.slot.max(0) as u64
    }

    fn lease(&self, campaign_id: i64, day: i32, want_micros: i64) -> Result<LeaseGrant> {
        let me = self.node_id;
        let mut c = self.conn()?;
        block_on(async {
            let tx = c.transaction().await?;
            let advertiser: i64 =
                match tx.query_opt("SELECT advertiser_id FROM campaigns WHERE id = $1", &[&campaign_id]).await? {
                    Some(r) => r.get(0),
                    None => return Err(StoreError::NotFound(format!("campaign {campaign_id}"))),
                };
            tx.execute("SELECT 1 FROM advertisers WHERE id = $1 FOR UPDATE", &[&advertiser]).await?;
            // Dead nodes' batches still in flight finish before their leases are reused.
            let dead = format!("SELECT id FROM nodes WHERE heartbeat_ms <= {DB_NOW_MS} - $1 ORDER BY id FOR UPDATE");
            tx.execute(&dead, &[&LEASE_TIMEOUT_MS]).await?;
            hold_alive(&tx, me).await?;
            tx.execute(
                "INSERT INTO leases (campaign_id, node_id, day, advertiser_id, granted_micros, used_micros)
                 VALUES ($1, $2, $3, $4, 0, 0) ON CONFLICT DO NOTHING",
                &[&campaign_id, &me, &day, &advertiser],
            )
            .await?;
            // One statement, one snapshot: spend and every lease as of the same moment.
            let room = format!(
                "WITH live AS (SELECT id FROM nodes WHERE heartbeat_ms > {DB_NOW_MS} - $4 OR id = $5),
                 held AS (SELECT l.* FROM leases l JOIN live ON live.id = l.node_id)
                 SELECT
                   (c.total_budget_micros::numeric
                     - COALESCE((SELECT spent_micros FROM campaign_spend WHERE campaign_id = $1), 0)
                     - COALESCE((SELECT SUM(granted_micros - used_micros) FROM held WHERE campaign_id = $1), 0))::text,
                   (c.daily_budget_micros::numeric
                     - COALESCE((SELECT spent_micros FROM campaign_day_spend WHERE campaign_id = $1 AND day = $3), 0)
                     - COALESCE((SELECT SUM(granted_micros - used_micros) FROM held
                                 WHERE campaign_id = $1 AND day = $3), 0))::text,
                   (COALESCE((SELECT SUM(amount_micros) FROM credits WHERE advertiser_id = $2), 0)
                     - COALESCE((SELECT SUM(spent_micros) FROM campaign_spend WHERE advertiser_id = $2), 0)
                     - COALESCE((SELECT SUM(granted_micros - used_micros) FROM held WHERE advertiser_id = $2), 0))::text
                 FROM campaigns c WHERE c.id = $1"
            );
            let row = tx.query_one(&room, &[&campaign_id, &advertiser, &day, &LEASE_TIMEOUT_MS, &me]).await?;
            let room = |i: usize| -> Result<Option<i128>> {
                let text: Option<String> = row.try_get(i)?;
                text.map(|t| t.parse::<i128>().map_err(|_| StoreError::Database(format!("not a number: {t}"))))
                    .transpose()
            };
            let (total, daily, balance) = (room(0)?.unwrap_or(0), room(1)?, room(2)?.unwrap_or(0));
            let grant = i128::from(want_micros).min(total).min(daily.unwrap_or(i128::MAX)).min(balance).max(0);
            let grant = i64::try_from(grant).unwrap_or(i64::MAX);
            let row = tx
                .query_one(
                    "UPDATE leases SET granted_micros = granted_micros + $3
                     WHERE campaign_id = $1 AND node_id = $2 AND day = $4
                     RETURNING day, granted_micros - used_micros",
                    &[&campaign_id, &me, &grant, &day],
                )
                .await?;
            tx.commit().await?;
            Ok(LeaseGrant { day: row.get(0), left_micros: row.get(1) })
        })
    }

    fn room(&self, campaign_days: &[(i64, i32)]) -> Result<Room> {
        let (campaigns, days): (Vec<i64>, Vec<i32>) = campaign_days.iter().copied().unzip();
        let c = self.conn()?;
        let sql = format!(
            "WITH others AS (SELECT l.* FROM leases l JOIN nodes n ON n.id = l.node_id
                             WHERE n.id <> $3 AND n.heartbeat_ms > {DB_NOW_MS} - $4
                               AND l.granted_micros > l.used_micros),
             wanted AS (SELECT * FROM unnest($1::bigint[], $2::integer[]) AS t(campaign_id, day))
             SELECT c.id, w.day, LEAST(
               c.total_budget_micros::numeric
                 - COALESCE((SELECT spent_micros FROM campaign_spend WHERE campaign_id = c.id), 0)
                 - COALESCE((SELECT SUM(granted_micros - used_micros) FROM others WHERE campaign_id = c.id), 0),
               COALESCE(c.daily_budget_micros::numeric
                 - COALESCE((SELECT spent_micros FROM campaign_day_spend WHERE campaign_id = c.id AND day = w.day), 0)
                 - COALESCE((SELECT SUM(granted_micros - used_micros) FROM others
                             WHERE campaign_id = c.id AND day = w.day), 0), 9223372036854775807),
               COALESCE((SELECT SUM(amount_micros) FROM credits WHERE advertiser_id = c.advertiser_id), 0)
                 - COALESCE((SELECT SUM(spent_micros) FROM campaign_spend WHERE advertiser_id = c.advertiser_id), 0)
                 - COALESCE((SELECT SUM(granted_micros - used_micros) FROM others
                             WHERE advertiser_id = c.advertiser_id), 0)
             )::text
             FROM wanted w JOIN campaigns c ON c.id = w.campaign_id WHERE c.status = 'active'"
        );
        let live = format!("SELECT COUNT(*) FROM nodes WHERE id = $1 OR heartbeat_ms > {DB_NOW_MS} - $2");
        let live: i64 = block_on(c.query_one(&live, &[&self.node_id, &LEASE_TIMEOUT_MS]))?.get(0);
        let rows = if campaign_days.is_empty() {
            Vec::new()
        } else {
            block_on(c.query(&sql, &[&campaigns, &days, &self.node_id, &LEASE_TIMEOUT_MS]))?
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let text: String = r.try_get(2)?;
            let room: i128 = text.parse().map_err(|_| StoreError::Database(format!("not a number: {text}")))?;
            let room = i64::try_from(room.clamp(i128::from(i64::MIN), i128::from(i64::MAX))).unwrap_or(0);
            out.push((r.try_get(0)?, r.try_get(1)?, room));
        }
        Ok(Room { live_nodes: usize::try_from(live).unwrap_or(1).max(1), campaigns: out })
    }

    fn leases(&self) -> Result<Vec<(i64, LeaseGrant)>> {
        let c = self.conn()?;
        let rows = block_on(c.query(
            "SELECT campaign_id, day, granted_micros - used_micros FROM leases
             WHERE node_id = $1 AND granted_micros > used_micros",
            &[&self.node_id],
        ))?;
        Ok(rows.iter().map(|r| (r.get(0), LeaseGrant { day: r.get(1), left_micros: r.get(2) })).collect())
    }

    fn release(&self, campaign_ids: &[i64]) -> Result<()> {
        let c = self.conn()?;
        block_on(c.execute(
            "UPDATE leases SET granted_micros = used_micros WHERE node_id = $1 AND campaign_id = ANY($2)",
            &[&self.node_id, &campaign_ids],
        ))?;
        Ok(())
    }

    fn heartbeat(&self) -> Result<bool> {
        let mut c = self.conn()?;
        block_on(async {
            let beat = format!(
                "UPDATE nodes SET heartbeat_ms = {DB_NOW_MS} WHERE id = $1 AND heartbeat_ms > {DB_NOW_MS} - $2"
            );
            if c.execute(&beat, &[&self.node_id, &LEASE_TIMEOUT_MS]).await? == 1 {
                return Ok(true);
            }
            // Declared dead: what it held may be leased to others already.
            let tx = c.transaction().await?;
            release_all(&tx, self.node_id).await?;
            tx.execute(&format!("UPDATE nodes SET heartbeat_ms = {DB_NOW_MS} WHERE id = $1"), &[&self.node_id]).await?;
            tx.commit().await?;
            Ok(false)
        })
    }

    fn forget_claims_before(&self, before_ms: Millis) -> Result<u64> {
        let c = self.conn()?;
        // In rounds, so no transaction holds many rows for long.
        let sql = "DELETE FROM counted WHERE ctid IN (SELECT ctid FROM counted WHERE at_ms < $1 LIMIT 50000)";
        let mut total = 0;
        loop {
            let n = block_on(c.execute(sql, &[&before_ms]))?;
            total += n;
            if n < 50_000 {
                return Ok(total);
            }
        }
    }

    fn peer_events(&self, since_ms: Millis) -> Result<(Millis, Vec<PeerEvent>)> {
        let c = self.conn()?;
        block_on(async {
            let now: i64 = c.query_one(&format!("SELECT {DB_NOW_MS}"), &[]).await?.get(0);
            let sql = format!(
                "SELECT id, {} FROM events WHERE committed_ms >= $1 AND node_id <> $2 AND verdict = 0
                 ORDER BY committed_ms, id",
                crate::columns::EVENT_COLUMNS
            );
            let rows = c.query(&sql, &[&since_ms, &self.node_id]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(PeerEvent { id: r.try_get(0)?, event: crate::columns::event_from(r, 1)? });
            }
            Ok((now, out))
        })
    }
}
