//! Unpacks one image layer (tar, tar+gzip or tar+zstd, detected by content) into an empty
//! snapshot directory, in the form overlayfs wants for a lower dir: OCI whiteouts (`.wh.NAME`)
//! become 0/0 character devices, opaque markers (`.wh..wh..opq`) the `trusted.overlay.opaque`
//! xattr.
//!
//! Security: every entry path is normalised inside the snapshot (`..` that climbs out is refused,
//! a leading `/` is the snapshot root) and written through the snapshot's strict
//! [`reg_untrusted::Tree`]: fd-relative, and the kernel refuses any symlink on the way, so a
//! layer cannot plant `x -> /etc` and then write `x/passwd`; owners, modes and times are set
//! through the new inode. Hard links must point at an entry of the same snapshot; whiteouts of
//! `.`, `..` or nothing are refused; device files, FIFOs and whiteouts are made as what they are
//! and need root (they are never opened). Each refusal names the layer and the path.

#![deny(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path};

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer {layer}: entry {path:?} refused: {why}")]
    Refused {
        layer: String,
        path: String,
        why: String,
    },
    #[error("layer {layer}: {path}: {source}")]
    Io {
        layer: String,
        path: String,
        source: std::io::Error,
    },
    #[error("layer {layer} is not a readable tar archive: {source}")]
    Format {
        layer: String,
        source: std::io::Error,
    },
}

/// How a layer is compressed, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn detect(magic: &[u8]) -> Compression {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// What an unpack wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub whiteouts: u64,
    /// Digest of the uncompressed tar stream, when asked for.
    pub diff_id: Option<reg_registry::Digest>,
}

/// Options of an unpack.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Running as root: ownership is restored, device files and whiteouts are created.
    pub root: bool,
    /// Hash the uncompressed stream (the layer's diff id) with this algorithm.
    pub diff_algorithm: Option<reg_registry::Algorithm>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            root: nix::unistd::geteuid().is_root(),
            diff_algorithm: None,
        }
    }
}

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hasher: Option<reg_registry::Hasher>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Unpacks the layer read from `input` into the existing, empty directory `dest`.
/// `layer` names the layer in errors (e.g. its digest).
pub fn unpack(
    input: impl Read,
    dest: &Path,
    layer: &str,
    opts: Options,
) -> Result<Stats, UnpackError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, input);
    let magic = buffered.fill_buf().map_err(|source| UnpackError::Format {
        layer: layer.to_string(),
        source,
    })?;
    let reader: Box<dyn Read> = match detect(magic) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(
            |source| UnpackError::Format {
                layer: layer.to_string(),
                source,
            },
        )?),
        Compression::None => Box::new(buffered),
    };
    let hashing = Hashing {
        inner: reader,
        hasher: opts.diff_algorithm.map(reg_registry::Hasher::new),
    };
    let mut archive = tar::Archive::new(hashing);
    // Entries are written by `Unpacker` through the snapshot's strict tree, never by the tar
    // crate's path-based unpack; ownership is applied leniently: an empty uid field means 0,
    // as Go's archive/tar reads it.
    let tree = reg_untrusted::Tree::open_strict(dest).map_err(|source| UnpackError::Io {
        layer: layer.to_string(),
        path: dest.display().to_string(),
        source,
    })?;
    let mut u = Unpacker {
        tree,
        layer,
        opts,
        stats: Stats::default(),
        dirs: std::collections::HashSet::new(),
    };
    let entries = archive.entries().map_err(|source| UnpackError::Format {
        layer: layer.to_string(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| UnpackError::Format {
            layer: layer.to_string(),
            source,
        })?;
        u.entry(entry)?;
    }
    let mut stats = u.stats;
    // The diff id covers the whole stream, including the padding after the end-of-archive.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|source| UnpackError::Format {
        layer: layer.to_string(),
        source,
    })?;
    stats.diff_id = rest.hasher.map(reg_registry::Hasher::finish);
    Ok(stats)
}

struct Unpacker<'a> {
    /// The snapshot being filled, strict: any symlink met on a path is refused by the kernel.
    tree: reg_untrusted::Tree,
    layer: &'a str,
    opts: Options,
    stats: Stats,
    /// Directories this unpack made or checked (a cache of lstat results only: the tree's
    /// strict resolution is what keeps writes inside, even if an entry was replaced since).
    dirs: std::collections::HashSet<String>,
}

/// Normalises a path from the archive to components inside the snapshot root.
fn normalise(raw: &Path) -> Result<Vec<String>, String> {
    let mut parts: Vec<String> = Vec::new();
    for c in raw.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err("its path climbs out of the layer with '..'".into());
                }
            }
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
        }
    }
    Ok(parts)
}

impl Unpacker<'_> {
    fn refused(&self, path: &str, why: impl Into<String>) -> UnpackError {
        UnpackError::Refused {
            layer: self.layer.to_string(),
            path: path.to_string(),
            why: why.into(),
        }
    }

    /// An I/O error on `rel`; a symlink the strict tree refused becomes a refusal naming it.
    fn io(&self, display: &str, rel: &str, source: std::io::Error) -> UnpackError {
        if reg_untrusted::is_symlink_refusal(&source) {
            return self.refused(display, "it would be written through a symlink");
        }
        UnpackError::Io {
            layer: self.layer.to_string(),
            path: rel.to_string(),
            source,
        }
    }

    /// Makes sure every parent of `parts` exists as a real directory (never a symlink) and
    /// returns the entry's path relative to the snapshot.
    fn prepare_parents(&mut self, display: &str, parts: &[String]) -> Result<String, UnpackError> {
        for i in 0..parts.len().saturating_sub(1) {
            let dir = parts[..=i].join("/");
            if self.dirs.contains(&dir) {
                continue;
            }
            match self.tree.symlink_metadata(&dir) {
                Ok(Some(m)) if m.file_type().is_symlink() => {
                    return Err(self.refused(
                        display,
                        format!("it would be written through the symlink {dir}"),
                    ))
                }
                Ok(Some(m)) if m.is_dir() => {}
                Ok(Some(_)) => {
                    return Err(
                        self.refused(display, format!("its parent {dir} is not a directory"))
                    )
                }
                Ok(None) => self
                    .tree
                    .mkdir(&dir, 0o755)
                    .map_err(|e| self.io(display, &dir, e))?,
                Err(e) => return Err(self.io(display, &dir, e)),
            }
            self.dirs.insert(dir);
        }
        Ok(parts.join("/"))
    }

    /// Removes whatever is at `rel` (never following a symlink), except a directory when
    /// `keep_dir`.
    fn clear(&mut self, display: &str, rel: &str, keep_dir: bool) -> Result<(), UnpackError> {
        match self.tree.symlink_metadata(rel) {
            Ok(Some(m)) if m.is_dir() && keep_dir => Ok(()),
            Ok(Some(m)) => {
                if m.is_dir() {
                    let below = format!("{rel}/");
                    self.dirs.retain(|d| d != rel && !d.starts_with(&below));
                }
                self.tree
                    .remove_all(rel)
                    .map_err(|e| self.io(display, rel, e))
            }
            Ok(None) => Ok(()),
            Err(e) => Err(self.io(display, rel, e)),
        }
    }

    /// Owner, then mode (a chown clears set-id bits), then mtime, all through the inode.
    fn finish_inode(
        &self,
        display: &str,
        rel: &str,
        fd: &impl std::os::fd::AsFd,
        header: &tar::Header,
    ) -> Result<(), UnpackError> {
        let io = |e| self.io(display, rel, e);
        if self.opts.root {
            let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
            reg_untrusted::set_owner(fd, uid as u32, gid as u32).map_err(io)?;
        }
        if header.entry_type() != tar::EntryType::Symlink {
            let mode = header.mode().unwrap_or(0o644) & 0o7777;
            reg_untrusted::set_mode(fd, mode).map_err(io)?;
            let mtime = header.mtime().unwrap_or(0).min(i64::MAX as u64) as i64;
            reg_untrusted::set_mtime(fd, mtime, 0).map_err(io)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path().map(|p| p.into_owned()).unwrap_or_default();
        let display = raw.display().to_string();
        let parts = normalise(&raw).map_err(|why| self.refused(&display, why))?;
        let Some(name) = parts.last().cloned() else {
            return Ok(()); // the root itself
        };
        self.stats.entries += 1;

        // Whiteouts.
        if name == ".wh..wh..opq" {
            if !self.opts.root {
                return Err(self.refused(
                    &display,
                    "opaque directories need root (trusted.overlay xattrs)",
                ));
            }
            let dir_parts = &parts[..parts.len() - 1];
            // Prepare "<dir>/x": that makes <dir> itself a real directory.
            let mut with_child = dir_parts.to_vec();
            with_child.push("x".into());
            self.prepare_parents(&display, &with_child)?;
            let dir = dir_parts.join("/");
            let f = self
                .tree
                .open_dir(&dir)
                .map_err(|e| self.io(&display, &dir, e))?;
            use xattr::FileExt;
            f.set_xattr("trusted.overlay.opaque", b"y")
                .map_err(|e| self.io(&display, &dir, e))?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if name.starts_with(".wh..wh.") {
            return Ok(()); // aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not content
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(self.refused(
                    &display,
                    format!("a whiteout of {hidden:?} names no entry of a directory"),
                ));
            }
            if !self.opts.root {
                return Err(self.refused(
                    &display,
                    "whiteouts need root (overlay whiteouts are 0/0 character devices)",
                ));
            }
            let mut target_parts = parts.clone();
            if let Some(last) = target_parts.last_mut() {
                *last = hidden.to_string();
            }
            let target = self.prepare_parents(&display, &target_parts)?;
            self.clear(&display, &target, false)?;
            self.tree
                .mknod(&target, reg_untrusted::Node::Char { major: 0, minor: 0 }, 0)
                .map_err(|e| self.io(&display, &target, e))?;
            self.stats.whiteouts += 1;
            return Ok(());
        }

        let rel = self.prepare_parents(&display, &parts)?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let io = |u: &Self, e| u.io(&display, &rel, e);
        match kind {
            tar::EntryType::Directory => {
                self.clear(&display, &rel, true)?;
                if !self.dirs.contains(&rel) {
                    match self.tree.mkdir(&rel, 0o755) {
                        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                            return Err(io(self, e))
                        }
                        _ => {}
                    }
                    self.dirs.insert(rel.clone());
                }
                let h = self.tree.resolve_nofollow(&rel).map_err(|e| io(self, e))?;
                self.finish_inode(&display, &rel, &h, &header)
            }
            tar::EntryType::Link => {
                let target_raw = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|p| p.into_owned())
                    .ok_or_else(|| self.refused(&display, "hard link without a target"))?;
                let target_parts = normalise(&target_raw).map_err(|why| {
                    self.refused(
                        &display,
                        format!("hard link target {}: {why}", target_raw.display()),
                    )
                })?;
                if target_parts.is_empty() {
                    return Err(self.refused(&display, "hard link to the layer root"));
                }
                let target = target_parts.join("/");
                let not_here = || {
                    self.refused(
                        &display,
                        format!(
                            "hard link target {} is not in this layer",
                            target_raw.display()
                        ),
                    )
                };
                let meta = match self.tree.symlink_metadata(&target) {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err(not_here()),
                    Err(e) if reg_untrusted::is_symlink_refusal(&e) => return Err(not_here()),
                    Err(e) => return Err(io(self, e)),
                };
                if meta.is_dir() {
                    return Err(self.refused(&display, "hard link to a directory"));
                }
                self.clear(&display, &rel, false)?;
                self.tree.hard_link(&rel, &target).map_err(|e| io(self, e))
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                if !self.opts.root {
                    return Err(self.refused(&display, "device files and fifos need root"));
                }
                self.clear(&display, &rel, false)?;
                let dev =
                    |n: std::io::Result<Option<u32>>| u64::from(n.ok().flatten().unwrap_or(0));
                let (major, minor) = (dev(header.device_major()), dev(header.device_minor()));
                let node = match kind {
                    tar::EntryType::Char => reg_untrusted::Node::Char { major, minor },
                    tar::EntryType::Block => reg_untrusted::Node::Block { major, minor },
                    _ => reg_untrusted::Node::Fifo,
                };
                self.tree
                    .mknod(&rel, node, 0o600)
                    .map_err(|e| io(self, e))?;
                let h = self.tree.resolve_nofollow(&rel).map_err(|e| io(self, e))?;
                self.finish_inode(&display, &rel, &h, &header)
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|p| p.into_owned())
                    .ok_or_else(|| self.refused(&display, "symlink without a target"))?;
                self.clear(&display, &rel, false)?;
                self.tree.symlink(&rel, &target).map_err(|e| io(self, e))?;
                let h = self.tree.resolve_nofollow(&rel).map_err(|e| io(self, e))?;
                self.finish_inode(&display, &rel, &h, &header)
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.clear(&display, &rel, false)?;
                let mut f = self
                    .tree
                    .create_file(&rel, 0o600)
                    .map_err(|e| io(self, e))?;
                std::io::copy(&mut entry, &mut f).map_err(|e| io(self, e))?;
                self.finish_inode(&display, &rel, &f, &header)
            }
            // pax/GNU metadata entries are consumed by the tar reader; anything else is skipped.
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests make and read their own temp dirs
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A tar entry with an arbitrary (possibly hostile) name, written as raw header bytes.
    enum E<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
        /// A character device, block device or FIFO with a mode.
        Node(&'a str, tar::EntryType, u32, u32, u32),
    }

    fn raw_header(name: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                old.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        h
    }

    fn layer(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            match e {
                E::File(n, d) => b.append(
                    &raw_header(n, tar::EntryType::Regular, d.len() as u64, None),
                    *d,
                ),
                E::Dir(n) => b.append(
                    &raw_header(n, tar::EntryType::Directory, 0, None),
                    std::io::empty(),
                ),
                E::Symlink(n, t) => b.append(
                    &raw_header(n, tar::EntryType::Symlink, 0, Some(t)),
                    std::io::empty(),
                ),
                E::Hardlink(n, t) => b.append(
                    &raw_header(n, tar::EntryType::Link, 0, Some(t)),
                    std::io::empty(),
                ),
                E::Node(n, kind, major, minor, mode) => {
                    let mut h = tar::Header::new_ustar();
                    h.set_path(n).expect("path");
                    h.set_entry_type(*kind);
                    h.set_size(0);
                    h.set_mtime(0);
                    h.set_device_major(*major).expect("major");
                    h.set_device_minor(*minor).expect("minor");
                    h.set_mode(*mode);
                    h.set_cksum();
                    b.append(&h, std::io::empty())
                }
            }
            .expect("append");
        }
        b.into_inner().expect("tar")
    }

    fn run(entries: &[E<'_>]) -> (tempfile::TempDir, Result<Stats, UnpackError>) {
        let outer = tempfile::tempdir().expect("tempdir");
        let dest = outer.path().join("snap");
        std::fs::create_dir(&dest).expect("dest");
        let r = unpack(
            &layer(entries)[..],
            &dest,
            "sha256:test",
            Options::default(),
        );
        (outer, r)
    }

    #[track_caller]
    fn refused(entries: &[E<'_>], path_in_error: &str) {
        let (outer, r) = run(entries);
        match r {
            Err(e @ UnpackError::Refused { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("sha256:test") && msg.contains(path_in_error),
                    "{msg}"
                );
            }
            other => panic!("expected a refusal naming {path_in_error}, got {other:?}"),
        }
        // Nothing was written outside the snapshot.
        let names: Vec<_> = std::fs::read_dir(outer.path())
            .expect("outer")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("snap")],
            "only the snapshot dir exists beside it"
        );
    }

    #[test]
    fn hostile_layers_are_refused() {
        refused(&[E::File("../escape", b"x")], "../escape");
        refused(&[E::File("a/../../escape", b"x")], "a/../../escape");
        refused(
            &[E::Symlink("evil", ".."), E::File("evil/escape", b"x")],
            "evil/escape",
        );
        refused(
            &[E::Symlink("abs", "/tmp"), E::File("abs/escape", b"x")],
            "abs/escape",
        );
        refused(
            &[
                E::Symlink("dangling", "/nonexistent/dir"),
                E::File("dangling/x", b"x"),
            ],
            "dangling/x",
        );
        refused(&[E::Hardlink("hl", "../outside")], "hl");
        refused(&[E::Hardlink("hl", "missing-in-layer")], "hl");
        refused(
            &[E::Symlink("d", "/etc"), E::Hardlink("hl", "d/passwd")],
            "hl",
        );
    }

    #[test]
    fn ordinary_layers_unpack() {
        let (outer, r) = run(&[
            E::Dir("bin/"),
            E::File("bin/tool", b"#!/bin/sh\n"),
            E::Symlink("bin/sh", "/bin/tool"),
            E::Hardlink("bin/tool2", "bin/tool"),
            E::File("/abs/rooted", b"a"),
            E::File("./dot/x", b"b"),
            E::File("deep/../flat", b"c"),
        ]);
        let stats = r.expect("unpacks");
        let d = outer.path().join("snap");
        assert_eq!(
            std::fs::read(d.join("bin/tool")).expect("tool"),
            b"#!/bin/sh\n"
        );
        assert_eq!(
            std::fs::read_link(d.join("bin/sh")).expect("link"),
            PathBuf::from("/bin/tool")
        );
        assert_eq!(
            std::fs::read(d.join("bin/tool2")).expect("hard link"),
            b"#!/bin/sh\n"
        );
        assert_eq!(std::fs::read(d.join("abs/rooted")).expect("rooted"), b"a");
        assert_eq!(std::fs::read(d.join("dot/x")).expect("dot"), b"b");
        assert_eq!(std::fs::read(d.join("flat")).expect("flat"), b"c");
        assert_eq!(stats.entries, 7);
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: whiteouts need root");
            return;
        }
        let (outer, r) = run(&[
            E::Dir("etc/"),
            E::File("etc/.wh.gone", b""),
            E::Dir("opaque/"),
            E::File("opaque/.wh..wh..opq", b""),
        ]);
        assert_eq!(r.expect("unpacks").whiteouts, 2);
        let d = outer.path().join("snap");
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::symlink_metadata(d.join("etc/gone")).expect("whiteout");
        assert!(m.file_type().is_char_device() && m.rdev() == 0);
        let opaque = xattr::get(d.join("opaque"), "trusted.overlay.opaque").expect("xattr");
        assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    }

    #[test]
    fn whiteouts_of_dot_and_dot_dot_are_refused_and_touch_nothing() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: whiteouts need root");
            return;
        }
        for name in [".wh...", "sub/.wh...", ".wh..", "sub/.wh."] {
            let (outer, r) = run(&[E::Dir("sub/"), E::File(name, b"")]);
            assert!(
                matches!(r, Err(UnpackError::Refused { .. })),
                "{name}: {r:?}"
            );
            // The snapshot's parent (the node's tmp dir in a pull) is untouched.
            assert!(outer.path().join("snap/sub").is_dir(), "{name}");
        }
    }

    #[test]
    fn devices_and_fifos_are_made_as_what_they_are() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: device nodes need root");
            return;
        }
        let (outer, r) = run(&[
            E::Node("dev/kmsg", tar::EntryType::Char, 1, 11, 0o600),
            E::Node("dev/sda", tar::EntryType::Block, 8, 0, 0o660),
            E::Node("run/pipe", tar::EntryType::Fifo, 0, 0, 0o620),
        ]);
        r.expect("unpacks");
        let d = outer.path().join("snap");
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::symlink_metadata(d.join("dev/kmsg")).expect("kmsg");
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), nix::sys::stat::makedev(1, 11));
        assert_eq!(m.mode() & 0o7777, 0o600);
        let m = std::fs::symlink_metadata(d.join("dev/sda")).expect("sda");
        assert!(m.file_type().is_block_device());
        assert_eq!(m.rdev(), nix::sys::stat::makedev(8, 0));
        let m = std::fs::symlink_metadata(d.join("run/pipe")).expect("fifo");
        assert!(m.file_type().is_fifo());
        assert_eq!(m.mode() & 0o7777, 0o620);
    }

    #[test]
    fn set_id_bits_survive_the_owner_change() {
        let mut h = raw_header("bin/su", tar::EntryType::Regular, 2, None);
        h.set_mode(0o4755);
        h.set_uid(0);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"#!"[..]).expect("append");
        let bytes = b.into_inner().expect("tar");
        let dir = tempfile::tempdir().expect("tempdir");
        unpack(&bytes[..], dir.path(), "l", Options::default()).expect("unpacks");
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir.path().join("bin/su")).expect("su");
        assert_eq!(m.mode() & 0o7777, 0o4755);
    }

    #[test]
    fn compression_is_detected_by_content() {
        let tar = layer(&[E::File("f", b"data")]);
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).expect("gz");
            e.finish().expect("gz")
        };
        let zst = zstd::encode_all(&tar[..], 3).expect("zstd");
        for (bytes, want) in [
            (&tar, Compression::None),
            (&gz, Compression::Gzip),
            (&zst, Compression::Zstd),
        ] {
            assert_eq!(detect(bytes), want);
            let dir = tempfile::tempdir().expect("tempdir");
            unpack(&bytes[..], dir.path(), "l", Options::default()).expect("unpacks");
            assert_eq!(std::fs::read(dir.path().join("f")).expect("f"), b"data");
        }
    }

    #[test]
    fn garbage_is_a_format_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = unpack(
            &[0x1f, 0x8b, 1, 2, 3][..],
            dir.path(),
            "sha256:bad",
            Options::default(),
        );
        assert!(matches!(r, Err(UnpackError::Format { .. })), "{r:?}");
    }
}
