//! Blobs on an S3-compatible object store (`object_store`, on a runtime of its own so that
//! blocking callers can drive it). Every full part (8 MiB) of an upload goes straight into an S3
//! multipart upload and the rest (the *tail*) into a small object named by its offset; the
//! session's row records the multipart id, the parts and the size ([`UploadParts`]), so another
//! replica can continue it. A blob becomes its object by one PUT or a server-side copy.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};

use super::backend::{object_key, BlobBackend, Chunks, StoredObject, Trashed, Upload};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::server::parts::UploadParts;

/// Size of an S3 part (S3 wants at least 5 MiB for every part but the last).
const PART_SIZE: usize = 8 * 1024 * 1024;

/// How long a presigned blob URL (`registry.storage.redirect`) stays valid: long enough for a
/// slow download to start, short enough that a leaked URL soon dies.
const REDIRECT_VALIDITY: Duration = Duration::from_secs(20 * 60);

/// Upload leftovers on S3 younger than this are never swept at start-up: another replica may
/// be about to finish them.
const S3_ORPHAN_AGE: Duration = Duration::from_secs(3600);

pub(super) struct S3 {
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
    /// Opens the bucket and checks that it answers (a listing of one prefix).
    pub(super) fn open(cfg: &reg_config::StorageConfig) -> std::io::Result<S3> {
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
        Ok(s3)
    }

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

impl BlobBackend for S3 {
    fn is_shared(&self) -> bool {
        true
    }

    fn read(
        &self,
        d: &Digest,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'_, std::io::Result<Option<Chunks>>> {
        let (store, key) = (self.store.clone(), self.object(d));
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
            // The GET's answer (status and headers) comes back first, so that a missing
            // object is a 404 and not a broken body; the body then streams through `tx`.
            let (found_tx, found) = tokio::sync::oneshot::channel();
            self.handle()?.spawn(async move {
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
                Ok(()) => Ok(Some(rx)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        }
        .boxed()
    }

    fn redirect_url(&self, d: &Digest) -> BoxFuture<'_, std::io::Result<Option<String>>> {
        let (store, key) = (self.store.clone(), self.object(d));
        async move {
            if !self.redirect {
                return Ok(None);
            }
            use object_store::signer::Signer as _;
            let url = self
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
        .boxed()
    }

    fn create_upload(&self, _id: &str) -> std::io::Result<()> {
        Ok(())
    }

    fn upload_size(&self, _id: &str, recorded: u64) -> Option<u64> {
        Some(recorded)
    }

    fn append(
        &self,
        up: &mut Upload,
        rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> (u64, Option<std::io::Error>) {
        let before = (up.size, up.parts.clone());
        match s3_append(self, up, rx) {
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

    fn finish(
        &self,
        up: &mut Upload,
        digest: &Digest,
        running: Option<Digest>,
        before_commit: Box<dyn FnOnce() -> std::io::Result<()> + '_>,
    ) -> std::io::Result<Option<Digest>> {
        s3_finish(self, up, digest, running, before_commit)
    }

    fn discard_upload(&self, id: &str, parts: &UploadParts) -> std::io::Result<()> {
        self.discard(id, parts)
    }

    fn sweep_orphan_uploads(&self, live: &HashSet<String>) -> usize {
        let mut removed = 0;
        let cutoff = SystemTime::now()
            .checked_sub(S3_ORPHAN_AGE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for o in self.list("_uploads/").unwrap_or_default() {
            let id = o.location.as_ref().rsplit('/').nth(1).unwrap_or("");
            let old = SystemTime::from(o.last_modified) < cutoff;
            if old && !live.contains(id) && self.delete(&o.location).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    fn move_to_trash(&self, d: &Digest, name: &str) -> std::io::Result<Option<Trashed>> {
        // S3 has no rename: copy, then delete (a push in between re-creates the row,
        // which the collector's step 3 sees, and puts the copy back).
        let (store, from) = (self.store.clone(), self.object(d));
        let to = self.key(&format!("_trash/{name}"));
        let (f, t) = (from.clone(), to.clone());
        match self.block(async move { store.copy(&f, &t).await }) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        self.delete(&from)?;
        Ok(Some(Trashed(to.to_string())))
    }

    fn restore(&self, trashed: &Trashed, d: &Digest) -> std::io::Result<()> {
        let (store, from, to) = (
            self.store.clone(),
            ObjPath::from(trashed.0.as_str()),
            self.object(d),
        );
        let f = from.clone();
        self.block(async move { store.copy(&f, &to).await })?;
        self.delete(&from)
    }

    fn forget(&self, trashed: &Trashed) -> std::io::Result<()> {
        self.delete(&ObjPath::from(trashed.0.as_str()))
    }

    fn trashed(&self) -> std::io::Result<Vec<Trashed>> {
        Ok(self
            .list("_trash/")?
            .into_iter()
            .map(|o| Trashed(o.location.to_string()))
            .collect())
    }

    fn objects(&self) -> std::io::Result<Vec<StoredObject>> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for o in self.list(&format!("{}/", alg.as_str()))? {
                let key = o.location.to_string();
                let hex = key.rsplit('/').next().unwrap_or("");
                out.push(StoredObject {
                    digest: Digest::parse(&format!("{}:{hex}", alg.as_str())).ok(),
                    name: key,
                    size_modified: Some((o.size, SystemTime::from(o.last_modified))),
                });
            }
        }
        Ok(out)
    }

    fn stat(&self, _o: &StoredObject) -> Option<(u64, SystemTime)> {
        // A listing always carries size and time: an object without them is gone.
        None
    }

    fn remove_stray(&self, o: &StoredObject) -> std::io::Result<()> {
        self.delete(&ObjPath::from(o.name.as_str()))
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
    before_commit: Box<dyn FnOnce() -> std::io::Result<()> + '_>,
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
