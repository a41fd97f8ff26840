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
//!
//! [`BlobStore`] is what the rest of the server sees; the medium is one [`BlobBackend`]: [`local`]
//! (files, renames) or [`s3`] (an object store on its own runtime). The store never touches the
//! metadata database: the upload's recorded state ([`UploadParts`]) comes in and goes out through
//! [`Upload`].

mod backend;
mod local;
mod s3;

use std::collections::HashSet;
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;

use super::parts::UploadParts;
use crate::digest::{Digest, Hasher};
pub use backend::{stream_worker, StoredObject, Trashed, Upload};
use backend::{tokio_stream_from, BlobBackend};

/// Blob bytes on one medium (see the module's documentation).
pub struct BlobStore {
    backend: Box<dyn BlobBackend>,
}

impl BlobStore {
    /// Objects under `root`, upload files under `uploads` (both made if missing).
    pub fn open_local(
        root: &std::path::Path,
        uploads: &std::path::Path,
    ) -> std::io::Result<BlobStore> {
        Ok(BlobStore {
            backend: Box::new(local::Local::open(root, uploads)?),
        })
    }

    /// Opens the bucket and checks that it answers (a listing of one prefix).
    pub fn open_s3(cfg: &reg_config::StorageConfig) -> std::io::Result<BlobStore> {
        Ok(BlobStore {
            backend: Box::new(s3::S3::open(cfg)?),
        })
    }

    /// Whether other processes (replicas) may write the same uploads: S3.
    pub fn is_shared(&self) -> bool {
        self.backend.is_shared()
    }

    /// Opens `d` for reading from `offset`, `len` bytes, as a stream of chunks (read on a
    /// thread of their own, or the S3 runtime). `None` when the object is missing.
    pub async fn read(
        &self,
        d: &Digest,
        offset: u64,
        len: u64,
    ) -> std::io::Result<Option<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static>> {
        Ok(self
            .backend
            .read(d, offset, len)
            .await?
            .map(tokio_stream_from))
    }

    /// With `registry.storage.redirect` on S3: a presigned GET URL of `d`, valid for a short
    /// while, for the client to fetch the object from the bucket itself.
    pub async fn redirect_url(&self, d: &Digest) -> std::io::Result<Option<String>> {
        self.backend.redirect_url(d).await
    }

    /// Prepares the storage of a new upload.
    pub fn create_upload(&self, id: &str) -> std::io::Result<()> {
        self.backend.create_upload(id)
    }

    /// What the storage says an upload holds, for a session found only in the database
    /// (locally the file is the truth; on S3 the row is, so `recorded` is returned).
    pub fn upload_size(&self, id: &str, recorded: u64) -> Option<u64> {
        self.backend.upload_size(id, recorded)
    }

    /// Appends chunks from `rx` to the upload (blocking: run it on a worker thread), hashing as
    /// it goes. Returns the bytes appended. On an error the upload keeps exactly what it held
    /// before (S3) or up to the last whole chunk (local), and `up.size` says so.
    pub fn append(
        &self,
        up: &mut Upload,
        rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> (u64, Option<std::io::Error>) {
        self.backend.append(up, rx)
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
        self.backend
            .finish(up, digest, running, Box::new(before_commit))
    }

    /// Removes an upload's bytes (cancelled, expired, or failed).
    pub fn discard_upload(&self, id: &str, parts: &UploadParts) -> std::io::Result<()> {
        self.backend.discard_upload(id, parts)
    }

    /// Removes upload leftovers no session in `live` owns (start-up: single-request uploads
    /// cut short by a crash). Returns how many went.
    pub fn sweep_orphan_uploads(&self, live: &HashSet<String>) -> usize {
        self.backend.sweep_orphan_uploads(live)
    }

    /// Moves the object for `d` aside (the collector's step 2); `None` when there is none.
    pub fn move_to_trash(&self, d: &Digest) -> std::io::Result<Option<Trashed>> {
        let name = format!(
            "{}-{}-{}",
            d.algorithm().as_str(),
            d.hex(),
            uuid::Uuid::new_v4().simple()
        );
        self.backend.move_to_trash(d, &name)
    }

    /// Puts a trashed object back as the object for `d` (an identical copy written meanwhile
    /// is simply replaced: same digest, same bytes).
    pub fn restore(&self, trashed: &Trashed, d: &Digest) -> std::io::Result<()> {
        self.backend.restore(trashed, d)
    }

    /// Deletes a trashed object for good.
    pub fn forget(&self, trashed: &Trashed) -> std::io::Result<()> {
        self.backend.forget(trashed)
    }

    /// Everything in the trash (left by a collection that was cut short).
    pub fn trashed(&self) -> std::io::Result<Vec<Trashed>> {
        self.backend.trashed()
    }

    /// Every object: its digest (when the name is one), without looking at its contents.
    pub fn objects(&self) -> std::io::Result<Vec<StoredObject>> {
        self.backend.objects()
    }

    /// Size and modification time of a listed object (`None` if it is gone).
    pub fn stat(&self, o: &StoredObject) -> Option<(u64, SystemTime)> {
        o.size_modified.or_else(|| self.backend.stat(o))
    }

    /// Removes a listed object that is not a blob (a crashed copy's temporary file).
    pub fn remove_stray(&self, o: &StoredObject) -> std::io::Result<()> {
        self.backend.remove_stray(o)
    }
}
