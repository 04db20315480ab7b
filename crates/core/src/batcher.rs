//! The one batcher: the `batch` processor and the exporters' merge stage
//! both hold what they took here, per key (a caller's token and metadata,
//! say), until a size or time threshold; what a flush could not deliver
//! goes back in front of what arrived since.
//!
//! It holds entries as they came (one per request); the owner merges a
//! bucket's entries when it flushes. It does no locking and no I/O: the
//! owner wraps it in a mutex and does the sending.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// When a bucket is due.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Due once this many items wait (0: never by count).
    pub items: u64,
    /// Due once the entries weigh this many bytes (0: never by size).
    pub bytes: u64,
    /// Due once its oldest entry waited this long.
    pub age: Duration,
}

/// What waits under one key.
#[derive(Debug)]
pub struct Bucket<E> {
    /// The entries, oldest first.
    pub entries: Vec<E>,
    /// Items in them.
    pub items: u64,
    /// Their weight in bytes.
    pub bytes: u64,
    /// Why the last flush of these entries failed, when it did.
    pub refused: Option<String>,
    since: Instant,
    /// Due at the next look, whatever the thresholds.
    again: bool,
}

impl<E> Bucket<E> {
    fn new(now: Instant) -> Self {
        Self {
            entries: Vec::new(),
            items: 0,
            bytes: 0,
            refused: None,
            since: now,
            again: false,
        }
    }

    fn full(&self, t: &Thresholds) -> bool {
        (t.items > 0 && self.items >= t.items) || (t.bytes > 0 && self.bytes >= t.bytes)
    }
}

/// Entries per key, with the thresholds that make a bucket due.
#[derive(Debug)]
pub struct Batcher<K, E> {
    thresholds: Thresholds,
    buckets: HashMap<K, Bucket<E>>,
}

impl<K: Eq + Hash + Clone, E> Batcher<K, E> {
    /// An empty batcher.
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            buckets: HashMap::new(),
        }
    }

    /// The thresholds.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Adds `entry` (`items` items, `bytes` bytes) under `key`. Returns
    /// whether that bucket is now full by size; a bucket whose last flush
    /// was refused waits for its time instead.
    pub fn add(&mut self, key: K, entry: E, items: u64, bytes: u64, now: Instant) -> bool {
        let b = self.buckets.entry(key).or_insert_with(|| Bucket::new(now));
        if b.entries.is_empty() {
            b.since = now;
        }
        b.entries.push(entry);
        b.items += items;
        b.bytes += bytes;
        b.refused.is_none() && b.full(&self.thresholds)
    }

    /// The bucket under `key`, if any entry waits there.
    pub fn get(&self, key: &K) -> Option<&Bucket<E>> {
        self.buckets.get(key)
    }

    /// Takes the bucket under `key`.
    pub fn take(&mut self, key: &K) -> Option<Bucket<E>> {
        self.buckets.remove(key)
    }

    /// Takes every bucket that is due at `now` (all of them with `all`).
    pub fn take_due(&mut self, now: Instant, all: bool) -> Vec<(K, Bucket<E>)> {
        let t = &self.thresholds;
        let due: Vec<K> = self
            .buckets
            .iter()
            .filter(|(_, b)| {
                all || b.again
                    || (b.refused.is_none() && b.full(t))
                    || now.saturating_duration_since(b.since) >= t.age
            })
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|k| self.buckets.remove(&k).map(|b| (k, b)))
            .collect()
    }

    /// Puts back what a flush could not deliver (`entries`, holding
    /// `items` items and `bytes` bytes), in front of what arrived under
    /// `key` since, with why. With `at_once` it is due at the next look;
    /// otherwise after the age threshold, counted from now.
    pub fn put_back(
        &mut self,
        key: K,
        entries: Vec<E>,
        (items, bytes): (u64, u64),
        why: String,
        at_once: bool,
        now: Instant,
    ) {
        let mut back = Bucket::new(now);
        back.entries = entries;
        back.items = items;
        back.bytes = bytes;
        if let Some(newer) = self.buckets.remove(&key) {
            back.entries.extend(newer.entries);
            back.items += newer.items;
            back.bytes += newer.bytes;
        }
        back.refused = Some(why);
        back.since = now;
        back.again = at_once;
        self.buckets.insert(key, back);
    }

    /// Keys with entries waiting.
    pub fn keys(&self) -> usize {
        self.buckets.len()
    }

    /// Entries and items waiting, over every key.
    pub fn held(&self) -> (u64, u64) {
        self.buckets.values().fold((0, 0), |(e, i), b| {
            (e + b.entries.len() as u64, i + b.items)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batcher(items: u64, age_ms: u64) -> Batcher<&'static str, u32> {
        Batcher::new(Thresholds {
            items,
            bytes: 0,
            age: Duration::from_millis(age_ms),
        })
    }

    #[test]
    fn size_and_age_make_buckets_due_per_key() {
        let t0 = Instant::now();
        let mut b = batcher(3, 100);
        assert!(!b.add("a", 1, 2, 0, t0));
        assert!(!b.add("b", 2, 1, 0, t0));
        assert!(b.add("a", 3, 1, 0, t0), "a holds 3 items");
        let due = b.take_due(t0, false);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0, due[0].1.entries.clone()), ("a", vec![1, 3]));
        assert!(b.take_due(t0 + Duration::from_millis(99), false).is_empty());
        let due = b.take_due(t0 + Duration::from_millis(100), false);
        assert_eq!((due[0].0, due[0].1.items), ("b", 1));
        assert_eq!(b.held(), (0, 0));
    }

    #[test]
    fn a_refused_bucket_goes_back_in_front_and_waits_for_its_time() {
        let t0 = Instant::now();
        let mut b = batcher(2, 100);
        b.add("a", 1, 2, 0, t0);
        let (_, taken) = b.take_due(t0, false).pop().unwrap();
        b.add("a", 2, 1, 0, t0);
        b.put_back("a", taken.entries, (2, 0), "busy".into(), false, t0);
        assert!(!b.add("a", 3, 1, 0, t0), "refused: no size trigger");
        assert_eq!(b.get(&"a").unwrap().refused.as_deref(), Some("busy"));
        assert!(b.take_due(t0 + Duration::from_millis(50), false).is_empty());
        let (_, again) = b
            .take_due(t0 + Duration::from_millis(100), false)
            .pop()
            .unwrap();
        assert_eq!((again.entries, again.items), (vec![1, 2, 3], 4));

        let mut b = batcher(2, 100);
        b.add("a", 1, 1, 0, t0);
        let (_, taken) = b.take_due(t0, true).pop().unwrap();
        b.put_back("a", taken.entries, (1, 0), "full".into(), true, t0);
        assert_eq!(
            b.take_due(t0, false).len(),
            1,
            "at_once: due at the next look"
        );
    }
}
