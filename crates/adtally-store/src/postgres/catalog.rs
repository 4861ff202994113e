//! The catalog on PostgreSQL: placements, campaigns, ads with their revisions and the
//! approved versions clicks resolve against. Each function ports the SQLite store's
//! method of the same name (`sqlite.rs`); `store_impl.rs` calls them with a pooled
//! connection.

use adtally_core::catalog::{Ad, AdStamp, AdStatus, Campaign, CampaignStatus, Format, Placement};
use adtally_core::clock::Millis;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient};

use super::accounts::{narrow, write_err};
use crate::columns::{ad_from, campaign_from, format_from, targeting_columns, AD_SELECT, CAMPAIGN_COLUMNS};
use crate::{ApprovedVersion, Result, StoreError};

pub(super) async fn create_placement(
    c: &Client,
    slug: &str,
    name: &str,
    format: Format,
    floor_cpm_micros: i64,
) -> Result<Placement> {
    let row = c
        .query_one(
            "INSERT INTO placements (slug, name, format, floor_cpm_micros) VALUES ($1, $2, $3, $4) RETURNING id",
            &[&slug, &name, &format.as_str(), &floor_cpm_micros],
        )
        .await
        .map_err(write_err)?;
    Ok(Placement { id: row.try_get(0)?, slug: slug.into(), name: name.into(), format, floor_cpm_micros })
}

pub(super) async fn placements(c: &Client) -> Result<Vec<Placement>> {
    let rows = c.query("SELECT id, slug, name, format, floor_cpm_micros FROM placements ORDER BY id", &[]).await?;
    rows.iter()
        .map(|r| {
            Ok(Placement {
                id: r.try_get(0)?,
                slug: r.try_get(1)?,
                name: r.try_get(2)?,
                format: format_from(&r.try_get::<_, String>(3)?)?,
                floor_cpm_micros: r.try_get(4)?,
            })
        })
        .collect()
}

/// The columns a campaign's owner may change, in the order both the insert and the
/// update bind them.
struct CampaignValues {
    status: &'static str,
    pacing: &'static str,
    devices: String,
    placements: String,
    cap_impressions: Option<i64>,
    cap_per_hours: Option<i64>,
}

impl CampaignValues {
    fn of(k: &Campaign) -> Self {
        let (devices, placements) = targeting_columns(&k.targeting);
        Self {
            status: k.status.as_str(),
            pacing: k.pacing.as_str(),
            devices,
            placements,
            cap_impressions: k.frequency_cap.map(|f| i64::from(f.impressions)),
            cap_per_hours: k.frequency_cap.map(|f| i64::from(f.per_hours)),
        }
    }

    /// $1 to $12.
    fn params<'a>(&'a self, k: &'a Campaign) -> [&'a (dyn ToSql + Sync); 12] {
        [
            &k.name,
            &self.status,
            &k.cpm_bid_micros,
            &k.total_budget_micros,
            &k.daily_budget_micros,
            &k.start_at_ms,
            &k.end_at_ms,
            &self.pacing,
            &self.devices,
            &self.placements,
            &self.cap_impressions,
            &self.cap_per_hours,
        ]
    }
}

async fn insert_campaign(c: &impl GenericClient, k: &Campaign) -> Result<Campaign> {
    let values = CampaignValues::of(k);
    let mut params = values.params(k).to_vec();
    params.extend([&k.advertiser_id as &(dyn ToSql + Sync), &k.created_at_ms]);
    let row = c
        .query_one(
            "INSERT INTO campaigns (name, status, cpm_bid_micros, total_budget_micros, daily_budget_micros,
             start_at_ms, end_at_ms, pacing, target_devices, target_placements, cap_impressions, cap_per_hours,
             advertiser_id, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
            &params,
        )
        .await
        .map_err(write_err)?;
    Ok(Campaign { id: row.try_get(0)?, ..k.clone() })
}

pub(super) async fn create_campaign(c: &Client, k: &Campaign) -> Result<Campaign> {
    insert_campaign(c, k).await
}

pub(super) async fn create_campaign_with_ads(c: &mut Client, k: &Campaign, ads: &[Ad]) -> Result<Campaign> {
    let tx = c.transaction().await?;
    let campaign = insert_campaign(&tx, k).await?;
    for ad in ads {
        insert_ad(&tx, &Ad { campaign_id: campaign.id, ..ad.clone() }).await?;
    }
    tx.commit().await?;
    Ok(campaign)
}

pub(super) async fn update_campaign(c: &Client, k: &Campaign) -> Result<()> {
    let values = CampaignValues::of(k);
    let mut params = values.params(k).to_vec();
    params.push(&k.id);
    let changed = c
        .execute(
            "UPDATE campaigns SET name = $1, status = $2, cpm_bid_micros = $3, total_budget_micros = $4,
             daily_budget_micros = $5, start_at_ms = $6, end_at_ms = $7, pacing = $8, target_devices = $9,
             target_placements = $10, cap_impressions = $11, cap_per_hours = $12 WHERE id = $13",
            &params,
        )
        .await
        .map_err(write_err)?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("campaign {}", k.id)));
    }
    Ok(())
}

pub(super) async fn campaign(c: &Client, id: i64) -> Result<Option<Campaign>> {
    let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1");
    c.query_opt(&sql, &[&id]).await?.as_ref().map(campaign_from).transpose()
}

pub(super) async fn campaigns(c: &Client, advertiser_id: Option<i64>) -> Result<Vec<Campaign>> {
    let sql =
        format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE $1::BIGINT IS NULL OR advertiser_id = $1 ORDER BY id");
    c.query(&sql, &[&advertiser_id]).await?.iter().map(campaign_from).collect()
}

/// Inserts the ad's row and lets [`write_ad`] fill it in, as SQLite's store does, so an
/// ad created approved (a clone) gets its approved version recorded too.
async fn insert_ad(tx: &impl GenericClient, ad: &Ad) -> Result<Ad> {
    let row = tx
        .query_one(
            "INSERT INTO ads (campaign_id, advertiser_id, format, headline, body, image_url, cta, target_url,
             status, rejection_reason, created_at_ms, version) VALUES ($1, $2, $3, '', '', NULL, '', '', $4, NULL, $5, $6)
             RETURNING id",
            &[
                &ad.campaign_id,
                &ad.advertiser_id,
                &ad.content.format.as_str(),
                &ad.status.as_str(),
                &ad.created_at_ms,
                &i64::from(ad.version),
            ],
        )
        .await
        .map_err(write_err)?;
    let ad = Ad { id: row.try_get(0)?, ..ad.clone() };
    write_ad(tx, &ad, None, ad.created_at_ms).await?;
    Ok(ad)
}

/// Writes an ad's row and its revision, and records the target URL of the version that
/// serves when it is approved: every approved version stays resolvable for clicks. An
/// existing ad is written only if it still stands where `read` says (see
/// [`Store::update_ad`]). `FOR UPDATE` holds the ad's row to the end of the transaction,
/// and the revision is read after the lock is taken, so under READ COMMITTED it is the
/// latest committed one.
async fn write_ad(tx: &impl GenericClient, ad: &Ad, read: Option<AdStamp>, now: Millis) -> Result<()> {
    if let Some(read) = read {
        let locked = tx.query_opt("SELECT version, status FROM ads WHERE id = $1 FOR UPDATE", &[&ad.id]).await?;
        let stored = match locked {
            None => None,
            Some(row) => {
                let revision =
                    tx.query_opt("SELECT version, status FROM ad_revisions WHERE ad_id = $1", &[&ad.id]).await?;
                Some((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    revision.as_ref().map(|r| r.try_get(0)).transpose()?,
                    revision.as_ref().map(|r| r.try_get(1)).transpose()?,
                ))
            }
        };
        crate::check_ad_stamp(ad.id, stored, read)?;
    }
    let changed = tx
        .execute(
            "UPDATE ads SET format = $2, headline = $3, body = $4, image_url = $5, cta = $6, target_url = $7,
             status = $8, rejection_reason = $9, version = $10, video_url = $11 WHERE id = $1",
            &[
                &ad.id,
                &ad.content.format.as_str(),
                &ad.content.headline,
                &ad.content.body,
                &ad.content.image_url,
                &ad.content.cta,
                &ad.content.target_url,
                &ad.status.as_str(),
                &ad.rejection_reason,
                &i64::from(ad.version),
                &ad.content.video_url,
            ],
        )
        .await
        .map_err(write_err)?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("ad {}", ad.id)));
    }
    match &ad.revision {
        None => {
            tx.execute("DELETE FROM ad_revisions WHERE ad_id = $1", &[&ad.id]).await?;
        }
        Some(r) => {
            tx.execute(
                "INSERT INTO ad_revisions (ad_id, version, format, headline, body, image_url, cta,
                 target_url, status, rejection_reason, created_at_ms, video_url)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (ad_id) DO UPDATE SET version = excluded.version, format = excluded.format,
                 headline = excluded.headline, body = excluded.body, image_url = excluded.image_url,
                 cta = excluded.cta, target_url = excluded.target_url, status = excluded.status,
                 rejection_reason = excluded.rejection_reason, created_at_ms = excluded.created_at_ms,
                 video_url = excluded.video_url",
                &[
                    &ad.id,
                    &i64::from(r.version),
                    &r.content.format.as_str(),
                    &r.content.headline,
                    &r.content.body,
                    &r.content.image_url,
                    &r.content.cta,
                    &r.content.target_url,
                    &r.status.as_str(),
                    &r.rejection_reason,
                    &r.created_at_ms,
                    &r.content.video_url,
                ],
            )
            .await
            .map_err(write_err)?;
        }
    }
    if ad.status == AdStatus::Approved {
        tx.execute(
            "INSERT INTO ad_versions (ad_id, version, target_url, approved_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (ad_id, version) DO NOTHING",
            &[&ad.id, &i64::from(ad.version), &ad.content.target_url, &now],
        )
        .await
        .map_err(write_err)?;
    }
    Ok(())
}

pub(super) async fn create_ad(c: &mut Client, ad: &Ad) -> Result<Ad> {
    let tx = c.transaction().await?;
    let ad = insert_ad(&tx, ad).await?;
    tx.commit().await?;
    Ok(ad)
}

pub(super) async fn update_ad(c: &mut Client, ad: &Ad, read: AdStamp, now: Millis) -> Result<()> {
    let tx = c.transaction().await?;
    write_ad(&tx, ad, Some(read), now).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn review_ad(c: &mut Client, ad: &Ad, read: AdStamp, now: Millis) -> Result<()> {
    let tx = c.transaction().await?;
    write_ad(&tx, ad, Some(read), now).await?;
    if ad.status == AdStatus::Approved {
        // A campaign waiting for review goes live with its first approved ad.
        tx.execute(
            "UPDATE campaigns SET status = $2 WHERE id = $1 AND status = $3",
            &[&ad.campaign_id, &CampaignStatus::Active.as_str(), &CampaignStatus::PendingReview.as_str()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn approved_versions(c: &Client) -> Result<Vec<ApprovedVersion>> {
    let rows = c.query("SELECT ad_id, version, target_url FROM ad_versions ORDER BY ad_id, version", &[]).await?;
    rows.iter()
        .map(|r| {
            Ok(ApprovedVersion {
                ad_id: r.try_get(0)?,
                version: narrow("ad_versions.version", r.try_get(1)?)?,
                target_url: r.try_get(2)?,
            })
        })
        .collect()
}

pub(super) async fn ad(c: &Client, id: i64) -> Result<Option<Ad>> {
    let sql = format!("{AD_SELECT} WHERE ads.id = $1");
    c.query_opt(&sql, &[&id]).await?.as_ref().map(ad_from).transpose()
}

pub(super) async fn ads(c: &Client, campaign_id: Option<i64>) -> Result<Vec<Ad>> {
    let sql = format!("{AD_SELECT} WHERE $1::BIGINT IS NULL OR ads.campaign_id = $1 ORDER BY ads.id");
    c.query(&sql, &[&campaign_id]).await?.iter().map(ad_from).collect()
}
