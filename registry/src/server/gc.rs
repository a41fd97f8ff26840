//! Online garbage collection: runs while the registry serves the same data (from `reg serve` on
//! a schedule, or `reg registry gc` as another process), never in a read-only mode.
//!
//! What stays: every tag (minus what a retention rule drops), every manifest a kept tag reaches
//! through index children and referrers (`subject`), every untagged manifest unless the
//! untagged policy says it is old enough, every blob a surviving manifest names, and everything
//! uploaded, mounted or linked within the grace window. The plan is computed from one read of
//! the metadata; each deletion then re-checks its condition in its own transaction, so a push,
//! tag or mount that lands meanwhile always wins.
//!
//! Blob bytes go in three steps, safe against a push of the same digest at any moment (a push
//! writes the blob's row *before* its object, see `uploads::Uploads::finish`): (1) delete the row if it is
//! still unlinked and older than the grace window; (2) rename the object into `_trash`;
//! (3) if a row has reappeared meanwhile, rename it back, else delete it. A crash between (2)
//! and (3) is repaired by [`recover_trash`] at the next start or collection.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use globset::{GlobBuilder, GlobMatcher};
use serde::Serialize;

use super::db::{args, exists, now};
use super::meta::{Meta, MetaError};
use super::store::BlobStore;
use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("blob storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("another garbage collection ({holder}) is running; it holds the lock for {secs} more seconds — wait for it, or for the lock to expire if it was killed")]
    Busy { holder: String, secs: i64 },
    #[error("registry.retention: {0}")]
    Rule(String),
}

/// A retention rule, compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    repos: GlobMatcher,
    keep_last: u32,
    keep_newer_than: Option<Duration>,
    immutable: Option<GlobMatcher>,
}

fn glob(pattern: &str) -> Result<GlobMatcher, GcError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| GcError::Rule(format!("{pattern:?}: {e}")))
}

impl Rule {
    pub fn from_config(r: &reg_config::RetentionRule) -> Result<Rule, GcError> {
        let keep_newer_than = if r.keep_newer_than.is_empty() {
            None
        } else {
            Some(reg_config::parse_duration(&r.keep_newer_than).map_err(GcError::Rule)?)
        };
        let immutable = if r.immutable_tags.is_empty() {
            None
        } else {
            Some(glob(&r.immutable_tags)?)
        };
        Ok(Rule {
            repos: glob(&r.repositories)?,
            keep_last: r.keep_last,
            keep_newer_than,
            immutable,
        })
    }

    pub fn from_configs(rules: &[reg_config::RetentionRule]) -> Result<Vec<Rule>, GcError> {
        rules.iter().map(Rule::from_config).collect()
    }
}

/// The rule for `repo`: the first whose pattern matches.
fn rule_for<'a>(rules: &'a [Rule], repo: &str) -> Option<&'a Rule> {
    rules.iter().find(|r| r.repos.is_match(repo))
}

/// Whether some tags of `repo` are immutable (otherwise no tag needs looking up).
pub fn has_immutable(rules: &[Rule], repo: &str) -> bool {
    rule_for(rules, repo).is_some_and(|r| r.immutable.is_some())
}

/// Whether `tag` of `repo` may be neither overwritten nor deleted.
pub fn is_immutable(rules: &[Rule], repo: &str, tag: &str) -> bool {
    rule_for(rules, repo)
        .and_then(|r| r.immutable.as_ref())
        .is_some_and(|m| m.is_match(tag))
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Nothing uploaded, mounted or linked more recently than this goes.
    pub grace: Duration,
    /// Untagged, unreachable manifests older than this go; `None`: they stay.
    pub untagged: Option<Duration>,
    pub dry_run: bool,
    pub rules: Vec<Rule>,
    /// The time the collection judges ages by, in whole seconds since the Unix epoch; `None`:
    /// the clock when it starts. Tests pass a later time instead of waiting out a window (the
    /// database lock always goes by the real clock: other processes share it).
    pub now: Option<i64>,
}

/// What a collection removed (or, dry, would remove).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    /// `repo:tag`
    pub tags: Vec<String>,
    /// `repo@digest`
    pub manifests: Vec<String>,
    /// Repository links to blobs no surviving manifest names.
    pub links: u64,
    /// `digest` and size of every blob whose bytes go.
    pub blobs: Vec<(String, u64)>,
    pub bytes: u64,
    pub seconds: f64,
}

/// The collector's hold on the database-wide lock (one collection at a time, across
/// processes and replicas); released on drop, and expiring by itself if its holder dies.
struct Lock<'a> {
    meta: &'a Meta,
    holder: String,
}

const LOCK_SECS: i64 = 60;

impl<'a> Lock<'a> {
    fn take(meta: &'a Meta) -> Result<Lock<'a>, GcError> {
        let holder = uuid::Uuid::new_v4().simple().to_string();
        let (pid, host) = (std::process::id(), hostname());
        meta.write(|c| -> Result<(), GcError> {
            let held: Option<(u32, String, i64)> = c
                .query_opt(
                    "SELECT pid, host, expires_at FROM gc_lock WHERE id = 1",
                    &[],
                )?
                .map(|r| Ok::<_, MetaError>((r.get(0)?, r.get(1)?, r.get(2)?)))
                .transpose()?;
            if let Some((other_pid, other_host, expires)) = held {
                // A holder on this machine whose process is gone was killed mid-collection:
                // its lock need not be waited out.
                let gone = other_host == host && !Path::new(&format!("/proc/{other_pid}")).exists();
                if expires > now() && !gone {
                    return Err(GcError::Busy {
                        holder: format!("pid {other_pid} on {other_host}"),
                        secs: expires - now(),
                    });
                }
            }
            c.execute(
                "INSERT INTO gc_lock(id, holder, pid, host, expires_at) VALUES (1, ?1, ?2, ?3, ?4) \
                 ON CONFLICT(id) DO UPDATE SET holder = excluded.holder, pid = excluded.pid, \
                 host = excluded.host, expires_at = excluded.expires_at",
                args![&holder, pid, &host, now() + LOCK_SECS],
            )?;
            Ok(())
        })?;
        Ok(Lock { meta, holder })
    }

    /// Extends the lock; call between batches.
    fn renew(&self) -> Result<(), GcError> {
        self.meta.write(|c| {
            c.execute(
                "UPDATE gc_lock SET expires_at = ?2 WHERE id = 1 AND holder = ?1",
                args![&self.holder, now() + LOCK_SECS],
            )
        })?;
        Ok(())
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        let _ = self.meta.write(|c| {
            c.execute(
                "DELETE FROM gc_lock WHERE id = 1 AND holder = ?1",
                args![&self.holder],
            )
        });
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// [`recover_trash`] at start-up, unless a collection (of another process) holds the lock and
/// will do it itself.
pub fn recover_at_start(meta: &Meta, store: &BlobStore) -> Result<usize, GcError> {
    match Lock::take(meta) {
        Ok(_lock) => recover_trash(meta, store),
        Err(GcError::Busy { .. }) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Puts back trashed objects whose blob row exists (a push won the race while a collection
/// was cut short) and deletes the rest. Call with the lock held.
fn recover_trash(meta: &Meta, store: &BlobStore) -> Result<usize, GcError> {
    let mut handled = 0;
    for t in store.trashed()? {
        match t.digest() {
            Some(d) if meta.blob_known(&d)? => store.restore(&t, &d)?,
            _ => store.forget(&t)?,
        }
        handled += 1;
    }
    Ok(handled)
}

/// repo → tag → (digest, updated_at)
type Tags = BTreeMap<String, BTreeMap<String, (String, i64)>>;

/// Everything the plan is computed from: one read of the metadata.
struct Snapshot {
    tags: Tags,
    /// repo → digest → (created_at, subject)
    manifests: BTreeMap<String, BTreeMap<String, (i64, Option<String>)>>,
    /// repo → manifest digest → children (blobs and manifests)
    refs: HashMap<String, HashMap<String, Vec<String>>>,
    /// (repo, blob digest, created_at)
    links: Vec<(String, String, i64)>,
    /// digest → (size, created_at)
    blobs: HashMap<String, (u64, i64)>,
}

fn snapshot(meta: &Meta) -> Result<Snapshot, GcError> {
    // One read transaction: every table as of the same moment.
    Ok(meta.snapshot(|c| -> Result<Snapshot, MetaError> {
        let mut tags = Tags::new();
        for r in c.query(
            "SELECT r.name, t.name, t.digest, t.updated_at FROM tags t JOIN repos r ON r.id = t.repo_id",
            &[],
        )? {
            tags.entry(r.get(0)?)
                .or_default()
                .insert(r.get(1)?, (r.get(2)?, r.get(3)?));
        }
        let mut manifests: BTreeMap<String, BTreeMap<String, (i64, Option<String>)>> =
            BTreeMap::new();
        for r in c.query(
            "SELECT r.name, m.digest, m.created_at, m.subject FROM manifests m JOIN repos r ON r.id = m.repo_id",
            &[],
        )? {
            manifests
                .entry(r.get(0)?)
                .or_default()
                .insert(r.get(1)?, (r.get(2)?, r.get(3)?));
        }
        let mut refs: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
        for r in c.query(
            "SELECT r.name, mr.digest, mr.child FROM manifest_refs mr JOIN repos r ON r.id = mr.repo_id",
            &[],
        )? {
            refs.entry(r.get(0)?)
                .or_default()
                .entry(r.get(1)?)
                .or_default()
                .push(r.get(2)?);
        }
        let mut links = Vec::new();
        for r in c.query(
            "SELECT r.name, rb.digest, rb.created_at FROM repo_blobs rb JOIN repos r ON r.id = rb.repo_id",
            &[],
        )? {
            links.push((r.get(0)?, r.get(1)?, r.get(2)?));
        }
        let mut blobs = HashMap::new();
        for r in c.query("SELECT digest, size, created_at FROM blobs", &[])? {
            blobs.insert(r.get(0)?, (r.get(1)?, r.get(2)?));
        }
        Ok(Snapshot {
            tags,
            manifests,
            refs,
            links,
            blobs,
        })
    })?)
}

/// Collects garbage once (blocking: call it off the async workers).
pub fn collect(meta: &Meta, store: &BlobStore, opts: &Options) -> Result<Report, GcError> {
    let started = Instant::now();
    let lock = Lock::take(meta)?;
    if !opts.dry_run {
        recover_trash(meta, store)?;
    }
    let t = opts.now.unwrap_or_else(now);
    let grace_cutoff = t - opts.grace.as_secs() as i64;
    let snap = snapshot(meta)?;
    let mut report = Report {
        dry_run: opts.dry_run,
        ..Report::default()
    };

    // 1. Retention: the tags each rule does not keep (the configuration's rules, then the
    // ones stored from the web interface).
    let rules: Vec<Rule> = opts
        .rules
        .iter()
        .cloned()
        .chain(super::retention::compiled(&meta.retention_rules()?))
        .collect();
    let mut tags = snap.tags.clone();
    let mut released: HashSet<(String, String)> = HashSet::new();
    for (repo, tag, digest, updated) in dropped_tags(&snap.tags, &rules, t) {
        if opts.dry_run || delete_tag_if_unchanged(meta, &repo, &tag, &digest, updated)? {
            report.tags.push(format!("{repo}:{tag}"));
            if let Some(m) = tags.get_mut(&repo) {
                m.remove(&tag);
            }
            released.insert((repo, digest));
        }
    }
    lock.renew()?;

    // 2. Manifests no kept tag reaches (only under the untagged policy, or released above).
    let untagged_cutoff = opts.untagged.map(|d| t - d.as_secs() as i64);
    let dead = unreachable(&snap, &tags, &released, untagged_cutoff);
    let mut removed: BTreeSet<(String, String)> = BTreeSet::new();
    if opts.dry_run {
        removed = dead;
    } else {
        // Parents before their children: a child still named by a manifest is kept by the
        // re-check, so repeat while something goes.
        let mut left = dead;
        loop {
            let todo: Vec<(String, String, i64)> = left
                .iter()
                .map(|(r, d)| (r.clone(), d.clone(), snap.manifests[r][d].0))
                .collect();
            let mut progress = false;
            for batch in todo.chunks(BATCH) {
                for (repo, d) in delete_manifests_if_unreachable(meta, batch)? {
                    left.remove(&(repo.clone(), d.clone()));
                    removed.insert((repo, d));
                    progress = true;
                }
                lock.renew()?;
            }
            if !progress || left.is_empty() {
                break;
            }
        }
    }
    report.manifests = removed.iter().map(|(r, d)| format!("{r}@{d}")).collect();
    lock.renew()?;

    // 3. Links that no surviving manifest of their repository names.
    let mut named: HashSet<(&str, &str)> = HashSet::new();
    for (repo, refs) in &snap.refs {
        for (m, children) in refs {
            if removed.contains(&(repo.clone(), m.clone())) {
                continue;
            }
            for c in children {
                named.insert((repo.as_str(), c.as_str()));
            }
        }
    }
    let mut linked: HashSet<&str> = HashSet::new();
    for (repo, digest, created) in &snap.links {
        if *created >= grace_cutoff || named.contains(&(repo.as_str(), digest.as_str())) {
            linked.insert(digest.as_str());
        } else {
            report.links += 1;
        }
    }
    if !opts.dry_run {
        // Re-checked in the statement itself: a manifest or link that arrived since stays.
        report.links = meta.write(|c| {
            c.execute(
                "DELETE FROM repo_blobs WHERE created_at < ?1 AND NOT EXISTS (\
                 SELECT 1 FROM manifest_refs mr WHERE mr.repo_id = repo_blobs.repo_id \
                 AND mr.child = repo_blobs.digest)",
                args![grace_cutoff],
            )
        })?;
    }
    lock.renew()?;

    // 4. Blobs without a link, older than the grace window.
    let mut candidates: Vec<(&String, u64)> = snap
        .blobs
        .iter()
        .filter(|(d, (_, created))| *created < grace_cutoff && !linked.contains(d.as_str()))
        .map(|(d, (size, _))| (d, *size))
        .collect();
    candidates.sort();
    let sizes: HashMap<&str, u64> = candidates.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    // In batches: one short write transaction per batch keeps pushes flowing.
    for batch in candidates.chunks(BATCH) {
        let digests: Vec<Digest> = batch
            .iter()
            .filter_map(|(d, _)| Digest::parse(d).ok())
            .collect();
        let gone = if opts.dry_run {
            digests
        } else {
            delete_blobs(meta, store, &digests, grace_cutoff)?
        };
        for d in gone {
            let d = d.to_string();
            let size = sizes.get(d.as_str()).copied().unwrap_or(0);
            report.bytes += size;
            report.blobs.push((d, size));
        }
        lock.renew()?;
    }

    // 5. Objects without any row (a crash between writing an object and recording it).
    let grace_time = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(
            u64::try_from(grace_cutoff).unwrap_or(0),
        ))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    // Only objects without a row at planning time are looked at (stat'ed) at all.
    let old_enough = |o: &super::store::StoredObject| -> Option<u64> {
        let (size, modified) = store.stat(o)?;
        (modified < grace_time).then_some(size)
    };
    for o in store.objects()? {
        match o.digest.clone() {
            Some(d) if snap.blobs.contains_key(&d.to_string()) => {}
            Some(d) => {
                let Some(size) = old_enough(&o) else {
                    continue;
                };
                if meta.blob_known(&d)? {
                    continue;
                }
                if opts.dry_run || trash_object(meta, store, &d)? {
                    report.blobs.push((d.to_string(), size));
                    report.bytes += size;
                }
            }
            None => {
                if !opts.dry_run && old_enough(&o).is_some() {
                    let _ = store.remove_stray(&o);
                }
            }
        }
    }
    drop(lock);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The tags the retention rules do not keep at time `t`: (repo, tag, digest, updated_at).
fn dropped_tags(tags: &Tags, rules: &[Rule], t: i64) -> Vec<(String, String, String, i64)> {
    let mut out = Vec::new();
    for (repo, repo_tags) in tags {
        let Some(rule) = rule_for(rules, repo) else {
            continue;
        };
        if rule.keep_last == 0 && rule.keep_newer_than.is_none() {
            continue;
        }
        // Immutable tags always stay and do not count towards `keep_last`.
        let mut by_age: Vec<(&String, &(String, i64))> = repo_tags
            .iter()
            .filter(|(tag, _)| !rule.immutable.as_ref().is_some_and(|m| m.is_match(tag)))
            .collect();
        by_age.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(b.0)));
        for (i, (tag, (digest, updated))) in by_age.into_iter().enumerate() {
            let keep = (rule.keep_last > 0 && i < rule.keep_last as usize)
                || rule.keep_newer_than.is_some_and(|d| {
                    *updated >= t.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                });
            if !keep {
                out.push((repo.clone(), tag.clone(), digest.clone(), *updated));
            }
        }
    }
    out
}

/// The manifests (repo, digest) that no root reaches through index children and referrers.
/// Roots: tagged manifests, and untagged ones not released by retention and younger than the
/// untagged policy's cutoff (all of them when there is no policy).
fn unreachable(
    snap: &Snapshot,
    tags: &Tags,
    released: &HashSet<(String, String)>,
    untagged_cutoff: Option<i64>,
) -> BTreeSet<(String, String)> {
    let empty_refs = HashMap::new();
    let mut dead = BTreeSet::new();
    for (repo, manifests) in &snap.manifests {
        let refs = snap.refs.get(repo).unwrap_or(&empty_refs);
        let tagged: HashSet<&str> = tags
            .get(repo)
            .map(|m| m.values().map(|(d, _)| d.as_str()).collect())
            .unwrap_or_default();
        let mut referrers: HashMap<&str, Vec<&str>> = HashMap::new();
        for (d, (_, subject)) in manifests {
            if let Some(s) = subject {
                referrers.entry(s.as_str()).or_default().push(d.as_str());
            }
        }
        let mut todo: Vec<&str> = manifests
            .iter()
            .filter(|(d, (created, _))| {
                tagged.contains(d.as_str())
                    || (!released.contains(&(repo.clone(), (*d).clone()))
                        && untagged_cutoff.is_none_or(|cut| *created >= cut))
            })
            .map(|(d, _)| d.as_str())
            .collect();
        let mut live: HashSet<&str> = HashSet::new();
        while let Some(d) = todo.pop() {
            if !live.insert(d) {
                continue;
            }
            for c in refs.get(d).into_iter().flatten() {
                if manifests.contains_key(c) {
                    todo.push(c.as_str());
                }
            }
            todo.extend(referrers.get(d).into_iter().flatten());
        }
        for d in manifests.keys() {
            if !live.contains(d.as_str()) {
                dead.insert((repo.clone(), d.clone()));
            }
        }
    }
    dead
}

fn delete_tag_if_unchanged(
    meta: &Meta,
    repo: &str,
    tag: &str,
    digest: &str,
    updated: i64,
) -> Result<bool, GcError> {
    let n = meta.write(|c| {
        c.execute(
            "DELETE FROM tags WHERE name = ?2 AND digest = ?3 AND updated_at = ?4 \
             AND repo_id = (SELECT id FROM repos WHERE name = ?1)",
            args![repo, tag, digest, updated],
        )
    })?;
    Ok(n > 0)
}

/// Deletes each manifest that, now, no tag points at, no other manifest names and that was
/// not pushed again since the plan was made; returns those deleted.
fn delete_manifests_if_unreachable(
    meta: &Meta,
    batch: &[(String, String, i64)],
) -> Result<Vec<(String, String)>, GcError> {
    Ok(meta.write(|c| -> Result<_, MetaError> {
        let mut out = Vec::new();
        for (repo, digest, created) in batch {
            let Some(id) = Meta::repo_id(c, repo)? else {
                continue;
            };
            let deleted = c.execute(
                "DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2 AND created_at = ?3 \
                 AND NOT EXISTS (SELECT 1 FROM tags WHERE repo_id = ?1 AND digest = ?2) \
                 AND NOT EXISTS (SELECT 1 FROM manifest_refs WHERE repo_id = ?1 AND child = ?2 AND digest <> ?2)",
                args![id, digest, *created],
            )?;
            if deleted > 0 {
                c.execute(
                    "DELETE FROM manifest_refs WHERE repo_id = ?1 AND digest = ?2",
                    args![id, digest],
                )?;
                out.push((repo.clone(), digest.clone()));
            }
        }
        Ok(out)
    })?)
}

/// Rows and objects handled per transaction.
const BATCH: usize = 500;

/// Steps (1)–(3) of the module's protocol for a batch of blobs with rows; returns those whose
/// bytes went.
fn delete_blobs(
    meta: &Meta,
    store: &BlobStore,
    digests: &[Digest],
    grace_cutoff: i64,
) -> Result<Vec<Digest>, GcError> {
    let deleted = meta.write(|c| -> Result<_, MetaError> {
        let mut out = Vec::new();
        for d in digests {
            let n = c.execute(
                "DELETE FROM blobs WHERE digest = ?1 AND created_at < ?2 \
                 AND NOT EXISTS (SELECT 1 FROM repo_blobs WHERE digest = ?1)",
                args![d.to_string(), grace_cutoff],
            )?;
            if n > 0 {
                out.push(d.clone());
            }
        }
        Ok(out)
    })?;
    trash_objects(meta, store, &deleted)
}

/// Steps (2)–(3): moves the objects aside, then keeps those whose row has reappeared; returns
/// the digests whose bytes went.
fn trash_objects(
    meta: &Meta,
    store: &BlobStore,
    digests: &[Digest],
) -> Result<Vec<Digest>, GcError> {
    let mut moved = Vec::new();
    let mut gone = Vec::new();
    for (d, t) in digests
        .iter()
        .zip(in_parallel(store, digests, |d| store.move_to_trash(d)))
    {
        match t? {
            Some(t) => moved.push((d.clone(), t)),
            None => gone.push(d.clone()),
        }
    }
    let back: HashSet<String> = meta.read(|c| -> Result<_, MetaError> {
        let mut back = HashSet::new();
        for (d, _) in &moved {
            if exists(
                c,
                "SELECT 1 FROM blobs WHERE digest = ?1",
                args![d.to_string()],
            )? {
                back.insert(d.to_string());
            }
        }
        Ok(back)
    })?;
    let done = in_parallel(store, &moved, |(d, trashed)| {
        if back.contains(&d.to_string()) {
            store.restore(trashed, d).map(|()| false)
        } else {
            store.forget(trashed).map(|()| true)
        }
    });
    for ((d, _), forgotten) in moved.into_iter().zip(done) {
        if forgotten? {
            gone.push(d);
        }
    }
    Ok(gone)
}

/// Object requests in flight at once on S3, where each one is a round trip.
const S3_CONCURRENCY: usize = 16;

/// `f` over `items`, results in order: on S3 from [`S3_CONCURRENCY`] threads (each request
/// waits on the network, so the collection is not one round trip per object), locally in turn
/// (a rename or unlink does not wait on anything).
fn in_parallel<T: Sync, R: Send>(
    store: &BlobStore,
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if !store.is_shared() || items.len() < 2 {
        return items.iter().map(&f).collect();
    }
    let per = items.len().div_ceil(S3_CONCURRENCY);
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(per)
            .map(|chunk| {
                let f = &f;
                scope.spawn(move || chunk.iter().map(f).collect::<Vec<R>>())
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// [`trash_objects`] for one.
fn trash_object(meta: &Meta, store: &BlobStore, digest: &Digest) -> Result<bool, GcError> {
    Ok(!trash_objects(meta, store, std::slice::from_ref(digest))?.is_empty())
}

/// [`delete_blobs`] for one.
#[cfg(test)]
fn delete_blob(
    meta: &Meta,
    store: &BlobStore,
    digest: &Digest,
    grace_cutoff: i64,
) -> Result<bool, GcError> {
    Ok(!delete_blobs(meta, store, std::slice::from_ref(digest), grace_cutoff)?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repos: &str, immutable: &str) -> Rule {
        Rule::from_config(&reg_config::RetentionRule {
            repositories: repos.into(),
            immutable_tags: immutable.into(),
            ..Default::default()
        })
        .expect("rule")
    }

    #[test]
    fn the_first_matching_rule_decides_and_star_stays_in_one_level() {
        let rules = vec![rule("team/*", "v*"), rule("**", "release-*")];
        assert!(is_immutable(&rules, "team/app", "v1.0"));
        assert!(!is_immutable(&rules, "team/app", "release-1"));
        assert!(is_immutable(&rules, "team/app/sub", "release-1"));
        assert!(!is_immutable(&rules, "other", "v1"));
        assert!(is_immutable(&rules, "other", "release-2"));
    }

    /// A blob store and database with one unlinked blob recorded an hour ago.
    fn stale_blob(data: &[u8]) -> (tempfile::TempDir, Meta, BlobStore, Digest) {
        let t = tempfile::tempdir().expect("tempdir");
        let meta = Meta::open("", &t.path().join("meta.db")).expect("meta");
        let store = BlobStore::open_local(&t.path().join("blobs"), &t.path().join("uploads"))
            .expect("store");
        let d = Digest::sha256_of(data);
        upload(&store, &meta, &d, data);
        meta.write(|c| c.execute("UPDATE blobs SET created_at = created_at - 3600", &[]))
            .expect("update");
        (t, meta, store, d)
    }

    /// What a push does: verified, the row, then the object (see `uploads::Uploads::finish`).
    fn upload(store: &BlobStore, meta: &Meta, d: &Digest, data: &[u8]) {
        let id = uuid::Uuid::new_v4().to_string();
        store.create_upload(&id).expect("create");
        let mut up = crate::server::store::Upload::new(id, "r".into(), d.algorithm());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.try_send(bytes::Bytes::copy_from_slice(data))
            .expect("send");
        drop(tx);
        assert!(store.append(&mut up, rx).1.is_none());
        let verdict = store
            .finish(&mut up, d, || {
                meta.touch_blob(d, data.len() as u64)
                    .map_err(std::io::Error::other)
            })
            .expect("commit");
        assert!(verdict.is_none(), "digest matches");
    }

    fn object(store: &BlobStore, d: &Digest) -> Option<Vec<u8>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        use futures::StreamExt;
        let o = store
            .objects()
            .expect("list")
            .into_iter()
            .find(|o| o.digest.as_ref() == Some(d))?;
        let (size, _) = store.stat(&o)?;
        let chunks: Vec<std::io::Result<bytes::Bytes>> = rt.block_on(async {
            let stream = store.read(d, 0, size).await.expect("read")?;
            Some(stream.collect().await)
        })?;
        Some(chunks.into_iter().flat_map(|c| c.expect("chunk")).collect())
    }

    /// Step (1) of the collector for `d`: its row goes.
    fn forget_row(meta: &Meta, d: &Digest) {
        meta.write(|c| c.execute("DELETE FROM blobs WHERE digest = ?1", args![d.to_string()]))
            .expect("delete row");
    }

    #[test]
    fn ages_are_judged_by_the_time_passed_in() {
        let data = b"an unlinked blob pushed just now";
        let (_t, meta, store, d) = stale_blob(data);
        upload(&store, &meta, &d, data);
        let opts = |now| Options {
            grace: Duration::from_secs(60),
            untagged: None,
            dry_run: true,
            rules: Vec::new(),
            now,
        };
        let blobs = |o: &Options| collect(&meta, &store, o).expect("gc").blobs.len();
        assert_eq!(
            blobs(&opts(None)),
            0,
            "within the grace window by the clock"
        );
        assert_eq!(blobs(&opts(Some(now() + 30))), 0, "still within it 30 s on");
        assert_eq!(blobs(&opts(Some(now() + 120))), 1, "past it 2 min on");
    }

    #[test]
    fn a_push_racing_the_collector_keeps_its_bytes_at_every_interleaving() {
        let data = b"bytes that must survive";
        let cutoff = now() - 60;
        // The push lands before the collector's delete: the row is fresh, nothing happens.
        let (_t, meta, store, d) = stale_blob(data);
        upload(&store, &meta, &d, data);
        assert!(!delete_blob(&meta, &store, &d, cutoff).expect("gc"));
        assert_eq!(object(&store, &d).as_deref(), Some(&data[..]));

        // Row deleted, then the push, then the object is moved aside: it comes back.
        let (_t, meta, store, d) = stale_blob(data);
        forget_row(&meta, &d);
        upload(&store, &meta, &d, data);
        assert!(!trash_object(&meta, &store, &d).expect("gc"));
        assert_eq!(object(&store, &d).as_deref(), Some(&data[..]));

        // Object already in the trash when the push writes its copy: restored over it.
        let (_t, meta, store, d) = stale_blob(data);
        forget_row(&meta, &d);
        let trashed = store.move_to_trash(&d).expect("trash").expect("was there");
        upload(&store, &meta, &d, data);
        assert!(meta.blob_known(&d).expect("known"));
        store.restore(&trashed, &d).expect("restore");
        assert_eq!(object(&store, &d).as_deref(), Some(&data[..]));

        // Killed between moving aside and checking: the next start sorts it out.
        let (_t, meta, store, d) = stale_blob(data);
        let _trashed = store.move_to_trash(&d).expect("trash").expect("was there");
        assert_eq!(recover_at_start(&meta, &store).expect("recover"), 1);
        assert_eq!(
            object(&store, &d).as_deref(),
            Some(&data[..]),
            "row kept, object back"
        );

        // Nobody pushes: the bytes go, and the trash is empty.
        let (_t, meta, store, d) = stale_blob(data);
        assert!(delete_blob(&meta, &store, &d, cutoff).expect("gc"));
        assert!(object(&store, &d).is_none());
        assert_eq!(recover_at_start(&meta, &store).expect("recover"), 0);
    }

    #[test]
    fn bad_patterns_and_durations_are_refused() {
        let bad = reg_config::RetentionRule {
            repositories: "team/[".into(),
            ..Default::default()
        };
        assert!(Rule::from_config(&bad).is_err());
        let bad = reg_config::RetentionRule {
            repositories: "team/*".into(),
            keep_newer_than: "soon".into(),
            ..Default::default()
        };
        assert!(Rule::from_config(&bad).is_err());
    }
}
