//! Accounts on PostgreSQL: settings, advertisers, API keys, dashboard sessions, promo
//! codes, the audit log, credits and the weekly-report settings. Each function ports
//! the SQLite store's method of the same name (`sqlite.rs`); `store_impl.rs` calls them
//! with a pooled connection.

use adtally_core::catalog::{Advertiser, CreditKind, LedgerEntry};
use adtally_core::clock::Millis;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient};

use crate::columns::{advertiser_from, owner_from, session_from, ADVERTISER_COLUMNS, SESSION_SELECT};
use crate::{ApiKeyInfo, AuditEntry, FoundSession, KeyOwner, PromoCode, Result, Session, StoreError};

/// A failed write as SQLite's store reports it: a broken constraint (a duplicate key, a
/// missing referenced row) is a [`StoreError::Conflict`], which the API answers with 409,
/// not a database failure. Messages follow SQLite's ("UNIQUE constraint failed:
/// placements.slug") so callers see the same text on either store.
pub(super) fn write_err(e: tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        return e.into();
    };
    let code = db.code();
    let table = db.table().unwrap_or("row");
    if super::is_unique_violation(&e) {
        // The detail reads `Key (slug)=(news) already exists.`: name the columns, not
        // the value.
        let columns = db
            .detail()
            .and_then(|d| d.strip_prefix("Key ("))
            .and_then(|d| d.split_once(")=("))
            .map(|(columns, _)| columns.split(", ").map(|c| format!("{table}.{c}")).collect::<Vec<_>>().join(", "));
        let what = columns.unwrap_or_else(|| db.constraint().unwrap_or(table).to_string());
        StoreError::Conflict(format!("UNIQUE constraint failed: {what}"))
    } else if *code == SqlState::FOREIGN_KEY_VIOLATION {
        StoreError::Conflict("FOREIGN KEY constraint failed".into())
    } else if *code == SqlState::NOT_NULL_VIOLATION {
        StoreError::Conflict(format!("NOT NULL constraint failed: {table}.{}", db.column().unwrap_or("column")))
    } else if code.code().starts_with("23") {
        StoreError::Conflict(db.message().to_string())
    } else {
        e.into()
    }
}

/// A column that holds something the store never writes.
pub(super) fn bad_column(what: &str, value: &str) -> StoreError {
    StoreError::Database(format!("invalid column value {what}={value}"))
}

/// A BIGINT column of a narrower Rust type.
pub(super) fn narrow<T: TryFrom<i64>>(what: &str, value: i64) -> Result<T> {
    T::try_from(value).map_err(|_| bad_column(what, &value.to_string()))
}

fn owner_id(owner: KeyOwner) -> Option<i64> {
    match owner {
        KeyOwner::Admin => None,
        KeyOwner::Advertiser(id) => Some(id),
    }
}

pub(super) async fn meta(c: &Client, key: &str) -> Result<Option<String>> {
    Ok(c.query_opt("SELECT value FROM meta WHERE key = $1", &[&key]).await?.map(|r| r.get(0)))
}

pub(super) async fn meta_init(c: &Client, key: &str, value: &str) -> Result<String> {
    c.execute("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", &[&key, &value])
        .await
        .map_err(write_err)?;
    Ok(c.query_one("SELECT value FROM meta WHERE key = $1", &[&key]).await?.get(0))
}

/// The attribution windows as stored: click, view, half-life days.
fn windows(a: &Advertiser) -> [i64; 3] {
    [
        i64::from(a.attribution.click_days()),
        i64::from(a.attribution.view_days()),
        i64::from(a.attribution.half_life_days()),
    ]
}

pub(super) async fn create_advertiser(c: &Client, a: &Advertiser) -> Result<Advertiser> {
    let [click, view, half_life] = windows(a);
    let row = c
        .query_one(
            "INSERT INTO advertisers (name, email, timezone, max_conversion_value_micros, click_window_days,
                                      view_window_days, half_life_days, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &a.name,
                &a.email,
                &a.timezone,
                &a.max_conversion_value_micros,
                &click,
                &view,
                &half_life,
                &a.created_at_ms,
            ],
        )
        .await
        .map_err(write_err)?;
    Ok(Advertiser { id: row.try_get(0)?, ..a.clone() })
}

/// SQLite also rebuilds the advertiser's day layer when its zone changes; PostgreSQL has
/// no day layer (reports read the UTC quarter hours), so this is the update alone.
pub(super) async fn update_advertiser(c: &Client, a: &Advertiser) -> Result<()> {
    let [click, view, half_life] = windows(a);
    let changed = c
        .execute(
            "UPDATE advertisers SET name = $2, email = $3, timezone = $4, max_conversion_value_micros = $5,
                    click_window_days = $6, view_window_days = $7, half_life_days = $8
             WHERE id = $1",
            &[&a.id, &a.name, &a.email, &a.timezone, &a.max_conversion_value_micros, &click, &view, &half_life],
        )
        .await
        .map_err(write_err)?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("advertiser {}", a.id)));
    }
    Ok(())
}

pub(super) async fn advertiser(c: &Client, id: i64) -> Result<Option<Advertiser>> {
    let sql = format!("SELECT {ADVERTISER_COLUMNS} FROM advertisers WHERE id = $1");
    c.query_opt(&sql, &[&id]).await?.as_ref().map(advertiser_from).transpose()
}

pub(super) async fn advertisers(c: &Client) -> Result<Vec<Advertiser>> {
    let sql = format!("SELECT {ADVERTISER_COLUMNS} FROM advertisers ORDER BY id");
    c.query(&sql, &[]).await?.iter().map(advertiser_from).collect()
}

pub(super) async fn add_api_key(c: &Client, owner: KeyOwner, key_hash: &str, now: Millis) -> Result<i64> {
    let row = c
        .query_one(
            "INSERT INTO api_keys (key_hash, advertiser_id, created_at_ms) VALUES ($1, $2, $3) RETURNING id",
            &[&key_hash, &owner_id(owner), &now],
        )
        .await
        .map_err(write_err)?;
    Ok(row.try_get(0)?)
}

pub(super) async fn api_key_owner(c: &Client, key_hash: &str, now: Millis) -> Result<Option<KeyOwner>> {
    let owner: Option<Option<i64>> = c
        .query_opt("SELECT advertiser_id FROM api_keys WHERE key_hash = $1 AND revoked_at_ms IS NULL", &[&key_hash])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    if owner.is_some() {
        // At most one write a minute per key, so reads stay reads. (`$2 - 60000` alone
        // would make $2 an INTEGER.)
        c.execute(
            "UPDATE api_keys SET last_used_at_ms = $2
             WHERE key_hash = $1 AND (last_used_at_ms IS NULL OR last_used_at_ms < $2::BIGINT - 60000)",
            &[&key_hash, &now],
        )
        .await?;
    }
    Ok(owner.map(owner_from))
}

pub(super) async fn api_keys(c: &Client, advertiser_id: i64) -> Result<Vec<ApiKeyInfo>> {
    let rows = c
        .query(
            "SELECT id, advertiser_id, created_at_ms, last_used_at_ms, revoked_at_ms FROM api_keys
             WHERE advertiser_id = $1 ORDER BY id",
            &[&advertiser_id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ApiKeyInfo {
                id: r.try_get(0)?,
                advertiser_id: r.try_get(1)?,
                created_at_ms: r.try_get(2)?,
                last_used_at_ms: r.try_get(3)?,
                revoked_at_ms: r.try_get(4)?,
            })
        })
        .collect()
}

pub(super) async fn revoke_api_key(
    c: &mut Client,
    key_id: i64,
    advertiser_id: Option<i64>,
    now: Millis,
) -> Result<bool> {
    let tx = c.transaction().await?;
    let changed = tx
        .execute(
            "UPDATE api_keys SET revoked_at_ms = $2 WHERE id = $1 AND advertiser_id IS NOT NULL
             AND ($3::BIGINT IS NULL OR advertiser_id = $3) AND revoked_at_ms IS NULL",
            &[&key_id, &now, &advertiser_id],
        )
        .await?;
    if changed == 1 {
        tx.execute("DELETE FROM sessions WHERE key_hash = (SELECT key_hash FROM api_keys WHERE id = $1)", &[&key_id])
            .await?;
    }
    tx.commit().await?;
    Ok(changed == 1)
}

pub(super) async fn create_session(c: &Client, id_hash: &str, s: &Session) -> Result<()> {
    c.execute(
        "INSERT INTO sessions (id_hash, advertiser_id, key_hash, csrf_token, created_at_ms, last_seen_at_ms,
         expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &id_hash,
            &owner_id(s.owner),
            &s.key_hash,
            &s.csrf_token,
            &s.created_at_ms,
            &s.last_seen_at_ms,
            &s.expires_at_ms,
        ],
    )
    .await
    .map_err(write_err)?;
    Ok(())
}

pub(super) async fn session(c: &Client, id_hash: &str, now: Millis) -> Result<Option<FoundSession>> {
    let row = c.query_opt(&format!("{SESSION_SELECT} FROM sessions s WHERE s.id_hash = $1"), &[&id_hash]).await?;
    let found = row.as_ref().map(session_from).transpose()?;
    if found.as_ref().is_some_and(|f| f.session.last_seen_at_ms < now - 60_000) {
        c.execute("UPDATE sessions SET last_seen_at_ms = $2 WHERE id_hash = $1", &[&id_hash, &now]).await?;
    }
    Ok(found)
}

pub(super) async fn delete_session(c: &Client, id_hash: &str) -> Result<bool> {
    Ok(c.execute("DELETE FROM sessions WHERE id_hash = $1", &[&id_hash]).await? == 1)
}

pub(super) async fn purge_sessions(c: &Client, now: Millis, idle_since: Millis) -> Result<usize> {
    let deleted = c
        .execute("DELETE FROM sessions WHERE expires_at_ms <= $1 OR last_seen_at_ms < $2", &[&now, &idle_since])
        .await?;
    Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
}

pub(super) async fn create_promo(c: &Client, promo: &PromoCode) -> Result<()> {
    c.execute(
        "INSERT INTO promo_codes (code, amount_micros, expires_at_ms, max_redemptions, created_at_ms)
         VALUES ($1, $2, $3, $4, $5)",
        &[&promo.code, &promo.amount_micros, &promo.expires_at_ms, &promo.max_redemptions, &promo.created_at_ms],
    )
    .await
    .map_err(write_err)?;
    Ok(())
}

pub(super) async fn redeem_promo(c: &mut Client, code: &str, advertiser_id: i64, now: Millis) -> Result<LedgerEntry> {
    let tx = c.transaction().await?;
    // The row lock queues concurrent redemptions of one code, from any node: each reads
    // the count the previous one committed (READ COMMITTED re-reads a locked row).
    let promo = tx
        .query_opt(
            "SELECT amount_micros, expires_at_ms, max_redemptions, redemptions FROM promo_codes
             WHERE code = $1 FOR UPDATE",
            &[&code],
        )
        .await?;
    let Some(promo) = promo else {
        return Err(StoreError::Refused { code: "promo_not_found", message: "no promo code has this name".into() });
    };
    let (amount, expires, max, used): (i64, Option<i64>, i64, i64) =
        (promo.try_get(0)?, promo.try_get(1)?, promo.try_get(2)?, promo.try_get(3)?);
    if expires.is_some_and(|e| e <= now) {
        return Err(StoreError::Refused { code: "promo_expired", message: "this promo code has expired".into() });
    }
    if used >= max {
        return Err(StoreError::Refused {
            code: "promo_exhausted",
            message: "this promo code has been used up".into(),
        });
    }
    let fresh = tx
        .execute(
            "INSERT INTO promo_redemptions (code, advertiser_id, at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (code, advertiser_id) DO NOTHING",
            &[&code, &advertiser_id, &now],
        )
        .await
        .map_err(write_err)?;
    if fresh == 0 {
        return Err(StoreError::Refused {
            code: "promo_already_redeemed",
            message: "this advertiser has already redeemed this code".into(),
        });
    }
    tx.execute("UPDATE promo_codes SET redemptions = redemptions + 1 WHERE code = $1", &[&code]).await?;
    let note = format!("promo code {code}");
    let row = tx
        .query_one(
            "INSERT INTO credits (advertiser_id, at_ms, kind, amount_micros, note) VALUES ($1, $2, 'promo', $3, $4)
             RETURNING id",
            &[&advertiser_id, &now, &amount, &note],
        )
        .await
        .map_err(write_err)?;
    let id: i64 = row.try_get(0)?;
    tx.commit().await?;
    Ok(LedgerEntry { id: Some(id), at_ms: now, kind: "promo".into(), amount_micros: amount, note: Some(note) })
}

pub(super) async fn audit(c: &Client, entry: &AuditEntry) -> Result<()> {
    c.execute(
        "INSERT INTO audit_log (at_ms, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
        &[&entry.at_ms, &entry.actor, &entry.action, &entry.target, &entry.detail],
    )
    .await
    .map_err(write_err)?;
    Ok(())
}

pub(super) async fn audit_log(c: &Client, limit: usize) -> Result<Vec<AuditEntry>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = c
        .query("SELECT at_ms, actor, action, target, detail FROM audit_log ORDER BY id DESC LIMIT $1", &[&limit])
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                at_ms: r.try_get(0)?,
                actor: r.try_get(1)?,
                action: r.try_get(2)?,
                target: r.try_get(3)?,
                detail: r.try_get(4)?,
            })
        })
        .collect()
}

/// On a client or inside a transaction: a top-up writes two credits at once.
async fn insert_credit(
    c: &impl GenericClient,
    advertiser_id: i64,
    kind: CreditKind,
    amount_micros: i64,
    note: Option<&str>,
    now: Millis,
) -> Result<LedgerEntry> {
    let row = c
        .query_one(
            "INSERT INTO credits (advertiser_id, at_ms, kind, amount_micros, note) VALUES ($1, $2, $3, $4, $5)
             RETURNING id",
            &[&advertiser_id, &now, &kind.as_str(), &amount_micros, &note],
        )
        .await
        .map_err(write_err)?;
    Ok(LedgerEntry {
        id: Some(row.try_get(0)?),
        at_ms: now,
        kind: kind.as_str().into(),
        amount_micros,
        note: note.map(String::from),
    })
}

pub(super) async fn add_credit(
    c: &Client,
    advertiser_id: i64,
    kind: CreditKind,
    amount_micros: i64,
    note: Option<&str>,
    now: Millis,
) -> Result<LedgerEntry> {
    insert_credit(c, advertiser_id, kind, amount_micros, note, now).await
}

pub(super) async fn add_topup(
    c: &mut Client,
    advertiser_id: i64,
    amount_micros: i64,
    note: Option<&str>,
    bonus_micros: Option<i64>,
    now: Millis,
) -> Result<(LedgerEntry, Option<LedgerEntry>)> {
    let tx = c.transaction().await?;
    let topup = insert_credit(&tx, advertiser_id, CreditKind::Topup, amount_micros, note, now).await?;
    let bonus = match bonus_micros {
        Some(bonus) => {
            let note = format!("top-up bonus on {}", topup.id.unwrap_or_default());
            Some(insert_credit(&tx, advertiser_id, CreditKind::Bonus, bonus, Some(&note), now).await?)
        }
        None => None,
    };
    tx.commit().await?;
    Ok((topup, bonus))
}

/// `SUM` of BIGINT is NUMERIC, which cannot overflow; clamping it to BIGINT saturates as
/// SQLite's store does with its split sums.
pub(super) fn saturated_sum(column: &str) -> String {
    format!("LEAST(GREATEST(SUM({column}), -9223372036854775808), 9223372036854775807)::BIGINT")
}

pub(super) async fn credit_totals(c: &Client) -> Result<Vec<(i64, i64)>> {
    // Ordered as SQLite's GROUP BY happens to return them.
    let sql = format!(
        "SELECT advertiser_id, {} FROM credits GROUP BY advertiser_id ORDER BY advertiser_id",
        saturated_sum("amount_micros")
    );
    c.query(&sql, &[]).await?.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// The credits part of an advertiser's ledger, in the order they were written.
pub(super) async fn ledger_credits(c: &Client, advertiser_id: i64) -> Result<Vec<LedgerEntry>> {
    let rows = c
        .query(
            "SELECT id, at_ms, kind, amount_micros, note FROM credits WHERE advertiser_id = $1 ORDER BY id",
            &[&advertiser_id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(LedgerEntry {
                id: r.try_get(0)?,
                at_ms: r.try_get(1)?,
                kind: r.try_get(2)?,
                amount_micros: r.try_get(3)?,
                note: r.try_get(4)?,
            })
        })
        .collect()
}

pub(super) async fn set_weekly_report(c: &Client, advertiser_id: i64, enabled: bool, now: Millis) -> Result<()> {
    if enabled {
        c.execute("DELETE FROM weekly_report_optouts WHERE advertiser_id = $1", &[&advertiser_id]).await?;
    } else {
        c.execute(
            "INSERT INTO weekly_report_optouts (advertiser_id, at_ms) VALUES ($1, $2)
             ON CONFLICT (advertiser_id) DO NOTHING",
            &[&advertiser_id, &now],
        )
        .await
        .map_err(write_err)?;
    }
    Ok(())
}

pub(super) async fn weekly_report_optouts(c: &Client) -> Result<Vec<i64>> {
    c.query("SELECT advertiser_id FROM weekly_report_optouts", &[]).await?.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

pub(super) async fn claim_mail(c: &Client, advertiser_id: i64, report: &str, now: Millis) -> Result<bool> {
    let inserted = c
        .execute(
            "INSERT INTO sent_mail (advertiser_id, report, sent_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (advertiser_id, report) DO NOTHING",
            &[&advertiser_id, &report, &now],
        )
        .await
        .map_err(write_err)?;
    Ok(inserted == 1)
}

pub(super) async fn release_mail(c: &Client, advertiser_id: i64, report: &str) -> Result<()> {
    c.execute("DELETE FROM sent_mail WHERE advertiser_id = $1 AND report = $2", &[&advertiser_id, &report])
        .await
        .map_err(write_err)?;
    Ok(())
}
