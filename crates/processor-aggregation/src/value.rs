//! Accumulators for one series in one window, and the per-stream state that
//! turns cumulative points into deltas.

use opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint;

use crate::config::GaugePolicy;
pub use crate::exp::{ExpBuckets, ExpHist, MAX_EXP_BUCKETS};

/// Gauge points of one series in one window.
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

    /// Adds another window's worth; `false` (and `self` unchanged) when the
    /// sum would not be finite.
    pub fn merge(&mut self, o: &GaugeAcc) -> bool {
        let sum = self.sum + o.sum;
        if !sum.is_finite() {
            return false;
        }
        self.sum = sum;
        self.count = self.count.saturating_add(o.count);
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if o.last_time >= self.last_time {
            self.last = o.last;
            self.last_time = o.last_time;
        }
        true
    }

    /// The window's value under `policy`.
    pub fn value(&self, policy: GaugePolicy) -> f64 {
        match policy {
            GaugePolicy::Sum => self.sum,
            GaugePolicy::Last => self.last,
            GaugePolicy::Min => self.min,
            GaugePolicy::Max => self.max,
            GaugePolicy::Mean => self.sum / self.count.max(1) as f64,
        }
    }
}

/// Adds `counts`, `None` on overflow.
pub(crate) fn checked_sum(counts: &[u64]) -> Option<u64> {
    counts.iter().try_fold(0u64, |a, c| a.checked_add(*c))
}

/// The sum of two optional sums: unknown if either is; `None` (refuse) when
/// the result would not be finite.
pub(crate) fn sum_opt(a: Option<f64>, b: Option<f64>) -> Option<Option<f64>> {
    match (a, b) {
        (Some(x), Some(y)) => {
            let s = x + y;
            s.is_finite().then_some(Some(s))
        }
        _ => Some(None),
    }
}

/// The sum of a cumulative difference: unknown if either side is, or if
/// the difference is not finite.
pub(crate) fn sum_since(now: Option<f64>, before: Option<f64>) -> Option<f64> {
    match (now, before) {
        (Some(a), Some(b)) => Some(a - b).filter(|d| d.is_finite()),
        _ => None,
    }
}

pub(crate) fn opt_min(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) | (None, x) => x,
    }
}

pub(crate) fn opt_max(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) | (None, x) => x,
    }
}

/// A histogram point's numbers (its buckets and bounds apart).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HistParts {
    pub count: u64,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// An explicit-bucket histogram, valid by construction ([`Hist::from_point`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Hist {
    /// Observations.
    pub count: u64,
    /// Their sum, when known (a point without a sum gives a total without one).
    pub sum: Option<f64>,
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

impl Hist {
    /// From an OTLP point; `None` (invalid) when its buckets do not fit its
    /// bounds, the bounds are not finite and strictly increasing, `count`
    /// is not the sum of the buckets, or a number is not finite.
    pub fn from_point(p: &HistogramDataPoint) -> Option<Self> {
        Self::from_parts(
            HistParts {
                count: p.count,
                sum: p.sum,
                min: p.min,
                max: p.max,
            },
            &p.bucket_counts,
            &p.explicit_bounds,
        )
    }

    /// [`Hist::from_point`] from the point's parts.
    pub(crate) fn from_parts(p: HistParts, buckets: &[u64], bounds: &[f64]) -> Option<Self> {
        let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
        if !finite(p.sum) || !finite(p.min) || !finite(p.max) {
            return None;
        }
        if !buckets.is_empty() {
            let bounds_ok =
                bounds.iter().all(|b| b.is_finite()) && bounds.windows(2).all(|w| w[0] < w[1]);
            if buckets.len() != bounds.len() + 1
                || !bounds_ok
                || checked_sum(buckets) != Some(p.count)
            {
                return None;
            }
        }
        Some(Self {
            count: p.count,
            sum: p.sum,
            min: p.min,
            max: p.max,
            bounds: if buckets.is_empty() {
                vec![]
            } else {
                bounds.to_vec()
            },
            buckets: buckets.to_vec(),
            mixed_bounds: false,
        })
    }

    /// Merges another window's worth: counts, sums, min and max always;
    /// buckets only while every merged histogram has the same bounds.
    /// `false` (and `self` unchanged) when a count would overflow or the
    /// sum would not be finite.
    pub fn merge(&mut self, other: &Hist) -> bool {
        let (Some(count), Some(sum)) = (
            self.count.checked_add(other.count),
            sum_opt(self.sum, other.sum),
        ) else {
            return false;
        };
        let same = !self.mixed_bounds && !other.mixed_bounds && self.bounds == other.bounds;
        if same {
            // Bucket sums equal the counts, which did not overflow.
            for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
                *a = a.saturating_add(*b);
            }
        } else {
            self.mixed_bounds = true;
            self.bounds.clear();
            self.buckets.clear();
        }
        self.count = count;
        self.sum = sum;
        self.min = opt_min(self.min, other.min);
        self.max = opt_max(self.max, other.max);
        true
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
            sum: sum_since(self.sum, earlier.sum),
            min: None,
            max: None,
            bounds: self.bounds.clone(),
            buckets,
            mixed_bounds: false,
        })
    }
}

/// The last value of each input stream of one output series in one window:
/// cumulative non-monotonic sums are gauges in effect, combined across the
/// streams of a series by the gauge policy.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamLasts(pub Vec<StreamLast>);

/// The last value of one input stream in one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamLast {
    /// The stream's id.
    pub stream: u128,
    /// Its value.
    pub value: f64,
    /// That point's time.
    pub time: u64,
}

impl StreamLasts {
    /// Takes the later of each stream's values; `false` (and `self`
    /// unchanged) when their sum would not be finite.
    pub fn merge(&mut self, other: &StreamLasts) -> bool {
        let mut next = self.0.clone();
        for o in &other.0 {
            match next.iter_mut().find(|s| s.stream == o.stream) {
                Some(s) if o.time >= s.time => *s = *o,
                Some(_) => {}
                None => next.push(*o),
            }
        }
        if !next.iter().map(|s| s.value).sum::<f64>().is_finite() {
            return false;
        }
        self.0 = next;
        true
    }

    /// The series' value under `policy`.
    pub fn value(&self, policy: GaugePolicy) -> f64 {
        let values = self.0.iter().map(|s| s.value);
        match policy {
            GaugePolicy::Sum => values.sum(),
            GaugePolicy::Last => self
                .0
                .iter()
                .max_by_key(|s| s.time)
                .map_or(0.0, |s| s.value),
            GaugePolicy::Min => values.fold(f64::INFINITY, f64::min),
            GaugePolicy::Max => values.fold(f64::NEG_INFINITY, f64::max),
            GaugePolicy::Mean => {
                let n = self.0.len().max(1) as f64;
                values.map(|v| v / n).sum()
            }
        }
    }
}

/// The last cumulative value of one input stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Last {
    /// A sum (for a non-monotonic one, only its time matters).
    Sum(f64),
    /// A histogram.
    Hist(Hist),
    /// An exponential histogram.
    Exp(ExpHist),
}

/// What the engine remembers of a cumulative stream. Its start time is
/// part of its identity: a new start time is a new stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Stream {
    /// The stream's start time.
    pub start: u64,
    /// The time of the last point taken, capped at the collector's
    /// `now + max_future_skew` when it arrived, so a point stamped in the
    /// future cannot make every later point look stale.
    pub time: u64,
    /// The last value taken.
    pub last: Last,
    /// When the engine last saw a point of it (its own clock), for expiry:
    /// stale points refresh it too.
    pub seen: u64,
}

/// How one cumulative point relates to its stream.
#[derive(Debug, PartialEq)]
pub enum Step<T> {
    /// Count this increment.
    Count(T),
    /// First point of a stream that began before what the engine can vouch
    /// for: it only sets the baseline.
    Baseline,
    /// Not newer than the stream's last point: ignore.
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
        (*self >= *earlier)
            .then(|| self - earlier)
            .filter(|d| d.is_finite())
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
    /// Its own time.
    pub time: u64,
    /// Its time capped at `now + max_future_skew`: what the stream keeps.
    pub capped: u64,
}

/// The increment a cumulative point brings, updating the stream state.
///
/// A point not newer than the stream's last one is stale (its own time
/// against the stream's kept time) and only refreshes `seen`. The first
/// point of a stream counts in full when `counts_first`, else it sets the
/// baseline. A lower value than the last is a reset: the new value counts
/// in full.
pub fn cumulative_step<T: Cumulative>(
    state: &mut Option<Stream>,
    stamp: Stamp,
    value: T,
    counts_first: bool,
    now: u64,
) -> Step<T> {
    let Some(s) = state.as_mut() else {
        *state = Some(Stream {
            start: stamp.start,
            time: stamp.capped,
            last: value.clone().wrap(),
            seen: now,
        });
        return if counts_first {
            Step::Count(value)
        } else {
            Step::Baseline
        };
    };
    s.seen = now;
    if stamp.time <= s.time {
        return Step::Stale;
    }
    let increment = T::unwrap(&s.last)
        .and_then(|prev| value.since(prev))
        .unwrap_or_else(|| value.clone());
    s.time = stamp.capped;
    s.last = value.wrap();
    Step::Count(increment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_merge_keeps_buckets_only_while_bounds_agree() {
        let h = |bounds: Vec<f64>, buckets: Vec<u64>, count, sum, min, max| Hist {
            count,
            sum: Some(sum),
            min: Some(min),
            max: Some(max),
            bounds,
            buckets,
            mixed_bounds: false,
        };
        let mut a = h(vec![1.0, 10.0], vec![1, 2, 0], 3, 12.0, 0.5, 9.0);
        assert!(a.merge(&h(vec![1.0, 10.0], vec![0, 1, 1], 2, 30.0, 5.0, 25.0)));
        assert_eq!(a, h(vec![1.0, 10.0], vec![1, 3, 1], 5, 42.0, 0.5, 25.0));
        assert!(a.merge(&h(vec![5.0], vec![1, 0], 1, 1.0, 1.0, 1.0)));
        assert!(a.mixed_bounds);
        assert!(a.buckets.is_empty() && a.bounds.is_empty());
        assert_eq!(
            (a.count, a.sum, a.min, a.max),
            (6, Some(43.0), Some(0.5), Some(25.0))
        );
    }
}
