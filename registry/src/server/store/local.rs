//! Blobs on the local filesystem: objects under a root directory, each upload one file under the
//! uploads directory, appended and hashed in one pass; a verified upload becomes its object by a
//! rename, so a reader never sees a partial blob.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::backend::{
    object_key, stream_worker, BlobBackend, Chunks, StoredObject, Trashed, Upload, READ_CHUNK,
};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::server::parts::UploadParts;

pub(super) struct Local {
    root: PathBuf,
    uploads: PathBuf,
}

impl Local {
    pub(super) fn open(root: &Path, uploads: &Path) -> std::io::Result<Local> {
        std::fs::create_dir_all(root)?;
        std::fs::create_dir_all(uploads)?;
        Ok(Local {
            root: root.to_path_buf(),
            uploads: uploads.to_path_buf(),
        })
    }

    fn object_path(&self, d: &Digest) -> PathBuf {
        self.root.join(object_key(d))
    }

    fn open_read(&self, d: &Digest, offset: u64, len: u64) -> std::io::Result<Option<Chunks>> {
        let mut file = match std::fs::File::open(self.object_path(d)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(offset))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        // The reader thread ends when the client goes away (send fails) or the range is done.
        let _done = stream_worker("reg-blob-read", move || {
            read_file_into(&mut file, len, &tx);
        });
        Ok(Some(rx))
    }
}

impl BlobBackend for Local {
    fn is_shared(&self) -> bool {
        false
    }

    fn read(
        &self,
        d: &Digest,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'_, std::io::Result<Option<Chunks>>> {
        futures::future::ready(self.open_read(d, offset, len)).boxed()
    }

    fn redirect_url(&self, _d: &Digest) -> BoxFuture<'_, std::io::Result<Option<String>>> {
        futures::future::ready(Ok(None)).boxed()
    }

    fn create_upload(&self, id: &str) -> std::io::Result<()> {
        std::fs::File::create(self.uploads.join(id)).map(|_| ())
    }

    fn upload_size(&self, id: &str, _recorded: u64) -> Option<u64> {
        std::fs::metadata(self.uploads.join(id))
            .ok()
            .map(|m| m.len())
    }

    fn append(
        &self,
        up: &mut Upload,
        rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> (u64, Option<std::io::Error>) {
        let (hasher, written, err) =
            append_chunks(&self.uploads.join(&up.id), up.size, up.hasher.take(), rx);
        up.hasher = hasher;
        up.size += written;
        (written, err)
    }

    fn finish(
        &self,
        up: &mut Upload,
        digest: &Digest,
        running: Option<Digest>,
        before_commit: Box<dyn FnOnce() -> std::io::Result<()> + '_>,
    ) -> std::io::Result<Option<Digest>> {
        let path = self.uploads.join(&up.id);
        let computed = match running {
            Some(c) => c,
            None => hash_file(&path, digest.algorithm())?.0,
        };
        if &computed != digest {
            let _ = std::fs::remove_file(&path);
            return Ok(Some(computed));
        }
        before_commit()?;
        if commit_file(&path, &self.object_path(digest))? == Committed::AlreadyThere {
            // Freeing the upload's blocks (with `discard`, a synchronous trim) is left off the
            // request's path.
            let free = move || {
                let _ = std::fs::remove_file(&path);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(free)),
                Err(_) => free(),
            }
        }
        Ok(None)
    }

    fn discard_upload(&self, id: &str, _parts: &UploadParts) -> std::io::Result<()> {
        match std::fs::remove_file(self.uploads.join(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn sweep_orphan_uploads(&self, live: &HashSet<String>) -> usize {
        let mut removed = 0;
        if let Ok(dir) = std::fs::read_dir(&self.uploads) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !live.contains(&name) && std::fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    fn move_to_trash(&self, d: &Digest, name: &str) -> std::io::Result<Option<Trashed>> {
        let trash = self.root.join("_trash");
        std::fs::create_dir_all(&trash)?;
        let to = trash.join(name);
        match std::fs::rename(self.object_path(d), &to) {
            Ok(()) => Ok(Some(Trashed(to.to_string_lossy().into_owned()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn restore(&self, trashed: &Trashed, d: &Digest) -> std::io::Result<()> {
        let dst = self.object_path(d);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&trashed.0, dst)
    }

    fn forget(&self, trashed: &Trashed) -> std::io::Result<()> {
        match std::fs::remove_file(&trashed.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn trashed(&self) -> std::io::Result<Vec<Trashed>> {
        let Ok(entries) = std::fs::read_dir(self.root.join("_trash")) else {
            return Ok(Vec::new());
        };
        Ok(entries
            .flatten()
            .map(|e| Trashed(e.path().to_string_lossy().into_owned()))
            .collect())
    }

    fn objects(&self) -> std::io::Result<Vec<StoredObject>> {
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
                    out.push(StoredObject {
                        digest: Digest::parse(&format!("{}:{name}", alg.as_str())).ok(),
                        name: f.path().to_string_lossy().into_owned(),
                        size_modified: None,
                    });
                }
            }
        }
        Ok(out)
    }

    fn stat(&self, o: &StoredObject) -> Option<(u64, SystemTime)> {
        let m = std::fs::metadata(&o.name).ok()?;
        Some((m.len(), m.modified().ok()?))
    }

    fn remove_stray(&self, o: &StoredObject) -> std::io::Result<()> {
        std::fs::remove_file(&o.name)
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

/// What [`commit_file`] did.
#[derive(Debug, PartialEq, Eq)]
enum Committed {
    Moved,
    /// The object was there already; the upload file is left for the caller to remove.
    AlreadyThere,
}

/// Makes the verified upload file `src` the object at `dst` (atomic).
///
/// An identical object that is already there is kept, not replaced: on ext4, replacing a file
/// by a rename writes the new file to disk and frees the old one's blocks inside the call. A
/// collector moving that object aside at this moment puts it back: the blob's row was written
/// before this call (`before_commit`), and the collector re-checks rows after moving objects
/// (and at start, after a crash).
fn commit_file(src: &Path, dst: &Path) -> std::io::Result<Committed> {
    if dst.is_file() {
        return Ok(Committed::AlreadyThere);
    }
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::rename(src, dst) {
        Ok(()) => Ok(Committed::Moved),
        // Uploads on another filesystem: copy next to the target, then rename into place.
        Err(e) if e.raw_os_error() == Some(18) => {
            let tmp = dst.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
            std::fs::copy(src, &tmp)?;
            std::fs::rename(&tmp, dst)?;
            std::fs::remove_file(src)?;
            Ok(Committed::Moved)
        }
        Err(e) => Err(e),
    }
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
    hasher: Option<Hasher>,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> (Option<Hasher>, u64, Option<std::io::Error>) {
    let mut file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) => return (hasher, 0, Some(e)),
    };
    // Anything past the recorded size is a torn write from a crash: drop it before appending.
    // Only then: on ext4 a truncated file is flushed to disk when it is closed.
    let cut = match file.metadata() {
        Ok(m) if m.len() == start => Ok(()),
        _ => file.set_len(start),
    };
    if let Err(e) = cut.and_then(|()| file.seek(SeekFrom::Start(start)).map(|_| ())) {
        return (hasher, 0, Some(e));
    }
    std::thread::scope(|scope| {
        let mut hashing = Hashing::Inline(hasher);
        let mut written = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            if let Err(e) = file.write_all(&chunk) {
                let _ = file.set_len(start + written);
                return (hashing.finish(), written, Some(e));
            }
            written += chunk.len() as u64;
            // A chunk is hashed only once it is written: the hash always covers the file.
            hashing.update(chunk, written, scope);
        }
        (hashing.finish(), written, None)
    })
}

/// Bytes of a request after which its hashing moves to a thread of its own.
const HASH_THREAD_AFTER: u64 = 1 << 20;

/// An upload's running hash: inline for small requests; past [`HASH_THREAD_AFTER`], on a second
/// thread that runs beside the writes (hashing and writing each take one pass over the bytes;
/// one after the other they halved a large push's speed). Chunks are shared, not copied.
enum Hashing<'scope> {
    Inline(Option<Hasher>),
    Thread {
        chunks: std::sync::mpsc::SyncSender<Bytes>,
        done: std::thread::ScopedJoinHandle<'scope, Hasher>,
    },
    /// The hashing thread went away: the hash is recomputed from the file at the end.
    Lost,
}

impl<'scope> Hashing<'scope> {
    fn update<'env>(
        &mut self,
        chunk: Bytes,
        written: u64,
        scope: &'scope std::thread::Scope<'scope, 'env>,
    ) {
        match self {
            Hashing::Inline(None) | Hashing::Lost => {}
            Hashing::Inline(Some(_)) if written >= HASH_THREAD_AFTER => {
                let Hashing::Inline(Some(mut h)) = std::mem::replace(self, Hashing::Lost) else {
                    return;
                };
                let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(16);
                let spawned = std::thread::Builder::new()
                    .name("reg-blob-hash".into())
                    .spawn_scoped(scope, move || {
                        h.update(&chunk);
                        for c in rx {
                            h.update(&c);
                        }
                        h
                    });
                if let Ok(done) = spawned {
                    *self = Hashing::Thread { chunks: tx, done };
                }
            }
            Hashing::Inline(Some(h)) => h.update(&chunk),
            Hashing::Thread { chunks, .. } => {
                if chunks.send(chunk).is_err() {
                    *self = Hashing::Lost;
                }
            }
        }
    }

    fn finish(self) -> Option<Hasher> {
        match self {
            Hashing::Inline(h) => h,
            Hashing::Thread { chunks, done } => {
                drop(chunks);
                done.join().ok()
            }
            Hashing::Lost => None,
        }
    }
}
