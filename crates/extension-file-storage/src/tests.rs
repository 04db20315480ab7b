use std::time::Duration;

use otelcol_core::component::{Host, Kind, Lifecycle};
use otelcol_core::storage::{StorageError, StorageExtension, StorageOp};
use otelcol_core::ComponentId;

use super::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("file-storage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn storage(d: &Path, yaml: &str) -> FileStorage {
    let mut config: FileStorageConfig = serde_yaml::from_str(yaml).unwrap();
    config.directory = d.display().to_string();
    FileStorage::new(ComponentId::new("file_storage"), config)
}

fn host() -> Host {
    Host::new(Default::default(), Default::default())
}

fn exporter() -> ComponentId {
    "multitudes/prod".parse().unwrap()
}

#[tokio::test]
async fn data_survives_a_reopen_and_each_client_is_its_own_file() {
    let d = dir("reopen");
    let s = storage(&d, "create_directory: true");
    s.start(&host()).await.unwrap();
    let metrics = s.client(Kind::Exporter, &exporter(), "metrics").unwrap();
    let logs = s.client(Kind::Exporter, &exporter(), "logs").unwrap();
    metrics
        .batch(vec![
            StorageOp::Set("q/1".into(), b"one".to_vec()),
            StorageOp::Set("q/2".into(), b"two".to_vec()),
            StorageOp::Set("r/1".into(), b"other".to_vec()),
        ])
        .unwrap();
    metrics.delete("q/1").unwrap();
    logs.set("q/1", b"log".to_vec()).unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(metrics.get("q/2"), Err(StorageError::Closed));

    let s = storage(&d, "");
    s.start(&host()).await.unwrap();
    let metrics = s.client(Kind::Exporter, &exporter(), "metrics").unwrap();
    assert_eq!(
        metrics.scan("q/").unwrap(),
        vec![("q/2".to_string(), b"two".to_vec())]
    );
    let mut seen = vec![];
    metrics
        .visit("", &mut |k, v| seen.push((k.to_string(), v.to_vec())))
        .unwrap();
    assert_eq!(
        seen,
        vec![
            ("q/2".to_string(), b"two".to_vec()),
            ("r/1".to_string(), b"other".to_vec())
        ],
        "visit walks in key order without collecting"
    );
    let logs = s.client(Kind::Exporter, &exporter(), "logs").unwrap();
    assert_eq!(logs.get("q/1").unwrap(), Some(b"log".to_vec()));
    assert!(d.join("exporter_multitudes_prod_metrics.redb").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("exporter_multitudes_prod_metrics.redb"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "tokens are stored: owner only");
    }
    s.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn a_second_collector_on_the_same_directory_gets_a_lock_error() {
    let d = dir("lock");
    let first = storage(&d, "create_directory: true");
    first.start(&host()).await.unwrap();
    let _held = first
        .client(Kind::Exporter, &exporter(), "metrics")
        .unwrap();
    let second = storage(&d, "timeout: 100ms");
    second.start(&host()).await.unwrap();
    let err = second
        .client(Kind::Exporter, &exporter(), "metrics")
        .err()
        .unwrap();
    assert!(matches!(err, StorageError::Locked { .. }), "{err:?}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    assert!(err.to_string().contains(&d.display().to_string()), "{err}");
    first.shutdown().await.unwrap();
    // Released: the second one opens it now.
    second
        .client(Kind::Exporter, &exporter(), "metrics")
        .unwrap();
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn a_corrupted_file_is_moved_aside_or_refused_when_strict() {
    let d = dir("corrupt");
    std::fs::create_dir_all(&d).unwrap();
    let file = d.join("exporter_multitudes_prod_metrics.redb");
    std::fs::write(&file, vec![0xAB; 8192]).unwrap();

    let strict = storage(&d, "fail_on_corruption: true");
    strict.start(&host()).await.unwrap();
    let err = strict
        .client(Kind::Exporter, &exporter(), "metrics")
        .err()
        .unwrap();
    assert!(matches!(err, StorageError::Corrupted { .. }), "{err:?}");
    assert!(file.is_file(), "strict mode leaves the file where it is");

    let lenient = storage(&d, "");
    lenient.start(&host()).await.unwrap();
    let c = lenient
        .client(Kind::Exporter, &exporter(), "metrics")
        .unwrap();
    assert_eq!(c.scan("").unwrap(), vec![]);
    let aside: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn a_missing_or_unusable_directory_fails_start_naming_the_path() {
    let d = dir("missing");
    let s = storage(&d, "");
    let err = s.start(&host()).await.unwrap_err().to_string();
    assert!(err.contains(&d.display().to_string()), "{err}");
    assert!(err.contains("create_directory"), "{err}");

    let file = dir("a-file");
    std::fs::write(&file, b"x").unwrap();
    let s = storage(&file.join("sub"), "create_directory: true");
    let err = s.start(&host()).await.unwrap_err().to_string();
    assert!(err.contains(&file.display().to_string()), "{err}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn go_keys_are_accepted_and_the_mode_is_checked() {
    let c: FileStorageConfig = serde_yaml::from_str(
        "directory: /x\ntimeout: 2s\nfsync: true\ncreate_directory: true\ndirectory_permissions: \"0700\"\nrecreate: false\ncompaction: {on_start: true, on_rebound: true, directory: /tmp, max_transaction_size: 1, rebound_needed_threshold_mib: 1, rebound_trigger_threshold_mib: 1, check_interval: 1s, cleanup_on_start: true}",
    )
    .unwrap();
    assert_eq!(c.timeout, Duration::from_secs(2));
    assert_eq!(c.directory_mode().unwrap(), 0o700);
    let bad: FileStorageConfig = serde_yaml::from_str("directory_permissions: rwx").unwrap();
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("directory_permissions"));
}

/// Set in the child process of
/// [`a_failed_write_is_not_kept_and_the_file_is_reopened_once_there_is_room`].
const FULL_DISK_CHILD: &str = "FILE_STORAGE_FULL_DISK_CHILD";

/// Sets this process's soft file size limit (a full disk without one:
/// writes past it fail with `EFBIG`, SIGXFSZ ignored).
fn limit_file_size(bytes: libc::rlim_t) {
    // SAFETY: signal(2) and getrlimit/setrlimit(2) on this process with
    // valid structs.
    let ok = unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_FSIZE, &mut l) == 0 && {
            l.rlim_cur = bytes.min(l.rlim_max);
            libc::setrlimit(libc::RLIMIT_FSIZE, &l) == 0
        }
    };
    assert!(ok, "{}", std::io::Error::last_os_error());
}

/// The child's scenario: writes fail once the file reaches the limit; the
/// failed write is not kept; once the limit is lifted the client reopens
/// the file and takes writes again, with everything committed before.
fn full_disk_scenario(d: &Path) {
    limit_file_size(4 << 20);
    let client = store::FileClient::open(
        d.join("full.redb"),
        &store::OpenOptionsFs {
            lock_timeout: Duration::from_secs(1),
            recreate: false,
            fail_on_corruption: true,
            compact: false,
        },
    )
    .unwrap();
    let value = vec![7u8; 64 << 10];
    let mut written = 0;
    let failed = loop {
        let key = format!("k/{written:04}");
        match client.set(&key, value.clone()) {
            Ok(()) => written += 1,
            Err(e) => break (key, e),
        }
        assert!(written < 1000, "the limit was never reached");
    };
    assert!(written > 0, "writes were taken before the limit");
    assert!(
        matches!(&failed.1, StorageError::Io { message, .. } if !message.is_empty()),
        "{:?}",
        failed.1
    );
    limit_file_size(libc::RLIM_INFINITY);
    // Reopened at most once a second: taken again within a few tries.
    let began = std::time::Instant::now();
    while client.set("after", b"room".to_vec()).is_err() {
        assert!(began.elapsed() < Duration::from_secs(10), "never reopened");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        client.get(&failed.0).unwrap(),
        None,
        "the failed write is not kept"
    );
    assert_eq!(client.scan("k/").unwrap().len(), written);
    assert_eq!(client.get("after").unwrap(), Some(b"room".to_vec()));
    println!("full-disk scenario: {written} writes, then one refused, then taken again");
}

#[test]
fn a_failed_write_is_not_kept_and_the_file_is_reopened_once_there_is_room() {
    if let Some(d) = std::env::var_os(FULL_DISK_CHILD) {
        return full_disk_scenario(Path::new(&d));
    }
    // The limit is per process: the scenario runs in a child, alone.
    let d = dir("full-disk");
    std::fs::create_dir_all(&d).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::a_failed_write_is_not_kept_and_the_file_is_reopened_once_there_is_room",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FULL_DISK_CHILD, &d)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("then one refused, then taken again"),
        "{text}"
    );
}
