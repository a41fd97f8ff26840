//! Volumes: named directories under `<node>/volumes/NAME/_data` that outlive containers
//! (`reg volume create|ls|inspect|rm`, `-v NAME:/path`), and `-v` parsing for host paths.

use std::path::{Path, PathBuf};

use crate::runtime::BindMount;

/// A volume operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("no such volume: {0}")]
    NotFound(String),
    /// Containers (named) still use it.
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

/// The volumes directory for a container directory `<node>/containers/ID`.
pub fn root_of(container_dir: &Path) -> PathBuf {
    container_dir
        .parent()
        .and_then(Path::parent)
        .map(|n| n.join("volumes"))
        .unwrap_or_default()
}

fn valid_name(n: &str) -> bool {
    n.len() >= 2
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Creates (if needed) the named volume and returns its data directory.
pub fn ensure(root: &Path, name: &str) -> Result<PathBuf, VolumeError> {
    if !valid_name(name) {
        return Err(VolumeError::Invalid(format!(
            "invalid volume name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]+, or an absolute host path"
        )));
    }
    let data = root.join(name).join("_data");
    std::fs::create_dir_all(&data)
        .map_err(|e| VolumeError::Failed(format!("creating volume {name}: {e}")))?;
    Ok(data)
}

/// `-v` as docker reads it: `/host:/ctr[:ro|rw]`, `NAME:/ctr[:ro|rw]`, or `/ctr` alone (a new
/// anonymous volume).
pub fn resolve(root: &Path, spec: &str) -> Result<BindMount, VolumeError> {
    let bad = VolumeError::Invalid;
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [t] => (None, *t, ""),
        [s, t] => (Some(*s), *t, ""),
        [s, t, o] => (Some(*s), *t, *o),
        _ => return Err(bad(format!("-v {spec:?}: use SOURCE:TARGET[:ro]"))),
    };
    if !target.starts_with('/') {
        return Err(bad(format!(
            "-v {spec:?}: the container path {target:?} must be absolute"
        )));
    }
    let mut readonly = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => readonly = true,
            "rw" | "z" | "Z" => {}
            other => {
                return Err(bad(format!(
                    "-v {spec:?}: unknown option {other:?} (ro or rw)"
                )))
            }
        }
    }
    let copy_up = !source.is_some_and(|s| s.starts_with('/'));
    let source = match source {
        Some(s) if s.starts_with('/') => {
            let p = PathBuf::from(s);
            // docker creates a missing host directory.
            if !p.exists() {
                std::fs::create_dir_all(&p).map_err(|e| bad(format!("-v {spec:?}: {s}: {e}")))?;
            }
            p
        }
        Some(name) => ensure(root, name)?,
        None => ensure(
            root,
            &crate::db::random_hex()
                .map_err(|e| VolumeError::Failed(format!("-v {spec:?}: {e}")))?,
        )?,
    };
    Ok(BindMount {
        source,
        target: target.to_string(),
        readonly,
        layers: Vec::new(),
        copy_up,
    })
}

/// The names of the volumes under `root`, sorted.
pub fn list(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("_data").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `volume create [NAME]` (a random name when none): its name.
pub fn create(root: &Path, name: Option<String>) -> Result<String, VolumeError> {
    let name = match name {
        Some(n) => n,
        None => crate::db::random_hex().map_err(|e| VolumeError::Failed(e.to_string()))?,
    };
    ensure(root, &name)?;
    Ok(name)
}

/// Whether volume `name` exists.
pub fn exists(root: &Path, name: &str) -> bool {
    valid_name(name) && root.join(name).join("_data").is_dir()
}

/// The labels file of a volume (beside its data, out of its containers' reach).
const LABELS: &str = "labels.json";

/// `volume create --label`: makes the volume if it is missing (as docker, creating an existing
/// one answers it), with `labels` when it is new.
pub fn create_labelled(
    root: &Path,
    name: Option<String>,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<String, VolumeError> {
    let existed = name.as_deref().is_some_and(|n| exists(root, n));
    let name = create(root, name)?;
    if !existed && !labels.is_empty() {
        let json = serde_json::to_string(labels).map_err(|e| VolumeError::Failed(e.to_string()))?;
        std::fs::write(root.join(&name).join(LABELS), json)
            .map_err(|e| VolumeError::Failed(format!("volume {name}'s labels: {e}")))?;
    }
    Ok(name)
}

/// The labels volume `name` was created with (none when unreadable: they are ours, written
/// whole at create).
pub fn labels(root: &Path, name: &str) -> std::collections::BTreeMap<String, String> {
    std::fs::read(root.join(name).join(LABELS))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The data directory of volume `name` (existing or not).
pub fn data_dir(root: &Path, name: &str) -> PathBuf {
    root.join(name).join("_data")
}

/// Removes volume `name` and its data.
pub fn remove(root: &Path, name: &str) -> Result<(), VolumeError> {
    if !exists(root, name) {
        return Err(VolumeError::NotFound(name.to_string()));
    }
    std::fs::remove_dir_all(root.join(name))
        .map_err(|e| VolumeError::Failed(format!("removing volume {name}: {e}")))
}
