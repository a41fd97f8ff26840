//! Registry metadata: repositories, blob links, manifests, tags, upload sessions — in SQLite
//! (the embedded default) or PostgreSQL, through [`super::db::Db`].
//!
//! Every method is synchronous and short; async callers run them on the blocking pool. Writes
//! are serialized (one writer at a time, across processes and replicas); reads take a pooled
//! connection so they never wait behind a write. Rules that span rows — "a manifest may only
//! name blobs linked in its repository" — are checked inside the same transaction that
//! inserts, so a concurrent delete can never slip between check and insert.

use std::path::Path;
use std::sync::Arc;

use super::db::{args, exists, now, value, Conn, Db, DbError};
use super::parts::UploadParts;
use super::quota::{self, LinkError};
use crate::digest::Digest;
use crate::manifest::{Descriptor, Parsed};

pub type MetaError = DbError;

/// Why a manifest was not stored.
#[derive(Debug)]
pub enum PutManifestError {
    MissingBlob(Digest),
    MissingManifest(Digest),
    /// The tag is immutable and points at this other manifest.
    Immutable(String),
    Meta(MetaError),
}

impl From<DbError> for PutManifestError {
    fn from(e: DbError) -> Self {
        PutManifestError::Meta(e)
    }
}

/// A tag as the web interface lists it.
#[derive(Debug, Clone)]
pub struct UiTag {
    pub tag: String,
    pub digest: String,
    pub updated_at: i64,
    pub content: Vec<u8>,
    /// Who last pushed the tag (empty before this was recorded; a mirror's upstream for a
    /// mirrored one).
    pub pushed_by: String,
    /// When its manifest was last pulled (unix seconds, 0 for never; written in batches).
    pub pulled_at: i64,
}

/// What [`Meta::delete_manifest`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    NotFound,
    /// Refused: this tag names the manifest and may not go.
    Protected(String),
}

/// A repository as the web interface lists it.
#[derive(Debug, Clone)]
pub struct UiRepo {
    pub name: String,
    /// Bytes of the distinct blobs linked into it.
    pub size: u64,
    /// When a tag was last pushed (unix seconds).
    pub pushed: Option<i64>,
    pub public: bool,
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
    /// Bytes recorded as stored (S3; locally the file is the truth).
    pub size: u64,
    pub parts: UploadParts,
}

pub struct Meta {
    db: Db,
}

const LINK_BLOB: &str = "INSERT INTO repo_blobs(repo_id, digest, created_at) VALUES (?1, ?2, ?3) \
                         ON CONFLICT(repo_id, digest) DO UPDATE SET created_at = excluded.created_at";
const TOUCH_BLOB: &str = "INSERT INTO blobs(digest, size, created_at) VALUES (?1, ?2, ?3) \
                          ON CONFLICT(digest) DO UPDATE SET created_at = excluded.created_at";
const UPLOAD_COLUMNS: &str =
    "SELECT id, repo, updated_at, size, multipart, parts, parts_bytes FROM uploads";
const BLOB_IN_REPO: &str = "SELECT b.size FROM repo_blobs rb JOIN repos r ON r.id = rb.repo_id \
                            JOIN blobs b ON b.digest = rb.digest WHERE r.name = ?1 AND rb.digest = ?2";

impl Meta {
    /// Opens the metadata database `url` (PostgreSQL URL, or SQLite file; empty: the SQLite
    /// file `default`), creating and migrating its schema.
    pub fn open(url: &str, default: &Path) -> Result<Meta, MetaError> {
        Ok(Meta {
            db: Db::open(url, default)?,
        })
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        self.db.kind()
    }

    /// A write transaction (see [`Db::write`]).
    pub(crate) fn write<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        self.db.write(f)
    }

    /// Reads on a pooled connection (see [`Db::read`]).
    pub(crate) fn read<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        self.db.read(f)
    }

    /// Reads in one transaction (see [`Db::snapshot`]).
    pub(crate) fn snapshot<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        self.db.snapshot(f)
    }

    fn ensure_repo(tx: &mut dyn Conn, repo: &str) -> Result<i64, DbError> {
        tx.execute(
            "INSERT INTO repos(name, created_at) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
            args![repo, now()],
        )?;
        Self::repo_id(tx, repo)?.ok_or_else(|| DbError::Type {
            column: 0,
            message: format!("repository {repo} vanished"),
        })
    }

    /// The id of repository `repo`, if it exists.
    pub(crate) fn repo_id(c: &mut dyn Conn, repo: &str) -> Result<Option<i64>, DbError> {
        value(c, "SELECT id FROM repos WHERE name = ?1", args![repo])
    }

    /// The size of `digest` if it may be served from `repo`.
    pub fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, MetaError> {
        self.read(|c| value(c, BLOB_IN_REPO, args![repo, digest.to_string()]))
    }

    /// The size of `digest` if any repository has it.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, MetaError> {
        self.read(|c| {
            value(
                c,
                "SELECT size FROM blobs WHERE digest = ?1",
                args![digest.to_string()],
            )
        })
    }

    /// Records a verified blob and links it into `repo`, within the quotas over `repo`.
    pub fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<(), LinkError> {
        let d = digest.to_string();
        self.write(|c| {
            let repo_id = Self::ensure_repo(c, repo)?;
            c.execute(TOUCH_BLOB, args![&d, size, now()])?;
            quota::check(c, repo, digest, size)?;
            c.execute(LINK_BLOB, args![repo_id, &d, now()])?;
            Ok(())
        })
    }

    /// Records that `digest` is being stored now, before its object is written: the garbage
    /// collector spares a blob touched within its grace window (and puts back an object it
    /// moved aside when the row reappears), so a push racing a collection never loses bytes.
    pub fn touch_blob(&self, digest: &Digest, size: u64) -> Result<(), MetaError> {
        self.write(|c| {
            c.execute(TOUCH_BLOB, args![digest.to_string(), size, now()])?;
            Ok(())
        })
    }

    /// Whether a blob row exists (whatever its links).
    pub fn blob_known(&self, digest: &Digest) -> Result<bool, MetaError> {
        self.read(|c| {
            exists(
                c,
                "SELECT 1 FROM blobs WHERE digest = ?1",
                args![digest.to_string()],
            )
        })
    }

    /// Links `digest` into `to` if `from` has it; returns its size when it did.
    pub fn mount_blob(
        &self,
        from: &str,
        to: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, LinkError> {
        let d = digest.to_string();
        self.write(|c| {
            let Some(size) = value::<u64>(c, BLOB_IN_REPO, args![from, &d])? else {
                return Ok(None);
            };
            quota::check(c, to, digest, size)?;
            let repo_id = Self::ensure_repo(c, to)?;
            c.execute(LINK_BLOB, args![repo_id, &d, now()])?;
            Ok(Some(size))
        })
    }

    /// Removes the link of `digest` from `repo`; the bytes stay until garbage collection.
    pub fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool, MetaError> {
        let n = self.write(|c| {
            c.execute(
                "DELETE FROM repo_blobs WHERE digest = ?2 AND repo_id = (SELECT id FROM repos WHERE name = ?1)",
                args![repo, digest.to_string()],
            )
        })?;
        Ok(n > 0)
    }

    /// Stores a manifest (and optionally tags it: the tag and who pushes it) after checking its
    /// references, atomically.
    pub fn put_manifest(
        &self,
        repo: &str,
        digest: &Digest,
        content: &[u8],
        parsed: &Parsed,
        tag: Option<(&str, &str)>,
        tag_immutable: bool,
    ) -> Result<(), PutManifestError> {
        self.store_manifest(repo, digest, content, parsed, tag, tag_immutable, true)
    }

    /// Stores a manifest fetched by a pull-through mirror: what it names is fetched from the
    /// upstream when asked for, so it is not required to be here yet.
    pub fn put_mirrored_manifest(
        &self,
        repo: &str,
        digest: &Digest,
        content: &[u8],
        parsed: &Parsed,
        tag: Option<&str>,
        upstream: &str,
    ) -> Result<(), PutManifestError> {
        let tag = tag.map(|t| (t, upstream));
        self.store_manifest(repo, digest, content, parsed, tag, false, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn store_manifest(
        &self,
        repo: &str,
        digest: &Digest,
        content: &[u8],
        parsed: &Parsed,
        tag: Option<(&str, &str)>,
        tag_immutable: bool,
        check_refs: bool,
    ) -> Result<(), PutManifestError> {
        let d = digest.to_string();
        let annotations = parsed
            .annotations
            .as_ref()
            .and_then(|a| serde_json::to_string(a).ok());
        self.write(|c| -> Result<(), PutManifestError> {
            let repo_id = Self::ensure_repo(c, repo)?;
            for b in parsed.blobs.iter().filter(|_| check_refs) {
                let sql = "SELECT 1 FROM repo_blobs WHERE repo_id = ?1 AND digest = ?2";
                if !exists(c, sql, args![repo_id, b.to_string()])? {
                    return Err(PutManifestError::MissingBlob(b.clone()));
                }
            }
            for m in parsed.children.iter().filter(|_| check_refs) {
                let sql = "SELECT 1 FROM manifests WHERE repo_id = ?1 AND digest = ?2";
                if !exists(c, sql, args![repo_id, m.to_string()])? {
                    return Err(PutManifestError::MissingManifest(m.clone()));
                }
            }
            if let (Some((tag, _)), true) = (tag, tag_immutable) {
                let current: Option<String> = value(
                    c,
                    "SELECT digest FROM tags WHERE repo_id = ?1 AND name = ?2",
                    args![repo_id, tag],
                )?;
                if let Some(current) = current.filter(|c| *c != d) {
                    return Err(PutManifestError::Immutable(current));
                }
            }
            // A manifest pushed again counts as new for the untagged-manifest policy.
            c.execute(
                "INSERT INTO manifests(repo_id, digest, media_type, content, subject, artifact_type, annotations, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT(repo_id, digest) DO UPDATE SET media_type = excluded.media_type, created_at = excluded.created_at",
                args![
                    repo_id,
                    &d,
                    parsed.media_type.as_str(),
                    content,
                    parsed.subject.as_ref().map(|s| s.to_string()),
                    parsed.artifact_type.clone(),
                    annotations.clone(),
                    now()
                ],
            )?;
            for child in parsed.blobs.iter().chain(&parsed.children) {
                c.execute(
                    "INSERT INTO manifest_refs(repo_id, digest, child) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    args![repo_id, &d, child.to_string()],
                )?;
            }
            if let Some((tag, by)) = tag {
                c.execute(
                    "INSERT INTO tags(repo_id, name, digest, updated_at, pushed_by) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT(repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at, \
                     pushed_by = excluded.pushed_by",
                    args![repo_id, tag, &d, now(), by],
                )?;
            }
            Ok(())
        })
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
            c.query_opt(sql, args![repo, reference])?
                .map(|r| {
                    Ok(ManifestRow {
                        digest: r.get(0)?,
                        media_type: r.get(1)?,
                        content: Arc::from(r.get::<Vec<u8>>(2)?),
                        subject: r.get(3)?,
                    })
                })
                .transpose()
        })
    }

    /// Repositories after `last` (by name) with their stored size (distinct linked blobs) and
    /// last push, for the web interface.
    pub fn ui_repos(&self, last: &str, n: u32) -> Result<Vec<UiRepo>, MetaError> {
        self.read(|c| {
            c.query(
                "SELECT r.name, \
                 (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repo_id = r.id), \
                 (SELECT MAX(t.updated_at) FROM tags t WHERE t.repo_id = r.id), \
                 (SELECT v.public FROM repo_visibility v WHERE v.name = r.name) \
                 FROM repos r WHERE r.name > ?1 ORDER BY r.name LIMIT ?2",
                args![last, n],
            )?
            .iter()
            .map(|r| {
                Ok(UiRepo {
                    name: r.get::<String>(0)?,
                    size: u64::try_from(r.get::<i64>(1)?).unwrap_or(0),
                    pushed: r.get::<Option<i64>>(2)?,
                    public: r.get::<Option<bool>>(3)?.unwrap_or(false),
                })
            })
            .collect()
        })
    }

    /// Every repository's stored bytes (its distinct blobs), and every blob's bytes together.
    pub fn storage_sizes(&self) -> Result<(Vec<(String, u64)>, u64), MetaError> {
        self.read(|c| {
            let repos = c
                .query(
                    "SELECT r.name, (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM repo_blobs rb \
                     JOIN blobs b ON b.digest = rb.digest WHERE rb.repo_id = r.id) FROM repos r",
                    &[],
                )?
                .iter()
                .map(|r| {
                    Ok((
                        r.get::<String>(0)?,
                        u64::try_from(r.get::<i64>(1)?).unwrap_or(0),
                    ))
                })
                .collect::<Result<Vec<_>, MetaError>>()?;
            let total: i64 = value(
                c,
                "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs",
                &[],
            )?
            .unwrap_or(0);
            Ok((repos, u64::try_from(total).unwrap_or(0)))
        })
    }

    /// A repository's tags for the web interface, newest first: name, digest, when it was
    /// pushed, and its manifest's content.
    pub fn ui_tags(&self, repo: &str, limit: u32) -> Result<Vec<UiTag>, MetaError> {
        self.read(|c| {
            c.query(
                "SELECT t.name, t.digest, t.updated_at, m.content, t.pushed_by, m.pulled_at FROM tags t JOIN repos r ON r.id = t.repo_id \
                 JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest \
                 WHERE r.name = ?1 ORDER BY t.updated_at DESC, t.name LIMIT ?2",
                args![repo, limit],
            )?
            .iter()
            .map(|r| {
                Ok(UiTag {
                    tag: r.get(0)?,
                    digest: r.get(1)?,
                    updated_at: r.get(2)?,
                    content: r.get(3)?,
                    pushed_by: r.get(4)?,
                    pulled_at: r.get(5)?,
                })
            })
            .collect()
        })
    }

    /// Moves manifests' last-pull times forward (`pulls`: repository, digest, unix seconds).
    /// Written 500 to a transaction, so pushes never wait long for the write lock.
    pub fn record_pulls(&self, pulls: &[(String, String, i64)]) -> Result<(), MetaError> {
        for batch in pulls.chunks(500) {
            self.write(|c| {
                for (repo, digest, at) in batch {
                    c.execute(
                        "UPDATE manifests SET pulled_at = ?3 WHERE repo_id = (SELECT id FROM repos WHERE name = ?1) \
                         AND digest = ?2 AND pulled_at < ?3",
                        args![repo.as_str(), digest.as_str(), *at],
                    )?;
                }
                Ok::<_, MetaError>(())
            })?;
        }
        Ok(())
    }

    /// Deletes a manifest and every tag that points at it.
    /// Refused, with nothing deleted, when a tag naming it is `protected` (immutable): the
    /// check is inside the transaction, so a tag pushed meanwhile cannot slip through.
    pub fn delete_manifest(
        &self,
        repo: &str,
        digest: &Digest,
        protected: impl Fn(&str) -> bool,
    ) -> Result<Deletion, MetaError> {
        let d = digest.to_string();
        self.write(|c| {
            let Some(repo_id) = Self::repo_id(c, repo)? else {
                return Ok(Deletion::NotFound);
            };
            for r in c.query(
                "SELECT name FROM tags WHERE repo_id = ?1 AND digest = ?2",
                args![repo_id, &d],
            )? {
                let tag: String = r.get(0)?;
                if protected(&tag) {
                    return Ok(Deletion::Protected(tag));
                }
            }
            let n = c.execute(
                "DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2",
                args![repo_id, &d],
            )?;
            c.execute(
                "DELETE FROM tags WHERE repo_id = ?1 AND digest = ?2",
                args![repo_id, &d],
            )?;
            c.execute(
                "DELETE FROM manifest_refs WHERE repo_id = ?1 AND digest = ?2",
                args![repo_id, &d],
            )?;
            Ok(if n > 0 {
                Deletion::Deleted
            } else {
                Deletion::NotFound
            })
        })
    }

    /// The tags of `repo` that point at `digest`.
    pub fn tags_of(&self, repo: &str, digest: &Digest) -> Result<Vec<String>, MetaError> {
        self.read(|c| {
            c.query(
                "SELECT t.name FROM tags t JOIN repos r ON r.id = t.repo_id \
                 WHERE r.name = ?1 AND t.digest = ?2 ORDER BY t.name",
                args![repo, digest.to_string()],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
        })
    }

    pub fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool, MetaError> {
        let n = self.write(|c| {
            c.execute(
                "DELETE FROM tags WHERE name = ?2 AND repo_id = (SELECT id FROM repos WHERE name = ?1)",
                args![repo, tag],
            )
        })?;
        Ok(n > 0)
    }

    /// Up to `n` tags after `last`, in lexical order; `None` when the repository is unknown.
    pub fn tags(&self, repo: &str, last: &str, n: u32) -> Result<Option<Vec<String>>, MetaError> {
        self.read(|c| {
            let Some(repo_id) = Self::repo_id(c, repo)? else {
                return Ok(None);
            };
            c.query(
                "SELECT name FROM tags WHERE repo_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
                args![repo_id, last, n],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect::<Result<Vec<String>, _>>()
            .map(Some)
        })
    }

    /// Up to `n` repository names after `last`, in lexical order.
    pub fn catalog(&self, last: &str, n: u32) -> Result<Vec<String>, MetaError> {
        self.read(|c| {
            c.query(
                "SELECT name FROM repos WHERE name > ?1 ORDER BY name LIMIT ?2",
                args![last, n],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
        })
    }

    /// Descriptors of the manifests in `repo` whose subject is `subject`.
    pub fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, MetaError> {
        self.read(|c| {
            c.query(
                "SELECT m.digest, m.media_type, length(m.content), m.artifact_type, m.annotations \
                 FROM manifests m JOIN repos r ON r.id = m.repo_id WHERE r.name = ?1 AND m.subject = ?2 \
                 AND (CAST(?3 AS TEXT) IS NULL OR m.artifact_type = CAST(?3 AS TEXT)) ORDER BY m.created_at, m.digest",
                args![repo, subject.to_string(), artifact_type],
            )?
            .iter()
            .map(|r| {
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
            })
            .collect()
        })
    }

    /// Records a new upload session of `owner` (a user name; empty for an anonymous caller,
    /// who is then counted by `client` address) unless they hold `cap` open sessions already:
    /// `false` then, and nothing is recorded.
    pub fn create_upload(
        &self,
        id: &str,
        repo: &str,
        owner: &str,
        client: &str,
        cap: u64,
    ) -> Result<bool, MetaError> {
        self.write(|c| {
            let open: i64 = if owner.is_empty() {
                value(
                    c,
                    "SELECT count(*) FROM uploads WHERE owner = '' AND client = ?1",
                    args![client],
                )?
            } else {
                value(
                    c,
                    "SELECT count(*) FROM uploads WHERE owner = ?1",
                    args![owner],
                )?
            }
            .unwrap_or(0);
            if open >= cap as i64 {
                return Ok(false);
            }
            c.execute(
                "INSERT INTO uploads(id, repo, started_at, updated_at, owner, client) VALUES (?1, ?2, ?3, ?3, ?4, ?5)",
                args![id, repo, now(), owner, client],
            )?;
            Ok(true)
        })
    }

    fn upload_row(r: &super::db::Row) -> Result<UploadRow, DbError> {
        let etags: String = r.get(5)?;
        Ok(UploadRow {
            id: r.get(0)?,
            repo: r.get(1)?,
            updated_at: r.get(2)?,
            size: r.get(3)?,
            parts: UploadParts {
                multipart: r.get(4)?,
                etags: etags.split_whitespace().map(str::to_string).collect(),
                parts_bytes: r.get(6)?,
            },
        })
    }

    pub fn get_upload(&self, id: &str) -> Result<Option<UploadRow>, MetaError> {
        self.read(|c| {
            c.query_opt(&format!("{UPLOAD_COLUMNS} WHERE id = ?1"), args![id])?
                .as_ref()
                .map(Self::upload_row)
                .transpose()
        })
    }

    /// Records what an upload holds now (and that it is alive).
    pub fn record_upload(&self, id: &str, size: u64, parts: &UploadParts) -> Result<(), MetaError> {
        self.write(|c| {
            c.execute(
                "UPDATE uploads SET updated_at = ?2, size = ?3, multipart = ?4, parts = ?5, parts_bytes = ?6 WHERE id = ?1",
                args![
                    id,
                    now(),
                    size,
                    parts.multipart.clone(),
                    parts.etags.join(" "),
                    parts.parts_bytes
                ],
            )?;
            Ok(())
        })
    }

    pub fn delete_upload(&self, id: &str) -> Result<(), MetaError> {
        self.write(|c| {
            c.execute("DELETE FROM uploads WHERE id = ?1", args![id])?;
            Ok(())
        })
    }

    /// All recorded upload sessions (for the expiry sweep and start-up cleanup).
    pub fn uploads(&self) -> Result<Vec<UploadRow>, MetaError> {
        self.read(|c| {
            c.query(UPLOAD_COLUMNS, &[])?
                .iter()
                .map(Self::upload_row)
                .collect()
        })
    }
}
