//! Notifications (`[[registry.notify]]`): pushes, pulls and deletes told to webhooks in
//! distribution's envelope (`application/vnd.docker.distribution.events.v1+json`), so existing
//! consumers work unchanged.
//!
//! An event goes into a bounded in-memory channel (the request never waits on a webhook); one
//! task writes what arrives, in batches, into the `notify_queue` table, one row per matching
//! endpoint, so that deliveries survive restarts and are shared by replicas; one task per
//! endpoint claims due rows (a lease, so replicas do not send a row twice), POSTs them as one
//! envelope, and deletes them, or retries them later with a doubling backoff. A row that used
//! up its attempts, or was pushed out of a full queue, stays as `failed` for `reg admin notify`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reg_config::NotifyConfig;
use serde::{Deserialize, Serialize};

use super::db::{args, now, DbError};
use super::meta::{Meta, MetaError};

/// Events waiting in memory for the writer; more are dropped (and counted in the log).
const CHANNEL: usize = 10_000;
/// Events in one envelope.
const BATCH: usize = 64;
/// How long a claimed delivery is reserved for the replica that claimed it, beyond the
/// endpoint's timeout (a replica that dies while sending leaves its rows to others after it).
const LEASE_EXTRA: Duration = Duration::from_secs(10);
/// The longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often an idle endpoint looks for due rows (other replicas' events, retries).
const POLL: Duration = Duration::from_millis(500);
pub const MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("registry.notify[{index}]: {message}")]
    Config { index: usize, message: String },
}

/// One event, as distribution writes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub id: String,
    pub timestamp: String,
    pub action: String,
    pub target: Target,
    pub request: RequestInfo,
    pub actor: Actor,
    pub source: Source,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Target {
    #[serde(
        rename = "mediaType",
        skip_serializing_if = "String::is_empty",
        default
    )]
    pub media_type: String,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub size: u64,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub digest: String,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub length: u64,
    pub repository: String,
    #[serde(
        rename = "fromRepository",
        skip_serializing_if = "String::is_empty",
        default
    )]
    pub from_repository: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub url: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub tag: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RequestInfo {
    pub id: String,
    pub addr: String,
    pub host: String,
    pub method: String,
    pub useragent: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Actor {
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Source {
    pub addr: String,
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

#[derive(Serialize)]
struct Envelope<'a> {
    events: &'a [serde_json::Value],
}

/// One configured endpoint, compiled.
struct Endpoint {
    name: String,
    url: String,
    headers: Vec<(String, String)>,
    actions: Vec<String>,
    repos: globset::GlobMatcher,
    ignore_media_types: Vec<String>,
    timeout: Duration,
    backoff: Duration,
    max_attempts: u32,
    queue_limit: u64,
    wake: tokio::sync::Notify,
}

impl Endpoint {
    fn wants(&self, e: &Event) -> bool {
        (self.actions.is_empty() || self.actions.contains(&e.action))
            && self.repos.is_match(&e.target.repository)
            && !self.ignore_media_types.contains(&e.target.media_type)
    }

    /// The wait before attempt `attempts + 1`.
    fn backoff_after(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        self.backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }
}

/// The notification service: takes events from the handlers, keeps and delivers them.
pub struct Notifier {
    endpoints: Vec<Arc<Endpoint>>,
    /// `None` once closed (or with no endpoint).
    tx: std::sync::RwLock<Option<tokio::sync::mpsc::Sender<Event>>>,
    on: bool,
    rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Event>>>,
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    deliverers: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    meta: std::sync::OnceLock<Arc<Meta>>,
    /// Who we are in `source`: this process's address (once bound) and a random id.
    addr: std::sync::OnceLock<String>,
    instance_id: String,
}

impl Notifier {
    pub fn from_config(cfgs: &[NotifyConfig]) -> Result<Notifier, NotifyError> {
        let mut endpoints = Vec::new();
        for (index, c) in cfgs.iter().enumerate() {
            let bad = |message: String| NotifyError::Config { index, message };
            let repos = globset::GlobBuilder::new(&c.repositories)
                .literal_separator(true)
                .build()
                .map_err(|e| bad(format!("repositories: {e}")))?
                .compile_matcher();
            endpoints.push(Arc::new(Endpoint {
                name: c.name.clone(),
                url: c.url.clone(),
                headers: c
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                actions: c.actions.clone(),
                repos,
                ignore_media_types: c.ignore_media_types.clone(),
                timeout: reg_config::parse_duration(&c.timeout).map_err(bad)?,
                backoff: reg_config::parse_duration(&c.backoff).map_err(bad)?,
                max_attempts: c.max_attempts,
                queue_limit: c.queue_limit,
                wake: tokio::sync::Notify::new(),
            }));
        }
        let (tx, rx) = if endpoints.is_empty() {
            (None, None)
        } else {
            let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL);
            (Some(tx), Some(rx))
        };
        Ok(Notifier {
            endpoints,
            on: tx.is_some(),
            tx: std::sync::RwLock::new(tx),
            rx: std::sync::Mutex::new(rx),
            writer: std::sync::Mutex::new(None),
            deliverers: std::sync::Mutex::new(Vec::new()),
            meta: std::sync::OnceLock::new(),
            addr: std::sync::OnceLock::new(),
            instance_id: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// Whether any endpoint is configured (no events are made otherwise).
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Hands `event` over for delivery; never waits. A full channel drops it (logged).
    pub fn emit(&self, event: Event) {
        let Ok(tx) = self.tx.read() else { return };
        let Some(tx) = tx.as_ref() else { return };
        if let Err(e) = tx.try_send(event) {
            tracing::warn!(error = %e, "notification dropped: the queue's writer is behind");
        }
    }

    /// Takes no more events and waits (up to 10 s) until the writer has queued every event
    /// handed over so far, then stops the deliveries and gives back the rows they had claimed:
    /// a graceful stop loses nothing and delays nothing.
    pub async fn close(&self) {
        if let Ok(mut tx) = self.tx.write() {
            tx.take();
        }
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = writer {
            if tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .is_err()
            {
                tracing::warn!("notifications not yet queued were dropped at shutdown");
            }
        }
        let deliverers = self
            .deliverers
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        for d in deliverers {
            d.abort();
            let _ = d.await;
        }
        if let Some(meta) = self.meta.get().cloned() {
            let me = self.instance_id.clone();
            let released = tokio::task::spawn_blocking(move || meta.notify_release(&me)).await;
            if !matches!(released, Ok(Ok(()))) {
                tracing::warn!("claimed notifications are left to their lease");
            }
        }
    }

    /// The `source` of this process's events.
    pub fn source(&self) -> Source {
        Source {
            addr: self.addr.get().cloned().unwrap_or_default(),
            instance_id: self.instance_id.clone(),
        }
    }

    /// Runs the writer and one deliverer per endpoint until the process ends (the registry
    /// bound to `addr`). Called once.
    pub fn spawn(self: &Arc<Self>, meta: Arc<Meta>, addr: String) {
        let _ = self.addr.set(addr);
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("reg/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let _ = self.meta.set(meta.clone());
        let mut deliverers = Vec::new();
        for ep in &self.endpoints {
            let (ep, meta, http, me) = (
                ep.clone(),
                meta.clone(),
                http.clone(),
                self.instance_id.clone(),
            );
            deliverers.push(tokio::spawn(async move {
                deliver_loop(ep, meta, http, me).await
            }));
        }
        if let Ok(mut d) = self.deliverers.lock() {
            *d = deliverers;
        }
        let (endpoints, m) = (self.endpoints.clone(), meta);
        let writer = tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 256).await > 0 {
                let mut rows = Vec::new();
                for e in batch.drain(..) {
                    let Ok(json) = serde_json::to_string(&e) else {
                        continue;
                    };
                    for ep in endpoints.iter().filter(|ep| ep.wants(&e)) {
                        rows.push((ep.name.clone(), json.clone(), ep.queue_limit));
                    }
                }
                if rows.is_empty() {
                    continue;
                }
                let m2 = m.clone();
                match tokio::task::spawn_blocking(move || m2.notify_enqueue(&rows)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "notifications could not be queued"),
                    Err(e) => tracing::error!(error = %e, "notifications could not be queued"),
                }
                for ep in &endpoints {
                    ep.wake.notify_one();
                }
            }
        });
        if let Ok(mut w) = self.writer.lock() {
            *w = Some(writer);
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn deliver_loop(ep: Arc<Endpoint>, meta: Arc<Meta>, http: reqwest::Client, me: String) {
    loop {
        let (m, name, by) = (meta.clone(), ep.name.clone(), me.clone());
        let lease = i64::try_from((ep.timeout + LEASE_EXTRA).as_millis()).unwrap_or(i64::MAX);
        let claimed =
            tokio::task::spawn_blocking(move || m.notify_claim(&name, &by, now_ms(), lease, BATCH))
                .await;
        let rows = match claimed {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                tracing::error!(endpoint = %ep.name, error = %e, "reading the notification queue");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        if rows.is_empty() {
            let _ = tokio::time::timeout(POLL, ep.wake.notified()).await;
            continue;
        }
        let events: Vec<serde_json::Value> = rows
            .iter()
            .filter_map(|r| serde_json::from_str(&r.event).ok())
            .collect();
        let result = send(&http, &ep, &events).await;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let m = meta.clone();
        let outcome = match result {
            Ok(()) => tokio::task::spawn_blocking(move || m.notify_delivered(&ids)).await,
            Err(why) => {
                let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(0) + 1;
                let next = now_ms()
                    + i64::try_from(ep.backoff_after(attempts).as_millis()).unwrap_or(i64::MAX);
                tracing::warn!(endpoint = %ep.name, attempts, error = %why, "notification not delivered");
                let max = ep.max_attempts;
                tokio::task::spawn_blocking(move || m.notify_retry(&ids, next, &why, max)).await
            }
        };
        if let Ok(Err(e)) = outcome {
            tracing::error!(endpoint = %ep.name, error = %e, "recording a notification's delivery");
        }
    }
}

async fn send(
    http: &reqwest::Client,
    ep: &Endpoint,
    events: &[serde_json::Value],
) -> Result<(), String> {
    let body = serde_json::to_vec(&Envelope { events }).map_err(|e| e.to_string())?;
    let mut req = http
        .post(&ep.url)
        .timeout(ep.timeout)
        .header("content-type", MEDIA_TYPE)
        .body(body);
    for (k, v) in &ep.headers {
        req = req.header(k, v);
    }
    let r = req.send().await.map_err(|e| e.to_string())?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("{} answered {}", ep.url, r.status()))
    }
}

/// A queued delivery.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: i64,
    pub endpoint: String,
    pub event: String,
    pub created_at: i64,
    pub attempts: u32,
    pub last_error: String,
    pub failed: bool,
}

impl Queued {
    /// The event's action and target, for listings.
    pub fn summary(&self) -> String {
        match serde_json::from_str::<Event>(&self.event) {
            Ok(e) => {
                let what = if e.target.tag.is_empty() {
                    e.target.digest
                } else {
                    e.target.tag
                };
                format!("{} {}:{what}", e.action, e.target.repository)
            }
            Err(_) => "(unreadable event)".into(),
        }
    }
}

impl Meta {
    /// Queues `(endpoint, event, queue_limit)` rows; an endpoint's rows past its limit push its
    /// oldest waiting ones to `failed`.
    pub fn notify_enqueue(&self, rows: &[(String, String, u64)]) -> Result<(), MetaError> {
        let (at, due) = (now(), now_ms());
        self.write(|c| -> Result<(), MetaError> {
            for (endpoint, event, _) in rows {
                c.execute(
                    "INSERT INTO notify_queue(endpoint, event, created_at, next_ms) VALUES (?1, ?2, ?3, ?4)",
                    args![endpoint, event, at, due],
                )?;
            }
            let mut seen = std::collections::BTreeSet::new();
            for (endpoint, _, limit) in rows {
                if !seen.insert(endpoint) {
                    continue;
                }
                c.execute(
                    "UPDATE notify_queue SET failed = 1, last_error = 'dropped: the queue was full' \
                     WHERE endpoint = ?1 AND failed = 0 AND id <= (SELECT id FROM notify_queue \
                     WHERE endpoint = ?1 AND failed = 0 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                    args![endpoint, i64::try_from(*limit).unwrap_or(i64::MAX)],
                )?;
            }
            Ok(())
        })
    }

    /// Claims up to `limit` due rows of `endpoint`, oldest first, for `lease_ms`, as `by` (a
    /// process's instance id).
    pub fn notify_claim(
        &self,
        endpoint: &str,
        by: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, MetaError> {
        self.write(|c| -> Result<Vec<Queued>, MetaError> {
            let rows = c.query(
                "SELECT id, endpoint, event, created_at, attempts, last_error, failed FROM notify_queue \
                 WHERE endpoint = ?1 AND failed = 0 AND next_ms <= ?2 ORDER BY id LIMIT ?3",
                args![endpoint, now_ms, i64::try_from(limit).unwrap_or(64)],
            )?;
            let rows = rows
                .iter()
                .map(queued)
                .collect::<Result<Vec<_>, DbError>>()?;
            for r in &rows {
                c.execute(
                    "UPDATE notify_queue SET next_ms = ?2, claimed_by = ?3 WHERE id = ?1",
                    args![r.id, now_ms + lease_ms, by],
                )?;
            }
            Ok(rows)
        })
    }

    pub fn notify_delivered(&self, ids: &[i64]) -> Result<(), MetaError> {
        self.write(|c| -> Result<(), MetaError> {
            for id in ids {
                c.execute("DELETE FROM notify_queue WHERE id = ?1", args![*id])?;
            }
            Ok(())
        })
    }

    /// A failed delivery of `ids`: tried again at `next_ms`, or failed for good after
    /// `max_attempts`.
    pub fn notify_retry(
        &self,
        ids: &[i64],
        next_ms: i64,
        error: &str,
        max_attempts: u32,
    ) -> Result<(), MetaError> {
        self.write(|c| -> Result<(), MetaError> {
            for id in ids {
                c.execute(
                    "UPDATE notify_queue SET attempts = attempts + 1, next_ms = ?2, last_error = ?3, claimed_by = '', \
                     failed = CASE WHEN attempts + 1 >= ?4 THEN 1 ELSE 0 END WHERE id = ?1",
                    args![*id, next_ms, error, i64::from(max_attempts)],
                )?;
            }
            Ok(())
        })
    }

    /// Gives back the rows process `by` has claimed and not settled (due now, attempts
    /// unchanged).
    pub fn notify_release(&self, by: &str) -> Result<(), MetaError> {
        self.write(|c| -> Result<(), MetaError> {
            c.execute(
                "UPDATE notify_queue SET next_ms = 0, claimed_by = '' WHERE claimed_by = ?1 AND failed = 0",
                args![by],
            )?;
            Ok(())
        })
    }

    /// Deliveries waiting (`failed = false`) or failed for good (`true`), oldest first.
    pub fn notify_list(&self, failed: bool, limit: u32) -> Result<Vec<Queued>, MetaError> {
        self.read(|c| {
            c.query(
                "SELECT id, endpoint, event, created_at, attempts, last_error, failed FROM notify_queue \
                 WHERE failed = ?1 ORDER BY id LIMIT ?2",
                args![i64::from(failed), limit],
            )?
            .iter()
            .map(queued)
            .collect::<Result<Vec<_>, DbError>>()
        })
    }

    /// Puts failed deliveries (of `endpoint`, or all) back in the queue, due now; how many.
    pub fn notify_requeue(&self, endpoint: Option<&str>) -> Result<u64, MetaError> {
        self.write(|c| -> Result<u64, MetaError> {
            c.execute(
                "UPDATE notify_queue SET failed = 0, attempts = 0, next_ms = 0 \
                 WHERE failed = 1 AND (CAST(?1 AS TEXT) = '' OR endpoint = CAST(?1 AS TEXT))",
                args![endpoint.unwrap_or("")],
            )
        })
    }
}

fn queued(r: &super::db::Row) -> Result<Queued, DbError> {
    Ok(Queued {
        id: r.get(0)?,
        endpoint: r.get(1)?,
        event: r.get(2)?,
        created_at: r.get(3)?,
        attempts: u32::try_from(r.get::<i64>(4)?).unwrap_or(0),
        last_error: r.get(5)?,
        failed: r.get::<i64>(6)? != 0,
    })
}

/// distribution's timestamp: RFC 3339 in UTC with nanoseconds.
pub fn timestamp() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(cfg: NotifyConfig) -> Arc<Endpoint> {
        Notifier::from_config(&[cfg]).expect("config").endpoints[0].clone()
    }

    fn event(action: &str, repo: &str, media_type: &str) -> Event {
        Event {
            id: "1".into(),
            timestamp: timestamp(),
            action: action.into(),
            target: Target {
                media_type: media_type.into(),
                repository: repo.into(),
                ..Target::default()
            },
            request: RequestInfo::default(),
            actor: Actor::default(),
            source: Source::default(),
        }
    }

    #[test]
    fn filters_and_backoff() {
        let ep = endpoint(NotifyConfig {
            name: "a".into(),
            url: "http://127.0.0.1:1/".into(),
            actions: vec!["push".into()],
            repositories: "team/*".into(),
            ignore_media_types: vec!["application/octet-stream".into()],
            ..NotifyConfig::default()
        });
        let m = "application/vnd.oci.image.manifest.v1+json";
        assert!(ep.wants(&event("push", "team/app", m)));
        assert!(!ep.wants(&event("pull", "team/app", m)));
        assert!(!ep.wants(&event("push", "team/a/b", m)));
        assert!(!ep.wants(&event("push", "other/app", m)));
        assert!(!ep.wants(&event("push", "team/app", "application/octet-stream")));
        assert_eq!(ep.backoff_after(1), Duration::from_secs(1));
        assert_eq!(ep.backoff_after(3), Duration::from_secs(4));
        assert_eq!(ep.backoff_after(40), MAX_BACKOFF);
    }

    #[test]
    fn the_queue_claims_retries_fails_and_requeues() {
        let t = tempfile::tempdir().expect("tempdir");
        let meta = Meta::open("", &t.path().join("m.db")).expect("meta");
        let rows: Vec<(String, String, u64)> = (0..5)
            .map(|i| ("a".to_string(), format!("{{\"n\":{i}}}"), 3))
            .collect();
        meta.notify_enqueue(&rows).expect("enqueue");
        // Past the limit of 3, the two oldest went to failed.
        assert_eq!(meta.notify_list(true, 10).expect("failed").len(), 2);
        let claimed = meta
            .notify_claim("a", "me", now_ms(), 60_000, 10)
            .expect("claim");
        assert_eq!(claimed.len(), 3);
        assert!(meta
            .notify_claim("a", "me", now_ms(), 60_000, 10)
            .expect("claim again")
            .is_empty());
        let ids: Vec<i64> = claimed.iter().map(|r| r.id).collect();
        meta.notify_retry(&ids[..1], 0, "down", 1).expect("retry");
        meta.notify_retry(&ids[1..2], 0, "down", 5).expect("retry");
        meta.notify_delivered(&ids[2..]).expect("delivered");
        assert_eq!(meta.notify_list(true, 10).expect("failed").len(), 3);
        let again = meta
            .notify_claim("a", "me", now_ms(), 60_000, 10)
            .expect("claim");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 1);
        // A stopping process gives back what it claimed: due again at once.
        meta.notify_release("me").expect("release");
        assert_eq!(
            meta.notify_claim("a", "other", now_ms(), 60_000, 10)
                .expect("claim")
                .len(),
            1
        );
        meta.notify_release("other").expect("release");
        assert_eq!(meta.notify_requeue(Some("a")).expect("requeue"), 3);
        assert_eq!(meta.notify_list(false, 10).expect("waiting").len(), 4);
    }
}
