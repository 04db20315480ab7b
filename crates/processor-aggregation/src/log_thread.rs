//! The durable log's two threads: group commit, then apply, pipelined.
//!
//! The **log thread** takes every op submitted while it was busy as the
//! next group, writes it as one record (one storage transaction, one
//! `fsync`) and hands the group to the **apply thread**, which applies it
//! to the engine, in log order, and answers each op. So group N is applied
//! while group N+1 is being written: a request is answered only once its
//! effect is durable *and* applied, and neither thread waits for the other.
//!
//! Each op goes back to its submitter with the answer, so the request it
//! holds is freed on the submitter's thread (where it was allocated), not
//! on the serial path. Snapshots are taken by the apply thread (it alone
//! knows which records the engine reflects) when the log thread asks, and
//! written by the log thread between groups.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use otelcol_core::storage::StorageError;
use tokio::sync::oneshot;

use crate::durable::{record, Applied, Durable, Op};
use crate::engine::Engine;

/// A group holds at most this many bytes of ops (a larger op goes alone).
const GROUP_BYTES: usize = 8 << 20;
/// And at most this many ops.
const GROUP_OPS: usize = 4096;

/// The answer to one op, with the op itself (to be freed by the caller).
type Answer = (Result<Applied, StorageError>, Op);
type Reply = oneshot::Sender<Answer>;

enum Msg {
    Op {
        op: Op,
        encoded: Bytes,
        reply: Reply,
    },
    Stop(oneshot::Sender<()>),
}

/// A durable group on its way to the apply thread.
struct Group {
    /// Its record's sequence number.
    seq: u64,
    /// The time it was written with (every op applies at it).
    at: u64,
    ops: Vec<(Op, Reply)>,
}

/// The handle of the log and apply threads.
pub(crate) struct LogWriter {
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LogWriter {
    /// Starts the threads: the log thread owns `durable`, the apply thread
    /// applies to `engine`; `now` gives each group its time.
    pub fn start(
        durable: Durable,
        engine: Arc<Mutex<Engine>>,
        now: fn() -> u64,
        id: String,
    ) -> Result<Self, std::io::Error> {
        let (tx, rx) = mpsc::channel();
        let (apply_tx, apply_rx) = mpsc::channel();
        let (snap_tx, snap_rx) = mpsc::channel();
        let want_snapshot = Arc::new(AtomicBool::new(false));
        let applier = {
            let (engine, want) = (engine.clone(), want_snapshot.clone());
            std::thread::Builder::new()
                .name("aggregation-apply".into())
                .spawn(move || apply(engine, apply_rx, want, snap_tx))?
        };
        let log = Log {
            d: durable,
            engine,
            apply_tx: Some(apply_tx),
            applier: Some(applier),
            want_snapshot,
            snap_rx,
            now,
            id,
            failing: false,
            snapshot_asked: false,
        };
        let thread = std::thread::Builder::new()
            .name("aggregation-log".into())
            .spawn(move || log.run(rx))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Logs `op` (with `encoded`, its request's bytes, for an `Add`) and
    /// applies it once durable.
    pub async fn submit(&self, op: Op, encoded: Bytes) -> Result<Applied, StorageError> {
        let (reply, rx) = oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|tx| tx.send(Msg::Op { op, encoded, reply }).is_ok());
        if sent != Some(true) {
            return Err(StorageError::Closed);
        }
        match rx.await {
            // The op (and the request in it) is dropped here.
            Ok((answer, _op)) => answer,
            Err(_) => Err(StorageError::Closed),
        }
    }

    /// Applies what was written, writes a last snapshot (a fast next
    /// start) and stops both threads.
    pub async fn stop(&self) {
        let tx = self
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

/// The log thread's state.
struct Log {
    d: Durable,
    engine: Arc<Mutex<Engine>>,
    apply_tx: Option<mpsc::Sender<Group>>,
    applier: Option<std::thread::JoinHandle<()>>,
    /// Set when a snapshot is due; the apply thread takes one after its
    /// current group and clears it.
    want_snapshot: Arc<AtomicBool>,
    /// Snapshots from the apply thread: the engine after record `seq`.
    snap_rx: mpsc::Receiver<(u64, Vec<u8>)>,
    now: fn() -> u64,
    id: String,
    /// Whether the last write failed (logged once until one succeeds).
    failing: bool,
    /// A snapshot was asked for and not yet written.
    snapshot_asked: bool,
}

impl Log {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            let mut group: Vec<(Op, Bytes, Reply)> = vec![];
            let mut stop = None;
            let mut bytes = 0usize;
            match rx.recv() {
                Ok(Msg::Op { op, encoded, reply }) => {
                    bytes += encoded.len();
                    group.push((op, encoded, reply));
                }
                Ok(Msg::Stop(s)) => stop = Some(s),
                Err(_) => break,
            }
            while stop.is_none() && bytes < GROUP_BYTES && group.len() < GROUP_OPS {
                match rx.try_recv() {
                    Ok(Msg::Op { op, encoded, reply }) => {
                        bytes += encoded.len();
                        group.push((op, encoded, reply));
                    }
                    Ok(Msg::Stop(s)) => stop = Some(s),
                    Err(_) => break,
                }
            }
            self.write_snapshots();
            if !group.is_empty() {
                self.commit(group);
            }
            if let Some(done) = stop {
                self.finish();
                let _ = done.send(());
                return;
            }
        }
        self.finish();
    }

    /// Writes `group` as one record and passes it to the apply thread, or
    /// answers every op of it with the write error.
    fn commit(&mut self, group: Vec<(Op, Bytes, Reply)>) {
        let at = (self.now)();
        let ops: Vec<(&Op, &[u8])> = group.iter().map(|(o, e, _)| (o, &e[..])).collect();
        let rec = record(at, &ops);
        drop(ops);
        match self.d.append(rec) {
            Err(e) => {
                if !self.failing {
                    tracing::error!(processor = %self.id, error = %e, "aggregation state cannot be written: refusing requests (retryable) until it can");
                    self.failing = true;
                }
                for (op, _, reply) in group {
                    let _ = reply.send((Err(e.clone()), op));
                }
            }
            Ok(seq) => {
                if self.failing {
                    tracing::info!(processor = %self.id, "aggregation state is written again");
                    self.failing = false;
                }
                if self.d.snapshot_due() && !self.snapshot_asked {
                    self.snapshot_asked = true;
                    self.want_snapshot.store(true, Ordering::Release);
                }
                let ops = group
                    .into_iter()
                    .map(|(op, _, reply)| (op, reply))
                    .collect();
                if let Some(tx) = &self.apply_tx {
                    // The apply thread only stops when this sender is gone;
                    // if it died, the replies drop and callers see Closed.
                    let _ = tx.send(Group { seq, at, ops });
                }
            }
        }
    }

    /// Writes the snapshots the apply thread took since the last group.
    fn write_snapshots(&mut self) {
        while let Ok((seq, snap)) = self.snap_rx.try_recv() {
            self.snapshot_asked = false;
            let (started, bytes) = (std::time::Instant::now(), snap.len());
            match self.d.snapshot(seq, snap) {
                Ok(()) => {
                    tracing::debug!(processor = %self.id, record = seq, bytes, ms = started.elapsed().as_millis() as u64, "aggregation state: snapshot written");
                }
                Err(err) => {
                    tracing::warn!(processor = %self.id, error = %err, "aggregation state: snapshot failed; the log keeps growing until one succeeds");
                }
            }
        }
    }

    /// Lets the apply thread finish every written group, then writes a
    /// last snapshot of the whole log.
    fn finish(&mut self) {
        self.apply_tx = None;
        if let Some(t) = self.applier.take() {
            let _ = t.join();
        }
        self.write_snapshots();
        if self.d.has_log() {
            let snap = self
                .engine
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .snapshot();
            let seq = self.d.last_seq();
            if let Err(err) = self.d.snapshot(seq, snap) {
                tracing::warn!(processor = %self.id, error = %err, "aggregation state: last snapshot failed; the next start replays the log");
            }
        }
        if let Err(err) = self.d.compact() {
            tracing::warn!(processor = %self.id, error = %err, "aggregation state: old records not deleted; the next start ignores them");
        }
    }
}

/// The apply thread: applies each durable group in order, answers its ops,
/// and takes a snapshot after a group when one is wanted.
fn apply(
    engine: Arc<Mutex<Engine>>,
    rx: mpsc::Receiver<Group>,
    want_snapshot: Arc<AtomicBool>,
    snapshots: mpsc::Sender<(u64, Vec<u8>)>,
) {
    while let Ok(group) = rx.recv() {
        let snapshot = {
            let mut e = engine.lock().unwrap_or_else(PoisonError::into_inner);
            for (op, reply) in group.ops {
                // Answered at once: its caller need not wait for the rest
                // of the group (and frees the op on its own thread).
                let applied = op.apply(&mut e, group.at);
                let _ = reply.send((Ok(applied), op));
            }
            want_snapshot
                .swap(false, Ordering::AcqRel)
                .then(|| e.snapshot())
        };
        if let Some(snap) = snapshot {
            let _ = snapshots.send((group.seq, snap));
        }
    }
}
