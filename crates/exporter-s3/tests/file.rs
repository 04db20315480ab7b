//! The `file` exporter: the buffer's limits and the write modes, on a real folder.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use otelcol_core::pdata::Metrics;
use otelcol_exporter_s3::FileExporterFactory;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("otelcol-s3-file-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn one(v: f64) -> Metrics {
    totals("claude-code", T0, &[("ana@example.com", v)])
}

#[tokio::test]
async fn without_a_queue_each_batch_is_written_before_consume_returns() {
    let dir = scratch("sync");
    let yaml = format!(
        "directory: {}\nsending_queue:\n  enabled: false\n",
        dir.display()
    );
    let (exp, _) = metrics_exporter(&FileExporterFactory, "file", &yaml);
    exp.start(&host()).await.unwrap();
    exp.consume(batch(one(1.0))).await.unwrap();
    let written = files(&dir);
    assert_eq!(written.len(), 1, "{written:?}");
    let back: Metrics = serde_json::from_slice(&std::fs::read(&written[0]).unwrap()).unwrap();
    assert_eq!(back, one(1.0));
    exp.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small stage (`queue_size: 2`) and an hour's `flush_interval`: once
/// half full it is written out, so senders are not refused while the
/// destination takes objects.
#[tokio::test]
async fn a_half_full_stage_is_written_instead_of_refusing_senders() {
    let dir = scratch("full");
    let yaml = format!(
        "directory: {}\nsending_queue:\n  queue_size: 2\nbatching:\n  flush_interval: 1h\n",
        dir.display()
    );
    let (exp, s) = metrics_exporter(&FileExporterFactory, "file", &yaml);
    exp.start(&host()).await.unwrap();
    for v in [1.0, 2.0, 3.0, 4.0] {
        exp.consume(batch(one(v))).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while files(&dir).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!files(&dir).is_empty(), "written before the hour");
    exp.shutdown().await.unwrap();
    let r = s.metrics.render();
    assert!(
        r.contains("otelcol_exporter_enqueue_failed_metric_points_total{exporter=\"file\"} 0"),
        "{r}"
    );
    let resources: usize = files(&dir)
        .iter()
        .map(|f| {
            let m: Metrics = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
            m.resource_metrics.len()
        })
        .sum();
    assert_eq!(resources, 4, "each accepted batch once");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn max_objects_per_minute_holds_writes_until_shutdown() {
    let dir = scratch("rate");
    let yaml = format!(
        "directory: {}\nbatching:\n  flush_interval: 50ms\n  max_objects_per_minute: 1\n",
        dir.display()
    );
    let (exp, _) = metrics_exporter(&FileExporterFactory, "file", &yaml);
    exp.start(&host()).await.unwrap();
    exp.consume(batch(one(1.0))).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while files(&dir).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(files(&dir).len(), 1);
    exp.consume(batch(one(2.0))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        files(&dir).len(),
        1,
        "the second object waits for the minute"
    );
    exp.shutdown().await.unwrap();
    assert_eq!(files(&dir).len(), 2, "shutdown writes what waited");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_path_that_is_not_a_folder_fails_when_the_exporter_is_built() {
    let dir = scratch("ro");
    std::fs::write(&dir, "a file, not a folder").unwrap();
    let yaml = format!("directory: {}\n", dir.display());
    let s = settings("file");
    let e = otelcol_core::component::ExporterFactory::create_metrics(
        &FileExporterFactory,
        s,
        &raw(&yaml),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.starts_with(&format!("exporter file: creating {}: ", dir.display())),
        "{e}"
    );
    let _ = std::fs::remove_file(&dir);
}
