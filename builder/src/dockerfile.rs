//! The Dockerfile as the builder uses it: the syntax layer is the `parse-dockerfile` crate
//! (directives, continuations, comments, heredocs, every instruction and its flags, spans); this
//! module turns its borrowed tree into an owned one with positions, splits ENV/LABEL/ARG into
//! pairs and rejects what the syntax allows but a build cannot use. Pure: touches no file.

use crate::lex::Lexer;

/// A position in the Dockerfile (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    pub escape: char,
    /// ARGs before the first FROM.
    pub global_args: Vec<Arg>,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: String,
    /// Unexpanded.
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: Option<String>,
    /// The image (unexpanded: global ARGs apply), `scratch` or an earlier stage's name.
    pub base: String,
    pub platform: Option<String>,
    pub pos: Pos,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub pos: Pos,
    pub inst: Inst,
}

/// `--name=value` flags in the order written.
pub type Flags = Vec<(String, Option<String>)>;

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// JSON array: run as is.
    Exec(Vec<String>),
    /// A command line for the SHELL (continuations joined, comment lines dropped).
    Shell(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HereDoc {
    /// Whether `$var` inside is expanded (the delimiter was not quoted).
    pub expand: bool,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Path(String),
    HereDoc(HereDoc),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Inst {
    Run {
        flags: Flags,
        command: Command,
        heredocs: Vec<HereDoc>,
    },
    /// COPY, or ADD when `add`.
    Copy {
        add: bool,
        flags: Flags,
        sources: Vec<Source>,
        dest: String,
    },
    /// Unexpanded `key=value` pairs.
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Arg(Vec<Arg>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Entrypoint(Command),
    Cmd(Command),
    Shell(Vec<String>),
    Stopsignal(String),
    Healthcheck {
        flags: Flags,
        /// `None` = `HEALTHCHECK NONE`.
        command: Option<Command>,
    },
    /// The trigger's source text, stored in the image for builds that use it as a base.
    Onbuild(String),
    Maintainer(String),
}

impl Inst {
    /// The instruction's keyword (for progress lines and history).
    pub fn keyword(&self) -> &'static str {
        match self {
            Inst::Run { .. } => "RUN",
            Inst::Copy { add: true, .. } => "ADD",
            Inst::Copy { .. } => "COPY",
            Inst::Env(_) => "ENV",
            Inst::Label(_) => "LABEL",
            Inst::Arg(_) => "ARG",
            Inst::Workdir(_) => "WORKDIR",
            Inst::User(_) => "USER",
            Inst::Expose(_) => "EXPOSE",
            Inst::Volume(_) => "VOLUME",
            Inst::Entrypoint(_) => "ENTRYPOINT",
            Inst::Cmd(_) => "CMD",
            Inst::Shell(_) => "SHELL",
            Inst::Stopsignal(_) => "STOPSIGNAL",
            Inst::Healthcheck { .. } => "HEALTHCHECK",
            Inst::Onbuild(_) => "ONBUILD",
            Inst::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// Line and column (1-based) of byte `offset` in `text`.
fn pos(text: &str, offset: usize) -> Pos {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos { line, column }
}

/// Parses `text` (named `file` in errors).
pub fn parse(file: &str, text: &str) -> Result<Dockerfile, ParseError> {
    let df = parse_dockerfile::parse(text).map_err(|e| {
        let full = e.to_string();
        let message = match full.rfind(" at line ") {
            Some(i) => full[..i].to_string(),
            None => full,
        };
        ParseError {
            file: file.to_string(),
            line: e.line().max(1),
            column: e.column().max(1),
            message,
        }
    })?;
    let escape = df
        .parser_directives
        .escape
        .as_ref()
        .map_or('\\', |d| d.value.value);
    let cx = Cx {
        file,
        text,
        lexer: Lexer { escape },
    };
    let global_args = df
        .global_args()
        .map(|a| cx.args(&a.arguments.value, a.arg.span.start))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let mut stages = Vec::new();
    for s in df.stages() {
        let from = s.from;
        let mut platform = None;
        for f in &from.options {
            match &*f.name.value {
                "platform" => platform = f.value.as_ref().map(|v| v.value.to_string()),
                other => {
                    return Err(cx.err(
                        f.name.span.start,
                        format!("FROM has no flag --{other} (it knows --platform)"),
                    ))
                }
            }
        }
        let mut steps = Vec::new();
        for i in s.instructions {
            steps.push(cx.step(i)?);
        }
        stages.push(Stage {
            name: from.as_.as_ref().map(|(_, n)| n.value.to_ascii_lowercase()),
            base: from.image.value.to_string(),
            platform,
            pos: pos(text, from.from.span.start),
            steps,
        });
    }
    Ok(Dockerfile {
        escape,
        global_args,
        stages,
    })
}

struct Cx<'t> {
    file: &'t str,
    text: &'t str,
    lexer: Lexer,
}

impl Cx<'_> {
    fn err(&self, offset: usize, message: String) -> ParseError {
        let p = pos(self.text, offset);
        ParseError {
            file: self.file.to_string(),
            line: p.line,
            column: p.column,
            message,
        }
    }

    fn flags(
        &self,
        keyword: &str,
        flags: &[parse_dockerfile::Flag<'_>],
        known: &[&str],
    ) -> Result<Flags, ParseError> {
        flags
            .iter()
            .map(|f| {
                let name = f.name.value.to_string();
                if known.contains(&name.as_str()) {
                    Ok((name, f.value.as_ref().map(|v| v.value.to_string())))
                } else {
                    Err(self.err(
                        f.name.span.start,
                        format!(
                            "{keyword} has no flag --{name} (it knows {})",
                            known
                                .iter()
                                .map(|k| format!("--{k}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ))
                }
            })
            .collect()
    }

    /// `ARG a=1 b c=3`.
    fn args(&self, raw: &str, at: usize) -> Result<Vec<Arg>, ParseError> {
        let words = self.lexer.split_raw(raw);
        if words.is_empty() {
            return Err(self.err(at, "ARG needs a name".into()));
        }
        Ok(words
            .into_iter()
            .map(|w| match w.split_once('=') {
                Some((k, v)) => Arg {
                    name: k.to_string(),
                    default: Some(v.to_string()),
                },
                None => Arg {
                    name: w,
                    default: None,
                },
            })
            .collect())
    }

    /// ENV/LABEL: `k=v k2="v 2"`, or the legacy `k v w` (one pair, the rest is the value).
    fn pairs(
        &self,
        keyword: &str,
        raw: &str,
        at: usize,
    ) -> Result<Vec<(String, String)>, ParseError> {
        let words = self.lexer.split_raw(raw);
        let Some(first) = words.first() else {
            return Err(self.err(at, format!("{keyword} needs a key=value pair")));
        };
        if !first.contains('=') {
            let rest = raw.trim_start()[first.len()..].trim().to_string();
            if rest.is_empty() {
                return Err(self.err(
                    at,
                    format!("{keyword} {first} has no value: write {first}=VALUE"),
                ));
            }
            return Ok(vec![(first.clone(), rest)]);
        }
        words
            .into_iter()
            .map(|w| match w.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(self.err(
                    at,
                    format!("{keyword}: {w:?} is not key=value (mixing both forms is not allowed)"),
                )),
            })
            .collect()
    }

    fn command(&self, c: &parse_dockerfile::Command<'_>) -> Command {
        match c {
            parse_dockerfile::Command::Exec(v) => {
                Command::Exec(v.value.iter().map(|s| s.value.to_string()).collect())
            }
            parse_dockerfile::Command::Shell(s) => Command::Shell(self.join_lines(s.value)),
            #[allow(unreachable_patterns)]
            _ => Command::Shell(String::new()),
        }
    }

    /// A shell-form command as BuildKit hands it to the shell: escaped newlines removed, comment
    /// lines and blank lines inside the continuation dropped.
    fn join_lines(&self, raw: &str) -> String {
        let mut out = String::new();
        for (i, line) in raw.split('\n').enumerate() {
            let t = line.trim_start();
            if i > 0 && (t.starts_with('#') || t.trim().is_empty()) {
                continue;
            }
            let l = line.trim_end_matches('\r');
            match l.trim_end().strip_suffix(self.lexer.escape) {
                Some(cont) => out.push_str(cont),
                None => out.push_str(l),
            }
        }
        out.trim().to_string()
    }

    fn heredoc(h: &parse_dockerfile::HereDoc<'_>) -> HereDoc {
        HereDoc {
            expand: h.expand,
            body: h.value.to_string(),
        }
    }

    fn step(&self, i: &parse_dockerfile::Instruction<'_>) -> Result<Step, ParseError> {
        use parse_dockerfile::Instruction as I;
        let at = keyword_start(i);
        let inst = match i {
            I::Run(r) => Inst::Run {
                flags: self.flags("RUN", &r.options, &["mount", "network", "security"])?,
                command: self.command(&r.arguments),
                heredocs: r.here_docs.iter().map(Self::heredoc).collect(),
            },
            I::Copy(c) => Inst::Copy {
                add: false,
                flags: self.flags(
                    "COPY",
                    &c.options,
                    &["from", "chown", "chmod", "link", "parents", "exclude"],
                )?,
                sources: c.src.iter().map(source).collect(),
                dest: c.dest.value.to_string(),
            },
            I::Add(c) => Inst::Copy {
                add: true,
                flags: self.flags(
                    "ADD",
                    &c.options,
                    &[
                        "chown",
                        "chmod",
                        "link",
                        "keep-git-dir",
                        "checksum",
                        "exclude",
                    ],
                )?,
                sources: c.src.iter().map(source).collect(),
                dest: c.dest.value.to_string(),
            },
            I::Env(e) => Inst::Env(self.pairs("ENV", &e.arguments.value, at)?),
            I::Label(l) => Inst::Label(self.pairs("LABEL", &l.arguments.value, at)?),
            I::Arg(a) => Inst::Arg(self.args(&a.arguments.value, at)?),
            I::Workdir(w) => Inst::Workdir(w.arguments.value.to_string()),
            I::User(u) => Inst::User(u.arguments.value.to_string()),
            I::Expose(e) => Inst::Expose(e.arguments.iter().map(|s| s.value.to_string()).collect()),
            I::Volume(v) => Inst::Volume(match &v.arguments {
                parse_dockerfile::JsonOrStringArray::Json(a) => {
                    a.value.iter().map(|s| s.value.to_string()).collect()
                }
                parse_dockerfile::JsonOrStringArray::String(a) => {
                    a.iter().map(|s| s.value.to_string()).collect()
                }
            }),
            I::Entrypoint(e) => Inst::Entrypoint(self.command(&e.arguments)),
            I::Cmd(c) => Inst::Cmd(self.command(&c.arguments)),
            I::Shell(s) => Inst::Shell(s.arguments.iter().map(|a| a.value.to_string()).collect()),
            I::Stopsignal(s) => Inst::Stopsignal(s.arguments.value.to_string()),
            I::Healthcheck(h) => Inst::Healthcheck {
                flags: self.flags(
                    "HEALTHCHECK",
                    &h.options,
                    &[
                        "interval",
                        "timeout",
                        "start-period",
                        "start-interval",
                        "retries",
                    ],
                )?,
                command: match &h.arguments {
                    parse_dockerfile::HealthcheckArguments::Cmd { arguments, .. } => {
                        Some(self.command(arguments))
                    }
                    _ => None,
                },
            },
            I::Onbuild(o) => {
                let start = keyword_start(&o.instruction);
                let end = self.text[start..]
                    .find('\n')
                    .map_or(self.text.len(), |n| start + n);
                Inst::Onbuild(self.join_lines(&self.text[start..end]))
            }
            I::Maintainer(m) => Inst::Maintainer(m.name.value.to_string()),
            I::From(_) => {
                return Err(self.err(at, "FROM inside a stage".into()));
            }
            #[allow(unreachable_patterns)]
            _ => return Err(self.err(at, "this instruction is not supported by reg".into())),
        };
        Ok(Step {
            pos: pos(self.text, at),
            inst,
        })
    }
}

fn source(s: &parse_dockerfile::Source<'_>) -> Source {
    match s {
        parse_dockerfile::Source::Path(p) => Source::Path(p.value.to_string()),
        parse_dockerfile::Source::HereDoc(h) => Source::HereDoc(Cx::heredoc(h)),
        #[allow(unreachable_patterns)]
        _ => Source::Path(String::new()),
    }
}

fn keyword_start(i: &parse_dockerfile::Instruction<'_>) -> usize {
    use parse_dockerfile::Instruction as I;
    match i {
        I::Add(x) => x.add.span.start,
        I::Arg(x) => x.arg.span.start,
        I::Cmd(x) => x.cmd.span.start,
        I::Copy(x) => x.copy.span.start,
        I::Entrypoint(x) => x.entrypoint.span.start,
        I::Env(x) => x.env.span.start,
        I::Expose(x) => x.expose.span.start,
        I::From(x) => x.from.span.start,
        I::Healthcheck(x) => x.healthcheck.span.start,
        I::Label(x) => x.label.span.start,
        I::Maintainer(x) => x.maintainer.span.start,
        I::Onbuild(x) => x.onbuild.span.start,
        I::Run(x) => x.run.span.start,
        I::Shell(x) => x.shell.span.start,
        I::Stopsignal(x) => x.stopsignal.span.start,
        I::User(x) => x.user.span.start,
        I::Volume(x) => x.volume.span.start,
        I::Workdir(x) => x.workdir.span.start,
        #[allow(unreachable_patterns)]
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden files: `testdata/parse/NAME.Dockerfile` parses to `NAME.out` (the Debug form of
    /// the tree, or the error). `UPDATE_GOLDEN=1 cargo test -p reg-builder` rewrites them.
    #[test]
    fn golden_parse_files() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/parse");
        let mut n = 0;
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .expect("testdata/parse exists")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
            .collect();
        entries.sort();
        for path in entries {
            let text = std::fs::read_to_string(&path).expect("readable");
            let got = match parse("Dockerfile", &text) {
                Ok(d) => format!("{d:#?}\n"),
                Err(e) => format!("error: {e}\n"),
            };
            let out = path.with_extension("out");
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::write(&out, &got).expect("writable");
            }
            let want = std::fs::read_to_string(&out)
                .unwrap_or_else(|_| panic!("{} missing: UPDATE_GOLDEN=1", out.display()));
            assert_eq!(got, want, "{}", path.display());
            n += 1;
        }
        assert!(n >= 5, "only {n} golden files");
    }

    #[track_caller]
    fn check_error(text: &str, expected: &str) {
        match parse("Dockerfile", text) {
            Err(e) => assert_eq!(e.to_string(), expected),
            Ok(d) => panic!("parsed: {d:?}"),
        }
    }

    #[test]
    fn errors_name_file_line_and_column() {
        check_error(
            "FROM a\nFOO bar\n",
            "Dockerfile:2:1: unknown instruction 'FOO'",
        );
        check_error(
            "FROM a\nCOPY --frm=x a b\n",
            "Dockerfile:2:8: COPY has no flag --frm (it knows --from, --chown, --chmod, --link, --parents, --exclude)",
        );
        check_error("RUN x\n", "Dockerfile:1:1: expected FROM");
        check_error(
            "FROM a\nENV x=1 y\n",
            "Dockerfile:2:1: ENV: \"y\" is not key=value (mixing both forms is not allowed)",
        );
    }

    #[test]
    fn shell_form_continuations_join_and_drop_comment_lines() {
        let d = parse("D", "FROM a\nRUN echo a \\\n  b && \\\n # c\n\n  echo c\n").expect("parses");
        assert_eq!(
            d.stages[0].steps[0].inst,
            Inst::Run {
                flags: vec![],
                command: Command::Shell("echo a   b &&   echo c".into()),
                heredocs: vec![],
            }
        );
    }
}
