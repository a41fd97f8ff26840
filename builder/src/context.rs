//! The build context on the agent's side: a copy of the client's directory kept between builds
//! (one per context id), brought up to date by what the client sends. The client first sends a
//! manifest (every path with its kind, mode, owner, size and mtime — after `.dockerignore`);
//! [`needed`] answers which regular files the copy lacks or has in another version; then a tar
//! stream carries the Dockerfile, the manifest and just those files, and [`apply`] writes them
//! (hashing each on the way, so COPY's cache keys cost no second read), removes what the
//! manifest no longer lists and records the new index. A warm rebuild moves no file bytes.
//!
//! Nothing is ever written through a symlink: the copy's tree is opened strict
//! ([`Tree::open_strict`], fd-relative, any symlink on a path refused), every parent of a
//! written path is made a real directory first (a symlink there is replaced), and paths with
//! `..` or a leading `/` are refused. Only `<root>/index.json` is opened by path: it is ours.

#![deny(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use reg_registry::digest::{Algorithm, Digest, Hasher};
use reg_untrusted::Tree;
use serde::{Deserialize, Serialize};

/// Where the client puts the Dockerfile in the context stream (it may be outside the context
/// or excluded by `.dockerignore`, and still has to travel).
pub const DOCKERFILE_ENTRY: &str = ".reg-build/Dockerfile";
/// Where the client puts the manifest (JSON array of [`Entry`]) in the stream.
pub const MANIFEST_ENTRY: &str = ".reg-build/manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// One path of the context as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    /// Nanoseconds since 1970 (change detection only; never part of a cache key).
    pub mtime: i128,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    entries: BTreeMap<String, (Entry, Option<String>)>,
}

#[derive(Debug)]
pub struct Context {
    pub dir: PathBuf,
    /// sha256 of each regular file's bytes, by relative path.
    pub digests: BTreeMap<String, Digest>,
    pub dockerfile: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("build context: path {path:?} would land outside the context")]
    Escape { path: String },
    #[error("build context: {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("build context: {0}")]
    Io(#[from] std::io::Error),
}

fn index_path(root: &Path) -> PathBuf {
    root.join("index.json")
}

/// The copy's tree under the context's root directory.
pub fn tree(root: &Path) -> PathBuf {
    root.join("tree")
}

#[allow(clippy::disallowed_methods)] // trusted: the index is ours, beside the tree, never in it
fn load(root: &Path) -> Index {
    std::fs::read(index_path(root))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Replaces the index atomically, or (`None`) removes it.
#[allow(clippy::disallowed_methods)] // trusted: the index is ours, beside the tree, never in it
fn store(root: &Path, index: Option<&Index>) -> std::io::Result<()> {
    let path = index_path(root);
    let Some(index) = index else {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(index).map_err(|e| std::io::Error::other(e.to_string()))?,
    )?;
    std::fs::rename(&tmp, path)
}

/// Opens the copy's tree, making it first if needed.
#[allow(clippy::disallowed_methods)] // trusted: `<root>/tree` is made by us, under our data dir
fn open_tree(root: &Path) -> std::io::Result<Tree> {
    let dir = tree(root);
    std::fs::create_dir_all(&dir)?;
    Tree::open_strict(dir)
}

fn check(path: &str) -> Result<String, ContextError> {
    let clean = crate::ignore::clean(path);
    if path.starts_with('/') || path.split('/').any(|c| c == "..") || clean.is_empty() {
        return Err(ContextError::Escape {
            path: path.to_string(),
        });
    }
    Ok(clean)
}

/// Whether `rel` is a regular file in the copy (never looking past a symlink).
fn is_file(t: &Tree, rel: &str) -> bool {
    t.symlink_metadata(rel)
        .ok()
        .flatten()
        .is_some_and(|m| m.is_file())
}

/// The regular files of `manifest` whose bytes the copy at `root` lacks.
pub fn needed(root: &Path, manifest: &[Entry]) -> Vec<String> {
    let index = load(root);
    let tree = Tree::open_strict(tree(root)).ok();
    manifest
        .iter()
        .filter(|e| e.kind == Kind::File)
        .filter(|e| match (index.entries.get(&e.path), &tree) {
            (Some((had, Some(_))), Some(t)) => {
                had != *e || !check(&e.path).is_ok_and(|rel| is_file(t, &rel))
            }
            _ => true,
        })
        .map(|e| e.path.clone())
        .collect()
}

/// Creates the parents of `rel` in the copy as real directories (a symlink or file on the way
/// is replaced, never followed).
fn parents(t: &Tree, rel: &str) -> Result<(), ContextError> {
    let comps: Vec<&str> = rel.split('/').collect();
    let mut cur = String::new();
    for c in &comps[..comps.len().saturating_sub(1)] {
        if !cur.is_empty() {
            cur.push('/');
        }
        cur.push_str(c);
        match t.symlink_metadata(&cur)? {
            Some(m) if m.is_dir() => {}
            Some(_) => {
                t.remove(&cur)?;
                t.mkdir(&cur, 0o755)?;
            }
            None => t.mkdir(&cur, 0o755)?,
        }
    }
    Ok(())
}

/// Removes whatever is at `rel` (file, symlink or tree).
fn clear(t: &Tree, rel: impl AsRef<Path>) -> std::io::Result<()> {
    t.remove_all(rel)
}

struct HashingReader<'a, R> {
    inner: R,
    hasher: &'a mut Hasher,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Brings the copy at `root` up to date from the stream `r` (see the module docs).
pub fn apply(r: impl Read, root: &Path) -> Result<Context, ContextError> {
    let t = open_tree(root)?;
    let old = load(root);
    // The index is rewritten at the end; a stream cut midway leaves a copy whose index is gone,
    // so the next build sends everything again rather than trusting a half-updated tree.
    let _ = store(root, None);
    let mut ar = tar::Archive::new(r);
    let mut dockerfile = None;
    let mut manifest: Option<Vec<Entry>> = None;
    let mut fresh: BTreeMap<String, Digest> = BTreeMap::new();
    for entry in ar.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        if raw == DOCKERFILE_ENTRY {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            dockerfile = Some(text);
            continue;
        }
        if raw == MANIFEST_ENTRY {
            let mut text = Vec::new();
            entry.read_to_end(&mut text)?;
            manifest = Some(
                serde_json::from_slice(&text).map_err(|e| ContextError::Invalid {
                    path: raw.clone(),
                    message: e.to_string(),
                })?,
            );
            continue;
        }
        let rel = check(&raw)?;
        if !entry.header().entry_type().is_file() {
            return Err(ContextError::Invalid {
                path: raw,
                message: "only regular files travel in the stream".into(),
            });
        }
        let d = write_file(&t, &rel, &mut entry)?;
        fresh.insert(rel, d);
    }
    let manifest = manifest.ok_or_else(|| ContextError::Invalid {
        path: MANIFEST_ENTRY.into(),
        message: "missing: is the client older than the agent?".into(),
    })?;
    reconcile(root, &t, &old, &manifest, &fresh, dockerfile)
}

/// The largest Dockerfile read from a whole context archive.
const MAX_DOCKERFILE: u64 = 4 << 20;

/// Replaces the copy at `root` with a whole context archive, as docker's classic builder takes
/// it (`POST /build`'s body: a tar, gzip-compressed or not, holding the Dockerfile at
/// `dockerfile`). Directories, regular files and symlinks; anything else is refused.
pub fn apply_archive(r: impl Read, root: &Path, dockerfile: &str) -> Result<Context, ContextError> {
    use std::io::BufRead;
    let mut r = std::io::BufReader::new(r);
    let gzip = r.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let r: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(r))
    } else {
        Box::new(r)
    };
    let t = open_tree(root)?;
    let old = load(root);
    let _ = store(root, None);
    let wanted_dockerfile = crate::ignore::clean(dockerfile.trim_start_matches("./"));
    let mut text = None;
    let mut manifest = Vec::new();
    let mut fresh: BTreeMap<String, Digest> = BTreeMap::new();
    let mut ar = tar::Archive::new(r);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let trimmed = raw.trim_start_matches("./").trim_end_matches('/');
        if trimmed.is_empty() || trimmed == "." {
            continue;
        }
        let rel = check(trimmed)?;
        let h = entry.header();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let mtime = i128::from(h.mtime().unwrap_or(0)) * 1_000_000_000;
        let kind = h.entry_type();
        let e = if kind.is_dir() {
            Entry {
                path: rel.clone(),
                kind: Kind::Dir,
                mode,
                size: 0,
                mtime,
                link: None,
            }
        } else if kind.is_symlink() {
            let link = entry
                .link_name()?
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            Entry {
                path: rel.clone(),
                kind: Kind::Symlink,
                mode,
                size: 0,
                mtime,
                link: Some(link),
            }
        } else if kind.is_file() {
            let size = entry.size();
            let d = if rel == wanted_dockerfile {
                if size > MAX_DOCKERFILE {
                    return Err(ContextError::Invalid {
                        path: raw,
                        message: format!("the Dockerfile is larger than {MAX_DOCKERFILE} bytes"),
                    });
                }
                let mut bytes = Vec::new();
                (&mut entry).take(MAX_DOCKERFILE).read_to_end(&mut bytes)?;
                text =
                    Some(
                        String::from_utf8(bytes.clone()).map_err(|_| ContextError::Invalid {
                            path: raw.clone(),
                            message: "the Dockerfile is not UTF-8".into(),
                        })?,
                    );
                write_file(&t, &rel, &mut bytes.as_slice())?
            } else {
                write_file(&t, &rel, &mut entry)?
            };
            fresh.insert(rel.clone(), d);
            Entry {
                path: rel.clone(),
                kind: Kind::File,
                mode,
                size,
                mtime,
                link: None,
            }
        } else {
            return Err(ContextError::Invalid {
                path: raw,
                message: "only directories, regular files and symlinks may be in a build context"
                    .into(),
            });
        };
        manifest.push(e);
    }
    let Some(text) = text else {
        return Err(ContextError::Invalid {
            path: dockerfile.to_string(),
            message: "Cannot locate specified Dockerfile in the context".into(),
        });
    };
    reconcile(root, &t, &old, &manifest, &fresh, Some(text))
}

/// Writes regular file `rel` from `r` (its parents made real directories first), hashing it.
fn write_file(t: &Tree, rel: &str, r: &mut impl Read) -> Result<Digest, ContextError> {
    parents(t, rel)?;
    clear(t, rel)?;
    let mut hasher = Hasher::new(Algorithm::Sha256);
    // Its mode is set from the manifest by `reconcile`.
    let mut f = t.create_file(rel, 0o600)?;
    std::io::copy(
        &mut HashingReader {
            inner: r,
            hasher: &mut hasher,
        },
        &mut f,
    )?;
    Ok(hasher.finish())
}

/// Makes the copy what `manifest` lists (files in `fresh` were just written; others are kept
/// from the `old` index), then records the new index.
fn reconcile(
    root: &Path,
    t: &Tree,
    old: &Index,
    manifest: &[Entry],
    fresh: &BTreeMap<String, Digest>,
    dockerfile: Option<String>,
) -> Result<Context, ContextError> {
    // Reconcile: what the manifest lists exists with its kind and mode, nothing else does.
    let mut implied = Vec::new();
    for e in manifest {
        let p = check(&e.path)?;
        let mut cur = p.as_str();
        while let Some((parent, _)) = cur.rsplit_once('/') {
            implied.push(Entry {
                path: parent.to_string(),
                kind: Kind::Dir,
                mode: 0o755,
                size: 0,
                mtime: 0,
                link: None,
            });
            cur = parent;
        }
    }
    let mut wanted: BTreeMap<String, &Entry> = BTreeMap::new();
    // Directories a listed path implies first; a listed entry wins over its implication.
    for e in implied.iter().chain(manifest) {
        wanted.insert(check(&e.path)?, e);
    }
    prune(t, "", &wanted)?;
    let mut index = Index::default();
    let mut digests = BTreeMap::new();
    for (rel, e) in &wanted {
        parents(t, rel)?;
        let digest = match e.kind {
            Kind::Dir => {
                if !t.symlink_metadata(rel)?.is_some_and(|m| m.is_dir()) {
                    clear(t, rel)?;
                    t.mkdir(rel, 0o755)?;
                }
                None
            }
            Kind::Symlink => {
                let link = e.link.clone().unwrap_or_default();
                let is_link = t
                    .symlink_metadata(rel)?
                    .is_some_and(|m| m.file_type().is_symlink());
                if !is_link || t.read_link(rel)?.to_string_lossy().into_owned() != link {
                    clear(t, rel)?;
                    t.symlink(rel, &link)?;
                }
                None
            }
            Kind::File => {
                let d = match fresh.get(rel) {
                    Some(d) => d.clone(),
                    None => old
                        .entries
                        .get(rel)
                        .and_then(|(_, d)| d.as_deref())
                        .and_then(|d| Digest::parse(d).ok())
                        .filter(|_| is_file(t, rel))
                        .ok_or_else(|| ContextError::Invalid {
                            path: rel.clone(),
                            message: "not sent and not in the agent's copy: build again".into(),
                        })?,
                };
                digests.insert(rel.clone(), d.clone());
                Some(d.to_string())
            }
        };
        if e.kind != Kind::Symlink {
            let h = t.resolve_nofollow(rel)?;
            reg_untrusted::set_mode(&h, e.mode & 0o7777)?;
        }
        index.entries.insert(rel.clone(), ((*e).clone(), digest));
    }
    store(root, Some(&index))?;
    Ok(Context {
        dir: tree(root),
        digests,
        dockerfile,
    })
}

/// Removes from the copy every path the manifest does not list (or lists as another kind).
fn prune(t: &Tree, rel: &str, wanted: &BTreeMap<String, &Entry>) -> std::io::Result<()> {
    for name in t.read_dir(rel)? {
        let at = Path::new(rel).join(&name);
        // A name that is not UTF-8 cannot be in the manifest: it goes.
        let path = at.to_str().map(str::to_string).unwrap_or_default();
        let Some(m) = t.symlink_metadata(&at)? else {
            continue;
        };
        let keep = match wanted.get(&path).map(|w| &w.kind) {
            Some(Kind::Dir) => m.is_dir(),
            Some(Kind::File) => m.is_file(),
            Some(Kind::Symlink) => m.file_type().is_symlink(),
            None => false,
        };
        if !keep {
            clear(t, &at)?;
        } else if m.is_dir() {
            prune(t, &path, wanted)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests make their copies in temp dirs of their own
mod tests {
    use super::*;

    fn file(path: &str, size: u64, mtime: i128) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File,
            mode: 0o644,
            size,
            mtime,
            link: None,
        }
    }

    fn stream(manifest: &[Entry], files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let m = serde_json::to_vec(manifest).expect("json");
        let mut all: Vec<(&str, &[u8])> =
            vec![(DOCKERFILE_ENTRY, b"FROM scratch\n"), (MANIFEST_ENTRY, &m)];
        all.extend_from_slice(files);
        for (p, data) in all {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; write the name bytes directly, as a hostile client would.
            let name = &mut h.as_old_mut().name;
            name[..p.len()].copy_from_slice(p.as_bytes());
            h.set_cksum();
            b.append(&h, data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn a_second_sync_sends_only_what_changed_and_removes_what_went() {
        let root = tempfile::tempdir().expect("tempdir");
        let m1 = vec![
            Entry {
                path: "d".into(),
                kind: Kind::Dir,
                mode: 0o755,
                size: 0,
                mtime: 0,
                link: None,
            },
            file("d/a", 2, 1),
            file("b", 1, 1),
        ];
        assert_eq!(needed(root.path(), &m1), ["d/a", "b"]);
        let c = apply(
            &stream(&m1, &[("d/a", b"hi"), ("b", b"x")])[..],
            root.path(),
        )
        .expect("applies");
        assert_eq!(c.dockerfile.as_deref(), Some("FROM scratch\n"));
        assert_eq!(c.digests["d/a"], Digest::sha256_of(b"hi"));

        // b changed, d/a did not, c is new; nothing else is asked for.
        let m2 = vec![
            m1[0].clone(),
            file("d/a", 2, 1),
            file("b", 2, 2),
            file("c", 1, 1),
        ];
        assert_eq!(needed(root.path(), &m2), ["b", "c"]);
        let c =
            apply(&stream(&m2, &[("b", b"yy"), ("c", b"z")])[..], root.path()).expect("applies");
        assert_eq!(c.digests["d/a"], Digest::sha256_of(b"hi"));
        assert_eq!(c.digests["b"], Digest::sha256_of(b"yy"));

        // d went: its files go with it.
        let m3 = vec![file("b", 2, 2)];
        assert!(needed(root.path(), &m3).is_empty());
        let c = apply(&stream(&m3, &[])[..], root.path()).expect("applies");
        assert!(!c.dir.join("d").exists() && !c.dir.join("c").exists());
        assert_eq!(c.digests.len(), 1);
    }

    #[test]
    fn nothing_is_written_outside_the_copy() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let m = vec![file("x", 1, 1)];
        let t = stream(&m, &[("../escape", b"x")]);
        assert!(matches!(
            apply(&t[..], root.path()),
            Err(ContextError::Escape { .. })
        ));
        // A symlink in the copy pointing out is replaced by a directory, never written through.
        let tree = tree(root.path());
        std::fs::create_dir_all(&tree).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), tree.join("link")).expect("symlink");
        let m = vec![file("link/f", 1, 1)];
        let t = stream(&m, &[("link/f", b"x")]);
        apply(&t[..], root.path()).expect("applies");
        assert!(!outside.path().join("f").exists());
        assert!(tree.join("link").is_dir());
    }

    fn archive(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if *kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l).expect("link name");
            }
            h.set_path(path).expect("path");
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn a_whole_docker_context_archive_becomes_the_copy_gzip_or_not() {
        use tar::EntryType as T;
        let tar = archive(&[
            ("./", T::Directory, b"", None),
            (
                "./Dockerfile",
                T::Regular,
                b"FROM scratch\nCOPY . /\n",
                None,
            ),
            ("./app/", T::Directory, b"", None),
            ("./app/main.sh", T::Regular, b"echo hi\n", None),
            ("./app/link", T::Symlink, b"", Some("main.sh")),
        ]);
        for gzip in [false, true] {
            let root = tempfile::tempdir().expect("tempdir");
            let body = if gzip {
                use std::io::Write;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&tar).expect("gzip");
                e.finish().expect("gzip")
            } else {
                tar.clone()
            };
            let c = apply_archive(body.as_slice(), root.path(), "Dockerfile").expect("apply");
            assert_eq!(c.dockerfile.as_deref(), Some("FROM scratch\nCOPY . /\n"));
            assert_eq!(
                std::fs::read(c.dir.join("app/main.sh")).expect("file"),
                b"echo hi\n"
            );
            assert_eq!(
                std::fs::read_link(c.dir.join("app/link")).expect("link"),
                Path::new("main.sh")
            );
            assert!(c.digests.contains_key("app/main.sh"));
            // A second, smaller context replaces the first.
            let smaller = archive(&[("Dockerfile", T::Regular, b"FROM scratch\n", None)]);
            let c = apply_archive(smaller.as_slice(), root.path(), "./Dockerfile").expect("apply");
            assert!(!c.dir.join("app").exists());
        }
    }

    #[test]
    fn hostile_or_incomplete_context_archives_are_refused() {
        use tar::EntryType as T;
        let root = tempfile::tempdir().expect("tempdir");
        let no_dockerfile = archive(&[("a", T::Regular, b"x", None)]);
        let e = apply_archive(no_dockerfile.as_slice(), root.path(), "Dockerfile")
            .expect_err("no Dockerfile");
        assert!(e.to_string().contains("Dockerfile"), "{e}");
        let fifo = archive(&[
            ("Dockerfile", T::Regular, b"FROM scratch\n", None),
            ("p", T::Fifo, b"", None),
        ]);
        assert!(apply_archive(fifo.as_slice(), root.path(), "Dockerfile").is_err());
        // A path with `..`: refused, nothing written beside the copy.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(T::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        let name = b"../escaped";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"x"[..]).expect("append");
        let bad = b.into_inner().expect("tar");
        assert!(apply_archive(bad.as_slice(), root.path(), "Dockerfile").is_err());
        assert!(!root.path().join("escaped").exists());
    }
}
