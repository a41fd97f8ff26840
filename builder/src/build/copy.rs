//! COPY and ADD: where the files come from (the context, a stage, an image), the sources a
//! pattern names, the destination resolved in the stage's view, `--chown`/`--chmod`, the
//! cache key, and the layer filled off the async workers.

#![deny(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use reg_untrusted::Tree;
use serde_json::json;

use super::api::{StepRunner, Store};
use super::archive::{archive_kind, extract};
use super::builder::{flag, stage_ref, Builder};
use super::cache::own;
use super::error::{BuildError, StepError};
use super::state::{key_of, State};
use super::tree::{at, copy_tree, glob, make_new, mirror_dirs, parent, CopyOpts, TreeError};
use crate::dockerfile::{Source, Step};
use crate::fsview::View;

impl<S: Store, R: StepRunner> Builder<'_, S, R> {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn copy(
        &self,
        st: &mut State,
        step: &Step,
        add: bool,
        flags: &[(String, Option<String>)],
        sources: &[Source],
        dest: &str,
        stage: usize,
        done: &HashMap<usize, State>,
    ) -> Result<bool, BuildError> {
        let vars = st.vars();
        let word = |s: &str| self.lexer.word(s, &vars).map_err(|e| self.err(step, e));
        let keyword = step.inst.keyword();
        // Accepted by the parser, not implemented: refuse rather than build something else.
        for f in ["parents", "exclude", "checksum", "keep-git-dir"] {
            if flag(flags, f).is_some() {
                return Err(self.invalid(step, format!("--{f} is not supported by reg yet")));
            }
        }
        // Where the files come from: the context, an earlier stage, or an image.
        let (from_view, from_key, from_context) = match flag(flags, "from") {
            None => (self.context_view(step)?, String::new(), true),
            Some(f) => {
                let f = word(f)?;
                if add {
                    return Err(self.invalid(step, "ADD has no --from: use COPY --from"));
                }
                match stage_ref(self.df, stage, &f) {
                    Some(d) => {
                        let s = done
                            .get(&d)
                            .ok_or_else(|| self.err(step, StepError::StageNotBuilt(f.clone())))?;
                        let view = s.view(self.store).map_err(|e| self.err(step, e))?;
                        (view, s.key.clone(), false)
                    }
                    None => {
                        let img = self.store.base(&f, self.log.clone()).await.map_err(|e| {
                            self.err(
                                step,
                                StepError::Base {
                                    flag: format!("--from={f}"),
                                    source: Box::new(e),
                                },
                            )
                        })?;
                        let layers = img.chain().iter().map(|c| self.store.snapshot(c)).collect();
                        let view = View::new(layers).map_err(|e| self.err(step, e))?;
                        (view, img.id.to_string(), false)
                    }
                }
            }
        };
        let chown = match flag(flags, "chown") {
            Some(c) => Some(self.owner(st, step, &word(c)?)?),
            None => None,
        };
        let chmod = match flag(flags, "chmod") {
            Some(m) => Some(u32::from_str_radix(&word(m)?, 8).map_err(|_| {
                self.invalid(
                    step,
                    format!("--chmod={m}: expected an octal mode such as 0644"),
                )
            })?),
            None => None,
        };
        let dest_raw = word(dest)?;
        let dest_abs = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{dest_raw}", st.workdir())
        };
        let view = st.view(self.store).map_err(|e| self.err(step, e))?;
        let dest_rel = view
            .resolve(&dest_abs, true)
            .map_err(|e| self.err(step, e))?;
        // Expand every source to the entries it names.
        let mut plan: Vec<(String, bool)> = Vec::new(); // (path in the source view, named by a pattern)
        let mut heredocs = Vec::new();
        for s in sources {
            match s {
                Source::HereDoc(h) => heredocs.push(h),
                Source::Path(p) => {
                    let p = word(p)?;
                    if p.starts_with("http://")
                        || p.starts_with("https://")
                        || p.starts_with("git@")
                    {
                        return Err(self.invalid(
                            step,
                            format!("{p}: remote sources are not supported; download in a RUN step or COPY a local file"),
                        ));
                    }
                    if p.contains(['*', '?', '[']) {
                        let found = glob(&from_view, &p);
                        if found.is_empty() {
                            return Err(self.invalid(step, format!("no source files match {p:?}")));
                        }
                        plan.extend(found.into_iter().map(|f| (f, true)));
                    } else {
                        let r = from_view.resolve(&p, true).map_err(|e| self.err(step, e))?;
                        if from_view.find(&r).is_none() {
                            let place = if from_context {
                                "the build context"
                            } else {
                                "the source stage"
                            };
                            return Err(self.invalid(step, format!("{p:?}: not found in {place}")));
                        }
                        plan.push((r, false));
                    }
                }
            }
        }
        let many = plan.len() + heredocs.len() > 1 || plan.iter().any(|(_, g)| *g);
        let dest_is_dir = dest_raw.ends_with('/')
            || dest_raw == "."
            || dest_raw.ends_with("/.")
            || many
            || view.find(&dest_rel).is_some_and(|e| e.meta.is_dir());
        if many && !dest_raw.ends_with('/') {
            return Err(self.invalid(
                step,
                format!(
                    "when copying several sources, the destination must end with /: {dest_raw}"
                ),
            ));
        }
        // The cache key: content digests of what is copied (mode, owner, bytes — no mtimes).
        // A stat per copied path (2,000 for a big COPY): off the async workers.
        let srcs: Vec<String> = plan.iter().map(|(src, _)| src.clone()).collect();
        let mut fp =
            tokio::task::block_in_place(|| self.fingerprint(&from_view, from_context, &srcs));
        for h in &heredocs {
            fp.push(format!("heredoc {} {}", h.expand, h.body));
        }
        let text = {
            let mut t = vec![keyword.to_string()];
            for (n, v) in flags {
                t.push(match v {
                    Some(v) => format!("--{n}={v}"),
                    None => format!("--{n}"),
                });
            }
            for s in sources {
                t.push(match s {
                    Source::Path(p) => p.clone(),
                    Source::HereDoc(_) => "<<heredoc".into(),
                });
            }
            t.push(dest_raw.clone());
            t.join(" ")
        };
        let key = key_of(&[
            &st.key,
            &text,
            &dest_rel,
            &from_key,
            &json!(fp).to_string(),
            &json!(self.opts.compression).to_string(),
        ]);
        let heredoc_files: Vec<(String, String)> = heredocs
            .iter()
            .map(|h| {
                let body = if h.expand {
                    self.lexer
                        .word(&h.body, &vars)
                        .unwrap_or_else(|_| h.body.clone())
                } else {
                    h.body.clone()
                };
                (dest_rel.clone(), body)
            })
            .collect();
        let opts = CopyOpts {
            chown,
            chmod,
            keep_owner: !from_context,
        };
        self.layer(st, step, key, text, |work| async move {
            let layer = work.join("layer");
            let view2 = view.clone();
            let res = tokio::task::spawn_blocking(move || -> Result<PathBuf, StepError> {
                own::mkdir(&layer)?;
                // Filled by us from untrusted sources: no symlink in it is ever followed.
                let tree = Tree::open_strict(&layer)?;
                let parent_of_dest = if dest_is_dir {
                    dest_rel.clone()
                } else {
                    parent(&dest_rel).to_string()
                };
                mirror_dirs(&view2, &tree, &parent_of_dest)?;
                for (path, body) in heredoc_files {
                    let mode = opts.chmod.unwrap_or(0o644);
                    let mut f = make_new(&tree, &path, || tree.create_file(&path, mode))?;
                    f.write_all(body.as_bytes()).map_err(at(&path))?;
                }
                for (src, _) in plan {
                    let e = from_view
                        .find(&src)
                        .ok_or_else(|| StepError::Vanished(src.clone()))?;
                    let name = src.rsplit('/').next().unwrap_or(&src).to_string();
                    if add && e.meta.is_file() {
                        let mut f = e.open().map_err(|source| TreeError::Io {
                            path: src.clone(),
                            source,
                        })?;
                        if let Some(kind) = archive_kind(&mut f) {
                            let into = if dest_is_dir {
                                parent_of_dest.clone()
                            } else {
                                dest_rel.clone()
                            };
                            tree.mkdir_all(&into, 0o755).map_err(at(&into))?;
                            extract(f, kind, &tree, &into).map_err(|source| {
                                StepError::Archive {
                                    path: src.clone(),
                                    source,
                                }
                            })?;
                            continue;
                        }
                    }
                    let target = if e.meta.is_dir() {
                        dest_rel.clone()
                    } else if dest_is_dir {
                        format!("{dest_rel}/{name}")
                    } else {
                        dest_rel.clone()
                    };
                    copy_tree(&from_view, &src, &tree, &target, &opts)?;
                }
                Ok(layer)
            })
            .await;
            match res {
                Ok(Ok(l)) => Ok(l),
                Ok(Err(e)) => Err(self.err(step, e)),
                Err(e) => Err(self.err(step, e)),
            }
        })
        .await
    }

    /// `--chown=USER[:GROUP]`: names looked up in the stage's /etc/passwd and /etc/group.
    pub(super) fn owner(
        &self,
        st: &State,
        step: &Step,
        spec: &str,
    ) -> Result<(u32, u32), BuildError> {
        let view = st.view(self.store).map_err(|e| self.err(step, e))?;
        let (u, g) = spec.split_once(':').unwrap_or((spec, ""));
        let uid = match u.parse::<u32>() {
            Ok(n) => n,
            Err(_) => view.lookup_id("etc/passwd", u).ok_or_else(|| {
                self.invalid(
                    step,
                    format!("--chown: no user {u:?} in the image's /etc/passwd"),
                )
            })?,
        };
        let gid = if g.is_empty() {
            uid
        } else {
            match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => view.lookup_id("etc/group", g).ok_or_else(|| {
                    self.invalid(
                        step,
                        format!("--chown: no group {g:?} in the image's /etc/group"),
                    )
                })?,
            }
        };
        Ok((uid, gid))
    }
}
