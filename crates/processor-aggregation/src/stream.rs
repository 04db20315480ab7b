//! The cumulative streams the engine tracks: identity, first-point rule,
//! expiry after `stream_ttl`, and a bound of `max_streams`.

use std::collections::HashMap;
use std::hash::Hash;

use crate::value::{cumulative_step, Cumulative, Stamp, Step, Stream};

/// Everything that tells two writers of a cumulative stream apart (spec
/// rule 3): the client token, the user key wherever it was found, the
/// input resource, scope, metric name and kind, every point attribute
/// (canonical bytes, before any is dropped) and the start time.
#[derive(Hash)]
pub(crate) struct StreamIdentity<'a> {
    pub token: Option<&'a str>,
    pub user_key: &'a str,
    pub user: &'a str,
    pub resource: u64,
    pub scope: (&'a str, &'a str),
    pub name: &'a str,
    pub kind: u8,
    pub attrs: &'a [u8],
    pub start: u64,
}

/// The tracked streams, by 128-bit id.
pub(crate) struct Streams {
    pub(crate) map: HashMap<u128, Stream, ahash::RandomState>,
    /// Two independent keys for the two halves of an id.
    keys: (ahash::RandomState, ahash::RandomState),
    max: usize,
    ttl: u64,
    pub(crate) collector_start: u64,
    /// The latest start time of a stream forgotten for room: a stream that
    /// began at or before it may have been counted already, so its first
    /// point (again) only sets the baseline.
    pub(crate) evicted_floor: u64,
}

impl Streams {
    pub fn new(
        max: usize,
        ttl: u64,
        collector_start: u64,
        keys: (ahash::RandomState, ahash::RandomState),
    ) -> Self {
        Self {
            map: HashMap::default(),
            keys,
            max,
            ttl,
            collector_start,
            evicted_floor: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The id of a stream.
    pub fn id(&self, identity: &impl Hash) -> u128 {
        let (a, b) = &self.keys;
        (u128::from(a.hash_one(identity)) << 64) | u128::from(b.hash_one(identity))
    }

    /// Whether the first point of a stream that started at `start` counts
    /// in full: only when the stream began at or after everything the
    /// engine can vouch for (the collector's start, `now - stream_ttl`, any
    /// stream forgotten for room, and `floor`: the request's ring change
    /// time, when a gateway routed it), so a returning or moved stream is
    /// never counted twice.
    fn counts_first(&self, start: u64, now: u64, floor: u64) -> bool {
        start != 0
            && start
                >= self
                    .collector_start
                    .max(now.saturating_sub(self.ttl))
                    .max(floor)
            && start > self.evicted_floor
    }

    /// The step a point brings to stream `id`, in a request whose ring
    /// change time is `floor` (0: none). Returns the step and the number of
    /// streams forgotten to stay within `max_streams`.
    pub fn step<T: Cumulative>(
        &mut self,
        id: u128,
        stamp: Stamp,
        value: T,
        now: u64,
        floor: u64,
    ) -> (Step<T>, u64) {
        let counts_first = self.counts_first(stamp.start, now, floor);
        let mut slot = self.map.remove(&id);
        let step = cumulative_step(&mut slot, stamp, value, counts_first, now);
        if let Some(s) = slot {
            self.map.insert(id, s);
        }
        let evicted = if self.map.len() > self.max {
            self.evict(id)
        } else {
            0
        };
        (step, evicted)
    }

    /// Forgets the least recently seen streams (about 1/64 of them, at
    /// least one), never `keep`; ties on the time seen go by id, so the
    /// choice depends on the streams only (a replay after a restart makes
    /// the same one). Returns how many.
    fn evict(&mut self, keep: u128) -> u64 {
        let n = (self.map.len() / 64).max(1);
        let mut seen: Vec<(u64, u128)> = self
            .map
            .iter()
            .filter(|(id, _)| **id != keep)
            .map(|(id, s)| (s.seen, *id))
            .collect();
        if seen.is_empty() {
            return 0;
        }
        let n = n.min(seen.len());
        let (_, threshold, _) = seen.select_nth_unstable(n - 1);
        let threshold = *threshold;
        let mut floor = self.evicted_floor;
        let before = self.map.len();
        self.map.retain(|id, s| {
            let goes = *id != keep && (s.seen, *id) <= threshold;
            if goes {
                floor = floor.max(s.start);
            }
            !goes
        });
        self.evicted_floor = floor;
        (before - self.map.len()) as u64
    }

    /// Forgets streams unseen for `stream_ttl`.
    pub fn expire(&mut self, now: u64) {
        let ttl = self.ttl;
        self.map.retain(|_, s| now.saturating_sub(s.seen) < ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(start: u64, time: u64) -> Stamp {
        Stamp {
            start,
            time,
            capped: time,
        }
    }

    #[test]
    fn past_the_bound_the_least_recently_seen_go_and_cannot_count_twice() {
        let mut s = Streams::new(2, 1000, 10, Default::default());
        assert_eq!(s.step(1, stamp(20, 30), 5.0, 30, 0), (Step::Count(5.0), 0));
        assert_eq!(s.step(2, stamp(21, 31), 5.0, 31, 0), (Step::Count(5.0), 0));
        // A third stream: stream 1 (seen at 30) is forgotten.
        assert_eq!(s.step(3, stamp(22, 32), 5.0, 32, 0), (Step::Count(5.0), 1));
        assert_eq!(s.len(), 2);
        // Stream 1 returns: it may have been counted, so it sets a baseline.
        assert_eq!(s.step(1, stamp(20, 40), 7.0, 40, 0).0, Step::Baseline);
        assert_eq!(s.step(1, stamp(20, 41), 9.0, 41, 0).0, Step::Count(2.0));
    }

    /// A gateway's ring change time: a stream new here that began before
    /// it may have been counted on its previous aggregator, so its first
    /// point only sets the baseline; one that began at or after it counts
    /// in full; a stream already known here is not affected.
    #[test]
    fn a_stream_that_began_before_the_ring_changed_only_sets_a_baseline() {
        let mut s = Streams::new(10, 1000, 10, Default::default());
        assert_eq!(s.step(1, stamp(20, 30), 5.0, 30, 0), (Step::Count(5.0), 0));
        // Moved here after a ring change at 25: began at 22, before it.
        assert_eq!(s.step(2, stamp(22, 40), 7.0, 40, 25).0, Step::Baseline);
        assert_eq!(s.step(2, stamp(22, 41), 9.0, 41, 25).0, Step::Count(2.0));
        // Began at the change: new since, counted in full.
        assert_eq!(s.step(3, stamp(25, 42), 4.0, 42, 25).0, Step::Count(4.0));
        // Known before: the floor changes nothing.
        assert_eq!(s.step(1, stamp(20, 43), 8.0, 43, 25).0, Step::Count(3.0));
    }
}
