//! RUN: its flags (`--network`, `--security`, `--mount`), the step handed to the
//! [`StepRunner`](super::api::StepRunner), its cache key, and the heredoc script.

#![deny(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use reg_registry::digest::Digest;
use reg_untrusted::Tree;
use serde_json::{json, Value};

use super::api::{Mount, RunStep, StepRunner, Store};
use super::builder::{flag, stage_ref, Builder};
use super::cache::own;
use super::error::{BuildError, StepError};
use super::state::{key_of, State};
use crate::dockerfile::{Command, HereDoc, Step};
use crate::fsview::View;

/// The `key=value` pairs of a `--mount` spec (a bare key means `true`).
pub(super) fn mount_options(spec: &str) -> BTreeMap<&str, &str> {
    spec.split(',')
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, "true"));
            (k.trim(), v.trim())
        })
        .collect()
}

impl<S: Store, R: StepRunner> Builder<'_, S, R> {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run(
        &self,
        st: &mut State,
        step: &Step,
        flags: &[(String, Option<String>)],
        command: &Command,
        heredocs: &[HereDoc],
        stage: usize,
        done: &HashMap<usize, State>,
    ) -> Result<bool, BuildError> {
        let args = match command {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut a = st.shell();
                a.push(script(s, heredocs));
                a
            }
        };
        if args.is_empty() || args[0].is_empty() {
            return Err(self.invalid(step, "RUN needs a command"));
        }
        let network = match flag(flags, "network") {
            // docker build's default: the default bridge (its own network namespace, NAT
            // out, nothing of the host's loopback); `host` only when asked for.
            None | Some("default") => "bridge",
            Some("host") => "host",
            Some("none") => "none",
            Some(o) => {
                return Err(self.invalid(step, format!("--network={o}: use default, none or host")))
            }
        };
        if let Some(s) = flag(flags, "security") {
            if s != "sandbox" {
                return Err(
                    self.invalid(step, format!("--security={s}: only sandbox is supported"))
                );
            }
        }
        let vars = st.vars();
        let workdir = st.workdir();
        let mut mounts = Vec::new();
        let mut mount_keys = Vec::new();
        let mut scratch = Vec::new();
        let mounted: Result<(), BuildError> = async {
            for (name, value) in flags {
                if name != "mount" {
                    continue;
                }
                let spec = self
                    .lexer
                    .word(value.as_deref().unwrap_or(""), &vars)
                    .map_err(|e| self.err(step, e))?;
                let (m, key, tmp) = self.mount(step, &spec, &workdir, stage, done).await?;
                mount_keys.push(format!("{spec} {key}"));
                mounts.push(m);
                scratch.extend(tmp);
            }
            Ok(())
        }
        .await;
        if let Err(e) = mounted {
            // The scratch dirs of the mounts made before the one that failed go too.
            return self.remove_after(Err(e), scratch).await;
        }
        // Build args reach RUN as environment variables (ENV wins), as with docker.
        let mut env: BTreeMap<String, String> = st.args.clone();
        env.extend(st.env());
        let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let user = st
            .config
            .get("User")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_string);
        let shown = match command {
            Command::Exec(_) => json!(args).to_string(),
            Command::Shell(_) => args.join(" "),
        };
        let key = key_of(&[
            &st.key,
            "RUN",
            &json!(args).to_string(),
            &json!(env).to_string(),
            &workdir,
            user.as_deref().unwrap_or(""),
            network,
            &json!(mount_keys).to_string(),
            &json!(self.opts.compression).to_string(),
        ]);
        let layers: Vec<PathBuf> = st.chain.iter().map(|c| self.store.snapshot(c)).collect();
        let res = self
            .layer(st, step, key, format!("RUN {shown}"), |work| async move {
                let upper = work.join("upper");
                let run = RunStep {
                    layers,
                    dir: work.clone(),
                    args,
                    env,
                    cwd: workdir,
                    user,
                    network: network.into(),
                    mounts,
                };
                let code = self
                    .runner
                    .run(run, self.log.clone())
                    .await
                    .map_err(|e| self.err(step, StepError::Runner(Box::new(e))))?;
                if code != 0 {
                    return Err(self.err(
                        step,
                        StepError::NonZero {
                            command: shown,
                            code,
                        },
                    ));
                }
                Ok(upper)
            })
            .await;
        self.remove_after(res, scratch).await
    }

    /// `--mount=type=cache|bind|tmpfs,target=…`: what the step gets there, the part of the
    /// cache key it adds (the content of a bind's source), and a scratch dir to remove after.
    pub(super) async fn mount(
        &self,
        step: &Step,
        spec: &str,
        workdir: &str,
        stage: usize,
        done: &HashMap<usize, State>,
    ) -> Result<(Mount, String, Option<PathBuf>), BuildError> {
        let kv = mount_options(spec);
        let ty = kv.get("type").copied().unwrap_or("bind");
        if !matches!(ty, "cache" | "tmpfs" | "bind") {
            return Err(self.invalid(
                step,
                format!("--mount type={ty} is not supported (reg knows cache, bind, tmpfs)"),
            ));
        }
        let target = kv
            .get("target")
            .or_else(|| kv.get("dst"))
            .or_else(|| kv.get("destination"))
            .ok_or_else(|| self.invalid(step, format!("--mount={spec}: target= is missing")))?;
        let target = if target.starts_with('/') {
            target.to_string()
        } else {
            format!("{workdir}/{target}")
        };
        let target = format!("/{}", crate::ignore::clean(&target));
        match ty {
            "cache" => {
                let id = kv.get("id").copied().unwrap_or(target.as_str());
                let path = self
                    .opts
                    .cache_dir
                    .join("mounts")
                    .join(Digest::sha256_of(id.as_bytes()).hex());
                own::mkdir(&path).map_err(|e| self.err(step, e))?;
                Ok((Mount::bind(path, target, false), String::new(), None))
            }
            "tmpfs" => {
                let path = self.store.tmp("tmpfs");
                own::mkdir(&path).map_err(|e| self.err(step, e))?;
                Ok((
                    Mount::bind(path.clone(), target, false),
                    String::new(),
                    Some(path),
                ))
            }
            "bind" => self.bind_mount(step, spec, &kv, target, stage, done).await,
            o => Err(self.invalid(
                step,
                format!("--mount type={o} is not supported (reg knows cache, bind, tmpfs)"),
            )),
        }
    }

    /// `--mount=type=bind[,from=STAGE|IMAGE][,source=…][,rw]`: read-only unless `rw`, and even
    /// then nothing written reaches the context or the stage (BuildKit's rule).
    pub(super) async fn bind_mount(
        &self,
        step: &Step,
        spec: &str,
        kv: &BTreeMap<&str, &str>,
        target: String,
        stage: usize,
        done: &HashMap<usize, State>,
    ) -> Result<(Mount, String, Option<PathBuf>), BuildError> {
        let (view, from_key) = match kv.get("from") {
            None => (self.context_view(step)?, None),
            Some(f) => match stage_ref(self.df, stage, f) {
                Some(d) => {
                    let s = done
                        .get(&d)
                        .ok_or_else(|| self.err(step, StepError::StageNotBuilt(f.to_string())))?;
                    let view = s.view(self.store).map_err(|e| self.err(step, e))?;
                    (view, Some(s.key.clone()))
                }
                None => {
                    let img = self.store.base(f, self.log.clone()).await.map_err(|e| {
                        self.err(
                            step,
                            StepError::Base {
                                flag: format!("--mount={spec}"),
                                source: Box::new(e),
                            },
                        )
                    })?;
                    let layers = img.chain().iter().map(|c| self.store.snapshot(c)).collect();
                    let view = View::new(layers).map_err(|e| self.err(step, e))?;
                    (view, Some(img.id.to_string()))
                }
            },
        };
        let src = view
            .resolve(
                kv.get("source").or_else(|| kv.get("src")).unwrap_or(&""),
                true,
            )
            .map_err(|e| self.err(step, e))?;
        let e = view.find(&src).ok_or_else(|| {
            let place = match kv.get("from") {
                Some(f) => format!("in {f}"),
                None => "in the build context".into(),
            };
            self.invalid(step, format!("--mount={spec}: /{src} is not {place}"))
        })?;
        let rw = matches!(kv.get("rw").or_else(|| kv.get("readwrite")), Some(&"true"));
        // The key: a stage or image is named by its own key; the context by the content of
        // what is mounted.
        let key = match from_key {
            Some(k) => format!("{k} /{src}"),
            None => {
                let fp = tokio::task::block_in_place(|| {
                    self.fingerprint(&view, true, std::slice::from_ref(&src))
                });
                Digest::sha256_of(json!(fp).to_string().as_bytes()).to_string()
            }
        };
        let from_context = kv.get("from").is_none();
        if e.meta.is_dir() && (rw || !from_context) {
            // Snapshots hold whiteouts, and a writable bind must not write through: a view.
            let mut m = Mount::bind("overlay".into(), target, !rw);
            m.layers = view.merged_dirs(&src);
            return Ok((m, key, None));
        }
        if rw {
            // A private copy of the one file (a regular file: a device or FIFO is not read).
            let tmp = self.store.tmp("bind");
            let fail = |source: std::io::Error| {
                self.err(
                    step,
                    StepError::MountCopy {
                        spec: spec.to_string(),
                        source,
                    },
                )
            };
            own::mkdir(&tmp).map_err(fail)?;
            let mut from = e.open().map_err(fail)?;
            let mut to = Tree::open_strict(&tmp)
                .and_then(|t| t.create_file("file", e.meta.mode() & 0o7777))
                .map_err(fail)?;
            std::io::copy(&mut from, &mut to).map_err(fail)?;
            return Ok((Mount::bind(tmp.join("file"), target, false), key, Some(tmp)));
        }
        Ok((Mount::bind(e.host, target, true), key, None))
    }
}

/// The script a shell-form RUN hands to the shell. A RUN that is only a heredoc runs the
/// heredoc; otherwise the heredocs become the command's standard input, as the shell would
/// read them.
pub(super) fn script(cmd: &str, heredocs: &[HereDoc]) -> String {
    if heredocs.is_empty() {
        return cmd.to_string();
    }
    if cmd.trim().is_empty() && heredocs.len() == 1 {
        return heredocs[0].body.clone();
    }
    let mut s = cmd.trim().to_string();
    let mut bodies = String::new();
    for (i, h) in heredocs.iter().enumerate() {
        let delim = format!("REG_HEREDOC_{i}");
        if h.expand {
            s.push_str(&format!(" <<{delim}"));
        } else {
            s.push_str(&format!(" <<'{delim}'"));
        }
        bodies.push('\n');
        bodies.push_str(&h.body);
        if !h.body.ends_with('\n') {
            bodies.push('\n');
        }
        bodies.push_str(&delim);
    }
    s + &bodies
}
