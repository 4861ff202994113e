//! Which ad gets the credit for a conversion. The default, used in reports, is the
//! last touch: the user's latest counted click on the advertiser's ads within 30 days,
//! else the latest counted impression within one day (view-through).

use std::collections::VecDeque;

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
    clicks: Touches,
    impressions: Touches,
}

/// One kind of touch per (user, advertiser), with the keys in the order they were
/// written so that making room costs O(1) per entry (no scan of the map).
#[derive(Debug, Default)]
struct Touches {
    map: FastMap<(u64, i64), Touch>,
    /// Keys with the touch time they were written with; a key may appear more than
    /// once, and only the entry whose time matches the map's is live.
    order: VecDeque<((u64, i64), Millis)>,
    cap: usize,
    window: Millis,
}

impl Touches {
    fn new(cap: usize, window: Millis) -> Self {
        Self { cap: cap.max(1), window, ..Default::default() }
    }

    fn record(&mut self, key: (u64, i64), touch: Touch) {
        if self.map.get(&key).is_some_and(|t| t.at_ms > touch.at_ms) {
            return;
        }
        // Drop what is too old to be credited any more (relative to the newest touch:
        // imported history has its own clock), oldest written first.
        while let Some(&(old, written)) = self.order.front() {
            let live = self.map.get(&old).is_some_and(|t| t.at_ms == written);
            if live && touch.at_ms - written <= self.window && self.order.len() <= 2 * self.cap {
                break;
            }
            self.order.pop_front();
            if live {
                self.map.remove(&old);
            }
        }
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            // Full of creditable touches: refuse the newcomer (the store still has it;
            // only last-touch credit is lost).
            return;
        }
        self.map.insert(key, touch);
        self.order.push_back((key, touch.at_ms));
    }
}

impl LastTouches {
    pub fn new(cap: usize) -> Self {
        Self { clicks: Touches::new(cap, CLICK_WINDOW_MS), impressions: Touches::new(cap, VIEW_WINDOW_MS) }
    }

    pub fn record_click(&mut self, user_key: u64, advertiser_id: i64, touch: Touch) {
        self.clicks.record((user_key, advertiser_id), touch);
    }

    pub fn record_impression(&mut self, user_key: u64, advertiser_id: i64, touch: Touch) {
        self.impressions.record((user_key, advertiser_id), touch);
    }

    /// The touch a conversion at `at_ms` is credited to, if any.
    pub fn credit(&self, user_key: u64, advertiser_id: i64, at_ms: Millis) -> Option<Touch> {
        let key = (user_key, advertiser_id);
        let within = |t: &&Touch, window: Millis| t.at_ms <= at_ms && at_ms - t.at_ms <= window;
        self.clicks
            .map
            .get(&key)
            .filter(|t| within(t, CLICK_WINDOW_MS))
            .or_else(|| self.impressions.map.get(&key).filter(|t| within(t, VIEW_WINDOW_MS)))
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

    #[test]
    fn full_of_fresh_touches_refuses_newcomers_and_makes_room_as_they_age() {
        let mut t = LastTouches::new(3);
        for user in 0..3 {
            t.record_impression(user, 9, touch(user as i64, 1));
        }
        t.record_impression(7, 9, touch(10, 1));
        assert_eq!(t.credit(7, 9, 10), None, "full: refused");
        // A day later the first three can no longer be credited; the newcomer fits.
        t.record_impression(7, 9, touch(DAY + 5, 2));
        assert_eq!(t.credit(7, 9, DAY + 5).map(|t| t.ad_id), Some(2));
        assert_eq!(t.impressions.map.len(), 1);
    }
}
