//! The Dockerfile as the builder uses it: the syntax layer is the `parse-dockerfile` crate
//! (directives, continuations, comments, heredocs, every instruction and its flags, spans); this
//! module turns its borrowed tree into an owned one with positions, splits ENV/LABEL/ARG into
//! pairs and rejects what the syntax allows but a build cannot use. Pure: touches no file.
//!
//! Bounded: the text, the number of instructions, of heredocs and of arguments per instruction
//! have limits ([`MAX_LEN`], [`MAX_INSTRUCTIONS`], [`MAX_HEREDOCS`], [`MAX_ARGS`]) far above
//! any real Dockerfile, so a hostile one costs the agent a bounded amount of memory and time.

use crate::lex::Lexer;

/// The largest Dockerfile accepted, in bytes (heredocs included).
pub const MAX_LEN: usize = 4 << 20;

/// The most instructions (FROMs and global ARGs included) a Dockerfile may have.
pub const MAX_INSTRUCTIONS: usize = 10_000;

/// The most heredocs a Dockerfile may have, all instructions together.
pub const MAX_HEREDOCS: usize = 1_000;

/// The most arguments one instruction may have: key=value pairs, names, ports, paths, sources,
/// exec-form elements and flags each count.
pub const MAX_ARGS: usize = 4_096;

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

/// Where each line starts, so a position costs a binary search, not a scan from the top (once
/// per instruction that made parsing quadratic in the number of lines).
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Lines {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines(starts.collect())
    }

    /// Line and column (1-based, the column in characters) of byte `offset` in `text`.
    fn pos(&self, text: &str, offset: usize) -> Pos {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.0.partition_point(|&start| start <= offset).max(1);
        let start = self.0[line - 1];
        Pos {
            line,
            column: text[start..offset].chars().count() + 1,
        }
    }
}

/// Parses `text` (named `file` in errors).
pub fn parse(file: &str, text: &str) -> Result<Dockerfile, ParseError> {
    let whole = |message: String| ParseError {
        file: file.to_string(),
        line: 1,
        column: 1,
        message,
    };
    if text.len() > MAX_LEN {
        return Err(whole(format!(
            "the Dockerfile is {} bytes: the limit is {} MiB",
            text.len(),
            MAX_LEN >> 20
        )));
    }
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
        lines: Lines::new(text),
    };
    let instructions = df.instructions.len();
    if instructions > MAX_INSTRUCTIONS {
        return Err(whole(format!(
            "the Dockerfile has {instructions} instructions: the limit is {MAX_INSTRUCTIONS}"
        )));
    }
    let heredocs: usize = df.instructions.iter().map(heredoc_count).sum();
    if heredocs > MAX_HEREDOCS {
        return Err(whole(format!(
            "the Dockerfile has {heredocs} heredocs: the limit is {MAX_HEREDOCS}"
        )));
    }
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
        cx.count("FROM", from.options.len(), from.from.span.start)?;
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
            pos: cx.lines.pos(text, from.from.span.start),
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
    lines: Lines,
}

impl Cx<'_> {
    fn err(&self, offset: usize, message: String) -> ParseError {
        let p = self.lines.pos(self.text, offset);
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

    /// [`MAX_ARGS`] for the instruction at `at`.
    fn count(&self, keyword: &str, n: usize, at: usize) -> Result<(), ParseError> {
        if n > MAX_ARGS {
            return Err(self.err(
                at,
                format!("{keyword} has {n} arguments: the limit is {MAX_ARGS}"),
            ));
        }
        Ok(())
    }

    /// `ARG a=1 b c=3`.
    fn args(&self, raw: &str, at: usize) -> Result<Vec<Arg>, ParseError> {
        let words = self.lexer.split_raw(raw);
        self.count("ARG", words.len(), at)?;
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
        self.count(keyword, words.len(), at)?;
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
        let (name, at) = keyword(i);
        let args = match i {
            I::Run(r) => r.options.len() + command_len(&r.arguments),
            I::Copy(c) => c.options.len() + c.src.len(),
            I::Add(c) => c.options.len() + c.src.len(),
            I::Expose(e) => e.arguments.len(),
            I::Volume(v) => match &v.arguments {
                parse_dockerfile::JsonOrStringArray::Json(a) => a.value.len(),
                parse_dockerfile::JsonOrStringArray::String(a) => a.len(),
            },
            I::Entrypoint(e) => command_len(&e.arguments),
            I::Cmd(c) => command_len(&c.arguments),
            I::Shell(s) => s.arguments.len(),
            I::Healthcheck(h) => {
                h.options.len()
                    + match &h.arguments {
                        parse_dockerfile::HealthcheckArguments::Cmd { arguments, .. } => {
                            command_len(arguments)
                        }
                        _ => 0,
                    }
            }
            _ => 0,
        };
        self.count(name, args, at)?;
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
                let (_, start) = keyword(&o.instruction);
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
            pos: self.lines.pos(self.text, at),
            inst,
        })
    }
}

fn command_len(c: &parse_dockerfile::Command<'_>) -> usize {
    match c {
        parse_dockerfile::Command::Exec(v) => v.value.len(),
        _ => 1,
    }
}

/// Heredocs of one instruction (an ONBUILD's are its trigger's).
fn heredoc_count(i: &parse_dockerfile::Instruction<'_>) -> usize {
    use parse_dockerfile::Instruction as I;
    let sources = |src: &[parse_dockerfile::Source<'_>]| {
        src.iter()
            .filter(|s| matches!(s, parse_dockerfile::Source::HereDoc(_)))
            .count()
    };
    match i {
        I::Run(r) => r.here_docs.len(),
        I::Copy(c) => sources(&c.src),
        I::Add(c) => sources(&c.src),
        I::Onbuild(o) => heredoc_count(&o.instruction),
        _ => 0,
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

/// The keyword of `i` (upper case) and where it starts.
fn keyword(i: &parse_dockerfile::Instruction<'_>) -> (&'static str, usize) {
    use parse_dockerfile::Instruction as I;
    match i {
        I::Add(x) => ("ADD", x.add.span.start),
        I::Arg(x) => ("ARG", x.arg.span.start),
        I::Cmd(x) => ("CMD", x.cmd.span.start),
        I::Copy(x) => ("COPY", x.copy.span.start),
        I::Entrypoint(x) => ("ENTRYPOINT", x.entrypoint.span.start),
        I::Env(x) => ("ENV", x.env.span.start),
        I::Expose(x) => ("EXPOSE", x.expose.span.start),
        I::From(x) => ("FROM", x.from.span.start),
        I::Healthcheck(x) => ("HEALTHCHECK", x.healthcheck.span.start),
        I::Label(x) => ("LABEL", x.label.span.start),
        I::Maintainer(x) => ("MAINTAINER", x.maintainer.span.start),
        I::Onbuild(x) => ("ONBUILD", x.onbuild.span.start),
        I::Run(x) => ("RUN", x.run.span.start),
        I::Shell(x) => ("SHELL", x.shell.span.start),
        I::Stopsignal(x) => ("STOPSIGNAL", x.stopsignal.span.start),
        I::User(x) => ("USER", x.user.span.start),
        I::Volume(x) => ("VOLUME", x.volume.span.start),
        I::Workdir(x) => ("WORKDIR", x.workdir.span.start),
        #[allow(unreachable_patterns)]
        _ => ("instruction", 0),
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
    fn limits_name_themselves() {
        let big = format!("FROM a\n#{}\n", "x".repeat(MAX_LEN));
        check_error(
            &big,
            &format!(
                "Dockerfile:1:1: the Dockerfile is {} bytes: the limit is 4 MiB",
                big.len()
            ),
        );
        check_error(
            &format!("FROM a\n{}", "USER u\n".repeat(MAX_INSTRUCTIONS)),
            "Dockerfile:1:1: the Dockerfile has 10001 instructions: the limit is 10000",
        );
        check_error(
            &format!("FROM a\n{}", "COPY <<A <<B /\na\nA\nb\nB\n".repeat(501)),
            "Dockerfile:1:1: the Dockerfile has 1002 heredocs: the limit is 1000",
        );
        check_error(
            &format!("FROM a\nEXPOSE{}\n", " 80".repeat(MAX_ARGS + 1)),
            "Dockerfile:2:1: EXPOSE has 4097 arguments: the limit is 4096",
        );
        check_error(
            &format!("FROM a\nENV{}\n", " a=1".repeat(MAX_ARGS + 1)),
            "Dockerfile:2:1: ENV has 4097 arguments: the limit is 4096",
        );
        check_error(
            &format!("FROM a\nRUN [{}\"x\"]\n", "\"x\",".repeat(MAX_ARGS)),
            "Dockerfile:2:1: RUN has 4097 arguments: the limit is 4096",
        );
    }

    #[test]
    fn positions_of_many_instructions_in_a_large_file_are_cheap() {
        // Each position used to count the newlines above it: 10,000 steps among 4 MiB of blank
        // lines took 80 s in a release build.
        let step = format!("{}USER u\n", "\n".repeat(400));
        let n = ((MAX_LEN - 100) / step.len()).min(MAX_INSTRUCTIONS - 1);
        let d = parse("D", &format!("FROM a\n{}", step.repeat(n))).expect("parses");
        let steps = &d.stages[0].steps;
        assert_eq!(steps.len(), n);
        assert_eq!(
            steps[n - 1].pos,
            Pos {
                line: 1 + 401 * n,
                column: 1
            }
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
