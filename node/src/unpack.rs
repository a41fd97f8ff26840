//! Unpacks one image layer (tar, tar+gzip or tar+zstd, detected by content) into an empty
//! snapshot directory, in the form overlayfs wants for a lower dir: OCI whiteouts (`.wh.NAME`)
//! become 0/0 character devices, opaque markers (`.wh..wh..opq`) the `trusted.overlay.opaque`
//! xattr.
//!
//! Security: every entry path is normalised inside the snapshot (`..` that climbs out is refused,
//! a leading `/` is the snapshot root); no entry is ever written through a symlink (an existing
//! parent that is a symlink is refused, so a layer cannot plant `x -> /etc` and then write
//! `x/passwd`); hard links must point at an entry of the same snapshot; device files and whiteouts
//! need root. Each refusal names the layer and the path.

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

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
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    // Ownership is applied below, leniently: an empty uid field means 0, as Go's archive/tar reads it.
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let mut u = Unpacker {
        dest,
        layer,
        opts,
        stats: Stats::default(),
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
    dest: &'a Path,
    layer: &'a str,
    opts: Options,
    stats: Stats,
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

    fn io(&self, path: &Path, source: std::io::Error) -> UnpackError {
        UnpackError::Io {
            layer: self.layer.to_string(),
            path: path.display().to_string(),
            source,
        }
    }

    /// Makes sure every parent of `parts` exists as a real directory (never a symlink) and
    /// returns the full path of the entry.
    fn prepare_parents(&self, display: &str, parts: &[String]) -> Result<PathBuf, UnpackError> {
        let mut cur = self.dest.to_path_buf();
        for (i, p) in parts.iter().enumerate() {
            cur.push(p);
            if i + 1 == parts.len() {
                break;
            }
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.refused(
                        display,
                        format!(
                            "it would be written through the symlink {}",
                            parts[..=i].join("/")
                        ),
                    ))
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(self.refused(
                        display,
                        format!("its parent {} is not a directory", parts[..=i].join("/")),
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(&cur).map_err(|e| self.io(&cur, e))?;
                }
                Err(e) => return Err(self.io(&cur, e)),
            }
        }
        Ok(cur)
    }

    /// Removes whatever is at `path` (never following a symlink).
    fn clear(&self, path: &Path, keep_dir: bool) -> Result<(), UnpackError> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() && keep_dir => Ok(()),
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(|e| self.io(path, e)),
            Ok(_) => std::fs::remove_file(path).map_err(|e| self.io(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(path, e)),
        }
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
            let dir_parts = &parts[..parts.len() - 1];
            if !self.opts.root {
                return Err(self.refused(
                    &display,
                    "opaque directories need root (trusted.overlay xattrs)",
                ));
            }
            let dir = if dir_parts.is_empty() {
                self.dest.to_path_buf()
            } else {
                // Prepare "<dir>/x": that creates <dir> itself as a real directory.
                let mut with_child = dir_parts.to_vec();
                with_child.push("x".into());
                let p = self.prepare_parents(&display, &with_child)?;
                p.parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| self.dest.to_path_buf())
            };
            xattr::set(&dir, "trusted.overlay.opaque", b"y").map_err(|e| self.io(&dir, e))?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
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
            self.clear(&target, false)?;
            nix::sys::stat::mknod(
                &target,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o000),
                0,
            )
            .map_err(|e| self.io(&target, e.into()))?;
            self.stats.whiteouts += 1;
            return Ok(());
        }

        let full = self.prepare_parents(&display, &parts)?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                self.clear(&full, true)?;
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
                let target = self.prepare_parents(&display, &target_parts)?;
                let meta = std::fs::symlink_metadata(&target).map_err(|_| {
                    self.refused(
                        &display,
                        format!(
                            "hard link target {} is not in this layer",
                            target_raw.display()
                        ),
                    )
                })?;
                if meta.is_dir() {
                    return Err(self.refused(&display, "hard link to a directory"));
                }
                self.clear(&full, false)?;
                std::fs::hard_link(&target, &full).map_err(|e| self.io(&full, e))?;
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                if !self.opts.root {
                    return Err(self.refused(&display, "device files and fifos need root"));
                }
                self.clear(&full, false)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Symlink => {
                self.clear(&full, false)?;
            }
            // pax/GNU metadata entries are consumed by the tar reader; anything else is skipped.
            _ => return Ok(()),
        }
        let (uid, gid) = (
            entry.header().uid().unwrap_or(0),
            entry.header().gid().unwrap_or(0),
        );
        entry.unpack(&full).map_err(|e| self.io(&full, e))?;
        if self.opts.root {
            nix::unistd::fchownat(
                None,
                &full,
                Some(nix::unistd::Uid::from_raw(uid as u32)),
                Some(nix::unistd::Gid::from_raw(gid as u32)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.io(&full, e.into()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar entry with an arbitrary (possibly hostile) name, written as raw header bytes.
    enum E<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
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
