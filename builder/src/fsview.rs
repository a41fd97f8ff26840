//! A read-only view of a root filesystem made of snapshot directories (bottom first), in the
//! form the node keeps them: overlay whiteouts (0/0 character devices) and opaque directories
//! (`trusted.overlay.opaque`). The build context is a view of one directory. Paths are
//! `/`-separated and relative to the view's root; symlinks resolve *inside* the root, the way
//! they would in the container, so no lookup ever leaves the view.
//!
//! Every look at a layer goes through a strict [`Tree`] (fd-relative, no symlink followed):
//! the content of a snapshot or of the context copy is someone else's, and a device node or a
//! FIFO in it is only ever looked at, never opened ([`Entry::open`] takes regular files only).

#![deny(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;

use reg_untrusted::Tree;

/// A path of a [`View`] that does not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{path}: too many levels of symbolic links")]
    Loop { path: String },
    #[error("{path}: {source}")]
    ReadLink { path: String, source: io::Error },
}

#[derive(Debug, Clone)]
pub struct View {
    layers: Vec<Layer>,
}

/// One directory of the view, opened once.
#[derive(Debug, Clone)]
struct Layer {
    dir: PathBuf,
    tree: Arc<Tree>,
}

/// One entry of the view: where it is and its metadata (`lstat`).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The host path that holds it: only for handing to the kernel as a whole (a bind mount
    /// of a snapshot, which nobody changes). Never open or stat it by path: [`Entry::open`],
    /// [`Entry::read_link`].
    pub host: PathBuf,
    pub meta: Metadata,
    tree: Arc<Tree>,
    rel: String,
}

impl Entry {
    /// Opens the entry for reading if it is a regular file; a device node, a FIFO or a
    /// symlink is refused before anything is opened.
    pub fn open(&self) -> io::Result<File> {
        open_regular(&self.tree.resolve_nofollow(&self.rel)?)
    }

    /// The target of the entry, a symlink, as stored.
    pub fn read_link(&self) -> io::Result<PathBuf> {
        self.tree.read_link(&self.rel)
    }
}

enum InLayer {
    Present(Metadata),
    Absent,
    /// Deleted or hidden here: lower layers do not count.
    Gone,
}

pub fn is_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Opens the regular file behind the handle `h` for reading. Its type is checked through `h`
/// first (an inode's type never changes), so a device node, a FIFO or a symlink is refused
/// before anything is opened (`reg_untrusted::open_regular`, through the magic link).
pub fn open_regular(h: &reg_untrusted::Handle) -> io::Result<File> {
    reg_untrusted::open_regular(h)
}

/// The names in the directory behind the handle `dir` with their `lstat`: `fstatat` relative
/// to the opened directory, one name each, never followed — one syscall an entry.
#[allow(clippy::disallowed_methods)] // the magic link of a handle checked to be a directory
fn dir_entries(dir: &reg_untrusted::Handle) -> io::Result<Vec<(OsString, Metadata)>> {
    if !reg_untrusted::metadata(dir)?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory",
        ));
    }
    std::fs::read_dir(reg_untrusted::fd_path(&dir.as_fd()))?
        .map(|e| e.and_then(|e| Ok((e.file_name(), e.metadata()?))))
        .collect()
}

/// Whether the directory behind `fd` (a [`reg_untrusted::Handle`]) is opaque.
#[allow(clippy::disallowed_methods)] // the magic link names exactly the inode behind `fd`
pub fn is_opaque(fd: &impl AsFd) -> bool {
    let path = reg_untrusted::fd_path(&fd.as_fd());
    matches!(xattr::get_deref(path, "trusted.overlay.opaque"), Ok(Some(v)) if v == b"y")
}

fn components(rel: &str) -> Vec<&str> {
    rel.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// The most a file read for a lookup (`/etc/passwd`, `/etc/group`) may hold.
const MAX_ID_FILE: u64 = 16 << 20;

impl View {
    /// The view of `layers` (bottom first); each must be a directory.
    pub fn new(layers: Vec<PathBuf>) -> io::Result<View> {
        let layers = layers
            .into_iter()
            .map(|dir| match Tree::open_strict(&dir) {
                Ok(t) => Ok(Layer {
                    tree: Arc::new(t),
                    dir,
                }),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("opening {}: {e}", dir.display()),
                )),
            })
            .collect::<io::Result<_>>()?;
        Ok(View { layers })
    }

    /// What layer `l` says about `comps` (without following symlinks).
    fn in_layer(l: &Layer, comps: &[&str]) -> (InLayer, bool) {
        let mut rel = String::new();
        let mut stop_below = false;
        for (i, c) in comps.iter().enumerate() {
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(c);
            let Some((h, m)) = l
                .tree
                .resolve_nofollow(&rel)
                .and_then(|h| reg_untrusted::metadata(&h).map(|m| (h, m)))
                .ok()
            else {
                return (InLayer::Absent, stop_below);
            };
            if is_whiteout(&m) {
                return (InLayer::Gone, true);
            }
            let last = i + 1 == comps.len();
            if last {
                return (InLayer::Present(m), stop_below);
            }
            if !m.is_dir() {
                // A file or symlink replaced a parent directory here.
                return (InLayer::Gone, true);
            }
            if is_opaque(&h) {
                stop_below = true;
            }
        }
        // The root itself.
        match reg_untrusted::metadata(&l.tree.root_fd()) {
            Ok(m) => (InLayer::Present(m), false),
            Err(_) => (InLayer::Absent, false),
        }
    }

    /// The entry at `rel` (symlinks not followed).
    pub fn find(&self, rel: &str) -> Option<Entry> {
        let comps = components(rel);
        for l in self.layers.iter().rev() {
            let (state, stop) = Self::in_layer(l, &comps);
            match state {
                InLayer::Present(meta) => {
                    let mut host = l.dir.clone();
                    host.extend(&comps);
                    return Some(Entry {
                        host,
                        meta,
                        tree: l.tree.clone(),
                        rel: comps.join("/"),
                    });
                }
                InLayer::Gone => return None,
                InLayer::Absent if stop => return None,
                InLayer::Absent => {}
            }
        }
        None
    }

    /// The names in directory `rel`, merged across layers, sorted.
    pub fn list(&self, rel: &str) -> Vec<String> {
        self.entries(rel).into_iter().map(|(n, _)| n).collect()
    }

    /// The entries of directory `rel`, merged across layers, sorted by name: what [`View::find`]
    /// would say of each name, without walking the parents again for each.
    pub fn entries(&self, rel: &str) -> Vec<(String, Entry)> {
        let comps = components(rel);
        let rel = comps.join("/");
        let mut found: BTreeMap<String, Option<Entry>> = BTreeMap::new();
        // Top layer first: the first word on a name (present or whited out) wins.
        for l in self.merged(&comps).into_iter().rev() {
            let Ok(dir) = l.tree.resolve_nofollow(&rel) else {
                continue;
            };
            for (name, meta) in dir_entries(&dir).into_iter().flatten() {
                let name = name.to_string_lossy().into_owned();
                found.entry(name).or_insert_with_key(|name| {
                    (!is_whiteout(&meta)).then(|| {
                        let mut host = l.dir.clone();
                        host.extend(&comps);
                        host.push(name);
                        Entry {
                            host,
                            meta,
                            tree: l.tree.clone(),
                            rel: if rel.is_empty() {
                                name.clone()
                            } else {
                                format!("{rel}/{name}")
                            },
                        }
                    })
                });
            }
        }
        found
            .into_iter()
            .filter_map(|(n, e)| e.map(|e| (n, e)))
            .collect()
    }

    /// The layers whose copies of the directory `comps` make the merged one (bottom first).
    fn merged(&self, comps: &[&str]) -> Vec<&Layer> {
        let mut found = Vec::new();
        for l in self.layers.iter().rev() {
            let (state, stop) = Self::in_layer(l, comps);
            match state {
                InLayer::Present(m) if m.is_dir() => {
                    let opaque = l
                        .tree
                        .resolve_nofollow(comps.join("/"))
                        .is_ok_and(|h| is_opaque(&h));
                    found.push(l);
                    if stop || opaque {
                        break;
                    }
                }
                InLayer::Present(_) | InLayer::Gone => break,
                InLayer::Absent if stop => break,
                InLayer::Absent => {}
            }
        }
        found.reverse();
        found
    }

    /// The directories whose overlay is the merged directory `rel` (bottom first): each
    /// layer's copy of it, down to where a layer hides what lies below. Whiteouts and opaque
    /// directories further down the tree stay in them for the overlay to honour.
    pub fn merged_dirs(&self, rel: &str) -> Vec<PathBuf> {
        let comps = components(rel);
        self.merged(&comps)
            .into_iter()
            .map(|l| {
                let mut dir = l.dir.clone();
                dir.extend(&comps);
                dir
            })
            .collect()
    }

    /// Resolves `rel` with every symlink followed inside the root (the last one only with
    /// `follow_last`); `..` never climbs above the root. Returns the clean relative path.
    pub fn resolve(&self, rel: &str, follow_last: bool) -> Result<String, ResolveError> {
        let mut todo: Vec<String> = components(rel)
            .into_iter()
            .rev()
            .map(str::to_string)
            .collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == ".." {
                cur.pop();
                continue;
            }
            cur.push(c);
            let last = todo.is_empty();
            if last && !follow_last {
                break;
            }
            let joined = cur.join("/");
            let Some(e) = self.find(&joined) else {
                continue;
            };
            if !e.meta.file_type().is_symlink() {
                continue;
            }
            hops += 1;
            if hops > 40 {
                return Err(ResolveError::Loop {
                    path: rel.to_string(),
                });
            }
            let target = e
                .read_link()
                .map_err(|source| ResolveError::ReadLink {
                    path: rel.to_string(),
                    source,
                })?
                .to_string_lossy()
                .into_owned();
            cur.pop();
            if target.starts_with('/') {
                cur.clear();
            }
            for t in components(&target).into_iter().rev() {
                todo.push(t.to_string());
            }
        }
        Ok(cur.join("/"))
    }

    /// Looks `name` up in the view's `/etc/passwd` (`user`) or `/etc/group`: its numeric id.
    /// Only a regular file is read (a FIFO or a device there would block or never end).
    pub fn lookup_id(&self, file: &str, name: &str) -> Option<u32> {
        let e = self.find(&self.resolve(file, true).ok()?)?;
        let mut text = String::new();
        e.open()
            .ok()?
            .take(MAX_ID_FILE)
            .read_to_string(&mut text)
            .ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[0] == name)
                .then(|| f[2].parse().ok())
                .flatten()
        })
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests make their layers in temp dirs of their own
mod tests {
    use super::*;
    use std::path::Path;

    fn layer(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for (p, content) in files {
            let path = d.path().join(p);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            if let Some(target) = content.strip_prefix("->") {
                std::os::unix::fs::symlink(target, &path).expect("symlink");
            } else if p.ends_with('/') {
                std::fs::create_dir_all(&path).expect("mkdir");
            } else {
                std::fs::write(&path, content).expect("write");
            }
        }
        d
    }

    #[test]
    fn merged_dirs_stop_where_a_layer_hides_the_ones_below() {
        let a = layer(&[("app/x", "1"), ("other/", "")]);
        let b = layer(&[("app/y", "2")]);
        let v = View::new(vec![a.path().into(), b.path().into()]).expect("view");
        assert_eq!(
            v.merged_dirs("app"),
            [a.path().join("app"), b.path().join("app")]
        );
        // A file where the directory was hides every lower copy.
        let c = layer(&[("app", "now a file")]);
        let d = layer(&[("app/z", "3")]);
        let v = View::new(vec![
            a.path().into(),
            b.path().into(),
            c.path().into(),
            d.path().into(),
        ])
        .expect("view");
        assert_eq!(v.merged_dirs("app"), [d.path().join("app")]);
        assert_eq!(v.merged_dirs("other"), [a.path().join("other")]);
        assert!(v.merged_dirs("none").is_empty());
    }

    #[test]
    fn upper_layers_win_and_listings_merge() {
        let a = layer(&[("etc/a", "1"), ("etc/b", "lower")]);
        let b = layer(&[("etc/b", "upper"), ("etc/c", "3")]);
        let v = View::new(vec![a.path().into(), b.path().into()]).expect("view");
        let e = v.find("etc/b").expect("found");
        assert_eq!(std::fs::read_to_string(e.host).expect("read"), "upper");
        assert_eq!(v.list("etc"), ["a", "b", "c"]);
        assert!(v.find("etc/none").is_none());
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let a = layer(&[
            ("real/f", "x"),
            ("abs", "->/real"),
            ("rel", "->real"),
            ("up", "->../../../real"),
            ("loop", "->loop"),
        ]);
        let v = View::new(vec![a.path().into()]).expect("view");
        assert_eq!(v.resolve("abs/f", true).ok().as_deref(), Some("real/f"));
        assert_eq!(v.resolve("rel/f", true).ok().as_deref(), Some("real/f"));
        assert_eq!(v.resolve("up/f", true).ok().as_deref(), Some("real/f"));
        assert_eq!(
            v.resolve("../../etc/passwd", true).ok().as_deref(),
            Some("etc/passwd")
        );
        assert_eq!(v.resolve("abs", false).ok().as_deref(), Some("abs"));
        assert!(v.resolve("loop", true).is_err());
    }

    #[test]
    fn ids_come_from_the_views_passwd() {
        let a = layer(&[(
            "etc/passwd",
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n",
        )]);
        let v = View::new(vec![a.path().into()]).expect("view");
        assert_eq!(v.lookup_id("etc/passwd", "app"), Some(1000));
        assert_eq!(v.lookup_id("etc/passwd", "nobody"), None);
    }

    #[test]
    fn special_files_are_looked_at_never_opened() {
        let a = layer(&[("etc/", "")]);
        let fifo = a.path().join("etc/passwd");
        nix_mkfifo(&fifo);
        let v = View::new(vec![a.path().into()]).expect("view");
        // A FIFO as /etc/passwd: opening it would block the build forever.
        assert_eq!(v.lookup_id("etc/passwd", "root"), None);
        let e = v.find("etc/passwd").expect("found");
        assert!(e.meta.file_type().is_fifo());
        let err = e.open().expect_err("refused");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn lookups_never_leave_a_layer() {
        let outside = layer(&[("secret", "host file")]);
        let a = layer(&[("dir/", "")]);
        let name = outside.path().file_name().expect("name").to_string_lossy();
        let v = View::new(vec![a.path().into()]).expect("view");
        assert!(v.find(&format!("../{name}/secret")).is_none());
        // A symlink inside a layer is an entry, never a way through.
        std::os::unix::fs::symlink(outside.path(), a.path().join("dir/out")).expect("link");
        assert!(v.find("dir/out/secret").is_none());
        assert!(v.list("dir/out").is_empty());
        let e = v.find("dir/out").expect("the link itself");
        assert!(e.open().is_err());
        assert_eq!(e.read_link().expect("target"), outside.path());
    }

    fn nix_mkfifo(p: &Path) {
        let dir = p.parent().expect("parent");
        let tree = Tree::open(dir).expect("tree");
        let name = p.file_name().expect("name");
        tree.mknod(name, reg_untrusted::Node::Fifo, 0o644)
            .expect("mkfifo");
    }
}
