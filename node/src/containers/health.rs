//! Health checks, run by the node (not the client), as dockerd runs them: the container's
//! `HEALTHCHECK` (from its image, or `--health-*` at create) is exec'd in it every interval;
//! the result, the failing streak and the last results are kept in the container's record (so
//! they survive an agent restart), and each change of status is an event.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::service::{Containers, Record};
use super::streams::{self, ExecRequest};

/// docker's defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 3;
/// How many results are kept, and how much of each one's output.
const KEPT: usize = 5;
const MAX_OUTPUT: usize = 4096;

/// A health check as docker's `HealthConfig` (durations in nanoseconds; 0: the default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    #[serde(default)]
    pub interval: i64,
    #[serde(default)]
    pub timeout: i64,
    #[serde(default)]
    pub start_period: i64,
    #[serde(default)]
    pub start_interval: i64,
    #[serde(default)]
    pub retries: u32,
}

impl HealthCheck {
    /// docker's `HealthConfig` JSON (`Test`, `Interval`, …), as images and create bodies carry it.
    pub fn from_docker(v: &serde_json::Value) -> Option<HealthCheck> {
        let test: Vec<String> = v["Test"]
            .as_array()?
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        if test.is_empty() {
            return None;
        }
        Some(HealthCheck {
            test,
            interval: v["Interval"].as_i64().unwrap_or(0),
            timeout: v["Timeout"].as_i64().unwrap_or(0),
            start_period: v["StartPeriod"].as_i64().unwrap_or(0),
            start_interval: v["StartInterval"].as_i64().unwrap_or(0),
            retries: v["Retries"].as_u64().unwrap_or(0) as u32,
        })
    }

    pub fn to_docker(&self) -> serde_json::Value {
        serde_json::json!({
            "Test": self.test, "Interval": self.interval, "Timeout": self.timeout,
            "StartPeriod": self.start_period, "StartInterval": self.start_interval,
            "Retries": self.retries,
        })
    }

    /// The command to exec, or `None` for `NONE` (checks disabled).
    fn command(&self) -> Option<Vec<String>> {
        match self.test.split_first()? {
            (kind, rest) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
            (kind, [cmd]) if kind == "CMD-SHELL" => {
                Some(vec!["/bin/sh".into(), "-c".into(), cmd.clone()])
            }
            _ => None,
        }
    }

    fn duration(ns: i64, default: Duration) -> Duration {
        if ns > 0 {
            Duration::from_nanos(ns as u64)
        } else {
            default
        }
    }
}

/// docker's health states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub start: String,
    pub end: String,
    pub exit_code: i32,
    pub output: String,
}

/// A container's health, kept in its record's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub failing_streak: u32,
    pub log: Vec<Probe>,
}

/// The check a container runs: its own, else its image's; none with `NONE`.
pub(super) fn check_of(rec: &Record) -> Option<(HealthCheck, Vec<String>)> {
    let hc = rec.request.healthcheck.clone()?;
    let cmd = hc.command()?;
    Some((hc, cmd))
}

/// Starts the checks of a container that has just started (or that a restarted agent found
/// running); they end with that run. `fresh`: a new run, whose health starts over.
pub(super) fn watch(cs: &Arc<Containers>, rec: &Record, fresh: bool) {
    let Some((hc, cmd)) = check_of(rec) else {
        return;
    };
    let (cs, id, run) = (cs.clone(), rec.id.clone(), rec.state.started_at.clone());
    if fresh {
        let _ = cs.update(&id, |r| r.state.health = Some(Health::default()));
    }
    tokio::spawn(async move {
        let interval = HealthCheck::duration(hc.interval, DEFAULT_INTERVAL);
        let timeout = HealthCheck::duration(hc.timeout, DEFAULT_TIMEOUT);
        let start_period = Duration::from_nanos(hc.start_period.max(0) as u64);
        let start_interval = HealthCheck::duration(hc.start_interval, interval);
        let retries = if hc.retries > 0 {
            hc.retries
        } else {
            DEFAULT_RETRIES
        };
        let began = tokio::time::Instant::now();
        loop {
            let in_start = began.elapsed() < start_period;
            tokio::time::sleep(if in_start { start_interval } else { interval }).await;
            // This run still going?
            match cs.get(&id) {
                Ok(Some(r)) if r.state.status.is_running() && r.state.started_at == run => {
                    if r.state.paused {
                        continue;
                    }
                }
                _ => return,
            }
            let probe = probe(&cs, &id, &cmd, timeout).await;
            let ok = probe.exit_code == 0;
            let in_start = began.elapsed() < start_period;
            let mut changed = None;
            let _ = cs.update(&id, |r| {
                let h = r.state.health.get_or_insert_with(Health::default);
                let before = h.status;
                if ok {
                    h.failing_streak = 0;
                    h.status = HealthStatus::Healthy;
                } else if !in_start || h.status != HealthStatus::Starting {
                    // Failures during the start period do not count, until a first success.
                    h.failing_streak += 1;
                    if h.failing_streak >= retries {
                        h.status = HealthStatus::Unhealthy;
                    }
                }
                h.log.push(probe.clone());
                if h.log.len() > KEPT {
                    let extra = h.log.len() - KEPT;
                    h.log.drain(..extra);
                }
                if h.status != before {
                    changed = Some((h.status, r.clone()));
                }
            });
            if let Some((status, r)) = changed {
                cs.emit(&r, &format!("health_status: {}", status.as_str()), &[]);
            }
        }
    });
}

/// Runs the check once in the container: its exit code and the start of its output.
async fn probe(cs: &Arc<Containers>, id: &str, cmd: &[String], timeout: Duration) -> Probe {
    let start = super::service::now();
    let req = ExecRequest {
        cmd: cmd.to_vec(),
        ..ExecRequest::default()
    };
    let run = async {
        let (mut out, _) = streams::exec(cs, id, req, false, None)
            .await
            .map_err(|e| e.to_string())?;
        let mut text = String::new();
        let mut code = -1;
        while let Some(line) = out.recv().await {
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
            if let Some(c) = v["exit"].as_i64() {
                code = c as i32;
            }
            for k in ["stdout", "stderr"] {
                if let Some(t) = v[k].as_str() {
                    if text.len() < MAX_OUTPUT {
                        text.push_str(t);
                    }
                }
            }
        }
        text.truncate(
            (0..=MAX_OUTPUT.min(text.len()))
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0),
        );
        Ok::<_, String>((code, text))
    };
    // A check that outlives its timeout counts as failed; dropping it ends its helper.
    let (exit_code, output) = match tokio::time::timeout(timeout, run).await {
        Ok(Ok((code, text))) => (code, text),
        Ok(Err(e)) => (-1, e),
        Err(_) => (
            -1,
            format!(
                "Health check exceeded timeout ({})",
                humantime::format_duration(timeout)
            ),
        ),
    };
    Probe {
        start,
        end: super::service::now(),
        exit_code,
        output,
    }
}
