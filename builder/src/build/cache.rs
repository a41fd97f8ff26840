//! The build cache and layer commits: a step's key looked up in the cache dir, or its layer
//! made in a scratch dir, written as a blob, taken into the store and recorded; the
//! fingerprint of copied or mounted files a key must see; the scratch dirs and cache records
//! that are paths of ours.

#![deny(clippy::disallowed_methods)]

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use reg_registry::digest::chain_id;
use reg_untrusted::Tree;

use super::api::{Event, LayerRef, StepRunner, Store};
use super::builder::Builder;
use super::error::{BuildError, Leftover, StepError};
use super::state::State;
use super::tree::walk;
use crate::dockerfile::Step;
use crate::fsview::View;

/// A cache entry: the layer a step made (none for a step that changes no file) and its chain
/// id, which tells the node's store which snapshot the entry keeps (`rmi` and prunes leave
/// what the cache names alone; `builder prune` lets it go).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheRecord {
    layer: Option<LayerRef>,
    chain: Option<String>,
}

impl CacheRecord {
    /// The layer of a record, also of one written before records named their chain.
    fn parse(bytes: &[u8]) -> Option<Option<LayerRef>> {
        serde_json::from_slice::<CacheRecord>(bytes)
            .map(|r| r.layer)
            .or_else(|_| serde_json::from_slice::<Option<LayerRef>>(bytes))
            .ok()
    }
}

impl<S: Store, R: StepRunner> Builder<'_, S, R> {
    /// Looks the cache up, or makes the layer with `make` (which fills the directory it is
    /// given) and records it. Returns whether it was cached.
    pub(super) async fn layer<F, Fut>(
        &self,
        st: &mut State,
        step: &Step,
        key: String,
        created_by: String,
        make: F,
    ) -> Result<bool, BuildError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<PathBuf, BuildError>>,
    {
        let record = self.opts.cache_dir.join(key.replace(':', "-"));
        if !self.opts.no_cache {
            if let Some(layer) = own::read(&record).and_then(|b| CacheRecord::parse(&b)) {
                let usable = match &layer {
                    None => true,
                    Some(l) => self
                        .store
                        .has_layer(l, &chain_id(st.chain.last(), &l.diff_id)),
                };
                if usable {
                    self.push_layer(st, key, created_by, layer);
                    return Ok(true);
                }
            }
        }
        let work = self.store.tmp("step");
        own::mkdir(&work).map_err(|e| self.err(step, e))?;
        let result = make(work.clone()).await;
        let made = match result {
            Ok(dir) => self.commit(st, step, &dir).await,
            Err(e) => Err(e),
        };
        let layer = self.remove_after(made, vec![work]).await?;
        let json = serde_json::to_vec(&CacheRecord {
            chain: layer
                .as_ref()
                .map(|l| chain_id(st.chain.last(), &l.diff_id).to_string()),
            layer: layer.clone(),
        })
        .unwrap_or_default();
        if own::write(&self.opts.cache_dir, &record, &json).is_err() {
            (self.log)(Event::Note {
                message: format!("could not record the cache entry {}", record.display()),
            });
        }
        self.push_layer(st, key, created_by, layer);
        Ok(false)
    }

    /// Removes the scratch dirs `dirs` once the work that used them ended with `res`. A dir
    /// that will not go is kept beside a failure (`BuildError::Cleanup`: both are reported,
    /// the failure first); after a success it is a note, the build itself went through.
    pub(super) async fn remove_after<T>(
        &self,
        res: Result<T, BuildError>,
        dirs: Vec<PathBuf>,
    ) -> Result<T, BuildError> {
        let mut cleanup = Vec::new();
        for path in dirs {
            let p = path.clone();
            let removed = tokio::task::spawn_blocking(move || remove_scratch(&p))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
            match removed {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    cleanup.push(Leftover { path, error });
                }
                _ => {}
            }
        }
        match res {
            Err(error) if !cleanup.is_empty() => Err(BuildError::Cleanup {
                error: Box::new(error),
                cleanup,
            }),
            Err(error) => Err(error),
            Ok(v) => {
                for l in cleanup {
                    (self.log)(Event::Note {
                        message: format!("could not remove {}: {}", l.path.display(), l.error),
                    });
                }
                Ok(v)
            }
        }
    }

    /// The layer of directory `dir` (none when it is empty), taken into the store.
    pub(super) async fn commit(
        &self,
        st: &State,
        step: &Step,
        dir: &Path,
    ) -> Result<Option<LayerRef>, BuildError> {
        let empty = Tree::open_strict(dir)
            .and_then(|t| t.read_dir(""))
            .map(|names| names.is_empty())
            .unwrap_or(true);
        if empty {
            return Ok(None);
        }
        let blob = self.store.tmp("blob");
        let (d, b, c, epoch) = (
            dir.to_path_buf(),
            blob.clone(),
            self.opts.compression,
            self.opts.epoch,
        );
        let written = tokio::task::spawn_blocking(move || crate::layer::write(&d, &b, c, epoch))
            .await
            .map_err(|e| self.err(step, e))?
            .map_err(|e| self.err(step, StepError::WriteLayer(e)))?;
        let layer = LayerRef {
            digest: written.digest,
            diff_id: written.diff_id,
            size: written.size,
            media_type: self.opts.compression.media_type().into(),
        };
        let chain = chain_id(st.chain.last(), &layer.diff_id);
        let res = self.store.add_layer(&blob, &layer, dir, &chain);
        own::remove_file(&blob);
        res.map_err(|e| self.err(step, StepError::AddLayer(Box::new(e))))?;
        Ok(Some(layer))
    }

    pub(super) fn push_layer(
        &self,
        st: &mut State,
        key: String,
        created_by: String,
        layer: Option<LayerRef>,
    ) {
        st.key = key;
        let empty = layer.is_none();
        if let Some(l) = layer {
            let next = chain_id(st.chain.last(), &l.diff_id);
            st.chain.push(next);
            st.layers.push(l);
        }
        st.history(self.opts.epoch, created_by, empty);
    }

    /// One line per path under `srcs` in `view` (mode, owner, size, content digest for the
    /// context, symlink target): what a cache key must see of copied or mounted files.
    pub(super) fn fingerprint(
        &self,
        view: &View,
        from_context: bool,
        srcs: &[String],
    ) -> Vec<String> {
        let mut fp = Vec::new();
        for src in srcs {
            walk(view, src, &mut |rel, e| {
                let content = if from_context {
                    self.context
                        .digests
                        .get(rel)
                        .map(|d| d.to_string())
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                let link = if e.meta.file_type().is_symlink() {
                    e.read_link()
                        .map(|l| l.to_string_lossy().into_owned())
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                fp.push(format!(
                    "{rel} {:o} {} {} {} {content} {link}",
                    e.meta.mode(),
                    e.meta.uid(),
                    e.meta.gid(),
                    e.meta.len()
                ));
            });
        }
        fp
    }
}

/// Our own paths: the cache dir and the store's tmp paths, named by us under our data dir.
/// Nothing a build controls is *at* these paths (what a step or a copy put *inside* a scratch
/// dir goes with [`remove_scratch`]), so `std::fs` is fine for them and only for them.
pub(super) mod own {
    use std::path::Path;

    #[allow(clippy::disallowed_methods)] // trusted: a path of ours (see the module)
    pub fn mkdir(p: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(p)
    }

    #[allow(clippy::disallowed_methods)] // trusted: a cache record of ours
    pub fn read(p: &Path) -> Option<Vec<u8>> {
        std::fs::read(p).ok()
    }

    /// Writes `bytes` to `p` in `dir` (made when missing) by a rename: never half a record.
    #[allow(clippy::disallowed_methods)] // trusted: a cache record of ours
    pub fn write(dir: &Path, p: &Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, p)
    }

    #[allow(clippy::disallowed_methods)] // trusted: a blob file of ours in the store's tmp dir
    pub fn remove_file(p: &Path) {
        let _ = std::fs::remove_file(p);
    }
}

/// Removes a scratch dir of ours and everything in it. The dir is ours, its content is not (a
/// step's upper dir, a layer being assembled): removed fd-relative inside the dir's parent.
pub(super) fn remove_scratch(dir: &Path) -> std::io::Result<()> {
    match (dir.parent(), dir.file_name()) {
        (Some(p), Some(name)) => Tree::open_strict(p)?.remove_all(name),
        _ => Ok(()),
    }
}
