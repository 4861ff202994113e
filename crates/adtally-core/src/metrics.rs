//! Advertiser metrics from event counts. Rates are `None` (JSON `null`) whenever their
//! denominator is zero: never 0, never NaN. Money stays in integer micros; only the
//! ratios (percentages, ROAS) are floating point.
//!
//! No sum can overflow: counts add saturating, money adds in `i128` (a sum of any
//! number of `i64` amounts fits), and a figure beyond `i64` is printed saturated rather
//! than failing the report.

use std::collections::BTreeMap;

use crate::event::{EventKind, Verdict};
use crate::sketch::Sketch;

/// Sums over a set of events: the raw material of every report row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub impressions: i64,
    pub viewable_impressions: i64,
    pub clicks: i64,
    pub conversions: i64,
    pub spend_micros: i128,
    pub revenue_micros: i128,
    pub invalid_impressions: i64,
    pub invalid_clicks: i64,
    /// Invalid events per (kind, reason), for the IVT report.
    pub invalid: BTreeMap<(EventKind, Verdict), i64>,
    /// The users of the valid impressions, for reach and frequency.
    pub reach: Sketch,
    /// Their number when it was counted already (a report row that is one stored row
    /// whose count the store keeps); then `reach` holds nothing and this is the reach.
    pub counted_reach: Option<u64>,
}

impl Counts {
    /// Adds `events` events of one kind and verdict, with their summed cost and value.
    pub fn add(&mut self, kind: EventKind, verdict: Verdict, events: i64, cost_micros: i128, value_micros: i128) {
        self.spend_micros = self.spend_micros.saturating_add(cost_micros);
        let count = |n: &mut i64| *n = n.saturating_add(events);
        if verdict.is_valid() {
            match kind {
                EventKind::Impression => count(&mut self.impressions),
                EventKind::Viewable => count(&mut self.viewable_impressions),
                EventKind::Click => count(&mut self.clicks),
                EventKind::Conversion => {
                    count(&mut self.conversions);
                    self.revenue_micros = self.revenue_micros.saturating_add(value_micros);
                }
            }
        } else {
            match kind {
                EventKind::Impression => count(&mut self.invalid_impressions),
                EventKind::Click => count(&mut self.invalid_clicks),
                EventKind::Viewable | EventKind::Conversion => {}
            }
            count(self.invalid.entry((kind, verdict)).or_default());
        }
    }

    pub fn metrics(&self) -> Metrics {
        let percent = |num: i64, den: i64| (den != 0).then(|| num as f64 * 100.0 / den as f64);
        let per = |num: i128, den: i64| (den != 0).then(|| saturate(num / i128::from(den)));
        let users = self.counted_reach.unwrap_or_else(|| self.reach.estimate());
        let reach = i64::try_from(users).unwrap_or(i64::MAX);
        Metrics {
            impressions: self.impressions,
            viewable_impressions: self.viewable_impressions,
            clicks: self.clicks,
            conversions: self.conversions,
            ctr: percent(self.clicks, self.impressions),
            viewability_rate: percent(self.viewable_impressions, self.impressions),
            spend_micros: saturate(self.spend_micros),
            cpm_micros: per(self.spend_micros.saturating_mul(1000), self.impressions),
            cpc_micros: per(self.spend_micros, self.clicks),
            conversion_rate: percent(self.conversions, self.clicks),
            cpa_micros: per(self.spend_micros, self.conversions),
            revenue_micros: saturate(self.revenue_micros),
            roas: (self.spend_micros != 0).then(|| self.revenue_micros as f64 / self.spend_micros as f64),
            invalid_impressions: self.invalid_impressions,
            invalid_clicks: self.invalid_clicks,
            reach,
            frequency: (reach != 0).then(|| self.impressions as f64 / reach as f64),
        }
    }
}

/// An amount as `i64`, saturating at the ends of its range.
pub fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// Every metric a report gives, in the order the API and CSV list them.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub impressions: i64,
    pub viewable_impressions: i64,
    pub clicks: i64,
    pub conversions: i64,
    pub ctr: Option<f64>,
    pub viewability_rate: Option<f64>,
    pub spend_micros: i64,
    pub cpm_micros: Option<i64>,
    pub cpc_micros: Option<i64>,
    pub conversion_rate: Option<f64>,
    pub cpa_micros: Option<i64>,
    pub revenue_micros: i64,
    pub roas: Option<f64>,
    pub invalid_impressions: i64,
    pub invalid_clicks: i64,
    /// Distinct users with a valid impression: exact up to
    /// [`crate::sketch::SPARSE_MAX`], a HyperLogLog estimate above.
    pub reach: i64,
    /// Impressions per user reached.
    pub frequency: Option<f64>,
}

/// A metric's value as reports print it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricValue {
    Int(i64),
    Rate(Option<f64>),
    Money(Option<i64>),
}

impl Metrics {
    pub const NAMES: [&'static str; 17] = [
        "impressions",
        "viewable_impressions",
        "clicks",
        "conversions",
        "ctr",
        "viewability_rate",
        "spend_micros",
        "cpm_micros",
        "cpc_micros",
        "conversion_rate",
        "cpa_micros",
        "revenue_micros",
        "roas",
        "invalid_impressions",
        "invalid_clicks",
        "reach",
        "frequency",
    ];

    /// Values in the order of [`Metrics::NAMES`].
    pub fn values(&self) -> [MetricValue; 17] {
        use MetricValue::*;
        [
            Int(self.impressions),
            Int(self.viewable_impressions),
            Int(self.clicks),
            Int(self.conversions),
            Rate(self.ctr),
            Rate(self.viewability_rate),
            Int(self.spend_micros),
            Money(self.cpm_micros),
            Money(self.cpc_micros),
            Rate(self.conversion_rate),
            Money(self.cpa_micros),
            Int(self.revenue_micros),
            Rate(self.roas),
            Int(self.invalid_impressions),
            Int(self.invalid_clicks),
            Int(self.reach),
            Rate(self.frequency),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_null_on_zero_denominators() {
        let m = Counts::default().metrics();
        assert_eq!((m.ctr, m.viewability_rate, m.cpm_micros, m.cpc_micros), (None, None, None, None));
        assert_eq!((m.conversion_rate, m.cpa_micros, m.roas), (None, None, None));
        assert_eq!((m.reach, m.frequency), (0, None));
    }

    #[test]
    fn frequency_is_impressions_per_user_reached() {
        let mut c = Counts::default();
        c.add(EventKind::Impression, Verdict::Valid, 7, 0, 0);
        for user in [1, 2, 1, 3, 2, 1, 1] {
            c.reach.insert(user);
        }
        c.add(EventKind::Impression, Verdict::Valid, 2, 0, 0);
        c.reach.insert(4);
        let m = c.metrics();
        assert_eq!((m.impressions, m.reach, m.frequency), (9, 4, Some(2.25)));
        // A count kept by the store is the reach as it is.
        let counted = Counts { counted_reach: Some(3), ..c }.metrics();
        assert_eq!((counted.reach, counted.frequency), (3, Some(3.0)));
    }

    #[test]
    fn metrics_follow_their_definitions() {
        let mut c = Counts::default();
        c.add(EventKind::Impression, Verdict::Valid, 2000, 5_000_000, 0);
        c.add(EventKind::Viewable, Verdict::Valid, 1500, 0, 0);
        c.add(EventKind::Click, Verdict::Valid, 30, 0, 0);
        c.add(EventKind::Click, Verdict::Duplicate, 4, 0, 0);
        c.add(EventKind::Impression, Verdict::Bot, 7, 0, 0);
        c.add(EventKind::Conversion, Verdict::Valid, 3, 0, 15_000_000);
        let m = c.metrics();
        assert_eq!(m.ctr, Some(1.5));
        assert_eq!(m.viewability_rate, Some(75.0));
        assert_eq!(m.cpm_micros, Some(2_500_000));
        assert_eq!(m.cpc_micros, Some(166_666));
        assert_eq!(m.conversion_rate, Some(10.0));
        assert_eq!(m.cpa_micros, Some(1_666_666));
        assert_eq!(m.roas, Some(3.0));
        assert_eq!((m.invalid_impressions, m.invalid_clicks), (7, 4));
        assert_eq!(c.invalid.get(&(EventKind::Click, Verdict::Duplicate)), Some(&4));
    }

    #[test]
    fn sums_beyond_i64_saturate_instead_of_failing() {
        let mut c = Counts::default();
        for _ in 0..3 {
            c.add(EventKind::Conversion, Verdict::Valid, i64::MAX, 0, i128::from(i64::MAX));
            c.add(EventKind::Impression, Verdict::Valid, i64::MAX, i128::from(i64::MAX), 0);
        }
        let m = c.metrics();
        assert_eq!((m.conversions, m.revenue_micros, m.spend_micros), (i64::MAX, i64::MAX, i64::MAX));
        assert_eq!(m.cpm_micros, Some(3000));
        assert_eq!(c.revenue_micros, 3 * i128::from(i64::MAX));
    }
}
