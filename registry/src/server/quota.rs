//! Storage quotas: a limit in bytes on a namespace (the first component of repository names:
//! an organisation's or a user's) or on one repository. Usage is the size of the distinct
//! blobs linked into the quota's repositories — a blob in several of them counts once — read
//! from the links themselves, so it is right after deletes and garbage collection without any
//! counter to keep. The check runs inside the transaction that links a blob (an upload's
//! completion, a mount, a mirror's fetch), and link transactions are serialized: concurrent
//! pushes cannot pass a limit together.

use super::db::{args, exists, now, value, Conn, DbError};
use super::meta::{Meta, MetaError};
use crate::digest::Digest;

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Every repository under `scope/`, and `scope` itself.
    Namespace,
    /// The repository named `scope`.
    Repository,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Repository => "repository",
        }
    }

    fn parse(s: &str) -> Kind {
        if s == "repository" {
            Kind::Repository
        } else {
            Kind::Namespace
        }
    }

    /// SQL over `r.name` (a repository) that is true inside `scope` (parameter `?1`).
    fn inside(self) -> &'static str {
        match self {
            Kind::Namespace => {
                "(r.name = CAST(?1 AS TEXT) OR substr(r.name, 1, length(CAST(?1 AS TEXT)) + 1) = CAST(?1 AS TEXT) || '/')"
            }
            Kind::Repository => "r.name = CAST(?1 AS TEXT)",
        }
    }
}

/// A quota and what it holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRow {
    pub scope: String,
    pub kind: Kind,
    pub limit: u64,
    pub used: u64,
}

/// A link refused by a quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the quota of {kind} {scope} is {limit_h} ({limit} bytes) and {used_h} of it are used; this \
     blob ({size_h}) would pass it. Delete what is not needed (garbage collection frees the \
     space), or have an admin raise it: reg admin quota set {scope} SIZE{flag}",
    kind = kind.as_str(),
    limit_h = human(*limit),
    used_h = human(*used),
    size_h = human(*size),
    flag = if *kind == Kind::Repository { " --repository" } else { "" }
)]
pub struct QuotaExceeded {
    pub scope: String,
    pub kind: Kind,
    pub limit: u64,
    pub used: u64,
    pub size: u64,
}

/// Why a blob was not linked.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Meta(#[from] DbError),
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
}

/// Bytes in decimal units with one decimal (`2.5 MB`).
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn usage(c: &mut dyn Conn, scope: &str, kind: Kind) -> Result<u64, DbError> {
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM blobs b WHERE b.digest IN \
         (SELECT rb.digest FROM repo_blobs rb JOIN repos r ON r.id = rb.repo_id WHERE {})",
        kind.inside()
    );
    Ok(value::<i64>(c, &sql, args![scope])?.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
}

/// Inside a link's transaction: whether linking `digest` (`size` bytes) into `repo` keeps every
/// quota over `repo`.
pub(super) fn check(
    c: &mut dyn Conn,
    repo: &str,
    digest: &Digest,
    size: u64,
) -> Result<(), LinkError> {
    let namespace = repo.split('/').next().unwrap_or(repo);
    let rows = c.query(
        "SELECT scope, kind, limit_bytes FROM quotas \
         WHERE (kind = 'namespace' AND scope = ?1) OR (kind = 'repository' AND scope = ?2)",
        args![namespace, repo],
    )?;
    for row in rows {
        let (scope, kind, limit): (String, String, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        let kind = Kind::parse(&kind);
        let counted = format!(
            "SELECT 1 FROM repo_blobs rb JOIN repos r ON r.id = rb.repo_id WHERE rb.digest = ?2 AND {}",
            kind.inside()
        );
        if exists(c, &counted, args![&scope, digest.to_string()])? {
            continue;
        }
        let (limit, used) = (u64::try_from(limit).unwrap_or(0), usage(c, &scope, kind)?);
        if used.saturating_add(size) > limit {
            return Err(QuotaExceeded {
                scope,
                kind,
                limit,
                used,
                size,
            }
            .into());
        }
    }
    Ok(())
}

impl Meta {
    /// Sets (or replaces) the quota of `scope`.
    pub fn set_quota(&self, scope: &str, kind: Kind, limit: u64) -> Result<(), MetaError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO quotas(scope, kind, limit_bytes, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(scope, kind) DO UPDATE SET limit_bytes = excluded.limit_bytes",
                args![
                    scope,
                    kind.as_str(),
                    i64::try_from(limit).unwrap_or(i64::MAX),
                    now()
                ],
            )?;
            Ok(())
        })
    }

    /// Removes the quota of `scope`; whether there was one.
    pub fn remove_quota(&self, scope: &str, kind: Kind) -> Result<bool, MetaError> {
        self.write(|c| {
            Ok(c.execute(
                "DELETE FROM quotas WHERE scope = ?1 AND kind = ?2",
                args![scope, kind.as_str()],
            )? > 0)
        })
    }

    /// Every quota with its usage now.
    pub fn quotas(&self) -> Result<Vec<QuotaRow>, MetaError> {
        self.snapshot(|c| {
            let rows = c.query(
                "SELECT scope, kind, limit_bytes FROM quotas ORDER BY scope, kind",
                &[],
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (scope, kind, limit): (String, String, i64) =
                    (row.get(0)?, row.get(1)?, row.get(2)?);
                let kind = Kind::parse(&kind);
                let used = usage(c, &scope, kind)?;
                out.push(QuotaRow {
                    scope,
                    kind,
                    limit: u64::try_from(limit).unwrap_or(0),
                    used,
                });
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(999), "999 B");
        assert_eq!(human(2_500_000), "2.5 MB");
        assert_eq!(human(2_000_000), "2.0 MB");
        assert_eq!(human(10_000_000_000), "10.0 GB");
    }

    #[test]
    fn usage_counts_each_blob_once_and_namespaces_do_not_leak_into_each_other() {
        let t = tempfile::tempdir().expect("tempdir");
        let meta = Meta::open("", &t.path().join("m.db")).expect("meta");
        let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
        meta.set_quota("team", Kind::Namespace, 250).expect("quota");
        meta.link_blob("team/x", &a, 100).expect("a");
        meta.link_blob("team/y", &a, 100)
            .expect("a again, counted once");
        meta.link_blob("team_b/z", &b, 500)
            .expect("another namespace");
        meta.link_blob("team/y", &b, 500)
            .expect_err("past the quota");
        let q = meta.quotas().expect("quotas");
        assert_eq!(
            q,
            vec![QuotaRow {
                scope: "team".into(),
                kind: Kind::Namespace,
                limit: 250,
                used: 100
            }]
        );
        meta.set_quota("team/x", Kind::Repository, 50)
            .expect("repo quota");
        let err = meta
            .link_blob("team/x", &Digest::sha256_of(b"c"), 60)
            .expect_err("repository quota");
        assert!(err.to_string().contains("repository team/x"), "{err}");
        assert!(meta.remove_quota("team/x", Kind::Repository).expect("rm"));
    }
}
