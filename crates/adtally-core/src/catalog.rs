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
    /// How far back its conversions look for clicks and view-through impressions, and
    /// its `time_decay` half-life.
    pub attribution: crate::attribution::Windows,
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
            attribution: crate::attribution::Windows::default(),
            created_at_ms,
        }
    }
}

/// Ad formats a placement can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Compact,
    Sidebar,
    /// A muted, inline, looping video (`video_url`, https MP4 or WebM).
    Video,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compact => "compact",
            Self::Sidebar => "sidebar",
            Self::Video => "video",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "compact" => Some(Self::Compact),
            "sidebar" => Some(Self::Sidebar),
            "video" => Some(Self::Video),
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

/// An ad (creative). Its `content` is what serves once approved; `version` numbers that
/// content, and a decision's token names the version it served, so a
/// click goes to the target URL that was reviewed and shown, whatever happened since.
///
/// Editing an approved ad does not touch what serves: the edit becomes the ad's
/// `revision`, reviewed on its own, and replaces the content (with its new version)
/// only when approved. Editing an ad that is not approved edits it in place, under a new
/// version, and sends it back to review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ad {
    pub id: i64,
    pub campaign_id: i64,
    pub advertiser_id: i64,
    /// What serves once approved.
    pub content: AdContent,
    pub status: AdStatus,
    pub rejection_reason: Option<String>,
    pub created_at_ms: Millis,
    pub version: u32,
    /// An edit of an approved ad, waiting for review or rejected.
    pub revision: Option<Box<AdRevision>>,
}

/// What an advertiser writes in an ad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdContent {
    pub format: Format,
    pub headline: String,
    pub body: String,
    pub image_url: Option<String>,
    /// The video of a `video` ad.
    pub video_url: Option<String>,
    pub cta: String,
    pub target_url: String,
}

/// A new version of an approved ad's content, under review or rejected (never approved:
/// approval makes it the ad's content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdRevision {
    pub version: u32,
    pub content: AdContent,
    pub status: AdStatus,
    pub rejection_reason: Option<String>,
    pub created_at_ms: Millis,
}

impl AdContent {
    /// Content with only what every ad needs; no body, image or video, and the default
    /// call to action.
    pub fn new(format: Format, headline: &str, target_url: &str) -> Self {
        AdContent {
            format,
            headline: headline.into(),
            body: String::new(),
            image_url: None,
            video_url: None,
            cta: "Learn more".into(),
            target_url: target_url.into(),
        }
    }
}

impl Ad {
    /// A new ad: version 1 of its content, waiting for review (its `id` is the store's to
    /// give).
    pub fn new(campaign_id: i64, advertiser_id: i64, content: AdContent, created_at_ms: Millis) -> Self {
        Ad {
            id: 0,
            campaign_id,
            advertiser_id,
            content,
            status: AdStatus::PendingReview,
            rejection_reason: None,
            created_at_ms,
            version: 1,
            revision: None,
        }
    }

    /// The content an edit starts from: the pending revision if there is one.
    pub fn latest_content(&self) -> AdContent {
        self.revision.as_ref().map_or_else(|| self.content.clone(), |r| r.content.clone())
    }

    /// Takes edited content. See the type's documentation for what serves meanwhile.
    ///
    /// Every change to the content under review gets a version number of its own, never
    /// used before: a reviewer who names the version they read (see [`Ad::stamp`]) decides
    /// on exactly that content. So an approved ad's edit back to its serving content is a
    /// revision too (approving it changes nothing a visitor sees); dropping the revision
    /// instead would hand its number to the next edit.
    pub fn edit(&mut self, content: AdContent, now: Millis) {
        if self.status == AdStatus::Approved {
            let changed = match &self.revision {
                Some(r) => content != r.content || r.status == AdStatus::Rejected,
                None => content != self.content,
            };
            if changed {
                self.revision = Some(Box::new(AdRevision {
                    version: self.reviewed_version() + 1,
                    content,
                    status: AdStatus::PendingReview,
                    rejection_reason: None,
                    created_at_ms: now,
                }));
            }
        } else if content != self.content || self.status == AdStatus::Rejected {
            self.content = content;
            self.version += 1;
            self.status = AdStatus::PendingReview;
            self.rejection_reason = None;
        }
    }

    /// Approves the pending revision, or else the ad itself. Returns the version that
    /// serves from now on and its target URL, which clicks on it will redirect to.
    pub fn approve(&mut self) -> (u32, String) {
        if let Some(revision) = self.revision.take() {
            self.content = revision.content;
            self.version = revision.version;
        }
        self.status = AdStatus::Approved;
        self.rejection_reason = None;
        (self.version, self.content.target_url.clone())
    }

    /// Rejects the pending revision (the approved content keeps serving), or else the
    /// ad itself (which stops serving).
    pub fn reject(&mut self, reason: String) {
        match &mut self.revision {
            Some(revision) => {
                revision.status = AdStatus::Rejected;
                revision.rejection_reason = Some(reason);
            }
            None => {
                self.status = AdStatus::Rejected;
                self.rejection_reason = Some(reason);
            }
        }
    }

    /// The status a reviewer cares about: the revision's when there is one.
    pub fn review_status(&self) -> AdStatus {
        self.revision.as_ref().map_or(self.status, |r| r.status)
    }

    /// The version a review decides on: the revision's when there is one.
    pub fn reviewed_version(&self) -> u32 {
        self.revision.as_ref().map_or(self.version, |r| r.version)
    }

    /// Where the ad stands, as far as edits and reviews go.
    pub fn stamp(&self) -> AdStamp {
        AdStamp {
            version: self.version,
            status: self.status,
            revision: self.revision.as_ref().map(|r| (r.version, r.status)),
        }
    }
}

/// Where an ad stands: its serving version and status and its revision's. Every edit and
/// every review changes it, so a change computed from a stale read of the ad (an edit
/// racing a takedown, say) is refused by the store instead of undoing the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdStamp {
    pub version: u32,
    pub status: AdStatus,
    pub revision: Option<(u32, AdStatus)>,
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

    fn ad(target_url: &str) -> Ad {
        Ad {
            id: 1,
            campaign_id: 1,
            advertiser_id: 1,
            content: AdContent {
                format: Format::Sidebar,
                headline: "h".into(),
                body: String::new(),
                image_url: None,
                video_url: None,
                cta: "Go".into(),
                target_url: target_url.into(),
            },
            status: AdStatus::PendingReview,
            rejection_reason: None,
            created_at_ms: 0,
            version: 1,
            revision: None,
        }
    }

    fn with_target(a: &Ad, target_url: &str) -> AdContent {
        AdContent { target_url: target_url.into(), ..a.latest_content() }
    }

    #[test]
    fn an_edit_of_an_approved_ad_is_a_revision_until_approved() {
        let mut a = ad("https://shop.example/");
        assert_eq!(a.approve(), (1, "https://shop.example/".into()));
        let edit = with_target(&a, "https://phish.example/");
        a.edit(edit, 10);
        assert_eq!(
            (a.status, a.version, a.content.target_url.as_str()),
            (AdStatus::Approved, 1, "https://shop.example/")
        );
        assert_eq!(a.review_status(), AdStatus::PendingReview);
        a.reject("phishing".into());
        assert_eq!((a.status, a.review_status()), (AdStatus::Approved, AdStatus::Rejected));
        let edit = with_target(&a, "https://shop.example/sale");
        a.edit(edit, 20);
        assert_eq!(a.review_status(), AdStatus::PendingReview);
        // Version 2 was the rejected content; this is other content, so another number.
        assert_eq!(a.approve(), (3, "https://shop.example/sale".into()));
        assert_eq!((a.revision.is_none(), a.status), (true, AdStatus::Approved));
    }

    /// A reviewer names the version they read; no two contents may ever share one, or an
    /// advertiser could swap what sits under a number while the reviewer looks at it.
    #[test]
    fn no_two_contents_under_review_share_a_version() {
        let mut a = ad("https://shop.example/");
        let mut seen: Vec<(u32, AdContent)> = vec![(a.reviewed_version(), a.latest_content())];
        let mut note = |a: &Ad| {
            let (version, content) = (a.reviewed_version(), a.latest_content());
            if let Some((_, before)) = seen.iter().find(|(v, _)| *v == version) {
                assert_eq!(before, &content, "version {version} names two contents");
            }
            seen.push((version, content));
        };
        let targets = ["https://shop.example/", "https://phish.example/", "https://shop.example/sale"];
        // Every sequence of edits to the three targets and reviews, four steps long.
        for script in 0..7u32.pow(4) {
            let mut step = script;
            for _ in 0..4 {
                match step % 7 {
                    0 => {
                        a.approve();
                    }
                    1 => a.reject("no".into()),
                    n => a.edit(with_target(&a, targets[(n as usize - 2) % 3]), 1),
                }
                step /= 7;
                note(&a);
            }
        }
        // Back to the serving content is a revision of its own, not a gap in the numbers.
        let mut a = ad("https://shop.example/");
        a.approve();
        a.edit(with_target(&a, "https://phish.example/"), 1);
        a.edit(with_target(&a, "https://shop.example/"), 2);
        assert_eq!((a.reviewed_version(), a.review_status()), (3, AdStatus::PendingReview));
        a.edit(with_target(&a, "https://shop.example/"), 3);
        assert_eq!(a.reviewed_version(), 3, "the same content again is not a new version");
        assert_eq!(a.approve(), (3, "https://shop.example/".into()));
    }

    #[test]
    fn every_edit_and_review_changes_the_stamp() {
        let mut a = ad("https://shop.example/");
        let mut stamps = vec![a.stamp()];
        a.reject("blurry".into());
        stamps.push(a.stamp());
        a.edit(with_target(&a, "https://shop.example/2"), 1);
        stamps.push(a.stamp());
        a.approve();
        stamps.push(a.stamp());
        a.edit(with_target(&a, "https://shop.example/3"), 2);
        stamps.push(a.stamp());
        a.reject("no".into());
        stamps.push(a.stamp());
        a.edit(with_target(&a, "https://shop.example/3"), 3);
        stamps.push(a.stamp());
        a.reject("taken down".into());
        stamps.push(a.stamp());
        for (i, s) in stamps.iter().enumerate() {
            assert!(!stamps[..i].contains(s), "stamp {i} repeats: {s:?}");
        }
    }

    #[test]
    fn an_edit_of_an_unapproved_ad_is_in_place_under_a_new_version() {
        let mut a = ad("https://shop.example/");
        a.reject("blurry".into());
        let edit = with_target(&a, "https://shop.example/2");
        a.edit(edit, 10);
        assert_eq!((a.status, a.version, a.revision.is_none()), (AdStatus::PendingReview, 2, true));
        // Unchanged content on an approved ad leaves nothing to review.
        a.approve();
        a.edit(a.content.clone(), 20);
        assert_eq!((a.review_status(), a.version), (AdStatus::Approved, 2));
    }

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
