//! Registry metadata in SQLite (WAL): repositories, blob links, manifests, tags, upload sessions.
//!
//! Every method is synchronous and short; async callers run them on the blocking pool. Writes go
//! through one connection (SQLite has one writer anyway); reads take a pooled connection so they
//! never wait behind a write. Rules that span rows — "a manifest may only name blobs linked in its
//! repository" — are checked inside the same transaction that inserts, so a concurrent delete can
//! never slip between check and insert.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::digest::Digest;
use crate::manifest::{Descriptor, Parsed};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("metadata database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("metadata database lock poisoned")]
    Poisoned,
}

/// Why a manifest was not stored.
#[derive(Debug)]
pub enum PutManifestError {
    MissingBlob(Digest),
    MissingManifest(Digest),
    /// The tag is immutable and points at this other manifest.
    Immutable(String),
    Meta(MetaError),
}

impl From<rusqlite::Error> for PutManifestError {
    fn from(e: rusqlite::Error) -> Self {
        PutManifestError::Meta(MetaError::Sql(e))
    }
}

/// A stored manifest.
#[derive(Debug, Clone)]
pub struct ManifestRow {
    pub digest: String,
    pub media_type: String,
    pub content: Arc<[u8]>,
    pub subject: Option<String>,
}

/// An upload session as recorded.
#[derive(Debug, Clone)]
pub struct UploadRow {
    pub id: String,
    pub repo: String,
    pub updated_at: i64,
}

/// Reader connections kept open; more may exist briefly under load, then are closed.
const READ_POOL: usize = 8;

pub struct Meta {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS repos (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repo_blobs (
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    digest TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS manifests (
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    content BLOB NOT NULL,
    subject TEXT,
    artifact_type TEXT,
    annotations TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX IF NOT EXISTS manifests_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;
CREATE TABLE IF NOT EXISTS manifest_refs (
    repo_id INTEGER NOT NULL,
    digest TEXT NOT NULL,
    child TEXT NOT NULL,
    PRIMARY KEY (repo_id, digest, child)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    admin INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS orgs (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS org_members (
    org TEXT NOT NULL,
    user TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (org, user)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repo_visibility (
    name TEXT PRIMARY KEY,
    public INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS access_tokens (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    scopes TEXT NOT NULL,
    expires_at INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refresh_tokens (
    secret_sha256 TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    client TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS manifest_refs_child ON manifest_refs(repo_id, child);
CREATE INDEX IF NOT EXISTS repo_blobs_digest ON repo_blobs(digest);
CREATE TABLE IF NOT EXISTS gc_lock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    repo TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
"#;

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn open_conn(path: &Path) -> Result<Connection, MetaError> {
    let open = |path: &Path| -> rusqlite::Result<Connection> {
        let c = Connection::open(path)?;
        c.busy_timeout(std::time::Duration::from_secs(30))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "NORMAL")?;
        c.pragma_update(None, "foreign_keys", "ON")?;
        // 1 MiB of page cache per connection: the hot rows (tags, manifests) fit easily.
        c.pragma_update(None, "cache_size", -1024)?;
        Ok(c)
    };
    open(path).map_err(|source| MetaError::Open {
        path: path.to_path_buf(),
        source,
    })
}

impl Meta {
    pub fn open(path: &Path) -> Result<Meta, MetaError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| MetaError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        let writer = open_conn(path)?;
        writer
            .execute_batch(SCHEMA)
            .map_err(|source| MetaError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Meta {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> Result<T, MetaError> {
        let mut c = self.writer.lock().map_err(|_| MetaError::Poisoned)?;
        Ok(f(&mut c))
    }

    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, MetaError> {
        let pooled = self.readers.lock().map_err(|_| MetaError::Poisoned)?.pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_conn(&self.path)?,
        };
        let out = f(&conn);
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < READ_POOL {
                pool.push(conn);
            }
        }
        Ok(out?)
    }

    fn ensure_repo(tx: &Connection, repo: &str) -> rusqlite::Result<i64> {
        tx.execute(
            "INSERT INTO repos(name, created_at) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
            params![repo, now()],
        )?;
        tx.query_row("SELECT id FROM repos WHERE name = ?1", [repo], |r| r.get(0))
    }

    /// The size of `digest` if it may be served from `repo`.
    pub fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let d = digest.to_string();
        self.read(|c| {
            c.query_row(
                "SELECT b.size FROM repo_blobs rb JOIN repos r ON r.id = rb.repo_id \
                 JOIN blobs b ON b.digest = rb.digest WHERE r.name = ?1 AND rb.digest = ?2",
                params![repo, d],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|o| o.map(|s| s as u64))
        })
    }

    /// Records a verified blob and links it into `repo`.
    pub fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<(), MetaError> {
        let d = digest.to_string();
        self.write(|c| -> rusqlite::Result<()> {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let repo_id = Self::ensure_repo(&tx, repo)?;
            tx.execute(
                "INSERT INTO blobs(digest, size, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT DO UPDATE SET created_at = excluded.created_at",
                params![d, size as i64, now()],
            )?;
            tx.execute(
                "INSERT INTO repo_blobs(repo_id, digest, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT DO UPDATE SET created_at = excluded.created_at",
                params![repo_id, d, now()],
            )?;
            tx.commit()
        })??;
        Ok(())
    }

    /// Records that `digest` is being stored now, before its object is written: the garbage
    /// collector spares a blob touched within its grace window (and puts back an object it
    /// moved aside when the row reappears), so a push racing a collection never loses bytes.
    pub fn touch_blob(&self, digest: &Digest, size: u64) -> Result<(), MetaError> {
        let d = digest.to_string();
        self.write(|c| {
            c.execute(
                "INSERT INTO blobs(digest, size, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT DO UPDATE SET created_at = excluded.created_at",
                params![d, size as i64, now()],
            )
        })??;
        Ok(())
    }

    /// Whether a blob row exists (whatever its links).
    pub fn blob_known(&self, digest: &Digest) -> Result<bool, MetaError> {
        let d = digest.to_string();
        self.read(|c| {
            c.query_row("SELECT 1 FROM blobs WHERE digest = ?1", [d], |_| Ok(()))
                .optional()
                .map(|o| o.is_some())
        })
    }

    /// Links `digest` into `to` if `from` has it; returns its size when it did.
    pub fn mount_blob(
        &self,
        from: &str,
        to: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, MetaError> {
        let d = digest.to_string();
        Ok(self.write(|c| -> rusqlite::Result<Option<u64>> {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let size: Option<i64> = tx
                .query_row(
                    "SELECT b.size FROM repo_blobs rb JOIN repos r ON r.id = rb.repo_id \
                     JOIN blobs b ON b.digest = rb.digest WHERE r.name = ?1 AND rb.digest = ?2",
                    params![from, d],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(size) = size else { return Ok(None) };
            let repo_id = Self::ensure_repo(&tx, to)?;
            tx.execute(
                "INSERT INTO repo_blobs(repo_id, digest, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT DO UPDATE SET created_at = excluded.created_at",
                params![repo_id, d, now()],
            )?;
            tx.commit()?;
            Ok(Some(size as u64))
        })??)
    }

    /// Removes the link of `digest` from `repo`; the bytes stay until garbage collection.
    pub fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool, MetaError> {
        let d = digest.to_string();
        Ok(self.write(|c| {
            c.execute(
                "DELETE FROM repo_blobs WHERE digest = ?2 AND repo_id = (SELECT id FROM repos WHERE name = ?1)",
                params![repo, d],
            )
        })?? > 0)
    }

    /// Stores a manifest (and optionally tags it) after checking its references, atomically.
    pub fn put_manifest(
        &self,
        repo: &str,
        digest: &Digest,
        content: &[u8],
        parsed: &Parsed,
        tag: Option<&str>,
        tag_immutable: bool,
    ) -> Result<(), PutManifestError> {
        let d = digest.to_string();
        let annotations = parsed
            .annotations
            .as_ref()
            .and_then(|a| serde_json::to_string(a).ok());
        self.write(|c| -> Result<(), PutManifestError> {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let repo_id = Self::ensure_repo(&tx, repo)?;
            for b in &parsed.blobs {
                let found: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM repo_blobs WHERE repo_id = ?1 AND digest = ?2",
                        params![repo_id, b.to_string()],
                        |r| r.get(0),
                    )
                    .optional()?;
                if found.is_none() {
                    return Err(PutManifestError::MissingBlob(b.clone()));
                }
            }
            for m in &parsed.children {
                let found: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM manifests WHERE repo_id = ?1 AND digest = ?2",
                        params![repo_id, m.to_string()],
                        |r| r.get(0),
                    )
                    .optional()?;
                if found.is_none() {
                    return Err(PutManifestError::MissingManifest(m.clone()));
                }
            }
            if let (Some(tag), true) = (tag, tag_immutable) {
                let current: Option<String> = tx
                    .query_row(
                        "SELECT digest FROM tags WHERE repo_id = ?1 AND name = ?2",
                        params![repo_id, tag],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(current) = current.filter(|c| *c != d) {
                    return Err(PutManifestError::Immutable(current));
                }
            }
            // A manifest pushed again counts as new for the untagged-manifest policy.
            tx.execute(
                "INSERT INTO manifests(repo_id, digest, media_type, content, subject, artifact_type, annotations, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT(repo_id, digest) DO UPDATE SET media_type = excluded.media_type, created_at = excluded.created_at",
                params![
                    repo_id,
                    d,
                    parsed.media_type,
                    content,
                    parsed.subject.as_ref().map(|s| s.to_string()),
                    parsed.artifact_type,
                    annotations,
                    now()
                ],
            )?;
            for child in parsed.blobs.iter().chain(&parsed.children) {
                tx.execute(
                    "INSERT INTO manifest_refs(repo_id, digest, child) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![repo_id, d, child.to_string()],
                )?;
            }
            if let Some(tag) = tag {
                tx.execute(
                    "INSERT INTO tags(repo_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT(repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                    params![repo_id, tag, d, now()],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .map_err(PutManifestError::Meta)?
    }

    /// A manifest by tag or digest (the caller says which `reference` is).
    pub fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        by_digest: bool,
    ) -> Result<Option<ManifestRow>, MetaError> {
        let sql = if by_digest {
            "SELECT m.digest, m.media_type, m.content, m.subject FROM manifests m JOIN repos r ON r.id = m.repo_id \
             WHERE r.name = ?1 AND m.digest = ?2"
        } else {
            "SELECT m.digest, m.media_type, m.content, m.subject FROM tags t JOIN repos r ON r.id = t.repo_id \
             JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest WHERE r.name = ?1 AND t.name = ?2"
        };
        self.read(|c| {
            c.prepare_cached(sql)?
                .query_row(params![repo, reference], |r| {
                    Ok(ManifestRow {
                        digest: r.get(0)?,
                        media_type: r.get(1)?,
                        content: Arc::from(r.get::<_, Vec<u8>>(2)?),
                        subject: r.get(3)?,
                    })
                })
                .optional()
        })
    }

    /// Deletes a manifest and every tag that points at it.
    pub fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool, MetaError> {
        let d = digest.to_string();
        Ok(self.write(|c| -> rusqlite::Result<bool> {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let repo_id: Option<i64> = tx
                .query_row("SELECT id FROM repos WHERE name = ?1", [repo], |r| r.get(0))
                .optional()?;
            let Some(repo_id) = repo_id else {
                return Ok(false);
            };
            let n = tx.execute(
                "DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2",
                params![repo_id, d],
            )?;
            tx.execute(
                "DELETE FROM tags WHERE repo_id = ?1 AND digest = ?2",
                params![repo_id, d],
            )?;
            tx.execute(
                "DELETE FROM manifest_refs WHERE repo_id = ?1 AND digest = ?2",
                params![repo_id, d],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })??)
    }

    /// The tags of `repo` that point at `digest`.
    pub fn tags_of(&self, repo: &str, digest: &Digest) -> Result<Vec<String>, MetaError> {
        let d = digest.to_string();
        self.read(|c| {
            c.prepare_cached(
                "SELECT t.name FROM tags t JOIN repos r ON r.id = t.repo_id \
                 WHERE r.name = ?1 AND t.digest = ?2 ORDER BY t.name",
            )?
            .query_map(params![repo, d], |r| r.get(0))?
            .collect()
        })
    }

    pub fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool, MetaError> {
        Ok(self.write(|c| {
            c.execute(
                "DELETE FROM tags WHERE name = ?2 AND repo_id = (SELECT id FROM repos WHERE name = ?1)",
                params![repo, tag],
            )
        })?? > 0)
    }

    /// Up to `n` tags after `last`, in lexical order; `None` when the repository is unknown.
    pub fn tags(&self, repo: &str, last: &str, n: u32) -> Result<Option<Vec<String>>, MetaError> {
        self.read(|c| {
            let repo_id: Option<i64> = c
                .query_row("SELECT id FROM repos WHERE name = ?1", [repo], |r| r.get(0))
                .optional()?;
            let Some(repo_id) = repo_id else {
                return Ok(None);
            };
            let mut st = c.prepare_cached(
                "SELECT name FROM tags WHERE repo_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
            )?;
            let rows = st.query_map(params![repo_id, last, n], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<Vec<String>>>().map(Some)
        })
    }

    /// Up to `n` repository names after `last`, in lexical order.
    pub fn catalog(&self, last: &str, n: u32) -> Result<Vec<String>, MetaError> {
        self.read(|c| {
            let mut st =
                c.prepare_cached("SELECT name FROM repos WHERE name > ?1 ORDER BY name LIMIT ?2")?;
            let rows = st.query_map(params![last, n], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Descriptors of the manifests in `repo` whose subject is `subject`.
    pub fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, MetaError> {
        let s = subject.to_string();
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT m.digest, m.media_type, length(m.content), m.artifact_type, m.annotations \
                 FROM manifests m JOIN repos r ON r.id = m.repo_id WHERE r.name = ?1 AND m.subject = ?2 \
                 AND (?3 IS NULL OR m.artifact_type = ?3) ORDER BY m.created_at, m.digest",
            )?;
            let rows = st.query_map(params![repo, s, artifact_type], |r| {
                let annotations: Option<String> = r.get(4)?;
                Ok(Descriptor {
                    digest: r.get(0)?,
                    media_type: r.get(1)?,
                    size: r.get(2)?,
                    artifact_type: r.get(3)?,
                    annotations: annotations.and_then(|a| serde_json::from_str(&a).ok()),
                    platform: None,
                    urls: None,
                })
            })?;
            rows.collect()
        })
    }

    pub fn create_upload(&self, id: &str, repo: &str) -> Result<(), MetaError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO uploads(id, repo, started_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                params![id, repo, now()],
            )
        })??;
        Ok(())
    }

    pub fn get_upload(&self, id: &str) -> Result<Option<UploadRow>, MetaError> {
        self.read(|c| {
            c.query_row(
                "SELECT id, repo, updated_at FROM uploads WHERE id = ?1",
                [id],
                |r| {
                    Ok(UploadRow {
                        id: r.get(0)?,
                        repo: r.get(1)?,
                        updated_at: r.get(2)?,
                    })
                },
            )
            .optional()
        })
    }

    pub fn touch_upload(&self, id: &str) -> Result<(), MetaError> {
        self.write(|c| {
            c.execute(
                "UPDATE uploads SET updated_at = ?2 WHERE id = ?1",
                params![id, now()],
            )
        })??;
        Ok(())
    }

    pub fn delete_upload(&self, id: &str) -> Result<(), MetaError> {
        self.write(|c| c.execute("DELETE FROM uploads WHERE id = ?1", [id]))??;
        Ok(())
    }

    /// All recorded upload sessions (for the expiry sweep and start-up cleanup).
    pub fn uploads(&self) -> Result<Vec<UploadRow>, MetaError> {
        self.read(|c| {
            let mut st = c.prepare("SELECT id, repo, updated_at FROM uploads")?;
            let rows = st.query_map([], |r| {
                Ok(UploadRow {
                    id: r.get(0)?,
                    repo: r.get(1)?,
                    updated_at: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }
}
