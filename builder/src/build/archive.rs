//! ADD's local archives: recognised by content (tar, gzip, zstd) and unpacked entry by entry
//! into the layer being assembled, `..` refused, never through a symlink.

#![deny(clippy::disallowed_methods)]

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use reg_untrusted::{set_mode, set_mtime, set_owner, Node, Tree};

use super::tree::{at, TreeError};

/// What went wrong unpacking an archive (the entry's name as the archive has it).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}: an entry with .. in its path is refused")]
    DotDot(String),
    #[error("{0}: a bad number in its header")]
    BadHeader(String),
    #[error("{0}: a symlink without a target")]
    SymlinkWithoutTarget(String),
    #[error("{0}: a hard link without a target")]
    HardLinkWithoutTarget(String),
    #[error("{0}: a hard link to the archive's root")]
    HardLinkToRoot(String),
    /// The archive itself does not read (truncated, a bad header, bad compression).
    #[error(transparent)]
    Read(std::io::Error),
    /// The layer the archive is unpacked into.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Archive {
    Tar,
    Gzip,
    Zstd,
}

/// ADD unpacks local archives, recognised by their content, not their name. `f` is left at
/// its start.
pub(super) fn archive_kind(f: &mut std::fs::File) -> Option<Archive> {
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    f.rewind().ok()?;
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Archive::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Archive::Zstd)
    } else if n >= 262 && &head[257..262] == b"ustar" {
        Some(Archive::Tar)
    } else {
        None
    }
}

/// An archive entry's name as a path inside the extraction dir: `/` and `.` dropped, `..`
/// refused. `None` for the dir itself.
pub(super) fn entry_path(name: &Path) -> Result<Option<PathBuf>, ArchiveError> {
    let mut p = PathBuf::new();
    for c in name.components() {
        match c {
            std::path::Component::Normal(n) => p.push(n),
            std::path::Component::ParentDir => {
                return Err(ArchiveError::DotDot(name.display().to_string()))
            }
            _ => {}
        }
    }
    Ok((!p.as_os_str().is_empty()).then_some(p))
}

/// A directory's metadata from an archive, applied once all entries are in (its mtime would
/// change with every entry made in it).
pub(super) struct DirMeta {
    rel: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// Unpacks the archive `f` into `into` of the layer being assembled, with the owners, modes
/// and times of its entries, as docker does. Whatever an earlier entry or source left at an
/// entry's path is replaced (a directory by a directory is kept); a symlink on the way to an
/// entry is an error, never followed.
pub(super) fn extract(
    f: std::fs::File,
    kind: Archive,
    layer: &Tree,
    into: &str,
) -> Result<(), ArchiveError> {
    let f = std::io::BufReader::new(f);
    let r: Box<dyn Read> = match kind {
        Archive::Tar => Box::new(f),
        Archive::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Archive::Zstd => Box::new(zstd::Decoder::with_buffer(f).map_err(ArchiveError::Read)?),
    };
    let mut ar = tar::Archive::new(r);
    let mut dirs: Vec<DirMeta> = Vec::new();
    for entry in ar.entries().map_err(ArchiveError::Read)? {
        let mut entry = entry.map_err(ArchiveError::Read)?;
        let name = entry.path().map_err(ArchiveError::Read)?.into_owned();
        let Some(rel) = entry_path(&name)? else {
            continue;
        };
        let rel = Path::new(into).join(rel);
        let shown = rel.to_string_lossy().into_owned();
        let io = at(&shown);
        let h = entry.header();
        let kind = h.entry_type();
        let num = |v: std::io::Result<u64>| -> Result<u32, ArchiveError> {
            v.ok()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| ArchiveError::BadHeader(name.display().to_string()))
        };
        let mode = num(h.mode().map(u64::from))? & 0o7777;
        let (uid, gid) = (num(h.uid())?, num(h.gid())?);
        let mtime = i64::try_from(h.mtime().unwrap_or(0)).unwrap_or(0);
        // Old tars mark directories by a trailing slash only.
        let is_dir = kind.is_dir()
            || (kind == tar::EntryType::Regular
                && name.as_os_str().as_encoded_bytes().ends_with(b"/"));
        let special = match kind {
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = u64::from(h.device_major().ok().flatten().unwrap_or(0));
                let minor = u64::from(h.device_minor().ok().flatten().unwrap_or(0));
                Some(if kind == tar::EntryType::Char {
                    Node::Char { major, minor }
                } else {
                    Node::Block { major, minor }
                })
            }
            tar::EntryType::Fifo => Some(Node::Fifo),
            _ => None,
        };
        let file = matches!(
            kind,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse
        );
        if !(is_dir || file || special.is_some() || kind.is_symlink() || kind.is_hard_link()) {
            // Global pax headers and the like: nothing to make.
            continue;
        }
        // Parents as needed; whatever is at the path goes, unless a directory meets one.
        if let Some(p) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            layer.mkdir_all(p, 0o755).map_err(&io)?;
        }
        let there = layer.symlink_metadata(&rel).map_err(&io)?;
        let keep = is_dir && there.as_ref().is_some_and(|m| m.is_dir());
        if there.is_some() && !keep {
            layer.remove_all(&rel).map_err(&io)?;
        }
        if is_dir {
            if !keep {
                layer.mkdir(&rel, 0o700).map_err(&io)?;
            }
            dirs.push(DirMeta {
                rel,
                mode,
                uid,
                gid,
                mtime,
            });
        } else if file {
            let mut to = layer.create_file(&rel, 0o600).map_err(&io)?;
            std::io::copy(&mut entry, &mut to).map_err(&io)?;
            set_owner(&to, uid, gid).map_err(&io)?;
            set_mode(&to, mode).map_err(&io)?;
            set_mtime(&to, mtime, 0).map_err(&io)?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(ArchiveError::Read)?
                .ok_or_else(|| ArchiveError::SymlinkWithoutTarget(shown.clone()))?;
            layer.symlink(&rel, target).map_err(&io)?;
            let h = layer.resolve_nofollow(&rel).map_err(&io)?;
            set_owner(&h, uid, gid).map_err(&io)?;
        } else if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(ArchiveError::Read)?
                .ok_or_else(|| ArchiveError::HardLinkWithoutTarget(shown.clone()))?;
            let target =
                entry_path(&target)?.ok_or_else(|| ArchiveError::HardLinkToRoot(shown.clone()))?;
            layer
                .hard_link(&rel, Path::new(into).join(target))
                .map_err(&io)?;
        } else if let Some(node) = special {
            layer.mknod(&rel, node, mode).map_err(&io)?;
            let h = layer.resolve_nofollow(&rel).map_err(&io)?;
            set_owner(&h, uid, gid).map_err(&io)?;
            set_mode(&h, mode).map_err(&io)?;
            set_mtime(&h, mtime, 0).map_err(&io)?;
        }
    }
    for d in dirs.iter().rev() {
        let shown = d.rel.to_string_lossy();
        let io = at(&shown);
        // A later entry may have replaced the directory: then its metadata is not this one's.
        let h = layer.resolve_nofollow(&d.rel).map_err(&io)?;
        if !reg_untrusted::metadata(&h).map_err(&io)?.is_dir() {
            continue;
        }
        set_owner(&h, d.uid, d.gid).map_err(&io)?;
        set_mode(&h, d.mode).map_err(&io)?;
        set_mtime(&h, d.mtime, 0).map_err(&io)?;
    }
    Ok(())
}
