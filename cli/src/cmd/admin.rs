//! `reg admin --data DIR …`: users, organisations, visibility, access tokens and the audit log,
//! written straight into a registry's database — also while that registry runs (like htpasswd).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reg_registry::server::auth::policy::{Role, Scope};
use reg_registry::server::auth::{self, store, store::TokenRow};
use reg_registry::server::meta::Meta;
use reg_registry::server::quota;
use reg_registry::RepoName;

#[derive(Args)]
pub struct AdminArgs {
    /// Data directory of the registry (default: the configured data_dir).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Users: add, rm, passwd, ls.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Organisations own the namespace of their name; members get read, write or admin.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Repository settings.
    Repo {
        #[command(subcommand)]
        command: RepoCommand,
    },
    /// Access tokens (robot accounts): usable as the password in any login.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Storage quotas of namespaces (an organisation's or user's repositories) and repositories.
    Quota {
        #[command(subcommand)]
        command: QuotaCommand,
    },
    /// Webhook deliveries (`registry.notify`): waiting, failed, or failed ones sent again.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Print the audit log (logins, pushes, deletes, permission changes).
    Audit {
        /// How many of the newest events.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum QuotaCommand {
    /// Set the quota of a namespace (or, with --repository, of one repository): a size such
    /// as 500MB, 20GiB or 1000000 (bytes). Blobs are counted once however many repositories
    /// of it have them; a push that would pass it is refused (DENIED).
    Set {
        scope: String,
        size: String,
        #[arg(long)]
        repository: bool,
    },
    /// Remove a quota.
    Rm {
        scope: String,
        #[arg(long)]
        repository: bool,
    },
    /// Every quota with its usage now.
    Ls,
}

#[derive(Subcommand)]
enum NotifyCommand {
    /// Deliveries waiting (being retried, or not yet sent).
    Pending {
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Deliveries that used up their attempts, or were pushed out of a full queue.
    Failed {
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Queue failed deliveries again (of one endpoint, or all); the registry sends them next.
    Retry {
        #[arg(long)]
        endpoint: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from standard input, or asked for on a terminal.
    Add {
        name: String,
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (never on the command line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user (their tokens are revoked).
    Rm { name: String },
    /// Set a user's password from standard input (or asked for on a terminal).
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    Ls,
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Create an organisation.
    Add { name: String },
    /// Set a member's role (read, write, admin), or remove them with `none`.
    Member {
        org: String,
        user: String,
        #[arg(long)]
        role: String,
    },
}

#[derive(Subcommand)]
enum RepoCommand {
    /// Make a repository public (anonymous pull) or private.
    Visibility { name: String, visibility: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an access token and print it (it is shown only once).
    Create {
        #[arg(long)]
        user: String,
        /// `repository:NAME:ACTIONS`, NAME may end in `*`; repeat for more.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Lifetime such as 30d or 12h; default: no expiry.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Revoke a token by id.
    Revoke { id: String },
    /// List tokens (never their secrets).
    Ls,
}

fn actor() -> String {
    format!(
        "admin-cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "root".into())
    )
}

/// The new password: standard input with `--password-stdin`, else asked twice on a terminal
/// (without echo).
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let p = if from_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from standard input")?;
        let p = s.strip_suffix('\n').unwrap_or(&s);
        p.strip_suffix('\r').unwrap_or(p).to_string()
    } else if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password("Password: ").context("reading the password")?;
        let again =
            rpassword::prompt_password("Repeat the password: ").context("reading the password")?;
        if p != again {
            bail!("the passwords differ: nothing was changed");
        }
        p
    } else {
        bail!(
            "no terminal to ask the password on: give it on standard input with --password-stdin"
        );
    };
    if p.len() < 8 {
        bail!("password too short: use at least 8 characters");
    }
    Ok(p)
}

fn when(t: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t.max(0) as u64)).to_string()
}

fn quota_kind(scope: &str, repository: bool) -> anyhow::Result<quota::Kind> {
    if repository {
        RepoName::parse(scope).with_context(|| format!("{scope:?} is not a repository name"))?;
        return Ok(quota::Kind::Repository);
    }
    if scope.contains('/') {
        bail!("{scope:?} is a repository, not a namespace: add --repository");
    }
    valid_account_name("namespace", scope)?;
    Ok(quota::Kind::Namespace)
}

/// `500MB`, `2.5GB`, `20GiB`, `1000000`: bytes.
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a size (e.g. 500MB, 20GiB, 1000000)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => bail!("{other:?} is not a size unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)"),
    };
    let bytes = (n * mult).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        bail!("{s:?} is out of range");
    }
    Ok(bytes as u64)
}

fn valid_account_name(kind: &str, name: &str) -> anyhow::Result<()> {
    if name.contains('/') || RepoName::parse(name).is_err() {
        bail!("{kind} name {name:?} is invalid: it becomes a namespace, so use lowercase letters, digits and . _ - (no /)");
    }
    Ok(())
}

pub fn run(config: Option<&Path>, args: AdminArgs) -> anyhow::Result<()> {
    let cfg = reg_config::Config::load(config)?;
    let data = args.data.unwrap_or(cfg.data_dir);
    let db = reg_config::DataLayout::new(&data).registry_db();
    let meta = Meta::open(&cfg.registry.metadata.url, &db)
        .with_context(|| format!("opening the registry database under {}", data.display()))?;
    let who = actor();
    match args.command {
        AdminCommand::User { command } => match command {
            UserCommand::Add {
                name,
                admin,
                password_stdin,
            } => {
                valid_account_name("user", &name)?;
                let hash = auth::hash_password(&read_password(password_stdin)?)?;
                if !meta.add_user(&name, &hash, admin)? {
                    bail!("user {name} exists already (use `user passwd` to change the password)");
                }
                meta.audit(
                    &who,
                    "user.add",
                    &name,
                    if admin { "admin" } else { "" },
                    "local",
                )?;
                println!("added user {name}{}", if admin { " (admin)" } else { "" });
            }
            UserCommand::Rm { name } => {
                match meta.remove_user(&name)? {
                    store::Removal::Removed => {}
                    store::Removal::NoSuchUser => bail!("no user {name}"),
                    store::Removal::LastAdmin => bail!(
                        "{name} is the last admin: add another admin first \
                         (reg admin user add NAME --admin --password-stdin); \
                         the registry keeps requiring authentication either way"
                    ),
                }
                meta.audit(&who, "user.rm", &name, "", "local")?;
                println!("removed user {name}");
            }
            UserCommand::Passwd {
                name,
                password_stdin,
            } => {
                let hash = auth::hash_password(&read_password(password_stdin)?)?;
                if !meta.set_password(&name, &hash)? {
                    bail!("no user {name}");
                }
                meta.audit(&who, "user.passwd", &name, "", "local")?;
                println!("password of {name} changed");
            }
            UserCommand::Ls => {
                println!("{:<24} {:<6} CREATED", "NAME", "ADMIN");
                for u in meta.users()? {
                    println!(
                        "{:<24} {:<6} {}",
                        u.name,
                        if u.admin { "yes" } else { "no" },
                        when(u.created_at)
                    );
                }
            }
        },
        AdminCommand::Org { command } => match command {
            OrgCommand::Add { name } => {
                valid_account_name("organisation", &name)?;
                if !meta.add_org(&name)? {
                    bail!("organisation {name} exists already");
                }
                meta.audit(&who, "org.add", &name, "", "local")?;
                println!("added organisation {name}");
            }
            OrgCommand::Member { org, user, role } => {
                if !meta.org_exists(&org)? {
                    bail!("no organisation {org} (create it with `reg admin org add {org}`)");
                }
                let r = match role.as_str() {
                    "none" => None,
                    other => Some(Role::parse(other).with_context(|| {
                        format!("role {other:?}: expected read, write, admin or none")
                    })?),
                };
                if meta.password_hash(&user)?.is_none() {
                    bail!("no user {user}");
                }
                meta.set_member(&org, &user, r)?;
                meta.audit(&who, "org.member", &format!("{org}/{user}"), &role, "local")?;
                println!("{user} in {org}: {role}");
            }
        },
        AdminCommand::Repo { command } => match command {
            RepoCommand::Visibility { name, visibility } => {
                RepoName::parse(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
                let public = match visibility.as_str() {
                    "public" => true,
                    "private" => false,
                    other => bail!("visibility {other:?}: expected public or private"),
                };
                meta.set_visibility(&name, public)?;
                meta.audit(&who, "repo.visibility", &name, &visibility, "local")?;
                println!("{name} is {visibility}");
            }
        },
        AdminCommand::Token { command } => match command {
            TokenCommand::Create {
                user,
                scopes,
                expires,
            } => {
                if meta.password_hash(&user)?.is_none() {
                    bail!("no user {user}");
                }
                let mut parsed = Vec::new();
                for s in &scopes {
                    match Scope::parse(s) {
                        Some(sc @ Scope::Repository { .. }) => parsed.push(sc),
                        _ => bail!("scope {s:?}: expected repository:NAME:pull[,push][,delete]"),
                    }
                }
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let expires_at = match expires {
                    Some(e) => Some(
                        now + humantime::parse_duration(&e)
                            .with_context(|| format!("--expires {e:?}: use e.g. 30d, 12h"))?
                            .as_secs() as i64,
                    ),
                    None => None,
                };
                let (id, secret, hash) = auth::new_access_token();
                meta.create_token(&TokenRow {
                    id: id.clone(),
                    user: user.clone(),
                    secret_sha256: hash,
                    scopes: parsed,
                    expires_at,
                    revoked: false,
                    created_at: now,
                })?;
                meta.audit(
                    &who,
                    "token.create",
                    &id,
                    &format!("user={user} scopes={}", scopes.join(" ")),
                    "local",
                )?;
                eprintln!(
                    "token {id} for {user}; use it as the password of any login (shown only once):"
                );
                println!("{secret}");
            }
            TokenCommand::Revoke { id } => {
                if !meta.revoke_token(&id)? {
                    bail!("no token {id}");
                }
                meta.audit(&who, "token.revoke", &id, "", "local")?;
                println!("revoked token {id}");
            }
            TokenCommand::Ls => {
                println!(
                    "{:<14} {:<16} {:<8} {:<22} SCOPES",
                    "ID", "USER", "STATE", "EXPIRES"
                );
                for t in meta.tokens()? {
                    let scopes: Vec<String> = t.scopes.iter().map(ToString::to_string).collect();
                    println!(
                        "{:<14} {:<16} {:<8} {:<22} {}",
                        t.id,
                        t.user,
                        if t.revoked { "revoked" } else { "active" },
                        t.expires_at.map(when).unwrap_or_else(|| "never".into()),
                        scopes.join(" ")
                    );
                }
            }
        },
        AdminCommand::Quota { command } => match command {
            QuotaCommand::Set {
                scope,
                size,
                repository,
            } => {
                let kind = quota_kind(&scope, repository)?;
                let limit = parse_size(&size)?;
                meta.set_quota(&scope, kind, limit)?;
                println!(
                    "quota of {} {scope}: {} ({limit} bytes)",
                    kind.as_str(),
                    quota::human(limit)
                );
            }
            QuotaCommand::Rm { scope, repository } => {
                let kind = quota_kind(&scope, repository)?;
                if !meta.remove_quota(&scope, kind)? {
                    bail!(
                        "{} {scope} has no quota (see reg admin quota ls)",
                        kind.as_str()
                    );
                }
            }
            QuotaCommand::Ls => {
                println!(
                    "{:<30} {:<10} {:>16} {:>16} {:>5}",
                    "SCOPE", "KIND", "LIMIT", "USED", "USE%"
                );
                for q in meta.quotas()? {
                    let pct = q
                        .used
                        .saturating_mul(100)
                        .checked_div(q.limit)
                        .unwrap_or(100);
                    println!(
                        "{:<30} {:<10} {:>16} {:>16} {:>4}%",
                        q.scope,
                        q.kind.as_str(),
                        q.limit,
                        q.used,
                        pct
                    );
                }
            }
        },
        AdminCommand::Notify { command } => match command {
            NotifyCommand::Pending { limit } | NotifyCommand::Failed { limit } => {
                let failed = matches!(command, NotifyCommand::Failed { .. });
                println!(
                    "{:<21} {:<16} {:<40} {:>8}  LAST ERROR",
                    "QUEUED", "ENDPOINT", "EVENT", "ATTEMPTS"
                );
                for q in meta.notify_list(failed, limit)? {
                    println!(
                        "{:<21} {:<16} {:<40} {:>8}  {}",
                        when(q.created_at),
                        q.endpoint,
                        q.summary(),
                        q.attempts,
                        q.last_error
                    );
                }
            }
            NotifyCommand::Retry { endpoint } => {
                let n = meta.notify_requeue(endpoint.as_deref())?;
                println!("{n} deliveries queued again; the registry sends them next");
            }
        },
        AdminCommand::Audit { limit } => {
            println!(
                "{:<21} {:<20} {:<16} {:<30} {:<16} DETAIL",
                "WHEN", "WHO", "ACTION", "TARGET", "FROM"
            );
            for e in meta.audit_log(limit)? {
                println!(
                    "{:<21} {:<20} {:<16} {:<30} {:<16} {}",
                    when(e.at),
                    e.actor,
                    e.action,
                    e.target,
                    e.client,
                    e.detail
                );
            }
        }
    }
    Ok(())
}
