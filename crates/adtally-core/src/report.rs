//! What a report asks for: a range of days in the advertiser's time zone, a time
//! granularity and a set of dimensions to group by. Parsing and validation live here so
//! that every store answers the same question.
//!
//! Events are rolled up in UTC quarter-hour buckets (see [`BUCKET_MS`]): every time zone
//! in use is a whole number of quarter hours from UTC, so local days and hours are exact
//! unions of buckets, in Kathmandu (+05:45) as in London.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::clock::{Millis, MINUTE};

/// Width of a rollup bucket.
pub const BUCKET_MS: Millis = 15 * MINUTE;

/// Start of the bucket that holds `at_ms`.
pub fn bucket_of(at_ms: Millis) -> Millis {
    at_ms.div_euclid(BUCKET_MS) * BUCKET_MS
}

/// Longest span a `from`/`to` report may cover.
pub const MAX_RANGE_DAYS: i32 = 3_700;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Total,
    Day,
    Hour,
}

/// A dimension a report can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    Campaign,
    Ad,
    Placement,
    Device,
    Country,
}

impl Dimension {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "campaign" => Self::Campaign,
            "ad" => Self::Ad,
            "placement" => Self::Placement,
            "device" => Self::Device,
            "country" => Self::Country,
            _ => return None,
        })
    }
    /// The key a report row carries for this dimension.
    pub fn column(self) -> &'static str {
        match self {
            Self::Campaign => "campaign_id",
            Self::Ad => "ad_id",
            Self::Placement => "placement",
            Self::Device => "device",
            Self::Country => "country",
        }
    }
}

/// A report request as it arrives, every field still text.
#[derive(Debug, Clone, Default)]
pub struct RawReportRequest {
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub granularity: Option<String>,
    pub group_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("range must be one of today, yesterday, last_7_days, last_30_days, lifetime; got {0:?}")]
    UnknownRange(String),
    #[error("{field} must be a date like 2026-11-25; got {value:?}")]
    BadDate { field: &'static str, value: String },
    #[error("give both from and to, or neither")]
    HalfRange,
    #[error("give either range or from/to, not both")]
    RangeAndDates,
    #[error("from ({from}) is after to ({to})")]
    FromAfterTo { from: Date, to: Date },
    #[error("a report covers at most {MAX_RANGE_DAYS} days")]
    RangeTooLong,
    #[error("granularity must be total, day or hour; got {0:?}")]
    UnknownGranularity(String),
    #[error("cannot group by {0:?}; use any of campaign, ad, placement, device, country")]
    UnknownDimension(String),
}

/// A validated report request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSpec {
    /// Inclusive local dates; `None` is the whole lifetime.
    pub dates: Option<(Date, Date)>,
    pub granularity: Granularity,
    /// Distinct dimensions in the order asked.
    pub group_by: Vec<Dimension>,
}

impl ReportSpec {
    /// Validates a request; `today` is the current date in the report's time zone.
    pub fn parse(raw: &RawReportRequest, today: Date) -> Result<Self, ReportError> {
        let date = |field: &'static str, value: &str| {
            value
                .parse::<Date>()
                .ok()
                .filter(|d| d.year() >= 1970 && d.year() <= 2200)
                .ok_or_else(|| ReportError::BadDate { field, value: value.to_owned() })
        };
        let days_before = |n: i32| today.checked_sub(jiff::Span::new().days(n)).unwrap_or(today);
        let dates = match (&raw.range, &raw.from, &raw.to) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => return Err(ReportError::RangeAndDates),
            (None, Some(from), Some(to)) => {
                let (from, to) = (date("from", from)?, date("to", to)?);
                if from > to {
                    return Err(ReportError::FromAfterTo { from, to });
                }
                if (to - from).get_days() >= MAX_RANGE_DAYS {
                    return Err(ReportError::RangeTooLong);
                }
                Some((from, to))
            }
            (None, Some(_), None) | (None, None, Some(_)) => return Err(ReportError::HalfRange),
            (Some(range), None, None) => match range.as_str() {
                "today" => Some((today, today)),
                "yesterday" => Some((days_before(1), days_before(1))),
                "last_7_days" => Some((days_before(6), today)),
                "last_30_days" => Some((days_before(29), today)),
                "lifetime" => None,
                other => return Err(ReportError::UnknownRange(other.to_owned())),
            },
            (None, None, None) => Some((days_before(29), today)),
        };
        let granularity = match raw.granularity.as_deref().unwrap_or("total") {
            "total" => Granularity::Total,
            "day" => Granularity::Day,
            "hour" => Granularity::Hour,
            other => return Err(ReportError::UnknownGranularity(other.to_owned())),
        };
        let mut group_by = Vec::new();
        for name in raw.group_by.as_deref().unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let dim =
                Dimension::parse(name).ok_or_else(|| ReportError::UnknownDimension(name.chars().take(40).collect()))?;
            if !group_by.contains(&dim) {
                group_by.push(dim);
            }
        }
        Ok(Self { dates, granularity, group_by })
    }

    /// The UTC milliseconds `[start, end)` the dates cover in `tz`.
    pub fn utc_range(&self, tz: &TimeZone) -> (Millis, Millis) {
        match self.dates {
            None => (Millis::MIN / 2, Millis::MAX / 2),
            Some((from, to)) => {
                (start_of_day(from, tz), to.tomorrow().map_or(Millis::MAX / 2, |d| start_of_day(d, tz)))
            }
        }
    }
}

/// First instant of a local date, in UTC milliseconds.
pub fn start_of_day(date: Date, tz: &TimeZone) -> Millis {
    date.to_zoned_datetime(tz.clone()).map_or(0, |z| z.timestamp().as_millisecond())
}

/// The local date (`2026-11-25`) or hour (`2026-11-25T13:00:00+01:00`) that an instant
/// falls in; what report rows carry as `date` or `hour`.
pub fn time_label(at_ms: Millis, granularity: Granularity, tz: &TimeZone) -> String {
    let Ok(ts) = Timestamp::from_millisecond(at_ms) else {
        return String::new();
    };
    let zoned = ts.to_zoned_datetime(tz.clone());
    match granularity {
        Granularity::Total => String::new(),
        Granularity::Day => zoned.date().to_string(),
        Granularity::Hour => {
            let start = zoned.with().minute(0).second(0).subsec_nanosecond(0).build().unwrap_or(zoned);
            start.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
        }
    }
}

/// Start of the report period (local day or local hour) that holds `at_ms`.
pub fn period_start(at_ms: Millis, granularity: Granularity, tz: &TimeZone) -> Millis {
    let Ok(ts) = Timestamp::from_millisecond(at_ms) else { return at_ms };
    let zoned = ts.to_zoned_datetime(tz.clone());
    match granularity {
        Granularity::Total => 0,
        Granularity::Day => start_of_day(zoned.date(), tz),
        Granularity::Hour => {
            let into_hour =
                i64::from(zoned.minute()) * MINUTE + i64::from(zoned.second()) * 1000 + i64::from(zoned.millisecond());
            at_ms - into_hour
        }
    }
}

/// Today's date in `tz`.
pub fn local_date(now_ms: Millis, tz: &TimeZone) -> Date {
    Timestamp::from_millisecond(now_ms).unwrap_or(Timestamp::UNIX_EPOCH).to_zoned_datetime(tz.clone()).date()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn raw(range: Option<&str>, from: Option<&str>, to: Option<&str>) -> RawReportRequest {
        RawReportRequest {
            range: range.map(Into::into),
            from: from.map(Into::into),
            to: to.map(Into::into),
            ..Default::default()
        }
    }

    fn dates(r: RawReportRequest) -> Result<Option<(Date, Date)>, ReportError> {
        ReportSpec::parse(&r, date(2026, 11, 25)).map(|s| s.dates)
    }

    #[test]
    fn named_ranges() {
        let d = |m, day| date(2026, m, day);
        assert_eq!(dates(raw(Some("today"), None, None)), Ok(Some((d(11, 25), d(11, 25)))));
        assert_eq!(dates(raw(Some("yesterday"), None, None)), Ok(Some((d(11, 24), d(11, 24)))));
        assert_eq!(dates(raw(Some("last_7_days"), None, None)), Ok(Some((d(11, 19), d(11, 25)))));
        assert_eq!(dates(raw(Some("last_30_days"), None, None)), Ok(Some((d(10, 27), d(11, 25)))));
        assert_eq!(dates(raw(Some("lifetime"), None, None)), Ok(None));
        assert_eq!(dates(raw(None, Some("2026-01-01"), Some("2026-01-31"))), Ok(Some((d(1, 1), d(1, 31)))));
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(matches!(dates(raw(Some("forever"), None, None)), Err(ReportError::UnknownRange(_))));
        assert!(matches!(dates(raw(None, Some("2026-13-01"), Some("2026-12-01"))), Err(ReportError::BadDate { .. })));
        assert!(matches!(
            dates(raw(None, Some("2026-02-01"), Some("2026-01-01"))),
            Err(ReportError::FromAfterTo { .. })
        ));
        assert!(matches!(dates(raw(None, Some("2026-02-01"), None)), Err(ReportError::HalfRange)));
        assert!(matches!(dates(raw(Some("today"), Some("2026-02-01"), None)), Err(ReportError::RangeAndDates)));
        assert!(matches!(dates(raw(None, Some("1990-01-01"), Some("2026-01-01"))), Err(ReportError::RangeTooLong)));
        let bad_dim = RawReportRequest { group_by: Some("campaign,planet".into()), ..Default::default() };
        assert!(matches!(ReportSpec::parse(&bad_dim, date(2026, 1, 1)), Err(ReportError::UnknownDimension(_))));
    }

    #[test]
    fn local_days_in_a_quarter_hour_zone_are_whole_buckets() {
        let tz = TimeZone::get("Asia/Kathmandu").expect("bundled tzdb");
        let spec =
            ReportSpec::parse(&raw(None, Some("2026-11-25"), Some("2026-11-25")), date(2026, 11, 25)).expect("valid");
        let (start, end) = spec.utc_range(&tz);
        assert_eq!(start % BUCKET_MS, 0);
        assert_eq!(end - start, 24 * 60 * MINUTE);
        assert_eq!(time_label(start, Granularity::Day, &tz), "2026-11-25");
        assert_eq!(time_label(start - 1, Granularity::Day, &tz), "2026-11-24");
        assert_eq!(time_label(start + 61 * MINUTE, Granularity::Hour, &tz), "2026-11-25T01:00:00+05:45");
    }

    #[test]
    fn a_dst_day_has_23_hours() {
        let tz = TimeZone::get("Europe/Berlin").expect("bundled tzdb");
        let spec =
            ReportSpec::parse(&raw(None, Some("2026-03-29"), Some("2026-03-29")), date(2026, 3, 29)).expect("valid");
        let (start, end) = spec.utc_range(&tz);
        assert_eq!(end - start, 23 * 60 * MINUTE);
    }
}
