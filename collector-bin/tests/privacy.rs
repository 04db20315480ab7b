//! The privacy proof: what leaves holds only totals and allow-listed
//! attributes. The real tools' metrics and events go through the real
//! binary with each shipped config: the production config (and with the
//! events forwarded through `configs/forward-events.yaml`, and with an
//! HMAC pseudonym for the user), the local default (its Parquet files) and
//! `configs/s3.yaml` (its `totals/` objects in a moto bucket). Every string
//! of the input that is not an allow-listed key's value is looked for in
//! every byte that leaves, and the proofs are shown to catch a leak when an
//! allow-list is widened.

mod common;

use common::replay::{
    bodies, leaks, overlay_allowed_keys, production_point_keys, replay_signals,
    replay_signals_with, series_per_window, served_by_events, strings, totals_keys, Wire,
    EVENT_FILES, EVENT_METRICS,
};
use common::s3::{spawn_s3, Moto, BUCKET};

/// Synthetic events with what prompt logging and tool details add: prompt
/// text, tool parameters, file paths, a command line, a host name, ids.
const PRIVATE: (&str, Wire) = ("private-events.jsonl", Wire::Json);

/// [`served_by_events`] plus the synthetic `api_request` (11 input and 7
/// output tokens).
fn served_plus_private() -> std::collections::BTreeMap<(String, String), f64> {
    let mut served = served_by_events();
    for (ty, n) in [("input", 11.0), ("output", 7.0)] {
        *served
            .get_mut(&("claude_code.events.token.usage".to_string(), ty.to_string()))
            .unwrap() += n;
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_events_keep_only_the_overlays_allowed_keys() {
    let files = [EVENT_FILES[0], EVENT_FILES[1], EVENT_FILES[2], PRIVATE];
    let out = replay_signals(&files, &["logs"], &EVENT_METRICS, Some(&[])).await;
    assert_eq!(
        out.tokens,
        served_plus_private(),
        "the totals path is unchanged"
    );
    assert_eq!(out.paths(), ["/ai/otel/v1/logs", "/ai/otel/v1/metrics"]);
    let text = out.text();
    assert!(
        text.contains("input_token_count") && text.contains("cost_usd"),
        "the scan reads forwarded events"
    );
    let mut keys = overlay_allowed_keys();
    keys.extend(totals_keys());
    let leaked = leaks(&files, &keys, &text);
    assert!(leaked.is_empty(), "input strings in the output: {leaked:?}");

    // The proof can fail: with session.id let through, Gemini's and
    // Claude's session ids are found in what leaves.
    let mut widened = overlay_allowed_keys();
    widened.push("session.id".into());
    let set = format!(
        "processors.redaction/events.allowed_keys=[{}]",
        widened.join(", ")
    );
    let out = replay_signals(&files, &["logs"], &EVENT_METRICS, Some(&[&set])).await;
    let leaked = leaks(&files, &keys, &out.text());
    assert!(
        leaked
            .iter()
            .any(|s| s == "c5442221-6dd9-4b06-ac15-bf979167cf82"),
        "the widened list lets Gemini's session id out: {leaked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_config_sends_only_allow_listed_totals_of_metrics_and_events() {
    // Every sample, metrics and events, as each tool sent them.
    let files = [
        ("claude-json.jsonl", Wire::Json),
        ("codex-json.jsonl", Wire::Json),
        ("gemini.jsonl", Wire::Json),
        PRIVATE,
    ];
    let out = replay_signals(&files, &["metrics", "logs"], &common::TOKEN_METRICS, None).await;
    assert_eq!(out.paths(), ["/ai/otel/v1/metrics"], "only totals leave");
    let mut keys = totals_keys();
    keys.extend(production_point_keys());
    let (mut kept, mut input) = (vec![], vec![]);
    for (file, _) in files {
        for signal in ["metrics", "logs"] {
            for body in bodies(file, signal, 0) {
                let body = serde_json::from_slice(&body).unwrap();
                strings(&body, &keys, &mut kept, &mut input);
            }
        }
    }
    input.retain(|s| !kept.iter().any(|k| k.contains(s.as_str())));
    input.sort();
    input.dedup();
    assert!(input.len() > 100, "the scan has strings to look for");
    let text = out.text();
    let leaked: Vec<&String> = input.iter().filter(|s| text.contains(s.as_str())).collect();
    assert!(leaked.is_empty(), "input strings in the output: {leaked:?}");
    // One point per series per window: at most users × series × windows.
    let series = series_per_window(&out.requests);
    let mut unique = series.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(series.len(), unique.len(), "a series twice in one window");
    assert!(series.len() > 20, "totals were sent: {}", series.len());

    // The proof can fail: widen the point or the resource allow-list and
    // Gemini's installation id or session id is found in what leaves.
    let mut points = production_point_keys();
    points.push("installation.id".into());
    let widened = [
        (
            format!(
                "processors.aggregation.include_attributes=[{}]",
                points.join(", ")
            ),
            "51e4bb82-dc6a-405f-93d7-b5ef5eb10a23",
        ),
        (
            "processors.aggregation.resource_attributes.include=[service.name, session.id]".into(),
            "c5442221-6dd9-4b06-ac15-bf979167cf82",
        ),
    ];
    for (set, id) in widened {
        let out = replay_signals_with(&files, &["metrics", "logs"], &[set.as_str()]).await;
        assert!(out.text().contains(id), "{set} lets {id} out");
        assert!(input.iter().any(|s| s == id), "the scan looks for {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_hmac_pseudonym_no_email_leaves_in_clear() {
    let files = [
        ("claude-json.jsonl", Wire::Json),
        ("codex-json.jsonl", Wire::Json),
        ("gemini.jsonl", Wire::Json),
        PRIVATE,
    ];
    // The user key hashed on points and resources before aggregation; the
    // events' points pass the same processors (the connector feeds the
    // metrics pipeline's head).
    let hash = "[{key: user.email, action: hash, hmac_key: site-secret-0001}]";
    let sets = [
        format!("processors.attributes/pseudonym.actions={hash}"),
        format!("processors.resource/pseudonym.attributes={hash}"),
        "service.pipelines.metrics.processors=[memory_limiter, attributes/pseudonym, resource/pseudonym, aggregation]".to_string(),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let out = replay_signals_with(&files, &["metrics", "logs"], &sets).await;
    let text = out.text();
    assert!(text.contains("claude_code.token.usage"), "totals were sent");
    assert!(
        text.contains("codex.events.token.usage"),
        "event totals were sent"
    );
    assert!(!text.contains("ana@example.com"), "an email left in clear");
    assert!(
        !text.contains("example.com"),
        "an email domain left in clear"
    );
}

/// Python that defines `rows` and `add(table)`, which appends a Parquet
/// table's rows (map columns as objects) to it.
const ROWS: &str = concat!(
    "import sys, io, json, pyarrow.parquet as pq\n",
    "rows = []\n",
    "def add(t):\n",
    "    for r in t.to_pylist():\n",
    "        rows.append({k: dict(v) if isinstance(v, list) and all(isinstance(x, tuple) for x in v) else v for k, v in r.items()})\n",
);

/// Checks the totals rows (JSON from [`ROWS`]) a shipped config wrote:
/// only allow-listed attribute and resource keys, the tools' metrics and
/// events' totals present, and no string of the input outside the
/// allow-lists.
fn check_totals_rows(text: &str, files: &[(&str, Wire)], config: &str) {
    let rows: Vec<serde_json::Value> = serde_json::from_str(text.trim()).unwrap();
    let mut keys = totals_keys();
    keys.extend(point_keys(config));
    let mut names = std::collections::BTreeSet::new();
    for row in &rows {
        names.insert(row["metric_name"].as_str().unwrap_or_default().to_string());
        for column in ["attributes", "resource_attributes"] {
            let map = row[column].as_object();
            assert!(map.is_some(), "a {column} map column in {row}");
            for key in map.into_iter().flat_map(|m| m.keys()) {
                assert!(keys.contains(key), "{config}: {column} key {key} in {row}");
            }
        }
    }
    for name in [
        "claude_code.token.usage",
        "codex.events.token.usage",
        "gemini_cli.events.token.usage",
    ] {
        assert!(
            names.contains(name),
            "{config}: {name} totals were written: {names:?}"
        );
    }
    let (mut kept, mut input) = (vec![], vec![]);
    for (file, _) in files {
        for signal in ["metrics", "logs"] {
            for body in bodies(file, signal, 0) {
                strings(
                    &serde_json::from_slice(&body).unwrap(),
                    &keys,
                    &mut kept,
                    &mut input,
                );
            }
        }
    }
    input.retain(|s| !kept.iter().any(|k| k.contains(s.as_str())));
    assert!(input.len() > 100, "the scan has strings to look for");
    let leaked: Vec<&String> = input.iter().filter(|s| text.contains(s.as_str())).collect();
    assert!(
        leaked.is_empty(),
        "{config}: input strings in the totals: {leaked:?}"
    );
}

/// The point attributes the totals of `configs/<config>` keep (its
/// aggregation's `include_attributes`).
fn point_keys(config: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(config);
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    yaml["processors"]["aggregation"]["include_attributes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_default_writes_only_allow_listed_totals_to_its_files() {
    let files = [
        ("claude-json.jsonl", Wire::Json),
        ("codex-json.jsonl", Wire::Json),
        ("gemini.jsonl", Wire::Json),
        PRIVATE,
    ];
    let data = std::env::temp_dir().join(format!("otelcol-privacy-local-{}", common::free_port()));
    let _ = std::fs::remove_dir_all(&data);
    let (http, health) = (common::free_port(), common::free_port());
    let envs = [
        ("OTLP_HTTP_ENDPOINT", format!("127.0.0.1:{http}")),
        (
            "OTLP_GRPC_ENDPOINT",
            format!("127.0.0.1:{}", common::free_port()),
        ),
        ("HEALTH_ENDPOINT", format!("127.0.0.1:{health}")),
        (
            "METRICS_ENDPOINT",
            format!("127.0.0.1:{}", common::free_port()),
        ),
        ("DATA_DIR", data.display().to_string()),
    ];
    // No --config: the embedded local default.
    let collector = common::Collector::spawn(&[], &envs);
    common::wait_healthy(&format!("http://127.0.0.1:{health}/")).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    for (file, _) in files {
        for signal in ["metrics", "logs"] {
            for body in bodies(file, signal, now) {
                let (status, answer) = common::http(
                    "POST",
                    &format!("http://127.0.0.1:{http}/v1/{signal}"),
                    &[("content-type", "application/json")],
                    body,
                )
                .await;
                assert_eq!(status, 200, "{file} {signal}: {answer}");
            }
        }
    }
    let (ok, log) = collector.stop();
    assert!(ok, "clean exit: {log:?}");

    // Every row of every Parquet file the totals went to, as JSON.
    let script = format!(
        "import glob\n{ROWS}\nfor f in sorted(glob.glob(sys.argv[1] + '/**/*.parquet', recursive=True)):\n    add(pq.read_table(f))\nprint(json.dumps(rows, default=str))\n"
    );
    let out = std::process::Command::new(common::venv_tool("python"))
        .args(["-c", &script, data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_totals_rows(&String::from_utf8_lossy(&out.stdout), &files, "local.yaml");
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_configs_totals_objects_hold_only_allow_listed_totals() {
    // `configs/s3.yaml` writes everything raw under `raw/` by design (the
    // site's own bucket, asked for by name); its `totals/` objects are the
    // totals path and must hold nothing more.
    let files = [
        ("claude-json.jsonl", Wire::Json),
        ("codex-json.jsonl", Wire::Json),
        ("gemini.jsonl", Wire::Json),
        PRIVATE,
    ];
    let port = common::free_port();
    let moto = Moto::start(port);
    let storage = common::scratch_storage_dir();
    let (collector, logs_url) = spawn_s3(port, &storage, &[]).await;
    let base = logs_url.trim_end_matches("/v1/logs").to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    for (file, _) in files {
        for signal in ["metrics", "logs"] {
            for body in bodies(file, signal, now) {
                let (status, answer) = common::http(
                    "POST",
                    &format!("{base}/v1/{signal}"),
                    &[("content-type", "application/json")],
                    body,
                )
                .await;
                assert_eq!(status, 200, "{file} {signal}: {answer}");
            }
        }
    }
    let (ok, log) = collector.stop();
    assert!(ok, "clean exit: {log:?}");
    let rows = moto.python(
        port,
        &format!(
            "{ROWS}\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{BUCKET}', Prefix='totals/'):\n    \
             for o in page.get('Contents', []):\n        \
             add(pq.read_table(io.BytesIO(s3.get_object(Bucket='{BUCKET}', Key=o['Key'])['Body'].read())))\n\
             print(json.dumps(rows, default=str))"
        ),
    );
    check_totals_rows(&rows, &files, "s3.yaml");
    let _ = std::fs::remove_dir_all(storage);
}
