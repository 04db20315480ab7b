use otelcol_core::storage::{record_key, MemoryStorage, StorageOp};

use super::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("segment-log-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn open(d: &Path, kv: &MemoryStorage) -> SegmentLog {
    SegmentLog::open(d.to_path_buf(), Arc::new(kv.clone())).unwrap()
}

/// Every record after `after`, as replayed.
fn replay(log: &SegmentLog, after: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = vec![];
    log.replay(after, &mut |seq, r| out.push((seq, r.to_vec())))
        .unwrap();
    out
}

/// Record `seq` of `len` bytes, its content derived from both.
fn rec(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
}

fn files(d: &Path, ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(ext))
        .collect();
    v.sort();
    v
}

#[test]
fn records_come_back_in_order_across_segments_and_reopens() {
    let (d, kv) = (dir("order"), MemoryStorage::default());
    let log = open(&d, &kv);
    // 3 MiB records: five per 16 MiB segment.
    let big = 3 << 20;
    for seq in 1..=12 {
        log.append(seq, &rec(seq, big)).unwrap();
    }
    assert_eq!(
        files(&d, ".seg"),
        [
            "0000000000000001.seg",
            "0000000000000006.seg",
            "000000000000000b.seg"
        ]
    );
    drop(log);
    let log = open(&d, &kv);
    let got = replay(&log, 4);
    assert_eq!(got.len(), 8);
    for (i, (seq, r)) in got.iter().enumerate() {
        assert_eq!(*seq, 5 + i as u64);
        assert!(r == &rec(*seq, big), "record {seq}");
    }
    // Appends go on after a reopen.
    log.append(13, b"thirteen").unwrap();
    drop(log);
    let log = open(&d, &kv);
    assert_eq!(replay(&log, 12), [(13, b"thirteen".to_vec())]);
}

#[test]
fn a_torn_last_record_is_dropped_and_the_log_goes_on_after_it() {
    let (d, kv) = (dir("torn"), MemoryStorage::default());
    let log = open(&d, &kv);
    for seq in 1..=3 {
        log.append(seq, &rec(seq, 1000)).unwrap();
    }
    drop(log);
    // A crash in the middle of writing record 3: its last bytes differ.
    let path = d.join("0000000000000001.seg");
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0xAA; 100], 2 * (1000 + 16) as u64 + 900)
        .unwrap();
    let log = open(&d, &kv);
    assert_eq!(
        replay(&log, 0).iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2]
    );
    log.append(3, b"again").unwrap();
    drop(log);
    let log = open(&d, &kv);
    assert_eq!(replay(&log, 2), [(3, b"again".to_vec())]);
}

#[test]
fn a_bad_record_with_records_after_it_refuses_to_replay() {
    let (d, kv) = (dir("middle"), MemoryStorage::default());
    let log = open(&d, &kv);
    for seq in 1..=7 {
        log.append(seq, &rec(seq, 4 << 20)).unwrap();
    }
    drop(log);
    // Record 2, in the first of two segments, is damaged.
    let path = d.join("0000000000000001.seg");
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"x", (4 << 20) + 16 + 16 + 5).unwrap();
    let log = open(&d, &kv);
    let err = log.replay(0, &mut |_, _| {}).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupted { message, .. } if message.contains("record 2 does not check and records from 4 follow")),
        "{err}"
    );
}

#[test]
fn forgotten_segments_are_recycled_and_their_old_records_never_read_again() {
    let (d, kv) = (dir("recycle"), MemoryStorage::default());
    let log = open(&d, &kv);
    let size = (4 << 20) - 16;
    for seq in 1..=9 {
        log.append(seq, &rec(seq, size)).unwrap();
    }
    // Four records per segment: 1-4, 5-8, 9.
    assert_eq!(files(&d, ".seg").len(), 3);
    log.forget_through(6).unwrap();
    assert_eq!(files(&d, ".seg").len(), 2, "only 1-4 is all forgotten");
    assert_eq!(files(&d, ".spare").len(), 1);
    log.forget_through(9).unwrap();
    // The active segment is kept until the next append starts another.
    assert_eq!(files(&d, ".seg").len(), 1);
    // Same-sized records written over the recycled files: only the new
    // ones are read, whatever the old files held after them.
    log.append(10, &rec(10, size)).unwrap();
    assert_eq!(files(&d, ".seg"), ["000000000000000a.seg"]);
    assert_eq!(
        files(&d, ".spare").len(),
        2,
        "two recycled before, one reused, one more recycled"
    );
    drop(log);
    let log = open(&d, &kv);
    let got = replay(&log, 9);
    assert_eq!(got.len(), 1);
    assert!(got[0] == (10, rec(10, size)));
    // Everything forgotten and compacted: no segment left.
    log.forget_through(10).unwrap();
    log.compact().unwrap();
    assert!(files(&d, ".seg").is_empty());
    drop(log);
    assert!(replay(&open(&d, &kv), 0).is_empty());
}

#[test]
fn a_cut_erases_what_follows_even_under_records_of_the_same_size() {
    let (d, kv) = (dir("cut"), MemoryStorage::default());
    let log = open(&d, &kv);
    for seq in 1..=5 {
        log.append(seq, &rec(seq, 100)).unwrap();
    }
    log.cut_from(3).unwrap();
    // The new record 3 is as long as the old one: the old 4 and 5 right
    // after it must not read as records.
    log.append(3, &rec(33, 100)).unwrap();
    drop(log);
    let log = open(&d, &kv);
    let got: Vec<u64> = replay(&log, 0).iter().map(|r| r.0).collect();
    assert_eq!(got, [1, 2, 3]);
    // A cut to nothing (a fresh state) removes every file.
    log.cut_from(0).unwrap();
    drop(log);
    assert!(replay(&open(&d, &kv), 0).is_empty());
    assert!(files(&d, ".seg").is_empty());
}

#[test]
fn records_an_earlier_build_kept_as_keys_are_replayed_first_then_deleted() {
    let (d, kv) = (dir("legacy"), MemoryStorage::default());
    kv.batch(vec![
        StorageOp::Set(record_key(1), b"one".to_vec()),
        StorageOp::Set(record_key(2), b"two".to_vec()),
    ])
    .unwrap();
    let log = open(&d, &kv);
    log.append(3, b"three").unwrap();
    let got: Vec<u64> = replay(&log, 0).iter().map(|r| r.0).collect();
    assert_eq!(got, [1, 2, 3]);
    log.forget_through(2).unwrap();
    log.compact().unwrap();
    assert!(kv.scan("log/").unwrap().is_empty());
    assert_eq!(replay(&log, 2), [(3, b"three".to_vec())]);
}
