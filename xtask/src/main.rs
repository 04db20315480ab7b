//! Project automation: `cargo xtask <task>`.
//!
//! - `ci`: what CI runs after installing tools: `cargo fmt --check`,
//!   `cargo clippy --all-targets -- -D warnings`, every component feature of
//!   the binary alone (`check-features`), the test suite, `bench --quick`.
//! - `test`: the test suite alone (the README's test command runs this),
//!   after `test-tools`.
//! - `test-tools`: installs `.ci/requirements.txt` into `.ci/venv` (the S3
//!   server and Parquet reader the tests start, kubernetes-validate), and
//!   Debian's `chromium` for the browser CORS test when missing (as root).
//! - `bench [--quick]`, `loadgen …`, `sink …`: the benchmark instruments in
//!   `crates/bench` (see BENCHMARKS.md); `ci` runs `bench --quick`.
//!   `bench --vs-rotel` runs the same profiles against rotel (the pinned
//!   wheel of `.ci/requirements.txt`) and ours, back to back.
//! - `check-features`: `cargo check` of the binary with each component alone.
//! - `dist --manifest FILE [--debug]`: generate and build a distribution
//!   from a builder manifest (see `dist.rs`).
//! - `release-check`: VERSION, crate versions, the builder manifest and the
//!   changelog agree.
//! - `docker`: build the image tagged with VERSION, where an engine runs.
//! - `fuzz [--target T] [--seconds N] [--seeds]`: the cargo-fuzz targets
//!   (see `fuzz.rs`); crashing inputs become regression inputs.

mod dist;
mod fuzz;

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

/// Installs `.ci/requirements.txt` into `.ci/venv` (moto_server, pyarrow,
/// kubernetes-validate), unless the venv already holds exactly that list.
/// Whether `name` is an executable file on `PATH`.
fn on_path(name: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(name).is_file())
}

/// Chromium for the browser CORS test (`collector-bin/tests/browser_cors.rs`):
/// Debian's package, installed with apt when this runs as root and it is
/// missing. Elsewhere it only says how; the test then fails and says so.
fn browser() {
    if std::env::var_os("CHROMIUM").is_some() || on_path("chromium") || on_path("chromium-browser")
    {
        return;
    }
    let root_user = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !root_user || !on_path("apt-get") {
        eprintln!("xtask: Chromium is missing: install Debian's `chromium` package (or set CHROMIUM) for the browser CORS test");
        return;
    }
    eprintln!("xtask: installing Debian's chromium for the browser CORS test");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !(apt(&["-qq", "update"]) && apt(&["-qq", "-y", "install", "chromium"])) {
        eprintln!("xtask: apt-get could not install chromium; the browser CORS test will fail");
    }
}

fn test_tools() -> bool {
    browser();
    let root = root();
    let wanted = std::fs::read_to_string(root.join(".ci/requirements.txt")).unwrap_or_default();
    let venv = root.join(".ci/venv");
    let stamp = venv.join(".requirements");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return true;
    }
    eprintln!("xtask: installing the Python test tools into .ci/venv");
    let run = |program: &Path, args: &[&str]| {
        Command::new(program)
            .args(args)
            .current_dir(&root)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let ok = run(Path::new("python3"), &["-m", "venv", ".ci/venv"])
        && run(
            &venv.join("bin/pip"),
            &[
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                ".ci/requirements.txt",
            ],
        );
    if !ok {
        eprintln!("xtask: could not install .ci/requirements.txt (python3 with venv and PyPI access are needed)");
        return false;
    }
    std::fs::write(&stamp, wanted).is_ok()
}

fn test() -> bool {
    test_tools()
        && cargo(&["test", "--workspace", "--all-targets", "--locked"])
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
        .filter(|k| {
            ["receiver-", "processor-", "exporter-", "extension-"]
                .iter()
                .any(|kind| k.starts_with(kind))
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

/// VERSION, the workspace version, every crate's version, the builder
/// manifest and the changelog's top entry must agree.
fn release_check() -> bool {
    let root = root();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let version = read("VERSION").trim().to_string();
    let mut problems = vec![];
    if version.is_empty() {
        problems.push("VERSION is empty or missing".to_string());
    }
    let workspace = read("Cargo.toml");
    let ws_version = workspace
        .split("[workspace.package]")
        .nth(1)
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("version = \"")
                    .and_then(|r| r.strip_suffix('"'))
            })
        })
        .unwrap_or_default()
        .to_string();
    if ws_version != version {
        problems.push(format!(
            "Cargo.toml [workspace.package] version is `{ws_version}`, VERSION is `{version}`"
        ));
    }
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("Cargo.toml"))
        .collect();
    manifests.push(root.join("collector-bin/Cargo.toml"));
    for m in manifests {
        let text = std::fs::read_to_string(&m).unwrap_or_default();
        if !text.contains("version.workspace = true") {
            problems.push(format!(
                "{} does not take the workspace version",
                m.display()
            ));
        }
    }
    let changelog = read("CHANGELOG.md");
    let top = changelog
        .lines()
        .find_map(|l| l.strip_prefix("## [").and_then(|r| r.split(']').next()))
        .unwrap_or_default();
    if top != version {
        problems.push(format!(
            "CHANGELOG.md's top entry is `{top}`, VERSION is `{version}`"
        ));
    }
    let builder = read("configs/builder-config.yaml");
    if !builder
        .lines()
        .any(|l| l.trim() == format!("version: {version}"))
    {
        problems.push(format!(
            "configs/builder-config.yaml dist.version is not `{version}`"
        ));
    }
    for p in &problems {
        eprintln!("release-check: {p}");
    }
    if problems.is_empty() {
        eprintln!("release-check: version {version} agrees everywhere");
    }
    problems.is_empty()
}

/// Builds the image where a Docker engine answers; says so where none does.
fn docker() -> bool {
    let version = std::fs::read_to_string(root().join("VERSION"))
        .unwrap_or_default()
        .trim()
        .to_string();
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match engine {
        Ok(o) if o.status.success() => {}
        _ => {
            eprintln!("xtask docker: no Docker engine is reachable here (`docker info` failed): the image was not built. Run `cargo xtask docker` where an engine runs, or `docker build -t otelcol-multitudes:{version} .`");
            return false;
        }
    }
    let tag = format!("otelcol-multitudes:{version}");
    eprintln!("xtask docker: building {tag}");
    Command::new("docker")
        .current_dir(root())
        .args(["build", "-t", &tag, "."])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `bench [--quick] [bench args]`: builds the collector and the bench tools
/// (release; debug for `--quick`, which only checks totals under load) and
/// runs the end-to-end bench; a full run writes BENCHMARKS.md.
fn bench(args: &[String]) -> bool {
    let quick = args.iter().any(|a| a == "--quick");
    let mut build = vec![
        "build",
        "--locked",
        "-p",
        "otelcol-multitudes",
        "-p",
        "otelcol-bench",
    ];
    if !quick {
        build.push("--release");
    }
    if !cargo(&build) {
        return false;
    }
    let dir = root()
        .join("target")
        .join(if quick { "debug" } else { "release" });
    let mut cmd = Command::new(dir.join("bench"));
    cmd.current_dir(root())
        .arg("--collector")
        .arg(dir.join("otelcol-multitudes"));
    for a in args {
        if a == "--vs-rotel" {
            let Some(rotel) = rotel_agent() else {
                return false;
            };
            cmd.arg("--rotel").arg(rotel);
        } else {
            cmd.arg(a);
        }
    }
    match cmd.status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("xtask bench: cannot run the bench: {e}");
            false
        }
    }
}

/// The `rotel-agent` binary of the pinned rotel wheel in .ci/venv
/// (installed with the other test tools).
fn rotel_agent() -> Option<PathBuf> {
    if !test_tools() {
        return None;
    }
    let lib = root().join(".ci/venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.flatten()
            .map(|d| d.path().join("site-packages/rotel/rotel-agent"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!(
            "xtask bench: no rotel/rotel-agent under {} (.ci/requirements.txt pins rotel)",
            lib.display()
        );
    }
    found
}

/// `loadgen ARGS` / `sink ARGS`: the release tool with its own arguments.
fn tool(name: &str, args: &[String]) -> bool {
    let mut run = vec![
        "run",
        "--release",
        "--locked",
        "-q",
        "-p",
        "otelcol-bench",
        "--bin",
        name,
        "--",
    ];
    run.extend(args.iter().map(String::as_str));
    cargo(&run)
}

fn ci() -> bool {
    release_check()
        && cargo(&["fmt", "--all", "--", "--check"])
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
        && bench(&["--quick".to_string()])
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
    let (out, name) = match dist::generate(&root(), &manifest) {
        Ok(generated) => generated,
        Err(e) => {
            eprintln!("xtask dist: {e}");
            return false;
        }
    };
    eprintln!("xtask dist: generated {}", out.display());
    let target = root().join("target");
    let target = target.to_string_lossy().into_owned();
    let debug = args.iter().any(|a| a == "--debug");
    let mut build = vec!["build", "--manifest-path", "Cargo.toml"];
    if !debug {
        build.push("--release");
    }
    if !cargo_in(Some(&out), &build, &[("CARGO_TARGET_DIR", &target)]) {
        return false;
    }
    let built = root()
        .join("target")
        .join(if debug { "debug" } else { "release" })
        .join(&name);
    let dest = out.join(&name);
    match std::fs::copy(&built, &dest) {
        Ok(_) => {
            eprintln!("xtask dist: built {}", dest.display());
            true
        }
        Err(e) => {
            eprintln!(
                "xtask dist: cannot copy {} to {}: {e}",
                built.display(),
                dest.display()
            );
            false
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ok = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(),
        Some("test-tools") => test_tools(),
        Some("bench") => bench(&args[1..]),
        Some("loadgen") => tool("loadgen", &args[1..]),
        Some("sink") => tool("sink", &args[1..]),
        Some("check-features") => check_features(),
        Some("dist") => dist(&args[1..]),
        Some("release-check") => release_check(),
        Some("docker") => docker(),
        Some("fuzz") => fuzz::fuzz(&root(), &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|test|test-tools|bench|loadgen|sink|check-features|dist|release-check|docker|fuzz>\n  ci              release-check, fmt --check, clippy -D warnings, check-features, then all tests\n  test            all tests (unit, integration, doc), after test-tools\n  test-tools      install .ci/requirements.txt into .ci/venv (moto, pyarrow, kubernetes-validate)\n  bench [--quick] the end-to-end bench (release; writes BENCHMARKS.md); --quick: debug build, checks totals in = out under load; --vs-rotel: side by side with rotel's blackhole (its block of BENCHMARKS.md)\n  loadgen ARGS    the OTLP load generator (--help for its arguments)\n  sink ARGS       the counting OTLP/HTTP sink\n  check-features  cargo check of the binary with each component alone\n  dist --manifest FILE [--debug]  build a distribution from a builder manifest\n  release-check   VERSION, crate versions, the builder manifest and CHANGELOG.md agree\n  docker          build the image otelcol-multitudes:<VERSION> (needs a Docker engine)\n  fuzz [--target T] [--seconds N] [--seeds]  the cargo-fuzz targets under libFuzzer (stable, --sanitizer none)"
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
