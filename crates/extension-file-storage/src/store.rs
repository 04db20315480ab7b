//! One redb file as a [`StorageClient`].

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use otelcol_core::storage::{RecordLog, StorageClient, StorageError, StorageOp};

use crate::segments::SegmentLog;
use redb::{Database, DatabaseError, Durability, TableDefinition};

/// The one table of a file: key → value.
const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// How to open a file.
#[derive(Clone, Debug)]
pub(crate) struct OpenOptionsFs {
    /// Wait this long for another process's lock.
    pub lock_timeout: Duration,
    /// Remove the file first.
    pub recreate: bool,
    /// Refuse an unreadable file rather than moving it aside.
    pub fail_on_corruption: bool,
    /// Compact after opening.
    pub compact: bool,
}

/// A client over one file. Closed clients answer [`StorageError::Closed`].
///
/// After a failed write (a full disk, an I/O error) redb refuses every
/// later access, reads included, until the file is opened again; the
/// client reopens it at the next call (at most once per
/// [`REOPEN_EVERY`]), so storage works again as soon as the disk does,
/// without a restart. Reopening recovers the last committed state: the
/// failed transaction was never acknowledged.
pub(crate) struct FileClient {
    path: PathBuf,
    /// This client, for the record log's earlier records.
    me: Weak<FileClient>,
    db: RwLock<Option<Database>>,
    /// How the file is opened again (no recreate, no compaction).
    reopen: OpenOptionsFs,
    /// A write failed: reopen before the next access.
    failed: AtomicBool,
    /// When a reopen was last tried.
    last_reopen: Mutex<Option<Instant>>,
    /// [`FileClient::close`] was called.
    closed: AtomicBool,
}

/// A failed reopen is tried again after this long.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

fn io(path: &Path, what: impl std::fmt::Display) -> StorageError {
    StorageError::Io {
        path: path.display().to_string(),
        message: what.to_string(),
    }
}

/// Whether an open error means the file can never be read by this build.
fn unreadable(e: &DatabaseError) -> Option<String> {
    match e {
        DatabaseError::UpgradeRequired(v) => Some(format!("file format version {v}")),
        DatabaseError::Storage(redb::StorageError::Corrupted(m)) => Some(m.clone()),
        DatabaseError::Storage(redb::StorageError::Io(e))
            if e.kind() == std::io::ErrorKind::InvalidData
                || e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Some(e.to_string())
        }
        _ => None,
    }
}

/// Creates the file with owner-only permissions (stored requests carry
/// bearer tokens) when it does not exist yet.
fn create_private(path: &Path) -> Result<(), StorageError> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).map(drop).map_err(|e| io(path, e))
}

/// The page cache of each storage file.
const CACHE_BYTES: usize = 16 << 20;

fn open_db(path: &Path, options: &OpenOptionsFs) -> Result<Database, StorageError> {
    let started = Instant::now();
    loop {
        create_private(path)?;
        // redb caches up to 1 GiB per file by default; a queue writes each
        // value once and reads it once, so a small cache costs nothing and
        // keeps memory bounded with several files open.
        match Database::builder().set_cache_size(CACHE_BYTES).create(path) {
            Ok(db) => return Ok(db),
            Err(DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < options.lock_timeout => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StorageError::Locked {
                    path: path.display().to_string(),
                })
            }
            Err(e) => match unreadable(&e) {
                Some(message) if options.fail_on_corruption => {
                    return Err(StorageError::Corrupted {
                        path: path.display().to_string(),
                        message: format!("{message} (fail_on_corruption is set; move or remove the file to start empty)"),
                    })
                }
                Some(message) => {
                    let secs = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or_default();
                    let aside = PathBuf::from(format!("{}.corrupt-{secs}", path.display()));
                    std::fs::rename(path, &aside).map_err(|e| io(path, format!("cannot move the unreadable file aside: {e}")))?;
                    tracing::warn!(
                        path = %path.display(),
                        moved_to = %aside.display(),
                        error = %message,
                        "a storage file cannot be read; it was moved aside and an empty one is used (what it held is not sent)"
                    );
                }
                None => return Err(io(path, e)),
            },
        }
    }
}

impl FileClient {
    /// The directory of this file's record log.
    fn log_dir(path: &Path) -> PathBuf {
        PathBuf::from(format!("{}.wal", path.display()))
    }

    /// Opens (or creates) `path`.
    pub fn open(path: PathBuf, options: &OpenOptionsFs) -> Result<Arc<Self>, StorageError> {
        if options.recreate && path.exists() {
            std::fs::remove_file(&path).map_err(|e| io(&path, format!("recreate: {e}")))?;
        }
        let wal = Self::log_dir(&path);
        if options.recreate && wal.exists() {
            std::fs::remove_dir_all(&wal).map_err(|e| io(&wal, format!("recreate: {e}")))?;
        }
        let mut db = open_db(&path, options)?;
        if options.compact {
            db.compact()
                .map_err(|e| io(&path, format!("compaction: {e}")))?;
        }
        // At run time an unreadable file is refused, never moved aside:
        // it holds what was acknowledged.
        let reopen = OpenOptionsFs {
            lock_timeout: Duration::from_secs(1),
            recreate: false,
            fail_on_corruption: true,
            compact: false,
        };
        let client = Arc::new_cyclic(|me| Self {
            path,
            me: me.clone(),
            db: RwLock::new(Some(db)),
            reopen,
            failed: AtomicBool::new(false),
            last_reopen: Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        // Creates the table, so that reads find it.
        client.batch(vec![])?;
        Ok(client)
    }

    /// Closes the file; later calls answer [`StorageError::Closed`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut db = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        db.take();
    }

    fn err(&self, e: impl std::fmt::Display) -> StorageError {
        io(&self.path, e)
    }

    fn with_db<R>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, StorageError>,
    ) -> Result<R, StorageError> {
        if self.failed.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let db = self
            .db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match db.as_ref() {
            Some(db) => f(db),
            None => Err(StorageError::Closed),
        }
    }

    /// Closes and opens the file again after a failed write (see the
    /// type's doc); an error while that is not possible yet.
    fn reopen(&self) -> Result<(), StorageError> {
        let mut db = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !self.failed.load(Ordering::Acquire) {
            return Ok(()); // another caller reopened it meanwhile
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        {
            let mut last = self
                .last_reopen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
                return Err(self.err("a write failed; the file is reopened at most once a second"));
            }
            *last = Some(Instant::now());
        }
        // redb holds the file's lock until the database is dropped.
        db.take();
        let reopened = open_db(&self.path, &self.reopen).inspect_err(|e| {
            tracing::warn!(path = %self.path.display(), error = %e, "storage file cannot be reopened yet after a failed write");
        })?;
        *db = Some(reopened);
        self.failed.store(false, Ordering::Release);
        tracing::info!(path = %self.path.display(), "storage file reopened after a failed write; writes are taken again");
        Ok(())
    }
}

impl StorageClient for FileClient {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err(e))?;
            let table = txn.open_table(TABLE).map_err(|e| self.err(e))?;
            let value = table.get(key).map_err(|e| self.err(e))?;
            Ok(value.map(|v| v.value().to_vec()))
        })
    }

    fn batch(&self, ops: Vec<StorageOp>) -> Result<(), StorageError> {
        let result = self.with_db(|db| {
            let mut txn = db.begin_write().map_err(|e| self.err(e))?;
            txn.set_durability(Durability::Immediate);
            {
                let mut table = txn.open_table(TABLE).map_err(|e| self.err(e))?;
                for op in &ops {
                    match op {
                        StorageOp::Set(k, v) => {
                            table
                                .insert(k.as_str(), v.as_slice())
                                .map_err(|e| self.err(e))?;
                        }
                        StorageOp::Delete(k) => {
                            table.remove(k.as_str()).map_err(|e| self.err(e))?;
                        }
                    }
                }
            }
            txn.commit().map_err(|e| self.err(e))
        });
        if let Err(e) = &result {
            if !matches!(e, StorageError::Closed) {
                self.failed.store(true, Ordering::Release);
            }
        }
        result
    }

    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err(e))?;
            let table = txn.open_table(TABLE).map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            for row in table.range(prefix..).map_err(|e| self.err(e))? {
                let (k, v) = row.map_err(|e| self.err(e))?;
                let k = k.value();
                if !k.starts_with(prefix) {
                    break;
                }
                out.push((k.to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// Segment files in `<file>.wal/` (see [`SegmentLog`]).
    fn record_log(&self) -> Result<Option<Arc<dyn RecordLog>>, StorageError> {
        let me: Arc<dyn StorageClient> = self.me.upgrade().ok_or(StorageError::Closed)?;
        let log = SegmentLog::open(Self::log_dir(&self.path), me)?;
        Ok(Some(Arc::new(log)))
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &[u8])) -> Result<(), StorageError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err(e))?;
            let table = txn.open_table(TABLE).map_err(|e| self.err(e))?;
            for row in table.range(prefix..).map_err(|e| self.err(e))? {
                let (k, v) = row.map_err(|e| self.err(e))?;
                let k = k.value();
                if !k.starts_with(prefix) {
                    break;
                }
                f(k, v.value());
            }
            Ok(())
        })
    }
}

/// Shares one open file between every client handed out for it.
pub(crate) type Shared = Arc<FileClient>;
