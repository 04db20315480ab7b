//! The log thread's own tests, on memory storage: what it logs, and
//! snapshots read a shard at a time while requests go on.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use otelcol_core::pdata::proto::metrics::v1::{metric, number_data_point};
use otelcol_core::storage::{MemoryStorage, StorageClient, StorageOp};

use super::*;
use crate::durable::{read_record, Request};
use crate::engine::AddError;

const NS: u64 = 1_000_000_000;
const T0: u64 = 1_795_255_200 * NS;

fn now() -> u64 {
    T0
}

/// Memory storage whose writes fail once `frozen` (a `kill -9`: nothing
/// written after it counts).
#[derive(Default)]
struct Freezable {
    data: MemoryStorage,
    frozen: AtomicBool,
}

impl StorageClient for Freezable {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.data.get(key)
    }
    fn batch(&self, ops: Vec<StorageOp>) -> Result<(), StorageError> {
        if self.frozen.load(Ordering::SeqCst) {
            return Err(StorageError::Closed);
        }
        self.data.batch(ops)
    }
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        self.data.scan(prefix)
    }
}

fn config(max_series: usize) -> AggregationConfig {
    AggregationConfig {
        aggregation_interval: Duration::from_secs(60),
        max_series,
        ..Default::default()
    }
}

/// A request of one delta point at `T0` for each of `users`.
fn add(users: &[&str], value: f64) -> Op {
    let points: Vec<String> = users
        .iter()
        .map(|u| {
            format!(
                r#"{{"attributes":[{{"key":"user.email","value":{{"stringValue":"{u}"}}}}],
                "timeUnixNano":"{T0}","asDouble":{value}}}"#
            )
        })
        .collect();
    let json = format!(
        r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m","sum":{{
        "aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{}]}}}}]}}]}}]}}"#,
        points.join(",")
    );
    Op::Add {
        token: None,
        headers: vec![],
        request: Request::Decoded(serde_json::from_str(&json).unwrap()),
    }
}

fn packed(op: &Op) -> Packed {
    match op {
        Op::Add {
            request: Request::Decoded(m),
            ..
        } => Packed::pack(&prost::Message::encode_to_vec(m)),
        _ => Packed::default(),
    }
}

/// Every total of `e` by user, its windows closed.
fn totals(e: &ShardedEngine) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for b in e.take_all() {
        for m in b
            .data
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
        {
            let Some(metric::Data::Sum(s)) = &m.data else {
                panic!("{m:?}")
            };
            for dp in &s.data_points {
                let user = dp.attributes[0]
                    .value
                    .as_ref()
                    .and_then(otelcol_core::pdata::as_str)
                    .unwrap()
                    .to_string();
                let Some(number_data_point::Value::AsDouble(v)) = dp.value else {
                    panic!("{dp:?}")
                };
                *out.entry(user).or_insert(0.0) += v;
            }
        }
    }
    out
}

fn start(storage: Arc<Freezable>, config: &AggregationConfig, shards: usize) -> LogWriter {
    let (d, engine, _) = Durable::open(storage, config.clone(), shards, T0).unwrap();
    LogWriter::start(d, Arc::new(engine), config.clone(), now, "t".into(), false).unwrap()
}

/// A request refused by `max_series` changed nothing: it is answered at
/// once and never logged (so a replay can apply every request unchecked).
#[tokio::test]
async fn a_refused_request_is_not_logged() {
    let storage = Arc::new(Freezable::default());
    let log = start(storage.clone(), &config(1), 1);
    let outcome = |a: Applied| match a {
        Applied::Added { outcome, .. } => outcome.map(|o| o.accepted),
        _ => panic!("not an add"),
    };
    let ana = add(&["ana"], 1.0);
    let taken = log.submit(ana.clone(), packed(&ana), None).await.unwrap();
    assert_eq!(outcome(taken), Ok(1));
    let dee = add(&["dee"], 2.0);
    let refused = log.submit(dee.clone(), packed(&dee), None).await.unwrap();
    assert_eq!(
        outcome(refused),
        Err(AddError::SeriesLimit {
            needed: 1,
            free: 0,
            max: 1
        })
    );
    storage.frozen.store(true, Ordering::SeqCst);
    log.stop().await;
    let records = storage.data.scan("log/").unwrap();
    let ops: Vec<usize> = records
        .iter()
        .map(|(_, r)| read_record(r).unwrap().ops.len())
        .collect();
    assert_eq!(ops, vec![1], "one record of one op: ana's");
}

/// Requests of three shards' users (and spread over all three) from
/// several tasks while the log thread reads a snapshot round after every
/// group; a `kill -9` after the last answer. The state read back holds
/// every answered request exactly once.
#[test]
fn rounds_read_a_shard_at_a_time_lose_and_double_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    // Users on shards 1, 0 and 2 of three.
    let users = ["ana@example.com", "dee", "fay"];
    let config = config(usize::MAX);
    let large: Vec<&str> = users.repeat(500);
    let unpacked = Packed::unpacked_len(packed(&add(&large, 0.5)).as_bytes());
    assert!(unpacked >= COMMIT_NOW_BYTES, "{unpacked} bytes");
    for _ in 0..3 {
        let storage = Arc::new(Freezable::default());
        let (mut d, engine, _) = Durable::open(storage.clone(), config.clone(), 3, T0).unwrap();
        // A snapshot round after every group.
        d.snapshot_after = 1;
        let engine = Arc::new(engine);
        let log = Arc::new(
            LogWriter::start(d, engine.clone(), config.clone(), now, "t".into(), false).unwrap(),
        );
        let mut expected: BTreeMap<String, f64> = BTreeMap::new();
        let mut tasks = vec![];
        for t in 0..6usize {
            let log = log.clone();
            // Some large enough to start their group at once.
            let ops: Vec<Op> = (0..150)
                .map(|i| match (t + i) % 4 {
                    _ if i % 25 == 0 => add(&large, 0.5),
                    3 => add(&users, 1.0),
                    k => add(&[users[k]], (i % 5) as f64),
                })
                .collect();
            for op in &ops {
                for (u, v) in points(op, &users) {
                    *expected.entry(u).or_insert(0.0) += v;
                }
            }
            tasks.push(rt.spawn(async move {
                for op in ops {
                    let p = packed(&op);
                    log.submit(op, p, None).await.unwrap();
                }
            }));
        }
        rt.block_on(async {
            for t in tasks {
                t.await.unwrap();
            }
        });
        assert_eq!(totals_peek(&engine), expected, "the live engine");
        // kill -9: what was on storage at the last answer is all there is.
        storage.frozen.store(true, Ordering::SeqCst);
        rt.block_on(log.stop());
        storage.frozen.store(false, Ordering::SeqCst);
        let (back_d, back, rec) = Durable::open(storage.clone(), config.clone(), 3, T0).unwrap();
        assert!(back_d.last_seq() > 0 && rec.snapshot_bytes > 0, "{rec:?}");
        assert_eq!(totals(&back), expected, "read back ({rec:?})");
    }
}

/// The values of `op`'s points, by user (what [`add`] built).
fn points(op: &Op, users: &[&str]) -> Vec<(String, f64)> {
    let Op::Add {
        request: Request::Decoded(m),
        ..
    } = op
    else {
        return vec![];
    };
    let mut out = vec![];
    for m in m
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
    {
        let Some(metric::Data::Sum(s)) = &m.data else {
            continue;
        };
        for dp in &s.data_points {
            let user = dp.attributes[0]
                .value
                .as_ref()
                .and_then(otelcol_core::pdata::as_str)
                .unwrap();
            assert!(users.contains(&user));
            let Some(number_data_point::Value::AsDouble(v)) = dp.value else {
                continue;
            };
            out.push((user.to_string(), v));
        }
    }
    out
}

/// [`totals`] of the live engine, without closing its windows (a copy
/// made from its snapshot).
fn totals_peek(e: &ShardedEngine) -> BTreeMap<String, f64> {
    let engines = e
        .snapshot()
        .into_iter()
        .map(|b| Engine::restore(ShardedEngine::shard_config(&config(usize::MAX), 3), &b).unwrap())
        .collect();
    totals(&ShardedEngine::from_engines(&config(usize::MAX), engines).unwrap())
}

/// Writes that fail for a few milliseconds (a disk filling and freed)
/// while requests of three shards come from several tasks and snapshot
/// rounds are read after every group: each failed write refuses its group
/// and those behind it and rebuilds the engine while a round may be being
/// read. Then a `kill -9` soon after the last failure.
/// What was answered Ok is in the state read back, exactly; what was
/// refused is in no total.
#[test]
fn failed_writes_during_rounds_refuse_exactly_what_they_answer() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let users = ["ana@example.com", "dee", "fay"];
    let config = config(usize::MAX);
    let mut refusals = 0;
    for round in 0..12u64 {
        let storage = Arc::new(Freezable::default());
        let (mut d, engine, _) = Durable::open(storage.clone(), config.clone(), 3, T0).unwrap();
        d.snapshot_after = 1;
        let engine = Arc::new(engine);
        let log = Arc::new(
            LogWriter::start(d, engine.clone(), config.clone(), now, "t".into(), false).unwrap(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = vec![];
        for t in 0..6usize {
            let (log, stop) = (log.clone(), stop.clone());
            let users = users.map(str::to_string);
            tasks.push(rt.spawn(async move {
                let mut answered: BTreeMap<String, f64> = BTreeMap::new();
                let mut refused = 0;
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let names: Vec<&str> = match (t + i) % 4 {
                        3 => users.iter().map(String::as_str).collect(),
                        k => vec![users[k].as_str()],
                    };
                    let op = add(&names, (1 + i % 5) as f64);
                    let sums = points(&op, &names);
                    let p = packed(&op);
                    match log.submit(op, p, None).await {
                        Ok(_) => {
                            for (u, v) in sums {
                                *answered.entry(u).or_insert(0.0) += v;
                            }
                        }
                        Err(_) => refused += 1,
                    }
                    i += 1;
                }
                (answered, refused)
            }));
        }
        let (mut expected, mut refused) = (BTreeMap::new(), 0);
        rt.block_on(async {
            // Failures of 1-3 ms, the last one right before the kill.
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(6)).await;
                storage.frozen.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1 + round % 3)).await;
                storage.frozen.store(false, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_micros(500 * (round % 4))).await;
            // kill -9: nothing written from here on counts.
            storage.frozen.store(true, Ordering::SeqCst);
            stop.store(true, Ordering::SeqCst);
            for t in tasks {
                let (answered, r) = t.await.unwrap();
                for (u, v) in answered {
                    *expected.entry(u).or_insert(0.0) += v;
                }
                refused += r;
            }
        });
        refusals += refused;
        rt.block_on(log.stop());
        storage.frozen.store(false, Ordering::SeqCst);
        let (_, back, _) = Durable::open(storage.clone(), config.clone(), 3, T0).unwrap();
        assert_eq!(totals(&back), expected, "read back, round {round}");
    }
    assert!(refusals > 0, "no write failed while requests came");
}
