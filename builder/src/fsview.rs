//! A read-only view of a root filesystem made of snapshot directories (bottom first), in the
//! form the node keeps them: overlay whiteouts (0/0 character devices) and opaque directories
//! (`trusted.overlay.opaque`). The build context is a view of one directory. Paths are
//! `/`-separated and relative to the view's root; symlinks resolve *inside* the root, the way
//! they would in the container, so no lookup ever leaves the view.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct View {
    layers: Vec<PathBuf>,
}

/// One entry of the view: the host path that holds it and its metadata.
#[derive(Debug, Clone)]
pub struct Entry {
    pub host: PathBuf,
    pub meta: std::fs::Metadata,
}

enum InLayer {
    Present(std::fs::Metadata),
    Absent,
    /// Deleted or hidden here: lower layers do not count.
    Gone,
}

pub fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

pub fn is_opaque(path: &Path) -> bool {
    matches!(xattr::get(path, "trusted.overlay.opaque"), Ok(Some(v)) if v == b"y")
}

fn components(rel: &str) -> Vec<&str> {
    rel.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

impl View {
    pub fn new(layers: Vec<PathBuf>) -> View {
        View { layers }
    }

    /// What layer `l` says about `comps` (without following symlinks).
    fn in_layer(l: &Path, comps: &[&str]) -> (InLayer, bool) {
        let mut p = l.to_path_buf();
        let mut stop_below = false;
        for (i, c) in comps.iter().enumerate() {
            p.push(c);
            let Ok(m) = std::fs::symlink_metadata(&p) else {
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
            if is_opaque(&p) {
                stop_below = true;
            }
        }
        // The root itself.
        match std::fs::symlink_metadata(l) {
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
                    let mut host = l.clone();
                    host.extend(&comps);
                    return Some(Entry { host, meta });
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
        let mut names: BTreeMap<String, bool> = BTreeMap::new();
        // Top layer first: the first word on a name (present or whited out) wins.
        for dir in self.merged_dirs(rel).iter().rev() {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let gone = e.metadata().map(|m| is_whiteout(&m)).unwrap_or(false);
                names.entry(name).or_insert(!gone);
            }
        }
        names
            .into_iter()
            .filter_map(|(n, visible)| visible.then_some(n))
            .collect()
    }

    /// The directories whose overlay is the merged directory `rel` (bottom first): each
    /// layer's copy of it, down to where a layer hides what lies below. Whiteouts and opaque
    /// directories further down the tree stay in them for the overlay to honour.
    pub fn merged_dirs(&self, rel: &str) -> Vec<PathBuf> {
        let comps = components(rel);
        let mut dirs = Vec::new();
        for l in self.layers.iter().rev() {
            let (state, stop) = Self::in_layer(l, &comps);
            match state {
                InLayer::Present(m) if m.is_dir() => {
                    let mut dir = l.clone();
                    dir.extend(&comps);
                    let last = stop || is_opaque(&dir);
                    dirs.push(dir);
                    if last {
                        break;
                    }
                }
                InLayer::Present(_) | InLayer::Gone => break,
                InLayer::Absent if stop => break,
                InLayer::Absent => {}
            }
        }
        dirs.reverse();
        dirs
    }

    /// Resolves `rel` with every symlink followed inside the root (the last one only with
    /// `follow_last`); `..` never climbs above the root. Returns the clean relative path.
    pub fn resolve(&self, rel: &str, follow_last: bool) -> Result<String, String> {
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
                return Err(format!("{rel}: too many levels of symbolic links"));
            }
            let target = std::fs::read_link(&e.host)
                .map_err(|err| format!("{rel}: {err}"))?
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
    pub fn lookup_id(&self, file: &str, name: &str) -> Option<u32> {
        let e = self.find(&self.resolve(file, true).ok()?)?;
        let text = std::fs::read_to_string(e.host).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[0] == name)
                .then(|| f[2].parse().ok())
                .flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let v = View::new(vec![a.path().into(), b.path().into()]);
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
        ]);
        assert_eq!(v.merged_dirs("app"), [d.path().join("app")]);
        assert_eq!(v.merged_dirs("other"), [a.path().join("other")]);
        assert!(v.merged_dirs("none").is_empty());
    }

    #[test]
    fn upper_layers_win_and_listings_merge() {
        let a = layer(&[("etc/a", "1"), ("etc/b", "lower")]);
        let b = layer(&[("etc/b", "upper"), ("etc/c", "3")]);
        let v = View::new(vec![a.path().into(), b.path().into()]);
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
        let v = View::new(vec![a.path().into()]);
        assert_eq!(v.resolve("abs/f", true).as_deref(), Ok("real/f"));
        assert_eq!(v.resolve("rel/f", true).as_deref(), Ok("real/f"));
        assert_eq!(v.resolve("up/f", true).as_deref(), Ok("real/f"));
        assert_eq!(
            v.resolve("../../etc/passwd", true).as_deref(),
            Ok("etc/passwd")
        );
        assert_eq!(v.resolve("abs", false).as_deref(), Ok("abs"));
        assert!(v.resolve("loop", true).is_err());
    }

    #[test]
    fn ids_come_from_the_views_passwd() {
        let a = layer(&[(
            "etc/passwd",
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n",
        )]);
        let v = View::new(vec![a.path().into()]);
        assert_eq!(v.lookup_id("etc/passwd", "app"), Some(1000));
        assert_eq!(v.lookup_id("etc/passwd", "nobody"), None);
    }
}
