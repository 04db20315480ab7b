//! `cargo xtask dist --manifest FILE`: a distribution from a builder
//! manifest, as the Go collector's `builder-config.yaml` composes one.
//!
//! ```yaml
//! dist:
//!   name: otelcol-lite                 # binary and package name
//!   description: OTLP in, totals out
//!   version: 0.1.0
//!   output_path: ./target/dist/otelcol-lite
//! receivers:
//!   - crate: otelcol-receiver-otlp     # a crate of this workspace
//! processors:
//!   - crate: my-processor              # a crate of your own
//!     path: ./my-processor
//! exporters:
//!   - crate: otelcol-exporter-multitudes
//! extensions:
//!   - crate: some-extension
//!     version: "1.2"                   # from crates.io (or git: URL, with rev/branch/tag)
//! ```
//!
//! Every listed crate must expose `pub fn register(Factories) -> Factories`.
//! The generated crate depends on exactly those crates and on
//! `otelcol-multitudes` (the command line, no components of its own).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    dist: Dist,
    #[serde(default)]
    receivers: Vec<Entry>,
    #[serde(default)]
    processors: Vec<Entry>,
    #[serde(default)]
    exporters: Vec<Entry>,
    #[serde(default)]
    extensions: Vec<Entry>,
    #[serde(default)]
    connectors: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Dist {
    name: String,
    #[serde(default)]
    description: String,
    version: String,
    output_path: String,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(rename = "crate")]
    name: String,
    path: Option<String>,
    version: Option<String>,
    git: Option<String>,
    rev: Option<String>,
    branch: Option<String>,
    tag: Option<String>,
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The workspace crates, by package name, with their folders.
fn workspace_crates(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let dirs = std::fs::read_dir(root.join("crates"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    for dir in dirs.chain([root.join("collector-bin")]) {
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        if let Some(name) = text.lines().find_map(|l| {
            l.strip_prefix("name = \"")
                .and_then(|r| r.strip_suffix('"'))
        }) {
            out.insert(name.to_string(), dir);
        }
    }
    out
}

fn dependency(
    e: &Entry,
    base: &Path,
    workspace: &BTreeMap<String, PathBuf>,
) -> Result<String, String> {
    let mut spec = vec![];
    if let Some(p) = &e.path {
        let abs = base.join(p);
        let abs = abs
            .canonicalize()
            .map_err(|err| format!("{}: path {}: {err}", e.name, abs.display()))?;
        spec.push(format!("path = {}", toml_str(&abs.display().to_string())));
    } else if let Some(g) = &e.git {
        spec.push(format!("git = {}", toml_str(g)));
        for (k, v) in [("rev", &e.rev), ("branch", &e.branch), ("tag", &e.tag)] {
            if let Some(v) = v {
                spec.push(format!("{k} = {}", toml_str(v)));
            }
        }
    } else if let Some(v) = &e.version {
        spec.push(format!("version = {}", toml_str(v)));
    } else if let Some(dir) = workspace.get(&e.name) {
        spec.push(format!("path = {}", toml_str(&dir.display().to_string())));
    } else {
        return Err(format!(
            "`{}` is not a crate of this workspace; give it a path, git or version",
            e.name
        ));
    }
    Ok(format!("{} = {{ {} }}\n", e.name, spec.join(", ")))
}

/// Writes the distribution crate; returns its folder and the binary name.
/// The package is named `<name>-dist` so that it never collides with a
/// crate it depends on (a distribution may be named `otelcol-multitudes`).
pub fn generate(root: &Path, manifest_path: &Path) -> Result<(PathBuf, String), String> {
    let text = std::fs::read_to_string(manifest_path)
        .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let m: Manifest =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let base = manifest_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let base = base.canonicalize().unwrap_or(base);
    let workspace = workspace_crates(root);
    let out = if Path::new(&m.dist.output_path).is_absolute() {
        PathBuf::from(&m.dist.output_path)
    } else {
        root.join(&m.dist.output_path)
    };
    let mut entries: Vec<Entry> = vec![];
    for e in m
        .receivers
        .iter()
        .chain(&m.processors)
        .chain(&m.exporters)
        .chain(&m.extensions)
        .chain(&m.connectors)
    {
        if !entries.iter().any(|x| x.name == e.name) {
            entries.push(e.clone());
        }
    }
    if entries.is_empty() {
        return Err("the manifest lists no component crates".into());
    }
    let bin = workspace
        .get("otelcol-multitudes")
        .ok_or("collector-bin not found")?;
    let core = workspace
        .get("otelcol-core")
        .ok_or("crates/core not found")?;
    let mut cargo = format!(
        "# Generated by `cargo xtask dist` from {}; do not edit.\n[package]\nname = {}\nversion = {}\nedition = \"2021\"\npublish = false\n\n[[bin]]\nname = {}\npath = \"src/main.rs\"\n\n[workspace]\n\n[dependencies]\n",
        manifest_path.display(),
        toml_str(&format!("{}-dist", m.dist.name)),
        toml_str(&m.dist.version),
        toml_str(&m.dist.name),
    );
    let _ = writeln!(
        cargo,
        "otelcol-multitudes = {{ path = {}, default-features = false }}",
        toml_str(&bin.display().to_string())
    );
    let _ = writeln!(
        cargo,
        "otelcol-core = {{ path = {} }}",
        toml_str(&core.display().to_string())
    );
    cargo.push_str("tokio = { version = \"1\", features = [\"rt-multi-thread\", \"macros\"] }\nclap = { version = \"4\", features = [\"derive\"] }\n");
    for e in &entries {
        cargo.push_str(&dependency(e, &base, &workspace)?);
    }
    cargo.push_str("\n[profile.release]\nlto = \"thin\"\ncodegen-units = 4\nstrip = \"debuginfo\"\npanic = \"abort\"\n\n[profile.dev]\ndebug = \"line-tables-only\"\n\n[profile.dev.package.\"*\"]\nopt-level = 1\n");
    let mut main = String::from("//! Generated by `cargo xtask dist`; do not edit.\n\nuse clap::Parser;\n\n#[tokio::main]\nasync fn main() -> std::process::ExitCode {\n    let factories = otelcol_core::component::Factories::default();\n");
    for e in &entries {
        let _ = writeln!(
            main,
            "    let factories = {}::register(factories);",
            e.name.replace('-', "_")
        );
    }
    let _ = write!(
        main,
        "    let dist = otelcol_multitudes::Distribution {{\n        name: {},\n        description: {},\n        version: {},\n        factories,\n    }};\n    otelcol_multitudes::run_distribution(otelcol_multitudes::Cli::parse(), dist).await\n}}\n",
        toml_str(&m.dist.name),
        toml_str(&m.dist.description),
        toml_str(&m.dist.version)
    );
    std::fs::create_dir_all(out.join("src")).map_err(|e| format!("{}: {e}", out.display()))?;
    std::fs::write(out.join("Cargo.toml"), cargo).map_err(|e| e.to_string())?;
    std::fs::write(out.join("src/main.rs"), main).map_err(|e| e.to_string())?;
    // Start from the workspace's lock file so the same dependency versions are used.
    if let Ok(lock) = std::fs::read(root.join("Cargo.lock")) {
        let _ = std::fs::write(out.join("Cargo.lock"), lock);
    }
    Ok((out, m.dist.name))
}
