//! The storage client components use to keep state across restarts
//! (persistent sending queues, aggregation state) without knowing the
//! backend. A storage extension (`file_storage`) hands out one client per
//! component; each client is its own key space.
//!
//! Every method is blocking and durable when it returns `Ok`: callers on
//! the async runtime wrap calls in `tokio::task::spawn_blocking`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::component::{ComponentId, Kind};

/// Why a storage operation failed. Messages name the file or directory.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The file or directory cannot be created, opened, read or written.
    #[error("storage {path}: {message}")]
    Io {
        /// The file or directory.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Another process holds the file (two collectors on one directory).
    #[error(
        "storage {path} is in use by another process (two collectors pointed at one directory?)"
    )]
    Locked {
        /// The file.
        path: String,
    },
    /// The file is not a store this build can read.
    #[error("storage {path} is corrupted or of an incompatible version: {message}")]
    Corrupted {
        /// The file.
        path: String,
        /// What the backend said.
        message: String,
    },
    /// A stored value is not what the component wrote (decoding failed).
    #[error("stored value {key}: {message}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The client was closed (the extension shut down).
    #[error("storage client is closed")]
    Closed,
}

/// One operation of an atomic [`StorageClient::batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageOp {
    /// Stores `value` under `key`.
    Set(String, Vec<u8>),
    /// Removes `key` (no error when absent).
    Delete(String),
}

/// A durable key-value store for one component.
pub trait StorageClient: Send + Sync {
    /// The value stored under `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Applies every operation in one durable transaction: all or none.
    fn batch(&self, ops: Vec<StorageOp>) -> Result<(), StorageError>;
    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError>;

    /// Calls `f` with every `(key, value)` whose key starts with `prefix`,
    /// in key order, without collecting them: a store larger than memory
    /// can be walked. The default collects with [`Self::scan`].
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &[u8])) -> Result<(), StorageError> {
        for (k, v) in self.scan(prefix)? {
            f(&k, &v);
        }
        Ok(())
    }

    /// Stores `value` under `key`, durably.
    fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        self.batch(vec![StorageOp::Set(key.to_string(), value)])
    }
    /// Removes `key`, durably.
    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.batch(vec![StorageOp::Delete(key.to_string())])
    }

    /// This client's own [`RecordLog`], when the backend has one that is
    /// cheaper than records as keys (`file_storage`: append-only segment
    /// files, one write and one `fdatasync` per record). `None` (the
    /// default): use [`KvRecordLog`] over this client. Ask once per
    /// client: the log is not shared between callers.
    fn record_log(&self) -> Result<Option<Arc<dyn RecordLog>>, StorageError> {
        Ok(None)
    }
}

/// A write-ahead log: numbered records appended durably, replayed in
/// order, forgotten from the front once something else (a snapshot)
/// covers them. Every method is blocking.
pub trait RecordLog: Send + Sync {
    /// Appends `record` as number `seq` (greater than every number before),
    /// durably when it returns `Ok`. On `Err` nothing of it is kept: a
    /// later replay never returns it.
    fn append(&self, seq: u64, record: &[u8]) -> Result<(), StorageError>;
    /// Calls `f` with every record numbered after `after`, oldest first;
    /// the records up to `after` count as forgotten. A log that frames its
    /// records itself cuts off a torn last one (a crash in the middle of an
    /// append: it does not check) with a warning and refuses one that does
    /// not check with good ones after it; the caller checks the content
    /// too ([`KvRecordLog`] stores whole transactions only) and cuts what
    /// it cannot use with [`RecordLog::cut_from`].
    fn replay(&self, after: u64, f: &mut dyn FnMut(u64, &[u8])) -> Result<(), StorageError>;
    /// Removes every record numbered `seq` or later (records the caller
    /// found unusable at the tail).
    fn cut_from(&self, seq: u64) -> Result<(), StorageError>;
    /// Records numbered up to `seq` are no longer needed: removed now or
    /// little by little with later appends (replay skips them anyway).
    fn forget_through(&self, seq: u64) -> Result<(), StorageError>;
    /// Removes everything forgotten, now (at shutdown).
    fn compact(&self) -> Result<(), StorageError>;
}

/// The key of record `seq` in a [`KvRecordLog`] (fixed-width hex: key
/// order is log order).
pub fn record_key(seq: u64) -> String {
    format!("{RECORD_PREFIX}{seq:016x}")
}

/// The prefix of every [`KvRecordLog`] key.
pub const RECORD_PREFIX: &str = "log/";

/// Forgotten records a [`KvRecordLog`] deletes with each append: one
/// snapshot never stalls the log with thousands of deletions.
const DELETES_PER_APPEND: usize = 64;

/// A [`RecordLog`] of keys `log/<seq>` in any [`StorageClient`], each
/// append one transaction. The records' own content is the caller's
/// checksum: every stored transaction is whole.
pub struct KvRecordLog {
    client: Arc<dyn StorageClient>,
    seqs: Mutex<KvSeqs>,
}

/// What a [`KvRecordLog`] knows of its keys.
#[derive(Default)]
struct KvSeqs {
    /// Records appended or replayed and not forgotten, oldest first.
    live: std::collections::VecDeque<u64>,
    /// Records forgotten and not yet deleted.
    obsolete: std::collections::VecDeque<u64>,
}

impl KvRecordLog {
    /// The log in `client`.
    pub fn new(client: Arc<dyn StorageClient>) -> Self {
        Self {
            client,
            seqs: Mutex::default(),
        }
    }

    fn seqs(&self) -> std::sync::MutexGuard<'_, KvSeqs> {
        self.seqs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RecordLog for KvRecordLog {
    fn append(&self, seq: u64, record: &[u8]) -> Result<(), StorageError> {
        let mut seqs = self.seqs();
        let deletes = seqs.obsolete.len().min(DELETES_PER_APPEND);
        let mut ops = Vec::with_capacity(1 + deletes);
        ops.push(StorageOp::Set(record_key(seq), record.to_vec()));
        ops.extend(
            seqs.obsolete
                .iter()
                .take(deletes)
                .map(|s| StorageOp::Delete(record_key(*s))),
        );
        self.client.batch(ops)?;
        seqs.obsolete.drain(..deletes);
        seqs.live.push_back(seq);
        Ok(())
    }

    fn replay(&self, after: u64, f: &mut dyn FnMut(u64, &[u8])) -> Result<(), StorageError> {
        let mut seqs = KvSeqs::default();
        self.client.visit(RECORD_PREFIX, &mut |key, value| {
            let seq = key
                .strip_prefix(RECORD_PREFIX)
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .unwrap_or(0);
            if seq <= after {
                // Covered records whose deletion a crash interrupted.
                seqs.obsolete.push_back(seq);
            } else {
                seqs.live.push_back(seq);
                f(seq, value);
            }
        })?;
        *self.seqs() = seqs;
        Ok(())
    }

    fn cut_from(&self, seq: u64) -> Result<(), StorageError> {
        let mut seqs = self.seqs();
        let cut: Vec<u64> = seqs.live.iter().copied().filter(|s| *s >= seq).collect();
        if cut.is_empty() {
            return Ok(());
        }
        self.client.batch(
            cut.iter()
                .map(|s| StorageOp::Delete(record_key(*s)))
                .collect(),
        )?;
        seqs.live.retain(|s| *s < seq);
        Ok(())
    }

    fn forget_through(&self, seq: u64) -> Result<(), StorageError> {
        let mut seqs = self.seqs();
        while seqs.live.front().is_some_and(|s| *s <= seq) {
            if let Some(s) = seqs.live.pop_front() {
                seqs.obsolete.push_back(s);
            }
        }
        Ok(())
    }

    fn compact(&self) -> Result<(), StorageError> {
        let mut seqs = self.seqs();
        if seqs.obsolete.is_empty() {
            return Ok(());
        }
        self.client.batch(
            seqs.obsolete
                .iter()
                .map(|s| StorageOp::Delete(record_key(*s)))
                .collect(),
        )?;
        seqs.obsolete.clear();
        Ok(())
    }
}

/// An extension that provides storage (`file_storage`).
pub trait StorageExtension: Send + Sync {
    /// The client of component `id` of `kind`; `name` tells apart several
    /// clients of one component (the signal, for a sending queue). Two
    /// calls with the same arguments reach the same data.
    fn client(
        &self,
        kind: Kind,
        id: &ComponentId,
        name: &str,
    ) -> Result<Arc<dyn StorageClient>, StorageError>;
}

/// A client in memory: for tests and embedding, durable only as long as
/// the value lives. Clones share the data.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    data: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStorage {
    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.map().len()
    }
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StorageClient for MemoryStorage {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.map().get(key).cloned())
    }
    fn batch(&self, ops: Vec<StorageOp>) -> Result<(), StorageError> {
        let mut map = self.map();
        for op in ops {
            match op {
                StorageOp::Set(k, v) => {
                    map.insert(k, v);
                }
                StorageOp::Delete(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        Ok(self
            .map()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// A storage extension in memory: clients live as long as the extension,
/// so a component restarted with the same extension finds its data (tests
/// of persistent queues, embedding without a disk).
#[derive(Clone, Debug, Default)]
pub struct MemoryStorageExtension {
    clients: Arc<Mutex<BTreeMap<String, MemoryStorage>>>,
}

impl MemoryStorageExtension {
    /// Keys held by all clients together.
    pub fn keys_held(&self) -> usize {
        let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients.values().map(MemoryStorage::len).sum()
    }
}

impl StorageExtension for MemoryStorageExtension {
    fn client(
        &self,
        kind: Kind,
        id: &ComponentId,
        name: &str,
    ) -> Result<Arc<dyn StorageClient>, StorageError> {
        let key = format!("{kind}_{id}_{name}");
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(Arc::new(clients.entry(key).or_default().clone()))
    }
}

impl crate::component::Lifecycle for MemoryStorageExtension {}

impl crate::component::Extension for MemoryStorageExtension {
    fn storage(self: Arc<Self>) -> Option<Arc<dyn StorageExtension>> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_storage_batches_and_scans_by_prefix_in_key_order() {
        let s = MemoryStorage::default();
        s.batch(vec![
            StorageOp::Set("q/2".into(), b"b".to_vec()),
            StorageOp::Set("q/1".into(), b"a".to_vec()),
            StorageOp::Set("r/1".into(), b"x".to_vec()),
        ])
        .unwrap();
        s.delete("missing").unwrap();
        assert_eq!(
            s.scan("q/").unwrap(),
            vec![
                ("q/1".to_string(), b"a".to_vec()),
                ("q/2".to_string(), b"b".to_vec())
            ]
        );
        s.delete("q/1").unwrap();
        assert_eq!(s.get("q/1").unwrap(), None);
        assert_eq!(s.get("q/2").unwrap(), Some(b"b".to_vec()));
        assert_eq!(s.len(), 2);
    }
}
