//! Events are immutable facts: something happened to an ad at a time, and the
//! counting rules gave it a verdict. Invalid events are kept (for the IVT report) but
//! are never billed and never part of the default metrics.

use crate::clock::Millis;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Impression = 1,
    Viewable = 2,
    Click = 3,
    Conversion = 4,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [Self::Impression, Self::Viewable, Self::Click, Self::Conversion];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Impression => "impression",
            Self::Viewable => "viewable",
            Self::Click => "click",
            Self::Conversion => "conversion",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
    pub fn code(self) -> u8 {
        self as u8
    }
    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() as i64 == code)
    }
}

/// The counting rules' judgement of one event. Order of the variants is the order in
/// which the rules are applied (see [`crate::counting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Valid = 0,
    /// Empty, crawler, spider, headless or HTTP-library user agent (GIVT).
    Bot = 1,
    /// A browser prefetch or link preview, not a person (GIVT).
    Prefetch = 2,
    /// The client address is in a published cloud or hosting range (GIVT).
    Datacenter = 3,
    /// The token is older than its time to live.
    Expired = 4,
    /// A click or viewable beacon whose decision has no counted impression.
    NoImpression = 5,
    /// A repeat of something already counted (same decision, or same user and ad
    /// within the click dedup window, or an order id seen before).
    Duplicate = 6,
    /// Too many counted clicks from one user or one address in a rolling hour (SIVT).
    ExcessiveActivity = 7,
    /// A viewable beacon sooner after its impression than a tag could have measured it.
    TooEarly = 8,
}

impl Verdict {
    pub const ALL: [Verdict; 9] = [
        Self::Valid,
        Self::Bot,
        Self::Prefetch,
        Self::Datacenter,
        Self::Expired,
        Self::NoImpression,
        Self::Duplicate,
        Self::ExcessiveActivity,
        Self::TooEarly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Bot => "bot",
            Self::Prefetch => "prefetch",
            Self::Datacenter => "datacenter",
            Self::Expired => "expired",
            Self::NoImpression => "no_impression",
            Self::Duplicate => "duplicate",
            Self::ExcessiveActivity => "excessive_activity",
            Self::TooEarly => "too_early",
        }
    }
    pub fn is_valid(self) -> bool {
        self == Self::Valid
    }
    pub fn code(self) -> u8 {
        self as u8
    }
    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.code() as i64 == code)
    }
}

/// Device class of the visitor, from the user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Device {
    #[default]
    Desktop = 0,
    Mobile = 1,
    Tablet = 2,
}

impl Device {
    pub const ALL: [Device; 3] = [Self::Desktop, Self::Mobile, Self::Tablet];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Desktop => "desktop",
            Self::Mobile => "mobile",
            Self::Tablet => "tablet",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == text)
    }
    pub fn code(self) -> u8 {
        self as u8
    }
    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.code() as i64 == code)
    }
}

/// An ISO 3166-1 alpha-2 country code, `ZZ` when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country(pub [u8; 2]);

impl Country {
    pub const UNKNOWN: Country = Country(*b"ZZ");

    /// Accepts two ASCII letters in any case; anything else is unknown.
    pub fn parse(text: &str) -> Country {
        match text.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
            }
            _ => Country::UNKNOWN,
        }
    }
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("ZZ")
    }
}

impl Default for Country {
    fn default() -> Self {
        Self::UNKNOWN
    }
}

/// One event as it is stored. Ids are the store's integer ids; `user_key` and
/// `ip_key` are keyed hashes, never raw identifiers or addresses.
///
/// Every event belongs to exactly one advertiser. Impressions, viewables and clicks
/// always name their decision, campaign, ad and placement; a conversion names none of
/// them until attribution credits it to a touch, and then no decision. `None` is the
/// only way to say "no such thing": no id is ever a stand-in for absence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at_ms: Millis,
    pub kind: EventKind,
    pub verdict: Verdict,
    /// The decision this event belongs to (never for conversions).
    pub decision_id: Option<u64>,
    pub advertiser_id: i64,
    pub campaign_id: Option<i64>,
    pub ad_id: Option<i64>,
    pub placement_id: Option<i64>,
    pub user_key: u64,
    /// `None` when the address is unknown (a server postback, an import without `ip`).
    pub ip_key: Option<u64>,
    pub device: Device,
    pub country: Country,
    /// What this event was charged (valid impressions only).
    pub cost_micros: i64,
    /// Conversion value.
    pub value_micros: i64,
}
