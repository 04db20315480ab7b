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
