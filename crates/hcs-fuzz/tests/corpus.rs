//! Replays the committed corpus of every fuzz target (`fuzz/corpus/<target>/`) and every input
//! that once crashed one (`fuzz/regressions/<target>/`) through the target's body, on stable and
//! without libFuzzer, so `cargo test --workspace` keeps them passing.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `dir`, sorted; none when the directory does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target` over every corpus and regression input; returns how many ran and the failures.
fn replay(name: &str, target: hcs_fuzz::Target) -> (usize, Vec<String>) {
    let mut ran = 0;
    let mut failures = Vec::new();
    for kind in ["corpus", "regressions"] {
        for path in inputs(&fuzz_dir().join(kind).join(name)) {
            let data = std::fs::read(&path).expect("a readable corpus file");
            ran += 1;
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    (ran, failures)
}

#[test]
fn every_target_passes_its_corpus_and_regressions() {
    let mut failures = Vec::new();
    for &(name, target) in hcs_fuzz::TARGETS {
        let (ran, failed) = replay(name, target);
        assert!(
            !inputs(&fuzz_dir().join("corpus").join(name)).is_empty(),
            "fuzz/corpus/{name}/ is missing or empty"
        );
        eprintln!("{name}: {ran} inputs, {} failed", failed.len());
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "inputs that fail their target: {failures:#?}"
    );
}

#[test]
fn every_cargo_fuzz_target_calls_the_body_of_the_same_name() {
    for &(name, _) in hcs_fuzz::TARGETS {
        let path = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            source.contains(&format!("hcs_fuzz::{name}(")),
            "{} does not call hcs_fuzz::{name}",
            path.display()
        );
    }
}
