//! Exponential histograms: validation of points from the wire, merging at a
//! scale chosen before adding (no intermediate holds more than
//! [`MAX_EXP_BUCKETS`] per side), and differences of cumulative points.
//!
//! Every index computation is done in `i64` on ranges validated against what
//! an `f64` can represent at the point's scale, so no input can overflow,
//! panic or make the engine allocate more than a few buckets.

use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets as ProtoBuckets;
use opentelemetry_proto::tonic::metrics::v1::ExponentialHistogramDataPoint;

use crate::value::{checked_sum, opt_max, opt_min, sum_opt, sum_since};

/// The most buckets a merged exponential histogram keeps on each side (the
/// SDK default); a merge that would need more picks a coarser scale first.
pub const MAX_EXP_BUCKETS: usize = 160;

/// The finest scale the OTLP data model allows.
pub const MAX_SCALE: i32 = 20;

/// The coarsest scale the OTLP data model allows.
pub const MIN_SCALE: i32 = -10;

/// The index range of buckets whose bounds are finite doubles at `scale`
/// (bucket `i` covers `(2^(i·2^-scale), 2^((i+1)·2^-scale)]`, and doubles
/// span about `2^-1075 .. 2^1024`).
fn representable(scale: i32) -> (i64, i64) {
    if scale >= 0 {
        (-(1075i64 << scale), 1024i64 << scale)
    } else {
        let by = -scale;
        let step = 1i64 << by;
        (-((1075 + step - 1) >> by), (1024 + step - 1) >> by)
    }
}

/// One side of an exponential histogram: counts from index `offset` on, with
/// no zero count at either end (an empty side has no counts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpBuckets {
    /// Index of the first count.
    pub offset: i32,
    /// Counts.
    pub counts: Vec<u64>,
}

impl ExpBuckets {
    /// From the wire: zeros at the ends trimmed; `None` when an index is
    /// outside what `scale` can represent or the counts overflow `u64`.
    fn from_proto(b: Option<&ProtoBuckets>, scale: i32) -> Option<(Self, u64)> {
        let Some(b) = b else {
            return Some((Self::default(), 0));
        };
        let first = b.bucket_counts.iter().position(|c| *c != 0);
        let last = b.bucket_counts.iter().rposition(|c| *c != 0);
        let (Some(first), Some(last)) = (first, last) else {
            return Some((Self::default(), 0));
        };
        let lo = i64::from(b.offset) + i64::try_from(first).ok()?;
        let hi = i64::from(b.offset) + i64::try_from(last).ok()?;
        let (min, max) = representable(scale);
        if lo < min || hi > max {
            return None;
        }
        let counts = b.bucket_counts[first..=last].to_vec();
        let total = checked_sum(&counts)?;
        Some((
            Self {
                offset: i32::try_from(lo).ok()?,
                counts,
            },
            total,
        ))
    }

    /// The proto form, `None` when empty.
    pub fn to_proto(&self) -> Option<ProtoBuckets> {
        (!self.counts.is_empty()).then(|| ProtoBuckets {
            offset: self.offset,
            bucket_counts: self.counts.clone(),
        })
    }

    /// First and last index, when not empty.
    fn range(&self) -> Option<(i64, i64)> {
        let lo = i64::from(self.offset);
        (!self.counts.is_empty()).then(|| (lo, lo + self.counts.len() as i64 - 1))
    }

    /// Adds this side's counts, coarsened by `by` halvings, into `out`
    /// (which starts at index `start`).
    fn fold_into(&self, by: u32, start: i64, out: &mut [u64]) -> Option<()> {
        let lo = i64::from(self.offset);
        for (i, c) in self.counts.iter().enumerate() {
            let idx = (lo + i as i64) >> by;
            let slot = out.get_mut(usize::try_from(idx - start).ok()?)?;
            *slot = slot.checked_add(*c)?;
        }
        Some(())
    }
}

/// Both sides' ranges merged, at `by` halvings coarser than the inputs'
/// common scale: the number of buckets the merged side would hold.
fn width(ranges: &[(i64, i64, u32)], by: u32) -> u64 {
    let lo = ranges.iter().map(|r| r.0 >> (r.2 + by)).min();
    let hi = ranges.iter().map(|r| r.1 >> (r.2 + by)).max();
    match (lo, hi) {
        (Some(lo), Some(hi)) => (hi - lo + 1) as u64,
        _ => 0,
    }
}

/// Merges the sides `parts` (each with the halvings that bring it to the
/// common scale) into one side `extra` halvings coarser.
fn combine(parts: &[(&ExpBuckets, u32)], extra: u32) -> Option<ExpBuckets> {
    let ranges: Vec<(i64, i64, u32)> = parts
        .iter()
        .filter_map(|(b, by)| b.range().map(|(lo, hi)| (lo, hi, *by)))
        .collect();
    let lo = ranges.iter().map(|r| r.0 >> (r.2 + extra)).min();
    let hi = ranges.iter().map(|r| r.1 >> (r.2 + extra)).max();
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Some(ExpBuckets::default());
    };
    let mut out = vec![0u64; usize::try_from(hi - lo + 1).ok()?];
    for (b, by) in parts {
        b.fold_into(by + extra, lo, &mut out)?;
    }
    let first = out.iter().position(|c| *c != 0).unwrap_or(0);
    let last = out.iter().rposition(|c| *c != 0).map_or(0, |l| l + 1);
    Some(ExpBuckets {
        offset: i32::try_from(lo + first as i64).ok()?,
        counts: out.get(first..last).unwrap_or_default().to_vec(),
    })
}

/// An exponential histogram, valid by construction ([`ExpHist::from_point`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ExpHist {
    /// Resolution: bucket bases are `2^(2^-scale)`.
    pub scale: i32,
    /// Observations in the zero bucket.
    pub zero_count: u64,
    /// Width of the zero bucket.
    pub zero_threshold: f64,
    /// Positive buckets.
    pub positive: ExpBuckets,
    /// Negative buckets.
    pub negative: ExpBuckets,
    /// Observations.
    pub count: u64,
    /// Their sum, when known.
    pub sum: Option<f64>,
    /// Smallest observation, when known.
    pub min: Option<f64>,
    /// Largest observation, when known.
    pub max: Option<f64>,
}

fn finite(v: Option<f64>) -> bool {
    v.is_none_or(f64::is_finite)
}

impl ExpHist {
    /// From an OTLP point; `None` (invalid) when the scale is outside
    /// `-10..=20`, an index cannot be represented at that scale, a number is
    /// not finite, or `count` is not the sum of the buckets. A point wider
    /// than [`MAX_EXP_BUCKETS`] is coarsened on the way in.
    pub fn from_point(p: &ExponentialHistogramDataPoint) -> Option<Self> {
        if !(MIN_SCALE..=MAX_SCALE).contains(&p.scale)
            || !finite(p.sum)
            || !finite(p.min)
            || !finite(p.max)
            || !p.zero_threshold.is_finite()
            || p.zero_threshold < 0.0
        {
            return None;
        }
        let (positive, pos) = ExpBuckets::from_proto(p.positive.as_ref(), p.scale)?;
        let (negative, neg) = ExpBuckets::from_proto(p.negative.as_ref(), p.scale)?;
        let total = pos.checked_add(neg)?.checked_add(p.zero_count)?;
        if total != p.count {
            return None;
        }
        let h = Self {
            scale: p.scale,
            zero_count: p.zero_count,
            zero_threshold: p.zero_threshold,
            positive,
            negative,
            count: p.count,
            sum: p.sum,
            min: p.min,
            max: p.max,
        };
        h.merged(None)
    }

    /// `self` merged with `other` (or alone, to coarsen it): the scale is
    /// the smaller of the two, made coarser until each side fits in
    /// [`MAX_EXP_BUCKETS`], chosen before any bucket is added. `None` when
    /// a count would overflow or the sum would not be finite.
    pub fn merged(&self, other: Option<&ExpHist>) -> Option<ExpHist> {
        let scale = other.map_or(self.scale, |o| self.scale.min(o.scale));
        let by = |h: &ExpHist| (h.scale - scale) as u32;
        let sides = |pick: fn(&ExpHist) -> &ExpBuckets| {
            let mut v = vec![(pick(self), by(self))];
            if let Some(o) = other {
                v.push((pick(o), by(o)));
            }
            v
        };
        let (pos, neg) = (sides(|h| &h.positive), sides(|h| &h.negative));
        let ranges = |parts: &[(&ExpBuckets, u32)]| -> Vec<(i64, i64, u32)> {
            parts
                .iter()
                .filter_map(|(b, by)| b.range().map(|(lo, hi)| (lo, hi, *by)))
                .collect()
        };
        let (rp, rn) = (ranges(&pos), ranges(&neg));
        let mut extra = 0u32;
        while scale - extra as i32 > MIN_SCALE
            && width(&rp, extra).max(width(&rn, extra)) > MAX_EXP_BUCKETS as u64
        {
            extra += 1;
        }
        let count = match other {
            Some(o) => self.count.checked_add(o.count)?,
            None => self.count,
        };
        let zero_count = match other {
            Some(o) => self.zero_count.checked_add(o.zero_count)?,
            None => self.zero_count,
        };
        let sum = match other {
            Some(o) => sum_opt(self.sum, o.sum)?,
            None => self.sum,
        };
        Some(ExpHist {
            scale: scale - extra as i32,
            zero_count,
            zero_threshold: other.map_or(self.zero_threshold, |o| {
                self.zero_threshold.max(o.zero_threshold)
            }),
            positive: combine(&pos, extra)?,
            negative: combine(&neg, extra)?,
            count,
            sum,
            min: other.map_or(self.min, |o| opt_min(self.min, o.min)),
            max: other.map_or(self.max, |o| opt_max(self.max, o.max)),
        })
    }

    /// `self - earlier` for cumulative points of one stream, at the coarser
    /// of the two scales; `None` on a reset (a count went down).
    pub fn since(&self, earlier: &ExpHist) -> Option<ExpHist> {
        if self.count < earlier.count || self.zero_count < earlier.zero_count {
            return None;
        }
        let scale = self.scale.min(earlier.scale);
        let at = |h: &ExpHist, pick: fn(&ExpHist) -> &ExpBuckets| {
            combine(&[(pick(h), (h.scale - scale) as u32)], 0)
        };
        let sub = |now: ExpBuckets, before: ExpBuckets| -> Option<ExpBuckets> {
            let mut out = now;
            for (i, c) in before.counts.iter().enumerate() {
                let pos = i64::from(before.offset) + i as i64 - i64::from(out.offset);
                let slot = usize::try_from(pos)
                    .ok()
                    .and_then(|p| out.counts.get_mut(p))?;
                *slot = slot.checked_sub(*c)?;
            }
            combine(&[(&out, 0)], 0)
        };
        Some(ExpHist {
            scale,
            zero_count: self.zero_count - earlier.zero_count,
            zero_threshold: self.zero_threshold,
            positive: sub(at(self, |h| &h.positive)?, at(earlier, |h| &h.positive)?)?,
            negative: sub(at(self, |h| &h.negative)?, at(earlier, |h| &h.negative)?)?,
            count: self.count - earlier.count,
            sum: sum_since(self.sum, earlier.sum),
            min: None,
            max: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(offset: i32, counts: Vec<u64>) -> Option<ProtoBuckets> {
        Some(ProtoBuckets {
            offset,
            bucket_counts: counts,
        })
    }

    fn point(scale: i32, pos: Option<ProtoBuckets>, count: u64) -> ExponentialHistogramDataPoint {
        ExponentialHistogramDataPoint {
            scale,
            positive: pos,
            count,
            sum: Some(1.0),
            ..Default::default()
        }
    }

    #[test]
    fn merge_at_the_common_scale() {
        let a = ExpHist::from_point(&point(2, side(4, vec![1, 1, 1, 1]), 4)).unwrap();
        let b = ExpHist::from_point(&point(1, side(2, vec![3]), 3)).unwrap();
        let m = a.merged(Some(&b)).unwrap();
        // a at scale 1: indexes 4,5,6,7 → 2,2,3,3; plus b's 3 at index 2.
        assert_eq!(m.scale, 1);
        assert_eq!(
            m.positive,
            ExpBuckets {
                offset: 2,
                counts: vec![5, 2]
            }
        );
        assert_eq!((m.count, m.sum), (7, Some(2.0)));
    }

    #[test]
    fn a_wide_merge_chooses_its_scale_before_adding() {
        // 0.001 and 1e6 at scale 20: ~31 M indexes apart.
        let idx = |v: f64| ((v.log2()) * f64::from(1 << 20)).floor() as i32;
        let a = ExpHist::from_point(&point(20, side(idx(0.001), vec![1]), 1)).unwrap();
        let b = ExpHist::from_point(&point(20, side(idx(1e6), vec![1]), 1)).unwrap();
        let m = a.merged(Some(&b)).unwrap();
        assert!(m.positive.counts.len() <= MAX_EXP_BUCKETS);
        assert_eq!(m.positive.counts.iter().sum::<u64>(), 2);
        assert_eq!(m.scale, 2, "the finest scale at which both fit in 160");
    }

    #[test]
    fn unrepresentable_or_inconsistent_points_are_invalid() {
        for p in [
            point(20, side(i32::MAX, vec![1]), 1),
            point(20, side(i32::MIN, vec![1]), 1),
            point(-10, side(i32::MAX - 1, vec![1, 1]), 2),
            point(100, side(0, vec![1]), 1),
            point(0, side(0, vec![1, 1]), 3),
            point(0, side(0, vec![u64::MAX, 1]), 0),
        ] {
            assert_eq!(ExpHist::from_point(&p), None, "{p:?}");
        }
        let mut nan = point(0, side(0, vec![1]), 1);
        nan.sum = Some(f64::NAN);
        assert_eq!(ExpHist::from_point(&nan), None);
    }

    #[test]
    fn a_wide_point_is_coarsened_on_the_way_in() {
        let p = point(20, side(-1000, vec![1; 100_000]), 100_000);
        let h = ExpHist::from_point(&p).unwrap();
        assert!(h.positive.counts.len() <= MAX_EXP_BUCKETS);
        assert_eq!(h.positive.counts.iter().sum::<u64>(), 100_000);
    }

    #[test]
    fn counts_that_would_overflow_refuse_the_merge() {
        let a = ExpHist::from_point(&point(0, side(0, vec![u64::MAX]), u64::MAX)).unwrap();
        assert_eq!(a.merged(Some(&a)), None);
    }

    #[test]
    fn since_subtracts_at_the_coarser_scale() {
        let before = ExpHist::from_point(&point(1, side(2, vec![1, 1]), 2)).unwrap();
        let now = ExpHist::from_point(&point(0, side(1, vec![5]), 5)).unwrap();
        let d = now.since(&before).unwrap();
        assert_eq!(
            (d.scale, d.count, d.positive.clone()),
            (
                0,
                3,
                ExpBuckets {
                    offset: 1,
                    counts: vec![3]
                }
            )
        );
        assert_eq!(before.since(&now), None, "a count went down: a reset");
    }
}
