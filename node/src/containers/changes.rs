//! `docker diff`: what a container changed in its filesystem, read from its overlay upper
//! directory — a tree the container wrote, so read only through [`reg_untrusted::Tree`]
//! (paths resolved inside it, never followed out) — and compared with its image's layers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{failed, ContainerError};
use super::service::Containers;

/// docker's kinds of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Modified = 0,
    Added = 1,
    Deleted = 2,
}

/// At most this many changes are listed (a container can make millions of files).
const MAX_CHANGES: usize = 100_000;
/// Directories nest at most this deep in the walk.
const MAX_DEPTH: usize = 256;

/// The container's changes, by path, in walk order (a directory before what is in it).
pub fn changes(cs: &Arc<Containers>, key: &str) -> Result<Vec<(String, Change)>, ContainerError> {
    let rec = cs.resolve(key)?;
    let upper = rec.spec.dir.join("upper");
    if !upper.is_dir() {
        // Never started, or read-only: nothing changed.
        return Ok(Vec::new());
    }
    let tree = reg_untrusted::Tree::open(&upper).map_err(failed)?;
    // The image's layers, top first: where a path that is in the upper dir existed before.
    let lowers: Vec<reg_untrusted::Tree> = rec
        .spec
        .layers
        .iter()
        .rev()
        .filter_map(|l| reg_untrusted::Tree::open(l).ok())
        .collect();
    let existed = |rel: &Path| {
        lowers.iter().any(|t| {
            t.symlink_metadata(rel)
                .ok()
                .flatten()
                .is_some_and(|m| !is_whiteout(&m))
        })
    };
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let mut names = tree.read_dir(&dir).map_err(failed)?;
        names.sort();
        for name in names.into_iter().rev() {
            let rel = dir.join(&name);
            let Some(m) = tree.symlink_metadata(&rel).map_err(failed)? else {
                continue;
            };
            let path = Path::new("/").join(&rel).to_string_lossy().into_owned();
            let kind = if is_whiteout(&m) {
                Change::Deleted
            } else if existed(&rel) {
                Change::Modified
            } else {
                Change::Added
            };
            out.push((path, kind));
            if out.len() > MAX_CHANGES {
                return Err(ContainerError::Invalid(format!(
                    "container {} changed more than {MAX_CHANGES} paths: too many to list",
                    rec.name
                )));
            }
            if m.is_dir() && kind != Change::Deleted {
                if depth + 1 >= MAX_DEPTH {
                    return Err(ContainerError::Invalid(format!(
                        "container {}: directories nest deeper than {MAX_DEPTH} levels",
                        rec.name
                    )));
                }
                stack.push((rel, depth + 1));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// overlayfs's whiteout: a character device 0:0.
fn is_whiteout(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    m.file_type().is_char_device() && m.rdev() == 0
}
