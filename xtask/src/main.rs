//! Project automation: `cargo xtask <task>`.
//!
//! - `ci`: what CI runs after installing tools: `cargo fmt --check`,
//!   `cargo clippy --all-targets -- -D warnings`, then the test suite.
//! - `test`: the test suite alone (the README's test command runs this).

use std::process::{Command, ExitCode};

fn cargo(args: &[&str]) -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    match Command::new(cargo).args(args).status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            false
        }
    }
}

fn test() -> bool {
    cargo(&["test", "--workspace", "--all-targets", "--locked"])
        && cargo(&["test", "--workspace", "--doc", "--locked"])
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
        && test()
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let ok = match task.as_str() {
        "ci" => ci(),
        "test" => test(),
        _ => {
            eprintln!("usage: cargo xtask <ci|test>\n  ci    fmt --check, clippy -D warnings, then all tests\n  test  all tests (unit, integration, doc)");
            return ExitCode::from(2);
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
