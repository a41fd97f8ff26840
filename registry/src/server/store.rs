//! Blob bytes: content-addressed objects, and the upload files they are made from.
//!
//! Objects live under `<algorithm>/<first two hex>/<hex>` in an `object_store` (the local
//! filesystem by default). An upload is written to its own file under the uploads dir while it is
//! hashed; it becomes an object only once its digest is verified, by a rename on the local
//! filesystem (atomic: a reader sees the whole blob or none) or a multipart put elsewhere. A blob
//! pushed twice is stored once.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;

use crate::digest::{Algorithm, Digest, Hasher};

/// Size of the chunks read from disk and sent to clients.
const READ_CHUNK: usize = 256 * 1024;

pub struct BlobStore {
    /// Root of the local object tree (fast paths: rename on commit, direct reads).
    root: PathBuf,
    uploads: PathBuf,
    objects: Arc<dyn ObjectStore>,
}

impl BlobStore {
    pub fn open_local(root: &Path, uploads: &Path) -> std::io::Result<BlobStore> {
        std::fs::create_dir_all(root)?;
        std::fs::create_dir_all(uploads)?;
        let objects = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| std::io::Error::other(format!("blob store at {}: {e}", root.display())))?;
        Ok(BlobStore {
            root: root.to_path_buf(),
            uploads: uploads.to_path_buf(),
            objects: Arc::new(objects),
        })
    }

    fn key(d: &Digest) -> String {
        format!("{}/{}/{}", d.algorithm().as_str(), &d.hex()[..2], d.hex())
    }

    fn local_path(&self, d: &Digest) -> PathBuf {
        self.root.join(Self::key(d))
    }

    pub fn upload_path(&self, id: &str) -> PathBuf {
        self.uploads.join(id)
    }

    pub fn uploads_dir(&self) -> &Path {
        &self.uploads
    }

    /// Opens `d` for reading from `offset`, `len` bytes, as a stream of chunks read off the
    /// blocking pool. `None` when the object is missing.
    pub fn read(
        &self,
        d: &Digest,
        offset: u64,
        len: u64,
    ) -> std::io::Result<Option<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static>> {
        let path = self.local_path(d);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(offset))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        // The reader thread ends when the client goes away (send fails) or the range is done.
        let _done = stream_worker("reg-blob-read", move || {
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
        });
        Ok(Some(tokio_stream_from(rx)))
    }

    /// Makes the verified upload file `src` the object for `d` (atomic). An identical object
    /// that already exists is replaced, not kept: the collector may be moving it aside at this
    /// very moment, and this push's copy must then be the one that stays.
    pub fn commit(&self, src: &Path, d: &Digest) -> std::io::Result<()> {
        let dst = self.local_path(d);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::rename(src, &dst) {
            Ok(()) => Ok(()),
            // Uploads on another filesystem: copy next to the target, then rename into place.
            Err(e) if e.raw_os_error() == Some(18) => {
                let tmp = dst.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
                std::fs::copy(src, &tmp)?;
                std::fs::rename(&tmp, &dst)?;
                std::fs::remove_file(src)
            }
            Err(e) => Err(e),
        }
    }

    /// Where the collector moves objects aside before it knows they may go.
    pub fn trash_dir(&self) -> PathBuf {
        self.root.join("_trash")
    }

    /// Moves the object for `d` into the trash (atomic rename); `None` when there is none.
    pub fn move_to_trash(&self, d: &Digest) -> std::io::Result<Option<PathBuf>> {
        let trash = self.trash_dir();
        std::fs::create_dir_all(&trash)?;
        let to = trash.join(format!(
            "{}-{}-{}",
            d.algorithm().as_str(),
            d.hex(),
            uuid::Uuid::new_v4().simple()
        ));
        match std::fs::rename(self.local_path(d), &to) {
            Ok(()) => Ok(Some(to)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Puts a trashed object back as the object for `d` (an identical copy written meanwhile
    /// is simply replaced: same digest, same bytes).
    pub fn restore(&self, trashed: &Path, d: &Digest) -> std::io::Result<()> {
        let dst = self.local_path(d);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(trashed, dst)
    }

    /// Every object file: its digest (when the name is one) and path (no stat: a listing).
    /// Files that are not objects (a crashed cross-device copy) come with `None`.
    pub fn objects(&self) -> Vec<(Option<Digest>, PathBuf)> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let Ok(prefixes) = std::fs::read_dir(self.root.join(alg.as_str())) else {
                continue;
            };
            for p in prefixes.flatten() {
                let Ok(files) = std::fs::read_dir(p.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    let digest = Digest::parse(&format!("{}:{name}", alg.as_str())).ok();
                    out.push((digest, f.path()));
                }
            }
        }
        out
    }

    /// Deletes the object for `d` (garbage collection only: links are metadata).
    pub async fn delete(&self, d: &Digest) -> Result<(), object_store::Error> {
        match self
            .objects
            .delete(&object_store::path::Path::from(Self::key(d)))
            .await
        {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => other,
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

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Hashes a whole file (used when an upload's running hash was lost to a restart, or when the
/// final digest uses another algorithm than the running hash).
pub fn hash_file(path: &Path, algorithm: Algorithm) -> std::io::Result<(Digest, u64)> {
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
pub fn append_chunks(
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
