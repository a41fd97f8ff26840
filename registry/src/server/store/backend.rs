//! The seam between the blob store and its media: the [`BlobBackend`] trait and what crosses
//! it — an upload's state ([`Upload`]), listed and trashed objects, object names.

use std::collections::HashSet;
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::Stream;

use crate::digest::{Algorithm, Digest, Hasher};
use crate::server::parts::UploadParts;

/// Size of the chunks read from disk and sent to clients.
pub(super) const READ_CHUNK: usize = 256 * 1024;

/// The bytes of an object being read, chunk by chunk (a reader thread or the S3 runtime sends).
pub(super) type Chunks = tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>;

/// What the blob store needs of the medium its bytes live on. Everything but [`BlobBackend::read`]
/// and [`BlobBackend::redirect_url`] blocks: call it from the blocking pool or a thread of its own.
pub(super) trait BlobBackend: Send + Sync {
    /// Whether other processes (replicas) may write the same uploads.
    fn is_shared(&self) -> bool;

    /// `len` bytes of `d` from `offset` (`len` 0: to the end); `None` when the object is missing.
    fn read(
        &self,
        d: &Digest,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'_, std::io::Result<Option<Chunks>>>;

    /// A URL the client may fetch `d` from itself, when the medium offers one.
    fn redirect_url(&self, d: &Digest) -> BoxFuture<'_, std::io::Result<Option<String>>>;

    /// Prepares the storage of a new upload.
    fn create_upload(&self, id: &str) -> std::io::Result<()>;

    /// What the medium says an upload holds (`recorded`: what its row says).
    fn upload_size(&self, id: &str, recorded: u64) -> Option<u64>;

    /// See `BlobStore::append`.
    fn append(
        &self,
        up: &mut Upload,
        rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> (u64, Option<std::io::Error>);

    /// See `BlobStore::finish`; `running` is the session's own hash of every byte, if it has one
    /// in `digest`'s algorithm.
    fn finish(
        &self,
        up: &mut Upload,
        digest: &Digest,
        running: Option<Digest>,
        before_commit: Box<dyn FnOnce() -> std::io::Result<()> + '_>,
    ) -> std::io::Result<Option<Digest>>;

    /// Removes an upload's bytes.
    fn discard_upload(&self, id: &str, parts: &UploadParts) -> std::io::Result<()>;

    /// Removes upload leftovers no session in `live` owns; returns how many went.
    fn sweep_orphan_uploads(&self, live: &HashSet<String>) -> usize;

    /// Moves the object for `d` into the trash as `name`; `None` when there is none.
    fn move_to_trash(&self, d: &Digest, name: &str) -> std::io::Result<Option<Trashed>>;

    /// Puts a trashed object back as the object for `d`.
    fn restore(&self, trashed: &Trashed, d: &Digest) -> std::io::Result<()>;

    /// Deletes a trashed object for good.
    fn forget(&self, trashed: &Trashed) -> std::io::Result<()>;

    /// Everything in the trash.
    fn trashed(&self) -> std::io::Result<Vec<Trashed>>;

    /// Every object, named as the medium names it.
    fn objects(&self) -> std::io::Result<Vec<StoredObject>>;

    /// Size and modification time of a listed object the listing did not give (`None`: gone).
    fn stat(&self, o: &StoredObject) -> Option<(u64, SystemTime)>;

    /// Removes a listed object that is not a blob.
    fn remove_stray(&self, o: &StoredObject) -> std::io::Result<()>;
}

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

/// Where an object lives under the store's root or prefix: `<algorithm>/<ab>/<hex>`.
pub(super) fn object_key(d: &Digest) -> String {
    format!("{}/{}/{}", d.algorithm().as_str(), &d.hex()[..2], d.hex())
}

/// One stored object as a listing finds it.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// `None`: the name is not a digest (a crashed copy's temporary file).
    pub digest: Option<Digest>,
    /// A path on the local filesystem, a key on S3.
    pub(super) name: String,
    /// Known from an S3 listing; looked up on demand locally.
    pub(super) size_modified: Option<(u64, SystemTime)>,
}

/// An object moved aside by the collector (a path, or an S3 key).
#[derive(Debug, Clone)]
pub struct Trashed(pub(super) String);

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

pub(super) fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
