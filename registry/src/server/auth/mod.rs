//! Access control: who the caller is (Basic credentials, a bearer JWT, or nobody), what they may
//! do (see [`policy`]), the Docker token endpoint, and the audit trail.
//!
//! Auth is on as soon as one user exists (checked at most once a second, so `reg admin user add`
//! on a running registry takes effect at once). Without users the registry is open, which `serve`
//! only allows on loopback. Bearer tokens are HS256 JWTs signed with a key generated on first start
//! under `<data>/registry/auth/`; they live five minutes, so a revoked right is gone within that.
//! Passwords are argon2 hashes; access tokens (`reg_<id>_<secret>`) are stored as sha256 of the
//! secret. Nothing here ever logs a password or a token.

pub mod policy;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use self::policy::{Actions, Facts, Scope};
use super::error::ApiError;
use super::meta::{now, Meta, MetaError};
use crate::error::ErrorCode;

/// How long an issued bearer token is valid.
pub const TOKEN_TTL_SECS: i64 = 300;
/// How long a refresh token (docker's "identity token") is valid.
pub const REFRESH_TTL_SECS: i64 = 90 * 24 * 3600;
/// The `service` name in challenges and tokens.
pub const SERVICE: &str = "reg";
/// Prefix of access tokens, so they are recognisable when used as a password.
pub const TOKEN_PREFIX: &str = "reg_";

/// One grant in a JWT's `access` claim (the Docker token format).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user name; empty for an anonymous token.
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub access: Vec<Access>,
    /// The access token the JWT was issued for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
}

/// A caller whose credentials were checked.
#[derive(Debug, Clone)]
pub enum Principal {
    Anonymous,
    User(String),
    /// An access token: its user, and the scopes it is limited to.
    Token {
        id: String,
        user: String,
        scopes: Vec<Scope>,
    },
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User(u) | Principal::Token { user: u, .. } => u,
        }
    }
    fn user(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::User(u) | Principal::Token { user: u, .. } => Some(u),
        }
    }
    fn token_scopes(&self) -> Option<Vec<Scope>> {
        match self {
            Principal::Token { scopes, .. } => Some(scopes.clone()),
            _ => None,
        }
    }
}

/// How the caller presented itself on this request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is off: everything is allowed.
    Open,
    Anonymous,
    Basic(Principal),
    Bearer(Claims),
}

impl Caller {
    pub fn name(&self) -> String {
        match self {
            Caller::Open | Caller::Anonymous => "anonymous".into(),
            Caller::Basic(p) => p.name().to_string(),
            Caller::Bearer(c) if c.sub.is_empty() => "anonymous".into(),
            Caller::Bearer(c) => c.sub.clone(),
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone)]
pub enum Need {
    /// `GET /v2/`: any valid credentials (anonymous gets the challenge that makes docker log in).
    Authenticated,
    Catalog,
    Repo(String, Actions),
}

/// Auth errors that are not API errors of the registry itself.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("signing key {path}: {source}")]
    Key {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

pub struct Auth {
    meta: Arc<Meta>,
    key: Vec<u8>,
    tls: bool,
    realm: Option<String>,
    failure_delay: Duration,
    enabled: Mutex<(Option<Instant>, bool)>,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    /// Recently verified Basic credentials (sha256 of user and password) → principal, so that
    /// clients that send Basic on every request do not pay argon2 every time.
    verified: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

const VERIFIED_TTL: Duration = Duration::from_secs(30);

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

/// Random bytes from the OS, hex encoded.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // uuid's generator is the OS RNG (getrandom); concatenating v4 UUIDs gives 122 random bits each.
    let mut filled = 0;
    while filled < bytes {
        let u = uuid::Uuid::new_v4();
        let chunk = u.as_bytes();
        let n = chunk.len().min(bytes - filled);
        b[filled..filled + n].copy_from_slice(&chunk[..n]);
        filled += n;
    }
    hex::encode(b)
}

/// A new access token: (id, the full secret string to hand out, sha256 of the secret part).
pub fn new_access_token() -> (String, String, String) {
    let id = random_hex(6);
    let secret = random_hex(32);
    (
        id.clone(),
        format!("{TOKEN_PREFIX}{id}_{secret}"),
        sha256_hex(secret.as_bytes()),
    )
}

/// The token signing key, shared by every replica through the metadata database: created on
/// first start (a key file `jwt-hs256.key` in `dir` from before keys lived in the database is
/// taken over, so tokens already handed out stay valid).
pub fn load_or_create_key(meta: &Meta, dir: &Path) -> Result<Vec<u8>, AuthError> {
    let path = dir.join("jwt-hs256.key");
    let err = |source| AuthError::Key {
        path: path.clone(),
        source,
    };
    let candidate = match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => random_hex(32),
        Err(e) => return Err(err(e)),
    };
    let key = meta.secret_or_insert("jwt-hs256", &candidate)?;
    hex::decode(key.trim()).map_err(|e| err(std::io::Error::other(e)))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("blocking task failed: {e}")))
}

impl Auth {
    pub fn new(
        meta: Arc<Meta>,
        key: Vec<u8>,
        tls: bool,
        realm: Option<String>,
        failure_delay: Duration,
    ) -> Auth {
        Auth {
            meta,
            key,
            tls,
            realm,
            failure_delay,
            enabled: Mutex::new((None, false)),
            failures: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Whether auth is on (at least one user exists), re-read at most once a second.
    pub async fn enabled(&self) -> Result<bool, ApiError> {
        if let Ok(g) = self.enabled.lock() {
            if let (Some(at), on) = *g {
                if at.elapsed() < Duration::from_secs(1) {
                    return Ok(on);
                }
            }
        }
        let meta = self.meta.clone();
        let on = blocking(move || meta.user_count()).await?? > 0;
        if let Ok(mut g) = self.enabled.lock() {
            *g = (Some(Instant::now()), on);
        }
        Ok(on)
    }

    fn realm(&self, headers: &HeaderMap) -> String {
        if let Some(r) = &self.realm {
            return r.clone();
        }
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}/auth/token")
    }

    /// The `WWW-Authenticate` value asking for a token with `scope`.
    pub fn challenge(
        &self,
        headers: &HeaderMap,
        scope: Option<&str>,
        error: Option<&str>,
    ) -> String {
        let mut v = format!(
            "Bearer realm=\"{}\",service=\"{SERVICE}\"",
            self.realm(headers)
        );
        if let Some(s) = scope {
            v.push_str(&format!(",scope=\"{s}\""));
        }
        if let Some(e) = error {
            v.push_str(&format!(",error=\"{e}\""));
        }
        v
    }

    fn unauthorized(
        &self,
        headers: &HeaderMap,
        scope: Option<String>,
        error: Option<&str>,
        message: &str,
    ) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message).with_header(
            "www-authenticate",
            self.challenge(headers, scope.as_deref(), error),
        )
    }

    /// Identifies the caller from the Authorization header.
    pub async fn identify(&self, headers: &HeaderMap, client: &str) -> Result<Caller, ApiError> {
        if !self.enabled().await? {
            return Ok(Caller::Open);
        }
        let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
            return Ok(Caller::Anonymous);
        };
        if let Some(token) = value.strip_prefix("Bearer ").map(str::trim) {
            return match self.verify_jwt(token) {
                Some(c) => Ok(Caller::Bearer(c)),
                None => Err(self.unauthorized(
                    headers,
                    None,
                    Some("invalid_token"),
                    "bearer token is invalid or expired; get a new one from the token endpoint",
                )),
            };
        }
        if let Some((user, password)) = basic_credentials(value) {
            return match self.check_password(&user, &password, client).await? {
                Some(p) => Ok(Caller::Basic(p)),
                None => Err(self.unauthorized(headers, None, None, "invalid username or password")),
            };
        }
        Err(self.unauthorized(
            headers,
            None,
            None,
            "unsupported Authorization scheme; use Basic or Bearer",
        ))
    }

    /// Verifies a user's password or an access token used as a password. Failures are slowed
    /// down per user and per client address, and audited.
    pub async fn check_password(
        &self,
        user: &str,
        password: &str,
        client: &str,
    ) -> Result<Option<Principal>, ApiError> {
        let cache_key: [u8; 32] = {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(user.as_bytes());
            h.update([0]);
            h.update(password.as_bytes());
            h.finalize().into()
        };
        if let Ok(m) = self.verified.lock() {
            if let Some((p, at)) = m.get(&cache_key) {
                if at.elapsed() < VERIFIED_TTL {
                    return Ok(Some(p.clone()));
                }
            }
        }
        // Throttle by what is being guessed: the user's password, or one access token; and,
        // with a higher threshold, by where the guesses come from.
        let account = match password
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|r| r.split_once('_'))
        {
            Some((id, _)) => format!("token:{id}"),
            None => format!("user:{user}"),
        };
        let keys = [account, format!("addr:{client}")];
        let delay = self.penalty(&keys);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let (meta, u, pw) = (self.meta.clone(), user.to_string(), password.to_string());
        let principal = blocking(move || -> Result<Option<Principal>, MetaError> {
            if let Some(rest) = pw.strip_prefix(TOKEN_PREFIX) {
                let Some((id, secret)) = rest.split_once('_') else {
                    return Ok(None);
                };
                let Some(t) = meta.token(id)? else {
                    return Ok(None);
                };
                let live = !t.revoked && t.expires_at.is_none_or(|e| e > now());
                if live
                    && t.secret_sha256 == sha256_hex(secret.as_bytes())
                    && meta.password_hash(&t.user)?.is_some()
                {
                    return Ok(Some(Principal::Token {
                        id: t.id,
                        user: t.user,
                        scopes: t.scopes,
                    }));
                }
                return Ok(None);
            }
            // Verify against a dummy hash for unknown users so timing does not tell who exists.
            let stored = meta.password_hash(&u)?;
            let ok = verify_password(&pw, stored.as_deref().unwrap_or(DUMMY_HASH));
            Ok((ok && stored.is_some()).then_some(Principal::User(u)))
        })
        .await??;
        match &principal {
            Some(p) => {
                self.clear_failures(&keys);
                if let Ok(mut m) = self.verified.lock() {
                    if m.len() > 10_000 {
                        m.clear();
                    }
                    m.insert(cache_key, (p.clone(), Instant::now()));
                }
            }
            None => {
                self.record_failure(&keys);
                let (meta, u, c) = (self.meta.clone(), user.to_string(), client.to_string());
                let _ = blocking(move || meta.audit(&u, "login.failed", "registry", "", &c)).await;
            }
        }
        Ok(principal)
    }

    fn penalty(&self, keys: &[String]) -> Duration {
        let Ok(m) = self.failures.lock() else {
            return Duration::ZERO;
        };
        // Addresses get five times the allowance of accounts (many users share one NAT).
        let worst = keys
            .iter()
            .filter_map(|k| m.get(k).map(|v| (k, v)))
            .filter(|(_, (_, at))| at.elapsed() < Duration::from_secs(900))
            .map(|(k, (n, _))| if k.starts_with("addr:") { n / 5 } else { *n })
            .max()
            .unwrap_or(0);
        if worst < 3 {
            return Duration::ZERO;
        }
        (self.failure_delay * (1u32 << (worst - 3).min(6))).min(self.failure_delay * 50)
    }

    fn record_failure(&self, keys: &[String]) {
        if let Ok(mut m) = self.failures.lock() {
            if m.len() > 100_000 {
                m.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(900));
            }
            for k in keys {
                let e = m.entry(k.clone()).or_insert((0, Instant::now()));
                e.0 += 1;
                e.1 = Instant::now();
            }
        }
    }

    fn clear_failures(&self, keys: &[String]) {
        if let Ok(mut m) = self.failures.lock() {
            for k in keys {
                m.remove(k);
            }
        }
    }

    fn verify_jwt(&self, token: &str) -> Option<Claims> {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_audience(&[SERVICE]);
        v.set_issuer(&[SERVICE]);
        v.leeway = 5;
        jsonwebtoken::decode::<Claims>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(&self.key),
            &v,
        )
        .ok()
        .map(|d| d.claims)
    }

    fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(&self.key),
        )
        .map_err(ApiError::internal)
    }

    async fn facts(&self, principal: &Principal, repo: &str) -> Result<Facts, ApiError> {
        let (meta, user, r) = (
            self.meta.clone(),
            principal.user().map(str::to_string),
            repo.to_string(),
        );
        let mut facts = blocking(move || meta.facts(user.as_deref(), &r)).await??;
        facts.token_scopes = principal.token_scopes();
        Ok(facts)
    }

    /// The actions `principal` may perform on `repo`.
    pub async fn allowed(&self, principal: &Principal, repo: &str) -> Result<Actions, ApiError> {
        Ok(policy::allowed(&self.facts(principal, repo).await?, repo))
    }

    /// The principal behind a bearer token (its access token's scopes re-read, if it had one).
    async fn principal_of(&self, c: &Claims) -> Result<Principal, ApiError> {
        if c.sub.is_empty() {
            return Ok(Principal::Anonymous);
        }
        if let Some(id) = &c.tid {
            let (meta, id) = (self.meta.clone(), id.clone());
            if let Some(t) = blocking(move || meta.token(&id)).await?? {
                return Ok(Principal::Token {
                    id: t.id,
                    user: t.user,
                    scopes: t.scopes,
                });
            }
            return Ok(Principal::Anonymous);
        }
        Ok(Principal::User(c.sub.clone()))
    }

    /// Whether the identity behind `caller` may do `actions` on `repo` (listings and mount
    /// sources: what the user may see, whatever scopes their current token carries).
    pub async fn may(
        &self,
        caller: &Caller,
        repo: &str,
        actions: Actions,
    ) -> Result<bool, ApiError> {
        let principal = match caller {
            Caller::Open => return Ok(true),
            Caller::Anonymous => Principal::Anonymous,
            Caller::Basic(p) => p.clone(),
            Caller::Bearer(c) => self.principal_of(c).await?,
        };
        Ok(self.allowed(&principal, repo).await?.contains(actions))
    }

    /// Checks `need` for `caller`: `Ok` or the right 401/403.
    pub async fn authorize(
        &self,
        caller: &Caller,
        need: &Need,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        let scope = match need {
            Need::Authenticated => None,
            Need::Catalog => Some(Scope::Catalog.to_string()),
            Need::Repo(name, a) => Some(
                Scope::Repository {
                    name: name.clone(),
                    actions: *a,
                }
                .to_string(),
            ),
        };
        let denied = || {
            ApiError::new(
                ErrorCode::Denied,
                "requested access to the resource is denied",
            )
        };
        let login = |msg: &str| self.unauthorized(headers, scope.clone(), None, msg);
        match (caller, need) {
            (Caller::Open, _) => Ok(()),
            (Caller::Anonymous, Need::Repo(repo, a)) => {
                if self
                    .allowed(&Principal::Anonymous, repo)
                    .await?
                    .contains(*a)
                {
                    Ok(())
                } else {
                    Err(login("authentication required"))
                }
            }
            (Caller::Anonymous, _) => Err(login("authentication required")),
            (Caller::Basic(_), Need::Authenticated | Need::Catalog) => Ok(()),
            (Caller::Basic(p), Need::Repo(repo, a)) => {
                if self.allowed(p, repo).await?.contains(*a) {
                    Ok(())
                } else {
                    Err(denied())
                }
            }
            (Caller::Bearer(_), Need::Authenticated) => Ok(()),
            (Caller::Bearer(c), Need::Catalog) => {
                if c.access
                    .iter()
                    .any(|x| x.kind == "registry" && x.name == "catalog")
                {
                    Ok(())
                } else if c.sub.is_empty() {
                    Err(login("authentication required"))
                } else {
                    Err(self.unauthorized(
                        headers,
                        scope.clone(),
                        Some("insufficient_scope"),
                        "token lacks the catalog scope",
                    ))
                }
            }
            (Caller::Bearer(c), Need::Repo(repo, a)) => {
                let granted = c
                    .access
                    .iter()
                    .filter(|x| x.kind == "repository" && &x.name == repo)
                    .fold(Actions::NONE, |acc, x| {
                        acc.union(Actions::parse(&x.actions.join(",")))
                    });
                if granted.contains(*a) {
                    return Ok(());
                }
                let p = self.principal_of(c).await?;
                let would = self.allowed(&p, repo).await?;
                if matches!(p, Principal::Anonymous) {
                    // Public content stays pullable with an anonymous token that did not ask for it.
                    if would.contains(*a) {
                        return Ok(());
                    }
                    Err(login("authentication required"))
                } else if would.contains(*a) {
                    Err(self.unauthorized(
                        headers,
                        scope.clone(),
                        Some("insufficient_scope"),
                        "token does not cover this action; request a token with this scope",
                    ))
                } else {
                    Err(denied())
                }
            }
        }
    }

    /// Issues a bearer token for `principal` covering what it asked for and may have.
    pub async fn issue(
        &self,
        principal: &Principal,
        scopes: &[Scope],
    ) -> Result<(String, Vec<Access>), ApiError> {
        let mut access = Vec::new();
        for s in scopes {
            match s {
                Scope::Catalog => {
                    if !matches!(principal, Principal::Anonymous) {
                        access.push(Access {
                            kind: "registry".into(),
                            name: "catalog".into(),
                            actions: vec!["*".into()],
                        });
                    }
                }
                Scope::Repository { name, actions } => {
                    let ok = actions.intersect(self.allowed(principal, name).await?);
                    access.push(Access {
                        kind: "repository".into(),
                        name: name.clone(),
                        actions: ok.names().into_iter().map(str::to_string).collect(),
                    });
                }
            }
        }
        let t = now();
        let claims = Claims {
            iss: SERVICE.into(),
            sub: principal.user().unwrap_or("").to_string(),
            aud: SERVICE.into(),
            exp: t + TOKEN_TTL_SECS,
            nbf: t - 1,
            iat: t,
            jti: random_hex(8),
            access: access.clone(),
            tid: match principal {
                Principal::Token { id, .. } => Some(id.clone()),
                _ => None,
            },
        };
        Ok((self.sign(&claims)?, access))
    }

    /// A new refresh token for `user` (docker keeps it as its identity token).
    pub async fn new_refresh_token(&self, user: &str) -> Result<String, ApiError> {
        let secret = random_hex(32);
        let (meta, u, h) = (
            self.meta.clone(),
            user.to_string(),
            sha256_hex(secret.as_bytes()),
        );
        blocking(move || meta.add_refresh_token(&h, &u, now() + REFRESH_TTL_SECS)).await??;
        Ok(secret)
    }

    pub async fn refresh_token_user(&self, secret: &str) -> Result<Option<String>, ApiError> {
        let (meta, h) = (self.meta.clone(), sha256_hex(secret.as_bytes()));
        Ok(blocking(move || meta.refresh_token_user(&h)).await??)
    }

    /// Records an audit event off the request path's critical section (errors are logged).
    pub async fn audit(&self, actor: &str, action: &str, target: &str, detail: &str, client: &str) {
        let (meta, a, b, c, d, e) = (
            self.meta.clone(),
            actor.to_string(),
            action.to_string(),
            target.to_string(),
            detail.to_string(),
            client.to_string(),
        );
        match blocking(move || meta.audit(&a, &b, &c, &d, &e)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "audit write failed"),
            Err(_) => tracing::warn!("audit write failed"),
        }
    }
}

/// A valid argon2 hash of a random string, verified against when a user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Xr8cy8nUKUBMU3Ib6WxEw0ptLV6Cq6qKhsTUfkW/ek0";

/// Decodes `Basic base64(user:password)`.
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    let b64 = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// The client address for audit and throttling.
pub fn client_addr(ext: &axum::http::Extensions) -> String {
    ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}
