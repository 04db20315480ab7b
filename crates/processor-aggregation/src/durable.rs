//! Durable aggregation state (`aggregation.storage`): a redo log of what
//! was applied to the engine, plus snapshots, in a storage extension's
//! client.
//!
//! - Every change of the engine is an [`Op`]: a request added, windows
//!   closed, a piece of an emission taken downstream. Each op is queued
//!   for the log and applied to the engine in one step, under the locks
//!   of the shards it changes (so log order is apply order; a request is
//!   queued before it is applied, so its write overlaps its apply), then
//!   written in a group (one storage transaction, one `fsync`, for every
//!   op queued while the previous group was written); a request is
//!   answered only once it is applied and its group is durable. Each shard of
//!   the engine is deterministic given its own ops and their times (a
//!   request refused by `max_series`, the one rule that reads the other
//!   shards, changed nothing and is not logged; a replayed request is not
//!   checked again), so replaying the log from the last snapshot gives
//!   back the very state, emissions in flight included. A write that
//!   fails refuses its group and everything queued after it, and the
//!   engine is rebuilt from storage (see `log_thread`).
//! - A request is logged packed ([`Packed`], LZ4): a tenth or less of its
//!   bytes for OTLP, which repeats every attribute on every point.
//! - Each log record carries a CRC-32 of its content; a record that does
//!   not check is the torn tail of a crash (never applied, never
//!   acknowledged) and is dropped on recovery. A bad record followed by
//!   good ones is corruption, and recovery refuses to go on.
//! - A snapshot (every shard's [`Engine::snapshot`], each read at its own
//!   log record, named in the metadata) is written when the log since the
//!   last one outgrows both 128 MiB (its requests counted unpacked: what a
//!   replay reads) and four times the last snapshot, and at shutdown. A
//!   replay starts after the oldest shard's record and applies each record
//!   to the shards whose snapshot it follows. The records every shard's
//!   snapshot covers are released in the same transaction.
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
use crate::shard::ShardedEngine;
use crate::snapshot::RestoreError;

const META: &str = "meta";
/// A snapshot of several shards (one shard's is the engine's own).
const SHARDS_MAGIC: &[u8; 4] = b"AGSS";
const META_MAGIC: &[u8; 4] = b"AGGM";
/// Log records: each op with its own time; a request refused when it was
/// applied is not logged, so a replay applies every request it reads with
/// no `max_series` check (each shard's state follows from its own ops).
const LOG_MAGIC: &[u8; 4] = b"AGL3";
/// Log records of formats 2 and 3 (refused requests logged too, so a
/// replay checks `max_series` again), still read.
const LOG_MAGIC_V2: &[u8; 4] = b"AGL2";
/// Log records of the first layout (one time per record), still read.
const LOG_MAGIC_V1: &[u8; 4] = b"AGL1";
/// The storage layout this build writes: 4, each shard's snapshot at its
/// own log record (named in the metadata) and refused requests not logged.
/// It reads 3 (the engine in shards: their count in the metadata, a
/// delivered piece naming its shard, one snapshot of every shard at one
/// record), 2 (requests packed in the log, LZ4) and 1 (requests as
/// they came), the last two one shard, and marks such a state 4 at its
/// first start, before it writes anything, so an older build refuses the
/// state rather than misread it.
pub const FORMAT_VERSION: u32 = 4;
/// The oldest storage layout this build reads.
const OLDEST_FORMAT: u32 = 1;
/// Bytes of one stored snapshot part.
const PART: usize = 4 << 20;
/// The log may grow to this before a snapshot is due (counted unpacked:
/// what a replay reads; a replay reads 160-280 MB/s here, so ~0.5-0.8 s).
pub(crate) const SNAPSHOT_AFTER: u64 = 128 << 20;
/// And to this many times the last snapshot: reading, laying out and
/// writing a snapshot costs some ten times a replay of as many log bytes
/// (1,000,000 series: 57 MB, ~0.8 s of CPU), so a log of four snapshots
/// keeps that cost a fraction of the logging while a recovery stays short
/// (the snapshot, then at most four times its bytes replayed: ~2.8 s at
/// 1,000,000 series).
const SNAPSHOT_RATIO: u64 = 4;

/// One change of the engine, as logged and replayed.
#[derive(Clone)]
pub(crate) enum Op {
    /// A request, with what of its context the engine reads.
    Add {
        token: Option<String>,
        headers: Vec<(String, String)>,
        request: Request,
    },
    /// Shard `shard`'s windows closed at the record's time, for `targets`
    /// branches.
    Close { shard: u32, targets: u32 },
    /// Every window of shard `shard` closed (shutdown).
    CloseAll { shard: u32, targets: u32 },
    /// A branch took (or refused for good) a piece of an emission of
    /// shard `shard`.
    Done {
        shard: u32,
        emission: u64,
        index: u32,
        target: u32,
    },
}

/// A request as an op holds it.
#[derive(Clone)]
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

    /// Applies the op to `engine`, one shard, at `now` (the time of its
    /// record); a `Done` whatever shard it names.
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
            Op::Close { targets, .. } => {
                engine.close(now, *targets);
                Applied::Closed
            }
            Op::CloseAll { targets, .. } => {
                engine.close_all(*targets);
                Applied::Closed
            }
            Op::Done {
                emission,
                index,
                target,
                ..
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
            // Shard 0's as formats 1 and 2 wrote them; another shard's
            // after its number.
            Op::Close { shard, targets } => {
                match shard {
                    0 => w.u8(1),
                    s => {
                        w.u8(6);
                        w.u32(*s);
                    }
                }
                w.u32(*targets);
            }
            Op::CloseAll { shard, targets } => {
                match shard {
                    0 => w.u8(2),
                    s => {
                        w.u8(7);
                        w.u32(*s);
                    }
                }
                w.u32(*targets);
            }
            // Shard 0's as formats 1 and 2 wrote it.
            Op::Done {
                shard: 0,
                emission,
                index,
                target,
            } => {
                w.u8(3);
                w.u64(*emission);
                w.u32(*index);
                w.u32(*target);
            }
            Op::Done {
                shard,
                emission,
                index,
                target,
            } => {
                w.u8(5);
                w.u32(*shard);
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
            1 => Op::Close {
                shard: 0,
                targets: r.u32()?,
            },
            2 => Op::CloseAll {
                shard: 0,
                targets: r.u32()?,
            },
            6 => Op::Close {
                shard: r.u32()?,
                targets: r.u32()?,
            },
            7 => Op::CloseAll {
                shard: r.u32()?,
                targets: r.u32()?,
            },
            3 => Op::Done {
                shard: 0,
                emission: r.u64()?,
                index: r.u32()?,
                target: r.u32()?,
            },
            5 => Op::Done {
                shard: r.u32()?,
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

/// A log record read back ([`read_record`]).
pub(crate) struct Logged {
    /// Each op with the time it applies at.
    pub ops: Vec<(u64, Op)>,
    /// Whether its requests are checked against `max_series` again when
    /// replayed: records of formats 1 to 3 hold refused requests too.
    pub checked: bool,
}

/// Reads a record; `Err` when it does not check. Reads records of this
/// build, of formats 2 and 3 (`AGL2`: refused requests logged too) and of
/// the first layout (`AGL1`: one time for the whole record, refused
/// requests logged).
pub(crate) fn read_record(bytes: &[u8]) -> Result<Logged, Corrupt> {
    let mut r = Reader::new(bytes);
    let magic = r.take(4)?;
    let (per_op, checked) = match magic {
        m if m == LOG_MAGIC => (true, false),
        m if m == LOG_MAGIC_V2 => (true, true),
        m if m == LOG_MAGIC_V1 => (false, true),
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
    let ops = (0..n)
        .map(|_| {
            let at = if per_op { r.u64()? } else { record_time };
            Ok((at, Op::read(&mut r)?))
        })
        .collect::<Result<_, Corrupt>>()?;
    Ok(Logged { ops, checked })
}

/// One snapshot of every shard, from each shard's ([`Engine::snapshot`]):
/// one shard's as it is (as formats 1 and 2 wrote it); several after
/// [`SHARDS_MAGIC`] and their count, each after its length. Laid out
/// straight into the parts of at most `part` bytes it is stored in (no
/// copy of the whole); returns them and its length.
pub(crate) fn snapshot_parts(shards: &[Vec<u8>], part: usize) -> (Vec<Vec<u8>>, u64) {
    let part = part.max(1);
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let count = len32(shards.len());
    let lens: Vec<[u8; 4]> = shards.iter().map(|s| len32(s.len())).collect();
    let mut pieces: Vec<&[u8]> = vec![];
    if shards.len() == 1 {
        pieces.push(&shards[0]);
    } else {
        pieces.push(SHARDS_MAGIC);
        pieces.push(&count);
        for (s, len) in shards.iter().zip(&lens) {
            pieces.push(len);
            pieces.push(s);
        }
    }
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let mut parts: Vec<Vec<u8>> = vec![];
    let mut left = total;
    for mut piece in pieces {
        while !piece.is_empty() {
            match parts.last_mut() {
                Some(p) if p.len() < part => {
                    let n = (part - p.len()).min(piece.len());
                    p.extend_from_slice(&piece[..n]);
                    piece = &piece[n..];
                    left -= n;
                }
                _ => parts.push(Vec::with_capacity(part.min(left))),
            }
        }
    }
    (parts, total as u64)
}

/// The `count` shards' engines (each with `config`, a shard's) from a
/// snapshot of [`snapshot_parts`], its parts read back in order.
fn restore_shards(
    config: &AggregationConfig,
    count: usize,
    bytes: &[u8],
) -> Result<Vec<Engine>, DurableError> {
    if count == 1 {
        return Ok(vec![Engine::restore(config.clone(), bytes)?]);
    }
    let mut r = Reader::new(bytes);
    if r.take(4)? != SHARDS_MAGIC {
        return Err(Corrupt("the snapshot is not of several shards".into()).into());
    }
    let n = r.count(8)?;
    if n != count {
        return Err(Corrupt(format!("the snapshot holds {n} shards, the state {count}")).into());
    }
    (0..n)
        .map(|_| Ok(Engine::restore(config.clone(), r.bytes()?)?))
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

/// The metadata record: the state's identity and seeds, then its snapshot
/// (the oldest record it covers for every shard, its parts), the shard
/// count and the last record each shard's snapshot covers.
fn meta_bytes(
    instance: u64,
    collector_start: u64,
    seeds: &Seeds,
    shards: u32,
    shard_seqs: &[u64],
    snapshot_parts: u32,
) -> Vec<u8> {
    let mut w = Writer::default();
    w.buf.extend_from_slice(META_MAGIC);
    w.u32(FORMAT_VERSION);
    w.u64(instance);
    w.u64(collector_start);
    seeds.0.iter().for_each(|k| w.u64(*k));
    w.u64(shard_seqs.iter().copied().min().unwrap_or(0));
    w.u32(snapshot_parts);
    w.u32(shards);
    shard_seqs.iter().for_each(|s| w.u64(*s));
    w.buf
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
    /// The engine's shards (kept for the life of the state).
    pub shards: u32,
    next_seq: u64,
    /// The oldest record the snapshot covers for every shard: the log is
    /// replayed from the record after it.
    snapshot_seq: u64,
    snapshot_parts: u32,
    /// The last record each shard's snapshot covers (`snapshot_seq` is
    /// their least).
    shard_seqs: Vec<u64>,
    /// `(seq, replay bytes)` of every record after the snapshot, oldest
    /// first ([`Record::replay_bytes`]).
    log: VecDeque<(u64, u64)>,
    /// Their sum.
    log_bytes: u64,
    snapshot_bytes: u64,
    /// A snapshot is due once the log since the last one holds this many
    /// bytes (or four times the last snapshot's, if more).
    pub snapshot_after: u64,
}

impl Durable {
    /// The metadata record ([`meta_bytes`]) of this state.
    fn meta(&self, shard_seqs: &[u64], snapshot_parts: u32) -> Vec<u8> {
        meta_bytes(
            self.instance,
            self.collector_start,
            &self.seeds,
            self.shards,
            shard_seqs,
            snapshot_parts,
        )
    }

    /// Opens (or creates, in `shards` shards) the state in `client`: the
    /// snapshot, then every later record replayed. A state keeps the
    /// shard count it was created with. `now` is this start's time (for a
    /// fresh state, the time its cumulative streams are vouched for from).
    pub fn open(
        client: Arc<dyn StorageClient>,
        config: AggregationConfig,
        shards: usize,
        now: u64,
    ) -> Result<(Durable, ShardedEngine, Recovery), DurableError> {
        let records = match client.record_log()? {
            Some(log) => log,
            None => Arc::new(KvRecordLog::new(client.clone())),
        };
        Self::open_with(client, records, config, shards, now)
    }

    fn open_with(
        client: Arc<dyn StorageClient>,
        records: Arc<dyn RecordLog>,
        config: AggregationConfig,
        shards: usize,
        now: u64,
    ) -> Result<(Durable, ShardedEngine, Recovery), DurableError> {
        let shards = shards.clamp(1, crate::shard::MAX_SHARDS);
        // Every shard with the same seeds: a shard's stream ids need only
        // be its own, and one set in the metadata serves them all.
        let fresh = |count: usize, start: u64, seeds: Seeds| {
            (0..count)
                .map(|_| {
                    Engine::with_seeds(ShardedEngine::shard_config(&config, count), start, seeds)
                        .map_err(|e| DurableError::from(Corrupt(format!("config: {e}"))))
                })
                .collect::<Result<Vec<_>, _>>()
        };
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
                shard_seqs: vec![0; shards],
                log: VecDeque::new(),
                log_bytes: 0,
                snapshot_bytes: 0,
                snapshot_after: SNAPSHOT_AFTER,
                shards: shards as u32,
            };
            d.client.set(META, d.meta(&d.shard_seqs, 0))?;
            let engine = ShardedEngine::from_engines(&config, fresh(shards, now, seeds)?)
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
        // Formats 1 and 2: one shard.
        let count = if found >= 3 { r.u32()? as usize } else { 1 };
        if !(1..=crate::shard::MAX_SHARDS).contains(&count) {
            return Err(Corrupt(format!("{count} shards")).into());
        }
        // Format 4: the record each shard's snapshot covers; before, one
        // for all.
        let shard_seqs = if found >= 4 {
            (0..count).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?
        } else {
            vec![snapshot_seq; count]
        };
        if shard_seqs.iter().copied().min() != Some(snapshot_seq) {
            return Err(Corrupt(format!(
                "the shards' snapshots cover records {shard_seqs:?}, the metadata names {snapshot_seq}"
            ))
            .into());
        }
        if count != shards {
            tracing::info!(
                state = count,
                configured = shards,
                "aggregation state: keeping the shard count it was created with"
            );
        }
        let engines = if snapshot_parts > 0 {
            let mut bytes = vec![];
            for p in 0..snapshot_parts {
                let key = snap_key(snapshot_seq, p);
                let part = client
                    .get(&key)?
                    .ok_or_else(|| Corrupt(format!("snapshot part {key} is missing")))?;
                bytes.extend_from_slice(&part);
            }
            recovery.snapshot_bytes = bytes.len() as u64;
            restore_shards(&ShardedEngine::shard_config(&config, count), count, &bytes)?
        } else {
            fresh(count, collector_start, Seeds(seeds))?
        };
        let engine = ShardedEngine::from_engines(&config, engines)
            .map_err(|e| Corrupt(format!("config: {e}")))?;
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
                Ok(logged) if torn.is_empty() => {
                    let weight = replay_bytes(value.len(), &logged.ops);
                    // The shards whose snapshot this record follows.
                    let mask = shard_seqs
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| **s < seq)
                        .fold(0u64, |m, (i, _)| m | (1u64 << i));
                    for (at, op) in logged.ops {
                        engine.replay_op(op, at, mask, logged.checked);
                    }
                    recovery.records += 1;
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
            shard_seqs,
            log,
            log_bytes,
            snapshot_bytes: recovery.snapshot_bytes,
            snapshot_after: SNAPSHOT_AFTER,
            shards: count as u32,
        };
        if found < FORMAT_VERSION {
            // Before the first record of this format is written.
            d.client.set(META, d.meta(&d.shard_seqs, snapshot_parts))?;
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
    ) -> Result<(Durable, ShardedEngine, Recovery), DurableError> {
        let (mut d, engine, recovery) = Durable::open_with(
            self.client.clone(),
            self.records.clone(),
            config,
            self.shards as usize,
            now,
        )?;
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
        self.log_bytes
            >= self
                .snapshot_after
                .max(SNAPSHOT_RATIO * self.snapshot_bytes)
    }

    /// Whether records were written since the last snapshot.
    pub fn has_log(&self) -> bool {
        !self.log.is_empty()
    }

    /// The sequence number of the last record written (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Writes a snapshot: `shards`, each shard's ([`Engine::snapshot`]),
    /// shard `k`'s after every record up to `seqs[k]` and none after. It
    /// deletes the snapshot it replaces in the same transaction. Records
    /// after the least of `seqs` stay: recovery replays each on top of the
    /// shards whose snapshot it follows.
    pub fn snapshot(&mut self, seqs: Vec<u64>, shards: Vec<Vec<u8>>) -> Result<(), StorageError> {
        let write = self.prepare_snapshot(seqs, shards)?;
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
        seqs: Vec<u64>,
        shards: Vec<Vec<u8>>,
    ) -> Result<SnapshotWrite, StorageError> {
        let (seq, last) = (
            seqs.iter().copied().min().unwrap_or(0),
            seqs.iter().copied().max().unwrap_or(0),
        );
        let bad = |message: String| StorageError::BadValue {
            key: snap_key(seq, 0),
            message,
        };
        if seqs.len() != self.shards as usize || shards.len() != seqs.len() {
            return Err(bad(format!(
                "a snapshot of {} shards at {} records for a state of {} (not written)",
                shards.len(),
                seqs.len(),
                self.shards
            )));
        }
        if seq < self.snapshot_seq || last > self.last_seq() {
            return Err(bad(format!(
                "a snapshot at records {seq}..={last} is outside the records {}..={} (not written)",
                self.snapshot_seq,
                self.last_seq()
            )));
        }
        Ok(SnapshotWrite {
            client: self.client.clone(),
            records: self.records.clone(),
            shards,
            meta: self.meta_fields(),
            old: (self.snapshot_seq, self.snapshot_parts),
            done: SnapshotDone {
                seqs,
                parts: 0,
                bytes: 0,
                result: Ok(()),
                took: std::time::Duration::ZERO,
            },
        })
    }

    /// What [`Durable::meta`] needs, for a snapshot written elsewhere.
    fn meta_fields(&self) -> MetaFields {
        MetaFields {
            instance: self.instance,
            collector_start: self.collector_start,
            seeds: self.seeds,
            shards: self.shards,
        }
    }

    /// Takes note of a snapshot written (or not) by [`SnapshotWrite::run`]:
    /// the records it covers no longer count towards the next one.
    pub fn snapshot_finished(&mut self, done: SnapshotDone) -> Result<(), StorageError> {
        done.result.clone()?;
        self.snapshot_seq = done.seq();
        self.snapshot_parts = done.parts;
        let covered = self
            .log
            .iter()
            .take_while(|(s, _)| *s <= done.seq())
            .count();
        for (_, len) in self.log.drain(..covered) {
            self.log_bytes -= len;
        }
        self.snapshot_bytes = done.bytes;
        self.shard_seqs = done.seqs;
        Ok(())
    }
}

/// The fields of the metadata a snapshot's transaction writes anew.
struct MetaFields {
    instance: u64,
    collector_start: u64,
    seeds: Seeds,
    shards: u32,
}

/// The storage writes of one snapshot ([`Durable::prepare_snapshot`]).
pub(crate) struct SnapshotWrite {
    client: Arc<dyn StorageClient>,
    records: Arc<dyn RecordLog>,
    /// Each shard's snapshot.
    shards: Vec<Vec<u8>>,
    meta: MetaFields,
    /// The snapshot it replaces: its record and parts.
    old: (u64, u32),
    done: SnapshotDone,
}

/// What a [`SnapshotWrite`] did.
pub(crate) struct SnapshotDone {
    /// The last record each shard's snapshot covers.
    seqs: Vec<u64>,
    parts: u32,
    /// Bytes of the snapshot.
    pub bytes: u64,
    /// Whether it is on storage.
    pub result: Result<(), StorageError>,
    /// How long laying it out and writing it took.
    pub took: std::time::Duration,
}

impl SnapshotDone {
    /// The last record the snapshot covers for every shard.
    pub fn seq(&self) -> u64 {
        self.seqs.iter().copied().min().unwrap_or(0)
    }
}

impl SnapshotWrite {
    /// Lays the shards out as one snapshot and writes it with its
    /// metadata in one transaction, then lets the record log reuse what it
    /// covers for every shard (recovery skips those records meanwhile).
    pub fn run(self) -> SnapshotDone {
        let started = std::time::Instant::now();
        let mut done = self.done;
        let seq = done.seq();
        let (parts, bytes) = snapshot_parts(&self.shards, PART);
        drop(self.shards);
        let mut ops: Vec<StorageOp> = parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| StorageOp::Set(snap_key(seq, i as u32), p))
            .collect();
        done.parts = ops.len() as u32;
        done.bytes = bytes;
        let m = &self.meta;
        ops.push(StorageOp::Set(
            META.into(),
            meta_bytes(
                m.instance,
                m.collector_start,
                &m.seeds,
                m.shards,
                &done.seqs,
                done.parts,
            ),
        ));
        // The replaced snapshot's parts (a snapshot at the same record
        // overwrote them; any beyond its own count are left, never read).
        let (old_seq, old_parts) = self.old;
        if seq != old_seq {
            ops.extend((0..old_parts).map(|p| StorageOp::Delete(snap_key(old_seq, p))));
        }
        done.result = self.client.batch(ops);
        done.took = started.elapsed();
        if done.result.is_ok() {
            if let Err(e) = self.records.forget_through(seq) {
                tracing::warn!(error = %e, "aggregation state: log records a snapshot covers not released (recovery skips them)");
            }
        }
        done
    }
}

#[cfg(test)]
mod tests;
