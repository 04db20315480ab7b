//! The merge stage: for exporters that write few large objects, requests
//! wait here (acknowledged, and durable when the queue is persistent) until
//! a size or time threshold; then the helper merges them, splits the result
//! by [`super::Push::partition`] and queues the parts, removing them from
//! here in the same storage transaction. So after any crash an item is
//! either still staged (merged again later, under new keys: none was ever
//! sent) or queued under the key it keeps until it is sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::queue::{blocking, encode, load, Refusal};
use super::Request;
use crate::batcher::{Batcher, Bucket, Thresholds};
use crate::consumer::BearerToken;
use crate::pdata::Batchable;
use crate::storage::{StorageClient, StorageError};

/// When merged requests leave the stage: the first threshold reached (per
/// token), or the stage holding half its capacity (everything then).
#[derive(Clone, Debug, PartialEq)]
pub struct MergeSettings {
    /// The oldest staged request waits at most this long.
    pub flush_interval: Duration,
    /// Flush once this many items (points, records, spans) are staged.
    pub max_items: u64,
    /// Flush once the staged requests reach this many protobuf bytes.
    pub max_bytes: u64,
    /// At most this many requests (objects) queued per minute (0: no
    /// limit); beyond it flushes wait for the minute to pass, except the
    /// last one at shutdown.
    pub max_per_minute: u32,
}

/// Key prefix of staged requests.
const PREFIX: &str = "s/";

fn key(seq: u64) -> String {
    format!("{PREFIX}{seq:020}")
}

/// One staged request.
pub(crate) struct Staged<T> {
    pub seq: u64,
    pub data: T,
    pub items: u64,
    /// Units of the queue's sizer.
    units: u64,
}

/// What is staged, per token (one key, `None`, when the destination
/// ignores tokens), taken together by a flush.
pub(crate) type Taken<T> = Vec<(Option<BearerToken>, Bucket<Staged<T>>)>;

struct State<T> {
    staged: Batcher<Option<BearerToken>, Staged<T>>,
    /// Units staged.
    units: u64,
    next_seq: u64,
    /// When recent flushes queued their requests, for `max_per_minute`.
    recent: VecDeque<Instant>,
    /// Adds refused from now on (shutdown).
    closed: bool,
    /// Adds that reserved room and are not staged yet.
    adding: usize,
    /// The units those adds reserved (not staged yet, so not in `units`).
    reserved: u64,
}

pub(crate) struct Stage<T> {
    settings: MergeSettings,
    /// Units staged at most (the queue's `queue_size`).
    capacity: u64,
    storage: Option<Arc<dyn StorageClient>>,
    state: Mutex<State<T>>,
    /// Woken when a size threshold is reached.
    pub due: tokio::sync::Notify,
    /// One flush at a time, so parts are queued in order.
    pub flushing: tokio::sync::Mutex<()>,
}

impl<T: Batchable> Stage<T> {
    pub fn new(
        settings: MergeSettings,
        capacity: u64,
        storage: Option<Arc<dyn StorageClient>>,
    ) -> Self {
        let thresholds = Thresholds {
            items: settings.max_items,
            bytes: settings.max_bytes,
            age: settings.flush_interval,
        };
        Self {
            settings,
            capacity,
            storage,
            state: Mutex::new(State {
                staged: Batcher::new(thresholds),
                units: 0,
                next_seq: 0,
                recent: VecDeque::new(),
                closed: false,
                adding: 0,
                reserved: 0,
            }),
            due: tokio::sync::Notify::new(),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The storage key of staged request `seq`, for the transaction that
    /// queues it.
    pub fn storage_key(seq: u64) -> String {
        key(seq)
    }

    /// Whether staged requests are on storage.
    pub fn persistent(&self) -> bool {
        self.storage.is_some()
    }

    /// Stages what storage holds from an earlier run. Returns (requests,
    /// items) recovered and the keys that could not be read (deleted).
    pub async fn recover(
        &self,
        units: impl Fn(&Request<T>) -> u64,
    ) -> Result<(u64, u64, Vec<(String, String)>), StorageError> {
        let Some(storage) = self.storage.clone() else {
            return Ok((0, 0, vec![]));
        };
        let (stored, bad) = load::<T>(storage, PREFIX).await?;
        let (mut requests, mut items) = (0, 0);
        let mut st = self.state();
        for (seq, r) in stored {
            requests += 1;
            items += r.items;
            let u = units(&r);
            st.next_seq = st.next_seq.max(seq + 1);
            let bytes = r.data.encoded_len() as u64;
            Self::insert(
                &mut st,
                r.token,
                Staged {
                    seq,
                    data: r.data,
                    items: r.items,
                    units: u,
                },
                bytes,
            );
        }
        Ok((requests, items, bad))
    }

    /// Stages `s`; returns whether its bucket is full by size.
    fn insert(st: &mut State<T>, token: Option<BearerToken>, s: Staged<T>, bytes: u64) -> bool {
        st.units += s.units;
        let items = s.items;
        st.staged.add(token, s, items, bytes, Instant::now())
    }

    /// Stages `data` (durably first, with storage). Refuses when `units`
    /// more would pass the capacity (a request larger than the whole stage
    /// is taken when the stage is empty).
    ///
    /// A refused request's data comes back with the refusal.
    pub async fn add(
        &self,
        token: Option<BearerToken>,
        data: T,
        items: u64,
        units: u64,
    ) -> Result<(), (Refusal, T)> {
        let seq = {
            let mut st = self.state();
            if st.closed {
                return Err((Refusal::Closed, data));
            }
            let used = st.units + st.reserved;
            if used > 0 && used.saturating_add(units) > self.capacity {
                return Err((Refusal::Full, data));
            }
            // Reserve the room now, so concurrent adds cannot overshoot.
            st.reserved += units;
            st.adding += 1;
            st.next_seq += 1;
            st.next_seq - 1
        };
        let bytes = data.encoded_len() as u64;
        let mut staged = Staged {
            seq,
            data,
            items,
            units,
        };
        if let Some(storage) = self.storage.clone() {
            let request = Request {
                data: std::mem::take(&mut staged.data),
                token: token.clone(),
                idempotency_key: String::new(),
                items,
                partition: String::new(),
                flow: None,
            };
            let bytes = encode(&request);
            staged.data = request.data;
            if let Err(e) = blocking(move || storage.set(&key(seq), bytes)).await {
                let mut st = self.state();
                st.reserved -= units;
                st.adding -= 1;
                return Err((Refusal::Storage(e), staged.data));
            }
        }
        let due = {
            let mut st = self.state();
            st.reserved -= units; // `insert` counts it in `units`
            st.adding -= 1;
            Self::insert(&mut st, token, staged, bytes) || self.pressed(&st)
        };
        if due {
            self.due.notify_one();
        }
        Ok(())
    }

    /// Takes the buckets that are due (every bucket with `force`, or when
    /// the stage is half full), unless `max_per_minute` holds them back.
    pub fn take_due(&self, force: bool) -> Taken<T> {
        let mut st = self.state();
        // Half full: everything goes, before the stage has to refuse
        // senders (many small requests fill it long before a size or time
        // threshold); this overrides `max_per_minute`.
        let force = force || self.pressed(&st);
        if st.staged.keys() == 0 || (!force && self.rate_limited(&mut st)) {
            return vec![];
        }
        let taken = st.staged.take_due(Instant::now(), force);
        let units: u64 = taken
            .iter()
            .flat_map(|(_, b)| &b.entries)
            .map(|s| s.units)
            .sum();
        st.units -= units;
        taken
    }

    /// Whether the stage holds half its capacity or more.
    fn pressed(&self, st: &State<T>) -> bool {
        st.units.saturating_mul(2) >= self.capacity
    }

    fn rate_limited(&self, st: &mut State<T>) -> bool {
        let max = self.settings.max_per_minute as usize;
        if max == 0 {
            return false;
        }
        let minute = Duration::from_secs(60);
        while st.recent.front().is_some_and(|t| t.elapsed() >= minute) {
            st.recent.pop_front();
        }
        st.recent.len() >= max
    }

    /// Records that a flush queued `requests` requests.
    pub fn queued(&self, requests: usize) {
        if self.settings.max_per_minute > 0 {
            let now = Instant::now();
            self.state()
                .recent
                .extend(std::iter::repeat_n(now, requests));
        }
    }

    /// Puts back what a flush could not queue, ahead of newer requests,
    /// due again at the next tick.
    pub fn put_back(&self, taken: Taken<T>, why: &str) {
        let mut st = self.state();
        let now = Instant::now();
        for (token, bucket) in taken {
            st.units += bucket.entries.iter().map(|s| s.units).sum::<u64>();
            let weight = (bucket.items, bucket.bytes);
            st.staged
                .put_back(token, bucket.entries, weight, why.to_string(), true, now);
        }
    }

    /// Refuses adds from now on and waits (up to `bound`) for those under
    /// way, so the last flush sees everything that was acknowledged.
    pub async fn close(&self, bound: Duration) {
        self.state().closed = true;
        let deadline = Instant::now() + bound;
        while self.state().adding > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Requests and items staged.
    pub fn held(&self) -> (u64, u64) {
        self.state().staged.held()
    }

    /// The tick of the flusher: a tenth of `flush_interval`, 20 ms to 1 s.
    pub fn tick(&self) -> Duration {
        (self.settings.flush_interval / 10).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdata::Logs;
    use crate::storage::{MemoryStorage, StorageOp};

    /// Storage whose writes wait while the gate is closed.
    struct Gated {
        inner: MemoryStorage,
        open: std::sync::Mutex<bool>,
        changed: std::sync::Condvar,
    }

    impl StorageClient for Gated {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
            self.inner.get(key)
        }
        fn batch(&self, ops: Vec<StorageOp>) -> Result<(), StorageError> {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.changed.wait(open).unwrap();
            }
            self.inner.batch(ops)
        }
        fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
            self.inner.scan(prefix)
        }
    }

    fn logs(n: usize) -> Logs {
        use crate::pdata::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        Logs {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// A flush while an add is still writing to storage: the add's room
    /// stays reserved, and the flush takes only what was staged.
    #[tokio::test]
    async fn a_flush_during_a_durable_add_keeps_the_accounting_right() {
        let gated = Arc::new(Gated {
            inner: MemoryStorage::default(),
            open: std::sync::Mutex::new(true),
            changed: std::sync::Condvar::new(),
        });
        let settings = MergeSettings {
            flush_interval: Duration::from_secs(3600),
            max_items: 1000,
            max_bytes: 1 << 30,
            max_per_minute: 0,
        };
        let stage = Arc::new(Stage::<Logs>::new(settings, 10, Some(gated.clone())));
        stage.add(None, logs(2), 2, 1).await.unwrap();
        *gated.open.lock().unwrap() = false;
        let adding = {
            let stage = stage.clone();
            tokio::spawn(async move { stage.add(None, logs(3), 3, 1).await })
        };
        while stage.state().adding == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let taken = stage.take_due(true);
        assert_eq!(taken.iter().map(|t| t.1.items).sum::<u64>(), 2);
        *gated.open.lock().unwrap() = true;
        gated.changed.notify_all();
        adding.await.unwrap().unwrap();
        assert_eq!(stage.held(), (1, 3));
        let st = stage.state();
        assert_eq!((st.units, st.reserved, st.adding), (1, 0, 0));
    }
}
