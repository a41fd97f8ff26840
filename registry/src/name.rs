//! Repository names and tags, validated against the distribution spec's grammar.

use std::fmt;

/// Longest repository name accepted, and longest `registry/name` when a reference names its
/// registry (distribution's `NameTotalLengthMax`).
pub const MAX_NAME_LEN: usize = 255;

/// Longest tag accepted (distribution's grammar: `[\w][\w.-]{0,127}`).
pub const MAX_TAG_LEN: usize = 128;

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
            && b.len() <= MAX_TAG_LEN
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
                if !valid_host(first) {
                    return Err(bad(format!(
                        "registry {first:?} is not a host name or address with an optional port"
                    )));
                }
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
        // As distribution checks a normalised name: with its registry, written or the default
        // (so what `to_string` shows parses again).
        if registry.len() + 1 + name.len() > MAX_NAME_LEN {
            return Err(bad(format!(
                "the name with its registry is longer than {MAX_NAME_LEN} characters"
            )));
        }
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

/// distribution's `host[:port]`: a domain name (or IPv4 address) of alphanumeric components with
/// inner dashes joined by dots, or an IPv6 address in brackets; the port is digits.
fn valid_host(h: &str) -> bool {
    let component = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
    };
    let (host_ok, port) = match h.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, port)) => (
                !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
                port,
            ),
            None => return false,
        },
        None => {
            let (host, port) = h.split_at(h.find(':').unwrap_or(h.len()));
            (host.split('.').all(component), port)
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
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
        check("[::1]:5000/app", "[::1]:5000/app:latest");
        check("[fe80::1]/app", "[fe80::1]/app:latest");
        check(
            "Registry-1.Example.com:443/app",
            "Registry-1.Example.com:443/app:latest",
        );
        for bad in [
            "-reg.io/app",
            "reg-.io/app",
            "reg..io/app",
            "reg.io:/app",
            "reg.io:x/app",
            "reg.io:5000:1/app",
            "re g.io/app",
            "reg_x.io/app",
            "[]/app",
            "[::1/app",
            "[::1]x/app",
            "[::g]/app",
        ] {
            check(bad, "ERR");
        }
    }

    #[test]
    fn names_are_bounded_with_their_registry() {
        let within = format!("r.io/{}", "a".repeat(MAX_NAME_LEN - 5));
        check(&within, &format!("{within}:latest"));
        check(&format!("r.io/{}", "a".repeat(MAX_NAME_LEN - 4)), "ERR");
        // Without a registry written, the default one counts.
        let alone = "a".repeat(MAX_NAME_LEN - "127.0.0.1:5000/".len());
        check(&alone, &format!("127.0.0.1:5000/{alone}:latest"));
        check(&format!("{alone}a"), "ERR");
        let tag = "t".repeat(MAX_TAG_LEN);
        check(&format!("app:{tag}"), &format!("127.0.0.1:5000/app:{tag}"));
        check(&format!("app:{}", "t".repeat(MAX_TAG_LEN + 1)), "ERR");
    }
}
