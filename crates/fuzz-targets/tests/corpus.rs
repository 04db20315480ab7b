//! Every seed (`fuzz/corpus/<target>/`) and every crashing input ever found
//! (`fuzz/regressions/<target>/`) through its target, plus a few thousand
//! inputs from a fixed pseudo-random stream: none may panic.

use std::path::PathBuf;

use otelcol_fuzz_targets::TARGETS;

fn files(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    let mut out: Vec<(PathBuf, Vec<u8>)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn seeds_and_regressions_run_clean() {
    let mut seeds = 0;
    for (target, run) in TARGETS {
        for kind in ["corpus", "regressions"] {
            for (path, bytes) in files(kind, target) {
                eprintln!("{target}: {}", path.display());
                run(&bytes);
                seeds += 1;
            }
        }
    }
    assert!(
        seeds >= 50,
        "the seed corpus is committed: found {seeds} inputs"
    );
}

#[test]
fn pseudo_random_inputs_run_clean() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (target, run) in TARGETS {
        let n = if *target == "grpc_request" { 200 } else { 2000 };
        for _ in 0..n {
            let len = (next() % 512) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            run(&bytes);
        }
    }
}
