//! The honest-counting rules: given a beacon that arrived, is it an impression, viewable
//! impression or click that a person made, and has it not been counted already?
//!
//! Rules apply in this order; the first that matches gives the verdict:
//!
//! 1. General invalid traffic, decided by the caller from the request alone:
//!    `bot` (user agent), then `prefetch` (headers), then `datacenter` (address).
//! 2. `expired`: the token is older than its time to live.
//! 3. Per kind of event:
//!    - impression: `duplicate` if the decision already has a counted impression;
//!    - viewable: `no_impression` without a counted impression, `duplicate` if the
//!      decision already has a counted viewable;
//!    - click: `no_impression` without a counted impression, `duplicate` if the decision
//!      already has a counted click or the same user has a counted click on the same ad
//!      less than the dedup window ago, `excessive_activity` if the user or the address
//!      already has the maximum number of counted clicks in the last hour.
//! 4. Otherwise `valid`, and the state remembers it.
//!
//! Only counted (valid) events change the state: a bot's impression does not use up
//! its decision, so the person's impression that follows still counts.
//!
//! The state is bounded by time, and what "at most one per decision" needs is never
//! evicted early: live decisions are kept in a wheel of one-second buckets by the time
//! their token was issued, and a whole bucket is dropped only once every token in it has
//! expired (a beacon that late is `expired` whatever the state says). That costs about
//! 10–20 bytes per decision with a counted impression, for exactly one TTL. The
//! other maps (imported decisions, click times, click counters) expire a fixed time after
//! they were written, and past `max_entries` evict their oldest entries first: losing
//! one there can let a rate limit or an imported click through, never a replayed token.
//! The store keeps every event, so after a restart the state is rebuilt by
//! [`CountingState::remember`]ing the valid events of the last TTL.

use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;

use crate::clock::{Millis, HOUR};
use crate::event::{EventKind, Verdict};
use crate::fasthash::FastMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountingConfig {
    pub token_ttl_ms: Millis,
    pub click_dedup_window_ms: Millis,
    pub max_clicks_per_hour: u32,
    /// Upper bound on entries in each map of the state that may evict (not the live
    /// decisions: see the module documentation).
    pub max_entries: usize,
    /// A viewable beacon sooner than this after its impression is `too_early`: no tag
    /// can have measured a second of continuous view (MRC display rule) by then.
    pub min_viewable_delay_ms: Millis,
    /// The same for video ads, which need two seconds in view while playing.
    pub min_video_viewable_delay_ms: Millis,
}

impl Default for CountingConfig {
    fn default() -> Self {
        Self {
            token_ttl_ms: 24 * HOUR,
            click_dedup_window_ms: 30_000,
            max_clicks_per_hour: 10,
            max_entries: 4_000_000,
            min_viewable_delay_ms: 750,
            min_video_viewable_delay_ms: 1_500,
        }
    }
}

/// Which decision a beacon belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionRef {
    /// Live traffic: the signed token names the decision and when it was made.
    Token { decision_id: u64, issued_at_ms: Millis },
    /// Imported history has no tokens: an impression opens a decision of its own, and a
    /// click or viewable belongs to the same user's latest counted impression of the ad
    /// within the token TTL.
    Imported { fresh_decision_id: u64 },
}

/// A beacon that arrived, with what the caller could tell from the request alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub kind: EventKind,
    pub at_ms: Millis,
    pub decision: DecisionRef,
    pub ad_id: i64,
    pub user_key: u64,
    /// Keyed hash of the client address; `None` when unknown (imports without `ip`), which
    /// never counts towards the per-address limit.
    pub ip_key: Option<u64>,
    /// `bot`, `prefetch` or `datacenter` when the request itself gave it away.
    pub givt: Option<Verdict>,
    /// The served ad is a video (its viewable needs longer; see `too_early`).
    pub video: bool,
}

/// The verdict and the decision the event was filed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub decision_id: u64,
}

const IMPRESSION: u8 = 1;
const VIEWABLE: u8 = 2;
const CLICK: u8 = 4;

fn mark_of(kind: EventKind) -> u8 {
    match kind {
        EventKind::Impression => IMPRESSION,
        EventKind::Viewable => VIEWABLE,
        EventKind::Click => CLICK,
        EventKind::Conversion => 0,
    }
}

/// What a decision has had counted: marks and, once counted, how long after the
/// decision its impression came (for `too_early`), packed in 32 bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Marks(u32);

impl Marks {
    const MAX_OFFSET_MS: Millis = (1 << 29) - 1;

    fn has(self, mark: u8) -> bool {
        self.0 & u32::from(mark) != 0
    }
    fn with(self, mark: u8) -> Self {
        Marks(self.0 | u32::from(mark))
    }
    fn with_impression_after(self, offset_ms: Millis) -> Self {
        Marks((self.0 & 0b111) | ((offset_ms.clamp(0, Self::MAX_OFFSET_MS) as u32) << 3)).with(IMPRESSION)
    }
    fn impression_after_ms(self) -> Millis {
        Millis::from(self.0 >> 3)
    }
}

/// Marks of live decisions in one-second buckets by issue time. Within a bucket a
/// decision is keyed by the low 32 bits of its id: ids are `issue ms << 20 | sequence`,
/// so two decisions of the same second never share them.
#[derive(Debug, Default)]
struct DecisionWheel {
    buckets: BTreeMap<Millis, FastMap<u32, Marks>>,
    len: usize,
}

impl DecisionWheel {
    fn get(&self, decision_id: u64, issued_at_ms: Millis) -> Marks {
        let bucket = self.buckets.get(&issued_at_ms.div_euclid(1000));
        bucket.and_then(|b| b.get(&(decision_id as u32))).copied().unwrap_or_default()
    }
    fn set(&mut self, decision_id: u64, issued_at_ms: Millis, marks: Marks) {
        let bucket = self.buckets.entry(issued_at_ms.div_euclid(1000)).or_default();
        if bucket.insert(decision_id as u32, marks).is_none() {
            self.len += 1;
        }
    }
    /// Drops the buckets of tokens all issued before `issued_before_ms`.
    fn expire(&mut self, issued_before_ms: Millis) {
        let keep = self.buckets.split_off(&issued_before_ms.div_euclid(1000));
        let dropped = std::mem::replace(&mut self.buckets, keep);
        self.len -= dropped.values().map(FastMap::len).sum::<usize>();
    }
}

/// The in-memory state the counting rules consult.
#[derive(Debug)]
pub struct CountingState {
    config: CountingConfig,
    /// What each live decision (from a signed token) has had counted.
    live: DecisionWheel,
    /// What each decision opened by an imported impression has had counted.
    imported: ExpiringMap<u64, Marks>,
    /// Latest counted impression per (user, ad), for imported clicks: (decision, time).
    imported_impressions: ExpiringMap<(u64, i64), (u64, Millis)>,
    /// Time of the latest counted click per (user, ad).
    last_click: ExpiringMap<(u64, i64), Millis>,
    /// Times of the latest counted clicks per user and per address, newest last.
    clicks_by_user: ExpiringMap<u64, VecDeque<Millis>>,
    clicks_by_ip: ExpiringMap<u64, VecDeque<Millis>>,
}

/// Tokens are kept a minute past their TTL, for clock differences between the handler
/// that stamped an arrival and the writer that expires state.
const EXPIRY_MARGIN_MS: Millis = 60_000;

impl CountingState {
    pub fn new(config: CountingConfig) -> Self {
        let cap = config.max_entries;
        Self {
            config,
            live: DecisionWheel::default(),
            imported: ExpiringMap::new(config.token_ttl_ms, cap),
            imported_impressions: ExpiringMap::new(config.token_ttl_ms, cap),
            last_click: ExpiringMap::new(config.click_dedup_window_ms.max(1), cap),
            clicks_by_user: ExpiringMap::new(HOUR, cap),
            clicks_by_ip: ExpiringMap::new(HOUR, cap),
        }
    }

    fn marks(&self, decision: DecisionRef, decision_id: u64) -> Marks {
        match decision {
            DecisionRef::Token { issued_at_ms, .. } => self.live.get(decision_id, issued_at_ms),
            DecisionRef::Imported { .. } => self.imported.get(&decision_id).copied().unwrap_or_default(),
        }
    }

    fn set_marks(&mut self, decision: DecisionRef, decision_id: u64, marks: Marks, now_ms: Millis) {
        match decision {
            DecisionRef::Token { issued_at_ms, .. } => self.live.set(decision_id, issued_at_ms, marks),
            DecisionRef::Imported { .. } => self.imported.insert(decision_id, marks, now_ms),
        }
    }

    pub fn config(&self) -> &CountingConfig {
        &self.config
    }

    /// Number of decisions remembered.
    pub fn tracked_decisions(&self) -> usize {
        self.live.len + self.imported.len()
    }

    /// Applies the rules to one arrival and remembers it when it counts.
    /// `now_ms` is the caller's clock, used only for expiring state.
    pub fn judge(&mut self, arrival: &Arrival, now_ms: Millis) -> Judgement {
        let decision_id = match arrival.decision {
            DecisionRef::Token { decision_id, .. } => decision_id,
            DecisionRef::Imported { fresh_decision_id } => match arrival.kind {
                EventKind::Impression | EventKind::Conversion => fresh_decision_id,
                EventKind::Viewable | EventKind::Click => self
                    .imported_impressions
                    .get(&(arrival.user_key, arrival.ad_id))
                    .filter(|(_, at)| arrival.at_ms - at <= self.config.token_ttl_ms && arrival.at_ms >= *at)
                    .map(|(id, _)| *id)
                    .unwrap_or(0),
            },
        };
        let verdict = self.verdict(arrival, decision_id);
        if verdict.is_valid() {
            self.record(arrival.kind, arrival.at_ms, decision_id, arrival, now_ms);
        }
        Judgement { verdict, decision_id }
    }

    fn verdict(&self, a: &Arrival, decision_id: u64) -> Verdict {
        if let Some(givt) = a.givt {
            return givt;
        }
        if let DecisionRef::Token { issued_at_ms, .. } = a.decision {
            if a.at_ms - issued_at_ms > self.config.token_ttl_ms {
                return Verdict::Expired;
            }
        }
        let marks = self.marks(a.decision, decision_id);
        match a.kind {
            EventKind::Impression if marks.has(IMPRESSION) => Verdict::Duplicate,
            EventKind::Impression | EventKind::Conversion => Verdict::Valid,
            EventKind::Viewable | EventKind::Click if !marks.has(IMPRESSION) => Verdict::NoImpression,
            EventKind::Viewable if marks.has(VIEWABLE) => Verdict::Duplicate,
            EventKind::Viewable => self.viewable_verdict(a, marks),
            EventKind::Click => self.click_verdict(a, marks),
        }
    }

    /// Only a live beacon can be too early: imported history carries the times a log
    /// recorded, not when a tag could have measured.
    fn viewable_verdict(&self, a: &Arrival, marks: Marks) -> Verdict {
        let min_delay =
            if a.video { self.config.min_video_viewable_delay_ms } else { self.config.min_viewable_delay_ms };
        match a.decision {
            DecisionRef::Token { issued_at_ms, .. }
                if a.at_ms - (issued_at_ms + marks.impression_after_ms()) < min_delay =>
            {
                Verdict::TooEarly
            }
            _ => Verdict::Valid,
        }
    }

    fn click_verdict(&self, a: &Arrival, marks: Marks) -> Verdict {
        if marks.has(CLICK) {
            return Verdict::Duplicate;
        }
        if let Some(last) = self.last_click.get(&(a.user_key, a.ad_id)) {
            if (a.at_ms - last).abs() < self.config.click_dedup_window_ms {
                return Verdict::Duplicate;
            }
        }
        let limit = self.config.max_clicks_per_hour as usize;
        let over = |times: Option<&VecDeque<Millis>>| {
            times.is_some_and(|t| t.iter().filter(|&&at| at > a.at_ms - HOUR && at <= a.at_ms).count() >= limit)
        };
        let by_ip = a.ip_key.and_then(|ip| self.clicks_by_ip.get(&ip));
        if over(self.clicks_by_user.get(&a.user_key)) || over(by_ip) {
            return Verdict::ExcessiveActivity;
        }
        Verdict::Valid
    }

    fn record(&mut self, kind: EventKind, at_ms: Millis, decision_id: u64, a: &Arrival, now_ms: Millis) {
        let mark = mark_of(kind);
        if mark != 0 {
            let marks = self.marks(a.decision, decision_id);
            let marks = match (kind, a.decision) {
                (EventKind::Impression, DecisionRef::Token { issued_at_ms, .. }) => {
                    marks.with_impression_after(at_ms - issued_at_ms)
                }
                _ => marks.with(mark),
            };
            self.set_marks(a.decision, decision_id, marks, now_ms);
        }
        match kind {
            EventKind::Impression if matches!(a.decision, DecisionRef::Imported { .. }) => {
                self.imported_impressions.insert((a.user_key, a.ad_id), (decision_id, at_ms), now_ms);
            }
            EventKind::Click => {
                self.last_click.insert((a.user_key, a.ad_id), at_ms, now_ms);
                let keep = self.config.max_clicks_per_hour as usize;
                push_click_time(&mut self.clicks_by_user, a.user_key, at_ms, keep, now_ms);
                if let Some(ip) = a.ip_key {
                    push_click_time(&mut self.clicks_by_ip, ip, at_ms, keep, now_ms);
                }
            }
            _ => {}
        }
    }

    /// Replays a stored, counted event into the state (after a restart).
    pub fn remember(&mut self, arrival: &Arrival, decision_id: u64, now_ms: Millis) {
        self.record(arrival.kind, arrival.at_ms, decision_id, arrival, now_ms);
    }

    /// Learns that another writer (another node on a shared database) counted `arrival`,
    /// so that this decision's later beacons are judged as if it had been counted here.
    /// Does nothing when the state already knows.
    pub fn learn(&mut self, arrival: &Arrival, decision_id: u64, now_ms: Millis) {
        let mark = match arrival.kind {
            EventKind::Impression => IMPRESSION,
            EventKind::Viewable => VIEWABLE,
            EventKind::Click => CLICK,
            EventKind::Conversion => return,
        };
        if !self.marks(arrival.decision, decision_id).has(mark) {
            self.record(arrival.kind, arrival.at_ms, decision_id, arrival, now_ms);
        }
    }

    /// Drops entries that can no longer change a verdict.
    pub fn expire(&mut self, now_ms: Millis) {
        self.live.expire(now_ms - self.config.token_ttl_ms - EXPIRY_MARGIN_MS);
        self.imported.expire(now_ms);
        self.imported_impressions.expire(now_ms);
        self.last_click.expire(now_ms);
        self.clicks_by_user.expire(now_ms);
        self.clicks_by_ip.expire(now_ms);
    }
}

/// Appends a counted click's time, keeping only the newest `keep`.
fn push_click_time(map: &mut ExpiringMap<u64, VecDeque<Millis>>, key: u64, at_ms: Millis, keep: usize, now_ms: Millis) {
    let mut times = map.remove(&key).unwrap_or_default();
    times.push_back(at_ms);
    while times.len() > keep.max(1) {
        times.pop_front();
    }
    map.insert(key, times, now_ms);
}

/// A hash map whose entries expire a fixed time after they were last written, with a
/// hard cap on entries that evicts the least recently written first.
#[derive(Debug)]
struct ExpiringMap<K, V> {
    ttl_ms: Millis,
    cap: usize,
    entries: FastMap<K, (V, Millis)>,
    /// Keys in order of writing; a key may appear more than once, only the entry whose
    /// time matches the map's is live.
    order: VecDeque<(K, Millis)>,
}

impl<K: Hash + Eq + Copy, V> ExpiringMap<K, V> {
    fn new(ttl_ms: Millis, cap: usize) -> Self {
        Self { ttl_ms, cap: cap.max(1), entries: FastMap::default(), order: VecDeque::new() }
    }
    fn len(&self) -> usize {
        self.entries.len()
    }
    fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }
    fn remove(&mut self, key: &K) -> Option<V> {
        self.entries.remove(key).map(|(v, _)| v)
    }
    fn insert(&mut self, key: K, value: V, now_ms: Millis) {
        self.entries.insert(key, (value, now_ms));
        self.order.push_back((key, now_ms));
        while self.entries.len() > self.cap || self.order.len() > 2 * self.cap {
            if !self.pop_oldest() {
                break;
            }
        }
    }
    fn pop_oldest(&mut self) -> bool {
        let Some((key, written)) = self.order.pop_front() else {
            return false;
        };
        if self.entries.get(&key).is_some_and(|(_, at)| *at == written) {
            self.entries.remove(&key);
        }
        true
    }
    fn expire(&mut self, now_ms: Millis) {
        while self.order.front().is_some_and(|(_, written)| now_ms - written > self.ttl_ms) {
            self.pop_oldest();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const T0: Millis = 1_700_000_000_000;

    fn arrival(kind: EventKind, decision_id: u64, at_ms: Millis) -> Arrival {
        Arrival {
            kind,
            at_ms,
            decision: DecisionRef::Token { decision_id, issued_at_ms: T0 },
            ad_id: 1,
            user_key: 100,
            ip_key: Some(200),
            givt: None,
            video: false,
        }
    }

    /// Feeds arrivals in order and returns their verdicts.
    fn run(config: CountingConfig, arrivals: &[Arrival]) -> Vec<Verdict> {
        let mut state = CountingState::new(config);
        arrivals.iter().map(|a| state.judge(a, a.at_ms).verdict).collect()
    }

    fn check(arrivals: &[Arrival], expect: &[Verdict]) {
        assert_eq!(run(CountingConfig::default(), arrivals), expect);
    }

    use EventKind::{Click, Impression, Viewable};
    use Verdict::*;

    #[test]
    fn one_impression_viewable_and_click_per_decision() {
        check(
            &[
                arrival(Impression, 1, T0),
                arrival(Impression, 1, T0 + 5),
                arrival(Viewable, 1, T0 + 1000),
                arrival(Viewable, 1, T0 + 2000),
                arrival(Click, 1, T0 + 3000),
                arrival(Click, 1, T0 + 90_000),
            ],
            &[Valid, Duplicate, Valid, Duplicate, Valid, Duplicate],
        );
    }

    #[test]
    fn clicks_and_viewables_need_a_counted_impression() {
        let bot_impression = Arrival { givt: Some(Bot), ..arrival(Impression, 1, T0) };
        check(
            &[arrival(Click, 1, T0), arrival(Viewable, 1, T0), bot_impression, arrival(Click, 1, T0 + 1)],
            &[NoImpression, NoImpression, Bot, NoImpression],
        );
    }

    #[test]
    fn an_invalid_impression_does_not_use_up_the_decision() {
        let prefetch = Arrival { givt: Some(Prefetch), ..arrival(Impression, 1, T0) };
        check(&[prefetch, arrival(Impression, 1, T0 + 10)], &[Prefetch, Valid]);
    }

    #[test]
    fn a_bots_double_click_is_bot_not_duplicate() {
        let bot = |a: Arrival| Arrival { givt: Some(Bot), ..a };
        check(
            &[arrival(Impression, 1, T0), bot(arrival(Click, 1, T0 + 10)), bot(arrival(Click, 1, T0 + 90))],
            &[Valid, Bot, Bot],
        );
    }

    #[test]
    fn same_user_same_ad_click_dedup_window_edges() {
        let at = |ms| arrival(Click, 2, T0 + ms);
        let base = [arrival(Impression, 1, T0), arrival(Click, 1, T0 + 1000), arrival(Impression, 2, T0 + 1000)];
        let mut early = base.to_vec();
        early.push(at(1000 + 29_900));
        assert_eq!(run(CountingConfig::default(), &early)[3], Duplicate);
        let mut late = base.to_vec();
        late.push(at(1000 + 30_100));
        assert_eq!(run(CountingConfig::default(), &late)[3], Valid);
    }

    #[test]
    fn tokens_expire_after_their_ttl() {
        let ttl = CountingConfig::default().token_ttl_ms;
        check(&[arrival(Impression, 1, T0 + ttl), arrival(Impression, 2, T0 + ttl + 1)], &[Valid, Expired]);
    }

    #[test]
    fn excessive_activity_after_n_counted_clicks_an_hour() {
        let config = CountingConfig { max_clicks_per_hour: 3, ..CountingConfig::default() };
        let mut arrivals = Vec::new();
        for i in 0..5u64 {
            let at = T0 + i as i64 * 60_000;
            arrivals.push(Arrival { ad_id: i as i64, ..arrival(Impression, i, at) });
            arrivals.push(Arrival { ad_id: i as i64, ..arrival(Click, i, at + 1) });
        }
        let clicks: Vec<Verdict> = run(config, &arrivals).into_iter().skip(1).step_by(2).collect();
        assert_eq!(clicks, [Valid, Valid, Valid, ExcessiveActivity, ExcessiveActivity]);
    }

    #[test]
    fn excessive_activity_counts_per_address_too() {
        let config = CountingConfig { max_clicks_per_hour: 1, ..CountingConfig::default() };
        let other_user = |a: Arrival| Arrival { user_key: 999, ad_id: 7, ..a };
        let arrivals = [
            arrival(Impression, 1, T0),
            arrival(Click, 1, T0 + 1),
            other_user(arrival(Impression, 2, T0 + 2)),
            other_user(arrival(Click, 2, T0 + 3)),
        ];
        assert_eq!(run(config, &arrivals), [Valid, Valid, Valid, ExcessiveActivity]);
    }

    #[test]
    fn an_hour_later_the_counter_has_room_again() {
        let config = CountingConfig { max_clicks_per_hour: 1, ..CountingConfig::default() };
        let arrivals = [
            arrival(Impression, 1, T0),
            arrival(Click, 1, T0 + 1),
            Arrival { ad_id: 2, ..arrival(Impression, 2, T0 + HOUR) },
            Arrival { ad_id: 2, ..arrival(Click, 2, T0 + HOUR + 1) },
        ];
        assert_eq!(run(config, &arrivals), [Valid, Valid, Valid, Valid]);
    }

    #[test]
    fn imported_clicks_attach_to_the_users_latest_impression_of_the_ad() {
        let imported = |kind, id, at| Arrival {
            decision: DecisionRef::Imported { fresh_decision_id: id },
            ..arrival(kind, 0, at)
        };
        check(
            &[
                imported(Click, 1, T0),
                imported(Impression, 2, T0 + 10),
                imported(Click, 3, T0 + 20),
                imported(Click, 4, T0 + 40_000),
                imported(Impression, 5, T0 + 50_000),
                imported(Click, 6, T0 + 60_000),
            ],
            &[NoImpression, Valid, Valid, Duplicate, Valid, Valid],
        );
    }

    #[test]
    fn remembered_events_survive_a_restart() {
        // A state rebuilt from the stored events judges what follows exactly as the state
        // that saw them live.
        let mut live = CountingState::new(CountingConfig::default());
        let imp = arrival(Impression, 1, T0);
        let click = arrival(Click, 1, T0 + 100);
        live.judge(&imp, T0);
        live.judge(&click, T0);
        let mut rebuilt = CountingState::new(CountingConfig::default());
        rebuilt.remember(&imp, 1, T0);
        rebuilt.remember(&click, 1, T0);
        let follow_ups = [
            arrival(Impression, 1, T0 + 1_000),
            arrival(Click, 1, T0 + 5_000),
            arrival(Impression, 2, T0 + 6_000),
            arrival(Click, 2, T0 + 7_000),
            arrival(Viewable, 1, T0 + 8_000),
        ];
        let judge_all = |s: &mut CountingState| follow_ups.iter().map(|a| s.judge(a, T0).verdict).collect::<Vec<_>>();
        let expected = [Duplicate, Duplicate, Valid, Duplicate, Valid];
        assert_eq!(judge_all(&mut live), expected);
        assert_eq!(judge_all(&mut rebuilt), expected);
    }

    #[test]
    fn live_decisions_are_never_forgotten_before_their_ttl() {
        // A cap that evicted would let the first impression count again at any volume.
        let config = CountingConfig { max_entries: 10, ..CountingConfig::default() };
        let mut state = CountingState::new(config);
        let decisions = 100_000u64;
        for id in 0..decisions {
            let at = T0 + (id as i64 % 3_600) * 1_000;
            let a = Arrival {
                decision: DecisionRef::Token { decision_id: id, issued_at_ms: at },
                ..arrival(Impression, id, at)
            };
            assert_eq!(state.judge(&a, at).verdict, Valid);
        }
        state.expire(T0 + HOUR);
        assert_eq!(state.tracked_decisions(), decisions as usize);
        let replay = Arrival {
            decision: DecisionRef::Token { decision_id: 0, issued_at_ms: T0 },
            ..arrival(Impression, 0, T0 + HOUR)
        };
        assert_eq!(state.judge(&replay, T0 + HOUR).verdict, Duplicate);
        // Once every token has expired the state is empty, and a replay is `expired`.
        let late = T0 + HOUR + config.token_ttl_ms + EXPIRY_MARGIN_MS + 1;
        state.expire(late);
        assert_eq!(state.tracked_decisions(), 0);
        assert_eq!(state.judge(&Arrival { at_ms: late, ..replay }, late).verdict, Expired);
    }

    #[test]
    fn a_viewable_sooner_than_a_tag_could_measure_is_too_early() {
        let impression = arrival(Impression, 1, T0 + 5_000);
        let at = |ms| arrival(Viewable, 1, T0 + 5_000 + ms);
        check(&[impression, at(749), at(750), at(900)], &[Valid, TooEarly, Valid, Duplicate]);
        // Measured from the impression, not from the decision.
        check(&[arrival(Impression, 2, T0), arrival(Viewable, 2, T0 + 100)], &[Valid, TooEarly]);
        // A video needs 1.5 s.
        let video = |a: Arrival| Arrival { video: true, ..a };
        check(
            &[
                video(arrival(Impression, 4, T0)),
                video(arrival(Viewable, 4, T0 + 1_499)),
                video(arrival(Viewable, 4, T0 + 1_500)),
            ],
            &[Valid, TooEarly, Valid],
        );
        // A viewable too early does not use up the decision's one viewable.
        check(
            &[arrival(Impression, 3, T0), arrival(Viewable, 3, T0 + 10), arrival(Viewable, 3, T0 + 800)],
            &[Valid, TooEarly, Valid],
        );
    }

    #[test]
    fn evicting_maps_stay_bounded_and_expire() {
        let config = CountingConfig { max_entries: 10, ..CountingConfig::default() };
        let mut state = CountingState::new(config);
        for id in 0..100 {
            let a =
                Arrival { decision: DecisionRef::Imported { fresh_decision_id: id }, ..arrival(Impression, id, T0) };
            state.judge(&a, T0);
        }
        assert_eq!(state.tracked_decisions(), 10);
        state.expire(T0 + config.token_ttl_ms + 1);
        assert_eq!(state.tracked_decisions(), 0);
    }

    fn any_kind() -> impl Strategy<Value = EventKind> {
        prop_oneof![Just(Impression), Just(Viewable), Just(Click)]
    }
    fn any_givt() -> impl Strategy<Value = Option<Verdict>> {
        prop_oneof![Just(None), Just(Some(Bot)), Just(Some(Prefetch)), Just(Some(Datacenter))]
    }

    proptest! {
        /// Whatever the traffic: a GIVT signal always wins, each decision counts at most
        /// one event of each kind, and no click or viewable counts without an impression.
        #[test]
        fn invariants_hold_for_any_traffic(
            events in proptest::collection::vec((any_kind(), 0u64..6, 0i64..120_000, 0u64..3, any_givt()), 0..200)
        ) {
            let mut sorted = events.clone();
            sorted.sort_by_key(|e| e.2);
            let mut state = CountingState::new(CountingConfig::default());
            let mut counted: HashMap<(u64, EventKind), u32> = HashMap::new();
            for (kind, decision, offset, user, givt) in sorted {
                let a = Arrival { user_key: user, givt, ..arrival(kind, decision, T0 + offset) };
                let verdict = state.judge(&a, a.at_ms).verdict;
                if let Some(g) = givt {
                    prop_assert_eq!(verdict, g);
                }
                if verdict.is_valid() {
                    *counted.entry((decision, kind)).or_default() += 1;
                    if kind != Impression {
                        prop_assert!(counted.contains_key(&(decision, Impression)));
                    }
                }
            }
            prop_assert!(counted.values().all(|&n| n == 1));
        }
    }
}
