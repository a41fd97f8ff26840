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

/// An image reference such as `127.0.0.1:5000/team/app:1.2` or `team/app@sha256:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` of the registry.
    pub registry: String,
    pub repo: RepoName,
    /// A tag, or `None` when only a digest is given.
    pub tag: Option<TagName>,
    pub digest: Option<crate::digest::Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("image reference {0:?} is invalid: {1}")]
    Invalid(String, String),
}

impl Reference {
    /// Parses a reference; a first component with a `.` or `:` or equal to `localhost` is the
    /// registry, otherwise `default_registry` is used. No tag and no digest means `latest`.
    pub fn parse(s: &str, default_registry: &str) -> Result<Reference, ReferenceError> {
        let bad = |why: String| ReferenceError::Invalid(s.to_string(), why);
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(crate::digest::Digest::parse(d).map_err(|e| bad(e.to_string()))?),
            ),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, after))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), after)
            }
            _ => (default_registry.to_string(), rest),
        };
        // A ':' after the last '/' separates the tag.
        let (name, tag) = match path.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => {
                (n, Some(TagName::parse(t).map_err(|e| bad(e.to_string()))?))
            }
            _ => (path, None),
        };
        let repo = RepoName::parse(name).map_err(|e| bad(e.to_string()))?;
        let tag = match (&tag, &digest) {
            (None, None) => Some(TagName("latest".into())),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repo,
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".into(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod reference_tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, want: &str) {
        let got = Reference::parse(input, "127.0.0.1:5000").map(|r| r.to_string());
        assert_eq!(got.as_deref().unwrap_or("ERR"), want, "{input}");
    }

    #[test]
    fn references() {
        check("app", "127.0.0.1:5000/app:latest");
        check("team/app:1.2", "127.0.0.1:5000/team/app:1.2");
        check("localhost:5000/team/app", "localhost:5000/team/app:latest");
        check("registry.example.com/a/b:c", "registry.example.com/a/b:c");
        let d = format!("sha256:{}", "a".repeat(64));
        check(
            &format!("127.0.0.1:5000/app@{d}"),
            &format!("127.0.0.1:5000/app@{d}"),
        );
        check(
            &format!("app:v1@{d}"),
            &format!("127.0.0.1:5000/app:v1@{d}"),
        );
        check("Bad/Name", "ERR");
        check("app:bad tag", "ERR");
    }
}
