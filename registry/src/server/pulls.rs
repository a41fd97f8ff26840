//! When each manifest was last pulled, for the web interface's tags page: noted in memory on
//! every manifest GET (a lock and a map lookup, nothing on the request's path touches the
//! database), written (500 to a transaction) every [`FLUSH_EVERY`], when [`MAX_PENDING`] manifests
//! are waiting, and at a graceful stop. Replicas each write theirs; a row only moves forward.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::meta::Meta;

/// How often noted pulls are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(30);

/// How many distinct manifests may wait in memory before a write is asked for at once; past
/// twice as many, further ones are dropped until it happens (a pull time is a hint, not a
/// record).
pub const MAX_PENDING: usize = 10_000;

#[derive(Default)]
pub struct Pulls {
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
}

/// repository → digest → unix seconds of the last pull seen here, and how many there are.
/// By repository first, so that a pull already noted is found without allocating.
#[derive(Default)]
struct Pending {
    by_repo: HashMap<String, HashMap<String, i64>>,
    len: usize,
}

impl Pulls {
    /// Notes a pull of `digest` in `repo` now.
    pub fn note(&self, repo: &str, digest: &str) {
        let now = super::db::now();
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        if let Some(at) = p.by_repo.get_mut(repo).and_then(|d| d.get_mut(digest)) {
            *at = now;
            return;
        }
        if p.len >= 2 * MAX_PENDING {
            return;
        }
        p.by_repo
            .entry(repo.to_string())
            .or_default()
            .insert(digest.to_string(), now);
        p.len += 1;
        if p.len == MAX_PENDING {
            self.wake.notify_one();
        }
    }

    fn take(&self) -> Vec<(String, String, i64)> {
        self.pending
            .lock()
            .map(|mut p| {
                p.len = 0;
                p.by_repo
                    .drain()
                    .flat_map(|(r, d)| d.into_iter().map(move |(d, at)| (r.clone(), d, at)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes what is noted (on the blocking pool).
    pub async fn flush(&self, meta: &Arc<Meta>) {
        let batch = self.take();
        if batch.is_empty() {
            return;
        }
        let meta = meta.clone();
        match tokio::task::spawn_blocking(move || meta.record_pulls(&batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not record when manifests were pulled"),
            Err(e) => tracing::warn!(error = %e, "recording pull times failed"),
        }
    }

    /// Flushes every [`FLUSH_EVERY`], or sooner when many are waiting; runs until aborted.
    pub async fn run(self: Arc<Self>, meta: Arc<Meta>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
                _ = self.wake.notified() => {}
            }
            self.flush(&meta).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_noted_again_is_one_entry_and_the_map_stays_bounded() {
        let p = Pulls::default();
        p.note("a", "sha256:1");
        p.note("a", "sha256:1");
        p.note("b", "sha256:1");
        assert_eq!(p.take().len(), 2);
        assert!(p.take().is_empty());
        for i in 0..3 * MAX_PENDING {
            p.note("r", &format!("sha256:{i}"));
        }
        assert_eq!(p.take().len(), 2 * MAX_PENDING);
    }
}
