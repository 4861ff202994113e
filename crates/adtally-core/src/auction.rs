//! The auction: a generalized second-price auction weighted by quality. Each bidder's
//! rank is bid × quality; the winner pays the least CPM that would still have ranked
//! first — the runner-up's rank divided by the winner's quality — but never less than
//! the placement floor and never more than its own bid.

/// One campaign in the auction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bid {
    pub cpm_bid_micros: i64,
    /// Expected click-through rate or any positive score; only ratios matter.
    pub quality: f64,
}

/// The winner's index among the bids and the CPM it pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub winner: usize,
    pub price_cpm_micros: i64,
}

/// Runs the auction. Bids under the floor do not take part. `tie_break` is a random
/// number: among bidders of equal rank it picks one uniformly, so no id is favoured.
pub fn run(bids: &[Bid], floor_cpm_micros: i64, tie_break: u64) -> Option<Outcome> {
    let rank = |b: &Bid| b.cpm_bid_micros as f64 * b.quality.max(f64::MIN_POSITIVE);
    let eligible =
        || bids.iter().enumerate().filter(|(_, b)| b.cpm_bid_micros >= floor_cpm_micros && b.cpm_bid_micros > 0);
    let best = eligible().map(|(_, b)| rank(b)).fold(f64::NEG_INFINITY, f64::max);
    let tied: Vec<usize> = eligible().filter(|(_, b)| rank(b) == best).map(|(i, _)| i).collect();
    let winner = *tied.get((tie_break % tied.len().max(1) as u64) as usize)?;
    let w = &bids[winner];
    let runner_up = eligible().filter(|&(i, _)| i != winner).map(|(_, b)| rank(b)).fold(f64::NEG_INFINITY, f64::max);
    let needed = if runner_up.is_finite() { (runner_up / w.quality.max(f64::MIN_POSITIVE)).ceil() as i64 } else { 0 };
    let price = needed.max(floor_cpm_micros).min(w.cpm_bid_micros);
    Some(Outcome { winner, price_cpm_micros: price })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bid(cpm: i64, quality: f64) -> Bid {
        Bid { cpm_bid_micros: cpm, quality }
    }

    #[test]
    fn second_price_by_quality() {
        // 2.00 × 1% = 0.02 beats 3.00 × 0.5% = 0.015; pays 0.015 / 1% = 1.50.
        let out = run(&[bid(3_000_000, 0.005), bid(2_000_000, 0.01)], 0, 0);
        assert_eq!(out, Some(Outcome { winner: 1, price_cpm_micros: 1_500_000 }));
    }

    #[test]
    fn alone_pays_the_floor_and_under_floor_does_not_play() {
        assert_eq!(run(&[bid(2_000_000, 0.01)], 500_000, 0).map(|o| o.price_cpm_micros), Some(500_000));
        assert_eq!(run(&[bid(400_000, 0.01)], 500_000, 0), None);
        assert_eq!(run(&[], 0, 0), None);
    }

    #[test]
    fn equal_quality_pays_exactly_the_runner_up_bid() {
        let out = run(&[bid(3_000_000, 0.01), bid(2_000_000, 0.01)], 500_000, 0);
        assert_eq!(out, Some(Outcome { winner: 0, price_cpm_micros: 2_000_000 }));
    }

    #[test]
    fn ties_are_broken_by_the_random_draw() {
        let bids = [bid(1_000_000, 0.01), bid(1_000_000, 0.01)];
        assert_eq!(run(&bids, 0, 0).map(|o| o.winner), Some(0));
        assert_eq!(run(&bids, 0, 1).map(|o| o.winner), Some(1));
        assert_eq!(run(&bids, 0, 0).map(|o| o.price_cpm_micros), Some(1_000_000));
    }

    proptest! {
        #[test]
        fn price_is_between_floor_and_bid_and_is_the_least_winning_price(
            bids in proptest::collection::vec((10_000i64..10_000_000, 1u32..1000), 1..8),
            floor in 0i64..2_000_000,
            draw in any::<u64>(),
        ) {
            let bids: Vec<Bid> = bids.into_iter().map(|(c, q)| bid(c, q as f64 / 10_000.0)).collect();
            if let Some(out) = run(&bids, floor, draw) {
                let w = bids[out.winner];
                prop_assert!(out.price_cpm_micros <= w.cpm_bid_micros);
                prop_assert!(out.price_cpm_micros >= floor);
                // At the price it still ranks at least as high as everyone else, and one
                // micro less would not (up to float rounding in the ranks themselves).
                let rank_at = |cpm: i64| cpm as f64 * w.quality;
                let others: Vec<f64> = bids
                    .iter()
                    .enumerate()
                    .filter(|(i, b)| *i != out.winner && b.cpm_bid_micros >= floor)
                    .map(|(_, b)| b.cpm_bid_micros as f64 * b.quality)
                    .collect();
                for other in &others {
                    prop_assert!(rank_at(out.price_cpm_micros) >= other * (1.0 - 1e-9));
                }
                if out.price_cpm_micros > floor && out.price_cpm_micros < w.cpm_bid_micros {
                    prop_assert!(others.iter().any(|other| rank_at(out.price_cpm_micros - 1) <= other * (1.0 + 1e-9)));
                }
            }
        }
    }
}
