//! The sending queue: in memory, or on a storage client (persistent).
//!
//! A request counts against the capacity while it waits, as in Go's
//! queues; the senders hold at most `num_consumers` more, so memory stays
//! bounded whatever the destination does. With storage, a request
//! is written durably before `push` returns and deleted only when done; on
//! start every stored request is queued again (at-least-once: one that was
//! being sent when the process died is sent again, with the same
//! idempotency key). A persistent queue keeps only each request's size in
//! memory and reads the payload back when a sender takes it, so the
//! backlog of a long outage lives on disk, not in memory (also at start).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{oneshot, Notify};

use super::Request;
use crate::consumer::{BearerToken, ConsumerError};
use crate::pdata::Batchable;
use crate::storage::{StorageClient, StorageError, StorageOp};

/// Told the final result of a request whose caller waits for it.
pub(crate) type Waiter = oneshot::Sender<Result<(), ConsumerError>>;

/// Key prefix of stored requests.
const PREFIX: &str = "q/";
/// The first bytes of a stored request: format version 2 (with the
/// partition label).
const MAGIC: &[u8; 4] = b"OQR2";
/// Version 1 (no partition label), still read.
const MAGIC_V1: &[u8; 4] = b"OQR1";

/// A request a sender took.
pub(crate) struct Entry<T> {
    pub id: u64,
    pub request: Request<T>,
    /// Told the final result when the caller waits for it.
    pub waiter: Option<Waiter>,
}

/// A request waiting: its payload in memory (memory queue), or only on
/// storage (`None`: a persistent queue reads it back at `pop`).
struct Slot<T> {
    id: u64,
    items: u64,
    units: u64,
    request: Option<Request<T>>,
    waiter: Option<Waiter>,
}

/// A request `pop` could not read back from storage (removed; its items
/// are lost): its items and why.
pub(crate) type Unreadable = (u64, String);

#[derive(Default)]
struct State<T> {
    pending: VecDeque<Slot<T>>,
    /// Units waiting (requests in flight hold no room: there are at most
    /// `num_consumers` of them).
    used: u64,
    /// In flight: id → items.
    inflight: BTreeMap<u64, u64>,
    closed: bool,
    next_id: u64,
}

/// What `push` does when the queue has no room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Refuses ([`Refusal::Full`]).
    Refuse,
    /// Waits for room.
    Block,
    /// Takes the requests anyway (the merge stage's last flush at shutdown,
    /// which must not lose what it acknowledged).
    Force,
}

/// Why `push` did not take the requests.
#[derive(Debug)]
pub(crate) enum Refusal {
    Full,
    Closed,
    Storage(StorageError),
}

/// What is left when the queue stops: requests and items, pending and in flight.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Left {
    pub requests: u64,
    pub items: u64,
}

pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    capacity: u64,
    storage: Option<Arc<dyn StorageClient>>,
    arrived: Notify,
    freed: Notify,
}

fn key(id: u64) -> String {
    format!("{PREFIX}{id:020}")
}

impl<T: Batchable> Queue<T> {
    /// A queue of `capacity` units, on `storage` when given.
    pub fn new(capacity: u64, storage: Option<Arc<dyn StorageClient>>) -> Self {
        Self {
            state: Mutex::new(State {
                pending: VecDeque::new(),
                used: 0,
                inflight: BTreeMap::new(),
                closed: false,
                next_id: 0,
            }),
            capacity,
            storage,
            arrived: Notify::new(),
            freed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether requests survive a restart.
    pub fn persistent(&self) -> bool {
        self.storage.is_some()
    }

    /// Queues what storage holds from an earlier run, in order, reading
    /// only each request's header; `units(items, payload bytes)` weighs
    /// each. Returns (requests, items) recovered and the keys that could
    /// not be read (deleted, for the caller to count and log).
    pub async fn recover(
        &self,
        units: impl Fn(u64, u64) -> u64,
    ) -> Result<(u64, u64, Vec<(String, String)>), StorageError> {
        let Some(storage) = self.storage.clone() else {
            return Ok((0, 0, vec![]));
        };
        let walk = storage.clone();
        let (found, bad) = blocking(move || {
            let (mut found, mut bad) = (Vec::new(), Vec::new());
            walk.visit(PREFIX, &mut |k, v| {
                let id = k[PREFIX.len()..].parse::<u64>().ok();
                match (id, header(v)) {
                    (Some(id), Ok((items, payload))) => found.push((id, items, payload)),
                    (_, Err(e)) => bad.push((k.to_string(), e)),
                    (None, Ok(_)) => bad.push((k.to_string(), "the key holds no number".into())),
                }
            })?;
            Ok((found, bad))
        })
        .await?;
        if !bad.is_empty() {
            let ops = bad
                .iter()
                .map(|(k, _)| StorageOp::Delete(k.clone()))
                .collect();
            blocking(move || storage.batch(ops)).await?;
        }
        let (mut requests, mut items) = (0, 0);
        {
            let mut st = self.state();
            for (id, n, payload) in found {
                requests += 1;
                items += n;
                let u = units(n, payload);
                st.used += u;
                st.next_id = st.next_id.max(id + 1);
                st.pending.push_back(Slot {
                    id,
                    items: n,
                    units: u,
                    request: None,
                    waiter: None,
                });
            }
        }
        self.arrived.notify_waiters();
        Ok((requests, items, bad))
    }

    /// Takes every request of `parts` (with their units) or none; `admit`
    /// says what a full queue does. A request larger than the whole queue
    /// is taken when the queue is empty. With storage, `also` is applied
    /// in the same transaction that stores the requests (the merge stage
    /// removes what it handed over).
    pub async fn push(
        &self,
        parts: Vec<(Request<T>, u64, Option<Waiter>)>,
        admit: Admit,
        also: Vec<StorageOp>,
    ) -> Result<(), Refusal> {
        let total: u64 = parts.iter().map(|p| p.1).sum();
        let first_id = loop {
            let freed = self.freed.notified();
            {
                let mut st = self.state();
                if st.closed {
                    return Err(Refusal::Closed);
                }
                if admit == Admit::Force
                    || st.used == 0
                    || st.used.saturating_add(total) <= self.capacity
                {
                    st.used += total;
                    let id = st.next_id;
                    st.next_id += parts.len() as u64;
                    break id;
                }
            }
            if admit == Admit::Refuse {
                return Err(Refusal::Full);
            }
            freed.await;
        };
        if let Some(storage) = self.storage.clone() {
            let mut ops: Vec<StorageOp> = parts
                .iter()
                .enumerate()
                .map(|(i, p)| StorageOp::Set(key(first_id + i as u64), encode(&p.0)))
                .collect();
            ops.extend(also);
            if let Err(e) = blocking(move || storage.batch(ops)).await {
                self.state().used -= total;
                self.freed.notify_waiters();
                return Err(Refusal::Storage(e));
            }
        }
        let keep = self.storage.is_none();
        let mut st = self.state();
        for (i, (request, units, waiter)) in parts.into_iter().enumerate() {
            st.pending.push_back(Slot {
                id: first_id + i as u64,
                items: request.items,
                units,
                request: keep.then_some(request),
                waiter,
            });
        }
        drop(st);
        self.arrived.notify_waiters();
        Ok(())
    }

    /// The next request to send; `None` once the queue is closed and empty.
    /// A persistent queue reads the payload back here; one that cannot be
    /// read is removed and returned as [`Unreadable`].
    pub async fn pop(&self) -> Option<Result<Entry<T>, Unreadable>> {
        let slot = loop {
            let arrived = self.arrived.notified();
            {
                let mut st = self.state();
                if let Some(slot) = st.pending.pop_front() {
                    st.inflight.insert(slot.id, slot.items);
                    st.used -= slot.units;
                    drop(st);
                    self.freed.notify_waiters();
                    break slot;
                }
                if st.closed {
                    return None;
                }
            }
            arrived.await;
        };
        let Slot {
            id,
            items,
            request,
            waiter,
            ..
        } = slot;
        let request = match (request, self.storage.clone()) {
            (Some(r), _) => Ok(r),
            (None, Some(storage)) => {
                let read = blocking(move || storage.get(&key(id))).await;
                match read {
                    Ok(Some(bytes)) => decode::<T>(&bytes),
                    Ok(None) => Err("the stored request is gone".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
            (None, None) => Err("no payload and no storage".into()),
        };
        match request {
            Ok(request) => Some(Ok(Entry {
                id,
                request,
                waiter,
            })),
            Err(why) => {
                let _ = self.done(id).await;
                if let Some(w) = waiter {
                    let _ = w.send(Err(ConsumerError::permanent(format!(
                        "the queued request cannot be read back: {why}"
                    ))));
                }
                Some(Err((items, why)))
            }
        }
    }

    /// Marks request `id` done: deleted from storage.
    /// A failed delete only means the request is sent again after a
    /// restart (same idempotency key); it is returned for logging.
    pub async fn done(&self, id: u64) -> Result<(), StorageError> {
        let result = match self.storage.clone() {
            Some(storage) => blocking(move || storage.delete(&key(id))).await,
            None => Ok(()),
        };
        self.state().inflight.remove(&id);
        result
    }

    /// Refuses new requests from now on; `pop` returns `None` once empty.
    pub fn close(&self) {
        self.state().closed = true;
        self.arrived.notify_waiters();
        self.freed.notify_waiters();
    }

    /// Requests pending and in flight.
    pub fn left(&self) -> Left {
        let st = self.state();
        let pending = st.pending.iter().map(|e| e.items);
        let inflight = st.inflight.values().copied();
        Left {
            requests: (st.pending.len() + st.inflight.len()) as u64,
            items: pending.chain(inflight).sum(),
        }
    }

    /// Requests held (pending and in flight).
    pub fn len(&self) -> usize {
        let st = self.state();
        st.pending.len() + st.inflight.len()
    }

    /// Takes the waiters of every pending request (after the workers
    /// stopped), so they learn the outcome.
    pub fn drain_waiters(&self) -> Vec<Waiter> {
        self.state()
            .pending
            .drain(..)
            .filter_map(|s| s.waiter)
            .collect()
    }
}

/// Reads the requests stored under `prefix` (keys `{prefix}{number}`), in
/// key order, with their numbers; those that cannot be read are deleted
/// and returned apart (key, why) for the caller to count and log.
pub(crate) async fn load<T: Batchable>(
    storage: Arc<dyn StorageClient>,
    prefix: &'static str,
) -> Result<(Vec<(u64, Request<T>)>, Vec<(String, String)>), StorageError> {
    let scan = storage.clone();
    let stored = blocking(move || scan.scan(prefix)).await?;
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for (k, v) in stored {
        let n = k[prefix.len()..].parse::<u64>().ok();
        match (n, decode::<T>(&v)) {
            (Some(n), Ok(request)) => ok.push((n, request)),
            (_, Err(e)) => bad.push((k, e)),
            (None, Ok(_)) => bad.push((k, "the key holds no number".into())),
        }
    }
    if !bad.is_empty() {
        let ops = bad
            .iter()
            .map(|(k, _)| StorageOp::Delete(k.clone()))
            .collect();
        blocking(move || storage.batch(ops)).await?;
    }
    Ok((ok, bad))
}

pub(crate) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, StorageError> + Send + 'static,
) -> Result<R, StorageError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StorageError::Io {
            path: "sending queue".into(),
            message: format!("storage task failed: {e}"),
        })
    })
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// `MAGIC`, the token (length 0xFFFF_FFFF when none), the idempotency key,
/// the partition label, the item count, then the payload's protobuf
/// encoding.
pub(crate) fn encode<T: Batchable>(r: &Request<T>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + r.data.encoded_len());
    out.extend_from_slice(MAGIC);
    match &r.token {
        Some(t) => put_field(&mut out, t.expose().as_bytes()),
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    put_field(&mut out, r.idempotency_key.as_bytes());
    put_field(&mut out, r.partition.as_bytes());
    out.extend_from_slice(&r.items.to_le_bytes());
    r.data.encode(&mut out).ok();
    out
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if b.len() < n {
        return Err("the stored request is cut short".into());
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn take_len(b: &mut &[u8]) -> Result<u32, String> {
    let raw = take(b, 4)?;
    Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a stored text is not UTF-8".to_string())
}

pub(crate) fn decode<T: Batchable>(mut b: &[u8]) -> Result<Request<T>, String> {
    let version = take(&mut b, 4)?;
    let labelled = version == MAGIC;
    if !labelled && version != MAGIC_V1 {
        return Err("not a stored request of a known format version".into());
    }
    let token = match take_len(&mut b)? {
        u32::MAX => None,
        n => Some(BearerToken::new(text(take(&mut b, n as usize)?)?)),
    };
    let n = take_len(&mut b)? as usize;
    let idempotency_key = text(take(&mut b, n)?)?;
    let partition = if labelled {
        let n = take_len(&mut b)? as usize;
        text(take(&mut b, n)?)?
    } else {
        String::new()
    };
    let raw = take(&mut b, 8)?;
    let mut items = [0u8; 8];
    items.copy_from_slice(raw);
    let data = T::decode(b).map_err(|e| format!("the stored payload does not decode: {e}"))?;
    Ok(Request {
        data,
        token,
        idempotency_key,
        items: u64::from_le_bytes(items),
        partition,
        flow: None,
    })
}

/// The item count and payload length of a stored request, without
/// decoding the payload.
fn header(mut b: &[u8]) -> Result<(u64, u64), String> {
    let version = take(&mut b, 4)?;
    let labelled = version == MAGIC;
    if !labelled && version != MAGIC_V1 {
        return Err("not a stored request of a known format version".into());
    }
    match take_len(&mut b)? {
        u32::MAX => {}
        n => {
            take(&mut b, n as usize)?;
        }
    }
    let n = take_len(&mut b)? as usize;
    take(&mut b, n)?;
    if labelled {
        let n = take_len(&mut b)? as usize;
        take(&mut b, n)?;
    }
    let raw = take(&mut b, 8)?;
    let mut items = [0u8; 8];
    items.copy_from_slice(raw);
    Ok((u64::from_le_bytes(items), b.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdata::Logs;
    use crate::storage::MemoryStorage;
    use prost::Message as _;

    fn request(items: usize, token: Option<&str>, key: &str) -> Request<Logs> {
        use crate::pdata::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        Request {
            data: Logs {
                resource_logs: vec![ResourceLogs {
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![LogRecord::default(); items],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            },
            token: token.map(BearerToken::new),
            idempotency_key: key.into(),
            items: items as u64,
            partition: format!("p/{key}"),
            flow: None,
        }
    }

    #[test]
    fn a_stored_request_round_trips_and_a_damaged_one_is_refused() {
        let r = request(3, Some("tok-1234"), "k-1");
        let bytes = encode(&r);
        let back: Request<Logs> = decode(&bytes).unwrap();
        assert_eq!(back.data, r.data);
        assert_eq!(back.token.unwrap().expose(), "tok-1234");
        assert_eq!((back.idempotency_key.as_str(), back.items), ("k-1", 3));
        assert_eq!(back.partition, "p/k-1");
        // Version 1 (before partition labels) still reads, unlabelled.
        let mut v1 = Vec::new();
        v1.extend_from_slice(MAGIC_V1);
        put_field(&mut v1, b"tok");
        put_field(&mut v1, b"k-2");
        v1.extend_from_slice(&3u64.to_le_bytes());
        r.data.encode(&mut v1).unwrap();
        let old: Request<Logs> = decode(&v1).unwrap();
        assert_eq!(
            (old.idempotency_key.as_str(), old.partition.as_str()),
            ("k-2", "")
        );
        assert_eq!(old.data, r.data);
        assert!(decode::<Logs>(&bytes[..10]).is_err());
        assert!(decode::<Logs>(b"XXXX").is_err());
        let none = decode::<Logs>(&encode(&request(1, None, "k"))).unwrap();
        assert!(none.token.is_none());
    }

    #[tokio::test]
    async fn capacity_refusal_and_recovery_after_a_restart() {
        let storage = MemoryStorage::default();
        let q = Queue::<Logs>::new(2, Some(Arc::new(storage.clone())));
        q.push(
            vec![(request(1, None, "a"), 1, None)],
            Admit::Refuse,
            vec![],
        )
        .await
        .unwrap();
        q.push(
            vec![(request(2, Some("t"), "b"), 1, None)],
            Admit::Refuse,
            vec![],
        )
        .await
        .unwrap();
        assert!(matches!(
            q.push(
                vec![(request(1, None, "c"), 1, None)],
                Admit::Refuse,
                vec![]
            )
            .await,
            Err(Refusal::Full)
        ));
        let first = q.pop().await.unwrap().unwrap();
        assert_eq!(first.request.idempotency_key, "a");
        q.done(first.id).await.unwrap();
        // "b" is popped (in flight) when the process dies: it stays stored.
        let second = q.pop().await.unwrap().unwrap();
        assert_eq!(
            q.left(),
            Left {
                requests: 1,
                items: 2
            }
        );
        drop(q);
        assert_eq!(storage.len(), 1);
        let q = Queue::<Logs>::new(2, Some(Arc::new(storage.clone())));
        let (requests, items, bad) = q.recover(|_, _| 1).await.unwrap();
        assert_eq!((requests, items, bad.len()), (1, 2, 0));
        let again = q.pop().await.unwrap().unwrap();
        assert_eq!(again.request.idempotency_key, "b");
        assert_eq!(again.id, second.id);
        q.push(
            vec![(request(1, None, "d"), 1, None)],
            Admit::Refuse,
            vec![],
        )
        .await
        .unwrap();
        let d = q.pop().await.unwrap().unwrap();
        assert!(d.id > again.id, "new ids continue after recovered ones");
        q.close();
        assert!(q.pop().await.is_none());
    }

    /// A persistent queue holds sizes, not payloads: the backlog of an
    /// outage stays on disk, and each payload is read back when sent,
    /// also after a restart; one that cannot be read back is reported.
    #[tokio::test]
    async fn a_persistent_queue_keeps_payloads_on_storage_only() {
        let storage = MemoryStorage::default();
        let q = Queue::<Logs>::new(10, Some(Arc::new(storage.clone())));
        for (n, k) in [(3, "a"), (2, "b"), (1, "c")] {
            q.push(
                vec![(request(n, Some("t"), k), 1, None)],
                Admit::Refuse,
                vec![],
            )
            .await
            .unwrap();
        }
        assert!(q.state().pending.iter().all(|s| s.request.is_none()));
        assert_eq!(
            q.left(),
            Left {
                requests: 3,
                items: 6
            }
        );
        let a = q.pop().await.unwrap().unwrap();
        assert_eq!(a.request, request(3, Some("t"), "a"));
        drop(q);
        let q = Queue::<Logs>::new(10, Some(Arc::new(storage.clone())));
        let (requests, items, bad) = q.recover(|items, _| items).await.unwrap();
        assert_eq!((requests, items, bad.len()), (3, 6, 0));
        assert_eq!(q.state().used, 6, "weighed from the stored headers");
        assert!(q.state().pending.iter().all(|s| s.request.is_none()));
        // "b" is damaged on disk after recovery.
        let b_key = storage.scan(PREFIX).unwrap()[1].0.clone();
        storage.set(&b_key, b"OQR2garbage".to_vec()).unwrap();
        assert_eq!(
            q.pop().await.unwrap().unwrap().request,
            request(3, Some("t"), "a")
        );
        let (lost, why) = q.pop().await.unwrap().err().unwrap();
        assert_eq!(lost, 2, "{why}");
        assert_eq!(
            q.pop().await.unwrap().unwrap().request,
            request(1, Some("t"), "c")
        );
        assert_eq!(storage.len(), 2, "the damaged one is removed");
    }

    #[tokio::test]
    async fn an_unreadable_stored_request_is_reported_and_removed() {
        let storage = MemoryStorage::default();
        storage.set(&key(7), b"garbage".to_vec()).unwrap();
        let q = Queue::<Logs>::new(10, Some(Arc::new(storage.clone())));
        let (requests, _, bad) = q.recover(|_, _| 1).await.unwrap();
        assert_eq!((requests, bad.len()), (0, 1));
        assert!(storage.is_empty());
    }

    #[tokio::test]
    async fn blocking_push_waits_for_room() {
        let q = Arc::new(Queue::<Logs>::new(1, None));
        q.push(vec![(request(1, None, "a"), 1, None)], Admit::Block, vec![])
            .await
            .unwrap();
        let q2 = q.clone();
        let waiting = tokio::spawn(async move {
            q2.push(vec![(request(1, None, "b"), 1, None)], Admit::Block, vec![])
                .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        let a = q.pop().await.unwrap().unwrap();
        q.done(a.id).await.unwrap();
        waiting.await.unwrap().unwrap();
        assert_eq!(q.pop().await.unwrap().unwrap().request.idempotency_key, "b");
    }
}
