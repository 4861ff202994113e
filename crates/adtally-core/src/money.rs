//! Money is `i64` micros of the account currency (1.00 = 1 000 000) everywhere; this
//! module holds the one piece of arithmetic that needs care: charging CPM prices one
//! impression at a time without losing fractions of a micro.

/// Charges CPM-priced impressions one at a time while keeping the sub-micro remainder,
/// so that N impressions at CPM P cost exactly ⌊N·P/1000⌋ micros in total.
///
/// The remainder is kept in thousandths of a micro; it is always in `0..1000`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpmCarry {
    milli_micros: i64,
}

impl CpmCarry {
    pub fn new(milli_micros: i64) -> Self {
        Self { milli_micros: milli_micros.rem_euclid(1000) }
    }

    pub fn remainder(&self) -> i64 {
        self.milli_micros
    }

    /// The micros one impression at `cpm_micros` costs now, given what earlier ones carried.
    pub fn charge(&mut self, cpm_micros: i64) -> i64 {
        let total = self.milli_micros + cpm_micros.max(0);
        self.milli_micros = total % 1000;
        total / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn three_impressions_at_one_micro_cpm_under_a_thousand_cost_nothing() {
        let mut carry = CpmCarry::default();
        let total: i64 = (0..999).map(|_| carry.charge(1)).sum();
        assert_eq!(total, 0);
        assert_eq!(carry.charge(1), 1);
    }

    proptest! {
        #[test]
        fn n_impressions_cost_floor_of_n_times_p_over_1000(n in 0u32..5000, p in 0i64..50_000_000) {
            let mut carry = CpmCarry::default();
            let total: i64 = (0..n).map(|_| carry.charge(p)).sum();
            prop_assert_eq!(total, (n as i64 * p) / 1000);
        }
    }
}
