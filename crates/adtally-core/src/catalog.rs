//! The things advertisers and operators manage: advertisers, placements, campaigns and
//! their ads, with the states they move through.

use crate::clock::Millis;
use crate::event::Device;

/// What a conversion pixel may claim at most, unless the operator sets otherwise: the
/// pixel is anonymous, so its value is capped (1 000.00 by default).
pub const DEFAULT_MAX_CONVERSION_VALUE_MICROS: i64 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertiser {
    pub id: i64,
    pub name: String,
    pub email: String,
    /// IANA zone name; reports, daily budgets and pacing follow it.
    pub timezone: String,
    /// The most an anonymous conversion pixel's value counts for; larger values are
    /// capped to it. Authenticated postbacks are not capped.
    pub max_conversion_value_micros: i64,
    pub created_at_ms: Millis,
}

impl Advertiser {
    /// A new advertiser (its `id` is the store's to give) with the default pixel cap.
    pub fn new(name: &str, email: &str, timezone: &str, created_at_ms: Millis) -> Self {
        Advertiser {
            id: 0,
            name: name.into(),
            email: email.into(),
            timezone: timezone.into(),
            max_conversion_value_micros: DEFAULT_MAX_CONVERSION_VALUE_MICROS,
            created_at_ms,
        }
    }
}

/// Ad formats a placement can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Compact,
    Sidebar,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compact => "compact",
            Self::Sidebar => "sidebar",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "compact" => Some(Self::Compact),
            "sidebar" => Some(Self::Sidebar),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Internal id, used in tokens and events.
    pub id: i64,
    /// The slug publishers use (`sidebar-main`).
    pub slug: String,
    pub name: String,
    pub format: Format,
    pub floor_cpm_micros: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CampaignStatus {
    Draft,
    PendingReview,
    Active,
    Paused,
    Archived,
    Completed,
}

impl CampaignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::PendingReview => "pending_review",
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Archived => "archived",
            Self::Completed => "completed",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Draft, Self::PendingReview, Self::Active, Self::Paused, Self::Archived, Self::Completed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pacing {
    Even,
    Asap,
}

impl Pacing {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Even => "even",
            Self::Asap => "asap",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "even" => Some(Self::Even),
            "asap" => Some(Self::Asap),
            _ => None,
        }
    }
}

/// Who may see a campaign's ads; empty lists mean everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targeting {
    pub devices: Vec<Device>,
    /// Placement slugs.
    pub placements: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    pub impressions: u32,
    pub per_hours: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    pub id: i64,
    pub advertiser_id: i64,
    pub name: String,
    pub status: CampaignStatus,
    pub cpm_bid_micros: i64,
    pub total_budget_micros: i64,
    pub daily_budget_micros: Option<i64>,
    pub start_at_ms: Option<Millis>,
    pub end_at_ms: Option<Millis>,
    pub pacing: Pacing,
    pub targeting: Targeting,
    pub frequency_cap: Option<FrequencyCap>,
    pub created_at_ms: Millis,
}

impl Campaign {
    /// A new draft with the defaults: even pacing, no daily budget, no dates, no
    /// targeting, no frequency cap.
    pub fn draft(
        advertiser_id: i64,
        name: &str,
        cpm_bid_micros: i64,
        total_budget_micros: i64,
        created_at_ms: Millis,
    ) -> Self {
        Campaign {
            id: 0,
            advertiser_id,
            name: name.into(),
            status: CampaignStatus::Draft,
            cpm_bid_micros,
            total_budget_micros,
            daily_budget_micros: None,
            start_at_ms: None,
            end_at_ms: None,
            pacing: Pacing::Even,
            targeting: Targeting::default(),
            frequency_cap: None,
            created_at_ms,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdStatus {
    PendingReview,
    Approved,
    Rejected,
}

impl AdStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingReview => "pending_review",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        [Self::PendingReview, Self::Approved, Self::Rejected].into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ad {
    pub id: i64,
    pub campaign_id: i64,
    pub advertiser_id: i64,
    pub format: Format,
    pub headline: String,
    pub body: String,
    pub image_url: Option<String>,
    pub cta: String,
    pub target_url: String,
    pub status: AdStatus,
    pub rejection_reason: Option<String>,
    pub created_at_ms: Millis,
}

/// Kinds of money that enter an advertiser's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreditKind {
    Topup,
    Bonus,
    Promo,
}

impl CreditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topup => "topup",
            Self::Bonus => "bonus",
            Self::Promo => "promo",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "topup" => Some(Self::Topup),
            "bonus" => Some(Self::Bonus),
            "promo" => Some(Self::Promo),
            _ => None,
        }
    }
}

/// One line of an advertiser's ledger: a credit, or the spend of one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: Option<i64>,
    pub at_ms: Millis,
    /// `topup`, `bonus`, `promo` or `spend`.
    pub kind: String,
    /// Positive for credits, negative for spend.
    pub amount_micros: i64,
    pub note: Option<String>,
}

/// Something an advertiser does to a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignAction {
    Submit,
    Pause,
    Resume,
    Archive,
    Restore,
}

impl CampaignAction {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "submit" => Self::Submit,
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            "archive" => Self::Archive,
            "restore" => Self::Restore,
            _ => return None,
        })
    }
}

impl CampaignStatus {
    /// The status after `action`, or `None` when the lifecycle does not allow it.
    /// `draft → pending_review → active ⇄ paused`; archive from anything but
    /// `pending_review`; restore an archived campaign to `paused`. Activation on
    /// approval of an ad is [`CampaignStatus::on_ad_approved`].
    pub fn after(self, action: CampaignAction) -> Option<CampaignStatus> {
        use CampaignAction as A;
        use CampaignStatus as S;
        match (self, action) {
            (S::Draft, A::Submit) => Some(S::PendingReview),
            (S::Active, A::Pause) => Some(S::Paused),
            (S::Paused, A::Resume) => Some(S::Active),
            (S::PendingReview | S::Archived, A::Archive) => None,
            (_, A::Archive) => Some(S::Archived),
            (S::Archived, A::Restore) => Some(S::Paused),
            _ => None,
        }
    }

    /// A campaign waiting for review goes live when one of its ads is approved.
    pub fn on_ad_approved(self) -> CampaignStatus {
        match self {
            Self::PendingReview => Self::Active,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CampaignAction as A;
    use CampaignStatus as S;

    #[test]
    fn lifecycle() {
        let check = |from: S, action: A, to: Option<S>| assert_eq!(from.after(action), to, "{from:?} {action:?}");
        check(S::Draft, A::Submit, Some(S::PendingReview));
        check(S::PendingReview, A::Submit, None);
        check(S::Active, A::Pause, Some(S::Paused));
        check(S::Paused, A::Resume, Some(S::Active));
        check(S::Draft, A::Resume, None);
        check(S::PendingReview, A::Archive, None);
        check(S::Completed, A::Archive, Some(S::Archived));
        check(S::Archived, A::Restore, Some(S::Paused));
        check(S::Active, A::Restore, None);
        assert_eq!(S::PendingReview.on_ad_approved(), S::Active);
        assert_eq!(S::Paused.on_ad_approved(), S::Paused);
    }
}
