//! `extensions.file_storage`: the Go extension's keys.

use std::time::Duration;

use otelcol_core::config::{duration, ConfigError};
use serde::{Deserialize, Serialize};

/// The extension's configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FileStorageConfig {
    /// Where the files live, one per component that uses the extension.
    pub directory: String,
    /// How long to wait for another process's lock on a file before
    /// failing start (Go: the bbolt open timeout).
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Go: fsync after every write. Here every write is synced before it
    /// returns, always; `false` is accepted and still syncs (a queue that
    /// is not synced is not durable).
    pub fsync: bool,
    /// Create `directory` (and its parents) when it is missing.
    pub create_directory: bool,
    /// Octal mode of directories created by `create_directory`.
    pub directory_permissions: String,
    /// Remove each file at start (everything stored is dropped).
    pub recreate: bool,
    /// Ours, not Go's: a file that cannot be read fails start instead of
    /// being moved aside (`<file>.corrupt-<unix seconds>`) and replaced by
    /// an empty one.
    pub fail_on_corruption: bool,
    /// Compaction.
    pub compaction: CompactionConfig,
}

impl Default for FileStorageConfig {
    fn default() -> Self {
        Self {
            directory: "/var/lib/otelcol/file_storage".into(),
            timeout: Duration::from_secs(1),
            fsync: false,
            create_directory: false,
            directory_permissions: "0750".into(),
            recreate: false,
            fail_on_corruption: false,
            compaction: CompactionConfig::default(),
        }
    }
}

/// `compaction`: redb reuses freed pages in place, so a file does not grow
/// past its peak; `on_start` also gives the free space back to the disk.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionConfig {
    /// Compact each file when it is opened.
    pub on_start: bool,
    /// Accepted, no effect (see above).
    pub on_rebound: bool,
    /// Accepted, no effect: redb compacts in place.
    pub directory: String,
    /// Accepted, no effect.
    pub max_transaction_size: u64,
    /// Accepted, no effect.
    pub rebound_needed_threshold_mib: u64,
    /// Accepted, no effect.
    pub rebound_trigger_threshold_mib: u64,
    /// Accepted, no effect.
    #[serde(with = "duration")]
    pub check_interval: Duration,
    /// Accepted, no effect: no temporary files are left to clean.
    pub cleanup_on_start: bool,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            on_start: false,
            on_rebound: false,
            directory: String::new(),
            max_transaction_size: 65_536,
            rebound_needed_threshold_mib: 100,
            rebound_trigger_threshold_mib: 10,
            check_interval: Duration::from_secs(5),
            cleanup_on_start: false,
        }
    }
}

impl FileStorageConfig {
    /// The mode of `directory_permissions`.
    pub fn directory_mode(&self) -> Result<u32, ConfigError> {
        u32::from_str_radix(self.directory_permissions.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "directory_permissions",
                    format!(
                        "`{}` is not an octal file mode such as 0750",
                        self.directory_permissions
                    ),
                )
            })
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.directory.trim().is_empty() {
            return Err(ConfigError::invalid("directory", "must not be empty"));
        }
        self.directory_mode()?;
        Ok(())
    }
}
