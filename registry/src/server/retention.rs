//! Retention rules from two places: the configuration (`registry.retention`, first, read-only
//! here) and the database (added and removed by administrators in the web interface, after the
//! configuration's). A repository's rule is the first whose pattern matches it, over that order.
//!
//! The stored rules are read again at most every [`REFRESH`] (so a rule added on one replica
//! holds on the others within it), and at once on the replica that changed them. The collector
//! reads them itself (`gc::collect`), so `reg registry gc` sees them too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::db::{args, now, value};
use super::gc::{GcError, Rule};
use super::meta::{Meta, MetaError};

/// How stale the stored rules may be on a replica that did not change them.
pub const REFRESH: Duration = Duration::from_secs(2);

/// A rule kept in the database.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRule {
    pub id: i64,
    pub rule: reg_config::RetentionRule,
    pub created_by: String,
    pub created_at: i64,
}

/// The rules in force: the configuration's, then the stored ones.
pub struct Retention {
    meta: Arc<Meta>,
    config: Vec<Rule>,
    cached: Mutex<Cached>,
}

/// The rules last read, when, and the version of the stored rules they were read at: a
/// change here moves the version on, so a read that began before it cannot be kept.
#[derive(Default)]
struct Cached {
    version: u64,
    rules: Option<(Instant, u64, Arc<Vec<Rule>>)>,
}

impl Retention {
    pub fn new(meta: Arc<Meta>, config: Vec<Rule>) -> Retention {
        Retention {
            meta,
            config,
            cached: Mutex::new(Cached::default()),
        }
    }

    /// Every rule, in order. When the database does not answer, the last rules read hold
    /// (even after a change here: an immutable tag stays protected), or the configuration's
    /// alone before any was read; the failure is logged.
    pub async fn rules(&self) -> Arc<Vec<Rule>> {
        let (version, last) = match self.cached.lock() {
            Ok(c) => (c.version, c.rules.clone()),
            Err(_) => return Arc::new(self.config.clone()),
        };
        if let Some((at, v, rules)) = &last {
            if *v == version && at.elapsed() < REFRESH {
                return rules.clone();
            }
        }
        let meta = self.meta.clone();
        let stored = tokio::task::spawn_blocking(move || meta.retention_rules()).await;
        let rules: Arc<Vec<Rule>> = match stored {
            Ok(Ok(stored)) => Arc::new(
                self.config
                    .iter()
                    .cloned()
                    .chain(compiled(&stored))
                    .collect(),
            ),
            failed => {
                tracing::warn!(error = ?failed.err(), "stored retention rules could not be read; the last ones hold");
                return last
                    .map(|(_, _, r)| r)
                    .unwrap_or_else(|| Arc::new(self.config.clone()));
            }
        };
        if let Ok(mut c) = self.cached.lock() {
            // Kept only if nothing changed here while it was read.
            if c.version == version {
                c.rules = Some((Instant::now(), version, rules.clone()));
            }
        }
        rules
    }

    /// Makes the next [`Retention::rules`] read the database (after a change here).
    pub fn changed(&self) {
        if let Ok(mut c) = self.cached.lock() {
            c.version += 1;
        }
    }
}

/// The stored rules that compile (each was checked when added; one that no longer does is
/// skipped and logged rather than stopping every push).
pub fn compiled(stored: &[StoredRule]) -> Vec<Rule> {
    stored
        .iter()
        .filter_map(|s| match Rule::from_config(&s.rule) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(id = s.id, error = %e, "a stored retention rule is skipped");
                None
            }
        })
        .collect()
}

/// Checks a rule before it is stored: it must compile, and name repositories.
pub fn check(rule: &reg_config::RetentionRule) -> Result<(), GcError> {
    if rule.repositories.trim().is_empty() {
        return Err(GcError::Rule(
            "a rule needs the repositories it applies to (a glob: team/*, **)".into(),
        ));
    }
    Rule::from_config(rule).map(|_| ())
}

impl Meta {
    /// The stored retention rules, oldest first.
    pub fn retention_rules(&self) -> Result<Vec<StoredRule>, MetaError> {
        self.read(|c| {
            c.query(
                "SELECT id, repositories, keep_last, keep_newer_than, immutable_tags, created_by, created_at \
                 FROM retention_rules ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(StoredRule {
                    id: r.get(0)?,
                    rule: reg_config::RetentionRule {
                        repositories: r.get(1)?,
                        keep_last: u32::try_from(r.get::<i64>(2)?).unwrap_or(0),
                        keep_newer_than: r.get(3)?,
                        immutable_tags: r.get(4)?,
                    },
                    created_by: r.get(5)?,
                    created_at: r.get(6)?,
                })
            })
            .collect()
        })
    }

    /// Stores a rule (checked by [`check`] first); its id.
    pub fn add_retention_rule(
        &self,
        rule: &reg_config::RetentionRule,
        by: &str,
    ) -> Result<i64, MetaError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO retention_rules(repositories, keep_last, keep_newer_than, immutable_tags, created_by, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                args![
                    rule.repositories.as_str(),
                    i64::from(rule.keep_last),
                    rule.keep_newer_than.as_str(),
                    rule.immutable_tags.as_str(),
                    by,
                    now()
                ],
            )?;
            Ok(value(c, "SELECT max(id) FROM retention_rules", &[])?.unwrap_or(0))
        })
    }

    pub fn remove_retention_rule(&self, id: i64) -> Result<bool, MetaError> {
        self.write(|c| Ok(c.execute("DELETE FROM retention_rules WHERE id = ?1", args![id])? > 0))
    }
}
