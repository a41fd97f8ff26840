//! The build context as the agent receives it: a tar stream (already filtered by
//! `.dockerignore` on the client, like docker's) unpacked into a private directory. Every regular
//! file is hashed while it is written, so COPY's cache keys cost no second read. Entries that
//! would land outside the directory (`..`, absolute paths) are refused; symlinks are kept as
//! symlinks and only ever resolved inside the context ([`crate::fsview::View`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use reg_registry::digest::{Algorithm, Digest, Hasher};

/// Where the client puts the Dockerfile in the context stream (it may be outside the context
/// or excluded by `.dockerignore`, and still has to travel).
pub const DOCKERFILE_ENTRY: &str = ".reg-build/Dockerfile";

#[derive(Debug)]
pub struct Context {
    pub dir: PathBuf,
    /// sha256 of each regular file's bytes, by relative path.
    pub digests: BTreeMap<String, Digest>,
    pub dockerfile: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("build context: entry {path:?} would land outside the context")]
    Escape { path: String },
    #[error("build context: {0}")]
    Io(#[from] std::io::Error),
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

/// Unpacks the context stream `r` into `dir` (which must exist and be empty).
pub fn receive(r: impl Read, dir: &Path) -> Result<Context, ContextError> {
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_overwrite(true);
    ar.set_unpack_xattrs(false);
    let mut digests = BTreeMap::new();
    let mut dockerfile = None;
    for entry in ar.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let rel = crate::ignore::clean(&raw);
        if raw.starts_with('/') || raw.split('/').any(|c| c == "..") {
            return Err(ContextError::Escape { path: raw });
        }
        if rel == DOCKERFILE_ENTRY {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            dockerfile = Some(text);
            continue;
        }
        if rel.is_empty() {
            continue;
        }
        if entry.header().entry_type().is_file() {
            let target = dir.join(&rel);
            if let Some(p) = target.parent() {
                std::fs::create_dir_all(p)?;
            }
            let mut hasher = Hasher::new(Algorithm::Sha256);
            let mut f = std::fs::File::create(&target)?;
            std::io::copy(
                &mut HashingReader {
                    inner: &mut entry,
                    hasher: &mut hasher,
                },
                &mut f,
            )?;
            let h = entry.header();
            if let Ok(mode) = h.mode() {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if let (Ok(uid), Ok(gid)) = (h.uid(), h.gid()) {
                let _ =
                    std::os::unix::fs::fchown(&f, u32::try_from(uid).ok(), u32::try_from(gid).ok());
            }
            digests.insert(rel, hasher.finish());
        } else if !entry.unpack_in(dir)? {
            return Err(ContextError::Escape { path: raw });
        }
    }
    Ok(Context {
        dir: dir.to_path_buf(),
        digests,
        dockerfile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; write the name bytes directly, as a hostile client would.
            let name = &mut h.as_old_mut().name;
            name[..p.len()].copy_from_slice(p.as_bytes());
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn files_are_hashed_and_the_dockerfile_is_taken_out() {
        let d = tempfile::tempdir().expect("tempdir");
        let t = tar_of(&[("a/b.txt", b"hi"), (DOCKERFILE_ENTRY, b"FROM scratch\n")]);
        let c = receive(&t[..], d.path()).expect("receives");
        assert_eq!(c.dockerfile.as_deref(), Some("FROM scratch\n"));
        assert_eq!(c.digests["a/b.txt"], Digest::sha256_of(b"hi"));
        assert!(!d.path().join(".reg-build").exists());
    }

    #[test]
    fn entries_outside_the_context_are_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let t = tar_of(&[("../evil", b"x")]);
        assert!(matches!(
            receive(&t[..], d.path()),
            Err(ContextError::Escape { .. })
        ));
        assert!(!d.path().parent().expect("parent").join("evil").exists());
    }
}
