//! The node's image store: pulled blobs (content-addressed), one unpacked snapshot per layer
//! keyed by chain id (shared by every image and container that has that layer), and an index of
//! image references in SQLite.
//!
//! A pull streams each layer once: bytes from the registry are written to the blob file, hashed
//! (compressed digest), decompressed, hashed again (diff id) and untarred into a temporary
//! snapshot, all in the same pass; layers run in parallel. Only when both digests match does
//! the snapshot get its final name (a rename), so a crash or a lying registry never leaves a
//! half-unpacked or unverified layer behind. A broken connection resumes with a `Range`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use reg_registry::client::{ClientError, RegistryClient};
use reg_registry::manifest::Descriptor;
use reg_registry::{media, Digest, Hasher, Reference, RepoName};
use serde::{Deserialize, Serialize};

use crate::unpack::{self, UnpackError};

/// Layers fetched and unpacked at the same time.
const PARALLEL_LAYERS: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("{what} of {reference} is not valid: {message}")]
    Invalid {
        reference: String,
        what: String,
        message: String,
    },
    #[error("{reference} has no image for {platform}; it offers {offered}")]
    NoPlatform {
        reference: String,
        platform: String,
        offered: String,
    },
    #[error("layer {layer} of {reference}: {message}; nothing of it was kept")]
    Verify {
        reference: String,
        layer: String,
        message: String,
    },
    #[error("image store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image store database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("download of layer {layer} failed after {tries} tries: {message}")]
    Download {
        layer: String,
        tries: u32,
        message: String,
    },
}

/// What a pull reports as it goes (for progress displays).
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Resolved {
        digest: String,
        layers: usize,
    },
    LayerCached {
        digest: String,
    },
    LayerBytes {
        digest: String,
        done: u64,
        total: u64,
    },
    LayerDone {
        digest: String,
    },
    /// Pushed by a cross-repository mount from `from` (same registry): no bytes travelled.
    LayerMounted {
        digest: String,
        from: String,
    },
}

/// A pulled image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub reference: String,
    /// Digest of the (platform) manifest.
    pub digest: String,
    /// Digest of the config: docker's image id.
    pub id: String,
    pub config: serde_json::Value,
    /// Chain ids of the layers, bottom first: the snapshot directories.
    pub chain: Vec<String>,
    pub size: u64,
    /// The manifest and config exactly as pulled (to push them elsewhere byte for byte).
    #[serde(default)]
    pub manifest: String,
    #[serde(default)]
    pub media_type: String,
    #[serde(default)]
    pub config_raw: String,
    /// Where each layer blob came from: layer digest → `registry/repository` it was pulled
    /// from, so a push to another repository of that registry can mount it instead of
    /// uploading it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, String>,
}

impl ImageRecord {
    /// The repository of `target`'s registry that `layer` can be mounted from, when it came
    /// from another repository there.
    pub fn mount_source(&self, layer: &Digest, target: &Reference) -> Option<RepoName> {
        let source = self.sources.get(&layer.to_string())?;
        let (registry, repo) = source.split_once('/')?;
        let repo = RepoName::parse(repo).ok()?;
        (registry == target.registry && repo != target.repo).then_some(repo)
    }
}

pub struct ImageStore {
    root: PathBuf,
    db: Mutex<rusqlite::Connection>,
}

/// The platform this node runs (`linux/amd64`, `linux/arm64`, …).
pub fn node_platform() -> (&'static str, &'static str) {
    reg_registry::host_platform()
}

/// A `Read` over chunks arriving on a channel (the network side runs on the async runtime).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Passes bytes through while writing them to the blob file and hashing them.
struct Tee<R> {
    inner: R,
    file: std::fs::File,
    hasher: Hasher,
    total: u64,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.file.write_all(&buf[..n])?;
        self.hasher.update(&buf[..n]);
        self.total += n as u64;
        Ok(n)
    }
}

impl ImageStore {
    /// Opens (creating) the store under `root` (the node's part of the data dir).
    pub fn open(root: &Path) -> Result<ImageStore, PullError> {
        for d in ["blobs/sha256", "blobs/sha512", "snapshots", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|source| PullError::Io { path: p, source })?;
        }
        // Leftovers of a crash mid-pull are never trusted.
        if let Ok(entries) = std::fs::read_dir(root.join("tmp")) {
            for e in entries.flatten() {
                let _ =
                    std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
            }
        }
        let db = rusqlite::Connection::open(root.join("images.db"))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.busy_timeout(std::time::Duration::from_secs(30))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS images (reference TEXT PRIMARY KEY, record TEXT NOT NULL, created_at INTEGER NOT NULL)",
        )?;
        Ok(ImageStore {
            root: root.to_path_buf(),
            db: Mutex::new(db),
        })
    }

    /// The node's part of the data dir (the store's root).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn snapshot_dir(&self, chain_id: &str) -> PathBuf {
        self.root.join("snapshots").join(chain_id.replace(':', "-"))
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// A fresh path under the store's `tmp` (same filesystem as blobs and snapshots, emptied
    /// at every start).
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// A pulled image by reference.
    pub fn get(&self, reference: &str) -> Result<Option<ImageRecord>, PullError> {
        let db = self.db.lock().map_err(|_| PullError::Io {
            path: self.root.clone(),
            source: std::io::Error::other("image index lock poisoned"),
        })?;
        let rec: Option<String> = db
            .query_row(
                "SELECT record FROM images WHERE reference = ?1",
                [reference],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| {
                if e == rusqlite::Error::QueryReturnedNoRows {
                    Ok(None)
                } else {
                    Err(e)
                }
            })?;
        Ok(rec.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// Every pulled image, by reference.
    pub fn list(&self) -> Result<Vec<ImageRecord>, PullError> {
        let db = self.db.lock().map_err(|_| PullError::Io {
            path: self.root.clone(),
            source: std::io::Error::other("image index lock poisoned"),
        })?;
        let mut st = db.prepare("SELECT record FROM images ORDER BY reference")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            if let Ok(rec) = serde_json::from_str(&r?) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    fn put(&self, rec: &ImageRecord) -> Result<(), PullError> {
        let db = self.db.lock().map_err(|_| PullError::Io {
            path: self.root.clone(),
            source: std::io::Error::other("image index lock poisoned"),
        })?;
        let json = serde_json::to_string(rec).map_err(|e| PullError::Io {
            path: self.root.clone(),
            source: std::io::Error::other(e),
        })?;
        db.execute(
            "INSERT INTO images(reference, record, created_at) VALUES (?1, ?2, strftime('%s','now')) \
             ON CONFLICT(reference) DO UPDATE SET record = excluded.record, created_at = excluded.created_at",
            rusqlite::params![rec.reference, json],
        )?;
        Ok(())
    }

    /// Whether the blob `digest` and the snapshot `chain_id` are both present.
    pub fn has_layer(&self, digest: &Digest, chain_id: &str) -> bool {
        self.blob_path(digest).is_file() && self.snapshot_dir(chain_id).is_dir()
    }

    /// Takes a layer made on this node (`reg build`) in: the blob file (whose digest the caller
    /// computed while writing it) and its unpacked snapshot directory, both renamed into place.
    /// Either may already be there (the same layer built before): then the new copy goes.
    pub fn adopt_layer(
        &self,
        blob: &Path,
        digest: &Digest,
        snapshot: &Path,
        chain_id: &str,
    ) -> Result<(), PullError> {
        let io = |path: &Path, source| PullError::Io {
            path: path.to_path_buf(),
            source,
        };
        let target = self.blob_path(digest);
        if !target.exists() {
            std::fs::rename(blob, &target).map_err(|e| io(&target, e))?;
        }
        let snap = self.snapshot_dir(chain_id);
        if !snap.exists() {
            std::fs::rename(snapshot, &snap).map_err(|e| io(&snap, e))?;
        }
        Ok(())
    }

    /// Records a built image under `reference` (its blobs and snapshots were adopted first).
    pub fn put_built(
        &self,
        reference: &str,
        manifest: &[u8],
        config: &[u8],
        chain: Vec<String>,
        sources: BTreeMap<String, String>,
    ) -> Result<ImageRecord, PullError> {
        let invalid = |message: String| PullError::Invalid {
            reference: reference.to_string(),
            what: "built image".into(),
            message,
        };
        let m: serde_json::Value =
            serde_json::from_slice(manifest).map_err(|e| invalid(e.to_string()))?;
        let size = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["size"].as_u64())
            .sum();
        let rec = ImageRecord {
            reference: reference.to_string(),
            digest: Digest::sha256_of(manifest).to_string(),
            id: Digest::sha256_of(config).to_string(),
            config: serde_json::from_slice(config).map_err(|e| invalid(e.to_string()))?,
            chain,
            size,
            manifest: String::from_utf8(manifest.to_vec()).map_err(|e| invalid(e.to_string()))?,
            media_type: m["mediaType"]
                .as_str()
                .unwrap_or(media::OCI_MANIFEST)
                .to_string(),
            config_raw: String::from_utf8(config.to_vec()).map_err(|e| invalid(e.to_string()))?,
            sources,
        };
        self.put(&rec)?;
        Ok(rec)
    }

    /// Pulls `r` for this node's platform; layers already present are not fetched again.
    /// Stores `rec` under another reference (`reg tag`).
    pub fn tag(&self, rec: &ImageRecord, target: &str) -> Result<ImageRecord, PullError> {
        let mut copy = rec.clone();
        copy.reference = target.to_string();
        self.put(&copy)?;
        Ok(copy)
    }

    /// Removes a reference; then every snapshot and blob that no image, no build-cache entry
    /// and none of `in_use` (snapshot directories of containers) needs. Returns what was
    /// deleted.
    pub fn remove(
        &self,
        reference: &str,
        in_use: &std::collections::HashSet<PathBuf>,
    ) -> Result<Vec<String>, PullError> {
        self.untag(reference)?;
        let mut deleted = vec![format!("Untagged: {reference}")];
        deleted.extend(self.collect_garbage(in_use)?.0);
        Ok(deleted)
    }

    /// Forgets the reference only; what it kept goes at the next [`ImageStore::collect_garbage`]
    /// (a prune untags many, then collects once).
    pub fn untag(&self, reference: &str) -> Result<(), PullError> {
        let db = self.db.lock().map_err(|_| PullError::Io {
            path: self.root.clone(),
            source: std::io::Error::other("image index lock poisoned"),
        })?;
        db.execute("DELETE FROM images WHERE reference = ?1", [reference])?;
        Ok(())
    }

    /// The build cache's entries (`reg build` records one per step it made).
    pub fn build_cache_dir(&self) -> PathBuf {
        self.root.join(BUILD_CACHE)
    }

    /// The build cache's entries: (path, modified, chain id of its snapshot, blob digest, size).
    fn cache_entries(&self) -> Vec<CacheEntry> {
        std::fs::read_dir(self.build_cache_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.path()).ok()?).unwrap_or_default();
                // Entries of before chains were recorded name their blob only.
                let layer = if v.get("layer").is_some() {
                    &v["layer"]
                } else {
                    &v
                };
                Some(CacheEntry {
                    path: e.path(),
                    modified: meta.modified().ok()?,
                    chain: v["chain"].as_str().map(str::to_string),
                    blob: layer["digest"].as_str().map(str::to_string),
                    size: layer["size"].as_u64().unwrap_or(0) + meta.len(),
                })
            })
            .collect()
    }

    /// Deletes every snapshot and blob that no image, no build-cache entry and none of
    /// `in_use` needs: the `Deleted: …` lines, and the bytes the blobs took.
    pub fn collect_garbage(
        &self,
        in_use: &std::collections::HashSet<PathBuf>,
    ) -> Result<(Vec<String>, u64), PullError> {
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        let images = self.list()?;
        let mut keep_snaps: std::collections::HashSet<PathBuf> = in_use.clone();
        let mut keep_blobs = std::collections::HashSet::new();
        let mut unknown_blobs = false;
        for i in &images {
            keep_snaps.extend(i.chain.iter().map(|c| self.snapshot_dir(c)));
            match serde_json::from_str::<serde_json::Value>(&i.manifest) {
                Ok(m) => keep_blobs.extend(
                    m["layers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|l| l["digest"].as_str().map(str::to_string)),
                ),
                // Recorded before manifests were kept: its blobs are unknown, keep them all.
                Err(_) => unknown_blobs = true,
            }
        }
        let mut cache_without_chain = false;
        for c in self.cache_entries() {
            match c.chain {
                Some(chain) => {
                    keep_snaps.insert(self.snapshot_dir(&chain));
                }
                None => cache_without_chain |= c.blob.is_some(),
            }
            keep_blobs.extend(c.blob);
        }
        // An old cache entry does not say which snapshot is its own: keep them all until the
        // cache is pruned.
        if !cache_without_chain {
            for e in std::fs::read_dir(self.root.join("snapshots"))
                .into_iter()
                .flatten()
                .flatten()
            {
                if !keep_snaps.contains(&e.path()) && std::fs::remove_dir_all(e.path()).is_ok() {
                    deleted.push(format!(
                        "Deleted: {}",
                        e.file_name().to_string_lossy().replacen('-', ":", 1)
                    ));
                }
            }
        }
        if !unknown_blobs {
            for alg in std::fs::read_dir(self.root.join("blobs"))
                .into_iter()
                .flatten()
                .flatten()
            {
                for b in std::fs::read_dir(alg.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let d = format!(
                        "{}:{}",
                        alg.file_name().to_string_lossy(),
                        b.file_name().to_string_lossy()
                    );
                    if !keep_blobs.contains(&d) {
                        let size = b.metadata().map(|m| m.len()).unwrap_or(0);
                        if std::fs::remove_file(b.path()).is_ok() {
                            reclaimed += size;
                        }
                    }
                }
            }
        }
        Ok((deleted, reclaimed))
    }

    /// `builder prune`: drops build-cache entries, oldest first, until what the rest name
    /// takes at most `keep_bytes` (every entry with `None`), then what nothing needs any more.
    /// Returns the entries dropped and the bytes reclaimed.
    pub fn prune_build_cache(
        &self,
        keep_bytes: Option<u64>,
        in_use: &std::collections::HashSet<PathBuf>,
    ) -> Result<(Vec<String>, u64), PullError> {
        let mut entries = self.cache_entries();
        entries.sort_by_key(|e| std::cmp::Reverse(e.modified));
        let mut kept = 0u64;
        let mut dropped = Vec::new();
        for e in entries {
            kept += e.size;
            if keep_bytes.is_some_and(|k| kept <= k) {
                continue;
            }
            if std::fs::remove_file(&e.path).is_ok() {
                dropped.push(
                    e.path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
            }
        }
        if dropped.is_empty() {
            return Ok((dropped, 0));
        }
        let (_, reclaimed) = self.collect_garbage(in_use)?;
        Ok((dropped, reclaimed))
    }

    /// Pushes a stored image to `target` (any registry/repo/tag): only the blobs the registry
    /// lacks are uploaded, then the manifest byte for byte (so the digest stays the same).
    pub async fn push(
        &self,
        client: &RegistryClient,
        rec: &ImageRecord,
        target: &Reference,
        progress: impl Fn(Progress) + Send + Sync + 'static,
    ) -> Result<String, PullError> {
        let invalid = |message: String| PullError::Invalid {
            reference: rec.reference.clone(),
            what: "stored image".into(),
            message,
        };
        if rec.manifest.is_empty() || rec.config_raw.is_empty() {
            return Err(invalid(
                "it was pulled by an older reg that did not keep its manifest: pull it again"
                    .into(),
            ));
        }
        let m: serde_json::Value =
            serde_json::from_str(&rec.manifest).map_err(|e| invalid(e.to_string()))?;
        let config_digest = Digest::parse(&rec.id).map_err(|e| invalid(e.to_string()))?;
        if Digest::of(config_digest.algorithm(), rec.config_raw.as_bytes()) != config_digest {
            return Err(invalid(
                "the stored config does not match its digest".into(),
            ));
        }
        let layers: Vec<(Digest, u64)> = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                let d = Digest::parse(l["digest"].as_str().unwrap_or(""))
                    .map_err(|e| invalid(e.to_string()))?;
                Ok((d, l["size"].as_u64().unwrap_or(0)))
            })
            .collect::<Result<_, PullError>>()?;
        progress(Progress::Resolved {
            digest: Digest::sha256_of(rec.manifest.as_bytes()).to_string(),
            layers: layers.len(),
        });
        let progress = Arc::new(progress);
        let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL_LAYERS));
        let mut tasks = tokio::task::JoinSet::new();
        for (d, size) in layers {
            let mount_from = rec.mount_source(&d, target);
            let (client, repo, path, progress, limit) = (
                RegistryClient::clone_for(client),
                target.repo.clone(),
                self.blob_path(&d),
                progress.clone(),
                limit.clone(),
            );
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                if client.has_blob(&repo, &d).await? {
                    progress(Progress::LayerCached {
                        digest: d.to_string(),
                    });
                    return Ok::<(), ClientError>(());
                }
                if let Some(from) = mount_from {
                    if client.mount_blob(&repo, &d, &from).await? {
                        progress(Progress::LayerMounted {
                            digest: d.to_string(),
                            from: from.to_string(),
                        });
                        return Ok(());
                    }
                }
                let (p2, d2) = (progress.clone(), d.to_string());
                client
                    .push_blob_file(&repo, &d, &path, move |done| {
                        p2(Progress::LayerBytes {
                            digest: d2.clone(),
                            done,
                            total: size,
                        })
                    })
                    .await?;
                progress(Progress::LayerDone {
                    digest: d.to_string(),
                });
                Ok(())
            });
        }
        let mut first_error = None;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(PullError::Client(e));
                }
                Err(e) => {
                    first_error.get_or_insert(PullError::Io {
                        path: self.root.clone(),
                        source: std::io::Error::other(e),
                    });
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if !client.has_blob(&target.repo, &config_digest).await? {
            client
                .push_blob_bytes(
                    &target.repo,
                    &config_digest,
                    Bytes::from(rec.config_raw.clone()),
                )
                .await?;
        }
        let media_type = if rec.media_type.is_empty() {
            m["mediaType"]
                .as_str()
                .unwrap_or(media::OCI_MANIFEST)
                .to_string()
        } else {
            rec.media_type.clone()
        };
        client
            .put_manifest(
                &target.repo,
                &target.reference(),
                &media_type,
                Bytes::from(rec.manifest.clone()),
            )
            .await?;
        Ok(Digest::sha256_of(rec.manifest.as_bytes()).to_string())
    }

    pub async fn pull(
        self: &Arc<Self>,
        client: &RegistryClient,
        r: &Reference,
        progress: impl Fn(Progress) + Send + Sync + 'static,
    ) -> Result<ImageRecord, PullError> {
        let progress = Arc::new(progress);
        let name = r.to_string();
        let invalid = |what: &str, message: String| PullError::Invalid {
            reference: name.clone(),
            what: what.to_string(),
            message,
        };
        let (mut body, mut media_type, mut digest) =
            client.manifest(&r.repo, &r.reference()).await?;
        let raw: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| invalid("manifest", e.to_string()))?;
        if media_type.starts_with(media::OCI_INDEX)
            || media_type.starts_with(media::DOCKER_LIST)
            || raw.get("manifests").is_some()
        {
            let (os, arch) = node_platform();
            let list: Vec<Descriptor> = serde_json::from_value(raw["manifests"].clone())
                .map_err(|e| invalid("index", e.to_string()))?;
            let mut offered = Vec::new();
            let chosen = list.iter().find(|m| {
                let p = m.platform.as_ref();
                let (o, a) = (
                    p.and_then(|p| p["os"].as_str()).unwrap_or(""),
                    p.and_then(|p| p["architecture"].as_str()).unwrap_or(""),
                );
                offered.push(format!("{o}/{a}"));
                o == os && a == arch
            });
            let Some(chosen) = chosen else {
                return Err(PullError::NoPlatform {
                    reference: name,
                    platform: format!("{os}/{arch}"),
                    offered: offered.join(", "),
                });
            };
            let d = Digest::parse(&chosen.digest).map_err(|e| invalid("index", e.to_string()))?;
            (body, media_type, digest) = client.manifest(&r.repo, &d.to_string()).await?;
        }
        #[derive(Deserialize)]
        struct M {
            config: Descriptor,
            #[serde(default)]
            layers: Vec<Descriptor>,
        }
        let m: M = serde_json::from_slice(&body).map_err(|e| invalid("manifest", e.to_string()))?;
        let config_digest =
            Digest::parse(&m.config.digest).map_err(|e| invalid("manifest", e.to_string()))?;
        let config_bytes = {
            let resp = client.blob(&r.repo, &config_digest, 0).await?;
            let b = resp.bytes().await.map_err(|e| PullError::Download {
                layer: config_digest.to_string(),
                tries: 1,
                message: e.to_string(),
            })?;
            if Digest::of(config_digest.algorithm(), &b) != config_digest {
                return Err(PullError::Verify {
                    reference: name,
                    layer: config_digest.to_string(),
                    message: "config content does not match its digest".into(),
                });
            }
            b
        };
        let config: serde_json::Value =
            serde_json::from_slice(&config_bytes).map_err(|e| invalid("config", e.to_string()))?;
        let diff_ids: Vec<Digest> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().and_then(|s| Digest::parse(s).ok()))
                    .collect()
            })
            .unwrap_or_default();
        if diff_ids.len() != m.layers.len() {
            return Err(invalid(
                "config",
                format!("{} diff_ids for {} layers", diff_ids.len(), m.layers.len()),
            ));
        }
        let chain = reg_registry::digest::chain_ids(&diff_ids);
        progress(Progress::Resolved {
            digest: digest.to_string(),
            layers: m.layers.len(),
        });

        let mut tasks = tokio::task::JoinSet::new();
        let client = Arc::new(RegistryClient::clone_for(client));
        // Layers in parallel, but a bounded number at once: each unpacks on a blocking thread,
        // and a registry in the same process (`reg serve`) needs that pool to send the bytes.
        let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL_LAYERS));
        for ((layer, diff), chain_id) in m.layers.iter().zip(&diff_ids).zip(&chain) {
            let layer_digest =
                Digest::parse(&layer.digest).map_err(|e| invalid("manifest", e.to_string()))?;
            if self.snapshot_dir(&chain_id.to_string()).is_dir() {
                progress(Progress::LayerCached {
                    digest: layer.digest.clone(),
                });
                continue;
            }
            let (store, client, progress, repo, name) = (
                self.clone(),
                client.clone(),
                progress.clone(),
                r.repo.clone(),
                name.clone(),
            );
            let (diff, chain_id, size) = (diff.clone(), chain_id.clone(), layer.size.max(0) as u64);
            let permit = limit.clone();
            tasks.spawn(async move {
                let _permit = permit.acquire_owned().await;
                store
                    .fetch_layer(
                        &client,
                        &repo,
                        &name,
                        &layer_digest,
                        &diff,
                        &chain_id,
                        size,
                        progress,
                    )
                    .await
            });
        }
        let mut first_error = None;
        while let Some(done) = tasks.join_next().await {
            let result = done.unwrap_or_else(|e| {
                Err(PullError::Io {
                    path: self.root.clone(),
                    source: std::io::Error::other(e),
                })
            });
            // Siblings run to their end: each removes its own temporary data on failure, and a
            // layer that verified is worth keeping for the next pull.
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        // Kept byte for byte (a push elsewhere must give the same digests): JSON that is not
        // UTF-8 (serde_json does not check what it skips) is refused, never changed.
        let utf8 = |bytes: &[u8], what: &str| {
            String::from_utf8(bytes.to_vec()).map_err(|_| PullError::Invalid {
                reference: name.clone(),
                what: what.to_string(),
                message: "not UTF-8".into(),
            })
        };
        let manifest = utf8(&body, "the manifest")?;
        let config_raw = utf8(&config_bytes, "the image config")?;
        let rec = ImageRecord {
            reference: name,
            digest: digest.to_string(),
            id: config_digest.to_string(),
            config,
            chain: chain.iter().map(ToString::to_string).collect(),
            size: m.layers.iter().map(|l| l.size.max(0) as u64).sum(),
            manifest,
            media_type: media_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            config_raw,
            sources: m
                .layers
                .iter()
                .map(|l| (l.digest.clone(), format!("{}/{}", r.registry, r.repo)))
                .collect(),
        };
        let store = self.clone();
        let rec2 = rec.clone();
        tokio::task::spawn_blocking(move || store.put(&rec2))
            .await
            .map_err(|e| PullError::Io {
                path: self.root.clone(),
                source: std::io::Error::other(e),
            })??;
        Ok(rec)
    }

    /// Downloads, verifies and unpacks one layer in a single pass; resumes a broken download.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_layer(
        self: Arc<Self>,
        client: &RegistryClient,
        repo: &reg_registry::RepoName,
        reference: &str,
        layer: &Digest,
        diff: &Digest,
        chain_id: &Digest,
        size: u64,
        progress: Arc<impl Fn(Progress) + Send + Sync + 'static>,
    ) -> Result<(), PullError> {
        let blob_tmp = self.tmp_path("blob");
        let snap_tmp = self.tmp_path("snap");
        let io = |path: &Path, source| PullError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir(&snap_tmp).map_err(|e| io(&snap_tmp, e))?;
        let file = std::fs::File::create(&blob_tmp).map_err(|e| io(&blob_tmp, e))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let (layer_name, snap) = (layer.to_string(), snap_tmp.clone());
        let (layer_alg, diff_alg) = (layer.algorithm(), diff.algorithm());
        let worker = tokio::task::spawn_blocking(
            move || -> Result<(Digest, Option<Digest>, u64), PullError> {
                let mut tee = Tee {
                    inner: ChannelReader {
                        rx,
                        cur: Bytes::new(),
                    },
                    file,
                    hasher: Hasher::new(layer_alg),
                    total: 0,
                };
                let opts = unpack::Options {
                    diff_algorithm: Some(diff_alg),
                    ..unpack::Options::default()
                };
                let stats = unpack::unpack(&mut tee, &snap, &layer_name, opts)?;
                // Whatever the tar reader left (padding) still belongs to the blob and its digest.
                std::io::copy(&mut tee, &mut std::io::sink()).map_err(|e| PullError::Io {
                    path: snap.clone(),
                    source: e,
                })?;
                tee.file.sync_all().map_err(|e| PullError::Io {
                    path: snap.clone(),
                    source: e,
                })?;
                Ok((tee.hasher.finish(), stats.diff_id, tee.total))
            },
        );

        let mut received = 0u64;
        let mut tries = 0u32;
        let mut complete = false;
        let mut last_error = String::new();
        'download: while tries < 4 {
            tries += 1;
            let resp = match client.blob(repo, layer, received).await {
                Ok(r) => r,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(b) => {
                        received += b.len() as u64;
                        if tx.send(b).await.is_err() {
                            break 'download; // the worker stopped: its result says why
                        }
                        progress(Progress::LayerBytes {
                            digest: layer.to_string(),
                            done: received,
                            total: size,
                        });
                    }
                    Err(e) => {
                        last_error = e.to_string();
                        continue 'download;
                    }
                }
            }
            complete = true;
            break;
        }
        drop(tx);
        let cleanup = || {
            let _ = std::fs::remove_file(&blob_tmp);
            let _ = std::fs::remove_dir_all(&snap_tmp);
        };
        let outcome = worker.await.map_err(|e| PullError::Io {
            path: snap_tmp.clone(),
            source: std::io::Error::other(e),
        });
        let (got, got_diff, _total) = match outcome {
            Ok(Ok(v)) => v,
            Ok(Err(e)) | Err(e) => {
                cleanup();
                if !complete && !last_error.is_empty() {
                    return Err(PullError::Download {
                        layer: layer.to_string(),
                        tries,
                        message: last_error,
                    });
                }
                return Err(e);
            }
        };
        if !complete {
            cleanup();
            return Err(PullError::Download {
                layer: layer.to_string(),
                tries,
                message: last_error,
            });
        }
        if &got != layer || got_diff.as_ref() != Some(diff) {
            cleanup();
            return Err(PullError::Verify {
                reference: reference.to_string(),
                layer: layer.to_string(),
                message: format!(
                    "content has digest {got} (diff id {}), expected {layer} (diff id {diff})",
                    got_diff.map(|d| d.to_string()).unwrap_or_default()
                ),
            });
        }
        let blob = self.blob_path(layer);
        std::fs::rename(&blob_tmp, &blob).map_err(|e| io(&blob, e))?;
        let dest = self.snapshot_dir(&chain_id.to_string());
        if let Err(e) = std::fs::rename(&snap_tmp, &dest) {
            // Another pull finished the same layer first: theirs is as good as ours.
            let _ = std::fs::remove_dir_all(&snap_tmp);
            if !dest.is_dir() {
                return Err(io(&dest, e));
            }
        }
        progress(Progress::LayerDone {
            digest: layer.to_string(),
        });
        Ok(())
    }
}

/// Where `reg build` records its cache entries, under the store's root.
pub const BUILD_CACHE: &str = "build-cache";

/// One build-cache entry as the store sees it.
struct CacheEntry {
    path: PathBuf,
    modified: std::time::SystemTime,
    chain: Option<String>,
    blob: Option<String>,
    size: u64,
}
