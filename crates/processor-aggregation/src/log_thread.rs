//! The durable log: queue, apply, answer once durable; group commit.
//!
//! [`LogWriter::submit`] applies an op to the engine on the caller's thread
//! (where the request was decoded, so its data is still in that core's
//! cache) and queues it for the log **in the same critical section** (the
//! locks of the shards it changes, [`ShardedEngine::apply_op`]), so the
//! log's order is the order each shard saw. A request is queued once its
//! `max_series` check has passed and **before** it is applied: the log
//! thread can write its group while it is applied, so the `fsync` and the
//! apply overlap (a refused request changes nothing and is not queued).
//! The caller is answered only once the op is applied and its group is on
//! disk ([`LogWriter::begin`] and [`Commit::durable`] are the two halves,
//! for a caller that frees the request it read before it waits). The
//! **log thread** takes every op queued while it was busy as the next
//! group and writes it as one record (one storage transaction, one
//! `fsync`); applying the next ops goes on meanwhile.
//!
//! The engine and the disk thus differ by the ops queued and not yet
//! written (the engine ahead) and by at most one op per shard being
//! applied (the disk ahead; nobody reads it before its locks are
//! released, and a rebuild takes them first), and
//! nothing leaves before it is durable: a request is acknowledged, and an
//! emission's pieces are read, only after the op that made them is
//! written (the processor reads pieces after its `Close` op is answered).
//! If a write fails, the log thread takes every shard's lock (no op can be
//! applied meanwhile), refuses the failed group and every op queued after
//! it (all applied to this engine), and **rebuilds the engine from
//! storage** (snapshot and records, as at a start) before it answers: what
//! was refused is in no total, and a retry of it is not a duplicate. If
//! the state cannot be read back either, the engine is emptied and every
//! request is refused until a rebuild succeeds (tried every few seconds):
//! nothing acknowledged is lost, it is all on storage.
//!
//! A snapshot is read **one shard at a time**, on a thread of its own:
//! each shard under its own lock alone, and the place of each read is
//! queued for the log under that lock, behind the ops of that shard it
//! reflects. So each shard's snapshot names the record holding the last of
//! its ops ([`Msg::Marked`]), the shards' records may differ, and a replay
//! applies a record only to the shards whose snapshot it follows. While a
//! shard is read, requests of the other shards are applied, and the log
//! thread goes on committing groups (reading 1,000,000 series takes
//! ~160 ms, which every request would otherwise wait). The snapshot is laid
//! out as bytes and written on threads of their own too; one at a time,
//! and waited for before a rebuild or the last one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use otelcol_core::storage::StorageError;
use tokio::sync::oneshot;

use crate::config::AggregationConfig;
use crate::durable::{record, Applied, Durable, Op, SnapshotDone, SnapshotWrite};
use crate::engine::{Engine, Prepared};
use crate::packed::Packed;
use crate::shard::ShardedEngine;

/// A group holds at most this many bytes of ops (a larger op goes alone).
const GROUP_BYTES: usize = 8 << 20;
/// And at most this many ops.
const GROUP_OPS: usize = 4096;
/// Groups start at most this often: under load an op waits up to this
/// long for others to share its write and `fsync` (fewer, larger commits:
/// less CPU per request and fewer wake-ups), while an op arriving after a
/// quiet spell is written at once.
const COMMIT_EVERY: Duration = Duration::from_micros(1000);
/// Unless a request of at least this many bytes (unpacked) is queued: its
/// group then starts at once. A commit costs about what taking in 64 KB
/// of OTLP does (~180 µs of CPU here, most of it the kernel's and the
/// VM's), so such a request carries its own commit, and waiting for
/// others only delays it; small ones (an AI tool's, ~5 KB) still gather
/// for up to [`COMMIT_EVERY`].
const COMMIT_NOW_BYTES: usize = 64 << 10;
/// While the state cannot be read back, a rebuild is tried this often.
const REBUILD_EVERY: Duration = Duration::from_secs(5);

/// The answer to one op (whether its group is durable), with what it held,
/// to be freed by the caller on its own thread.
type Answer = (Result<(), StorageError>, Op, Packed);
type Reply = oneshot::Sender<Answer>;

/// An op applied to the engine, on its way to the log.
struct Queued {
    /// The time it was applied at (replay applies it at the same).
    at: u64,
    op: Op,
    /// Its request's protobuf bytes, packed (an `Add`), else empty.
    packed: Packed,
    reply: Reply,
}

enum Msg {
    Op(Queued),
    /// The shard's snapshot was read after every op of it queued before
    /// this message.
    Marked(usize),
    /// Every shard's snapshot of the round (each as marked), as bytes,
    /// and the longest any shard's lock was held for it.
    Taken(Vec<Vec<u8>>, Duration),
    Stop(oneshot::Sender<()>),
}

/// What the submitters and the log thread share.
struct Shared {
    shards: Arc<ShardedEngine>,
    /// Taken (locked) only while the locks of the shards an op changes
    /// are held.
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    /// The engine could not be rebuilt after a failed write: refuse.
    broken: AtomicBool,
    now: fn() -> u64,
    /// A request of [`COMMIT_NOW_BYTES`] or more was queued since the log
    /// thread last gathered a group.
    large_queued: AtomicBool,
    /// The log thread, woken when a large request is queued.
    log_thread: OnceLock<std::thread::Thread>,
}

/// The handle of the log thread.
pub(crate) struct LogWriter {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LogWriter {
    /// Starts the log thread, which owns `durable`; ops apply to `shards`
    /// (those `durable` was opened with, for `config`) at the times `now`
    /// gives. `debug` is the engine's tracing flag (a rebuilt engine gets
    /// it too).
    pub fn start(
        durable: Durable,
        shards: Arc<ShardedEngine>,
        config: AggregationConfig,
        now: fn() -> u64,
        id: String,
        debug: bool,
    ) -> Result<Self, std::io::Error> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            shards,
            tx: Mutex::new(Some(tx.clone())),
            broken: AtomicBool::new(false),
            now,
            large_queued: AtomicBool::new(false),
            log_thread: OnceLock::new(),
        });
        let log = Log {
            d: durable,
            shared: shared.clone(),
            self_tx: tx,
            config,
            debug,
            id,
            failing: false,
            snapshot_asked: false,
            taking: None,
            marks: vec![],
            writing: None,
        };
        let thread = std::thread::Builder::new()
            .name("aggregation-log".into())
            .spawn(move || log.run(rx))?;
        let _ = shared.log_thread.set(thread.thread().clone());
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Applies `op` (with `packed`, its request's bytes packed, for an
    /// `Add`, and `prepared`, the request read before the lock, when given)
    /// and answers what it did once it is durable.
    pub async fn submit(
        &self,
        op: Op,
        packed: Packed,
        prepared: Option<&Prepared<'_>>,
    ) -> Result<Applied, StorageError> {
        let (applied, commit) = self.begin(op, packed, prepared)?;
        commit.durable().await?;
        Ok(applied)
    }

    /// The first half of [`LogWriter::submit`]: applies `op` and queues it
    /// for the log, and returns what it did with the [`Commit`] to wait
    /// for before anyone is told. The caller frees what it read the request
    /// from before it waits: a request's buffers freed at once are reused
    /// by the next one on that thread, while buffers held through a commit
    /// (a group of them, on every worker) make the allocator find fresh
    /// memory for each request.
    pub fn begin(
        &self,
        op: Op,
        packed: Packed,
        prepared: Option<&Prepared<'_>>,
    ) -> Result<(Applied, Commit), StorageError> {
        let (reply, rx) = oneshot::channel();
        if self.shared.broken.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let at = (self.shared.now)();
        // Queued while the shards it changes are locked, so the log's order
        // is each shard's; a request before it is applied, so that its
        // group can be written while it is.
        let shared = &self.shared;
        let (applied, queued) = shared.shards.apply_op(op, at, prepared, |op| {
            let large = Packed::unpacked_len(packed.as_bytes()) >= COMMIT_NOW_BYTES;
            let tx = shared.tx.lock().unwrap_or_else(PoisonError::into_inner);
            let queued = Queued {
                at,
                op,
                packed,
                reply,
            };
            let sent = tx
                .as_ref()
                .is_some_and(|tx| tx.send(Msg::Op(queued)).is_ok());
            if sent && large {
                // Before the apply, so that the write overlaps it.
                shared.large_queued.store(true, Ordering::Release);
                if let Some(t) = shared.log_thread.get() {
                    t.unpark();
                }
            }
            sent
        });
        match queued {
            // Refused whole: nothing changed, nothing to log (so a replay
            // applies every request it reads unchecked), nothing to wait for.
            None => return Ok((applied, Commit(None))),
            Some(true) => {}
            Some(false) => {
                // Stopped, or the log thread is gone (it panicked): the
                // engine is ahead of the disk for good; nothing more is
                // acknowledged.
                self.shared.broken.store(true, Ordering::Release);
                return Err(StorageError::Closed);
            }
        }
        Ok((applied, Commit(Some(rx))))
    }

    /// Writes what was queued, then a last snapshot (a fast next start),
    /// and stops the thread.
    pub async fn stop(&self) {
        let tx = self
            .shared
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tx) = tx {
            let (done, rx) = oneshot::channel();
            if tx.send(Msg::Stop(done)).is_ok() {
                let _ = rx.await;
            }
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// An op applied and queued for the log ([`LogWriter::begin`]): what is
/// left is waiting until its group is on disk.
#[must_use = "an op is acknowledged only once its commit is durable"]
pub(crate) struct Commit(Option<oneshot::Receiver<Answer>>);

impl Commit {
    /// Waits until the op's group is on disk; an error means it never will
    /// be (the op was refused and is in no total).
    pub async fn durable(self) -> Result<(), StorageError> {
        // A refused request: nothing was queued.
        let Some(rx) = self.0 else {
            return Ok(());
        };
        match rx.await {
            // The op and its bytes are dropped here, on this thread.
            Ok((result, _op, _bytes)) => result,
            Err(_) => Err(StorageError::Closed),
        }
    }
}

/// The log thread's state.
struct Log {
    d: Durable,
    shared: Arc<Shared>,
    /// For queueing snapshots behind the ops they reflect.
    self_tx: mpsc::Sender<Msg>,
    config: AggregationConfig,
    debug: bool,
    id: String,
    /// Whether the last write failed (logged once until one succeeds).
    failing: bool,
    /// A snapshot round was started and is not yet written.
    snapshot_asked: bool,
    /// The thread reading the round's shards.
    taking: Option<std::thread::JoinHandle<()>>,
    /// The record each shard's snapshot of the round covers, once marked.
    marks: Vec<Option<u64>>,
    /// The snapshot being written, and how long it held the engine lock.
    writing: Option<(std::thread::JoinHandle<Option<SnapshotDone>>, Duration)>,
}

impl Log {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        // A message taken while a group was being gathered that must start
        // the next one (a snapshot waits for the ops before it).
        let mut pending: Option<Msg> = None;
        // When the last group started being written.
        let mut last_commit: Option<Instant> = None;
        loop {
            let first = match pending.take() {
                Some(m) => m,
                None if self.shared.broken.load(Ordering::Acquire) => {
                    match rx.recv_timeout(REBUILD_EVERY) {
                        Ok(m) => m,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if let Some(done) = self.rebuild(&rx, vec![], StorageError::Closed) {
                                return self.stop(done);
                            }
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            if let (Msg::Op(_), Some(last)) = (&first, last_commit) {
                self.gather_until(last + COMMIT_EVERY);
            }
            // What is queued now joins this group (a large request queued
            // later wakes the next one early).
            self.shared.large_queued.store(false, Ordering::Release);
            let mut group: Vec<Queued> = vec![];
            let mut bytes = 0usize;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Op(q) => {
                        bytes += q.packed.as_bytes().len();
                        group.push(q);
                    }
                    // After the ops before it are written.
                    other if !group.is_empty() => {
                        pending = Some(other);
                        break;
                    }
                    Msg::Marked(shard) => {
                        let seq = self.d.last_seq();
                        if let Some(m) = self.marks.get_mut(shard) {
                            *m = Some(seq);
                        }
                        break;
                    }
                    Msg::Taken(shards, held) => {
                        self.write_snapshot(shards, held);
                        break;
                    }
                    Msg::Stop(done) => return self.stop(done),
                }
                if bytes < GROUP_BYTES && group.len() < GROUP_OPS {
                    next = rx.try_recv().ok();
                }
            }
            if !group.is_empty() {
                last_commit = Some(Instant::now());
                if let Some(done) = self.commit(group, &rx) {
                    return self.stop(done);
                }
            }
        }
        self.finish();
    }

    /// Lets ops gather until `until`, or until a large request is queued
    /// (its sender wakes this thread).
    fn gather_until(&self, until: Instant) {
        loop {
            if self.shared.large_queued.swap(false, Ordering::AcqRel) {
                return;
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::park_timeout(until - now);
        }
    }

    fn stop(mut self, done: oneshot::Sender<()>) {
        self.finish();
        let _ = done.send(());
    }

    /// Writes `group` as one record and answers it; on a write error,
    /// refuses it and everything queued after it, and rebuilds the engine.
    /// Returns a stop request that was queued behind a failed group.
    fn commit(
        &mut self,
        group: Vec<Queued>,
        rx: &mpsc::Receiver<Msg>,
    ) -> Option<oneshot::Sender<()>> {
        let ops: Vec<(u64, &Op, &Packed)> =
            group.iter().map(|q| (q.at, &q.op, &q.packed)).collect();
        let rec = record(&ops);
        drop(ops);
        match self.d.append(rec) {
            Err(e) => {
                if !self.failing {
                    tracing::error!(processor = %self.id, error = %e, "aggregation state cannot be written: refusing requests (retryable) until it can");
                    self.failing = true;
                }
                self.rebuild(rx, group, e)
            }
            Ok(_) => {
                if self.failing {
                    tracing::info!(processor = %self.id, "aggregation state is written again");
                    self.failing = false;
                }
                for q in group {
                    let _ = q.reply.send((Ok(()), q.op, q.packed));
                }
                self.settle_snapshot(false);
                if self.d.snapshot_due() && !self.snapshot_asked {
                    self.queue_snapshot();
                }
                None
            }
        }
    }

    /// Under the engine lock: takes every op still queued (all applied to
    /// this engine, none durable), replaces the engine by the state on
    /// storage, then refuses those and `refused` with `error`. Returns a
    /// stop request found in the queue.
    fn rebuild(
        &mut self,
        rx: &mpsc::Receiver<Msg>,
        mut refused: Vec<Queued>,
        error: StorageError,
    ) -> Option<oneshot::Sender<()>> {
        let mut stop = None;
        // Its storage writes must not race reading the state back. A
        // round being read is waited for and dropped: it reads the engines
        // this replaces. (A shard's read is safe either way: its mark is
        // noted only once every op before it is durable.)
        self.end_round();
        self.settle_snapshot(true);
        self.snapshot_asked = false;
        let shards = self.shared.shards.clone();
        let mut locked = shards.lock_all();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Op(q) => refused.push(q),
                Msg::Marked(_) | Msg::Taken(..) => {}
                Msg::Stop(done) => stop = Some(done),
            }
        }
        match self.d.reopen(self.config.clone(), (self.shared.now)()) {
            Ok((d, rebuilt, recovery)) => {
                let mut engines = rebuilt.into_engines();
                engines.iter_mut().for_each(|e| e.set_tracing(self.debug));
                shards.install(&mut locked, engines);
                self.d = d;
                self.snapshot_asked = false;
                if self.shared.broken.swap(false, Ordering::AcqRel) {
                    tracing::info!(processor = %self.id, records = recovery.records, "aggregation state read back from storage: taking requests again");
                }
            }
            Err(err) => {
                // The engine holds effects that are not durable: it must
                // not emit them. Empty until the state reads back.
                let each = ShardedEngine::shard_config(&self.config, locked.len());
                let empty: Result<Vec<Engine>, _> = (0..locked.len())
                    .map(|_| Engine::new(each.clone(), 0))
                    .collect();
                if let Ok(empty) = empty {
                    shards.install(&mut locked, empty);
                }
                if !self.shared.broken.swap(true, Ordering::AcqRel) {
                    tracing::error!(processor = %self.id, error = %err, "aggregation state cannot be read back after a failed write: refusing every request (retryable) until it can; what was acknowledged stays on storage for the next start");
                }
            }
        }
        drop(locked);
        for q in refused {
            let _ = q.reply.send((Err(error.clone()), q.op, q.packed));
        }
        stop
    }

    /// Starts a snapshot round: a thread reads each shard in turn under its
    /// lock alone, queues its place ([`Msg::Marked`]) before releasing it,
    /// lays it out as bytes, and queues them all ([`Msg::Taken`]).
    fn queue_snapshot(&mut self) {
        let (shards, tx) = (self.shared.shards.clone(), self.self_tx.clone());
        self.marks = vec![None; shards.len()];
        self.snapshot_asked = true;
        let round = move || {
            let mut bytes = Vec::with_capacity(shards.len());
            let mut held = Duration::ZERO;
            for k in 0..shards.len() {
                let started = Instant::now();
                let (taken, sent) = shards.take_snapshot_of(k, || tx.send(Msg::Marked(k)).is_ok());
                held = held.max(started.elapsed());
                if !sent {
                    return;
                }
                bytes.push(taken.into_bytes());
            }
            let _ = tx.send(Msg::Taken(bytes, held));
        };
        match std::thread::Builder::new()
            .name("aggregation-snap-read".into())
            .spawn(round.clone())
        {
            Ok(handle) => self.taking = Some(handle),
            // No thread to spare: read here (its messages are taken next).
            Err(_) => round(),
        }
    }

    /// Waits for the round's reading thread, and forgets the round.
    fn end_round(&mut self) {
        if let Some(handle) = self.taking.take() {
            let _ = handle.join();
        }
        self.marks.clear();
    }

    /// Starts writing the round's snapshot, `shards` (each shard's, after
    /// the record its mark names; the longest lock held for one was `held`),
    /// on a thread of its own.
    fn write_snapshot(&mut self, shards: Vec<Vec<u8>>, held: Duration) {
        let seqs: Option<Vec<u64>> = self.marks.iter().copied().collect();
        self.end_round();
        self.settle_snapshot(true);
        let Some(seqs) = seqs.filter(|s| s.len() == shards.len() && !s.contains(&0)) else {
            self.snapshot_asked = false;
            return;
        };
        let write = match self.d.prepare_snapshot(seqs, shards) {
            Ok(w) => w,
            Err(err) => return self.snapshot_failed(&err),
        };
        // Handed over once the thread exists (kept if it cannot start).
        let (tx, rx) = mpsc::sync_channel::<SnapshotWrite>(1);
        let spawned = std::thread::Builder::new()
            .name("aggregation-snap".into())
            .spawn(move || rx.recv().ok().map(SnapshotWrite::run));
        match spawned {
            Ok(handle) => {
                let _ = tx.send(write);
                self.writing = Some((handle, held));
            }
            // No thread to spare: written here.
            Err(_) => {
                let done = write.run();
                self.snapshot_done(done, held);
            }
        }
    }

    /// Takes note of the snapshot being written once it is (`wait`: waits
    /// for it).
    fn settle_snapshot(&mut self, wait: bool) {
        match &self.writing {
            Some((h, _)) if wait || h.is_finished() => {}
            _ => return,
        }
        let Some((handle, taken)) = self.writing.take() else {
            return;
        };
        match handle.join() {
            Ok(Some(done)) => self.snapshot_done(done, taken),
            _ => self.snapshot_failed(&StorageError::Closed),
        }
    }

    fn snapshot_done(&mut self, done: SnapshotDone, held: Duration) {
        let (seq, bytes, ms) = (done.seq(), done.bytes, done.took.as_millis() as u64);
        match self.d.snapshot_finished(done) {
            Ok(()) => {
                self.snapshot_asked = false;
                tracing::debug!(processor = %self.id, record = seq, bytes, locked_us = held.as_micros() as u64, ms, "aggregation state: snapshot written");
            }
            Err(err) => self.snapshot_failed(&err),
        }
    }

    fn snapshot_failed(&mut self, err: &StorageError) {
        self.snapshot_asked = false;
        tracing::warn!(processor = %self.id, error = %err, "aggregation state: snapshot failed; the log keeps growing until one succeeds");
    }

    /// Writes a last snapshot of the whole log and deletes what it covers.
    fn finish(&mut self) {
        self.end_round();
        self.settle_snapshot(true);
        if self.shared.broken.load(Ordering::Acquire) {
            return;
        }
        if self.d.has_log() {
            let snap = self.shared.shards.snapshot();
            let seqs = vec![self.d.last_seq(); snap.len()];
            if let Err(err) = self.d.snapshot(seqs, snap) {
                tracing::warn!(processor = %self.id, error = %err, "aggregation state: last snapshot failed; the next start replays the log");
            }
        }
        if let Err(err) = self.d.compact() {
            tracing::warn!(processor = %self.id, error = %err, "aggregation state: old records not deleted; the next start ignores them");
        }
    }
}

#[cfg(test)]
mod tests;
