//! Who may do what: actions, scopes, and the pure decision over facts read from the database.
//!
//! The model: an admin user may do everything; a user owns the namespace named like them; an
//! organisation owns the namespace of its name and gives members read (pull), write (pull,
//! push) or admin (pull, push, delete); a public repository is pullable by anyone, anonymous
//! included; everything else is private. An access token never exceeds its user's rights and
//! is further limited to its own scopes.

use std::fmt;

/// A set of repository actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const PUSH: Actions = Actions(2);
    pub const DELETE: Actions = Actions(4);
    pub const ALL: Actions = Actions(7);

    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }
    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses `pull,push`, `*`, `delete` (unknown words are ignored, as distribution does).
    pub fn parse(s: &str) -> Actions {
        s.split(',').fold(Actions::NONE, |acc, a| {
            acc.union(match a.trim() {
                "pull" => Actions::PULL,
                "push" => Actions::PUSH,
                "delete" => Actions::DELETE,
                "*" => Actions::ALL,
                _ => Actions::NONE,
            })
        })
    }

    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.contains(Actions::PULL) {
            v.push("pull");
        }
        if self.contains(Actions::PUSH) {
            v.push("push");
        }
        if self.contains(Actions::DELETE) {
            v.push("delete");
        }
        v
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// A member's role in an organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
    fn actions(self) -> Actions {
        match self {
            Role::Read => Actions::PULL,
            Role::Write => Actions::PULL.union(Actions::PUSH),
            Role::Admin => Actions::ALL,
        }
    }
}

/// A requested or granted scope: `repository:<name>:<actions>` or `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Repository { name: String, actions: Actions },
    Catalog,
}

impl Scope {
    /// Parses one scope; several may be given space-separated (see [`Scope::parse_list`]).
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        match kind {
            "repository" if !name.is_empty() => Some(Scope::Repository {
                name: name.to_string(),
                actions: Actions::parse(actions),
            }),
            "registry" if name == "catalog" => Some(Scope::Catalog),
            _ => None,
        }
    }

    pub fn parse_list(s: &str) -> Vec<Scope> {
        s.split_whitespace().filter_map(Scope::parse).collect()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repository { name, actions } => write!(f, "repository:{name}:{actions}"),
            Scope::Catalog => f.write_str("registry:catalog:*"),
        }
    }
}

/// Whether a token scope name (exact, or a `prefix/*` pattern) covers `repo`.
pub fn name_matches(pattern: &str, repo: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => repo.starts_with(prefix),
        None => pattern == repo,
    }
}

/// What the database says about a caller and one repository.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub public: bool,
    pub user: Option<String>,
    pub admin: bool,
    /// The caller's role in the organisation owning the repository's namespace.
    pub role: Option<Role>,
    /// For an access token: its scopes (the token can never do more).
    pub token_scopes: Option<Vec<Scope>>,
}

/// The namespace of a repository: its first path component.
pub fn namespace(repo: &str) -> &str {
    repo.split('/').next().unwrap_or(repo)
}

/// The actions `facts` allow on `repo`.
pub fn allowed(facts: &Facts, repo: &str) -> Actions {
    let mut a = if facts.public {
        Actions::PULL
    } else {
        Actions::NONE
    };
    if let Some(user) = &facts.user {
        if facts.admin || namespace(repo) == user {
            a = Actions::ALL;
        } else if let Some(role) = facts.role {
            a = a.union(role.actions());
        }
    }
    if let Some(scopes) = &facts.token_scopes {
        let granted = scopes.iter().fold(Actions::NONE, |acc, s| match s {
            Scope::Repository { name, actions } if name_matches(name, repo) => acc.union(*actions),
            _ => acc,
        });
        // Public pull stays open to a token as to anyone.
        let public = if facts.public {
            Actions::PULL
        } else {
            Actions::NONE
        };
        a = a.intersect(granted).union(public);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(user: Option<&str>, admin: bool, role: Option<Role>, public: bool) -> Facts {
        Facts {
            public,
            user: user.map(str::to_string),
            admin,
            role,
            token_scopes: None,
        }
    }

    #[track_caller]
    fn check(f: &Facts, repo: &str, want: &str) {
        assert_eq!(allowed(f, repo).to_string(), want, "{f:?} on {repo}");
    }

    #[test]
    fn decision_table() {
        check(&facts(None, false, None, false), "team/app", "");
        check(&facts(None, false, None, true), "team/app", "pull");
        check(&facts(Some("bob"), false, None, false), "team/app", "");
        check(
            &facts(Some("bob"), false, None, false),
            "bob/app",
            "pull,push,delete",
        );
        check(
            &facts(Some("bob"), false, Some(Role::Read), false),
            "team/app",
            "pull",
        );
        check(
            &facts(Some("bob"), false, Some(Role::Write), false),
            "team/app",
            "pull,push",
        );
        check(
            &facts(Some("bob"), false, Some(Role::Admin), false),
            "team/app",
            "pull,push,delete",
        );
        check(
            &facts(Some("root"), true, None, false),
            "any/thing",
            "pull,push,delete",
        );
    }

    #[test]
    fn tokens_never_exceed_their_scopes_or_their_user() {
        let mut f = facts(Some("bob"), false, Some(Role::Write), false);
        f.token_scopes = Some(Scope::parse_list("repository:team/app:pull"));
        check(&f, "team/app", "pull");
        check(&f, "team/other", "");
        f.token_scopes = Some(Scope::parse_list("repository:team/*:pull,push,delete"));
        check(&f, "team/other", "pull,push");
    }

    #[test]
    fn scope_parsing() {
        assert_eq!(
            Scope::parse("repository:a/b:pull,push"),
            Some(Scope::Repository {
                name: "a/b".into(),
                actions: Actions::PULL.union(Actions::PUSH)
            })
        );
        assert_eq!(Scope::parse("registry:catalog:*"), Some(Scope::Catalog));
        assert_eq!(Scope::parse("nonsense"), None);
    }
}
