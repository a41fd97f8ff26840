//! Variable substitution and word splitting with BuildKit's rules (its `shell/lex.go` is the
//! reference): `$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`, `${v:?m}`, `${v?m}`,
//! single quotes literal, double quotes expanding, the escape character (`\` or the `# escape=`
//! one) making the next character literal. Pure: no I/O, no process environment.
//!
//! Bounded: a Dockerfile is someone else's input and the lexer runs inside the agent, so nesting
//! (recursion) and the bytes one expansion may substitute have limits ([`MAX_NESTING`],
//! [`MAX_EXPANSION`], [`MAX_VARS`]) that no real Dockerfile comes near; past them the word is an
//! error naming the limit, never a stack overflow or an allocation that grows without end.

use std::collections::BTreeMap;

/// The variables an instruction sees (build args in scope and the stage's ENV).
pub type Vars = BTreeMap<String, String>;

/// How deep `${a:-${b:-…}}` may nest. BuildKit has no limit (Go stacks grow); ours recurses on
/// a fixed stack (2 MiB for a tokio worker), and no real Dockerfile nests more than a few levels.
pub const MAX_NESTING: usize = 64;

/// How many bytes of variable values one word may substitute (so `ENV a=$a$a` repeated cannot
/// double a value without end: every expansion stays within this).
pub const MAX_EXPANSION: usize = 1 << 20;

/// How many bytes all the variables in scope may hold together (names and values).
pub const MAX_VARS: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(&'static str),
    #[error("bad substitution in {0:?}")]
    BadSubstitution(String),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("unsupported modifier {modifier:?} in ${{{name}…}}: reg supports :- - :+ + :? ?")]
    Unsupported { name: String, modifier: char },
    #[error("variable substitution nested deeper than {MAX_NESTING} levels")]
    TooDeep,
    #[error("variable substitution produces more than {} MiB", MAX_EXPANSION >> 20)]
    TooLong,
    #[error("the variables in scope hold more than {} MiB", MAX_VARS >> 20)]
    TooManyVars,
}

/// A lexer for one escape character.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    pub escape: char,
}

impl Default for Lexer {
    fn default() -> Lexer {
        Lexer { escape: '\\' }
    }
}

impl Lexer {
    /// Expands `s` to one string (quotes removed, whitespace kept): ENV/LABEL/ARG values,
    /// WORKDIR, USER, FROM, STOPSIGNAL, each COPY/ADD path.
    pub fn word(&self, s: &str, vars: &Vars) -> Result<String, LexError> {
        let mut p = P::new(s, self.escape, vars)?;
        let mut w = p.run(None, false)?;
        Ok(w.pop().unwrap_or_default())
    }

    /// Expands `s` and splits it on unquoted whitespace (EXPOSE, VOLUME in shell form).
    pub fn words(&self, s: &str, vars: &Vars) -> Result<Vec<String>, LexError> {
        P::new(s, self.escape, vars)?.run(None, true)
    }

    /// Splits on unquoted whitespace without expanding or unquoting anything (ENV and LABEL
    /// arguments are split into `key=value` words first, each value expanded later).
    pub fn split_raw(&self, s: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut quote: Option<char> = None;
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match quote {
                Some(q) => {
                    cur.push(c);
                    if c == q {
                        quote = None;
                    } else if c == self.escape && q == '"' {
                        if let Some(n) = chars.next() {
                            cur.push(n);
                        }
                    }
                }
                None if c == self.escape => {
                    cur.push(c);
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                None if c == '"' || c == '\'' => {
                    quote = Some(c);
                    cur.push(c);
                }
                None if c.is_whitespace() => {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                }
                None => cur.push(c),
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
}

struct P<'a> {
    chars: Vec<char>,
    i: usize,
    escape: char,
    vars: &'a Vars,
    /// `${` levels open around the current position.
    depth: usize,
    /// Bytes of variable values substituted so far (the output is at most the input plus this).
    expanded: usize,
}

impl<'a> P<'a> {
    fn new(s: &str, escape: char, vars: &'a Vars) -> Result<P<'a>, LexError> {
        let held = vars
            .iter()
            .fold(0usize, |n, (k, v)| n.saturating_add(k.len() + v.len()));
        if held > MAX_VARS {
            return Err(LexError::TooManyVars);
        }
        Ok(P {
            chars: s.chars().collect(),
            i: 0,
            escape,
            vars,
            depth: 0,
            expanded: 0,
        })
    }

    /// A variable's value, counted against [`MAX_EXPANSION`] when it is used.
    fn value(&mut self, v: Option<&String>) -> Result<String, LexError> {
        let v = v.cloned().unwrap_or_default();
        self.expanded = self.expanded.saturating_add(v.len());
        if self.expanded > MAX_EXPANSION {
            return Err(LexError::TooLong);
        }
        Ok(v)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.i += 1;
        }
        c
    }

    /// Processes until `stop` (not consumed) or the end; with `split`, unquoted whitespace
    /// separates words.
    fn run(&mut self, stop: Option<char>, split: bool) -> Result<Vec<String>, LexError> {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut in_word = false;
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                break;
            }
            self.i += 1;
            match c {
                '\'' => {
                    in_word = true;
                    self.single(&mut cur)?;
                }
                '"' => {
                    in_word = true;
                    self.double(&mut cur)?;
                }
                '$' => {
                    in_word = true;
                    let v = self.dollar()?;
                    cur.push_str(&v);
                }
                c if c == self.escape => {
                    in_word = true;
                    if let Some(n) = self.next() {
                        cur.push(n);
                    }
                }
                c if split && c.is_whitespace() => {
                    if in_word {
                        words.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                }
                c => {
                    in_word = true;
                    cur.push(c);
                }
            }
        }
        if in_word || !split {
            words.push(cur);
        }
        Ok(words)
    }

    fn single(&mut self, out: &mut String) -> Result<(), LexError> {
        loop {
            match self.next() {
                None => return Err(LexError::Unterminated("single-quote")),
                Some('\'') => return Ok(()),
                Some(c) => out.push(c),
            }
        }
    }

    fn double(&mut self, out: &mut String) -> Result<(), LexError> {
        loop {
            match self.next() {
                None => return Err(LexError::Unterminated("double-quote")),
                Some('"') => return Ok(()),
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                }
                Some(c) if c == self.escape => match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.i += 1;
                        out.push(n);
                    }
                    _ => out.push(c),
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                self.i += 1;
            } else {
                break;
            }
        }
        name
    }

    /// After a `$`: a variable, a braced expression, or a literal `$`.
    fn dollar(&mut self) -> Result<String, LexError> {
        match self.peek() {
            Some('{') => {
                self.i += 1;
                if self.depth >= MAX_NESTING {
                    return Err(LexError::TooDeep);
                }
                self.depth += 1;
                let v = self.braced();
                self.depth -= 1;
                v
            }
            Some(c) if c.is_ascii_digit() => {
                // Positional parameters do not exist in a Dockerfile: empty, like a shell.
                self.i += 1;
                Ok(String::new())
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let name = self.name();
                self.value(self.vars.get(&name))
            }
            _ => Ok("$".into()),
        }
    }

    fn braced(&mut self) -> Result<String, LexError> {
        let start = self.i;
        let name = self.name();
        let bad = |p: &P| {
            let end = p.chars.len().min(p.i + 1);
            LexError::BadSubstitution(format!(
                "${{{}",
                p.chars[start..end].iter().collect::<String>()
            ))
        };
        if name.is_empty() {
            return Err(bad(self));
        }
        let value = self.vars.get(&name);
        let modifier = match self.next() {
            Some('}') => return self.value(value),
            Some(':') => match self.next() {
                Some(m @ ('-' | '+' | '?')) => (true, m),
                _ => return Err(bad(self)),
            },
            Some(m @ ('-' | '+' | '?')) => (false, m),
            Some(m @ ('#' | '%' | '/')) => return Err(LexError::Unsupported { name, modifier: m }),
            _ => return Err(bad(self)),
        };
        let mut word = self.run(Some('}'), false)?;
        let word = word.pop().unwrap_or_default();
        if self.next() != Some('}') {
            return Err(LexError::Unterminated("}"));
        }
        let (colon, m) = modifier;
        // With a colon an empty value counts as unset.
        let set = match &value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        Ok(match m {
            '-' => {
                if set {
                    self.value(value)?
                } else {
                    word
                }
            }
            '+' => {
                if set {
                    word
                } else {
                    String::new()
                }
            }
            _ => {
                if set {
                    self.value(value)?
                } else {
                    return Err(LexError::Required {
                        name,
                        message: if word.is_empty() {
                            "is not set".into()
                        } else {
                            word
                        },
                    });
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        [("v", "val"), ("e", ""), ("sp", "a b"), ("n", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[track_caller]
    fn check(input: &str, expected: &str) {
        let got = Lexer::default().word(input, &vars());
        assert_eq!(got.as_deref(), Ok(expected), "input {input:?}");
    }

    #[track_caller]
    fn check_words(input: &str, expected: &[&str]) {
        let got = Lexer::default().words(input, &vars()).expect("expands");
        assert_eq!(got, expected, "input {input:?}");
    }

    #[track_caller]
    fn check_err(input: &str, contains: &str) {
        match Lexer::default().word(input, &vars()) {
            Err(e) => assert!(e.to_string().contains(contains), "{input:?}: {e}"),
            Ok(v) => panic!("{input:?} expanded to {v:?}, expected an error"),
        }
    }

    #[test]
    fn substitution_table() {
        // BuildKit's Dockerfile reference, "Environment replacement", plus its shell_lex cases.
        check("$v", "val");
        check("${v}", "val");
        check("x${v}y", "xvaly");
        check("$v-x", "val-x");
        check("$unset", "");
        check("${unset}", "");
        check("${v:-w}", "val");
        check("${e:-w}", "w");
        check("${unset:-w}", "w");
        check("${e-w}", "");
        check("${unset-w}", "w");
        check("${v:+w}", "w");
        check("${e:+w}", "");
        check("${e+w}", "w");
        check("${unset+w}", "");
        check("${unset:-$v}", "val");
        check("${unset:-${n}x}", "1x");
        check("${unset:-a b}", "a b");
        check("\\$v", "$v");
        check("\\${v}", "${v}");
        check("'$v'", "$v");
        check("\"$v\"", "val");
        check("\"\\$v\"", "$v");
        check("\"a\\b\"", "a\\b");
        check("\"a\\\"b\"", "a\"b");
        check("a\\ b", "a b");
        check("$", "$");
        check("a$", "a$");
        check("$1x", "x");
        check("$-", "$-");
        check("${v:?boom}", "val");
    }

    #[test]
    fn substitution_errors() {
        check_err("${unset:?needs a value}", "unset: needs a value");
        check_err("${e:?}", "e: is not set");
        check_err("${unset?}", "unset: is not set");
        check_err("${v", "bad substitution");
        check_err("${}", "bad substitution");
        check_err("${v#x}", "unsupported modifier");
        check_err("'open", "single-quote");
        check_err("\"open", "double-quote");
        check_err("${unset:-x", "}");
    }

    #[test]
    fn words_split_on_unquoted_whitespace() {
        check_words("a b  c", &["a", "b", "c"]);
        check_words("\"a b\" c", &["a b", "c"]);
        check_words("a\\ b c", &["a b", "c"]);
        check_words("$sp c", &["a b", "c"]);
        check_words("80/tcp ${n}0", &["80/tcp", "10"]);
        check_words("  ", &[]);
        check_words("'' x", &["", "x"]);
    }

    /// `${a:-${a:-…}}` `depth` levels deep.
    fn nested(depth: usize) -> String {
        format!("{}end{}", "${a:-".repeat(depth), "}".repeat(depth))
    }

    #[test]
    fn nesting_is_bounded_not_a_stack_overflow() {
        // On a stack the size of a tokio worker's: 5,000 levels (a 30 KB Dockerfile) aborted
        // the whole agent before the limit.
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                check(&nested(MAX_NESTING), "end");
                for depth in [MAX_NESTING + 1, 5_000, 100_000] {
                    assert_eq!(
                        Lexer::default().word(&nested(depth), &vars()),
                        Err(LexError::TooDeep)
                    );
                }
                check_err(
                    &format!("\"{}\"", nested(MAX_NESTING + 1)),
                    "nested deeper than 64 levels",
                );
            })
            .expect("thread")
            .join()
            .expect("no overflow");
    }

    #[test]
    fn expansion_is_bounded() {
        let mut big = vars();
        big.insert("h".into(), "x".repeat(MAX_EXPANSION / 4));
        let l = Lexer::default();
        assert_eq!(l.word("$h$h$h$h", &big).map(|w| w.len()), Ok(MAX_EXPANSION));
        assert_eq!(l.word("$h$h$h$h$v", &big), Err(LexError::TooLong));
        assert_eq!(
            l.words("$h ${h} \"$h\" ${x:-$h} $h", &big),
            Err(LexError::TooLong)
        );
        big.insert("huge".into(), "x".repeat(MAX_VARS));
        assert_eq!(l.word("plain", &big), Err(LexError::TooManyVars));
        assert_eq!(
            LexError::TooLong.to_string(),
            "variable substitution produces more than 1 MiB"
        );
    }

    #[test]
    fn escape_directive_changes_the_escape() {
        let l = Lexer { escape: '`' };
        assert_eq!(l.word("C:\\dir `$v", &vars()).as_deref(), Ok("C:\\dir $v"));
    }

    #[test]
    fn split_raw_keeps_quotes_for_later_expansion() {
        let l = Lexer::default();
        assert_eq!(
            l.split_raw("A=1 B=\"x y\" C=z\\ w D='q r'"),
            ["A=1", "B=\"x y\"", "C=z\\ w", "D='q r'"]
        );
    }
}
