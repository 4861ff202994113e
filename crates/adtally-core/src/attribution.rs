//! Which ad gets the credit for a conversion. The default, used in reports, is the
//! last touch: the user's latest counted click on the advertiser's ads within 30 days,
//! else the latest counted impression within one day (view-through).

use crate::clock::{Millis, DAY};
use crate::fasthash::FastMap;

pub const CLICK_WINDOW_MS: Millis = 30 * DAY;
pub const VIEW_WINDOW_MS: Millis = DAY;

/// A counted click or impression that a conversion can be credited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    pub at_ms: Millis,
    pub campaign_id: i64,
    pub ad_id: i64,
    pub placement_id: i64,
}

/// The latest click and impression per (user, advertiser), bounded in size.
#[derive(Debug, Default)]
pub struct LastTouches {
    clicks: FastMap<(u64, i64), Touch>,
    impressions: FastMap<(u64, i64), Touch>,
    cap: usize,
}

impl LastTouches {
    pub fn new(cap: usize) -> Self {
        Self { cap: cap.max(1), ..Default::default() }
    }

    pub fn record_click(&mut self, user_key: u64, advertiser_id: i64, touch: Touch) {
        Self::record(&mut self.clicks, self.cap, CLICK_WINDOW_MS, (user_key, advertiser_id), touch);
    }

    pub fn record_impression(&mut self, user_key: u64, advertiser_id: i64, touch: Touch) {
        Self::record(&mut self.impressions, self.cap, VIEW_WINDOW_MS, (user_key, advertiser_id), touch);
    }

    fn record(map: &mut FastMap<(u64, i64), Touch>, cap: usize, window: Millis, key: (u64, i64), touch: Touch) {
        if map.get(&key).is_some_and(|t| t.at_ms > touch.at_ms) {
            return;
        }
        if map.len() >= cap && !map.contains_key(&key) {
            // Full: drop what is too old to be credited any more, else refuse the newcomer
            // (the store still has it; only last-touch credit is lost).
            map.retain(|_, t| touch.at_ms - t.at_ms <= window);
            if map.len() >= cap {
                return;
            }
        }
        map.insert(key, touch);
    }

    /// The touch a conversion at `at_ms` is credited to, if any.
    pub fn credit(&self, user_key: u64, advertiser_id: i64, at_ms: Millis) -> Option<Touch> {
        let key = (user_key, advertiser_id);
        let within = |t: &&Touch, window: Millis| t.at_ms <= at_ms && at_ms - t.at_ms <= window;
        self.clicks
            .get(&key)
            .filter(|t| within(t, CLICK_WINDOW_MS))
            .or_else(|| self.impressions.get(&key).filter(|t| within(t, VIEW_WINDOW_MS)))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(at_ms: Millis, ad_id: i64) -> Touch {
        Touch { at_ms, campaign_id: 1, ad_id, placement_id: 1 }
    }

    #[test]
    fn clicks_win_over_impressions_within_their_windows() {
        let mut t = LastTouches::new(100);
        t.record_impression(1, 9, touch(0, 1));
        assert_eq!(t.credit(1, 9, DAY).map(|t| t.ad_id), Some(1));
        assert_eq!(t.credit(1, 9, DAY + 1), None);
        t.record_click(1, 9, touch(10, 2));
        t.record_impression(1, 9, touch(20, 3));
        assert_eq!(t.credit(1, 9, 30).map(|t| t.ad_id), Some(2));
        assert_eq!(t.credit(1, 9, 10 + CLICK_WINDOW_MS + 1), None);
        assert_eq!(t.credit(2, 9, 30), None);
        assert_eq!(t.credit(1, 8, 30), None);
    }
}
