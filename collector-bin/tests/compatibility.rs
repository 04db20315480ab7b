//! `docs/compatibility.md` is true: its tables against
//! `docs/compatibility.yaml` (every listed key set once), the factories of
//! this build and the binary's `validate`.
//!
//! - the fixture validates, and sets every key the tables list (except the
//!   refused ones, which it must not set);
//! - every "no effect" row produces its start-up warning, and every warning
//!   has its row (so no key is accepted and ignored without being listed);
//! - every refused key is refused, by an error that names it;
//! - every component type of this build has a section, or is one of ours.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use otelcol_core::config::{set_paths, CollectorConfig, RawConfig};
use otelcol_core::pipeline;

/// Component types with no Go counterpart (their keys are in their READMEs).
const OURS: [&str; 4] = ["aggregation", "multitudes", "multitudes_auth", "file"];

/// One row of a table: the component's section and type, the key as a
/// pattern (`*` for a list element), its status.
#[derive(Debug)]
struct Row {
    section: String,
    type_name: String,
    key: String,
    status: String,
}

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// `a.{b,c}.d` → `a.b.d`, `a.c.d` (one brace group at a time, recursively).
fn expand(key: &str) -> Vec<String> {
    let Some(open) = key.find('{') else {
        return vec![key.replace("[]", ".*")];
    };
    let close = open + key[open..].find('}').expect("closed brace");
    key[open + 1..close]
        .split(',')
        .flat_map(|alt| expand(&format!("{}{alt}{}", &key[..open], &key[close + 1..])))
        .collect()
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(docs().join("compatibility.md")).unwrap();
    let mut rows = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## `") {
            current = h.split_once("` (").map(|(t, kind)| {
                let section = match kind.trim_end_matches(')') {
                    "receiver" => "receivers",
                    "processor" => "processors",
                    "exporter" => "exporters",
                    "extension" => "extensions",
                    "connector" => "connectors",
                    other => panic!("unknown kind {other} in `{line}`"),
                };
                (section.to_string(), t.to_string())
            });
            continue;
        }
        if line.starts_with("## ") {
            current = None;
            continue;
        }
        let Some((section, type_name)) = &current else {
            continue;
        };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let status = cells[2].to_string();
        assert!(
            ["implemented", "differs", "no effect", "refused"].contains(&status.as_str()),
            "{type_name} {}: unknown status `{status}`",
            cells[1]
        );
        for key in expand(cells[1].trim_matches('`')) {
            rows.push(Row {
                section: section.clone(),
                type_name: type_name.clone(),
                key,
                status: status.clone(),
            });
        }
    }
    rows
}

fn fixture_text() -> String {
    std::fs::read_to_string(docs().join("compatibility.yaml")).unwrap()
}

fn section(config: &CollectorConfig, name: &str) -> Vec<(String, RawConfig)> {
    let map = match name {
        "receivers" => &config.receivers,
        "processors" => &config.processors,
        "exporters" => &config.exporters,
        "extensions" => &config.extensions,
        "connectors" => &config.connectors,
        other => panic!("section {other}"),
    };
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The instances of `type_name` in `section` (`type` or `type/name`).
fn instances(config: &CollectorConfig, sec: &str, type_name: &str) -> Vec<RawConfig> {
    section(config, sec)
        .into_iter()
        .filter(|(id, _)| id == type_name || id.starts_with(&format!("{type_name}/")))
        .map(|(_, raw)| raw)
        .collect()
}

/// Whether a concrete path (`actions.0.key`) matches a row's pattern
/// (`actions.*.key`).
fn path_matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let c: Vec<&str> = path.split('.').collect();
    p.len() == c.len() && p.iter().zip(&c).all(|(p, c)| *p == "*" || p == c)
}

/// A warning line split into (section, type, path).
fn parse_warning(line: &str) -> (String, String, String) {
    let (head, _) = line
        .split_once(" has no effect here: ")
        .unwrap_or_else(|| panic!("warning shape: {line}"));
    let mut parts = head.splitn(3, '.');
    let section = parts.next().unwrap().to_string();
    let id = parts.next().unwrap();
    let path = parts.next().unwrap().to_string();
    let type_name = id.split('/').next().unwrap().to_string();
    (section, type_name, path)
}

#[test]
fn the_fixture_sets_every_listed_key_and_validates() {
    let config = common::load_yaml(&fixture_text());
    let factories = otelcol_multitudes::factories();
    pipeline::validate(&config, &factories).expect("docs/compatibility.yaml validates");
    let rows = rows();
    assert!(rows.len() > 200, "{} rows read", rows.len());
    for row in &rows {
        let set = instances(&config, &row.section, &row.type_name)
            .iter()
            .any(|raw| !set_paths(raw, &row.key).is_empty());
        if row.status == "refused" {
            assert!(
                !set,
                "{row:?}: a refused key cannot be in a fixture that validates"
            );
        } else {
            assert!(set, "{row:?}: not set in docs/compatibility.yaml");
        }
    }
}

#[test]
fn every_no_effect_row_warns_and_every_warning_has_its_row() {
    let config = common::load_yaml(&fixture_text());
    let factories = otelcol_multitudes::factories();
    let warnings = pipeline::no_effect_warnings(&config, &factories);
    let parsed: Vec<(String, String, String)> = warnings.iter().map(|w| parse_warning(w)).collect();
    let rows = rows();
    for row in &rows {
        let warned = parsed
            .iter()
            .any(|(s, t, p)| *s == row.section && *t == row.type_name && path_matches(&row.key, p));
        assert_eq!(
            warned,
            row.status == "no effect",
            "{row:?}: warned = {warned}; warnings: {warnings:#?}"
        );
    }
    for (w, (s, t, p)) in warnings.iter().zip(&parsed) {
        let listed = rows.iter().any(|r| {
            r.status == "no effect"
                && r.section == *s
                && r.type_name == *t
                && path_matches(&r.key, p)
        });
        assert!(
            listed,
            "`{w}` has no \"no effect\" row in docs/compatibility.md"
        );
    }
}

#[test]
fn every_refused_key_is_refused_by_name() {
    let fixture: serde_yaml::Value = serde_yaml::from_str(&fixture_text()).unwrap();
    let refused: Vec<Row> = rows()
        .into_iter()
        .filter(|r| r.status == "refused")
        .collect();
    assert!(!refused.is_empty());
    for row in refused {
        let mut config = fixture.clone();
        let mut at = &mut config[row.section.as_str()][row.type_name.as_str()];
        let segments: Vec<&str> = row.key.split('.').collect();
        let (last, parents) = segments.split_last().unwrap();
        for seg in parents {
            // `[]` in a key: the list's first element.
            at = if *seg == "*" {
                &mut at[0]
            } else {
                &mut at[*seg]
            };
        }
        at[*last] = serde_yaml::Value::String("x".into());
        let text = serde_yaml::to_string(&config).unwrap();
        let loaded = common::load_yaml(&text);
        let err = pipeline::validate(&loaded, &otelcol_multitudes::factories())
            .expect_err(&format!("{row:?} is refused"))
            .to_string();
        assert!(
            err.contains(last),
            "{row:?}: the error names the key: {err}"
        );
    }
}

#[test]
fn every_component_type_has_a_section_or_is_ours() {
    let documented: BTreeSet<String> = rows().into_iter().map(|r| r.type_name).collect();
    let factories = otelcol_multitudes::factories();
    let built: BTreeSet<String> = factories
        .describe()
        .values()
        .flatten()
        .map(|c| c.name.to_string())
        .collect();
    for t in &built {
        assert!(
            documented.contains(t) || OURS.contains(&t.as_str()),
            "component type `{t}` has no section in docs/compatibility.md"
        );
    }
    for t in &documented {
        assert!(
            built.contains(t),
            "docs/compatibility.md documents `{t}`, which this build lacks"
        );
    }
}

#[test]
fn validate_prints_the_same_warnings_and_succeeds() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_otelcol-multitudes"))
        .args(["validate", "--config"])
        .arg(docs().join("compatibility.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "configuration is valid\n"
    );
    let printed: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("warning: ").map(str::to_string))
        .collect();
    let config = common::load_yaml(&fixture_text());
    let expected = pipeline::no_effect_warnings(&config, &otelcol_multitudes::factories());
    assert_eq!(printed, expected);
}
