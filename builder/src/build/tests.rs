//! Hostile trees and archives against the layer assembly; heredoc scripts; scratch dirs and
//! their cleanup through `build()` on a store of temp dirs.

#![allow(clippy::disallowed_methods)] // the tests make their trees in temp dirs of their own

use std::io::Seek;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reg_registry::digest::Digest;
use reg_untrusted::{Node, Tree};

use super::api::{BaseImage, Image, LayerRef, Log, Options, RunStep, StepRunner, Store};
use super::archive::{archive_kind, extract, Archive};
use super::error::{BuildError, Leftover};
use super::run::script;
use super::tree::{copy_tree, mirror_dirs, CopyOpts};
use crate::dockerfile::HereDoc;
use crate::fsview::View;

/// A host dir a hostile source points at, with what it held.
struct Victim(tempfile::TempDir);

impl Victim {
    fn new() -> Victim {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("keep.txt"), "host").expect("victim file");
        Victim(d)
    }
    #[track_caller]
    fn assert_untouched(&self) {
        let names: Vec<_> = std::fs::read_dir(self.0.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["keep.txt"]);
        let text = std::fs::read_to_string(self.0.path().join("keep.txt")).expect("read");
        assert_eq!(text, "host");
    }
}

/// Copy options that need no root: the files become ours.
fn mine() -> CopyOpts {
    let me = tempfile::tempfile()
        .expect("file")
        .metadata()
        .expect("stat");
    CopyOpts {
        chown: Some((me.uid(), me.gid())),
        chmod: None,
        keep_owner: false,
    }
}

#[test]
fn copy_never_writes_through_a_symlink_from_an_earlier_source() {
    let victim = Victim::new();
    let src = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(src.path().join("a")).expect("a");
    std::fs::create_dir_all(src.path().join("b/sub")).expect("b");
    std::os::unix::fs::symlink(victim.0.path(), src.path().join("a/sub")).expect("plant");
    std::fs::write(src.path().join("b/sub/keep.txt"), "PWNED").expect("b file");
    let view = View::new(vec![src.path().into()]).expect("view");
    let out = tempfile::tempdir().expect("tempdir");
    let layer = Tree::open_strict(out.path()).expect("layer");
    mirror_dirs(&view, &layer, "out").expect("dest");
    copy_tree(&view, "a", &layer, "out", &mine()).expect("the link is copied as a link");
    let err = copy_tree(&view, "b", &layer, "out", &mine())
        .expect_err("refused")
        .to_string();
    assert!(
        err.starts_with("cannot copy to non-directory: /out/sub"),
        "{err}"
    );
    victim.assert_untouched();
    let link = std::fs::read_link(out.path().join("out/sub")).expect("still a link");
    assert_eq!(link, victim.0.path());
}

#[test]
fn special_sources_are_made_anew_never_opened() {
    let src = tempfile::tempdir().expect("tempdir");
    let t = Tree::open(src.path()).expect("tree");
    // Opening the FIFO for reading would block the copy forever.
    t.mknod("fifo", Node::Fifo, 0o640).expect("fifo");
    let view = View::new(vec![src.path().into()]).expect("view");
    let out = tempfile::tempdir().expect("tempdir");
    let layer = Tree::open_strict(out.path()).expect("layer");
    copy_tree(&view, "fifo", &layer, "copy", &mine()).expect("copied");
    let m = std::fs::symlink_metadata(out.path().join("copy")).expect("there");
    assert!(m.file_type().is_fifo());
    assert_eq!(m.mode() & 0o7777, 0o640);
}

/// A tar of `entries` (path, symlink target or file content).
fn archive(entries: &[(&str, Result<&str, &str>)]) -> std::fs::File {
    let mut b = tar::Builder::new(tempfile::tempfile().expect("file"));
    for (path, what) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        // set_path refuses `..`: the name's bytes as a hostile archive would have them.
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        let content = match what {
            Ok(link) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name(link).expect("link");
                ""
            }
            Err(content) => {
                h.set_entry_type(tar::EntryType::Regular);
                content
            }
        };
        h.set_size(content.len() as u64);
        h.set_cksum();
        b.append(&h, content.as_bytes()).expect("append");
    }
    let mut f = b.into_inner().expect("tar");
    f.rewind().expect("rewind");
    f
}

#[test]
fn archives_never_write_through_a_symlink_they_planted() {
    let victim = Victim::new();
    let v = victim.0.path().to_str().expect("utf-8");
    let out = tempfile::tempdir().expect("tempdir");
    let layer = Tree::open_strict(out.path()).expect("layer");
    let mut f = archive(&[("link", Ok(v)), ("link/keep.txt", Err("PWNED"))]);
    assert!(matches!(archive_kind(&mut f), Some(Archive::Tar)));
    let err = extract(f, Archive::Tar, &layer, "opt")
        .expect_err("refused")
        .to_string();
    assert!(err.contains("/opt/link/keep.txt: a symlink"), "{err}");
    victim.assert_untouched();
    // `..` is refused too; a file replaces a link an earlier entry made.
    let f = archive(&[("../../escape", Err("x"))]);
    let err = extract(f, Archive::Tar, &layer, "opt")
        .expect_err("refused")
        .to_string();
    assert!(err.contains(".. in its path"), "{err}");
    let f = archive(&[("l", Ok(v)), ("l", Err("mine"))]);
    extract(f, Archive::Tar, &layer, "").expect("extracts");
    assert_eq!(
        std::fs::read_to_string(out.path().join("l")).expect("a file now"),
        "mine"
    );
    victim.assert_untouched();
}

#[test]
fn heredoc_scripts() {
    let h = |body: &str, expand| HereDoc {
        expand,
        body: body.into(),
    };
    assert_eq!(script("", &[h("echo hi\n", true)]), "echo hi\n");
    assert_eq!(
        script(" sh", &[h("echo $X\n", false)]),
        "sh <<'REG_HEREDOC_0'\necho $X\nREG_HEREDOC_0"
    );
    assert_eq!(script("echo a", &[]), "echo a");
}

/// What the fakes refuse to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(&'static str);

/// A store of temp dirs: no images, tmp paths numbered under `<dir>/tmp`.
struct TmpStore {
    dir: tempfile::TempDir,
    n: AtomicUsize,
}

impl Store for TmpStore {
    type Error = Refused;

    async fn base(&self, _: &str, _: Log) -> Result<BaseImage, Refused> {
        Err(Refused("no images in this store"))
    }
    fn snapshot(&self, chain_id: &Digest) -> PathBuf {
        self.dir.path().join("snapshots").join(chain_id.hex())
    }
    fn has_layer(&self, _: &LayerRef, _: &Digest) -> bool {
        false
    }
    fn tmp(&self, what: &str) -> PathBuf {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join("tmp").join(format!("{what}-{n}"))
    }
    fn add_layer(&self, _: &Path, _: &LayerRef, _: &Path, _: &Digest) -> Result<(), Refused> {
        Err(Refused("no layers in this store"))
    }
    fn save(&self, _: &[String], _: &Image) -> Result<(), Refused> {
        Ok(())
    }
}

struct NoRunner;

impl StepRunner for NoRunner {
    type Error = Refused;

    async fn run(&self, _: RunStep, _: Log) -> Result<i32, Refused> {
        Err(Refused("no step runs here"))
    }
}

/// Builds `dockerfile` (an empty context, no cache) on a [`TmpStore`]: the store and the result.
async fn build_on_tmp(dockerfile: &str) -> (TmpStore, Result<Image, BuildError>) {
    let store = TmpStore {
        dir: tempfile::tempdir().expect("tempdir"),
        n: AtomicUsize::new(0),
    };
    let context_dir = store.dir.path().join("context");
    std::fs::create_dir(&context_dir).expect("context");
    let context = crate::context::Context {
        dir: context_dir,
        digests: Default::default(),
        dockerfile: None,
    };
    let df = crate::dockerfile::parse("Dockerfile", dockerfile).expect("parses");
    let opts = Options {
        file: "Dockerfile".into(),
        build_args: Default::default(),
        target: None,
        no_cache: true,
        compression: crate::layer::Compression::Gzip,
        epoch: 0,
        tags: Vec::new(),
        cache_dir: store.dir.path().join("cache"),
    };
    let res = super::build(&store, &NoRunner, &df, &context, &opts, Arc::new(|_| {})).await;
    (store, res)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_mount_leaves_no_scratch_dir_of_the_mounts_before_it() {
    let (store, res) = build_on_tmp(
        "FROM scratch\nRUN --mount=type=tmpfs,target=/a --mount=type=nope,target=/b true\n",
    )
    .await;
    let err = res.expect_err("refused").to_string();
    assert!(
        err.starts_with("Dockerfile:2: RUN: --mount type=nope is not supported"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(store.dir.path().join("tmp"))
        .expect("the tmpfs dir was made")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_step_leaves_no_scratch_dir() {
    let (store, res) = build_on_tmp("FROM scratch\nRUN --mount=type=tmpfs,target=/a true\n").await;
    let err = res.expect_err("refused").to_string();
    assert_eq!(err, "Dockerfile:2: RUN: no step runs here");
    let left: Vec<_> = std::fs::read_dir(store.dir.path().join("tmp"))
        .expect("scratch dirs were made")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_failed_cleanup_is_reported_after_the_failure() {
    let e = BuildError::Cleanup {
        error: Box::new(BuildError::Cycle),
        cleanup: vec![Leftover {
            path: "/data/tmp/step-1".into(),
            error: std::io::Error::other("device busy"),
        }],
    };
    assert_eq!(
        e.to_string(),
        "stages depend on each other in a cycle; cleaning up failed too: \
         removing /data/tmp/step-1: device busy"
    );
}
