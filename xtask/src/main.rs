//! Project automation: `cargo xtask <task>`.
//!
//! - `ci`: what CI runs after installing tools: `cargo fmt --check`,
//!   `cargo clippy --all-targets -- -D warnings`, every component feature of
//!   the binary alone (`check-features`), then the test suite.
//! - `test`: the test suite alone (the README's test command runs this).
//! - `check-features`: `cargo check` of the binary with each component alone.
//! - `dist --manifest FILE [--debug]`: generate and build a distribution
//!   from a builder manifest (see `dist.rs`).

mod dist;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn cargo_in(dir: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut cmd = Command::new(cargo);
    cmd.args(args).envs(env.iter().copied());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    match cmd.status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            false
        }
    }
}

fn cargo(args: &[&str]) -> bool {
    cargo_in(None, args, &[])
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn test() -> bool {
    cargo(&["test", "--workspace", "--all-targets", "--locked"])
        && cargo(&["test", "--workspace", "--doc", "--locked"])
}

/// The component features of the binary, read from its Cargo.toml.
fn component_features() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("collector-bin/Cargo.toml")).unwrap_or_default();
    let section = text.split("[features]").nth(1).unwrap_or("");
    section
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| {
            l.split_once(" = [\"dep:")
                .map(|(k, _)| k.trim().to_string())
        })
        .collect()
}

fn check_features() -> bool {
    let features = component_features();
    if features.is_empty() {
        eprintln!("xtask: no component features found in collector-bin/Cargo.toml");
        return false;
    }
    features.iter().all(|f| {
        cargo(&[
            "check",
            "-p",
            "otelcol-multitudes",
            "--no-default-features",
            "--features",
            f,
            "--locked",
        ])
    })
}

fn ci() -> bool {
    cargo(&["fmt", "--all", "--", "--check"])
        && cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ])
        && check_features()
        && test()
}

fn dist(args: &[String]) -> bool {
    let manifest = args
        .iter()
        .position(|a| a == "--manifest")
        .and_then(|i| args.get(i + 1));
    let Some(manifest) = manifest else {
        eprintln!("usage: cargo xtask dist --manifest FILE [--debug]");
        return false;
    };
    let manifest = std::env::current_dir().unwrap_or_default().join(manifest);
    let out = match dist::generate(&root(), &manifest) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("xtask dist: {e}");
            return false;
        }
    };
    eprintln!("xtask dist: generated {}", out.display());
    let target = root().join("target");
    let target = target.to_string_lossy();
    let mut build = vec!["build", "--manifest-path", "Cargo.toml"];
    if !args.iter().any(|a| a == "--debug") {
        build.push("--release");
    }
    cargo_in(Some(&out), &build, &[("CARGO_TARGET_DIR", &target)])
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ok = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(),
        Some("check-features") => check_features(),
        Some("dist") => dist(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|test|check-features|dist>\n  ci              fmt --check, clippy -D warnings, check-features, then all tests\n  test            all tests (unit, integration, doc)\n  check-features  cargo check of the binary with each component alone\n  dist --manifest FILE [--debug]  build a distribution from a builder manifest"
            );
            return ExitCode::from(2);
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
