//! Users, organisations, visibility, access tokens, refresh tokens and the audit log, in the
//! registry's metadata database. Used by the server and by `reg admin` (another process, on
//! the same database, while the registry runs).

use crate::server::db::{args, exists, now, value, DbError, Row};

use super::policy::{Facts, Role, Scope};
use crate::server::meta::{Meta, MetaError};

#[derive(Debug, Clone)]
pub struct UserRow {
    pub name: String,
    pub admin: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub user: String,
    pub secret_sha256: String,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub created_at: i64,
}

/// An organisation and its members with their roles (`user`, `role`).
pub type OrgMembers = (String, Vec<(String, String)>);

#[derive(Debug, Clone)]
pub struct AuditRow {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub client: String,
}

const TOKEN_COLUMNS: &str =
    "SELECT id, \"user\", secret_sha256, scopes, expires_at, revoked, created_at FROM access_tokens";

/// What [`Meta::set_admin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminChange {
    Changed,
    NoSuchUser,
    /// Refused: the registry would be left without an admin.
    LastAdmin,
}

/// What `reg admin user rm` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    NoSuchUser,
    /// Refused: the registry would be left without an admin.
    LastAdmin,
}

/// The secret row that records that this registry has had users: auth stays on for good.
const AUTH_REQUIRED: &str = "auth.required";

impl Meta {
    pub fn user_count(&self) -> Result<i64, MetaError> {
        self.read(|c| value(c, "SELECT count(*) FROM users", &[]))
            .map(|n| n.unwrap_or(0))
    }

    /// How many users exist, and whether the registry ever had one (recorded with the first
    /// user, never cleared, so removing every user never opens the registry): one read.
    pub fn auth_state(&self) -> Result<(i64, bool), MetaError> {
        self.read(|c| {
            let row = c.query_opt(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM secrets WHERE name = ?1)",
                args![AUTH_REQUIRED],
            )?;
            Ok(match row {
                Some(r) => {
                    let (users, recorded): (i64, i64) = (r.get(0)?, r.get(1)?);
                    (users, users > 0 || recorded > 0)
                }
                None => (0, false),
            })
        })
    }

    /// The credentials generation of `user` (`None`: no such user). Every JWT and cached
    /// login carries the generation it was issued at; a different one is revoked.
    pub fn user_generation(&self, user: &str) -> Result<Option<i64>, MetaError> {
        self.read(|c| {
            value(
                c,
                "SELECT generation FROM users WHERE name = ?1",
                args![user],
            )
        })
    }

    /// The stored password hash of `name` with its credentials generation.
    pub fn password_and_generation(&self, name: &str) -> Result<Option<(String, i64)>, MetaError> {
        self.read(|c| {
            let rows = c.query(
                "SELECT password_hash, generation FROM users WHERE name = ?1",
                args![name],
            )?;
            rows.first().map(|r| Ok((r.get(0)?, r.get(1)?))).transpose()
        })
    }

    /// Adds a user; `false` if the name is taken.
    pub fn add_user(
        &self,
        name: &str,
        password_hash: &str,
        admin: bool,
    ) -> Result<bool, MetaError> {
        // A new user's credentials generation starts at the clock in milliseconds, not 0: a
        // name removed and added again must not inherit the removed user's tokens, cached
        // logins or browser sessions (they carry the generation they were issued at).
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2));
        let n = self.write(|c| {
            let n = c.execute(
                "INSERT INTO users(name, password_hash, admin, created_at, generation) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT DO NOTHING",
                args![name, password_hash, admin, now(), generation],
            )?;
            c.execute(
                "INSERT INTO secrets(name, value, created_at) VALUES (?1, '1', ?2) ON CONFLICT(name) DO NOTHING",
                args![AUTH_REQUIRED, now()],
            )?;
            Ok::<_, MetaError>(n)
        })?;
        Ok(n > 0)
    }

    /// Changes a password: the user's generation moves on (every JWT and cached login issued
    /// before stops working at once) and their refresh tokens go, as GitHub and GitLab do.
    pub fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, MetaError> {
        let n = self.write(|c| {
            let n = c.execute(
                "UPDATE users SET password_hash = ?2, generation = generation + 1 WHERE name = ?1",
                args![name, password_hash],
            )?;
            c.execute(
                "DELETE FROM refresh_tokens WHERE \"user\" = ?1",
                args![name],
            )?;
            Ok::<_, MetaError>(n)
        })?;
        Ok(n > 0)
    }

    /// Grants or takes administrator rights; never from the last admin.
    pub fn set_admin(&self, name: &str, admin: bool) -> Result<AdminChange, MetaError> {
        self.write(|c| {
            let was: Option<bool> =
                value(c, "SELECT admin FROM users WHERE name = ?1", args![name])?;
            match was {
                None => return Ok(AdminChange::NoSuchUser),
                Some(true) if !admin => {
                    let admins: i64 =
                        value(c, "SELECT count(*) FROM users WHERE admin <> 0", &[])?.unwrap_or(0);
                    if admins <= 1 {
                        return Ok(AdminChange::LastAdmin);
                    }
                }
                Some(_) => {}
            }
            c.execute(
                "UPDATE users SET admin = ?2 WHERE name = ?1",
                args![name, admin],
            )?;
            Ok(AdminChange::Changed)
        })
    }

    /// Removes a user with their memberships, access tokens and refresh tokens; never the
    /// last admin.
    pub fn remove_user(&self, name: &str) -> Result<Removal, MetaError> {
        self.write(|c| {
            let admin: Option<bool> =
                value(c, "SELECT admin FROM users WHERE name = ?1", args![name])?;
            match admin {
                None => return Ok(Removal::NoSuchUser),
                Some(true) => {
                    let admins: i64 =
                        value(c, "SELECT count(*) FROM users WHERE admin <> 0", &[])?.unwrap_or(0);
                    if admins <= 1 {
                        return Ok(Removal::LastAdmin);
                    }
                }
                Some(false) => {}
            }
            c.execute("DELETE FROM users WHERE name = ?1", args![name])?;
            c.execute("DELETE FROM org_members WHERE \"user\" = ?1", args![name])?;
            c.execute("DELETE FROM ui_sessions WHERE \"user\" = ?1", args![name])?;
            c.execute(
                "UPDATE access_tokens SET revoked = 1 WHERE \"user\" = ?1",
                args![name],
            )?;
            c.execute(
                "DELETE FROM refresh_tokens WHERE \"user\" = ?1",
                args![name],
            )?;
            Ok(Removal::Removed)
        })
    }

    /// Records a web interface session (`id`: the cookie's sha256) of `user` at their current
    /// credentials generation; drops expired sessions, and the user's oldest past `per_user`.
    /// False when there is no such user.
    pub fn create_ui_session(
        &self,
        id: &str,
        user: &str,
        csrf: &str,
        ttl_secs: i64,
        per_user: i64,
    ) -> Result<bool, MetaError> {
        let t = now();
        self.write(|c| {
            c.execute(
                "DELETE FROM ui_sessions WHERE created_at <= ?1",
                args![t - ttl_secs],
            )?;
            let n = c.execute(
                "INSERT INTO ui_sessions(id, \"user\", csrf, generation, created_at) \
                 SELECT ?1, name, ?3, generation, ?4 FROM users WHERE name = ?2",
                args![id, user, csrf, t],
            )?;
            c.execute(
                "DELETE FROM ui_sessions WHERE \"user\" = ?1 AND id <> ?3 AND id NOT IN \
                 (SELECT id FROM ui_sessions WHERE \"user\" = ?1 ORDER BY created_at DESC, id LIMIT ?2)",
                args![user, per_user, id],
            )?;
            Ok(n > 0)
        })
    }

    /// The user and CSRF token of a live session: younger than `ttl_secs`, its user still
    /// there with the credentials it logged in with.
    pub fn ui_session(
        &self,
        id: &str,
        ttl_secs: i64,
    ) -> Result<Option<(String, String)>, MetaError> {
        self.read(|c| {
            c.query_opt(
                "SELECT s.\"user\", s.csrf FROM ui_sessions s JOIN users u ON u.name = s.\"user\" \
                 AND u.generation = s.generation WHERE s.id = ?1 AND s.created_at > ?2",
                args![id, now() - ttl_secs],
            )?
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .transpose()
        })
    }

    pub fn remove_ui_session(&self, id: &str) -> Result<(), MetaError> {
        self.write(|c| {
            c.execute("DELETE FROM ui_sessions WHERE id = ?1", args![id])?;
            Ok(())
        })
    }

    pub fn users(&self) -> Result<Vec<UserRow>, MetaError> {
        self.read(|c| {
            c.query(
                "SELECT name, admin, created_at FROM users ORDER BY name",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(UserRow {
                    name: r.get(0)?,
                    admin: r.get(1)?,
                    created_at: r.get(2)?,
                })
            })
            .collect()
        })
    }

    /// The stored password hash of `name`.
    pub fn password_hash(&self, name: &str) -> Result<Option<String>, MetaError> {
        self.read(|c| {
            value(
                c,
                "SELECT password_hash FROM users WHERE name = ?1",
                args![name],
            )
        })
    }

    /// Adds an organisation; `false` if it exists.
    pub fn add_org(&self, name: &str) -> Result<bool, MetaError> {
        let n = self.write(|c| {
            c.execute(
                "INSERT INTO orgs(name, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                args![name, now()],
            )
        })?;
        Ok(n > 0)
    }

    /// Every organisation with its members and their roles, by name.
    pub fn orgs_with_members(&self) -> Result<Vec<OrgMembers>, MetaError> {
        self.read(|c| {
            let mut out: Vec<OrgMembers> = Vec::new();
            for r in c.query(
                "SELECT o.name, m.\"user\", m.role FROM orgs o LEFT JOIN org_members m ON m.org = o.name \
                 ORDER BY o.name, m.\"user\"",
                &[],
            )? {
                let (org, user, role): (String, Option<String>, Option<String>) =
                    (r.get(0)?, r.get(1)?, r.get(2)?);
                if out.last().is_none_or(|(o, _)| *o != org) {
                    out.push((org, Vec::new()));
                }
                if let (Some(u), Some(role), Some(last)) = (user, role, out.last_mut()) {
                    last.1.push((u, role));
                }
            }
            Ok(out)
        })
    }

    /// The organisations `user` is an admin of.
    pub fn orgs_administered_by(&self, user: &str) -> Result<Vec<String>, MetaError> {
        self.read(|c| {
            c.query(
                "SELECT org FROM org_members WHERE \"user\" = ?1 AND role = 'admin' ORDER BY org",
                args![user],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
        })
    }

    /// Whether `name` is an administrator; `None` when there is no such user.
    pub fn user_admin(&self, name: &str) -> Result<Option<bool>, MetaError> {
        self.read(|c| value(c, "SELECT admin FROM users WHERE name = ?1", args![name]))
    }

    pub fn org_exists(&self, name: &str) -> Result<bool, MetaError> {
        self.read(|c| exists(c, "SELECT 1 FROM orgs WHERE name = ?1", args![name]))
    }

    /// Sets (or with `None` removes) a member's role.
    pub fn set_member(&self, org: &str, user: &str, role: Option<Role>) -> Result<(), MetaError> {
        self.write(|c| {
            match role {
                Some(role) => c.execute(
                    "INSERT INTO org_members(org, \"user\", role) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(org, \"user\") DO UPDATE SET role = excluded.role",
                    args![org, user, role.as_str()],
                )?,
                None => c.execute(
                    "DELETE FROM org_members WHERE org = ?1 AND \"user\" = ?2",
                    args![org, user],
                )?,
            };
            Ok(())
        })
    }

    pub fn set_visibility(&self, repo: &str, public: bool) -> Result<(), MetaError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO repo_visibility(name, public) VALUES (?1, ?2) \
                 ON CONFLICT(name) DO UPDATE SET public = excluded.public",
                args![repo, public],
            )?;
            Ok(())
        })
    }

    /// Everything the policy needs to decide about `user` (or anonymous) on `repo`.
    pub fn facts(&self, user: Option<&str>, repo: &str) -> Result<Facts, MetaError> {
        let ns = super::policy::namespace(repo).to_string();
        self.read(|c| {
            let public: bool = value(
                c,
                "SELECT public FROM repo_visibility WHERE name = ?1",
                args![repo],
            )?
            .unwrap_or(false);
            let mut facts = Facts {
                public,
                ..Facts::default()
            };
            if let Some(user) = user {
                let admin: Option<bool> =
                    value(c, "SELECT admin FROM users WHERE name = ?1", args![user])?;
                let Some(admin) = admin else {
                    return Ok(facts); // a deleted user is nobody
                };
                facts.user = Some(user.to_string());
                facts.admin = admin;
                let role: Option<String> = value(
                    c,
                    "SELECT m.role FROM org_members m JOIN orgs o ON o.name = m.org \
                     WHERE m.org = ?1 AND m.\"user\" = ?2",
                    args![&ns, user],
                )?;
                facts.role = role.as_deref().and_then(Role::parse);
            }
            Ok(facts)
        })
    }

    pub fn create_token(&self, t: &TokenRow) -> Result<(), MetaError> {
        let scopes = t
            .scopes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        self.write(|c| {
            c.execute(
                "INSERT INTO access_tokens(id, \"user\", secret_sha256, scopes, expires_at, revoked, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
                args![&t.id, &t.user, &t.secret_sha256, scopes, t.expires_at, t.created_at],
            )?;
            Ok(())
        })
    }

    fn token_from_row(r: &Row) -> Result<TokenRow, DbError> {
        let scopes: String = r.get(3)?;
        Ok(TokenRow {
            id: r.get(0)?,
            user: r.get(1)?,
            secret_sha256: r.get(2)?,
            scopes: Scope::parse_list(&scopes),
            expires_at: r.get(4)?,
            revoked: r.get(5)?,
            created_at: r.get(6)?,
        })
    }

    pub fn token(&self, id: &str) -> Result<Option<TokenRow>, MetaError> {
        self.read(|c| {
            c.query_opt(&format!("{TOKEN_COLUMNS} WHERE id = ?1"), args![id])?
                .as_ref()
                .map(Self::token_from_row)
                .transpose()
        })
    }

    pub fn tokens(&self) -> Result<Vec<TokenRow>, MetaError> {
        self.read(|c| {
            c.query(&format!("{TOKEN_COLUMNS} ORDER BY created_at"), &[])?
                .iter()
                .map(Self::token_from_row)
                .collect()
        })
    }

    pub fn revoke_token(&self, id: &str) -> Result<bool, MetaError> {
        let n = self.write(|c| {
            c.execute(
                "UPDATE access_tokens SET revoked = 1 WHERE id = ?1",
                args![id],
            )
        })?;
        Ok(n > 0)
    }

    pub fn add_refresh_token(
        &self,
        secret_sha256: &str,
        user: &str,
        expires_at: i64,
    ) -> Result<(), MetaError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO refresh_tokens(secret_sha256, \"user\", expires_at, created_at) VALUES (?1, ?2, ?3, ?4)",
                args![secret_sha256, user, expires_at, now()],
            )?;
            Ok(())
        })
    }

    /// The user a live refresh token belongs to (who must still exist).
    pub fn refresh_token_user(&self, secret_sha256: &str) -> Result<Option<String>, MetaError> {
        self.read(|c| {
            value(
                c,
                "SELECT t.\"user\" FROM refresh_tokens t JOIN users u ON u.name = t.\"user\" \
                 WHERE t.secret_sha256 = ?1 AND t.expires_at > ?2",
                args![secret_sha256, now()],
            )
        })
    }

    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
        client: &str,
    ) -> Result<(), MetaError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO audit(at, actor, action, target, detail, client) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                args![now(), actor, action, target, detail, client],
            )?;
            Ok(())
        })
    }

    /// The newest `limit` audit events, oldest first.
    pub fn audit_log(&self, limit: u32) -> Result<Vec<AuditRow>, MetaError> {
        self.read(|c| {
            c.query(
                "SELECT at, actor, action, target, detail, client FROM \
                 (SELECT * FROM audit ORDER BY id DESC LIMIT ?1) AS newest ORDER BY id",
                args![limit],
            )?
            .iter()
            .map(|r| {
                Ok(AuditRow {
                    at: r.get(0)?,
                    actor: r.get(1)?,
                    action: r.get(2)?,
                    target: r.get(3)?,
                    detail: r.get(4)?,
                    client: r.get(5)?,
                })
            })
            .collect()
        })
    }

    /// The secret `name`; stores `candidate` first when there is none (the first replica to
    /// start wins, and every other one reads its value).
    pub fn secret_or_insert(&self, name: &str, candidate: &str) -> Result<String, MetaError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO secrets(name, value, created_at) VALUES (?1, ?2, ?3) ON CONFLICT(name) DO NOTHING",
                args![name, candidate, now()],
            )?;
            Ok(value(c, "SELECT value FROM secrets WHERE name = ?1", args![name])?
                .unwrap_or_else(|| candidate.to_string()))
        })
    }
}
