//! Every input a fuzzer crashed or hung on, kept under `fuzz/regressions/<target>/` once fixed,
//! replayed through the same body the fuzz target runs (`reg_tests::fuzz_checks`). Stable
//! toolchain, no libFuzzer: a failing file is named before its check runs.

use std::path::{Path, PathBuf};

use reg_tests::fuzz_checks::TARGETS;

fn regressions() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions")
}

#[track_caller]
fn replay(target: &str) {
    let (_, check) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a fuzz target of that name");
    let dir = regressions().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in &files {
        eprintln!("replaying {}", f.display());
        check(&std::fs::read(f).expect("readable regression file"));
    }
    eprintln!("{target}: {} regression inputs", files.len());
}

#[test]
fn dockerfile() {
    replay("dockerfile");
}

#[test]
fn manifest() {
    replay("manifest");
}

#[test]
fn reference() {
    replay("reference");
}

#[test]
fn range() {
    replay("range");
}

#[test]
fn unpack() {
    replay("unpack");
}

#[test]
fn dockerignore() {
    replay("dockerignore");
}

#[test]
fn agent_json() {
    replay("agent_json");
}

#[test]
fn every_regression_directory_is_a_target() {
    for e in std::fs::read_dir(regressions())
        .expect("fuzz/regressions")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/regressions/{name} names no target"
        );
    }
}
