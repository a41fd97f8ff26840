//! A layer directory (the node's snapshot form: overlay whiteouts, opaque xattrs) → an OCI layer
//! blob, in one pass: entries in byte order of their paths, numeric owners without names, no
//! xattrs, modification times clamped to `SOURCE_DATE_EPOCH`, gzip without a timestamp — so the
//! same tree always gives the same bytes. Whiteouts become `.wh.NAME`, opaque directories
//! `.wh..wh..opq`. The diff id (uncompressed) and the digest (compressed) are hashed on the way.
//!
//! The directory's content is not ours (a RUN's upper dir holds what the step wrote, device
//! nodes and symlinks included): it is read through a strict [`Tree`], symlinks are stored as
//! symlinks, and only regular files are ever opened.

#![deny(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use reg_registry::digest::{Algorithm, Digest, Hasher};
use reg_untrusted::Tree;

use crate::fsview::{is_opaque, is_whiteout};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    pub fn parse(s: &str) -> Result<Compression, UnknownCompression> {
        match s {
            "gzip" | "" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            o => Err(UnknownCompression(o.to_string())),
        }
    }
}

/// A compression other than gzip or zstd (as asked for).
#[derive(Debug, thiserror::Error)]
#[error("unknown compression {0:?}: use gzip or zstd")]
pub struct UnknownCompression(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
}

struct HashWriter<W> {
    inner: W,
    hasher: Hasher,
    n: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hw<W: Write>(inner: W) -> HashWriter<W> {
    HashWriter {
        inner,
        hasher: Hasher::new(Algorithm::Sha256),
        n: 0,
    }
}

/// Creates the blob file `out`.
#[allow(clippy::disallowed_methods)] // trusted: `out` is a fresh path in the store's tmp dir
fn create_blob(out: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::create(out)
}

/// Owners of a user namespace's files on the host (`uid..uid+size`, `gid..gid+size`): written
/// into a layer as the namespace's own ids, 0 up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdShift {
    pub uid: u32,
    pub gid: u32,
    pub size: u32,
}

/// What every header of a layer is stamped with: mtimes capped at `epoch`, owners shifted back.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    epoch: u64,
    ids: Option<IdShift>,
}

/// Writes the layer of `dir` to `out`.
pub fn write(dir: &Path, out: &Path, c: Compression, epoch: u64) -> std::io::Result<Written> {
    write_shifted(dir, out, c, epoch, None)
}

/// [`write()`] of a directory written by a user namespace's processes: its owners in `ids` are
/// written as that namespace's ids (an id outside the range as it is).
pub fn write_shifted(
    dir: &Path,
    out: &Path,
    c: Compression,
    epoch: u64,
    ids: Option<IdShift>,
) -> std::io::Result<Written> {
    let epoch = Stamp { epoch, ids };
    let tree = Tree::open_strict(dir)?;
    let file = std::io::BufWriter::with_capacity(1 << 20, create_blob(out)?);
    let compressed = hw(file);
    let (diff_id, compressed) = match c {
        Compression::Gzip => {
            // Level 1: layers are built on every cold build; the bytes differ little.
            let enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(compressed, flate2::Compression::fast());
            let mut tar = tar::Builder::new(hw(enc));
            tar.mode(tar::HeaderMode::Complete);
            tar.follow_symlinks(false);
            append_tree(&mut tar, &tree, epoch)?;
            let raw = tar.into_inner()?;
            (raw.hasher.finish(), raw.inner.finish()?)
        }
        Compression::Zstd => {
            let mut enc = zstd::Encoder::new(compressed, 3)?;
            enc.include_checksum(false)?;
            let mut tar = tar::Builder::new(hw(enc));
            tar.follow_symlinks(false);
            append_tree(&mut tar, &tree, epoch)?;
            let raw = tar.into_inner()?;
            (raw.hasher.finish(), raw.inner.finish()?)
        }
    };
    let mut file = compressed.inner;
    file.flush()?;
    let size = compressed.n;
    let digest = compressed.hasher.finish();
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(Written {
        digest,
        diff_id,
        size,
    })
}

/// A device number's major and minor (Linux's encoding in `dev_t`).
pub(crate) fn dev_parts(rdev: u64) -> (u64, u64) {
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff);
    (major, minor)
}

fn header(m: &std::fs::Metadata, kind: tar::EntryType, epoch: Stamp) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(m.mode() & 0o7777);
    let (mut uid, mut gid) = (m.uid(), m.gid());
    if let Some(ids) = epoch.ids {
        if (ids.uid..ids.uid.saturating_add(ids.size)).contains(&uid) {
            uid -= ids.uid;
        }
        if (ids.gid..ids.gid.saturating_add(ids.size)).contains(&gid) {
            gid -= ids.gid;
        }
    }
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(gid));
    h.set_mtime(u64::try_from(m.mtime()).unwrap_or(0).min(epoch.epoch));
    h.set_size(0);
    h
}

fn empty_file(_epoch: Stamp) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_size(0);
    h
}

fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    tree: &Tree,
    epoch: Stamp,
) -> std::io::Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    append_dir(tar, tree, Path::new(""), epoch, &mut links)
}

/// `parent/prefix+name` (or `prefix+name` at the root): the tar names of whiteouts.
fn prefixed(rel: &Path, prefix: &str, name: &OsString) -> PathBuf {
    let mut n = OsString::from(prefix);
    n.push(name);
    rel.join(n)
}

/// Depth first in name order, as `filepath.Walk` (BuildKit, docker) writes layers.
fn append_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    tree: &Tree,
    rel: &Path,
    epoch: Stamp,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> std::io::Result<()> {
    for name in tree.read_dir(rel)? {
        let path = rel.join(&name);
        let h = tree.resolve_nofollow(&path)?;
        let m = reg_untrusted::metadata(&h)?;
        let ft = m.file_type();
        if is_whiteout(&m) {
            let wh = prefixed(rel, ".wh.", &name);
            tar.append_data(&mut empty_file(epoch), wh, std::io::empty())?;
        } else if ft.is_dir() {
            let mut h2 = header(&m, tar::EntryType::Directory, epoch);
            let mut slash = path.clone().into_os_string();
            slash.push("/");
            tar.append_data(&mut h2, slash, std::io::empty())?;
            if is_opaque(&h) {
                tar.append_data(
                    &mut empty_file(epoch),
                    path.join(".wh..wh..opq"),
                    std::io::empty(),
                )?;
            }
            drop(h);
            append_dir(tar, tree, &path, epoch, links)?;
        } else if ft.is_symlink() {
            let target = tree.read_link(&path)?;
            let mut h = header(&m, tar::EntryType::Symlink, epoch);
            tar.append_link(&mut h, &path, target)?;
        } else if ft.is_file() {
            let key = (m.dev(), m.ino());
            if m.nlink() > 1 {
                if let Some(first) = links.get(&key) {
                    let mut h = header(&m, tar::EntryType::Link, epoch);
                    tar.append_link(&mut h, &path, first)?;
                    continue;
                }
                links.insert(key, path.clone());
            }
            // The header from the inode that is read, so size and bytes agree.
            let f = crate::fsview::open_regular(&h)?;
            let m = f.metadata()?;
            let mut h = header(&m, tar::EntryType::Regular, epoch);
            h.set_size(m.len());
            tar.append_data(&mut h, &path, f.take(m.len()))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            };
            let mut h = header(&m, kind, epoch);
            let (major, minor) = dev_parts(m.rdev());
            h.set_device_major(u32::try_from(major).unwrap_or(0))?;
            h.set_device_minor(u32::try_from(minor).unwrap_or(0))?;
            tar.append_data(&mut h, &path, std::io::empty())?;
        }
        // Sockets are not part of a filesystem image.
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests make their trees in temp dirs of their own
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("b/c")).expect("mkdir");
        std::fs::write(d.path().join("a"), "x").expect("write");
        std::fs::write(d.path().join("b/c/d"), "y".repeat(5000)).expect("write");
        std::os::unix::fs::symlink("/a", d.path().join("l")).expect("symlink");
        d
    }

    #[test]
    fn the_same_tree_gives_the_same_digest_whatever_the_mtimes() {
        let out = tempfile::tempdir().expect("tempdir");
        let t = tree();
        for c in [Compression::Gzip, Compression::Zstd] {
            let one = write(t.path(), &out.path().join("1"), c, 0).expect("writes");
            let f = std::fs::File::options()
                .write(true)
                .open(t.path().join("a"))
                .expect("open");
            f.set_modified(std::time::SystemTime::now()).expect("touch");
            let two = write(t.path(), &out.path().join("2"), c, 0).expect("writes");
            assert_eq!(one, two);
            let bytes = std::fs::read(out.path().join("1")).expect("read");
            assert_eq!(Digest::sha256_of(&bytes), one.digest);
            assert_eq!(bytes.len() as u64, one.size);
        }
    }

    #[test]
    fn entries_are_sorted_depth_first_with_numeric_owners() {
        let out = tempfile::tempdir().expect("tempdir");
        let t = tree();
        write(t.path(), &out.path().join("l"), Compression::Gzip, 0).expect("writes");
        let f = std::fs::File::open(out.path().join("l")).expect("open");
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut names = Vec::new();
        for e in ar.entries().expect("entries") {
            let e = e.expect("entry");
            assert_eq!(e.header().mtime().expect("mtime"), 0);
            assert!(e
                .header()
                .username()
                .ok()
                .flatten()
                .unwrap_or("")
                .is_empty());
            names.push(e.path().expect("path").to_string_lossy().into_owned());
        }
        assert_eq!(names, ["a", "b/", "b/c/", "b/c/d", "l"]);
    }

    #[test]
    fn special_files_and_symlinks_are_recorded_never_opened() {
        let out = tempfile::tempdir().expect("tempdir");
        let t = tempfile::tempdir().expect("tempdir");
        let tree = Tree::open_strict(t.path()).expect("tree");
        // Opening a FIFO would block forever; a symlink to a host file must stay a link.
        tree.mknod("fifo", reg_untrusted::Node::Fifo, 0o600)
            .expect("fifo");
        tree.symlink("passwd", "/etc/passwd").expect("symlink");
        write(t.path(), &out.path().join("l"), Compression::Gzip, 0).expect("writes");
        let f = std::fs::File::open(out.path().join("l")).expect("open");
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut got = Vec::new();
        for e in ar.entries().expect("entries") {
            let e = e.expect("entry");
            let link = e
                .link_name()
                .ok()
                .flatten()
                .map(|l| l.display().to_string());
            got.push((
                e.path().expect("path").display().to_string(),
                e.header().entry_type(),
                e.size(),
                link,
            ));
        }
        assert_eq!(
            got,
            [
                ("fifo".to_string(), tar::EntryType::Fifo, 0, None),
                (
                    "passwd".to_string(),
                    tar::EntryType::Symlink,
                    0,
                    Some("/etc/passwd".to_string())
                ),
            ]
        );
    }
}
