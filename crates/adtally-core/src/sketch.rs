//! Reach sketches: a mergeable estimate of how many distinct users a set of events
//! reached, small enough to store with every rollup row.
//!
//! A sketch is *sparse* (the exact, sorted hashes of its users) while it holds at most
//! [`SPARSE_MAX`] users, so the typical quarter-hour rollup row with a handful of users
//! costs a few bytes per user and reports count small sets exactly. Past that it turns
//! into a *dense* HyperLogLog of 2^14 one-byte registers (16 KiB, standard error
//! 1.04/√16384 ≈ 0.8%), estimated with Ertl's improved estimator ("New cardinality
//! estimation algorithms for HyperLogLog sketches", 2017), which needs no empirical bias
//! tables and is accurate over the whole range.
//!
//! Stored sketches must merge with sketches written by any later version, so the hash
//! and the byte layout are ours and fixed: [`VERSION`] names both. A change to either
//! needs a new version byte and a migration that rebuilds the stored sketches.

use thiserror::Error;

/// Version byte of the encoding and of the hash ([`mix`]) it was built with.
pub const VERSION: u8 = 1;
/// Register index bits.
const P: u32 = 14;
/// Number of registers.
const M: usize = 1 << P;
/// Hash bits left for the rank once the index is taken.
const Q: u32 = 64 - P;
/// The most users a sparse sketch holds exactly: beyond it the 8-byte hashes would take
/// as much room as the dense registers.
pub const SPARSE_MAX: usize = M / 8;

const TAG_SPARSE: u8 = 0;
const TAG_DENSE: u8 = 1;

/// A set of users, exact while small, approximate (HyperLogLog) when large.
///
/// The representation is a function of the set alone (dense iff it ever held more than
/// [`SPARSE_MAX`] users), so merging in any order and grouping gives the same sketch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sketch {
    /// Sorted, distinct hashes of the users.
    Sparse(Vec<u64>),
    /// One register per index: the highest rank seen, 0 for none.
    Dense(Box<[u8]>),
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::Sparse(Vec::new())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SketchError {
    #[error("reach sketch: unknown version {0}")]
    Version(u8),
    #[error("reach sketch: malformed ({0})")]
    Malformed(&'static str),
}

/// The sketch hash of a user key: the 64-bit finalizer of MurmurHash3. User keys are
/// keyed hashes already, but this also spreads keys that are not (tests, imports), and
/// it is a bijection, so sparse sketches count distinct keys exactly. Fixed forever for
/// [`VERSION`] 1: never `std`'s `RandomState`, whose output changes between runs.
pub fn mix(key: u64) -> u64 {
    let mut h = key;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Register index and rank (1 + leading zeros of the bits after the index, 1..=Q+1).
fn index_rank(hash: u64) -> (usize, u8) {
    let index = (hash >> Q) as usize;
    let rest = hash << P;
    let rank = rest.leading_zeros().min(Q) + 1;
    (index, rank as u8)
}

impl Sketch {
    /// Adds one user by its key ([`crate::event::Event::user_key`]).
    pub fn insert(&mut self, user_key: u64) {
        self.insert_hash(mix(user_key));
    }

    fn insert_hash(&mut self, hash: u64) {
        match self {
            Sketch::Sparse(hashes) => {
                if let Err(at) = hashes.binary_search(&hash) {
                    hashes.insert(at, hash);
                    if hashes.len() > SPARSE_MAX {
                        self.densify();
                    }
                }
            }
            Sketch::Dense(registers) => {
                let (index, rank) = index_rank(hash);
                registers[index] = registers[index].max(rank);
            }
        }
    }

    fn densify(&mut self) {
        if let Sketch::Sparse(hashes) = self {
            let mut registers = vec![0u8; M].into_boxed_slice();
            for &h in hashes.iter() {
                let (index, rank) = index_rank(h);
                registers[index] = registers[index].max(rank);
            }
            *self = Sketch::Dense(registers);
        }
    }

    /// Adds every user of `other`: the sketch of the union of both sets.
    pub fn merge(&mut self, other: &Sketch) {
        match (&mut *self, other) {
            (_, Sketch::Sparse(theirs)) if theirs.is_empty() => {}
            (Sketch::Sparse(ours), Sketch::Sparse(theirs)) => {
                let mut union = Vec::with_capacity(ours.len() + theirs.len());
                let (mut i, mut j) = (0, 0);
                while i < ours.len() && j < theirs.len() {
                    match ours[i].cmp(&theirs[j]) {
                        std::cmp::Ordering::Less => {
                            union.push(ours[i]);
                            i += 1;
                        }
                        std::cmp::Ordering::Greater => {
                            union.push(theirs[j]);
                            j += 1;
                        }
                        std::cmp::Ordering::Equal => {
                            union.push(ours[i]);
                            i += 1;
                            j += 1;
                        }
                    }
                }
                union.extend_from_slice(&ours[i..]);
                union.extend_from_slice(&theirs[j..]);
                *ours = union;
                if ours.len() > SPARSE_MAX {
                    self.densify();
                }
            }
            (Sketch::Dense(registers), Sketch::Sparse(theirs)) => {
                for &h in theirs {
                    let (index, rank) = index_rank(h);
                    registers[index] = registers[index].max(rank);
                }
            }
            (Sketch::Sparse(_), Sketch::Dense(_)) => {
                let mine = std::mem::replace(self, other.clone());
                self.merge(&mine);
            }
            (Sketch::Dense(ours), Sketch::Dense(theirs)) => {
                for (a, b) in ours.iter_mut().zip(theirs.iter()) {
                    *a = (*a).max(*b);
                }
            }
        }
    }

    /// `merge(&Sketch::from_bytes(bytes)?)` without building the other sketch: a dense
    /// stored sketch is merged register by register straight from its bytes (what a
    /// report's union does for every row it reads). Checks what `from_bytes` checks.
    pub fn merge_bytes(&mut self, bytes: &[u8]) -> Result<(), SketchError> {
        if let [VERSION, TAG_DENSE, body @ ..] = bytes {
            // Checked before anything changes, so a damaged blob leaves `self` as it was.
            check_dense(body)?;
            match self {
                Sketch::Dense(ours) => {
                    for (a, &b) in ours.iter_mut().zip(body) {
                        *a = (*a).max(b);
                    }
                }
                // A group's first row (in a report by day, its only one): one copy.
                _ if self.is_empty() => *self = Sketch::Dense(body.into()),
                Sketch::Sparse(_) => {
                    let mine = std::mem::replace(self, Sketch::Dense(body.into()));
                    self.merge(&mine);
                }
            }
            return Ok(());
        }
        self.merge(&Sketch::from_bytes(bytes)?);
        Ok(())
    }

    /// `merge(&other)`, taking `other`: into an empty sketch, a move instead of a copy.
    pub fn merge_owned(&mut self, other: Sketch) {
        if self.is_empty() {
            *self = other;
        } else {
            self.merge(&other);
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Sketch::Sparse(h) if h.is_empty())
    }

    /// Distinct users: exact while sparse, a HyperLogLog estimate when dense.
    pub fn estimate(&self) -> u64 {
        match self {
            Sketch::Sparse(hashes) => hashes.len() as u64,
            Sketch::Dense(registers) => estimate_dense(registers).round() as u64,
        }
    }

    /// The stored form: version byte, tag, then the sorted hashes (8 bytes each, little
    /// endian) or the registers.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Sketch::Sparse(hashes) => {
                let mut out = Vec::with_capacity(2 + hashes.len() * 8);
                out.extend_from_slice(&[VERSION, TAG_SPARSE]);
                for h in hashes {
                    out.extend_from_slice(&h.to_le_bytes());
                }
                out
            }
            Sketch::Dense(registers) => {
                let mut out = Vec::with_capacity(2 + M);
                out.extend_from_slice(&[VERSION, TAG_DENSE]);
                out.extend_from_slice(registers);
                out
            }
        }
    }

    /// Reads a stored sketch, checking everything the other methods rely on (order,
    /// sizes, register range), so a damaged blob is an error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Sketch, SketchError> {
        let (&version, rest) = bytes.split_first().ok_or(SketchError::Malformed("empty"))?;
        if version != VERSION {
            return Err(SketchError::Version(version));
        }
        let (&tag, body) = rest.split_first().ok_or(SketchError::Malformed("no tag"))?;
        match tag {
            TAG_SPARSE => {
                if body.len() % 8 != 0 || body.len() / 8 > SPARSE_MAX {
                    return Err(SketchError::Malformed("sparse length"));
                }
                let hashes: Vec<u64> = body
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect();
                if hashes.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(SketchError::Malformed("sparse order"));
                }
                Ok(Sketch::Sparse(hashes))
            }
            TAG_DENSE => {
                check_dense(body)?;
                Ok(Sketch::Dense(body.into()))
            }
            _ => Err(SketchError::Malformed("tag")),
        }
    }
}

/// Checks stored dense registers: `M` of them, each a rank of at most `Q + 1`. (`max`
/// over the whole slice, not an early exit: it runs in vector registers.)
fn check_dense(body: &[u8]) -> Result<(), SketchError> {
    if body.len() != M || u32::from(body.iter().copied().max().unwrap_or(0)) > Q + 1 {
        return Err(SketchError::Malformed("dense registers"));
    }
    Ok(())
}

/// Ertl's improved raw estimator (algorithm 6 of the paper): corrects the small- and
/// large-range bias of the classic estimator from the register histogram alone. With
/// `C_k` registers of rank `k`, it is `α∞ m² / z`, where
/// `z = m τ(1 − C_{q+1}/m) 2^-q + Σ_{1≤k≤q} C_k 2^-k + m σ(C_0/m)`.
fn estimate_dense(registers: &[u8]) -> f64 {
    let q = Q as i32;
    let m = M as f64;
    let (zeros, full, sum) = register_sums(registers);
    let mut z = m * tau(1.0 - full as f64 / m) * 2f64.powi(-q);
    // `sum` is Σ 2^(q-k) over the ranks k in 1..=q, exactly: scaled back, one rounding.
    z += sum as f64 * 2f64.powi(-q);
    z += m * sigma(zeros as f64 / m);
    let alpha_inf = 0.5 / std::f64::consts::LN_2;
    alpha_inf * m * m / z
}

/// `2^(q-k)` for a register of rank `k` in `1..=q`, 0 for the ranks counted apart (0 and
/// `q + 1`) and for bytes no rank has: at most 2^49 each, so `M` of them fit a `u64`.
static TERMS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut k = 1;
    while k <= Q as usize {
        t[k] = 1 << (Q as usize - k);
        k += 1;
    }
    t
};

/// The registers' zeros, full ranks (`q + 1`), and the exact sum of [`TERMS`]. A table
/// lookup and an add per register, in four independent sums; a report estimates every
/// row it shows, and counting a histogram (a load and a store per register) took 2.5×
/// as long.
fn register_sums(registers: &[u8]) -> (usize, usize, u64) {
    let mut sums = [0u64; 4];
    let mut chunks = registers.chunks_exact(4);
    for c in chunks.by_ref() {
        sums[0] += TERMS[usize::from(c[0])];
        sums[1] += TERMS[usize::from(c[1])];
        sums[2] += TERMS[usize::from(c[2])];
        sums[3] += TERMS[usize::from(c[3])];
    }
    let tail: u64 = chunks.remainder().iter().map(|&r| TERMS[usize::from(r)]).sum();
    (count(registers, 0), count(registers, (Q + 1) as u8), sums.iter().sum::<u64>() + tail)
}

/// The registers equal to `rank`, counted in byte lanes 255 at a time (vector compares
/// and adds; a `usize` per register would widen every byte eight times).
fn count(registers: &[u8], rank: u8) -> usize {
    registers.chunks(255).map(|c| usize::from(c.iter().fold(0u8, |n, &r| n.wrapping_add(u8::from(r == rank))))).sum()
}

fn sigma(x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut x, mut y, mut z) = (x, 1.0, x);
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

fn tau(x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut x, mut y, mut z) = (x, 1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A fixed pseudo-random sequence (SplitMix64), so accuracy figures are reproducible.
    fn keys(seed: u64, n: usize) -> impl Iterator<Item = u64> {
        let mut state = seed;
        (0..n).map(move |_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    }

    #[test]
    fn merging_stored_bytes_is_merging_the_stored_sketch() {
        let small = sketch_of(0..100);
        let large = sketch_of(1_000..30_000);
        let other_large = sketch_of(20_000..60_000);
        let empty = Sketch::default();
        let pairs = [
            (&small, &large),
            (&large, &small),
            (&large, &other_large),
            (&small, &small),
            (&empty, &large),
            (&empty, &small),
            (&large, &empty),
        ];
        for (a, b) in pairs {
            let mut expected = a.clone();
            expected.merge(b);
            let mut merged = a.clone();
            merged.merge_bytes(&b.to_bytes()).expect("valid");
            assert_eq!(merged, expected);
            let mut owned = a.clone();
            owned.merge_owned(b.clone());
            assert_eq!(owned, expected);
        }
        let mut damaged = other_large.to_bytes();
        damaged[10] = 200;
        for target in [&large, &small, &empty] {
            let mut merged = target.clone();
            assert!(merged.merge_bytes(&damaged).is_err());
            assert_eq!(&merged, target);
        }
    }

    fn sketch_of(keys: impl IntoIterator<Item = u64>) -> Sketch {
        let mut s = Sketch::default();
        for k in keys {
            s.insert(k);
        }
        s
    }

    fn relative_error(estimate: u64, truth: usize) -> f64 {
        (estimate as f64 - truth as f64).abs() / truth as f64
    }

    #[test]
    fn small_sets_are_exact_and_repeats_do_not_count() {
        let s = sketch_of([1, 2, 3, 2, 1, 3, 3]);
        assert_eq!(s.estimate(), 3);
        let s = sketch_of((0..SPARSE_MAX as u64).chain(0..100));
        assert!(matches!(s, Sketch::Sparse(_)));
        assert_eq!(s.estimate(), SPARSE_MAX as u64);
        assert_eq!(Sketch::default().estimate(), 0);
    }

    #[test]
    fn error_is_within_two_percent_at_scale() {
        for (seed, n) in [(1, 10_000), (2, 100_000), (3, 1_000_000), (4, 3_000)] {
            let s = sketch_of(keys(seed, n));
            let err = relative_error(s.estimate(), n);
            eprintln!(
                "{n} distinct: estimate {} ({:+.3}%)",
                s.estimate(),
                (s.estimate() as f64 / n as f64 - 1.0) * 100.0
            );
            assert!(err < 0.02, "{n} distinct: estimate {} ({:.2}% off)", s.estimate(), err * 100.0);
        }
        // Keys that are not hashes (sequential ids) are spread by `mix`.
        let s = sketch_of(0..50_000);
        assert!(relative_error(s.estimate(), 50_000) < 0.02, "sequential: {}", s.estimate());
    }

    #[test]
    fn merged_days_estimate_the_union() {
        // Two "days" overlapping in a third of their users.
        let all: Vec<u64> = keys(7, 30_000).collect();
        let (a, b) = (sketch_of(all[..20_000].iter().copied()), sketch_of(all[10_000..].iter().copied()));
        let mut union = a.clone();
        union.merge(&b);
        assert_eq!(union, sketch_of(all.iter().copied()));
        assert!(relative_error(union.estimate(), 30_000) < 0.02);
    }

    #[test]
    fn bytes_round_trip_and_bad_bytes_are_errors() {
        for s in [Sketch::default(), sketch_of([5, 9]), sketch_of(keys(9, 5_000))] {
            assert_eq!(Sketch::from_bytes(&s.to_bytes()), Ok(s));
        }
        assert_eq!(sketch_of([1, 2, 3]).to_bytes().len(), 2 + 3 * 8);
        assert_eq!(Sketch::from_bytes(&[]), Err(SketchError::Malformed("empty")));
        assert_eq!(Sketch::from_bytes(&[2, 0]), Err(SketchError::Version(2)));
        assert!(Sketch::from_bytes(&[1, 0, 1, 2, 3]).is_err());
        assert!(Sketch::from_bytes(&[1, 7]).is_err());
        let mut unsorted = sketch_of([1, 2]).to_bytes();
        unsorted[2..].rotate_left(8);
        assert!(Sketch::from_bytes(&unsorted).is_err());
        let mut dense = sketch_of(keys(9, 5_000)).to_bytes();
        dense[10] = 200;
        assert!(Sketch::from_bytes(&dense).is_err());
    }

    #[test]
    fn the_hash_is_fixed_for_version_1() {
        // Stored sketches depend on these values: changing them needs a new VERSION.
        assert_eq!(mix(0), 0);
        assert_eq!(mix(1), 0xb456_bcfc_34c2_cb2c);
        assert_eq!(sketch_of([42]).to_bytes()[..2], [1, 0]);
    }

    fn set() -> impl Strategy<Value = Vec<u64>> {
        // Small key space: overlaps between sets are common; up to 1 500 keys per set so
        // unions cross the sparse limit.
        prop::collection::vec(0u64..4_000, 0..1_500)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn merge_is_associative_and_commutative(a in set(), b in set(), c in set()) {
            let (sa, sb, sc) = (sketch_of(a.clone()), sketch_of(b.clone()), sketch_of(c.clone()));
            let mut ab = sa.clone();
            ab.merge(&sb);
            let mut ba = sb.clone();
            ba.merge(&sa);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone();
            ab_c.merge(&sc);
            let mut bc = sb.clone();
            bc.merge(&sc);
            let mut a_bc = sa.clone();
            a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            // And it is the sketch of the union, whichever way it was built.
            prop_assert_eq!(&ab_c, &sketch_of(a.into_iter().chain(b).chain(c)));
        }

        #[test]
        fn any_stored_bytes_read_without_panicking(tag in 0u8..3, body in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = vec![VERSION, tag];
            bytes.extend(body);
            if let Ok(s) = Sketch::from_bytes(&bytes) {
                prop_assert_eq!(s.to_bytes(), bytes);
                let mut merged = s.clone();
                merged.merge(&s);
                prop_assert_eq!(merged.estimate(), s.estimate());
            }
        }
    }
}
