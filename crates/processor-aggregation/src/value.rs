//! Accumulators for one series in one window, and the per-stream state that
//! turns cumulative points into deltas.

use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets as ProtoBuckets;
use opentelemetry_proto::tonic::metrics::v1::{ExponentialHistogramDataPoint, HistogramDataPoint};

use crate::config::GaugePolicy;

/// The most buckets a merged exponential histogram keeps on each side
/// (the SDK default); past it, it is downscaled.
pub const MAX_EXP_BUCKETS: usize = 160;

/// Gauge points and cumulative non-monotonic sums in one window.
#[derive(Clone, Debug, PartialEq)]
pub struct GaugeAcc {
    /// Sum of values.
    pub sum: f64,
    /// Number of points.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Value with the latest timestamp.
    pub last: f64,
    /// That timestamp.
    pub last_time: u64,
}

impl GaugeAcc {
    /// One point.
    pub fn new(value: f64, time: u64) -> Self {
        Self {
            sum: value,
            count: 1,
            min: value,
            max: value,
            last: value,
            last_time: time,
        }
    }
    /// Adds a point.
    pub fn add(&mut self, value: f64, time: u64) {
        self.sum += value;
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if time >= self.last_time {
            self.last = value;
            self.last_time = time;
        }
    }
    /// The window's value under `policy`.
    pub fn value(&self, policy: GaugePolicy) -> f64 {
        match policy {
            GaugePolicy::Sum => self.sum,
            GaugePolicy::Last => self.last,
            GaugePolicy::Min => self.min,
            GaugePolicy::Max => self.max,
            GaugePolicy::Mean => self.sum / self.count as f64,
        }
    }
}

/// An explicit-bucket histogram.
#[derive(Clone, Debug, PartialEq)]
pub struct Hist {
    /// Observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Smallest observation, when known.
    pub min: Option<f64>,
    /// Largest observation, when known.
    pub max: Option<f64>,
    /// Bucket bounds (empty when the buckets were dropped).
    pub bounds: Vec<f64>,
    /// Bucket counts (`bounds.len() + 1`, or empty).
    pub buckets: Vec<u64>,
    /// Points with other bounds were merged: buckets are no longer meaningful.
    pub mixed_bounds: bool,
}

fn opt_min(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) | (None, x) => x,
    }
}

fn opt_max(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) | (None, x) => x,
    }
}

impl Hist {
    /// From an OTLP point; `None` when its buckets do not fit its bounds.
    pub fn from_point(p: &HistogramDataPoint) -> Option<Self> {
        let buckets_ok =
            p.bucket_counts.is_empty() || p.bucket_counts.len() == p.explicit_bounds.len() + 1;
        buckets_ok.then(|| Self {
            count: p.count,
            sum: p.sum.unwrap_or(0.0),
            min: p.min,
            max: p.max,
            bounds: if p.bucket_counts.is_empty() {
                vec![]
            } else {
                p.explicit_bounds.clone()
            },
            buckets: p.bucket_counts.clone(),
            mixed_bounds: false,
        })
    }

    /// Merges another window's worth: counts, sums, min and max always;
    /// buckets only while every merged histogram has the same bounds.
    pub fn merge(&mut self, other: &Hist) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = opt_min(self.min, other.min);
        self.max = opt_max(self.max, other.max);
        if self.mixed_bounds || other.mixed_bounds || self.bounds != other.bounds {
            self.mixed_bounds = true;
            self.bounds.clear();
            self.buckets.clear();
        } else {
            for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
                *a += b;
            }
        }
    }

    /// `self - earlier` for cumulative points of one stream; `None` when
    /// `self` cannot follow `earlier` (a reset). Min and max of the
    /// difference are unknown and left out.
    pub fn since(&self, earlier: &Hist) -> Option<Hist> {
        if self.count < earlier.count || self.bounds != earlier.bounds {
            return None;
        }
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (now, before) in self.buckets.iter().zip(&earlier.buckets) {
            buckets.push(now.checked_sub(*before)?);
        }
        Some(Hist {
            count: self.count - earlier.count,
            sum: self.sum - earlier.sum,
            min: None,
            max: None,
            bounds: self.bounds.clone(),
            buckets,
            mixed_bounds: false,
        })
    }
}

/// One side of an exponential histogram: counts from index `offset` on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpBuckets {
    /// Index of the first count.
    pub offset: i32,
    /// Counts.
    pub counts: Vec<u64>,
}

impl ExpBuckets {
    fn from_proto(b: Option<&ProtoBuckets>) -> Self {
        b.map(|b| Self {
            offset: b.offset,
            counts: b.bucket_counts.clone(),
        })
        .unwrap_or_default()
    }

    /// The proto form.
    pub fn to_proto(&self) -> ProtoBuckets {
        ProtoBuckets {
            offset: self.offset,
            bucket_counts: self.counts.clone(),
        }
    }

    /// Halves the resolution `by` times: bucket `i` goes to `i >> by`.
    fn downscale(&mut self, by: u32) {
        if by == 0 || self.counts.is_empty() {
            return;
        }
        let by = by.min(31);
        let new_offset = self.offset >> by;
        let last = (self.offset + self.counts.len() as i32 - 1) >> by;
        let mut out = vec![0u64; (last - new_offset + 1) as usize];
        for (i, c) in self.counts.iter().enumerate() {
            let idx = (self.offset + i as i32) >> by;
            out[(idx - new_offset) as usize] += c;
        }
        self.offset = new_offset;
        self.counts = out;
    }

    fn add(&mut self, other: &ExpBuckets) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        let start = self.offset.min(other.offset);
        let end =
            (self.offset + self.counts.len() as i32).max(other.offset + other.counts.len() as i32);
        let mut out = vec![0u64; (end - start) as usize];
        for (src, off) in [(&self.counts, self.offset), (&other.counts, other.offset)] {
            for (i, c) in src.iter().enumerate() {
                out[(off - start) as usize + i] += c;
            }
        }
        self.offset = start;
        self.counts = out;
    }

    /// `self - earlier` at the same scale; `None` if any count would go negative.
    fn since(&self, earlier: &ExpBuckets) -> Option<ExpBuckets> {
        let mut out = self.clone();
        for (i, c) in earlier.counts.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            let pos = earlier.offset + i as i32 - out.offset;
            let slot = usize::try_from(pos)
                .ok()
                .and_then(|p| out.counts.get_mut(p))?;
            *slot = slot.checked_sub(*c)?;
        }
        Some(out)
    }

    fn span(&self) -> usize {
        self.counts.len()
    }
}

/// An exponential histogram.
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
    /// Their sum.
    pub sum: f64,
    /// Smallest observation, when known.
    pub min: Option<f64>,
    /// Largest observation, when known.
    pub max: Option<f64>,
}

impl ExpHist {
    /// From an OTLP point.
    pub fn from_point(p: &ExponentialHistogramDataPoint) -> Self {
        Self {
            scale: p.scale,
            zero_count: p.zero_count,
            zero_threshold: p.zero_threshold,
            positive: ExpBuckets::from_proto(p.positive.as_ref()),
            negative: ExpBuckets::from_proto(p.negative.as_ref()),
            count: p.count,
            sum: p.sum.unwrap_or(0.0),
            min: p.min,
            max: p.max,
        }
    }

    fn downscale_to(&mut self, scale: i32) {
        if scale < self.scale {
            let by = (self.scale - scale) as u32;
            self.positive.downscale(by);
            self.negative.downscale(by);
            self.scale = scale;
        }
    }

    /// Merges `other` after bringing both to the smaller scale; downscales
    /// further while either side holds more than [`MAX_EXP_BUCKETS`].
    pub fn merge(&mut self, other: &ExpHist) {
        let mut other = other.clone();
        let scale = self.scale.min(other.scale);
        self.downscale_to(scale);
        other.downscale_to(scale);
        self.positive.add(&other.positive);
        self.negative.add(&other.negative);
        self.zero_count += other.zero_count;
        self.zero_threshold = self.zero_threshold.max(other.zero_threshold);
        self.count += other.count;
        self.sum += other.sum;
        self.min = opt_min(self.min, other.min);
        self.max = opt_max(self.max, other.max);
        while self.positive.span().max(self.negative.span()) > MAX_EXP_BUCKETS {
            let s = self.scale - 1;
            self.downscale_to(s);
        }
    }

    /// `self - earlier` for cumulative points of one stream (at `self`'s
    /// scale); `None` on a reset.
    pub fn since(&self, earlier: &ExpHist) -> Option<ExpHist> {
        if self.count < earlier.count
            || self.zero_count < earlier.zero_count
            || earlier.scale < self.scale
        {
            return None;
        }
        let mut before = earlier.clone();
        before.downscale_to(self.scale);
        Some(ExpHist {
            scale: self.scale,
            zero_count: self.zero_count - before.zero_count,
            zero_threshold: self.zero_threshold,
            positive: self.positive.since(&before.positive)?,
            negative: self.negative.since(&before.negative)?,
            count: self.count - before.count,
            sum: self.sum - before.sum,
            min: None,
            max: None,
        })
    }
}

/// The last cumulative value of one input stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Last {
    /// A sum.
    Sum(f64),
    /// A histogram.
    Hist(Hist),
    /// An exponential histogram.
    Exp(ExpHist),
}

/// What the engine remembers of a cumulative stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Stream {
    /// The stream's start time (a change is a reset).
    pub start: u64,
    /// Timestamp of the last point.
    pub time: u64,
    /// Its value.
    pub last: Last,
    /// When the engine last saw it (its own clock), for expiry.
    pub seen: u64,
}

/// How one cumulative point relates to its stream.
#[derive(Debug, PartialEq)]
pub enum Step<T> {
    /// Count this increment.
    Count(T),
    /// First point of a stream that began before the collector: it only sets the baseline.
    Baseline,
    /// Older than, or the same as, a point already seen: ignore.
    Stale,
}

/// A value that a cumulative stream can carry.
pub trait Cumulative: Clone {
    /// Into the stream state.
    fn wrap(self) -> Last;
    /// Out of the stream state, if it holds this kind.
    fn unwrap(last: &Last) -> Option<&Self>;
    /// `self - earlier`, or `None` when `self` cannot follow `earlier` (a reset).
    fn since(&self, earlier: &Self) -> Option<Self>;
}

impl Cumulative for f64 {
    fn wrap(self) -> Last {
        Last::Sum(self)
    }
    fn unwrap(last: &Last) -> Option<&Self> {
        match last {
            Last::Sum(v) => Some(v),
            _ => None,
        }
    }
    fn since(&self, earlier: &Self) -> Option<Self> {
        (*self >= *earlier).then(|| self - earlier)
    }
}

impl Cumulative for Hist {
    fn wrap(self) -> Last {
        Last::Hist(self)
    }
    fn unwrap(last: &Last) -> Option<&Self> {
        match last {
            Last::Hist(h) => Some(h),
            _ => None,
        }
    }
    fn since(&self, earlier: &Self) -> Option<Self> {
        Hist::since(self, earlier)
    }
}

impl Cumulative for ExpHist {
    fn wrap(self) -> Last {
        Last::Exp(self)
    }
    fn unwrap(last: &Last) -> Option<&Self> {
        match last {
            Last::Exp(h) => Some(h),
            _ => None,
        }
    }
    fn since(&self, earlier: &Self) -> Option<Self> {
        ExpHist::since(self, earlier)
    }
}

/// The timestamps of a cumulative point.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    /// Its start time (0 when unknown).
    pub start: u64,
    /// Its time.
    pub time: u64,
}

/// The increment a cumulative point brings, updating the stream state:
/// the first point of a stream counts in full only if the stream started at
/// or after `collector_start`; a new start time or a lower value is a reset
/// (the new value counts in full); a point not newer than the last is stale.
pub fn cumulative_step<T: Cumulative>(
    state: &mut Option<Stream>,
    stamp: Stamp,
    value: T,
    collector_start: u64,
    now: u64,
) -> Step<T> {
    let step = match state.as_ref() {
        None if stamp.start != 0 && stamp.start >= collector_start => Step::Count(value.clone()),
        None => Step::Baseline,
        Some(s) if stamp.time <= s.time => return Step::Stale,
        Some(s) => match T::unwrap(&s.last) {
            Some(prev) if stamp.start == s.start || stamp.start == 0 => {
                Step::Count(value.since(prev).unwrap_or_else(|| value.clone()))
            }
            _ => Step::Count(value.clone()),
        },
    };
    let start = match (stamp.start, state.as_ref()) {
        (0, Some(s)) => s.start,
        (start, _) => start,
    };
    *state = Some(Stream {
        start,
        time: stamp.time,
        last: value.wrap(),
        seen: now,
    });
    step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downscale_folds_buckets_pairwise() {
        let mut b = ExpBuckets {
            offset: -3,
            counts: vec![1, 2, 3, 4, 5],
        };
        b.downscale(1);
        // indexes -3..=1 → -2, -1, -1, 0, 0
        assert_eq!(
            b,
            ExpBuckets {
                offset: -2,
                counts: vec![1, 5, 9]
            }
        );
    }

    #[test]
    fn exp_merge_at_the_common_scale() {
        let a = ExpHist {
            scale: 2,
            zero_count: 1,
            zero_threshold: 0.0,
            positive: ExpBuckets {
                offset: 4,
                counts: vec![1, 1, 1, 1],
            },
            negative: ExpBuckets::default(),
            count: 5,
            sum: 10.0,
            min: Some(0.0),
            max: Some(3.0),
        };
        let b = ExpHist {
            scale: 1,
            zero_count: 0,
            zero_threshold: 0.0,
            positive: ExpBuckets {
                offset: 2,
                counts: vec![3],
            },
            negative: ExpBuckets::default(),
            count: 3,
            sum: 5.0,
            min: Some(1.5),
            max: Some(1.9),
        };
        let mut m = a.clone();
        m.merge(&b);
        // a at scale 1: indexes 4,5,6,7 → 2,2,3,3 → offset 2 [2, 2]; plus b's [3] at 2.
        assert_eq!(m.scale, 1);
        assert_eq!(
            m.positive,
            ExpBuckets {
                offset: 2,
                counts: vec![5, 2]
            }
        );
        assert_eq!(
            (m.count, m.sum, m.zero_count, m.min, m.max),
            (8, 15.0, 1, Some(0.0), Some(3.0))
        );
    }

    #[test]
    fn hist_merge_keeps_buckets_only_while_bounds_agree() {
        let h = |bounds: Vec<f64>, buckets: Vec<u64>, count, sum, min, max| Hist {
            count,
            sum,
            min: Some(min),
            max: Some(max),
            bounds,
            buckets,
            mixed_bounds: false,
        };
        let mut a = h(vec![1.0, 10.0], vec![1, 2, 0], 3, 12.0, 0.5, 9.0);
        a.merge(&h(vec![1.0, 10.0], vec![0, 1, 1], 2, 30.0, 5.0, 25.0));
        assert_eq!(a, h(vec![1.0, 10.0], vec![1, 3, 1], 5, 42.0, 0.5, 25.0));
        a.merge(&h(vec![5.0], vec![1, 0], 1, 1.0, 1.0, 1.0));
        assert!(a.mixed_bounds);
        assert!(a.buckets.is_empty() && a.bounds.is_empty());
        assert_eq!(
            (a.count, a.sum, a.min, a.max),
            (6, 43.0, Some(0.5), Some(25.0))
        );
    }
}
