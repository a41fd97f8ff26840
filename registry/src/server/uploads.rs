//! The upload-session protocol, as a service: sessions start (bounded per client), take chunks
//! that must continue where the upload ends, and finish by verifying the digest and committing
//! the blob; cancelled, failed or expired ones leave nothing behind.
//!
//! A session lives in memory while this process serves it (the running hash saves a second
//! pass) and in its row in the metadata database (so it survives a restart). With a shared blob
//! store (S3, several replicas) the row is the truth: a replica whose memory no longer matches
//! the row forgets its running hash and continues from what the row records, and a session
//! another replica ended is unknown here too.
//!
//! Nothing here knows HTTP: the body comes in as a stream of chunks, `Content-Range` as its
//! value, and failures leave as [`UploadError`], which `error.rs` turns into the spec's answer.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::db;
use super::meta::{Meta, MetaError};
use super::quota::{LinkError, QuotaExceeded};
use super::store::{self, BlobStore, Upload};
use crate::digest::{Algorithm, Digest};

/// Why an upload request failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("upload {0} is not known (finished, cancelled or expired); start a new one")]
    Unknown(String),
    #[error(
        "{cap} upload sessions are open for this client already; finish or cancel one \
         (DELETE its upload URL) or let them expire"
    )]
    TooMany { cap: u64 },
    /// A chunk that does not continue the upload; nothing of it was appended.
    #[error("{why}")]
    Range {
        why: String,
        repo: String,
        id: String,
        size: u64,
    },
    #[error("upload body ended early ({cause}); {kept} bytes are kept, resume from there")]
    BodyEnded { cause: String, kept: u64 },
    #[error("Content-Range announced {announced} bytes but the body had {written}")]
    SizeMismatch { announced: u64, written: u64 },
    #[error("uploaded content has digest {computed}, not {expected}; nothing was stored")]
    DigestMismatch { computed: Digest, expected: Digest },
    #[error("writing upload {id}: {source}")]
    Write { id: String, source: std::io::Error },
    #[error("upload writer thread did not start or panicked")]
    WriterLost,
    #[error(transparent)]
    Storage(#[from] std::io::Error),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    #[error("blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("session map poisoned")]
    Poisoned,
}

impl From<LinkError> for UploadError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Meta(e) => UploadError::Meta(e),
            LinkError::Quota(q) => UploadError::Quota(q),
        }
    }
}

/// Where a session stands: what the client is told after each request.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub id: String,
    /// Bytes stored so far.
    pub size: u64,
}

type Session = Arc<tokio::sync::Mutex<Upload>>;

/// The upload sessions of this process, over the metadata and the blob store.
pub struct Uploads {
    meta: Arc<Meta>,
    store: Arc<BlobStore>,
    sessions: Mutex<HashMap<String, Session>>,
    /// `registry.limits.upload_sessions_per_client`.
    per_client: u64,
    /// `registry.upload_expiry_secs`.
    expiry_secs: i64,
}

/// Runs a blocking closure (database, file system) off the async workers.
async fn blocking<T, F>(f: F) -> Result<T, UploadError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Ok(tokio::task::spawn_blocking(f).await?)
}

impl Uploads {
    pub fn new(meta: Arc<Meta>, store: Arc<BlobStore>, per_client: u64, expiry_secs: u64) -> Self {
        Uploads {
            meta,
            store,
            sessions: Mutex::new(HashMap::new()),
            per_client,
            expiry_secs: i64::try_from(expiry_secs).unwrap_or(i64::MAX),
        }
    }

    /// Starts a session in `repo` for `owner` (a user name; empty for an anonymous caller,
    /// who is then counted by `client` address). Sessions are capped per owner: each holds a
    /// row and a file.
    pub async fn start(
        &self,
        repo: &str,
        owner: &str,
        client: &str,
    ) -> Result<Progress, UploadError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (store, meta, i, r) = (
            self.store.clone(),
            self.meta.clone(),
            id.clone(),
            repo.to_string(),
        );
        let (owner, client, cap) = (owner.to_string(), client.to_string(), self.per_client);
        let created = blocking(move || -> Result<bool, UploadError> {
            if !meta.create_upload(&i, &r, &owner, &client, cap)? {
                return Ok(false);
            }
            if let Err(e) = store.create_upload(&i) {
                let _ = meta.delete_upload(&i);
                return Err(e.into());
            }
            Ok(true)
        })
        .await??;
        if !created {
            return Err(UploadError::TooMany { cap });
        }
        let s = Upload::new(id.clone(), repo.to_string(), Algorithm::Sha256);
        self.sessions
            .lock()
            .map_err(|_| UploadError::Poisoned)?
            .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(s)));
        Ok(Progress { id, size: 0 })
    }

    /// A single-request upload of a blob whose digest is known up front: never recorded as a
    /// session; on any failure its bytes are removed.
    pub async fn monolithic<E: Display>(
        &self,
        repo: &str,
        digest: &Digest,
        range: Option<&str>,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<(), UploadError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (store, i) = (self.store.clone(), id.clone());
        blocking(move || store.create_upload(&i)).await??;
        let mut s = Upload::new(id.clone(), repo.to_string(), digest.algorithm());
        let result = async {
            self.append(&mut s, range, body).await?;
            self.finish(&mut s, digest).await
        }
        .await;
        if result.is_err() {
            let (store, parts) = (self.store.clone(), s.parts.clone());
            let _ = blocking(move || store.discard_upload(&id, &parts)).await;
        }
        result
    }

    /// Where session `id` of `repo` stands.
    pub async fn status(&self, repo: &str, id: &str) -> Result<Progress, UploadError> {
        let s = self.session(repo, id).await?;
        let s = s.lock().await;
        Ok(progress(&s))
    }

    /// Appends a chunk (`range`: its `Content-Range`, if sent). What was stored is recorded
    /// whether the chunk got through or not, so the client can resume from there.
    pub async fn patch<E: Display>(
        &self,
        repo: &str,
        id: &str,
        range: Option<&str>,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<Progress, UploadError> {
        let s = self.session(repo, id).await?;
        let mut s = s.lock().await;
        let result = self.append(&mut s, range, body).await;
        let (meta, i, size, parts) = (self.meta.clone(), id.to_string(), s.size, s.parts.clone());
        blocking(move || meta.record_upload(&i, size, &parts)).await??;
        result?;
        Ok(progress(&s))
    }

    /// Appends the last chunk and finishes the session as the blob `digest`.
    pub async fn put<E: Display>(
        &self,
        repo: &str,
        id: &str,
        digest: &Digest,
        range: Option<&str>,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<(), UploadError> {
        let s = self.session(repo, id).await?;
        let mut s = s.lock().await;
        self.append(&mut s, range, body).await?;
        self.finish(&mut s, digest).await
    }

    /// Ends session `id` of `repo` and removes its bytes.
    pub async fn cancel(&self, repo: &str, id: &str) -> Result<(), UploadError> {
        let s = self.session(repo, id).await?;
        let s = s.lock().await;
        let (store, meta, i, parts) = (
            self.store.clone(),
            self.meta.clone(),
            s.id.clone(),
            s.parts.clone(),
        );
        blocking(move || -> Result<(), UploadError> {
            store.discard_upload(&i, &parts)?;
            meta.delete_upload(&i)?;
            Ok(())
        })
        .await??;
        self.forget(&s.id);
        Ok(())
    }

    /// Removes sessions idle past the expiry, and (at start-up) upload files that no session
    /// owns — leftovers of single-request uploads cut short by a crash. Blocking.
    pub fn sweep(&self, startup: bool) -> Result<usize, MetaError> {
        let rows = self.meta.uploads()?;
        let now = db::now();
        let mut removed = 0;
        let mut live = HashSet::new();
        for r in rows {
            if now - r.updated_at > self.expiry_secs {
                if let Err(e) = self.store.discard_upload(&r.id, &r.parts) {
                    tracing::warn!(upload = %r.id, error = %e, "could not remove an expired upload's bytes");
                }
                self.meta.delete_upload(&r.id)?;
                self.forget(&r.id);
                removed += 1;
            } else {
                live.insert(r.id);
            }
        }
        if startup {
            removed += self.store.sweep_orphan_uploads(&live);
        }
        Ok(removed)
    }

    /// Finds a session in memory, or (after a restart, or when it began on another replica)
    /// re-opens it from its record and its bytes.
    async fn session(&self, repo: &str, id: &str) -> Result<Session, UploadError> {
        let unknown = || UploadError::Unknown(id.to_string());
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(unknown());
        }
        let existing = self
            .sessions
            .lock()
            .map_err(|_| UploadError::Poisoned)?
            .get(id)
            .cloned();
        if let Some(s) = existing {
            let mut guard = s.lock().await;
            if guard.repo != repo {
                return Err(unknown());
            }
            if self.store.is_shared() {
                // Another replica may have moved the session on (or ended it) since: the row is
                // the truth, and this replica's running hash only counts while it still matches.
                let (meta, i) = (self.meta.clone(), id.to_string());
                let Some(row) = blocking(move || meta.get_upload(&i)).await?? else {
                    drop(guard);
                    self.forget(id);
                    return Err(unknown());
                };
                if row.size != guard.size || row.parts != guard.parts {
                    guard.size = row.size;
                    guard.parts = row.parts;
                    guard.hasher = None;
                    guard.tail = None;
                }
            }
            drop(guard);
            return Ok(s);
        }
        let (meta, i) = (self.meta.clone(), id.to_string());
        let row = blocking(move || meta.get_upload(&i)).await??;
        let Some(row) = row.filter(|r| r.repo == repo) else {
            return Err(unknown());
        };
        let Some(size) = self.store.upload_size(id, row.size) else {
            return Err(unknown());
        };
        // Continued here after a restart, or after it began on another replica: no running hash.
        let s = Arc::new(tokio::sync::Mutex::new(Upload {
            id: row.id,
            repo: row.repo,
            size,
            hasher: None,
            parts: row.parts,
            tail: None,
        }));
        let mut map = self.sessions.lock().map_err(|_| UploadError::Poisoned)?;
        Ok(map.entry(id.to_string()).or_insert(s).clone())
    }

    fn forget(&self, id: &str) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(id);
        }
    }

    /// Streams `body` onto the end of the session's bytes, hashing on the way.
    async fn append<E: Display>(
        &self,
        s: &mut Upload,
        range: Option<&str>,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<u64, UploadError> {
        let announced = check_content_range(range, s)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        // The worker owns the session's state while it writes, and hands it back.
        let id = s.id.clone();
        let mut up = s.take();
        let store = self.store.clone();
        let writer = store::stream_worker("reg-blob-write", move || {
            let r = store.append(&mut up, rx);
            (up, r)
        });
        let mut body = std::pin::pin!(body);
        let mut client_error = None;
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) if chunk.is_empty() => {}
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    client_error = Some(e.to_string());
                    break;
                }
            }
        }
        drop(tx);
        let Ok((up, (written, write_error))) = writer.await else {
            // The state is lost with the thread: the next request reloads it from the record.
            self.forget(&id);
            return Err(UploadError::WriterLost);
        };
        *s = up;
        if let Some(source) = write_error {
            return Err(UploadError::Write {
                id: s.id.clone(),
                source,
            });
        }
        if let Some(cause) = client_error {
            return Err(UploadError::BodyEnded {
                cause,
                kept: s.size,
            });
        }
        if let Some(n) = announced {
            if n != written {
                return Err(UploadError::SizeMismatch {
                    announced: n,
                    written,
                });
            }
        }
        Ok(written)
    }

    /// Verifies the digest of a complete upload and commits it as a blob of its repository.
    /// On a mismatch nothing is stored and the session ends.
    async fn finish(&self, s: &mut Upload, digest: &Digest) -> Result<(), UploadError> {
        let (store, touch, d, size) = (
            self.store.clone(),
            self.meta.clone(),
            digest.clone(),
            s.size,
        );
        let mut up = s.take();
        // Verified, then the row, then the bytes: a collection that runs meanwhile spares the
        // blob (see gc).
        let (up, verdict) = blocking(move || {
            let r = store.finish(&mut up, &d, || {
                touch.touch_blob(&d, size).map_err(std::io::Error::other)
            });
            (up, r)
        })
        .await?;
        *s = up;
        let (meta, id) = (self.meta.clone(), s.id.clone());
        let verdict = match verdict {
            Ok(v) => v,
            Err(e) => {
                self.forget(&s.id);
                return Err(e.into());
            }
        };
        if let Some(computed) = verdict {
            blocking(move || meta.delete_upload(&id)).await??;
            self.forget(&s.id);
            return Err(UploadError::DigestMismatch {
                computed,
                expected: digest.clone(),
            });
        }
        let (name, d) = (s.repo.clone(), digest.clone());
        // The session ends either way: a blob a quota refused is in no repository (its bytes
        // go with garbage collection).
        let linked = blocking(move || -> Result<Result<(), LinkError>, MetaError> {
            let linked = meta.link_blob(&name, &d, size);
            meta.delete_upload(&id)?;
            Ok(linked)
        })
        .await??;
        self.forget(&s.id);
        linked?;
        tracing::debug!(repo = %s.repo, digest = %digest, size, "blob pushed");
        Ok(())
    }
}

fn progress(s: &Upload) -> Progress {
    Progress {
        id: s.id.clone(),
        size: s.size,
    }
}

/// Checks `Content-Range: a-b` (if sent) against the session: the chunk must start where the
/// upload ends. Returns the chunk's announced length.
fn check_content_range(range: Option<&str>, s: &Upload) -> Result<Option<u64>, UploadError> {
    let Some(v) = range else {
        return Ok(None);
    };
    let invalid = |why: String| UploadError::Range {
        why,
        repo: s.repo.clone(),
        id: s.id.clone(),
        size: s.size,
    };
    let (a, b) = crate::range::chunk_range(v).ok_or_else(|| {
        invalid(format!(
            "Content-Range {v:?} is not of the form <start>-<end> with <end> >= <start>"
        ))
    })?;
    if a != s.size || b < a {
        return Err(invalid(format!(
            "chunk {a}-{b} does not continue the upload, which holds {} bytes; resume at offset {}",
            s.size, s.size
        )));
    }
    Ok(Some(b - a + 1))
}
