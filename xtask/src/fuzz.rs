//! `cargo xtask fuzz [--target T] [--seconds N] [--seeds]`: the cargo-fuzz
//! targets of `fuzz/` under libFuzzer, on the stable toolchain
//! (`--sanitizer none`).
//!
//! Each target runs for N seconds (default 60) over a working corpus in
//! `fuzz/work/<target>` (not committed) plus the committed seeds in
//! `fuzz/corpus/<target>`, with a 1 GiB RSS limit and a 10 s per-input
//! timeout. Crashing, leaking or hanging inputs libFuzzer writes to
//! `fuzz/artifacts/<target>/` are copied to `fuzz/regressions/<target>/`,
//! where the normal test suite (`crates/fuzz-targets/tests/corpus.rs`)
//! replays them; the task then fails. `--seeds` rewrites the seed corpus
//! from `../shared/testdata` first. Needs `cargo install cargo-fuzz --locked`.

use std::path::Path;
use std::process::Command;

fn targets(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("fuzz/fuzz_targets"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".rs").map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Copies new artifacts of `target` into the regressions folder; returns how many.
fn keep_artifacts(root: &Path, target: &str) -> usize {
    let from = root.join("fuzz/artifacts").join(target);
    let to = root.join("fuzz/regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&from) else {
        return 0;
    };
    let mut kept = 0;
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        if std::fs::create_dir_all(&to).is_ok() && std::fs::copy(e.path(), to.join(&name)).is_ok() {
            eprintln!(
                "xtask fuzz: {target}: kept {} as a regression input",
                name.to_string_lossy()
            );
            kept += 1;
        }
        let _ = std::fs::remove_file(e.path());
    }
    kept
}

pub fn fuzz(root: &Path, args: &[String]) -> bool {
    let mut only: Option<String> = None;
    let mut seconds = 60u64;
    let mut seeds = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--target" => only = it.next().cloned(),
            "--seconds" => match it.next().and_then(|s| s.parse().ok()) {
                Some(n) => seconds = n,
                None => {
                    eprintln!("xtask fuzz: --seconds takes a whole number");
                    return false;
                }
            },
            "--seeds" => seeds = true,
            other => {
                eprintln!(
                    "xtask fuzz: unknown argument `{other}` (--target T, --seconds N, --seeds)"
                );
                return false;
            }
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let run = |args: &[&str]| {
        eprintln!("xtask: cargo {}", args.join(" "));
        Command::new(&cargo)
            .args(args)
            .current_dir(root)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if seeds
        && !run(&[
            "run",
            "-q",
            "-p",
            "otelcol-fuzz-targets",
            "--bin",
            "fuzz-seeds",
        ])
    {
        return false;
    }
    if !run(&["fuzz", "--version"]) {
        eprintln!("xtask fuzz: cargo-fuzz is missing: cargo install cargo-fuzz --locked");
        return false;
    }
    let all = targets(root);
    let chosen: Vec<String> = match only {
        Some(t) if all.contains(&t) => vec![t],
        Some(t) => {
            eprintln!("xtask fuzz: no target `{t}`; targets: {}", all.join(", "));
            return false;
        }
        None => all,
    };
    let mut found = 0;
    for t in &chosen {
        let work = format!("fuzz/work/{t}");
        let seeds = format!("fuzz/corpus/{t}");
        if std::fs::create_dir_all(root.join(&work)).is_err() {
            return false;
        }
        let time = format!("-max_total_time={seconds}");
        let ok = run(&[
            "fuzz",
            "run",
            t,
            "--sanitizer",
            "none",
            "--fuzz-dir",
            "fuzz",
            "-O",
            &work,
            &seeds,
            "--",
            &time,
            "-rss_limit_mb=1024",
            "-timeout=10",
            "-print_final_stats=1",
        ]);
        let kept = keep_artifacts(root, t);
        found += kept;
        eprintln!(
            "xtask fuzz: {t}: {} ({kept} inputs kept)",
            if ok { "no crash" } else { "FAILED" }
        );
    }
    found == 0
}
