//! Replays every fuzz corpus and regression input (`test/fuzz/corpus/<target>/`,
//! `test/fuzz/regressions/<target>/`) through the fuzz targets' own checks, so plain
//! `cargo test` catches a regression on any input the fuzzer ever kept, without the fuzzer
//! or a nightly feature. See `docs/fuzzing.md`.
//!
//! A missing or empty corpus fails (it means the corpus was lost, not that there is
//! nothing to check); a failing input is named by its file.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("listing a corpus directory").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target`'s check on every input; returns how many ran.
fn replay(target: &str) -> usize {
    let (_, check) = harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let corpus = inputs(&fuzz_dir().join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "the corpus of fuzz target {target} (test/fuzz/corpus/{target}) is missing or empty"
    );
    let regressions = inputs(&fuzz_dir().join("regressions").join(target));
    let mut failed = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let bytes = std::fs::read(path).expect("reading a corpus file");
        if std::panic::catch_unwind(|| check(&bytes)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz target {target} fails on {} input(s) (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run \
         --fuzz-dir test/fuzz {target} <file>):\n{}",
        failed.len(),
        failed.join("\n")
    );
    corpus.len() + regressions.len()
}

#[test]
fn every_target_has_a_corpus_and_a_fuzz_target_file() {
    for (target, _) in harness::TARGETS {
        let source = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        let text = std::fs::read_to_string(&source)
            .unwrap_or_else(|error| panic!("{}: {error}", source.display()));
        assert!(
            text.contains(&format!("netclaim_fuzz::{target}(data)")),
            "{} does not run netclaim_fuzz::{target}",
            source.display()
        );
    }
}

#[test]
fn config_corpus_replays() {
    assert!(replay("config") > 0);
}

#[test]
fn cni_list_corpus_replays() {
    assert!(replay("cni_list") > 0);
}

#[test]
fn cni_policy_corpus_replays() {
    assert!(replay("cni_policy") > 0);
}

#[test]
fn cni_result_corpus_replays() {
    assert!(replay("cni_result") > 0);
}

#[test]
fn nri_mux_corpus_replays() {
    assert!(replay("nri_mux") > 0);
}

#[test]
fn nri_ttrpc_corpus_replays() {
    assert!(replay("nri_ttrpc") > 0);
}

#[test]
fn checkpoint_corpus_replays() {
    assert!(replay("checkpoint") > 0);
}
