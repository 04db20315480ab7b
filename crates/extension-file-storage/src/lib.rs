//! The `file_storage` extension: durable key-value storage for the
//! components that keep state across restarts (persistent sending queues),
//! with the Go extension's keys.
//!
//! One file per component client, `{directory}/{kind}_{type}_{name}_{client}.redb`,
//! on [redb](https://docs.rs/redb) (pure Rust, ACID, copy-on-write B-trees
//! with checksummed commits, so a crash mid-write leaves the last committed
//! state). Every write is committed with `Durability::Immediate` (fsync)
//! before it returns. Files are created `0600`: a stored request carries
//! the caller's bearer token. redb locks each file, so a second collector
//! on the same directory fails start with a lock error instead of sharing
//! a queue.

pub mod config;
mod segments;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use otelcol_core::component::{
    ComponentError, ComponentId, CreateSettings, Extension, ExtensionFactory, Factory, Host, Kind,
    Lifecycle, NoEffectKey,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::storage::{StorageClient, StorageError, StorageExtension};
use otelcol_core::{Signal, Stability};

pub use config::{CompactionConfig, FileStorageConfig};
use store::{FileClient, OpenOptionsFs, Shared};

/// The factory for type `file_storage`.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileStorageFactory;

impl Factory for FileStorageFactory {
    fn type_name(&self) -> &'static str {
        "file_storage"
    }
    fn stability(&self) -> Stability {
        Stability::Beta
    }
    fn signals(&self) -> &'static [Signal] {
        &[]
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        decode::<FileStorageConfig>(config)?.validate()
    }
    fn no_effect_keys(&self) -> Vec<NoEffectKey> {
        const INPLACE: &str = "redb reuses freed pages in place, so files do not grow past their peak; compaction.on_start gives free space back";
        let mut keys = vec![NoEffectKey::new(
            "fsync",
            "every write is synced to disk before it returns, always",
        )];
        for k in [
            "on_rebound",
            "directory",
            "max_transaction_size",
            "rebound_needed_threshold_mib",
            "rebound_trigger_threshold_mib",
            "check_interval",
            "cleanup_on_start",
        ] {
            keys.push(NoEffectKey::new(format!("compaction.{k}"), INPLACE));
        }
        keys
    }
}

impl ExtensionFactory for FileStorageFactory {
    fn create(
        &self,
        settings: CreateSettings,
        raw: &RawConfig,
    ) -> Result<Arc<dyn Extension>, ComponentError> {
        let config: FileStorageConfig = decode(raw)?;
        config.validate()?;
        Ok(Arc::new(FileStorage::new(settings.id, config)))
    }
}

/// A running `file_storage` extension.
pub struct FileStorage {
    id: ComponentId,
    config: FileStorageConfig,
    open: Mutex<BTreeMap<PathBuf, Shared>>,
}

impl FileStorage {
    /// An extension over `config.directory`.
    pub fn new(id: ComponentId, config: FileStorageConfig) -> Self {
        Self {
            id,
            config,
            open: Mutex::new(BTreeMap::new()),
        }
    }

    fn directory(&self) -> &Path {
        Path::new(&self.config.directory)
    }

    /// Checks (or creates) the directory and that it is writable.
    fn prepare_directory(&self) -> Result<(), String> {
        let dir = self.directory();
        if !dir.exists() {
            if !self.config.create_directory {
                return Err(format!(
                    "directory {} does not exist (create it, or set create_directory: true)",
                    dir.display()
                ));
            }
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(
                &mut b,
                self.config.directory_mode().map_err(|e| e.to_string())?,
            );
            b.create(dir)
                .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        }
        if !dir.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        let probe = dir.join(format!(".write-check-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| format!("directory {} is not writable: {e}", dir.display()))
    }
}

/// A file name part: letters, digits, `-`, `.` and `_` kept, the rest `~`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '~'
            }
        })
        .collect()
}

impl StorageExtension for FileStorage {
    fn client(
        &self,
        kind: Kind,
        id: &ComponentId,
        name: &str,
    ) -> Result<Arc<dyn StorageClient>, StorageError> {
        let file = format!(
            "{kind}_{}_{}_{}.redb",
            sanitize(id.type_name()),
            sanitize(id.name().unwrap_or("")),
            sanitize(name)
        );
        let path = self.directory().join(file);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = open.get(&path) {
            return Ok(c.clone());
        }
        let options = OpenOptionsFs {
            lock_timeout: self.config.timeout,
            recreate: self.config.recreate,
            fail_on_corruption: self.config.fail_on_corruption,
            compact: self.config.compaction.on_start,
        };
        let client = FileClient::open(path.clone(), &options)?;
        tracing::debug!(extension = %self.id, path = %path.display(), "storage file open");
        open.insert(path, client.clone());
        Ok(client)
    }
}

#[async_trait]
impl Lifecycle for FileStorage {
    async fn start(&self, _host: &Host) -> Result<(), ComponentError> {
        self.prepare_directory()
            .map_err(|e| ComponentError::Failed(format!("extension {}: {e}", self.id)))
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(PoisonError::into_inner));
        for client in open.values() {
            client.close();
        }
        Ok(())
    }
}

impl Extension for FileStorage {
    fn storage(self: Arc<Self>) -> Option<Arc<dyn StorageExtension>> {
        Some(self)
    }
}

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories.extension(FileStorageFactory)
}

#[cfg(test)]
mod tests;
