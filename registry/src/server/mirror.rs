//! Pull-through mirrors (`[[registry.mirror]]`): which names each one serves and what its
//! upstream calls them, the upstream client, when a cached tag must be asked about again, and
//! one upstream fetch per blob however many requests want it at once.
//!
//! No HTTP types: the manifest and blob handlers drive it (`api/mirror.rs`). What a mirror
//! fetches is stored as ordinary content of the repository it was asked for, so garbage
//! collection, retention, access control and metrics apply to it as to pushed content.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reg_config::MirrorConfig;
use tokio::sync::watch;

use crate::client::RegistryClient;
use crate::digest::Digest;
use crate::name::RepoName;

/// How long a connection to an upstream may take before the request gives up on it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Tags whose last check is remembered; past this the memory is cleared (the next request
/// of each asks the upstream again, which is only slower).
const MAX_FRESH_TAGS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("registry.mirror[{index}]: {message}")]
    Config { index: usize, message: String },
}

/// Every configured mirror, and the blob fetches under way.
pub struct Mirrors {
    list: Vec<Arc<Mirror>>,
    fills: Arc<Mutex<HashMap<Digest, watch::Receiver<Option<bool>>>>>,
}

/// One upstream and the names it serves.
pub struct Mirror {
    prefix: String,
    repos: globset::GlobMatcher,
    namespace: String,
    /// The upstream's URL, for messages.
    pub upstream: String,
    pub client: RegistryClient,
    ttl: Duration,
    checked: Mutex<HashMap<(String, String), Instant>>,
}

/// A repository name that a mirror serves, and the name its upstream knows it by.
pub struct Mirrored {
    pub mirror: Arc<Mirror>,
    pub upstream_name: RepoName,
}

/// Whether this request fetches a blob or waits for another request's fetch of it.
pub enum Fill {
    Leader(FillGuard),
    Follower(watch::Receiver<Option<bool>>),
}

/// The one fetch of a blob: tells the waiting requests how it ended (a fetch dropped without
/// [`FillGuard::finish`] failed), and forgets itself.
pub struct FillGuard {
    fills: Arc<Mutex<HashMap<Digest, watch::Receiver<Option<bool>>>>>,
    digest: Digest,
    tx: watch::Sender<Option<bool>>,
    done: bool,
}

impl FillGuard {
    /// A receiver that learns how this fetch ended (see [`wait_for`]).
    pub fn subscribe(&self) -> watch::Receiver<Option<bool>> {
        self.tx.subscribe()
    }

    pub fn finish(mut self, ok: bool) {
        self.end(ok);
    }

    fn end(&mut self, ok: bool) {
        if self.done {
            return;
        }
        self.done = true;
        if let Ok(mut f) = self.fills.lock() {
            f.remove(&self.digest);
        }
        let _ = self.tx.send(Some(ok));
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// Waits for another request's fetch; whether it stored the blob.
pub async fn wait_for(mut rx: watch::Receiver<Option<bool>>) -> bool {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.unwrap_or(false),
        Err(_) => false,
    }
}

impl Mirrors {
    pub fn from_config(cfgs: &[MirrorConfig]) -> Result<Mirrors, MirrorError> {
        let mut list = Vec::new();
        for (index, c) in cfgs.iter().enumerate() {
            let bad = |message: String| MirrorError::Config { index, message };
            let repos = globset::GlobBuilder::new(&c.repositories)
                .literal_separator(true)
                .build()
                .map_err(|e| bad(format!("repositories: {e}")))?
                .compile_matcher();
            let ttl = reg_config::parse_duration(&c.tag_ttl).map_err(bad)?;
            let prefix = c.name_prefix();
            if !prefix.is_empty() && RepoName::parse(&prefix).is_err() {
                return Err(bad(format!(
                    "the names it serves would start with {prefix:?}, which is not a repository \
                     name (a port, or capitals?): set prefix = \"...\""
                )));
            }
            let creds = (!c.username.is_empty()).then(|| (c.username.clone(), c.password.clone()));
            let client = RegistryClient::with_credentials(&c.upstream, creds)
                .with_connect_timeout(CONNECT_TIMEOUT);
            list.push(Arc::new(Mirror {
                prefix,
                repos,
                namespace: c.namespace(),
                upstream: c.upstream.trim_end_matches('/').to_string(),
                client,
                ttl,
                checked: Mutex::new(HashMap::new()),
            }));
        }
        // Prefixed mirrors first: an unprefixed one may match anything.
        list.sort_by_key(|m| m.prefix.is_empty());
        Ok(Mirrors {
            list,
            fills: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The mirror that serves `repo`, if any.
    pub fn serving(&self, repo: &RepoName) -> Option<Mirrored> {
        let name = repo.as_str();
        self.list.iter().find_map(|m| {
            let rest = if m.prefix.is_empty() {
                name
            } else {
                name.strip_prefix(m.prefix.as_str())?.strip_prefix('/')?
            };
            if rest.is_empty() || !m.repos.is_match(rest) {
                return None;
            }
            let upstream = if !m.namespace.is_empty() && !rest.contains('/') {
                format!("{}/{rest}", m.namespace)
            } else {
                rest.to_string()
            };
            Some(Mirrored {
                mirror: m.clone(),
                upstream_name: RepoName::parse(&upstream).ok()?,
            })
        })
    }

    /// Joins the fetch of `digest` under way, or becomes it.
    pub fn fill(&self, digest: &Digest) -> Fill {
        let Ok(mut fills) = self.fills.lock() else {
            // A poisoned map: fetch without sharing rather than fail.
            let (tx, _) = watch::channel(None);
            return Fill::Leader(FillGuard {
                fills: self.fills.clone(),
                digest: digest.clone(),
                tx,
                done: true,
            });
        };
        if let Some(rx) = fills.get(digest) {
            return Fill::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        fills.insert(digest.clone(), rx);
        Fill::Leader(FillGuard {
            fills: self.fills.clone(),
            digest: digest.clone(),
            tx,
            done: false,
        })
    }
}

impl Mirror {
    /// Whether tag `tag` of `repo` was checked with the upstream within the tag TTL.
    pub fn is_fresh(&self, repo: &str, tag: &str) -> bool {
        let Ok(c) = self.checked.lock() else {
            return false;
        };
        c.get(&(repo.to_string(), tag.to_string()))
            .is_some_and(|t| t.elapsed() < self.ttl)
    }

    /// Records that tag `tag` of `repo` was just checked with the upstream.
    pub fn checked_now(&self, repo: &str, tag: &str) {
        if let Ok(mut c) = self.checked.lock() {
            if c.len() >= MAX_FRESH_TAGS {
                c.clear();
            }
            c.insert((repo.to_string(), tag.to_string()), Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirrors(cfgs: &[(&str, &str, &str)]) -> Mirrors {
        let cfgs: Vec<MirrorConfig> = cfgs
            .iter()
            .map(|(upstream, prefix, repositories)| MirrorConfig {
                upstream: upstream.to_string(),
                prefix: prefix.to_string(),
                repositories: repositories.to_string(),
                ..MirrorConfig::default()
            })
            .collect();
        Mirrors::from_config(&cfgs).expect("config")
    }

    fn upstream_of(m: &Mirrors, name: &str) -> Option<(String, String)> {
        m.serving(&RepoName::parse(name).expect("name"))
            .map(|s| (s.mirror.upstream.clone(), s.upstream_name.to_string()))
    }

    #[test]
    fn names_map_to_their_upstream() {
        let m = mirrors(&[
            ("https://registry-1.docker.io", "", "library/*"),
            ("https://ghcr.io", "-", "**"),
            ("http://127.0.0.1:5001", "local-up", "team/**"),
        ]);
        let hub = "https://registry-1.docker.io".to_string();
        assert_eq!(
            upstream_of(&m, "library/busybox"),
            Some((hub.clone(), "library/busybox".into()))
        );
        // Docker Hub's implied namespace for one-component names.
        assert_eq!(
            upstream_of(&m, "busybox"),
            None,
            "busybox is not under library/*"
        );
        assert_eq!(
            upstream_of(&m, "ghcr.io/org/app"),
            Some(("https://ghcr.io".into(), "org/app".into()))
        );
        assert_eq!(
            upstream_of(&m, "local-up/team/a/b"),
            Some(("http://127.0.0.1:5001".into(), "team/a/b".into()))
        );
        assert_eq!(upstream_of(&m, "local-up/other/a"), None);
        assert_eq!(upstream_of(&m, "mine/app"), None);
        assert_eq!(upstream_of(&m, "ghcr.io"), None);

        let m = mirrors(&[("https://registry-1.docker.io", "", "**")]);
        assert_eq!(
            upstream_of(&m, "busybox"),
            Some((hub, "library/busybox".into()))
        );
    }

    #[test]
    fn a_prefix_that_is_no_repository_name_is_refused_at_start() {
        let cfg = MirrorConfig {
            upstream: "http://127.0.0.1:5001".into(),
            ..MirrorConfig::default()
        };
        let err = Mirrors::from_config(&[cfg])
            .err()
            .expect("a port is no name");
        assert!(err.to_string().contains("set prefix"), "{err}");
    }

    #[tokio::test]
    async fn one_fetch_per_blob_and_followers_learn_how_it_ended() {
        let m = mirrors(&[("http://127.0.0.1:5001", "up", "**")]);
        let d = Digest::sha256_of(b"x");
        let Fill::Leader(lead) = m.fill(&d) else {
            panic!("first request must fetch");
        };
        let Fill::Follower(rx) = m.fill(&d) else {
            panic!("second request must wait");
        };
        lead.finish(true);
        assert!(wait_for(rx).await);
        let Fill::Leader(lead) = m.fill(&d) else {
            panic!("a finished fetch is forgotten");
        };
        let Fill::Follower(rx) = m.fill(&d) else {
            panic!("second request must wait");
        };
        drop(lead);
        assert!(!wait_for(rx).await, "a dropped fetch failed");
    }
}
