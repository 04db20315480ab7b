//! The durable state's own tests: formats, faults, snapshots and the
//! log's cycle, on memory storage.

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

/// [`Durable::open`] of a state of one shard, its engine.
fn open1(
    client: Arc<MemoryStorage>,
    config: AggregationConfig,
    now: u64,
) -> Result<(Durable, Engine, Recovery), DurableError> {
    let (d, e, rec) = Durable::open(client, config, 1, now)?;
    let mut engines = e.into_engines();
    assert_eq!(engines.len(), 1);
    Ok((d, engines.remove(0), rec))
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

/// Ops of a random run: delta and cumulative points of three users (on
/// shards 1, 0 and 2 of three) under two tokens, one request in ten of all
/// three, closings, and pieces of `shards` shards taken (some never).
fn script(seed: u64, shards: u32) -> Vec<(u64, Op)> {
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
        let name = ["ana", "dee", "fay"][user];
        let token = [None, Some("t1")][next(2) as usize];
        match next(10) {
            0 => ops.push((
                now,
                Op::Close {
                    shard: next(u64::from(shards)) as u32,
                    targets: 1,
                },
            )),
            1 => {
                // Take some piece, as a branch would.
                ops.push((
                    now,
                    Op::Done {
                        shard: next(u64::from(shards)) as u32,
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
            6 => ops.push((now, add_all(next(9) as f64, now - next(90) * NS, token))),
            _ => ops.push((
                now,
                add(name, next(9) as f64, now - next(90) * NS, None, token),
            )),
        }
    }
    ops
}

/// A request of one delta point for each of the three users (on the
/// point: the shards split it).
fn add_all(value: f64, time: u64, token: Option<&str>) -> Op {
    let points: Vec<String> = ["ana", "dee", "fay"]
        .iter()
        .map(|u| {
            format!(
                r#"{{"attributes":[{{"key":"user.email","value":{{"stringValue":"{u}"}}}}],
                "timeUnixNano":"{time}","asDouble":{value}}}"#
            )
        })
        .collect();
    let json = format!(
        r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m","sum":{{
        "aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{}]}}}}]}}]}}]}}"#,
        points.join(",")
    );
    Op::Add {
        token: token.map(str::to_string),
        headers: vec![],
        request: Request::Decoded(serde_json::from_str(&json).unwrap()),
    }
}

/// Shards of `config` with the same seeds (so that stream ids compare).
fn sharded(config: &AggregationConfig, shards: usize, seeds: Seeds) -> ShardedEngine {
    let each = ShardedEngine::shard_config(config, shards);
    let engines = (0..shards)
        .map(|_| Engine::with_seeds(each.clone(), T0, seeds).unwrap())
        .collect();
    ShardedEngine::from_engines(config, engines).unwrap()
}

/// Applies `op` as the log writer does: logged unless refused. Returns
/// whether it was refused.
fn apply_logged(e: &ShardedEngine, op: &Op, now: u64) -> bool {
    let (applied, logged) = e.apply_op(op.clone(), now, None, |_| ());
    let refused = matches!(
        applied,
        Applied::Added {
            outcome: Err(_),
            ..
        }
    );
    assert_eq!(
        logged.is_none(),
        refused,
        "handed to the log unless refused"
    );
    refused
}

/// [`drain`] of every shard.
fn drain_all(e: ShardedEngine) -> std::collections::BTreeMap<(Option<String>, String, u64), f64> {
    let mut all = std::collections::BTreeMap::new();
    for mut shard in e.into_engines() {
        for (k, v) in drain(&mut shard) {
            *all.entry(k).or_insert(0.0) += v;
        }
    }
    all
}

/// A run of [`script`] against `shards` shards, logged as the log writer
/// logs (refused requests not at all), with snapshots of every shard at
/// one record, snapshots written late, and rounds whose shards are read
/// at different records (as the log thread reads them), killed at random
/// moments; in the end the totals equal a run without a crash.
/// `max_series` (when bounded) refuses some requests.
fn replay_after_crashes(shards: usize, max_series: usize) {
    let config = AggregationConfig {
        max_series,
        ..config()
    };
    let (mut refusals, mut rounds) = (0, 0);
    for seed in 1..=40u64 {
        let ops = script(seed, shards as u32);
        let plain = sharded(&config, shards, Seeds([seed; 12]));
        for (now, op) in &ops {
            refusals += apply_logged(&plain, op, *now) as usize;
        }
        let storage = Arc::new(MemoryStorage::default());
        let (mut d, _, _) = Durable::open(storage.clone(), config.clone(), shards, T0).unwrap();
        assert_eq!(d.shards, shards as u32);
        // The same seeds as the plain engine, so ids compare.
        let mut e = sharded(&config, shards, Seeds([seed; 12]));
        d.seeds = Seeds([seed; 12]);
        d.client.set(META, d.meta(&vec![0; shards], 0)).unwrap();
        let mut crashes = 0;
        // A snapshot taken a few records ago and written only now, as
        // the log thread writes a round while later records are already
        // on disk.
        let mut lagging: Option<(Vec<u64>, Vec<Vec<u8>>)> = None;
        // A round read one shard at a time: each shard's record and bytes.
        let mut round: Vec<(u64, Vec<u8>)> = vec![];
        for (i, (now, op)) in ops.iter().enumerate() {
            if !apply_logged(&e, op, *now) {
                d.append(record(&[(*now, op, &encoded(op))])).unwrap();
            }
            let seq = d.last_seq();
            if (i as u64 * 7 + seed) % 23 == 0 && seq > 0 {
                d.snapshot(vec![seq; shards], e.snapshot()).unwrap();
            }
            if (i as u64 * 5 + seed) % 17 == 0 {
                if let Some((at, snap)) = lagging.take() {
                    // One already covered by a newer snapshot is refused.
                    let allowed = at[0] >= d.snapshot_seq;
                    assert_eq!(d.snapshot(at, snap).is_ok(), allowed, "seed {seed}");
                }
                lagging = Some((vec![seq; shards], e.snapshot()));
            }
            if (i as u64 * 11 + seed) % 4 == 0 {
                let k = round.len();
                let (taken, ()) = e.take_snapshot_of(k, || ());
                round.push((seq, taken.into_bytes()));
                if round.len() == shards {
                    let (seqs, snap): (Vec<u64>, Vec<Vec<u8>>) = round.drain(..).unzip();
                    let allowed = seqs[0] >= d.snapshot_seq;
                    assert_eq!(d.snapshot(seqs, snap).is_ok(), allowed, "seed {seed}");
                    rounds += allowed as usize;
                }
            }
            if (i as u64 * 13 + seed) % 37 == 0 {
                // kill -9: everything in memory is gone. The state keeps
                // its shard count whatever the configuration says now.
                let (d2, e2, rec) =
                    Durable::open(storage.clone(), config.clone(), 5, now + NS).unwrap();
                assert!(rec.found);
                assert_eq!(e2.len(), shards);
                (d, e) = (d2, e2);
                lagging = None;
                round.clear();
                crashes += 1;
            }
        }
        assert!(crashes > 3, "seed {seed}: {crashes} crashes");
        assert_eq!(e.open_series(), plain.open_series(), "seed {seed}");
        assert_eq!(e.open_streams(), plain.open_streams(), "seed {seed}");
        assert_eq!(drain_all(e), drain_all(plain), "seed {seed}");
    }
    assert!(rounds > 40, "{rounds} rounds written");
    if max_series < usize::MAX {
        assert!(refusals > 40, "{refusals} requests refused");
    }
}

#[test]
fn a_replay_after_any_crash_gives_the_state_of_a_run_without_one() {
    replay_after_crashes(1, usize::MAX);
}

/// The same in three shards: requests of one user and of all three (split
/// between shards), pieces taken from every shard, snapshots of all.
#[test]
fn a_sharded_replay_after_any_crash_gives_the_state_of_a_run_without_one() {
    replay_after_crashes(3, usize::MAX);
}

/// And with requests refused by `max_series`: a replay must not refuse
/// what was taken (a shard's snapshot can be later than its neighbours',
/// so the other shards' counts differ from when it was applied).
#[test]
fn a_replay_near_max_series_gives_the_state_of_a_run_without_one() {
    replay_after_crashes(1, 30);
    replay_after_crashes(3, 30);
}

#[test]
fn what_a_snapshot_covers_is_deleted_by_the_next_appends_not_at_once() {
    let storage = Arc::new(MemoryStorage::default());
    let (mut d, mut e, _) = open1(storage.clone(), config(), T0).unwrap();
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
    d.snapshot(vec![last], vec![e.snapshot()]).unwrap();
    assert_eq!(logs(&storage), 150, "the snapshot itself deletes nothing");
    // A crash now: the covered records are ignored, not replayed.
    let (_, mut back, rec) = open1(storage.clone(), config(), T0).unwrap();
    assert_eq!(rec.records, 0);
    assert_eq!(drain(&mut back).values().sum::<f64>(), 150.0);
    append(&mut d, &mut e, 1.0);
    assert_eq!(logs(&storage), 150 + 1 - 64);
    append(&mut d, &mut e, 1.0);
    append(&mut d, &mut e, 1.0);
    assert_eq!(logs(&storage), 3, "150 deleted in 64s over three appends");
    d.snapshot(vec![last + 3], vec![e.snapshot()]).unwrap();
    d.compact().unwrap();
    assert_eq!(logs(&storage), 0);
    assert_eq!(
        storage.scan("snap/").unwrap().len(),
        1,
        "one snapshot part left"
    );
    let (_, mut back, rec) = open1(storage.clone(), config(), T0).unwrap();
    assert_eq!(rec.records, 0);
    assert_eq!(drain(&mut back).values().sum::<f64>(), 153.0);
}

#[test]
fn a_torn_last_record_is_dropped_and_a_torn_middle_one_refuses_to_start() {
    let storage = Arc::new(MemoryStorage::default());
    let (mut d, mut e, _) = open1(storage.clone(), config(), T0).unwrap();
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
    let (_, mut back, rec) = open1(storage.clone(), config(), T0 + NS).unwrap();
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
    let err = open1(storage.clone(), config(), T0 + NS).err().unwrap();
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
    let (mut d, _, _) = open1(storage.clone(), config(), T0).unwrap();
    let (a, b) = (
        add("ana", 2.0, T0, None, None),
        add("bo", 3.0, T0 + NS, None, Some("t1")),
    );
    d.append(record_v1(T0 + 2 * NS, &[&a, &b])).unwrap();
    let c = add("ana", 5.0, T0 + 3 * NS, None, None);
    d.append(record(&[(T0 + 3 * NS, &c, &encoded(&c))]))
        .unwrap();
    let (_, mut back, rec) = open1(storage, config(), T0 + 4 * NS).unwrap();
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
fn a_state_of_format_1_is_read_then_marked_4_before_a_packed_record_is_written() {
    let storage = Arc::new(MemoryStorage::default());
    let (mut d, _, _) = open1(storage.clone(), config(), T0).unwrap();
    // As format 1 left it: its version in the metadata (and no shard
    // count or records of shards), its requests unpacked (tag 0) in
    // records of per-op times.
    let mut meta = d.meta(&[0], 0);
    meta[4..8].copy_from_slice(&1u32.to_le_bytes());
    meta.truncate(meta.len() - 12);
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
    w.buf.extend_from_slice(LOG_MAGIC_V2);
    w.u32(crc32fast::hash(&p.buf));
    w.bytes(&p.buf);
    d.append(Record {
        replay_bytes: 0,
        bytes: w.buf,
    })
    .unwrap();

    let (mut d, _, rec) = open1(storage.clone(), config(), T0 + 2 * NS).unwrap();
    assert_eq!(rec.records, 1);
    let version = |s: &MemoryStorage| {
        let m = s.get(META).unwrap().unwrap();
        u32::from_le_bytes(m[4..8].try_into().unwrap())
    };
    assert_eq!(version(&storage), 4, "marked before anything is written");
    let c = add("ana", 5.0, T0 + 2 * NS, None, None);
    d.append(record(&[(T0 + 2 * NS, &c, &encoded(&c))]))
        .unwrap();
    let (_, mut back, rec) = open1(storage.clone(), config(), T0 + 3 * NS).unwrap();
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
    let (mut d, _, _) = open1(storage.clone(), config(), T0).unwrap();
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
    let (back_d, mut back, _) = open1(storage.clone(), config(), T0).unwrap();
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
    let (d, _, _) = open1(storage.clone(), config(), T0).unwrap();
    let mut meta = d.meta(&[0], 0);
    meta[4..8].copy_from_slice(&7u32.to_le_bytes());
    storage.set(META, meta).unwrap();
    let err = open1(storage, config(), T0).err().unwrap();
    assert_eq!(
        err.to_string(),
        "aggregation state was written by an incompatible version (storage format 7, this build reads formats 1 to 4); stop this collector, move the storage directory away (its totals are not readable by this version) or run the version that wrote it"
    );
}

/// A state of format 3 (one snapshot record for every shard, refused
/// requests logged too) replays its records checking `max_series` again,
/// so what was refused stays refused; its later records are of format 4.
#[test]
fn records_of_format_3_replay_their_refusals() {
    let config = AggregationConfig {
        max_series: 1,
        ..config()
    };
    let storage = Arc::new(MemoryStorage::default());
    let (mut d, _, _) = Durable::open(storage.clone(), config.clone(), 3, T0).unwrap();
    // As format 3 left it: no records of shards in the metadata.
    let mut meta = d.meta(&[0, 0, 0], 0);
    meta[4..8].copy_from_slice(&3u32.to_le_bytes());
    meta.truncate(meta.len() - 24);
    storage.set(META, meta).unwrap();
    let (a, b) = (
        add("ana", 2.0, T0, None, None),
        add("dee", 3.0, T0 + NS, None, None),
    );
    // "dee" was refused (no room), and logged: format 3 logged refusals.
    let mut rec = record(&[(T0, &a, &encoded(&a)), (T0 + NS, &b, &encoded(&b))]);
    rec.bytes[..4].copy_from_slice(LOG_MAGIC_V2);
    d.append(rec).unwrap();

    let (mut d, e, rec) = Durable::open(storage.clone(), config.clone(), 3, T0 + 2 * NS).unwrap();
    assert_eq!((rec.records, e.open_series()), (1, 1));
    let version = u32::from_le_bytes(
        storage.get(META).unwrap().unwrap()[4..8]
            .try_into()
            .unwrap(),
    );
    assert_eq!(version, 4);
    let c = add("ana", 5.0, T0 + 2 * NS, None, None);
    assert!(!apply_logged(&e, &c, T0 + 2 * NS));
    d.append(record(&[(T0 + 2 * NS, &c, &encoded(&c))]))
        .unwrap();
    let (_, back, rec) = Durable::open(storage, config, 3, T0 + 3 * NS).unwrap();
    assert_eq!(rec.records, 2);
    let window = T0 - T0 % (60 * NS);
    assert_eq!(
        drain_all(back),
        [((None, "ana".to_string(), window), 7.0)]
            .into_iter()
            .collect()
    );
}

/// A snapshot is laid out straight into its parts: joined, they are the
/// snapshot's layout (one shard's bytes as they are; several after the
/// magic and their count, each after its length), whatever the part size.
#[test]
fn a_snapshot_is_laid_out_in_parts_of_its_layout() {
    let shards: Vec<Vec<u8>> = vec![
        (0..23u8).collect(),
        vec![],
        (100..105u8).collect(),
        vec![7; 9],
    ];
    let mut layout = Writer::default();
    layout.buf.extend_from_slice(SHARDS_MAGIC);
    layout.len(shards.len());
    shards.iter().for_each(|s| layout.bytes(s));
    for part in [1, 3, 7, 16, 57, 1000] {
        let (parts, total) = snapshot_parts(&shards, part);
        assert_eq!(total, layout.buf.len() as u64, "part {part}");
        assert!(parts.iter().all(|p| !p.is_empty() && p.len() <= part));
        assert_eq!(parts.len(), layout.buf.len().div_ceil(part), "part {part}");
        assert_eq!(parts.concat(), layout.buf, "part {part}");
        let (one, total) = snapshot_parts(&shards[..1], part);
        assert_eq!((one.concat(), total), (shards[0].clone(), 23));
    }
    // And read back: three shards' engines, through parts of 64 bytes.
    let e = sharded(&config(), 3, Seeds([5; 12]));
    for op in [
        add("ana", 2.0, T0, None, None),
        add_all(1.0, T0, Some("t1")),
    ] {
        e.apply_op(op, T0, None, |_| ());
    }
    let (parts, _) = snapshot_parts(&e.snapshot(), 64);
    assert!(parts.len() > 3);
    let each = ShardedEngine::shard_config(&config(), 3);
    let back = restore_shards(&each, 3, &parts.concat()).unwrap();
    let back = ShardedEngine::from_engines(&config(), back).unwrap();
    assert_eq!(drain_all(back), drain_all(e));
}

/// A request is handed to the log while its shards are locked, once it is
/// known to be taken and **before** it is applied (the log writes it while
/// it is applied); a refused one never.
#[test]
fn a_request_is_handed_to_the_log_before_it_is_applied() {
    for shards in [1, 3] {
        let limited = AggregationConfig {
            max_series: 3,
            ..config()
        };
        let e = sharded(&limited, shards, Seeds([7; 12]));
        // The open series published when the log has it: none of its own
        // yet, for one user and for a request spread over every shard.
        let (applied, seen) = e.apply_op(add("ana", 1.0, T0, None, None), T0, None, |_| {
            e.open_series()
        });
        assert_eq!(seen, Some(0), "{shards} shards: handed over before applied");
        assert!(matches!(
            applied,
            Applied::Added {
                outcome: Ok(_),
                open_series: 1
            }
        ));
        let (applied, seen) = e.apply_op(add_all(1.0, T0, None), T0, None, |_| e.open_series());
        assert_eq!(seen, Some(1), "{shards} shards: a spread request too");
        assert!(matches!(
            applied,
            Applied::Added {
                outcome: Ok(_),
                open_series: 3
            }
        ));
        // The next window's three series do not fit: refused whole, never
        // handed over.
        let next = T0 + 60_000_000_000;
        let (applied, seen) = e.apply_op(add_all(1.0, next, None), next, None, |_| ());
        assert_eq!(
            seen, None,
            "{shards} shards: a refused request is not logged"
        );
        assert!(matches!(
            applied,
            Applied::Added {
                outcome: Err(AddError::SeriesLimit { needed: 3, .. }),
                open_series: 3
            }
        ));
    }
}
