//! `.dockerignore`: which context paths are not sent to the build. Docker's rules (moby's
//! `patternmatcher`): one pattern per line, `#` comments, paths relative to the context root
//! (a leading `/` is dropped, `..` cannot climb out), `*` and `?` within one path element, `**`
//! across elements, `!` re-includes, the last matching line wins, and a pattern that matches a
//! directory matches everything below it. Pure: the caller reads the file.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// The longest pattern accepted, in bytes (a path longer than `PATH_MAX` names nothing). Far
/// longer ones compile for a long time, and from ~100 KB their regex exceeds globset's size
/// limit (which its `compile_matcher` answered with a panic).
pub const MAX_PATTERN_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(".dockerignore line {line}: {message}")]
pub struct IgnoreError {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub struct Ignore {
    /// One set per pattern (a set of one: unlike `Glob::compile_matcher`, building it returns
    /// an error instead of panicking when the regex is too big), and whether it re-includes.
    rules: Vec<(GlobSet, bool)>,
}

/// Lexically cleans a relative path: no `.`, no empty elements, `..` never above the root.
pub fn clean(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    out.join("/")
}

impl Ignore {
    pub fn parse(text: &str) -> Result<Ignore, IgnoreError> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (negate, pat) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            let error = |message: String| IgnoreError {
                line: i + 1,
                message,
            };
            if pat.len() > MAX_PATTERN_LEN {
                return Err(error(format!(
                    "a pattern of {} bytes: the limit is {MAX_PATTERN_LEN}",
                    pat.len()
                )));
            }
            let pat = clean(pat);
            if pat.is_empty() {
                continue;
            }
            let set = GlobBuilder::new(&pat)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .and_then(|glob| GlobSetBuilder::new().add(glob).build())
                .map_err(|e| error(format!("{pat:?}: {}", e.kind())))?;
            rules.push((set, negate));
        }
        Ok(Ignore { rules })
    }

    /// Whether any rule re-includes something (then an excluded directory must still be
    /// walked, since a file below it may come back).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, n)| *n)
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out.
    pub fn excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let mut excluded = false;
        for (glob, negate) in &self.rules {
            // The path itself or one of its parent directories.
            let mut hit = glob.is_match(&path);
            let mut p = path.as_str();
            while !hit {
                match p.rfind('/') {
                    Some(i) => {
                        p = &p[..i];
                        hit = glob.is_match(p);
                    }
                    None => break,
                }
            }
            if hit {
                excluded = !negate;
            }
        }
        excluded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(rules: &str, path: &str, excluded: bool) {
        let ig = Ignore::parse(rules).expect("valid rules");
        assert_eq!(
            ig.excluded(path),
            excluded,
            "rules {rules:?}, path {path:?}"
        );
    }

    #[test]
    fn dockerignore_table() {
        check("*.md", "README.md", true);
        check("*.md", "docs/README.md", false);
        check("**/*.md", "docs/README.md", true);
        check("**/*.md", "README.md", true);
        check("docs", "docs/a/b.txt", true);
        check("docs/", "docs/a", true);
        check("/docs", "docs/a", true);
        check("./docs", "docs/a", true);
        check("docs/*", "docs", false);
        check("docs/*", "docs/x", true);
        check("d?cs", "docs", true);
        check("d?cs", "dxxcs", false);
        check("*\n!keep.md", "keep.md", false);
        check("*\n!keep.md", "other", true);
        check("!keep.md\n*", "keep.md", true);
        check(
            "*.md\n!README*.md\nREADME-secret.md",
            "README-secret.md",
            true,
        );
        check(
            "*.md\n!README*.md\nREADME-secret.md",
            "README-public.md",
            false,
        );
        check("# comment\n\n  tmp  ", "tmp/x", true);
        check("# comment", "# comment", false);
        check("a/**/z", "a/b/c/z", true);
        check("a/**/z", "a/z", true);
        check("../secret", "secret", true);
        check("[abc].txt", "b.txt", true);
        check("[abc].txt", "d.txt", false);
    }

    #[test]
    fn exceptions_are_known() {
        assert!(Ignore::parse("*\n!a").expect("valid").has_exceptions());
        assert!(!Ignore::parse("*").expect("valid").has_exceptions());
    }

    #[test]
    fn a_bad_pattern_names_its_line() {
        let e = Ignore::parse("ok\n[z-a]").expect_err("invalid range");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn long_patterns_are_errors_not_panics() {
        let e = Ignore::parse(&format!("ok\n{}", "*?".repeat(52_428))).expect_err("too long");
        assert_eq!(
            e.to_string(),
            ".dockerignore line 2: a pattern of 104856 bytes: the limit is 4096"
        );
        check(
            &"?".repeat(MAX_PATTERN_LEN),
            &"x".repeat(MAX_PATTERN_LEN),
            true,
        );
        check(
            &"*?".repeat(MAX_PATTERN_LEN / 2),
            &"x".repeat(MAX_PATTERN_LEN / 2),
            true,
        );
    }
}
