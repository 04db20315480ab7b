//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`
//! from `../shared/testdata` (the fixtures and the real exports) and the
//! shipped configs: `cargo xtask fuzz --seeds`.

use std::path::{Path, PathBuf};

use otelcol_core::pdata::{Logs, Metrics};
use prost::Message;
use serde_json::Value;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

/// OTLP/JSON request bodies: the fixtures, and each metrics or logs line of
/// the real exports.
fn bodies(shared: &Path) -> std::io::Result<Vec<(String, bool, Value)>> {
    let mut out = vec![];
    for entry in std::fs::read_dir(shared.join("testdata"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
            let logs = v.get("resourceLogs").is_some();
            out.push((stem(&path), logs, v));
        }
    }
    for entry in std::fs::read_dir(shared.join("testdata/real"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            let text = std::fs::read_to_string(&path)?;
            for (i, line) in text.lines().enumerate().take(12) {
                let r: Value = serde_json::from_str(line)?;
                let logs = r["signal"] == "logs";
                if r["signal"] == "metrics" || logs {
                    out.push((format!("{}-{i}", stem(&path)), logs, r["body"].clone()));
                }
            }
        }
    }
    Ok(out)
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shared = root.join("../shared");
    let corpus = root.join("fuzz/corpus");
    for (name, logs, body) in bodies(&shared)? {
        let json = serde_json::to_vec(&body)?;
        let proto = if logs {
            serde_json::from_value::<Logs>(body.clone()).map(|l| l.encode_to_vec())
        } else {
            serde_json::from_value::<Metrics>(body.clone()).map(|m| m.encode_to_vec())
        };
        if !logs {
            write(&corpus.join("json_fast_path"), &name, &json)?;
        }
        let signal: u8 = if logs { 1 } else { 0 };
        // http_body: [encoding, (signal << 1) | json, body…]
        write(
            &corpus.join("http_body"),
            &format!("{name}.json"),
            &[&[0, (signal << 1) | 1][..], &json].concat(),
        )?;
        if let Ok(proto) = proto {
            write(
                &corpus.join("http_body"),
                &format!("{name}.pb"),
                &[&[0, signal << 1][..], &proto].concat(),
            )?;
            if !logs {
                write(&corpus.join("metrics_view"), &format!("{name}.pb"), &proto)?;
            }
            // grpc_request: [signal, message…]
            write(
                &corpus.join("grpc_request"),
                &format!("{name}.pb"),
                &[&[signal][..], &proto].concat(),
            )?;
        }
    }
    for entry in std::fs::read_dir(root.join("configs"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            write(&corpus.join("config"), &stem(&path), &std::fs::read(&path)?)?;
        }
    }
    for (i, s) in [
        r#"set(attributes["team"], "core") where resource.attributes["service.name"] == "claude-code""#,
        r#"delete_key(attributes, "session.id")"#,
        r#"set(attributes["n"], Double(attributes["cost_usd"]) * 2)"#,
        r#"IsMatch(name, "^claude_code\\..*") and not (attributes["x"] == nil)"#,
        r#"keep_keys(attributes, ["user.email", "model"])"#,
    ]
    .iter()
    .enumerate()
    {
        write(&corpus.join("ottl"), &format!("seed-{i}"), s.as_bytes())?;
    }
    for i in 0..8u8 {
        let seed: Vec<u8> = (0..256u32)
            .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i * 17))
            .collect();
        write(&corpus.join("engine"), &format!("seed-{i}"), &seed)?;
    }
    println!("seeds written under {}", corpus.display());
    Ok(())
}
