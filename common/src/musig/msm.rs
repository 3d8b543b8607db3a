//! Multi-scalar multiplication `Σ aᵢ·Pᵢ` over secp256k1, for key aggregation.
//!
//! Large sets use the bucket method (Pippenger) with signed windows: every window of
//! every scalar drops its point into a bucket, and the buckets of all windows are
//! summed together in affine coordinates, pairwise, one level at a time, each level's
//! divisions sharing one field inversion (Montgomery's trick). That makes an addition
//! about six field multiplications. The buckets of a window are then combined by the
//! running-sum trick in Jacobian coordinates, and the windows by doubling (Horner).
//! Small sets go through `k256`'s interleaved multiplication with the endomorphism,
//! which has no per-window bucket overhead.
//!
//! Everything here is variable-time: it only ever sees public keys and public
//! coefficients. Field elements are `k256`'s; their magnitude rules (at most 8 into a
//! multiplication, the bound given to `negate`) are checked by `k256` in debug builds.

// k256's field elements implement their arithmetic on references (`a * &b`), and the
// formulas read as the textbook ones; these two style lints argue with both.
#![allow(clippy::op_ref, clippy::assign_op_pattern)]

use k256::elliptic_curve::ops::LinearCombinationExt as _;
use k256::elliptic_curve::sec1::{FromEncodedPoint as _, ToEncodedPoint as _};
use k256::elliptic_curve::PrimeField as _;
use k256::{AffinePoint, EncodedPoint, FieldBytes, FieldElement as Fe, ProjectivePoint};

/// Below this many points [`msm`] uses `k256`'s interleaved multiplication (measured
/// crossover on the development machine: the bucket method wins from about 24 points).
/// Key aggregation does not come here below 16 keys: one libsecp256k1 multiplication per
/// key is cheaper there (see `keyagg::SMALL_SET`).
const BUCKET_THRESHOLD: usize = 24;

/// An affine point with coordinates of magnitude 1 (never the point at infinity).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Affine {
    x: Fe,
    y: Fe,
}

impl Affine {
    /// Reads a SEC1 uncompressed encoding (`04 || x || y`) of a point already known to
    /// be on the curve (as every `Point` is); `None` when the bytes are not one.
    pub(crate) fn from_uncompressed(bytes: &[u8; 65]) -> Option<Affine> {
        if bytes[0] != 0x04 {
            return None;
        }
        let x = Option::from(Fe::from_bytes(FieldBytes::from_slice(&bytes[1..33])))?;
        let y = Option::from(Fe::from_bytes(FieldBytes::from_slice(&bytes[33..65])))?;
        Some(Affine { x, y })
    }

    /// The SEC1 uncompressed encoding.
    pub(crate) fn to_uncompressed(self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[0] = 0x04;
        out[1..33].copy_from_slice(&self.x.to_bytes());
        out[33..65].copy_from_slice(&self.y.to_bytes());
        out
    }

    fn negated(self) -> Affine {
        Affine { x: self.x, y: self.y.negate(1).normalize_weak() }
    }
}

/// `a - b` for `b` of magnitude at most 1, weakly normalized.
fn sub(a: &Fe, b: &Fe) -> Fe {
    (*a + &b.negate(1)).normalize_weak()
}

/// A point in Jacobian coordinates `(X/Z², Y/Z³)`, or the point at infinity.
#[derive(Clone, Copy, Debug)]
struct Jacobian {
    x: Fe,
    y: Fe,
    z: Fe,
    infinity: bool,
}

impl Jacobian {
    const INFINITY: Jacobian = Jacobian { x: Fe::ZERO, y: Fe::ONE, z: Fe::ZERO, infinity: true };

    fn from_affine(p: &Affine) -> Jacobian {
        Jacobian { x: p.x, y: p.y, z: Fe::ONE, infinity: false }
    }

    /// `2·self` (`dbl-2009-l` style, `a = 0`). secp256k1 has no point of order 2.
    fn double(&self) -> Jacobian {
        if self.infinity {
            return *self;
        }
        let yy = self.y.square();
        let s = (self.x * &yy).mul_single(4);
        let m = self.x.square().mul_single(3);
        let x3 = (m.square() + &s.double().negate(8)).normalize_weak();
        let y3 = (m * &(s + &x3.negate(1))) + &yy.square().mul_single(8).negate(8);
        let z3 = (self.y * &self.z).double().normalize_weak();
        Jacobian { x: x3, y: y3.normalize_weak(), z: z3, infinity: false }
    }

    /// `self + p` for an affine `p`.
    fn add_affine(&self, p: &Affine) -> Jacobian {
        if self.infinity {
            return Jacobian::from_affine(p);
        }
        let z1z1 = self.z.square();
        let u2 = p.x * &z1z1;
        let s2 = p.y * &self.z * &z1z1;
        let h = sub(&u2, &self.x);
        let r = sub(&s2, &self.y);
        if bool::from(h.normalizes_to_zero()) {
            return if bool::from(r.normalizes_to_zero()) { self.double() } else { Self::INFINITY };
        }
        let hh = h.square();
        let hhh = h * &hh;
        let v = self.x * &hh;
        let x3 = (r.square() + &hhh.negate(1) + &v.double().negate(2)).normalize_weak();
        let y3 = sub(&(r * &sub(&v, &x3)), &(self.y * &hhh));
        Jacobian { x: x3, y: y3, z: self.z * &h, infinity: false }
    }

    /// `self + q`.
    fn add(&self, q: &Jacobian) -> Jacobian {
        if self.infinity {
            return *q;
        }
        if q.infinity {
            return *self;
        }
        let z1z1 = self.z.square();
        let z2z2 = q.z.square();
        let u1 = self.x * &z2z2;
        let u2 = q.x * &z1z1;
        let s1 = self.y * &q.z * &z2z2;
        let s2 = q.y * &self.z * &z1z1;
        let h = sub(&u2, &u1);
        let r = sub(&s2, &s1);
        if bool::from(h.normalizes_to_zero()) {
            return if bool::from(r.normalizes_to_zero()) { self.double() } else { Self::INFINITY };
        }
        let hh = h.square();
        let hhh = h * &hh;
        let v = u1 * &hh;
        let x3 = (r.square() + &hhh.negate(1) + &v.double().negate(2)).normalize_weak();
        let y3 = sub(&(r * &sub(&v, &x3)), &(s1 * &hhh));
        Jacobian { x: x3, y: y3, z: self.z * &q.z * &h, infinity: false }
    }

    fn to_affine(self) -> Option<Affine> {
        if self.infinity {
            return None;
        }
        let zinv: Fe = Option::from(self.z.invert())?;
        let zinv2 = zinv.square();
        Some(Affine { x: (self.x * &zinv2).normalize(), y: (self.y * &zinv2 * &zinv).normalize() })
    }
}

/// `Σ scalars[i]·points[i]`, `None` for the point at infinity. Scalars are 32-byte
/// big-endian integers below the group order; `points` and `scalars` pair up by index.
pub(crate) fn msm(points: &[Affine], scalars: &[[u8; 32]]) -> Option<Affine> {
    debug_assert_eq!(points.len(), scalars.len());
    if points.len() < BUCKET_THRESHOLD {
        interleaved(points, scalars)
    } else {
        buckets(points, scalars)
    }
}

/// Small sets: `k256`'s Straus multiplication with the GLV endomorphism.
pub(crate) fn interleaved(points: &[Affine], scalars: &[[u8; 32]]) -> Option<Affine> {
    let terms: Option<Vec<(ProjectivePoint, k256::Scalar)>> = points
        .iter()
        .zip(scalars)
        .map(|(p, a)| {
            let encoded = EncodedPoint::from_bytes(p.to_uncompressed()).ok()?;
            let point: AffinePoint = Option::from(AffinePoint::from_encoded_point(&encoded))?;
            let scalar: k256::Scalar =
                Option::from(k256::Scalar::from_repr(FieldBytes::clone_from_slice(a)))?;
            Some((ProjectivePoint::from(point), scalar))
        })
        .collect();
    let sum = ProjectivePoint::lincomb_ext(terms?.as_slice()).to_affine();
    let encoded = sum.to_encoded_point(false);
    let bytes: [u8; 65] = encoded.as_bytes().try_into().ok()?;
    Affine::from_uncompressed(&bytes)
}

/// Window width for `n` points: minimises the estimated cost in field multiplications
/// (about 6 per batched affine addition, 27 per bucket in the running sums).
fn window_bits(n: usize) -> usize {
    (2..=16usize).min_by_key(|&c| (256 / c + 1) * (6 * n + 27 * (1usize << (c - 1)))).unwrap_or(8)
}

/// The scalar as four little-endian 64-bit limbs.
fn limbs(bytes: &[u8; 32]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (i, limb) in out.iter_mut().enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[32 - 8 * (i + 1)..32 - 8 * i]);
        *limb = u64::from_be_bytes(word);
    }
    out
}

/// Bits `[start, start + c)` of the scalar (zero past bit 255).
fn bits_at(limbs: &[u64; 4], start: usize, c: usize) -> u64 {
    if start >= 256 {
        return 0;
    }
    let (limb, offset) = (start / 64, start % 64);
    let mut v = limbs[limb] >> offset;
    if offset + c > 64 && limb + 1 < 4 {
        v |= limbs[limb + 1] << (64 - offset);
    }
    v & ((1u64 << c) - 1)
}

/// Signed base-2^c digits in `[-(2^(c-1) - 1), 2^(c-1)]`, `windows` of them.
fn signed_digits(scalar: &[u8; 32], c: usize, windows: usize, out: &mut Vec<i32>) {
    let l = limbs(scalar);
    let half = 1i64 << (c - 1);
    let mut carry = 0i64;
    for w in 0..windows {
        let mut v = bits_at(&l, w * c, c) as i64 + carry;
        carry = 0;
        if v > half {
            v -= 1i64 << c;
            carry = 1;
        }
        out.push(v as i32);
    }
}

/// The bucket method (see the module documentation).
fn buckets(points: &[Affine], scalars: &[[u8; 32]]) -> Option<Affine> {
    buckets_with(points, scalars, window_bits(points.len()))
}

/// The bucket method with windows of `c` bits.
fn buckets_with(points: &[Affine], scalars: &[[u8; 32]], c: usize) -> Option<Affine> {
    let windows = 256 / c + 1;
    let per_window = 1usize << (c - 1);
    let mut adder = BucketAdder::new(windows * per_window);
    let mut digits = Vec::with_capacity(windows);
    for (p, s) in points.iter().zip(scalars) {
        digits.clear();
        signed_digits(s, c, windows, &mut digits);
        let negated = p.negated();
        for (w, &d) in digits.iter().enumerate() {
            if d != 0 {
                let q = if d < 0 { &negated } else { p };
                adder.push(w * per_window + d.unsigned_abs() as usize - 1, q);
            }
        }
    }
    let buckets = adder.finish();
    let mut acc = Jacobian::INFINITY;
    for w in (0..windows).rev() {
        for _ in 0..c {
            acc = acc.double();
        }
        let window = &buckets[w * per_window..(w + 1) * per_window];
        acc = acc.add(&window_sum(per_window, |b| window[b].as_ref()));
    }
    acc.to_affine()
}

/// Additions pending together: enough to make the shared inversion cheap per addition.
const BATCH: usize = 256;

/// Accumulates points into buckets in affine coordinates, batching the additions so
/// that each batch shares one inversion. A batch adds at most once to any bucket; a
/// point for a bucket already in the batch waits for the next one.
struct BucketAdder {
    buckets: Vec<Option<Affine>>,
    busy: Vec<bool>,
    batch: Vec<(usize, Affine, Step)>,
    dens: Vec<Fe>,
    prefix: Vec<Fe>,
    waiting: Vec<(usize, Affine)>,
}

impl BucketAdder {
    fn new(count: usize) -> BucketAdder {
        BucketAdder {
            buckets: vec![None; count],
            busy: vec![false; count],
            batch: Vec::with_capacity(BATCH),
            dens: Vec::with_capacity(BATCH),
            prefix: Vec::with_capacity(BATCH),
            waiting: Vec::new(),
        }
    }

    /// Adds `q` to bucket `k` (now or in a later batch).
    fn push(&mut self, k: usize, q: &Affine) {
        if self.busy[k] {
            self.waiting.push((k, *q));
        } else {
            self.start(k, q);
            if self.batch.len() >= BATCH {
                self.flush(BATCH / 2);
            }
        }
    }

    /// Schedules `bucket[k] + q` for a bucket not in the batch.
    fn start(&mut self, k: usize, q: &Affine) {
        let Some(b) = &self.buckets[k] else {
            self.buckets[k] = Some(*q);
            return;
        };
        match classify(b, q) {
            (Step::Cancel, _) => self.buckets[k] = None,
            (step, den) => {
                self.batch.push((k, *q, step));
                self.dens.push(den);
                self.busy[k] = true;
            }
        }
    }

    /// Runs batches until fewer than `min` additions are ready.
    fn flush(&mut self, min: usize) {
        while !self.batch.is_empty() && self.batch.len() >= min {
            batch_invert(&mut self.dens, &mut self.prefix);
            for ((k, q, step), inv) in self.batch.drain(..).zip(&self.dens) {
                self.busy[k] = false;
                if let Some(b) = &self.buckets[k] {
                    self.buckets[k] = apply(step, inv, b, &q);
                }
            }
            self.dens.clear();
            for (k, q) in std::mem::take(&mut self.waiting) {
                self.push_waiting(k, &q);
            }
        }
    }

    fn push_waiting(&mut self, k: usize, q: &Affine) {
        if self.busy[k] {
            self.waiting.push((k, *q));
        } else {
            self.start(k, q);
        }
    }

    /// Every pending addition done: the buckets.
    fn finish(mut self) -> Vec<Option<Affine>> {
        while !self.batch.is_empty() || !self.waiting.is_empty() {
            self.flush(1);
            for (k, q) in std::mem::take(&mut self.waiting) {
                self.push_waiting(k, &q);
            }
        }
        self.buckets
    }
}

/// `Σ (b+1)·bucket(b)` by the running-sum trick.
fn window_sum<'a>(count: usize, bucket: impl Fn(usize) -> Option<&'a Affine>) -> Jacobian {
    let mut running = Jacobian::INFINITY;
    let mut sum = Jacobian::INFINITY;
    for b in (0..count).rev() {
        if let Some(p) = bucket(b) {
            running = running.add_affine(p);
        }
        sum = sum.add(&running);
    }
    sum
}

/// What one pairwise addition in a reduction level does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Two distinct x: the chord.
    Add,
    /// The same point twice (duplicate keys): the tangent.
    Double,
    /// A point and its negation: nothing is left.
    Cancel,
}

/// The kind of addition `p + q` needs and the denominator of its slope.
fn classify(p: &Affine, q: &Affine) -> (Step, Fe) {
    let dx = sub(&q.x, &p.x);
    if !bool::from(dx.normalizes_to_zero()) {
        return (Step::Add, dx);
    }
    if bool::from((p.y + &q.y).normalizes_to_zero()) {
        (Step::Cancel, Fe::ONE)
    } else {
        (Step::Double, p.y.double())
    }
}

/// `p + q` given the inverse of the slope's denominator from [`classify`].
fn apply(step: Step, inv: &Fe, p: &Affine, q: &Affine) -> Option<Affine> {
    let lambda = match step {
        Step::Cancel => return None,
        Step::Add => sub(&q.y, &p.y) * inv,
        Step::Double => p.x.square().mul_single(3) * inv,
    };
    let x3 = (lambda.square() + &p.x.negate(1) + &q.x.negate(1)).normalize_weak();
    let y3 = sub(&(lambda * &sub(&p.x, &x3)), &p.y);
    Some(Affine { x: x3, y: y3 })
}

/// Replaces every element by its inverse with one field inversion (Montgomery's trick).
/// Every element must be non-zero, which [`classify`] guarantees.
fn batch_invert(values: &mut [Fe], prefix: &mut Vec<Fe>) {
    prefix.clear();
    let mut acc = Fe::ONE;
    for v in values.iter() {
        prefix.push(acc);
        acc = acc * v;
    }
    // A product of non-zero field elements is non-zero, so the inversion succeeds.
    let mut inv: Fe = Option::from(acc.invert()).unwrap_or(Fe::ZERO);
    for (v, before) in values.iter_mut().zip(prefix.iter()).rev() {
        let original = *v;
        *v = inv * before;
        inv = inv * &original;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::elliptic_curve::Field as _;
    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng as _};

    fn random_terms(n: usize, seed: u64) -> (Vec<Affine>, Vec<[u8; 32]>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut points = Vec::new();
        let mut scalars = Vec::new();
        for _ in 0..n {
            let k = k256::Scalar::random(&mut rng);
            let p = (ProjectivePoint::GENERATOR * k).to_affine().to_encoded_point(false);
            points.push(Affine::from_uncompressed(p.as_bytes().try_into().unwrap()).unwrap());
            let a = k256::Scalar::random(&mut rng);
            scalars.push(a.to_bytes().into());
        }
        (points, scalars)
    }

    pub(super) fn random_terms_pub(n: usize, seed: u64) -> (Vec<Affine>, Vec<[u8; 32]>) {
        random_terms(n, seed)
    }

    fn same(a: Option<Affine>, b: Option<Affine>) -> bool {
        a.map(Affine::to_uncompressed) == b.map(Affine::to_uncompressed)
    }

    #[test]
    fn buckets_match_interleaved() {
        for (n, seed) in [(1, 1), (2, 2), (5, 3), (24, 4), (100, 5), (700, 6)] {
            let (points, scalars) = random_terms(n, seed);
            assert!(same(buckets(&points, &scalars), interleaved(&points, &scalars)), "n = {n}");
        }
    }

    #[test]
    fn duplicates_negations_and_special_scalars() {
        let (mut points, mut scalars) = random_terms(40, 7);
        // The same point with the same scalar (doubling in a bucket).
        points[1] = points[0];
        scalars[1] = scalars[0];
        // A point and its negation with the same scalar (they cancel).
        points[3] = points[2].negated();
        scalars[3] = scalars[2];
        // Scalars 0, 1, n - 1 and the all-ones top window.
        scalars[4] = [0; 32];
        scalars[5] = {
            let mut one = [0; 32];
            one[31] = 1;
            one
        };
        scalars[6] = (-k256::Scalar::ONE).to_bytes().into();
        scalars[7] = (-k256::Scalar::from(2u64)).to_bytes().into();
        assert!(same(buckets(&points, &scalars), interleaved(&points, &scalars)));
        // A set summing to infinity.
        let p = points[9];
        let s = scalars[9];
        assert!(buckets(&[p, p.negated()], &[s, s]).is_none());
        assert!(msm(&[p, p.negated()], &[s, s]).is_none());
        let many: Vec<Affine> = (0..60).map(|i| if i % 2 == 0 { p } else { p.negated() }).collect();
        assert!(buckets(&many, &vec![s; 60]).is_none());
    }

    #[test]
    fn random_scalars_vs_interleaved_over_many_sizes() {
        let mut rng = StdRng::seed_from_u64(8);
        for _ in 0..6 {
            let n = rng.gen_range(24..300);
            let (points, scalars) = random_terms(n, rng.gen());
            assert!(same(buckets(&points, &scalars), interleaved(&points, &scalars)), "n = {n}");
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// Nanoseconds this thread has run on a CPU (immune to other processes' load).
    fn cpu_ns() -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        s.split_whitespace().next().unwrap().parse().unwrap()
    }

    #[test]
    #[ignore]
    fn time_windows() {
        let (points, scalars) = super::tests::random_terms_pub(2000, 1);
        println!("chosen c = {}", window_bits(2000));
        for c in 5..=11 {
            let t = cpu_ns();
            for _ in 0..5 {
                std::hint::black_box(buckets_with(&points, &scalars, c));
            }
            let per = (cpu_ns() - t) as f64 / 1e3 / 5.0;
            println!("c={c}: {:.2} us/key", per / 2000.0);
        }
    }

    #[test]
    #[ignore]
    fn time_sizes() {
        for n in [2usize, 3, 8, 16, 24, 32, 64, 256, 2000] {
            let (points, scalars) = super::tests::random_terms_pub(n, 1);
            let reps = (20000 / n).max(3);
            type F = fn(&[Affine], &[[u8; 32]]) -> Option<Affine>;
            for (name, f) in [("interleaved", interleaved as F), ("buckets", buckets)] {
                let t = cpu_ns();
                for _ in 0..reps {
                    std::hint::black_box(f(&points, &scalars));
                }
                let per = (cpu_ns() - t) as f64 / 1e3 / reps as f64;
                println!("n={n} {name}: {per:.1} us total, {:.2} us/key", per / n as f64);
            }
            let pts: Vec<musig2::secp::Point> = points
                .iter()
                .map(|p| musig2::secp::Point::from_slice(&p.to_uncompressed()).unwrap())
                .collect();
            let reps = (4000 / n).max(2);
            let t = cpu_ns();
            for _ in 0..reps {
                std::hint::black_box(musig2::KeyAggContext::new(pts.iter().copied()).unwrap());
            }
            let per = (cpu_ns() - t) as f64 / 1e3 / reps as f64;
            println!("n={n} musig2: {per:.1} us total, {:.2} us/key", per / n as f64);
        }
    }
}

#[cfg(test)]
mod fe_timing {
    use super::*;
    #[test]
    #[ignore]
    fn time_mul() {
        let cpu = || -> u64 {
            let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
            s.split_whitespace().next().unwrap().parse().unwrap()
        };
        let mut a = Fe::from_u64(12345);
        let b = Fe::from_u64(987654321).invert().unwrap();
        let t = cpu();
        for _ in 0..10_000_000 {
            a = std::hint::black_box(a * &b);
        }
        println!("mul: {:.2} ns", (cpu() - t) as f64 / 1e7);
        let t = cpu();
        for _ in 0..10_000_000 {
            a = std::hint::black_box(a.square());
        }
        println!("sqr: {:.2} ns", (cpu() - t) as f64 / 1e7);
        let t = cpu();
        for _ in 0..1000 {
            a = std::hint::black_box(a.invert().unwrap());
        }
        println!("inv: {:.2} ns", (cpu() - t) as f64 / 1e3);
    }
}
