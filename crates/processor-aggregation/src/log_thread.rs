//! The thread that writes the durable log: group commit. Ops submitted
//! while a group is being written wait for the next one, so many requests
//! share one storage transaction (one `fsync`); a group is applied to the
//! engine, in order, only once it is durable, and each op is answered then.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use otelcol_core::storage::StorageError;
use tokio::sync::oneshot;

use crate::durable::{record, Applied, Durable, Op};
use crate::engine::Engine;

/// A group holds at most this many bytes of ops (a larger op goes alone).
const GROUP_BYTES: usize = 8 << 20;
/// And at most this many ops.
const GROUP_OPS: usize = 4096;

type Reply = oneshot::Sender<Result<Applied, StorageError>>;

enum Msg {
    Op {
        op: Op,
        encoded: Vec<u8>,
        reply: Reply,
    },
    Stop(oneshot::Sender<()>),
}

/// The handle of the log thread.
pub(crate) struct LogWriter {
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LogWriter {
    /// Starts the thread that owns `durable` and applies to `engine`;
    /// `now` gives each group its time.
    pub fn start(
        durable: Durable,
        engine: Arc<Mutex<Engine>>,
        now: fn() -> u64,
        id: String,
    ) -> Result<Self, std::io::Error> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("aggregation-log".into())
            .spawn(move || run(durable, engine, rx, now, id))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Logs `op` (with `encoded`, its request's bytes, for an `Add`) and
    /// applies it once durable.
    pub async fn submit(&self, op: Op, encoded: Vec<u8>) -> Result<Applied, StorageError> {
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
        rx.await.unwrap_or(Err(StorageError::Closed))
    }

    /// Writes a last snapshot (a fast next start) and stops the thread.
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

fn run(
    mut d: Durable,
    engine: Arc<Mutex<Engine>>,
    rx: mpsc::Receiver<Msg>,
    now: fn() -> u64,
    id: String,
) {
    let lock = || engine.lock().unwrap_or_else(PoisonError::into_inner);
    let mut failing = false;
    loop {
        let mut group: Vec<(Op, Vec<u8>, Reply)> = vec![];
        let mut stop = None;
        let mut bytes = 0usize;
        match rx.recv() {
            Ok(Msg::Op { op, encoded, reply }) => {
                bytes += encoded.len();
                group.push((op, encoded, reply));
            }
            Ok(Msg::Stop(s)) => stop = Some(s),
            Err(_) => return,
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
        if !group.is_empty() {
            let at = now();
            let ops: Vec<(&Op, &[u8])> = group.iter().map(|(o, e, _)| (o, &e[..])).collect();
            let rec = record(at, &ops);
            drop(ops);
            match d.append(rec) {
                Err(e) => {
                    if !failing {
                        tracing::error!(processor = %id, error = %e, "aggregation state cannot be written: refusing requests (retryable) until it can");
                        failing = true;
                    }
                    for (_, _, reply) in group {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Ok(()) => {
                    if failing {
                        tracing::info!(processor = %id, "aggregation state is written again");
                        failing = false;
                    }
                    let mut e = lock();
                    for (op, _, reply) in group {
                        let applied = op.apply(&mut e, at);
                        let _ = reply.send(Ok(applied));
                    }
                    if d.snapshot_due() {
                        let snap = e.snapshot();
                        drop(e);
                        if let Err(err) = d.snapshot(snap) {
                            tracing::warn!(processor = %id, error = %err, "aggregation state: snapshot failed; the log keeps growing until one succeeds");
                        }
                    }
                }
            }
        }
        if let Some(done) = stop {
            if d.has_log() {
                let snap = lock().snapshot();
                if let Err(err) = d.snapshot(snap) {
                    tracing::warn!(processor = %id, error = %err, "aggregation state: last snapshot failed; the next start replays the log");
                }
            }
            let _ = done.send(());
            return;
        }
    }
}
