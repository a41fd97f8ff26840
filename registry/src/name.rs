//! Repository names and tags, validated against the distribution spec's grammar.

use std::fmt;

/// Longest repository name accepted (distribution's limit).
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name {0:?} is invalid: components are lowercase letters and digits, separated by '.', '_', '__' or dashes, joined by '/'")]
    BadRepo(String),
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    RepoTooLong,
    #[error("tag {0:?} is invalid: up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'")]
    BadTag(String),
}

/// A repository name such as `team/sub/app`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<RepoName, NameError> {
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::RepoTooLong);
        }
        if s.is_empty() || !s.split('/').all(valid_component) {
            return Err(NameError::BadRepo(s.to_string()));
        }
        Ok(RepoName(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    let run = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && alnum(b[*i]) {
            *i += 1;
        }
        *i > start
    };
    if !run(&mut i) {
        return false;
    }
    while i < b.len() {
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if !run(&mut i) {
            return false;
        }
    }
    true
}

/// A tag such as `1.2.3` or `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagName(String);

impl TagName {
    pub fn parse(s: &str) -> Result<TagName, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if ok {
            Ok(TagName(s.to_string()))
        } else {
            Err(NameError::BadTag(s.to_string()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TagName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn repo(s: &str, ok: bool) {
        assert_eq!(RepoName::parse(s).is_ok(), ok, "{s:?}");
    }
    #[track_caller]
    fn tag(s: &str, ok: bool) {
        assert_eq!(TagName::parse(s).is_ok(), ok, "{s:?}");
    }

    #[test]
    fn repository_names() {
        repo("app", true);
        repo("team/sub/app", true);
        repo("a.b_c__d---e", true);
        repo("a/b/c/d/e/f/g", true);
        repo("Team/app", false);
        repo("app/", false);
        repo("/app", false);
        repo("a//b", false);
        repo("a___b", false);
        repo("-a", false);
        repo("a-", false);
        repo("a..b", false);
        repo("", false);
        repo(&"a".repeat(256), false);
    }

    #[test]
    fn tags() {
        tag("latest", true);
        tag("v1.2.3-rc_1", true);
        tag("_x", true);
        tag(".x", false);
        tag("-x", false);
        tag("a/b", false);
        tag(&"a".repeat(128), true);
        tag(&"a".repeat(129), false);
        tag("", false);
    }
}
