//! A layer directory (the node's snapshot form: overlay whiteouts, opaque xattrs) → an OCI layer
//! blob, in one pass: entries in byte order of their paths, numeric owners without names, no
//! xattrs, modification times clamped to `SOURCE_DATE_EPOCH`, gzip without a timestamp — so the
//! same tree always gives the same bytes. Whiteouts become `.wh.NAME`, opaque directories
//! `.wh..wh..opq`. The diff id (uncompressed) and the digest (compressed) are hashed on the way.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use reg_registry::digest::{Algorithm, Digest, Hasher};

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

    pub fn parse(s: &str) -> Result<Compression, String> {
        match s {
            "gzip" | "" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            o => Err(format!("unknown compression {o:?}: use gzip or zstd")),
        }
    }
}

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

/// Writes the layer of `dir` to `out`.
pub fn write(dir: &Path, out: &Path, c: Compression, epoch: u64) -> std::io::Result<Written> {
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
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
            append_tree(&mut tar, dir, epoch)?;
            let raw = tar.into_inner()?;
            (raw.hasher.finish(), raw.inner.finish()?)
        }
        Compression::Zstd => {
            let mut enc = zstd::Encoder::new(compressed, 3)?;
            enc.include_checksum(false)?;
            let mut tar = tar::Builder::new(hw(enc));
            tar.follow_symlinks(false);
            append_tree(&mut tar, dir, epoch)?;
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

fn header(m: &std::fs::Metadata, kind: tar::EntryType, epoch: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(m.mode() & 0o7777);
    h.set_uid(u64::from(m.uid()));
    h.set_gid(u64::from(m.gid()));
    h.set_mtime(u64::try_from(m.mtime()).unwrap_or(0).min(epoch));
    h.set_size(0);
    h
}

fn empty_file(_epoch: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_size(0);
    h
}

fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    epoch: u64,
) -> std::io::Result<()> {
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    append_dir(tar, root, "", epoch, &mut links)
}

/// Depth first in name order, as `filepath.Walk` (BuildKit, docker) writes layers.
fn append_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    rel: &str,
    epoch: u64,
    links: &mut HashMap<(u64, u64), String>,
) -> std::io::Result<()> {
    {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let mut names: Vec<String> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let host = root.join(&path);
            let m = std::fs::symlink_metadata(&host)?;
            let ft = m.file_type();
            if is_whiteout(&m) {
                let wh = match path.rsplit_once('/') {
                    Some((p, n)) => format!("{p}/.wh.{n}"),
                    None => format!(".wh.{name}"),
                };
                tar.append_data(&mut empty_file(epoch), wh, std::io::empty())?;
            } else if ft.is_dir() {
                let mut h = header(&m, tar::EntryType::Directory, epoch);
                tar.append_data(&mut h, format!("{path}/"), std::io::empty())?;
                if is_opaque(&host) {
                    tar.append_data(
                        &mut empty_file(epoch),
                        format!("{path}/.wh..wh..opq"),
                        std::io::empty(),
                    )?;
                }
                append_dir(tar, root, &path, epoch, links)?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&host)?;
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
                let mut h = header(&m, tar::EntryType::Regular, epoch);
                h.set_size(m.len());
                let f = std::fs::File::open(&host)?;
                tar.append_data(&mut h, &path, f)?;
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else {
                    tar::EntryType::Fifo
                };
                let mut h = header(&m, kind, epoch);
                let rdev = m.rdev();
                // Linux's encoding of major/minor in dev_t.
                let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff);
                let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff);
                h.set_device_major(u32::try_from(major).unwrap_or(0))?;
                h.set_device_minor(u32::try_from(minor).unwrap_or(0))?;
                tar.append_data(&mut h, &path, std::io::empty())?;
            }
            // Sockets are not part of a filesystem image.
        }
    }
    Ok(())
}

#[cfg(test)]
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
}
