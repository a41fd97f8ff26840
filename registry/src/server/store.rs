//! Blob bytes: content-addressed objects, and the uploads they are made from — on the local
//! filesystem (the default) or on any S3-compatible object store (`registry.storage`).
//!
//! Objects live under `<algorithm>/<first two hex>/<hex>`. A blob becomes an object only once its
//! digest is verified, atomically: by a rename on the local filesystem, by a single PUT or a
//! server-side copy on S3 (a reader sees the whole blob or none). A blob pushed twice is stored
//! once.
//!
//! Uploads: locally, one file per session under the uploads dir, appended and hashed in one
//! pass. On S3, every full part (8 MiB) of a session goes straight into an S3 multipart upload
//! and the rest (the *tail*) into a small object named by its offset; the session's row in the
//! metadata database records the multipart id, the parts and the size. So a chunked upload
//! started on one replica can be continued and finished on another, and no blob is ever held
//! in memory beyond one part. The replica that has hashed every byte so far checks the digest
//! from its running hash; another one hashes the assembled object once more before it commits.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};

use super::parts::UploadParts;
use crate::digest::{Algorithm, Digest, Hasher};

/// Size of the chunks read from disk and sent to clients.
const READ_CHUNK: usize = 256 * 1024;

/// Size of an S3 part (S3 wants at least 5 MiB for every part but the last).
const PART_SIZE: usize = 8 * 1024 * 1024;

/// How long a presigned blob URL (`registry.storage.redirect`) stays valid: long enough for a
/// slow download to start, short enough that a leaked URL soon dies.
const REDIRECT_VALIDITY: Duration = Duration::from_secs(20 * 60);

/// Upload leftovers on S3 younger than this are never swept at start-up: another replica may
/// be about to finish them.
const S3_ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// An upload session between requests. `size` is what the store holds; `hasher`, when
/// present, has hashed exactly those bytes.
pub struct Upload {
    pub id: String,
    pub repo: String,
    pub size: u64,
    pub hasher: Option<Hasher>,
    pub parts: UploadParts,
    /// S3: the tail's bytes when this process has them (else they are read back).
    pub tail: Option<Bytes>,
}

impl Upload {
    pub fn new(id: String, repo: String, algorithm: Algorithm) -> Upload {
        Upload {
            id,
            repo,
            size: 0,
            hasher: Some(Hasher::new(algorithm)),
            parts: UploadParts::default(),
            tail: Some(Bytes::new()),
        }
    }

    /// Takes the session's state out (to hand it to a worker thread), leaving an empty
    /// session with the same id and repository in its place.
    pub fn take(&mut self) -> Upload {
        let empty = Upload::new(self.id.clone(), self.repo.clone(), Algorithm::Sha256);
        std::mem::replace(self, empty)
    }
}

struct S3 {
    store: Arc<AmazonS3>,
    prefix: String,
    /// Blob GETs answer with a presigned URL (`registry.storage.redirect`).
    redirect: bool,
    /// Every S3 call runs on this runtime, from whatever thread asks (see [`S3::block`]).
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for S3 {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl S3 {
    fn handle(&self) -> std::io::Result<&tokio::runtime::Handle> {
        self.rt
            .as_ref()
            .map(tokio::runtime::Runtime::handle)
            .ok_or_else(|| std::io::Error::other("object store closed"))
    }

    /// Runs one S3 call to completion (call from a blocking or worker thread, never from an
    /// async task).
    fn block<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, object_store::Error>> + Send,
    ) -> std::io::Result<T>
    where
        T: Send,
    {
        self.handle()?.block_on(f).map_err(io_err)
    }

    fn key(&self, rest: &str) -> ObjPath {
        ObjPath::from(format!("{}{rest}", self.prefix))
    }

    fn object(&self, d: &Digest) -> ObjPath {
        self.key(&object_key(d))
    }

    fn upload_dir(&self, id: &str) -> String {
        format!("_uploads/{id}/")
    }

    fn tail_key(&self, id: &str, offset: u64) -> ObjPath {
        self.key(&format!("{}tail-{offset}", self.upload_dir(id)))
    }

    fn data_key(&self, id: &str) -> ObjPath {
        self.key(&format!("{}data", self.upload_dir(id)))
    }

    fn get_range(&self, key: &ObjPath, range: std::ops::Range<u64>) -> std::io::Result<Vec<u8>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        let store = self.store.clone();
        let key = key.clone();
        self.block(async move { store.get_opts(&key, opts).await?.bytes().await })
            .map(|b| b.to_vec())
    }

    fn list(&self, prefix: &str) -> std::io::Result<Vec<object_store::ObjectMeta>> {
        let store = self.store.clone();
        let p = self.key(prefix);
        self.block(async move { store.list(Some(&p)).try_collect::<Vec<_>>().await })
    }

    fn delete(&self, key: &ObjPath) -> std::io::Result<()> {
        let store = self.store.clone();
        let key = key.clone();
        match self.block(async move { store.delete(&key).await }) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Removes whatever an upload left: its multipart upload and its objects.
    fn discard(&self, id: &str, parts: &UploadParts) -> std::io::Result<()> {
        if let Some(m) = &parts.multipart {
            let (store, key, m) = (self.store.clone(), self.data_key(id), m.clone());
            let _ = self.block(async move { store.abort_multipart(&key, &m).await });
        }
        for o in self.list(&self.upload_dir(id))? {
            self.delete(&o.location)?;
        }
        Ok(())
    }
}

fn io_err(e: object_store::Error) -> std::io::Error {
    match e {
        object_store::Error::NotFound { .. } => {
            std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string())
        }
        e => std::io::Error::other(e.to_string()),
    }
}

fn object_key(d: &Digest) -> String {
    format!("{}/{}/{}", d.algorithm().as_str(), &d.hex()[..2], d.hex())
}

enum Backend {
    Local { root: PathBuf, uploads: PathBuf },
    S3(S3),
}

pub struct BlobStore {
    backend: Backend,
}

/// One stored object as a listing finds it.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// `None`: the name is not a digest (a crashed copy's temporary file).
    pub digest: Option<Digest>,
    /// A path on the local filesystem, a key on S3.
    name: String,
    /// Known from an S3 listing; looked up on demand locally.
    size_modified: Option<(u64, SystemTime)>,
}

/// An object moved aside by the collector (a path, or an S3 key).
#[derive(Debug, Clone)]
pub struct Trashed(String);

impl Trashed {
    /// The digest its name records.
    pub fn digest(&self) -> Option<Digest> {
        let name = self.0.rsplit('/').next().unwrap_or(&self.0);
        let mut parts = name.splitn(3, '-');
        match (parts.next(), parts.next()) {
            (Some(alg), Some(hex)) => Digest::parse(&format!("{alg}:{hex}")).ok(),
            _ => None,
        }
    }
}

impl BlobStore {
    pub fn open_local(root: &Path, uploads: &Path) -> std::io::Result<BlobStore> {
        std::fs::create_dir_all(root)?;
        std::fs::create_dir_all(uploads)?;
        Ok(BlobStore {
            backend: Backend::Local {
                root: root.to_path_buf(),
                uploads: uploads.to_path_buf(),
            },
        })
    }

    /// Opens the bucket and checks that it answers (a listing of one prefix).
    pub fn open_s3(cfg: &reg_config::StorageConfig) -> std::io::Result<BlobStore> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(if cfg.region.is_empty() {
                "us-east-1"
            } else {
                &cfg.region
            })
            .with_virtual_hosted_style_request(!cfg.path_style);
        if !cfg.endpoint.is_empty() {
            b = b
                .with_endpoint(&cfg.endpoint)
                .with_allow_http(cfg.endpoint.starts_with("http://"));
        }
        if !cfg.access_key_id.is_empty() {
            b = b
                .with_access_key_id(&cfg.access_key_id)
                .with_secret_access_key(&cfg.secret_access_key);
        }
        let store = b
            .build()
            .map_err(|e| std::io::Error::other(format!("S3 bucket {}: {e}", cfg.bucket)))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("reg-s3")
            .enable_all()
            .build()?;
        let s3 = S3 {
            store: Arc::new(store),
            prefix: cfg.prefix.clone(),
            redirect: cfg.redirect,
            rt: Some(rt),
        };
        s3.list("_probe/").map_err(|e| {
            std::io::Error::other(format!(
                "S3 bucket {} at {}: {e} — check registry.storage (endpoint, bucket, credentials, path_style)",
                cfg.bucket, cfg.endpoint
            ))
        })?;
        Ok(BlobStore {
            backend: Backend::S3(s3),
        })
    }

    /// Whether other processes (replicas) may write the same uploads: S3.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::S3(_))
    }

    fn local_path(root: &Path, d: &Digest) -> PathBuf {
        root.join(object_key(d))
    }

    /// The local file of an upload (local backend only).
    pub fn upload_path(&self, id: &str) -> Option<PathBuf> {
        match &self.backend {
            Backend::Local { uploads, .. } => Some(uploads.join(id)),
            Backend::S3(_) => None,
        }
    }

    /// Opens `d` for reading from `offset`, `len` bytes, as a stream of chunks (read on a
    /// thread of their own, or the S3 runtime). `None` when the object is missing.
    pub async fn read(
        &self,
        d: &Digest,
        offset: u64,
        len: u64,
    ) -> std::io::Result<Option<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static>> {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        match &self.backend {
            Backend::Local { root, .. } => {
                let mut file = match std::fs::File::open(Self::local_path(root, d)) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                file.seek(SeekFrom::Start(offset))?;
                // The reader thread ends when the client goes away (send fails) or the range is done.
                let _done = stream_worker("reg-blob-read", move || {
                    read_file_into(&mut file, len, &tx);
                });
            }
            Backend::S3(s3) => {
                let (store, key) = (s3.store.clone(), s3.object(d));
                // The GET's answer (status and headers) comes back first, so that a missing
                // object is a 404 and not a broken body; the body then streams through `tx`.
                let (found_tx, found) = tokio::sync::oneshot::channel();
                s3.handle()?.spawn(async move {
                    let opts = GetOptions {
                        range: (len > 0).then_some(GetRange::Bounded(offset..offset + len)),
                        ..GetOptions::default()
                    };
                    let mut body = match store.get_opts(&key, opts).await {
                        Ok(r) => {
                            let _ = found_tx.send(Ok(()));
                            r.into_stream()
                        }
                        Err(e) => {
                            let _ = found_tx.send(Err(io_err(e)));
                            return;
                        }
                    };
                    while let Some(chunk) = body.next().await {
                        if tx.send(chunk.map_err(io_err)).await.is_err() {
                            return;
                        }
                    }
                });
                match found.await.map_err(std::io::Error::other)? {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Some(tokio_stream_from(rx)))
    }

    /// With `registry.storage.redirect` on S3: a presigned GET URL of `d`, valid for
    /// [`REDIRECT_VALIDITY`], for the client to fetch the object from the bucket itself.
    pub async fn redirect_url(&self, d: &Digest) -> std::io::Result<Option<String>> {
        let Backend::S3(s3) = &self.backend else {
            return Ok(None);
        };
        if !s3.redirect {
            return Ok(None);
        }
        use object_store::signer::Signer as _;
        let (store, key) = (s3.store.clone(), s3.object(d));
        let url = s3
            .handle()?
            .spawn(async move {
                store
                    .signed_url(axum::http::Method::GET, &key, REDIRECT_VALIDITY)
                    .await
            })
            .await
            .map_err(std::io::Error::other)?
            .map_err(io_err)?;
        Ok(Some(url.to_string()))
    }

    /// Prepares the storage of a new upload.
    pub fn create_upload(&self, id: &str) -> std::io::Result<()> {
        match &self.backend {
            Backend::Local { uploads, .. } => std::fs::File::create(uploads.join(id)).map(|_| ()),
            Backend::S3(_) => Ok(()),
        }
    }

    /// What the storage says an upload holds, for a session found only in the database
    /// (locally the file is the truth; on S3 the row is, so `recorded` is returned).
    pub fn upload_size(&self, id: &str, recorded: u64) -> Option<u64> {
        match &self.backend {
            Backend::Local { uploads, .. } => {
                std::fs::metadata(uploads.join(id)).ok().map(|m| m.len())
            }
            Backend::S3(_) => Some(recorded),
        }
    }

    /// Appends chunks from `rx` to the upload (blocking: run it on a worker thread), hashing as
    /// it goes. Returns the bytes appended. On an error the upload keeps exactly what it held
    /// before (S3) or up to the last whole chunk (local), and `up.size` says so.
    pub fn append(
        &self,
        up: &mut Upload,
        rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> (u64, Option<std::io::Error>) {
        match &self.backend {
            Backend::Local { uploads, .. } => {
                let (hasher, written, err) =
                    append_chunks(&uploads.join(&up.id), up.size, up.hasher.take(), rx);
                up.hasher = hasher;
                up.size += written;
                (written, err)
            }
            Backend::S3(s3) => {
                let before = (up.size, up.parts.clone());
                match s3_append(s3, up, rx) {
                    Ok(written) => (written, None),
                    Err(e) => {
                        // Back to the recorded state; the running hash is no longer of it.
                        (up.size, up.parts) = before;
                        up.tail = None;
                        up.hasher = None;
                        (0, Some(e))
                    }
                }
            }
        }
    }

    /// Verifies the complete upload against `digest` and, if it matches, calls `before_commit`
    /// and makes the bytes the object for `digest` (atomic). `Ok(Some(computed))`: a mismatch;
    /// the upload's bytes are gone and nothing was stored. Blocking.
    pub fn finish(
        &self,
        up: &mut Upload,
        digest: &Digest,
        before_commit: impl FnOnce() -> std::io::Result<()>,
    ) -> std::io::Result<Option<Digest>> {
        let running = up
            .hasher
            .take()
            .filter(|h| h.algorithm() == digest.algorithm())
            .map(Hasher::finish);
        match &self.backend {
            Backend::Local { root, uploads } => {
                let path = uploads.join(&up.id);
                let computed = match running {
                    Some(c) => c,
                    None => hash_file(&path, digest.algorithm())?.0,
                };
                if &computed != digest {
                    let _ = std::fs::remove_file(&path);
                    return Ok(Some(computed));
                }
                before_commit()?;
                commit_file(&path, &Self::local_path(root, digest))?;
                Ok(None)
            }
            Backend::S3(s3) => s3_finish(s3, up, digest, running, before_commit),
        }
    }

    /// Removes an upload's bytes (cancelled, expired, or failed).
    pub fn discard_upload(&self, id: &str, parts: &UploadParts) -> std::io::Result<()> {
        match &self.backend {
            Backend::Local { uploads, .. } => match std::fs::remove_file(uploads.join(id)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            Backend::S3(s3) => s3.discard(id, parts),
        }
    }

    /// Removes upload leftovers no session in `live` owns (start-up: single-request uploads
    /// cut short by a crash). Returns how many went.
    pub fn sweep_orphan_uploads(&self, live: &HashSet<String>) -> usize {
        let mut removed = 0;
        match &self.backend {
            Backend::Local { uploads, .. } => {
                if let Ok(dir) = std::fs::read_dir(uploads) {
                    for e in dir.flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if !live.contains(&name) && std::fs::remove_file(e.path()).is_ok() {
                            removed += 1;
                        }
                    }
                }
            }
            Backend::S3(s3) => {
                let cutoff = SystemTime::now()
                    .checked_sub(S3_ORPHAN_AGE)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                for o in s3.list("_uploads/").unwrap_or_default() {
                    let id = o.location.as_ref().rsplit('/').nth(1).unwrap_or("");
                    let old = SystemTime::from(o.last_modified) < cutoff;
                    if old && !live.contains(id) && s3.delete(&o.location).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        removed
    }

    /// Moves the object for `d` aside (the collector's step 2); `None` when there is none.
    pub fn move_to_trash(&self, d: &Digest) -> std::io::Result<Option<Trashed>> {
        let name = format!(
            "{}-{}-{}",
            d.algorithm().as_str(),
            d.hex(),
            uuid::Uuid::new_v4().simple()
        );
        match &self.backend {
            Backend::Local { root, .. } => {
                let trash = root.join("_trash");
                std::fs::create_dir_all(&trash)?;
                let to = trash.join(name);
                match std::fs::rename(Self::local_path(root, d), &to) {
                    Ok(()) => Ok(Some(Trashed(to.to_string_lossy().into_owned()))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Backend::S3(s3) => {
                // S3 has no rename: copy, then delete (a push in between re-creates the row,
                // which the collector's step 3 sees, and puts the copy back).
                let (store, from) = (s3.store.clone(), s3.object(d));
                let to = s3.key(&format!("_trash/{name}"));
                let (f, t) = (from.clone(), to.clone());
                match s3.block(async move { store.copy(&f, &t).await }) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                }
                s3.delete(&from)?;
                Ok(Some(Trashed(to.to_string())))
            }
        }
    }

    /// Puts a trashed object back as the object for `d` (an identical copy written meanwhile
    /// is simply replaced: same digest, same bytes).
    pub fn restore(&self, trashed: &Trashed, d: &Digest) -> std::io::Result<()> {
        match &self.backend {
            Backend::Local { root, .. } => {
                let dst = Self::local_path(root, d);
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::rename(&trashed.0, dst)
            }
            Backend::S3(s3) => {
                let (store, from, to) = (
                    s3.store.clone(),
                    ObjPath::from(trashed.0.as_str()),
                    s3.object(d),
                );
                let f = from.clone();
                s3.block(async move { store.copy(&f, &to).await })?;
                s3.delete(&from)
            }
        }
    }

    /// Deletes a trashed object for good.
    pub fn forget(&self, trashed: &Trashed) -> std::io::Result<()> {
        match &self.backend {
            Backend::Local { .. } => match std::fs::remove_file(&trashed.0) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            Backend::S3(s3) => s3.delete(&ObjPath::from(trashed.0.as_str())),
        }
    }

    /// Everything in the trash (left by a collection that was cut short).
    pub fn trashed(&self) -> std::io::Result<Vec<Trashed>> {
        match &self.backend {
            Backend::Local { root, .. } => {
                let Ok(entries) = std::fs::read_dir(root.join("_trash")) else {
                    return Ok(Vec::new());
                };
                Ok(entries
                    .flatten()
                    .map(|e| Trashed(e.path().to_string_lossy().into_owned()))
                    .collect())
            }
            Backend::S3(s3) => Ok(s3
                .list("_trash/")?
                .into_iter()
                .map(|o| Trashed(o.location.to_string()))
                .collect()),
        }
    }

    /// Every object: its digest (when the name is one), without looking at its contents.
    pub fn objects(&self) -> std::io::Result<Vec<StoredObject>> {
        let mut out = Vec::new();
        match &self.backend {
            Backend::Local { root, .. } => {
                for alg in [Algorithm::Sha256, Algorithm::Sha512] {
                    let Ok(prefixes) = std::fs::read_dir(root.join(alg.as_str())) else {
                        continue;
                    };
                    for p in prefixes.flatten() {
                        let Ok(files) = std::fs::read_dir(p.path()) else {
                            continue;
                        };
                        for f in files.flatten() {
                            let name = f.file_name().to_string_lossy().into_owned();
                            out.push(StoredObject {
                                digest: Digest::parse(&format!("{}:{name}", alg.as_str())).ok(),
                                name: f.path().to_string_lossy().into_owned(),
                                size_modified: None,
                            });
                        }
                    }
                }
            }
            Backend::S3(s3) => {
                for alg in [Algorithm::Sha256, Algorithm::Sha512] {
                    for o in s3.list(&format!("{}/", alg.as_str()))? {
                        let key = o.location.to_string();
                        let hex = key.rsplit('/').next().unwrap_or("");
                        out.push(StoredObject {
                            digest: Digest::parse(&format!("{}:{hex}", alg.as_str())).ok(),
                            name: key,
                            size_modified: Some((o.size, SystemTime::from(o.last_modified))),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Size and modification time of a listed object (`None` if it is gone).
    pub fn stat(&self, o: &StoredObject) -> Option<(u64, SystemTime)> {
        if let Some(sm) = o.size_modified {
            return Some(sm);
        }
        let m = std::fs::metadata(&o.name).ok()?;
        Some((m.len(), m.modified().ok()?))
    }

    /// Removes a listed object that is not a blob (a crashed copy's temporary file).
    pub fn remove_stray(&self, o: &StoredObject) -> std::io::Result<()> {
        match &self.backend {
            Backend::Local { .. } => std::fs::remove_file(&o.name),
            Backend::S3(s3) => s3.delete(&ObjPath::from(o.name.as_str())),
        }
    }
}

/// Sends `len` bytes of `file` to `tx` in chunks; stops when the client goes away.
fn read_file_into(
    file: &mut std::fs::File,
    len: u64,
    tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) {
    let mut left = len;
    while left > 0 {
        let want = left.min(READ_CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        let got = match file.read(&mut buf) {
            Ok(0) => {
                let _ = tx.blocking_send(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob shorter than recorded",
                )));
                return;
            }
            Ok(n) => n,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        buf.truncate(got);
        left -= got as u64;
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return;
        }
    }
}

/// Makes the verified upload file `src` the object at `dst` (atomic). An identical object that
/// already exists is replaced, not kept: the collector may be moving it aside at this very
/// moment, and this push's copy must then be the one that stays.
fn commit_file(src: &Path, dst: &Path) -> std::io::Result<()> {
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::rename(src, dst) {
        Ok(()) => Ok(()),
        // Uploads on another filesystem: copy next to the target, then rename into place.
        Err(e) if e.raw_os_error() == Some(18) => {
            let tmp = dst.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
            std::fs::copy(src, &tmp)?;
            std::fs::rename(&tmp, dst)?;
            std::fs::remove_file(src)
        }
        Err(e) => Err(e),
    }
}

/// The tail of an S3 upload: from this process's memory, or read back from its object.
fn s3_tail(s3: &S3, up: &mut Upload) -> std::io::Result<Vec<u8>> {
    let want = (up.size - up.parts.parts_bytes) as usize;
    if let Some(t) = up.tail.take().filter(|t| t.len() == want) {
        // Not copied: the upload of the last request's tail has dropped its handle.
        return Ok(Vec::from(t));
    }
    let mut t = s3.get_range(&s3.tail_key(&up.id, up.parts.parts_bytes), 0..want as u64)?;
    // A later write cut short by a crash may have left a longer object: the row is the truth.
    t.truncate(want);
    if t.len() != want {
        return Err(std::io::Error::other(format!(
            "upload {}: its tail holds {} bytes, {want} were recorded",
            up.id,
            t.len()
        )));
    }
    Ok(t)
}

fn s3_put_part(s3: &S3, up: &mut Upload, part: Vec<u8>) -> std::io::Result<()> {
    let key = s3.data_key(&up.id);
    let multipart = match &up.parts.multipart {
        Some(m) => m.clone(),
        None => {
            let (store, k) = (s3.store.clone(), key.clone());
            let m = s3.block(async move { store.create_multipart(&k).await })?;
            up.parts.multipart = Some(m.clone());
            m
        }
    };
    let (store, idx, n) = (s3.store.clone(), up.parts.etags.len(), part.len() as u64);
    let id = s3.block(async move {
        store
            .put_part(&key, &multipart, idx, PutPayload::from(part))
            .await
    })?;
    up.parts.etags.push(id.content_id);
    up.parts.parts_bytes += n;
    Ok(())
}

fn s3_append(
    s3: &S3,
    up: &mut Upload,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> std::io::Result<u64> {
    let start = up.size;
    let mut buf = s3_tail(s3, up)?;
    let old_tail_at = up.parts.parts_bytes;
    let mut received = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        if let Some(h) = up.hasher.as_mut() {
            h.update(&chunk);
        }
        received += chunk.len() as u64;
        buf.extend_from_slice(&chunk);
        if buf.len() >= PART_SIZE {
            let part = std::mem::take(&mut buf);
            s3_put_part(s3, up, part)?;
        }
    }
    let size = up.parts.parts_bytes + buf.len() as u64;
    let tail = Bytes::from(buf);
    if up.parts.parts_bytes != old_tail_at || received > 0 {
        let (store, key, payload) = (
            s3.store.clone(),
            s3.tail_key(&up.id, up.parts.parts_bytes),
            PutPayload::from(tail.clone()),
        );
        s3.block(async move { store.put(&key, payload).await })?;
    }
    up.size = size;
    up.tail = Some(tail);
    Ok(size - start)
}

fn s3_finish(
    s3: &S3,
    up: &mut Upload,
    digest: &Digest,
    running: Option<Digest>,
    before_commit: impl FnOnce() -> std::io::Result<()>,
) -> std::io::Result<Option<Digest>> {
    let target = s3.object(digest);
    let tail = s3_tail(s3, up)?;
    if up.parts.etags.is_empty() {
        // Small blob: everything is in the tail; one PUT makes the object.
        let computed = running.unwrap_or_else(|| {
            let mut h = Hasher::new(digest.algorithm());
            h.update(&tail);
            h.finish()
        });
        if &computed != digest {
            s3.discard(&up.id, &up.parts)?;
            return Ok(Some(computed));
        }
        before_commit()?;
        let store = s3.store.clone();
        s3.block(async move { store.put(&target, PutPayload::from(tail)).await })?;
        s3.discard(&up.id, &up.parts)?;
        return Ok(None);
    }
    // Large blob: the tail is the last part; the completed upload is checked, then copied.
    if !tail.is_empty() {
        s3_put_part(s3, up, tail)?;
    }
    let (store, data, multipart, parts) = (
        s3.store.clone(),
        s3.data_key(&up.id),
        up.parts.multipart.clone().unwrap_or_default(),
        up.parts
            .etags
            .iter()
            .map(|e| PartId {
                content_id: e.clone(),
            })
            .collect::<Vec<_>>(),
    );
    let d2 = data.clone();
    s3.block(async move { store.complete_multipart(&d2, &multipart, parts).await })?;
    up.parts.multipart = None;
    let computed = match running {
        Some(c) => c,
        None => {
            let (store, d2, alg) = (s3.store.clone(), data.clone(), digest.algorithm());
            s3.block(async move {
                let mut h = Hasher::new(alg);
                let mut body = store.get(&d2).await?.into_stream();
                while let Some(chunk) = body.next().await {
                    h.update(&chunk?);
                }
                Ok(h.finish())
            })?
        }
    };
    if &computed != digest {
        s3.discard(&up.id, &up.parts)?;
        return Ok(Some(computed));
    }
    before_commit()?;
    let store = s3.store.clone();
    s3.block(async move { store.copy(&data, &target).await })?;
    s3.discard(&up.id, &up.parts)?;
    Ok(None)
}

/// Runs a long streaming job (one transfer's disk side) on its own thread rather than the
/// blocking pool, so that many slow transfers can never starve short metadata queries.
/// The job owns its ends of the channels it uses; the returned receiver yields its result.
pub fn stream_worker<T: Send + 'static>(
    name: &str,
    job: impl FnOnce() -> T + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _ = tx.send(job());
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a transfer thread");
    }
    rx
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Hashes a whole file (used when an upload's running hash was lost to a restart, or when the
/// final digest uses another algorithm than the running hash).
fn hash_file(path: &Path, algorithm: Algorithm) -> std::io::Result<(Digest, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new(algorithm);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((h.finish(), total))
}

/// Appends chunks from `rx` to `file`, hashing as it goes. Returns the hasher and the number of
/// bytes appended; on a write error the file is cut back to the last whole chunk so the session's
/// recorded size stays the truth.
fn append_chunks(
    path: &Path,
    start: u64,
    mut hasher: Option<Hasher>,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> (Option<Hasher>, u64, Option<std::io::Error>) {
    let mut file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) => return (hasher, 0, Some(e)),
    };
    // Anything past the recorded size is a torn write from a crash: drop it before appending.
    if let Err(e) = file
        .set_len(start)
        .and_then(|()| file.seek(SeekFrom::Start(start)))
    {
        return (hasher, 0, Some(e));
    }
    let mut written = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        if let Err(e) = file.write_all(&chunk) {
            let _ = file.set_len(start + written);
            return (hasher, written, Some(e));
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        written += chunk.len() as u64;
    }
    (hasher, written, None)
}
