//! Durable aggregation state (`aggregation.storage`): a redo log of what
//! was applied to the engine, plus snapshots, in a storage extension's
//! client.
//!
//! - Every change of the engine is an [`Op`]: a request added, windows
//!   closed, a piece of an emission taken downstream. Each op is applied
//!   to the engine and queued for the log in one step (so log order is
//!   apply order), then written in a group (one storage transaction, one
//!   `fsync`, for every op queued while the previous group was written);
//!   a request is answered only once its group is durable. The engine is
//!   deterministic given its ops and their times, so replaying the log
//!   from the last snapshot gives back the very state, emissions in flight
//!   included. A write that fails refuses its group and everything queued
//!   after it, and the engine is rebuilt from storage (see `log_thread`).
//! - A request is logged packed ([`Packed`], LZ4): a tenth or less of its
//!   bytes for OTLP, which repeats every attribute on every point.
//! - Each log record carries a CRC-32 of its content; a record that does
//!   not check is the torn tail of a crash (never applied, never
//!   acknowledged) and is dropped on recovery. A bad record followed by
//!   good ones is corruption, and recovery refuses to go on.
//! - A snapshot (the whole engine, [`Engine::snapshot`]) is written when
//!   the log since the last one outgrows both 64 MiB (its requests
//!   counted unpacked: what a replay reads) and twice the last snapshot,
//!   and at shutdown; the records it covers are deleted in the
//!   same transaction.
//!
//! Keys: `meta`, `log/<seq>`, `snap/<seq>/<part>` (sequence numbers in
//! fixed-width hex, so key order is log order).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use otelcol_core::consumer::{AuthData, BearerToken, RequestContext};
use otelcol_core::pdata::Metrics;
use otelcol_core::storage::{
    record_key, KvRecordLog, RecordLog, StorageClient, StorageError, StorageOp,
};

use crate::codec::{Corrupt, Reader, Writer};
use crate::config::AggregationConfig;
use crate::engine::{AddError, AddOutcome, Engine, Prepared, Seeds};
use crate::packed::Packed;
use crate::snapshot::RestoreError;

const META: &str = "meta";
const META_MAGIC: &[u8; 4] = b"AGGM";
/// Log records: each op with its own time.
const LOG_MAGIC: &[u8; 4] = b"AGL2";
/// Log records of the first layout (one time per record), still read.
const LOG_MAGIC_V1: &[u8; 4] = b"AGL1";
/// The storage layout this build writes: 2, requests packed in the log
/// ([`Packed`]). It reads 1 too (requests as they came), and marks such a
/// state 2 at its first start, before it writes a packed request, so an
/// older build refuses the state rather than misread its log.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest storage layout this build reads.
const OLDEST_FORMAT: u32 = 1;
/// Bytes of one stored snapshot part.
const PART: usize = 4 << 20;
/// The log may grow to this before a snapshot is due (also: twice the last
/// snapshot).
pub(crate) const SNAPSHOT_AFTER: u64 = 64 << 20;

/// One change of the engine, as logged and replayed.
pub(crate) enum Op {
    /// A request, with what of its context the engine reads.
    Add {
        token: Option<String>,
        headers: Vec<(String, String)>,
        request: Request,
    },
    /// Windows closed at the record's time, for `targets` branches.
    Close { targets: u32 },
    /// Every window closed (shutdown).
    CloseAll { targets: u32 },
    /// A branch took (or refused for good) a piece of an emission.
    Done {
        emission: u64,
        index: u32,
        target: u32,
    },
}

/// A request as an op holds it.
pub(crate) enum Request {
    /// Decoded by the receiver (or built by an embedding program).
    Decoded(Metrics),
    /// Only its protobuf bytes: the engine reads them in place
    /// ([`Engine::add_encoded`]).
    Encoded(Bytes),
}

/// What applying an op did.
pub(crate) enum Applied {
    /// A request was added; `open_series` is the engine's count right
    /// after, so the caller need not take the engine lock to learn it.
    Added {
        outcome: Result<AddOutcome, AddError>,
        open_series: usize,
    },
    Closed,
    Done,
}

impl Op {
    /// The context the engine sees for an `Add`.
    pub fn context(token: &Option<String>, headers: &[(String, String)]) -> RequestContext {
        RequestContext {
            auth: token.as_ref().map(|t| {
                Arc::new(AuthData {
                    token: Some(BearerToken::new(t.clone())),
                    headers: vec![],
                })
            }),
            metadata: Arc::new(headers.to_vec()),
            ..Default::default()
        }
    }

    /// Applies the op to `engine` at `now` (the time of its record).
    pub fn apply(&self, engine: &mut Engine, now: u64) -> Applied {
        self.apply_prepared(engine, now, None)
    }

    /// [`Op::apply`], an `Add` taking its request from `prepared` when
    /// given (the same request, read before the engine lock was taken).
    pub fn apply_prepared(
        &self,
        engine: &mut Engine,
        now: u64,
        prepared: Option<&Prepared<'_>>,
    ) -> Applied {
        match self {
            Op::Add {
                token,
                headers,
                request,
            } => {
                let context = Self::context(token, headers);
                let outcome = match (prepared, request) {
                    (Some(p), _) => engine.add_prepared(p, &context, now),
                    (None, Request::Decoded(m)) => engine.add(m, &context, now),
                    (None, Request::Encoded(b)) => engine.add_encoded(b, &context, now),
                };
                Applied::Added {
                    outcome,
                    open_series: engine.open_series(),
                }
            }
            Op::Close { targets } => {
                engine.close(now, *targets);
                Applied::Closed
            }
            Op::CloseAll { targets } => {
                engine.close_all(*targets);
                Applied::Closed
            }
            Op::Done {
                emission,
                index,
                target,
            } => {
                engine.piece_done(*emission, *index, *target);
                Applied::Done
            }
        }
    }

    /// Takes the request out of an `Add` (the log writes the request's
    /// bytes, never the tree).
    pub fn take_request(&mut self) -> Option<Request> {
        match self {
            Op::Add { request, .. } => {
                Some(std::mem::replace(request, Request::Encoded(Bytes::new())))
            }
            _ => None,
        }
    }

    /// Appends the op to a record. `packed` is the request's protobuf
    /// encoding, packed, for an `Add` (made by the caller, off the log's
    /// thread).
    pub fn write(&self, w: &mut Writer, packed: &Packed) {
        match self {
            Op::Add { token, headers, .. } => {
                w.u8(4);
                write_context(w, token, headers);
                w.bytes(packed.as_bytes());
            }
            Op::Close { targets } => {
                w.u8(1);
                w.u32(*targets);
            }
            Op::CloseAll { targets } => {
                w.u8(2);
                w.u32(*targets);
            }
            Op::Done {
                emission,
                index,
                target,
            } => {
                w.u8(3);
                w.u64(*emission);
                w.u32(*index);
                w.u32(*target);
            }
        }
    }

    /// Reads an op; an `Add` as written by format 2 (tag 4: its request
    /// packed) or format 1 (tag 0: its request as it came).
    fn read(r: &mut Reader<'_>) -> Result<Op, Corrupt> {
        Ok(match r.u8()? {
            tag @ (0 | 4) => {
                let token = match r.u8()? {
                    0 => None,
                    _ => Some(r.str()?.to_string()),
                };
                let n = r.count(8)?;
                let mut headers = Vec::with_capacity(n);
                for _ in 0..n {
                    headers.push((r.str()?.to_string(), r.str()?.to_string()));
                }
                // Read in place when replayed; a request that does not
                // decode replays as what it was when it was logged: refused.
                let bytes = r.bytes()?;
                let bytes = match tag {
                    4 => Packed::unpack(bytes)?,
                    _ => Bytes::copy_from_slice(bytes),
                };
                let request = Request::Encoded(bytes);
                Op::Add {
                    token,
                    headers,
                    request,
                }
            }
            1 => Op::Close { targets: r.u32()? },
            2 => Op::CloseAll { targets: r.u32()? },
            3 => Op::Done {
                emission: r.u64()?,
                index: r.u32()?,
                target: r.u32()?,
            },
            t => return Err(Corrupt(format!("unknown op {t}"))),
        })
    }
}

/// An `Add`'s context as both formats write it: the token (flag, then
/// bytes), then the headers (count, then each name and value).
fn write_context(w: &mut Writer, token: &Option<String>, headers: &[(String, String)]) {
    match token {
        Some(t) => {
            w.u8(1);
            w.bytes(t.as_bytes());
        }
        None => w.u8(0),
    }
    w.len(headers.len());
    for (k, v) in headers {
        w.bytes(k.as_bytes());
        w.bytes(v.as_bytes());
    }
}

/// A log record: magic, CRC-32 and length of the payload, payload (the
/// number of ops, then each op with the time it was applied at and, for an
/// `Add`, its request packed). Built in one buffer: the payload is written
/// once, then its checksum and length are filled in.
pub(crate) fn record(ops: &[(u64, &Op, &Packed)]) -> Record {
    let bytes: usize = ops.iter().map(|(_, _, p)| p.as_bytes().len() + 64).sum();
    let mut w = Writer {
        buf: Vec::with_capacity(16 + bytes),
    };
    w.buf.extend_from_slice(LOG_MAGIC);
    w.u32(0);
    w.u32(0);
    w.len(ops.len());
    for (at, op, encoded) in ops {
        w.u64(*at);
        op.write(&mut w, encoded);
    }
    let crc = crc32fast::hash(&w.buf[12..]);
    let len = u32::try_from(w.buf.len() - 12).unwrap_or(u32::MAX);
    w.buf[4..8].copy_from_slice(&crc.to_le_bytes());
    w.buf[8..12].copy_from_slice(&len.to_le_bytes());
    let unpacked: usize = ops
        .iter()
        .map(|(_, _, p)| Packed::unpacked_len(p.as_bytes()))
        .sum();
    Record {
        replay_bytes: (w.buf.len() + unpacked) as u64,
        bytes: w.buf,
    }
}

/// A log record as [`record`] built it.
pub(crate) struct Record {
    /// What is written.
    pub bytes: Vec<u8>,
    /// What replaying it reads: its length plus its requests unpacked
    /// (what decides when a snapshot is due, so that the replay at a start
    /// stays bounded however well the requests pack).
    pub replay_bytes: u64,
}

/// [`Record::replay_bytes`] of a record read back: `len` bytes holding
/// `ops`.
fn replay_bytes(len: usize, ops: &[(u64, Op)]) -> u64 {
    let requests: usize = ops
        .iter()
        .map(|(_, op)| match op {
            Op::Add {
                request: Request::Encoded(b),
                ..
            } => b.len(),
            _ => 0,
        })
        .sum();
    (len + requests) as u64
}

/// Reads a record: each op with the time it applies at; `Err` when it
/// does not check. Reads records of this build and of the first layout
/// (`AGL1`: one time for the whole record).
pub(crate) fn read_record(bytes: &[u8]) -> Result<Vec<(u64, Op)>, Corrupt> {
    let mut r = Reader::new(bytes);
    let magic = r.take(4)?;
    let per_op = match magic {
        m if m == LOG_MAGIC => true,
        m if m == LOG_MAGIC_V1 => false,
        _ => return Err(Corrupt("not a log record".into())),
    };
    let crc = r.u32()?;
    let payload = r.bytes()?;
    if crc32fast::hash(payload) != crc || !r.b.is_empty() {
        return Err(Corrupt("checksum mismatch (a torn write)".into()));
    }
    let mut r = Reader::new(payload);
    let record_time = if per_op { 0 } else { r.u64()? };
    let n = r.count(1)?;
    (0..n)
        .map(|_| {
            let at = if per_op { r.u64()? } else { record_time };
            Ok((at, Op::read(&mut r)?))
        })
        .collect()
}

fn snap_key(seq: u64, part: u32) -> String {
    format!("snap/{seq:016x}/{part:08x}")
}

/// Why durable state could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Written by another version of the collector.
    #[error("aggregation state was written by an incompatible version (storage format {found}, this build reads formats {OLDEST_FORMAT} to {FORMAT_VERSION}); stop this collector, move the storage directory away (its totals are not readable by this version) or run the version that wrote it")]
    Version {
        /// The format found.
        found: u32,
    },
    /// The snapshot cannot be read.
    #[error("aggregation state snapshot: {0}")]
    Snapshot(#[from] RestoreError),
    /// A log record in the middle of the log does not check.
    #[error("aggregation state log record {key} is corrupted ({why}) and later records exist: refusing to guess; move the storage directory away to start empty")]
    Corrupted {
        /// Its key.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// The stored metadata cannot be read.
    #[error("aggregation state metadata: {0}")]
    Meta(#[from] Corrupt),
}

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Whether there was state (false: a fresh start).
    pub found: bool,
    /// Log records replayed after the snapshot.
    pub records: u64,
    /// Torn records dropped at the tail.
    pub torn: u64,
    /// Bytes of the snapshot read.
    pub snapshot_bytes: u64,
}

/// The durable side of one processor: where the next record goes.
pub(crate) struct Durable {
    client: Arc<dyn StorageClient>,
    /// The log records go to: the client's own, else keys in it.
    records: Arc<dyn RecordLog>,
    /// Random per state: the first part of every idempotency key.
    pub instance: u64,
    collector_start: u64,
    seeds: Seeds,
    next_seq: u64,
    snapshot_seq: u64,
    snapshot_parts: u32,
    /// `(seq, replay bytes)` of every record after the snapshot, oldest
    /// first ([`Record::replay_bytes`]).
    log: VecDeque<(u64, u64)>,
    /// Their sum.
    log_bytes: u64,
    snapshot_bytes: u64,
    /// A snapshot is due once the log since the last one holds this many
    /// bytes (or twice the last snapshot's, if more).
    pub snapshot_after: u64,
}

impl Durable {
    /// The metadata record, naming the snapshot at `snapshot_seq` in
    /// `snapshot_parts` parts.
    fn meta(&self, snapshot_seq: u64, snapshot_parts: u32) -> Vec<u8> {
        let mut w = Writer::default();
        w.buf.extend_from_slice(META_MAGIC);
        w.u32(FORMAT_VERSION);
        w.u64(self.instance);
        w.u64(self.collector_start);
        self.seeds.0.iter().for_each(|k| w.u64(*k));
        w.u64(snapshot_seq);
        w.u32(snapshot_parts);
        w.buf
    }

    /// Opens (or creates) the state in `client`: the snapshot, then every
    /// later record replayed. `now` is this start's time (for a fresh state,
    /// the time its cumulative streams are vouched for from).
    pub fn open(
        client: Arc<dyn StorageClient>,
        config: AggregationConfig,
        now: u64,
    ) -> Result<(Durable, Engine, Recovery), DurableError> {
        let records = match client.record_log()? {
            Some(log) => log,
            None => Arc::new(KvRecordLog::new(client.clone())),
        };
        Self::open_with(client, records, config, now)
    }

    fn open_with(
        client: Arc<dyn StorageClient>,
        records: Arc<dyn RecordLog>,
        config: AggregationConfig,
        now: u64,
    ) -> Result<(Durable, Engine, Recovery), DurableError> {
        let mut recovery = Recovery::default();
        let Some(meta) = client.get(META)? else {
            // Records without state (its file removed by hand) are not
            // this state's.
            records.cut_from(0)?;
            let seeds = Seeds::random();
            let d = Durable {
                client,
                records,
                instance: seeds.0[0] ^ now,
                collector_start: now,
                seeds,
                next_seq: 1,
                snapshot_seq: 0,
                snapshot_parts: 0,
                log: VecDeque::new(),
                log_bytes: 0,
                snapshot_bytes: 0,
                snapshot_after: SNAPSHOT_AFTER,
            };
            d.client.set(META, d.meta(0, 0))?;
            let engine = Engine::with_seeds(config, now, seeds)
                .map_err(|e| Corrupt(format!("config: {e}")))?;
            return Ok((d, engine, recovery));
        };
        recovery.found = true;
        let mut r = Reader::new(&meta);
        if r.take(4)? != META_MAGIC {
            return Err(Corrupt("not aggregation state".into()).into());
        }
        let found = r.u32()?;
        if !(OLDEST_FORMAT..=FORMAT_VERSION).contains(&found) {
            return Err(DurableError::Version { found });
        }
        let instance = r.u64()?;
        let collector_start = r.u64()?;
        let mut seeds = [0u64; 12];
        for k in &mut seeds {
            *k = r.u64()?;
        }
        let (snapshot_seq, snapshot_parts) = (r.u64()?, r.u32()?);
        let mut engine = if snapshot_parts > 0 {
            let mut bytes = vec![];
            for p in 0..snapshot_parts {
                let key = snap_key(snapshot_seq, p);
                let part = client
                    .get(&key)?
                    .ok_or_else(|| Corrupt(format!("snapshot part {key} is missing")))?;
                bytes.extend_from_slice(&part);
            }
            recovery.snapshot_bytes = bytes.len() as u64;
            Engine::restore(config, &bytes)?
        } else {
            Engine::with_seeds(config, collector_start, Seeds(seeds))
                .map_err(|e| Corrupt(format!("config: {e}")))?
        };
        // Parts of older snapshots whose deletion a crash interrupted.
        let current = format!("snap/{snapshot_seq:016x}/");
        let mut stale = vec![];
        client.visit("snap/", &mut |key, _| {
            if !key.starts_with(&current) {
                stale.push(StorageOp::Delete(key.to_string()));
            }
        })?;
        if !stale.is_empty() {
            if let Err(e) = client.batch(stale) {
                tracing::warn!(error = %e, "aggregation state: parts of a replaced snapshot not deleted (never read; tried again at the next start)");
            }
        }
        let mut next_seq = snapshot_seq + 1;
        let mut log = VecDeque::new();
        let mut log_bytes = 0u64;
        let mut torn: Vec<(u64, String)> = vec![];
        let mut corrupted = None;
        records.replay(snapshot_seq, &mut |seq, value| {
            if corrupted.is_some() {
                return;
            }
            match read_record(value) {
                Ok(ops) if torn.is_empty() => {
                    for (at, op) in &ops {
                        op.apply(&mut engine, *at);
                    }
                    recovery.records += 1;
                    let weight = replay_bytes(value.len(), &ops);
                    log_bytes += weight;
                    log.push_back((seq, weight));
                    next_seq = seq + 1;
                }
                Ok(_) => corrupted = Some(torn[0].clone()),
                Err(e) => torn.push((seq, e.0)),
            }
        })?;
        if let Some((seq, why)) = corrupted {
            return Err(DurableError::Corrupted {
                key: record_key(seq),
                why,
            });
        }
        for (seq, why) in &torn {
            tracing::warn!(record = %record_key(*seq), why = %why, "aggregation state: dropping the torn last log record (its requests were never acknowledged)");
        }
        recovery.torn = torn.len() as u64;
        if let Some((first, _)) = torn.first() {
            records.cut_from(*first)?;
        }
        let d = Durable {
            client,
            records,
            instance,
            collector_start,
            seeds: Seeds(seeds),
            next_seq,
            snapshot_seq,
            snapshot_parts,
            log,
            log_bytes,
            snapshot_bytes: recovery.snapshot_bytes,
            snapshot_after: SNAPSHOT_AFTER,
        };
        if found < FORMAT_VERSION {
            // Before the first record of this format is written.
            d.client.set(META, d.meta(snapshot_seq, snapshot_parts))?;
            tracing::info!(
                from = found,
                to = FORMAT_VERSION,
                "aggregation state: storage format upgraded (older builds refuse it from now on)"
            );
        }
        Ok((d, engine, recovery))
    }

    /// Opens the state again from what is on storage (after a failed
    /// write: the engine in memory is ahead of it), as at a start.
    pub fn reopen(
        &self,
        config: AggregationConfig,
        now: u64,
    ) -> Result<(Durable, Engine, Recovery), DurableError> {
        let (mut d, engine, recovery) =
            Durable::open_with(self.client.clone(), self.records.clone(), config, now)?;
        d.snapshot_after = self.snapshot_after;
        Ok((d, engine, recovery))
    }

    /// Writes one record, durably, and returns its sequence number. On
    /// error nothing was written.
    pub fn append(&mut self, record: Record) -> Result<u64, StorageError> {
        let (seq, len) = (self.next_seq, record.replay_bytes);
        self.records.append(seq, &record.bytes)?;
        self.next_seq += 1;
        self.log.push_back((seq, len));
        self.log_bytes += len;
        Ok(seq)
    }

    /// Deletes every record a snapshot covers now (at shutdown, after the
    /// last snapshot).
    pub fn compact(&mut self) -> Result<(), StorageError> {
        self.records.compact()
    }

    /// Whether the log has grown enough for a snapshot.
    pub fn snapshot_due(&self) -> bool {
        self.log_bytes >= self.snapshot_after.max(2 * self.snapshot_bytes)
    }

    /// Whether records were written since the last snapshot.
    pub fn has_log(&self) -> bool {
        !self.log.is_empty()
    }

    /// The sequence number of the last record written (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Writes `snapshot`, the engine after every record up to `seq` (and
    /// none after), and deletes the records and the snapshot it replaces,
    /// in one transaction. Records after `seq` stay: recovery replays them
    /// on top of it.
    pub fn snapshot(&mut self, seq: u64, snapshot: Vec<u8>) -> Result<(), StorageError> {
        let write = self.prepare_snapshot(seq, snapshot)?;
        let done = write.run();
        self.snapshot_finished(done)
    }

    /// The writes of [`Durable::snapshot`], to run on any thread (the
    /// storage is shared) while records are appended; hand what
    /// [`SnapshotWrite::run`] returns to [`Durable::snapshot_finished`].
    /// One at a time: a snapshot prepared before the last one finished
    /// would write stale metadata.
    pub fn prepare_snapshot(
        &self,
        seq: u64,
        snapshot: Vec<u8>,
    ) -> Result<SnapshotWrite, StorageError> {
        if seq < self.snapshot_seq || seq > self.last_seq() {
            return Err(StorageError::BadValue {
                key: snap_key(seq, 0),
                message: format!(
                    "a snapshot at record {seq} is outside the records {}..={} (not written)",
                    self.snapshot_seq,
                    self.last_seq()
                ),
            });
        }
        let parts = snapshot.chunks(PART).count() as u32;
        let mut ops: Vec<StorageOp> = snapshot
            .chunks(PART)
            .enumerate()
            .map(|(i, p)| StorageOp::Set(snap_key(seq, i as u32), p.to_vec()))
            .collect();
        let (old_seq, old_parts) = (self.snapshot_seq, self.snapshot_parts);
        ops.push(StorageOp::Set(META.into(), self.meta(seq, parts)));
        // The replaced snapshot's parts (a snapshot at the same record
        // overwrote them; any beyond its own count are left, never read).
        if seq != old_seq {
            ops.extend((0..old_parts).map(|p| StorageOp::Delete(snap_key(old_seq, p))));
        }
        Ok(SnapshotWrite {
            client: self.client.clone(),
            records: self.records.clone(),
            ops,
            done: SnapshotDone {
                seq,
                parts,
                bytes: snapshot.len() as u64,
                result: Ok(()),
                took: std::time::Duration::ZERO,
            },
        })
    }

    /// Takes note of a snapshot written (or not) by [`SnapshotWrite::run`]:
    /// the records it covers no longer count towards the next one.
    pub fn snapshot_finished(&mut self, done: SnapshotDone) -> Result<(), StorageError> {
        done.result.clone()?;
        self.snapshot_seq = done.seq;
        self.snapshot_parts = done.parts;
        let covered = self.log.iter().take_while(|(s, _)| *s <= done.seq).count();
        for (_, len) in self.log.drain(..covered) {
            self.log_bytes -= len;
        }
        self.snapshot_bytes = done.bytes;
        Ok(())
    }
}

/// The storage writes of one snapshot ([`Durable::prepare_snapshot`]).
pub(crate) struct SnapshotWrite {
    client: Arc<dyn StorageClient>,
    records: Arc<dyn RecordLog>,
    ops: Vec<StorageOp>,
    done: SnapshotDone,
}

/// What a [`SnapshotWrite`] did.
pub(crate) struct SnapshotDone {
    seq: u64,
    parts: u32,
    /// Bytes of the snapshot.
    pub bytes: u64,
    /// Whether it is on storage.
    pub result: Result<(), StorageError>,
    /// How long the writes took.
    pub took: std::time::Duration,
}

impl SnapshotDone {
    /// The last record the snapshot covers.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl SnapshotWrite {
    /// Writes the snapshot and its metadata in one transaction, then lets
    /// the record log reuse what it covers (recovery skips those records
    /// meanwhile).
    pub fn run(self) -> SnapshotDone {
        let started = std::time::Instant::now();
        let mut done = self.done;
        done.result = self.client.batch(self.ops);
        done.took = started.elapsed();
        if done.result.is_ok() {
            if let Err(e) = self.records.forget_through(done.seq) {
                tracing::warn!(error = %e, "aggregation state: log records a snapshot covers not released (recovery skips them)");
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otelcol_core::storage::MemoryStorage;
    use prost::Message;

    const NS: u64 = 1_000_000_000;
    const T0: u64 = 1_795_255_200 * NS;

    fn config() -> AggregationConfig {
        AggregationConfig {
            aggregation_interval: std::time::Duration::from_secs(60),
            grace: std::time::Duration::from_secs(5),
            lookup: vec!["datapoint".into(), "header:x-user".into()],
            ..Default::default()
        }
    }

    /// A request of one point: delta or cumulative (start `start`).
    fn add(user: &str, value: f64, time: u64, start: Option<u64>, token: Option<&str>) -> Op {
        let json = format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m","sum":{{
            "aggregationTemporality":{},"isMonotonic":true,"dataPoints":[{{
            "startTimeUnixNano":"{}","timeUnixNano":"{time}","asDouble":{value}}}]}}}}]}}]}}]}}"#,
            if start.is_some() { 2 } else { 1 },
            start.unwrap_or(0),
        );
        Op::Add {
            token: token.map(str::to_string),
            headers: vec![("x-user".into(), user.into())],
            request: Request::Decoded(serde_json::from_str(&json).unwrap()),
        }
    }

    fn raw(op: &Op) -> Vec<u8> {
        match op {
            Op::Add {
                request: Request::Decoded(m),
                ..
            } => m.encode_to_vec(),
            Op::Add {
                request: Request::Encoded(b),
                ..
            } => b.to_vec(),
            _ => vec![],
        }
    }

    fn encoded(op: &Op) -> Packed {
        Packed::pack(&raw(op))
    }

    /// Every total the engine emits from here on, by (token, user, window).
    fn drain(e: &mut Engine) -> std::collections::BTreeMap<(Option<String>, String, u64), f64> {
        use otelcol_core::pdata::proto::metrics::v1::{metric, number_data_point};
        let mut out = std::collections::BTreeMap::new();
        e.close_all(1);
        for p in e.pieces() {
            for b in e.piece(p.emission, p.index).build() {
                let token = b.context.bearer_token().map(|t| t.expose().to_string());
                for m in b
                    .data
                    .resource_metrics
                    .iter()
                    .flat_map(|r| &r.scope_metrics)
                    .flat_map(|s| &s.metrics)
                {
                    let Some(metric::Data::Sum(s)) = &m.data else {
                        panic!()
                    };
                    for dp in &s.data_points {
                        let user = dp.attributes[0]
                            .value
                            .as_ref()
                            .and_then(otelcol_core::pdata::as_str)
                            .unwrap()
                            .to_string();
                        let Some(number_data_point::Value::AsDouble(v)) = dp.value else {
                            panic!()
                        };
                        *out.entry((token.clone(), user, dp.start_time_unix_nano))
                            .or_insert(0.0) += v;
                    }
                }
            }
            e.piece_done(p.emission, p.index, 0);
        }
        out
    }

    /// Ops of a random run: delta and cumulative points of three users
    /// under two tokens, closings, and pieces taken (some never).
    fn script(seed: u64) -> Vec<(u64, Op)> {
        let mut x = seed | 1;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut ops = vec![];
        let mut now = T0;
        let mut cumulative = [0f64; 3];
        for _ in 0..300 {
            now += next(20) * NS;
            let user = next(3) as usize;
            let name = ["ana", "bo", "cy"][user];
            let token = [None, Some("t1")][next(2) as usize];
            match next(10) {
                0 => ops.push((now, Op::Close { targets: 1 })),
                1 => {
                    // Take some piece, as a branch would.
                    ops.push((
                        now,
                        Op::Done {
                            emission: 1 + next(4),
                            index: 0,
                            target: 0,
                        },
                    ));
                }
                2..=5 => {
                    cumulative[user] += next(7) as f64;
                    ops.push((now, add(name, cumulative[user], now, Some(T0 + NS), None)));
                }
                _ => ops.push((
                    now,
                    add(name, next(9) as f64, now - next(90) * NS, None, token),
                )),
            }
        }
        ops
    }

    #[test]
    fn a_replay_after_any_crash_gives_the_state_of_a_run_without_one() {
        for seed in 1..=40u64 {
            let ops = script(seed);
            let mut plain = Engine::with_seeds(config(), T0, Seeds([seed; 12])).unwrap();
            for (now, op) in &ops {
                op.apply(&mut plain, *now);
            }
            let storage = Arc::new(MemoryStorage::default());
            let (mut d, _, _) = Durable::open(storage.clone(), config(), T0).unwrap();
            // The same seeds as the plain engine, so ids compare.
            let mut e = Engine::with_seeds(config(), T0, Seeds([seed; 12])).unwrap();
            d.seeds = Seeds([seed; 12]);
            d.client.set(META, d.meta(0, 0)).unwrap();
            let mut crashes = 0;
            // A snapshot taken a few records ago and written only now, as
            // the log thread writes the applier's snapshots while later
            // records are already on disk.
            let mut lagging: Option<(u64, Vec<u8>)> = None;
            for (i, (now, op)) in ops.iter().enumerate() {
                let seq = d.append(record(&[(*now, op, &encoded(op))])).unwrap();
                op.apply(&mut e, *now);
                if (i as u64 * 7 + seed) % 23 == 0 {
                    d.snapshot(seq, e.snapshot()).unwrap();
                }
                if (i as u64 * 5 + seed) % 17 == 0 {
                    if let Some((at, snap)) = lagging.take() {
                        // One already covered by a newer snapshot is refused.
                        let allowed = at >= d.snapshot_seq;
                        assert_eq!(d.snapshot(at, snap).is_ok(), allowed, "seed {seed}");
                    }
                    lagging = Some((seq, e.snapshot()));
                }
                if (i as u64 * 13 + seed) % 37 == 0 {
                    // kill -9: everything in memory is gone.
                    let (d2, e2, rec) = Durable::open(storage.clone(), config(), now + NS).unwrap();
                    assert!(rec.found);
                    (d, e) = (d2, e2);
                    lagging = None;
                    crashes += 1;
                }
            }
            assert!(crashes > 3, "seed {seed}: {crashes} crashes");
            assert_eq!(e.open_streams(), plain.open_streams(), "seed {seed}");
            assert_eq!(drain(&mut e), drain(&mut plain), "seed {seed}");
        }
    }

    #[test]
    fn what_a_snapshot_covers_is_deleted_by_the_next_appends_not_at_once() {
        let storage = Arc::new(MemoryStorage::default());
        let (mut d, mut e, _) = Durable::open(storage.clone(), config(), T0).unwrap();
        let append = |d: &mut Durable, e: &mut Engine, v: f64| {
            let op = add("ana", v, T0, None, None);
            let seq = d.append(record(&[(T0, &op, &encoded(&op))])).unwrap();
            op.apply(e, T0);
            seq
        };
        let mut last = 0;
        for _ in 0..150 {
            last = append(&mut d, &mut e, 1.0);
        }
        let logs = |s: &MemoryStorage| s.scan("log/").unwrap().len();
        d.snapshot(last, e.snapshot()).unwrap();
        assert_eq!(logs(&storage), 150, "the snapshot itself deletes nothing");
        // A crash now: the covered records are ignored, not replayed.
        let (_, mut back, rec) = Durable::open(storage.clone(), config(), T0).unwrap();
        assert_eq!(rec.records, 0);
        assert_eq!(drain(&mut back).values().sum::<f64>(), 150.0);
        append(&mut d, &mut e, 1.0);
        assert_eq!(logs(&storage), 150 + 1 - 64);
        append(&mut d, &mut e, 1.0);
        append(&mut d, &mut e, 1.0);
        assert_eq!(logs(&storage), 3, "150 deleted in 64s over three appends");
        d.snapshot(last + 3, e.snapshot()).unwrap();
        d.compact().unwrap();
        assert_eq!(logs(&storage), 0);
        assert_eq!(
            storage.scan("snap/").unwrap().len(),
            1,
            "one snapshot part left"
        );
        let (_, mut back, rec) = Durable::open(storage.clone(), config(), T0).unwrap();
        assert_eq!(rec.records, 0);
        assert_eq!(drain(&mut back).values().sum::<f64>(), 153.0);
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_a_torn_middle_one_refuses_to_start() {
        let storage = Arc::new(MemoryStorage::default());
        let (mut d, mut e, _) = Durable::open(storage.clone(), config(), T0).unwrap();
        for (i, v) in [1.0, 2.0, 4.0].into_iter().enumerate() {
            let op = add("ana", v, T0 + i as u64 * NS, None, None);
            d.append(record(&[(T0, &op, &encoded(&op))])).unwrap();
            op.apply(&mut e, T0);
        }
        // A crash in the middle of the third append: half of it on disk.
        let third = storage.get(&record_key(3)).unwrap().unwrap();
        storage
            .set(&record_key(3), third[..third.len() / 2].to_vec())
            .unwrap();
        let (_, mut back, rec) = Durable::open(storage.clone(), config(), T0 + NS).unwrap();
        assert_eq!((rec.records, rec.torn), (2, 1));
        assert_eq!(
            storage.get(&record_key(3)).unwrap(),
            None,
            "the torn record is gone"
        );
        let totals = drain(&mut back);
        assert_eq!(
            totals.values().copied().collect::<Vec<_>>(),
            vec![3.0],
            "only what was acknowledged"
        );

        // A bad record with a good one after it is not a torn tail.
        storage.set(&record_key(3), third.clone()).unwrap();
        storage
            .set(&record_key(2), b"AGL1garbage".to_vec())
            .unwrap();
        let err = Durable::open(storage.clone(), config(), T0 + NS)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("log/0000000000000002 is corrupted"),
            "{err}"
        );
    }

    /// An `Add` as format 1 wrote it (tag 0, its request as it came).
    fn write_v1(w: &mut Writer, op: &Op) {
        let Op::Add { token, headers, .. } = op else {
            return op.write(w, &Packed::default());
        };
        w.u8(0);
        write_context(w, token, headers);
        w.bytes(&raw(op));
    }

    /// A record in the first layout (`AGL1`: one time for every op), as
    /// the release before per-op times wrote it.
    fn record_v1(now: u64, ops: &[&Op]) -> Record {
        let mut p = Writer::default();
        p.u64(now);
        p.len(ops.len());
        for op in ops {
            write_v1(&mut p, op);
        }
        let mut w = Writer::default();
        w.buf.extend_from_slice(LOG_MAGIC_V1);
        w.u32(crc32fast::hash(&p.buf));
        w.bytes(&p.buf);
        Record {
            replay_bytes: w.buf.len() as u64,
            bytes: w.buf,
        }
    }

    #[test]
    fn records_of_the_first_layout_are_replayed_at_their_record_time() {
        let storage = Arc::new(MemoryStorage::default());
        let (mut d, _, _) = Durable::open(storage.clone(), config(), T0).unwrap();
        let (a, b) = (
            add("ana", 2.0, T0, None, None),
            add("bo", 3.0, T0 + NS, None, Some("t1")),
        );
        d.append(record_v1(T0 + 2 * NS, &[&a, &b])).unwrap();
        let c = add("ana", 5.0, T0 + 3 * NS, None, None);
        d.append(record(&[(T0 + 3 * NS, &c, &encoded(&c))]))
            .unwrap();
        let (_, mut back, rec) = Durable::open(storage, config(), T0 + 4 * NS).unwrap();
        assert_eq!(rec.records, 2);
        let totals = drain(&mut back);
        let window = T0 - T0 % (60 * NS);
        assert_eq!(
            totals,
            [
                ((None, "ana".to_string(), window), 7.0),
                ((Some("t1".to_string()), "bo".to_string(), window), 3.0)
            ]
            .into_iter()
            .collect()
        );
    }

    #[test]
    fn a_state_of_format_1_is_read_then_marked_2_before_a_packed_record_is_written() {
        let storage = Arc::new(MemoryStorage::default());
        let (mut d, _, _) = Durable::open(storage.clone(), config(), T0).unwrap();
        // As format 1 left it: its version in the metadata, its requests
        // unpacked (tag 0) in records of per-op times.
        let mut meta = d.meta(0, 0);
        meta[4..8].copy_from_slice(&1u32.to_le_bytes());
        storage.set(META, meta).unwrap();
        let (a, b) = (
            add("ana", 2.0, T0, None, None),
            add("bo", 3.0, T0 + NS, None, Some("t1")),
        );
        let mut p = Writer::default();
        p.len(2);
        for (at, op) in [(T0, &a), (T0 + NS, &b)] {
            p.u64(at);
            write_v1(&mut p, op);
        }
        let mut w = Writer::default();
        w.buf.extend_from_slice(LOG_MAGIC);
        w.u32(crc32fast::hash(&p.buf));
        w.bytes(&p.buf);
        d.append(Record {
            replay_bytes: 0,
            bytes: w.buf,
        })
        .unwrap();

        let (mut d, _, rec) = Durable::open(storage.clone(), config(), T0 + 2 * NS).unwrap();
        assert_eq!(rec.records, 1);
        let version = |s: &MemoryStorage| {
            let m = s.get(META).unwrap().unwrap();
            u32::from_le_bytes(m[4..8].try_into().unwrap())
        };
        assert_eq!(version(&storage), 2, "marked before anything is written");
        let c = add("ana", 5.0, T0 + 2 * NS, None, None);
        d.append(record(&[(T0 + 2 * NS, &c, &encoded(&c))]))
            .unwrap();
        let (_, mut back, rec) = Durable::open(storage.clone(), config(), T0 + 3 * NS).unwrap();
        assert_eq!(rec.records, 2);
        let window = T0 - T0 % (60 * NS);
        assert_eq!(
            drain(&mut back),
            [
                ((None, "ana".to_string(), window), 7.0),
                ((Some("t1".to_string()), "bo".to_string(), window), 3.0)
            ]
            .into_iter()
            .collect()
        );
    }

    /// A request of `points` points of `users` users, one series each.
    fn wide_add(points: usize) -> Op {
        let dps: Vec<String> = (0..points)
            .map(|i| {
                format!(
                    r#"{{"attributes":[{{"key":"user.email","value":{{"stringValue":"user{:04}@example.com"}}}}],"timeUnixNano":"{T0}","asDouble":1}}"#,
                    i % 500
                )
            })
            .collect();
        let json = format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m","sum":{{
            "aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{}]}}}}]}}]}}]}}"#,
            dps.join(",")
        );
        Op::Add {
            token: None,
            headers: vec![],
            request: Request::Decoded(serde_json::from_str(&json).unwrap()),
        }
    }

    #[test]
    fn requests_are_packed_and_a_snapshot_is_due_by_their_unpacked_bytes() {
        let storage = Arc::new(MemoryStorage::default());
        let (mut d, _, _) = Durable::open(storage.clone(), config(), T0).unwrap();
        let op = wide_add(2000);
        let raw_len = raw(&op).len() as u64;
        let rec = record(&[(T0, &op, &encoded(&op))]);
        let written = rec.bytes.len() as u64;
        assert!(written * 4 < raw_len, "{written} bytes for {raw_len}");
        assert_eq!(rec.replay_bytes, written + raw_len);
        d.snapshot_after = raw_len;
        assert!(!d.snapshot_due());
        d.append(rec).unwrap();
        assert_eq!(
            storage.get(&record_key(1)).unwrap().unwrap().len() as u64,
            written
        );
        assert!(
            d.snapshot_due(),
            "due by what a replay reads, not by what is on disk"
        );
        // Read back, the record weighs the same.
        let (back_d, mut back, _) = Durable::open(storage.clone(), config(), T0).unwrap();
        assert_eq!(back_d.log_bytes, written + raw_len);
        assert_eq!(drain(&mut back).values().sum::<f64>(), 2000.0);
    }

    proptest::proptest! {
        /// A record whose checksum holds but whose content is anything (a
        /// packed request included) is read or refused, never a panic.
        #[test]
        fn any_checked_record_reads_without_panic(
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            tag in 0u8..6,
            packed_len in 0u32..200_000,
        ) {
            // One op: a time, a tag, no token, no headers, then bytes.
            let mut p = Writer::default();
            p.len(1);
            p.u64(T0);
            p.u8(tag);
            p.u8(0);
            p.len(0);
            let mut body = packed_len.to_le_bytes().to_vec();
            body.extend_from_slice(&tail);
            p.bytes(&body);
            p.buf.extend_from_slice(&tail);
            let mut w = Writer::default();
            w.buf.extend_from_slice(LOG_MAGIC);
            w.u32(crc32fast::hash(&p.buf));
            w.bytes(&p.buf);
            let _ = read_record(&w.buf);
        }
    }

    #[test]
    fn state_of_another_format_is_refused_with_a_message() {
        let storage = Arc::new(MemoryStorage::default());
        let (d, _, _) = Durable::open(storage.clone(), config(), T0).unwrap();
        let mut meta = d.meta(0, 0);
        meta[4..8].copy_from_slice(&7u32.to_le_bytes());
        storage.set(META, meta).unwrap();
        let err = Durable::open(storage, config(), T0).err().unwrap();
        assert_eq!(
            err.to_string(),
            "aggregation state was written by an incompatible version (storage format 7, this build reads formats 1 to 2); stop this collector, move the storage directory away (its totals are not readable by this version) or run the version that wrote it"
        );
    }
}
