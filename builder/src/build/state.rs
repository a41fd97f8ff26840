//! A stage as it is being built: image config, layers and chain, history, ARG scope and the
//! cache key of everything so far.

#![deny(clippy::disallowed_methods)]

use reg_registry::digest::Digest;
use serde_json::{json, Map, Value};

use super::api::{LayerRef, Store};
use super::error::StepError;
use crate::fsview::View;
use crate::lex::Vars;

/// A stage as it is being built.
#[derive(Debug, Clone, Default)]
pub(super) struct State {
    pub(super) key: String,
    pub(super) layers: Vec<LayerRef>,
    pub(super) chain: Vec<Digest>,
    pub(super) config: Map<String, Value>,
    pub(super) history: Vec<Value>,
    pub(super) args: Vars,
    /// Whether CMD was set in this stage (ENTRYPOINT resets an inherited CMD only).
    pub(super) cmd_here: bool,
    pub(super) arch: String,
}

impl State {
    pub(super) fn env(&self) -> Vec<(String, String)> {
        self.config
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (kv.to_string(), String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn set_env(&mut self, k: &str, v: &str) {
        let mut env = self.env();
        match env.iter_mut().find(|(name, _)| name == k) {
            Some(e) => e.1 = v.to_string(),
            None => env.push((k.to_string(), v.to_string())),
        }
        self.config.insert(
            "Env".into(),
            env.into_iter()
                .map(|(k, v)| json!(format!("{k}={v}")))
                .collect(),
        );
    }

    /// What `$v` sees: ARGs in scope, overridden by ENV.
    pub(super) fn vars(&self) -> Vars {
        let mut v = self.args.clone();
        v.extend(self.env());
        v
    }

    pub(super) fn workdir(&self) -> String {
        self.config
            .get("WorkingDir")
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
            .to_string()
    }

    pub(super) fn shell(&self) -> Vec<String> {
        self.config
            .get("Shell")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    pub(super) fn view(&self, store: &impl Store) -> Result<View, StepError> {
        View::new(self.chain.iter().map(|c| store.snapshot(c)).collect()).map_err(|source| {
            StepError::View {
                what: "the stage's snapshots",
                source,
            }
        })
    }

    pub(super) fn history(&mut self, epoch: u64, created_by: String, empty: bool) {
        let mut h = json!({
            "created": rfc3339(epoch),
            "created_by": created_by,
            "comment": "reg build",
        });
        if empty {
            h["empty_layer"] = json!(true);
        }
        self.history.push(h);
    }

    pub(super) fn fold(&mut self, what: &str) {
        self.key = key_of(&[&self.key, what]);
    }
}

pub(super) fn key_of(parts: &[&str]) -> String {
    Digest::sha256_of(parts.join("\n").as_bytes()).to_string()
}

pub(super) fn rfc3339(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch))
        .to_string()
}
