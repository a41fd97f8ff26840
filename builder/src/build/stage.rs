//! A stage: FROM (scratch, an earlier stage or a base image), its base's ONBUILD triggers,
//! then each instruction; the instructions that only change the config are applied here,
//! RUN and COPY/ADD in their own modules. Also which stages a stage needs, and the progress
//! line of a step.

#![deny(clippy::disallowed_methods)]

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use serde_json::{json, Value};

use super::api::{Event, StepRunner, Store, DEFAULT_PATH};
use super::builder::{flag, stage_ref, Builder};
use super::error::BuildError;
use super::run::mount_options;
use super::state::{key_of, State};
use crate::dockerfile::{Command, Inst, Source, Stage, Step};
use crate::lex::Vars;

impl<S: Store, R: StepRunner> Builder<'_, S, R> {
    pub(super) fn deps(&self, i: usize) -> BTreeSet<usize> {
        let s = &self.df.stages[i];
        let mut out = BTreeSet::new();
        let expand = |v: &str| self.lexer.word(v, &self.globals).unwrap_or_default();
        if let Some(d) = stage_ref(self.df, i, &expand(&s.base)) {
            out.insert(d);
        }
        for step in &s.steps {
            match &step.inst {
                Inst::Copy { flags, .. } => {
                    if let Some(d) =
                        flag(flags, "from").and_then(|f| stage_ref(self.df, i, &expand(f)))
                    {
                        out.insert(d);
                    }
                }
                Inst::Run { flags, .. } => {
                    for (_, spec) in flags.iter().filter(|(n, _)| n == "mount") {
                        let spec = expand(spec.as_deref().unwrap_or(""));
                        if let Some(d) = mount_options(&spec)
                            .get("from")
                            .and_then(|f| stage_ref(self.df, i, f))
                        {
                            out.insert(d);
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    pub(super) async fn stage(
        &self,
        i: usize,
        done: &HashMap<usize, State>,
    ) -> Result<State, BuildError> {
        let s: &Stage = &self.df.stages[i];
        let label = s.name.clone().unwrap_or_else(|| format!("stage-{i}"));
        let total = s.steps.len() + 1;
        let base = self
            .lexer
            .word(&s.base, &self.globals)
            .map_err(|e| BuildError::Step {
                file: self.opts.file.clone(),
                line: s.pos.line,
                keyword: "FROM",
                source: e.into(),
            })?;
        (self.log)(Event::Step {
            stage: label.clone(),
            n: 1,
            total,
            text: format!("FROM {base}"),
        });
        let started = Instant::now();
        let mut st = if base == "scratch" {
            State {
                key: key_of(&["scratch"]),
                arch: reg_registry::host_platform().1.into(),
                ..State::default()
            }
        } else if let Some(d) = stage_ref(self.df, i, &base) {
            let mut from = done
                .get(&d)
                .cloned()
                .ok_or_else(|| BuildError::StageNotBuilt(base.clone()))?;
            from.args.clear();
            from.cmd_here = false;
            from
        } else {
            let img = self
                .store
                .base(&base, self.log.clone())
                .await
                .map_err(|e| BuildError::Base {
                    file: self.opts.file.clone(),
                    line: s.pos.line,
                    base: base.clone(),
                    source: Box::new(e),
                })?;
            State {
                key: key_of(&["image", &img.id.to_string()]),
                chain: img.chain(),
                layers: img.layers.clone(),
                config: img.config["config"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                history: img.config["history"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                args: Vars::new(),
                cmd_here: false,
                arch: img.config["architecture"]
                    .as_str()
                    .unwrap_or(reg_registry::host_platform().1)
                    .to_string(),
            }
        };
        if !st.env().iter().any(|(k, _)| k == "PATH") {
            st.set_env("PATH", DEFAULT_PATH);
        }
        (self.log)(Event::Done {
            ms: started.elapsed().as_millis() as u64,
        });
        // A base image's ONBUILD triggers run first, once.
        let triggers: Vec<String> = st
            .config
            .remove("OnBuild")
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        for t in triggers {
            let df = crate::dockerfile::parse(
                &format!("ONBUILD trigger of {base}"),
                &format!("FROM scratch\n{t}\n"),
            )?;
            for step in df.stages.into_iter().flat_map(|s| s.steps) {
                (self.log)(Event::Note {
                    message: format!("running ONBUILD trigger: {t}"),
                });
                self.step(&mut st, &step, i, done).await?;
            }
        }
        for (n, step) in s.steps.iter().enumerate() {
            (self.log)(Event::Step {
                stage: label.clone(),
                n: n + 2,
                total,
                text: describe(step),
            });
            let started = Instant::now();
            let cached = self.step(&mut st, step, i, done).await?;
            if cached {
                (self.log)(Event::Cached);
            }
            (self.log)(Event::Done {
                ms: started.elapsed().as_millis() as u64,
            });
        }
        Ok(st)
    }

    /// Applies one instruction; returns whether its layer came from the cache.
    pub(super) async fn step(
        &self,
        st: &mut State,
        step: &Step,
        stage: usize,
        done: &HashMap<usize, State>,
    ) -> Result<bool, BuildError> {
        let vars = st.vars();
        let word = |s: &str| self.lexer.word(s, &vars).map_err(|e| self.err(step, e));
        match &step.inst {
            Inst::Env(pairs) => {
                // One value per instruction: every pair sees the variables from before it.
                let mut set = Vec::new();
                for (k, v) in pairs {
                    set.push((word(k)?, word(v)?));
                }
                let text = set
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                for (k, v) in set {
                    st.set_env(&k, &v);
                }
                self.meta(st, format!("ENV {text}"));
            }
            Inst::Arg(args) => {
                for a in args {
                    let value = match self.opts.build_args.get(&a.name) {
                        Some(v) => Some(v.clone()),
                        None => match &a.default {
                            Some(d) => Some(word(d)?),
                            None => self.globals.get(&a.name).cloned(),
                        },
                    };
                    if let Some(v) = value {
                        st.args.insert(a.name.clone(), v);
                    }
                }
                // An ARG changes what later steps see, not the image: no history, and no cache
                // key of its own (a RUN's key has the args in its environment, as docker's).
            }
            Inst::Label(pairs) => {
                let mut labels = st
                    .config
                    .get("Labels")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let mut text = Vec::new();
                for (k, v) in pairs {
                    let (k, v) = (word(k)?, word(v)?);
                    text.push(format!("{k}={v}"));
                    labels.insert(k, json!(v));
                }
                st.config.insert("Labels".into(), Value::Object(labels));
                self.meta(st, format!("LABEL {}", text.join(" ")));
            }
            Inst::Workdir(w) => {
                let w = word(w)?;
                let path = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", st.workdir())
                };
                let path = format!("/{}", crate::ignore::clean(&path));
                st.config.insert("WorkingDir".into(), json!(path));
                self.meta(st, format!("WORKDIR {path}"));
            }
            Inst::User(u) => {
                let u = word(u)?;
                st.config.insert("User".into(), json!(u));
                self.meta(st, format!("USER {u}"));
            }
            Inst::Expose(ports) => {
                let mut exposed = st
                    .config
                    .get("ExposedPorts")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let mut text = Vec::new();
                for p in ports {
                    for p in self.lexer.words(p, &vars).map_err(|e| self.err(step, e))? {
                        let p = if p.contains('/') {
                            p
                        } else {
                            format!("{p}/tcp")
                        };
                        let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                        if num.split('-').any(|n| n.parse::<u16>().is_err())
                            || !matches!(proto, "tcp" | "udp" | "sctp")
                        {
                            return Err(self.invalid(
                                step,
                                format!("invalid port {p:?}: expected PORT[/tcp|udp|sctp]"),
                            ));
                        }
                        exposed.insert(p.clone(), json!({}));
                        text.push(p);
                    }
                }
                st.config
                    .insert("ExposedPorts".into(), Value::Object(exposed));
                self.meta(st, format!("EXPOSE {}", text.join(" ")));
            }
            Inst::Volume(vols) => {
                let mut v = st
                    .config
                    .get("Volumes")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let mut text = Vec::new();
                for p in vols {
                    let p = word(p)?;
                    if p.is_empty() {
                        return Err(self.invalid(step, "VOLUME needs a path"));
                    }
                    v.insert(p.clone(), json!({}));
                    text.push(p);
                }
                st.config.insert("Volumes".into(), Value::Object(v));
                self.meta(st, format!("VOLUME [{}]", text.join(" ")));
            }
            Inst::Stopsignal(s) => {
                let s = word(s)?;
                st.config.insert("StopSignal".into(), json!(s));
                self.meta(st, format!("STOPSIGNAL {s}"));
            }
            Inst::Shell(sh) => {
                st.config.insert("Shell".into(), json!(sh));
                self.meta(st, format!("SHELL {}", json!(sh)));
            }
            Inst::Maintainer(m) => self.meta(st, format!("MAINTAINER {m}")),
            Inst::Onbuild(t) => {
                let mut list: Vec<Value> = st
                    .config
                    .get("OnBuild")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                list.push(json!(t));
                st.config.insert("OnBuild".into(), Value::Array(list));
                self.meta(st, format!("ONBUILD {t}"));
            }
            Inst::Cmd(c) => {
                let argv = self.argv(st, c);
                st.config.insert("Cmd".into(), json!(argv));
                st.cmd_here = true;
                self.meta(st, format!("CMD {}", json!(argv)));
            }
            Inst::Entrypoint(c) => {
                let argv = self.argv(st, c);
                st.config.insert("Entrypoint".into(), json!(argv));
                if !st.cmd_here {
                    // docker: an ENTRYPOINT drops the CMD inherited from the base image.
                    st.config.insert("Cmd".into(), Value::Null);
                }
                self.meta(st, format!("ENTRYPOINT {}", json!(argv)));
            }
            Inst::Healthcheck { flags, command } => {
                let hc = match command {
                    None => json!({ "Test": ["NONE"] }),
                    Some(c) => {
                        let test: Vec<String> = match c {
                            Command::Exec(v) => std::iter::once("CMD".to_string())
                                .chain(v.iter().cloned())
                                .collect(),
                            Command::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
                        };
                        let mut hc = json!({ "Test": test });
                        for (name, key) in [
                            ("interval", "Interval"),
                            ("timeout", "Timeout"),
                            ("start-period", "StartPeriod"),
                            ("start-interval", "StartInterval"),
                        ] {
                            if let Some(v) = flag(flags, name) {
                                let d = humantime::parse_duration(v).map_err(|e| {
                                    self.invalid(
                                        step,
                                        format!("--{name}={v}: {e} (write e.g. 30s)"),
                                    )
                                })?;
                                hc[key] = json!(d.as_nanos() as u64);
                            }
                        }
                        if let Some(r) = flag(flags, "retries") {
                            let n: u64 = r.parse().map_err(|_| {
                                self.invalid(step, format!("--retries={r}: not a number"))
                            })?;
                            hc["Retries"] = json!(n);
                        }
                        hc
                    }
                };
                st.config.insert("Healthcheck".into(), hc.clone());
                self.meta(st, format!("HEALTHCHECK {hc}"));
            }
            Inst::Run {
                flags,
                command,
                heredocs,
            } => {
                return self
                    .run(st, step, flags, command, heredocs, stage, done)
                    .await
            }
            Inst::Copy {
                add,
                flags,
                sources,
                dest,
            } => {
                return self
                    .copy(st, step, *add, flags, sources, dest, stage, done)
                    .await
            }
        }
        Ok(false)
    }

    pub(super) fn meta(&self, st: &mut State, text: String) {
        st.fold(&text);
        st.history(self.opts.epoch, text, true);
    }

    pub(super) fn argv(&self, st: &State, c: &Command) -> Vec<String> {
        match c {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut a = st.shell();
                a.push(s.clone());
                a
            }
        }
    }
}

/// The progress line of a step.
pub(super) fn describe(step: &Step) -> String {
    match &step.inst {
        Inst::Run { command, .. } => match command {
            Command::Exec(v) => format!("RUN {}", json!(v)),
            Command::Shell(s) => format!("RUN {s}"),
        },
        Inst::Copy {
            sources, dest, add, ..
        } => format!(
            "{} {} {dest}",
            if *add { "ADD" } else { "COPY" },
            sources
                .iter()
                .map(|s| match s {
                    Source::Path(p) => p.as_str(),
                    Source::HereDoc(_) => "<<heredoc",
                })
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Inst::Env(p) | Inst::Label(p) => format!(
            "{} {}",
            step.inst.keyword(),
            p.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Inst::Arg(a) => format!(
            "ARG {}",
            a.iter()
                .map(|a| match &a.default {
                    Some(d) => format!("{}={d}", a.name),
                    None => a.name.clone(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Inst::Workdir(s) | Inst::User(s) | Inst::Stopsignal(s) | Inst::Onbuild(s) => {
            format!("{} {s}", step.inst.keyword())
        }
        Inst::Expose(v) | Inst::Volume(v) | Inst::Shell(v) => {
            format!("{} {}", step.inst.keyword(), v.join(" "))
        }
        Inst::Cmd(c) | Inst::Entrypoint(c) => format!(
            "{} {}",
            step.inst.keyword(),
            match c {
                Command::Exec(v) => json!(v).to_string(),
                Command::Shell(s) => s.clone(),
            }
        ),
        other => other.keyword().to_string(),
    }
}
