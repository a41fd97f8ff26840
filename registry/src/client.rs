//! The registry client used by the cli, the node and the builder: credentials in docker's
//! `config.json` format and the login handshake (Basic or Docker's token flow).
//! Only this module talks to a registry over the network; it never links the server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach registry {server}: {source}")]
    Connect {
        server: String,
        source: reqwest::Error,
    },
    #[error("registry {server} refused the credentials (401): check the user name and password, or the token's expiry")]
    BadCredentials { server: String },
    #[error("registry {server} answered {status} to {what}")]
    Status {
        server: String,
        status: u16,
        what: String,
    },
    #[error("credentials file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credentials file {path} is not valid JSON: {message}")]
    Json { path: PathBuf, message: String },
}

/// Docker's `config.json`: only `auths` is ours to change; other keys are kept as they were.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DockerConfig {
    #[serde(default)]
    pub auths: BTreeMap<String, AuthEntry>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuthEntry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identitytoken: String,
}

/// reg's own credentials file: `$REG_CONFIG_DIR/config.json`, else `$XDG_CONFIG_HOME/reg/…`,
/// else `~/.config/reg/config.json`.
pub fn credentials_path() -> PathBuf {
    if let Some(d) = std::env::var_os("REG_CONFIG_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("config.json");
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("reg/config.json");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".config/reg/config.json")
}

/// Docker's own file, read (never written) as a fallback.
pub fn docker_config_path() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("config.json");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".docker/config.json")
}

pub fn read_config(path: &Path) -> Result<DockerConfig, ClientError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| ClientError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerConfig::default()),
        Err(source) => Err(ClientError::File {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `cfg` to `path` atomically with mode 0600.
pub fn write_config(path: &Path, cfg: &DockerConfig) -> Result<(), ClientError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| ClientError::File {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let body = serde_json::to_vec_pretty(cfg).map_err(|e| err(std::io::Error::other(e)))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&body)
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// User and password for `server`: reg's file first, then docker's.
pub fn lookup(server: &str) -> Result<Option<(String, String)>, ClientError> {
    for path in [credentials_path(), docker_config_path()] {
        let cfg = read_config(&path)?;
        let entry = cfg
            .auths
            .get(server)
            .or_else(|| cfg.auths.get(&format!("https://{server}")))
            .or_else(|| cfg.auths.get(&format!("http://{server}")));
        if let Some(e) = entry {
            if let Some(pair) = decode_auth(&e.auth) {
                return Ok(Some(pair));
            }
        }
    }
    Ok(None)
}

pub fn encode_auth(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

fn decode_auth(a: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(a.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// The base URL of `server`: plain HTTP for loopback (as docker does), HTTPS otherwise.
pub fn base_url(server: &str) -> String {
    if server.starts_with("http://") || server.starts_with("https://") {
        return server.trim_end_matches('/').to_string();
    }
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
    format!("{}://{server}", if loopback { "http" } else { "https" })
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("reg/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Checks credentials the way `docker login` does: `GET /v2/`, and on a Bearer challenge, the
/// token endpoint with Basic credentials.
pub async fn check_login(server: &str, user: &str, password: &str) -> Result<(), ClientError> {
    let base = base_url(server);
    let c = http();
    let connect = |source| ClientError::Connect {
        server: server.to_string(),
        source,
    };
    let r = c.get(format!("{base}/v2/")).send().await.map_err(connect)?;
    if r.status().is_success() {
        // An open registry: still make sure the credentials are not rejected.
        let r = c
            .get(format!("{base}/v2/"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .map_err(connect)?;
        return match r.status().as_u16() {
            200..=299 => Ok(()),
            401 => Err(ClientError::BadCredentials {
                server: server.to_string(),
            }),
            s => Err(ClientError::Status {
                server: server.to_string(),
                status: s,
                what: "GET /v2/".into(),
            }),
        };
    }
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (realm, service) = parse_bearer_challenge(&challenge);
    let resp = match realm {
        Some(realm) => {
            let mut req = c.get(&realm).basic_auth(user, Some(password));
            if let Some(s) = service {
                req = req.query(&[("service", s)]);
            }
            req.send().await.map_err(connect)?
        }
        None => c
            .get(format!("{base}/v2/"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .map_err(connect)?,
    };
    match resp.status().as_u16() {
        200..=299 => Ok(()),
        401 | 403 => Err(ClientError::BadCredentials {
            server: server.to_string(),
        }),
        s => Err(ClientError::Status {
            server: server.to_string(),
            status: s,
            what: "the login".into(),
        }),
    }
}

/// `Bearer realm="…",service="…"` → (realm, service).
pub fn parse_bearer_challenge(h: &str) -> (Option<String>, Option<String>) {
    let Some(rest) = h.strip_prefix("Bearer ") else {
        return (None, None);
    };
    let mut realm = None;
    let mut service = None;
    for part in rest.split(',') {
        if let Some((k, v)) = part.trim().split_once('=') {
            let v = v.trim_matches('"').to_string();
            match k {
                "realm" => realm = Some(v),
                "service" => service = Some(v),
                _ => {}
            }
        }
    }
    (realm, service)
}

/// A client for one registry: answers 401 challenges (Basic or Docker's token flow) with the
/// stored credentials and caches tokens per scope.
pub struct RegistryClient {
    server: String,
    base: String,
    http: reqwest::Client,
    creds: Option<(String, String)>,
    tokens: tokio::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// What [`RegistryClient::manifest_unless`] found.
#[derive(Debug)]
pub enum Fetched {
    NotModified,
    Manifest {
        body: Vec<u8>,
        media_type: String,
        digest: crate::Digest,
    },
}

/// Manifest media types a client accepts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

impl RegistryClient {
    /// A client using the credentials saved by `reg login` (or docker's) for `server`.
    pub fn new(server: &str) -> Result<RegistryClient, ClientError> {
        let creds = lookup(server)?;
        Ok(Self::with_credentials(server, creds))
    }

    pub fn with_credentials(server: &str, creds: Option<(String, String)>) -> RegistryClient {
        RegistryClient {
            server: server.to_string(),
            base: base_url(server),
            http: http(),
            creds,
            tokens: tokio::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A client whose connections give up after `connect` (an upstream that does not answer
    /// must not hold a request for minutes).
    pub fn with_connect_timeout(mut self, connect: std::time::Duration) -> RegistryClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Ok(c) = reqwest::Client::builder()
            .user_agent(concat!("reg/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(connect)
            .build()
        {
            self.http = c;
        }
        self
    }

    /// Another client for the same registry and credentials (tokens are fetched anew).
    pub fn clone_for(other: &RegistryClient) -> RegistryClient {
        RegistryClient {
            server: other.server.clone(),
            base: other.base.clone(),
            http: other.http.clone(),
            creds: other.creds.clone(),
            tokens: tokio::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn connect(&self, source: reqwest::Error) -> ClientError {
        ClientError::Connect {
            server: self.server.clone(),
            source,
        }
    }

    /// GET `path` with `scope` for the token flow; retries once after answering a challenge.
    async fn get(
        &self,
        path: &str,
        scope: &str,
        headers: &[(&str, String)],
    ) -> Result<reqwest::Response, ClientError> {
        self.send(
            reqwest::Method::GET,
            path,
            scope,
            headers,
            bytes::Bytes::new(),
        )
        .await
    }

    /// `method` on `path` (or an absolute URL) with a body that can be sent twice; answers a
    /// challenge for `scope` once, like [`RegistryClient::get`].
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        scope: &str,
        headers: &[(&str, String)],
        body: bytes::Bytes,
    ) -> Result<reqwest::Response, ClientError> {
        let url = self.url(path);
        let build = |auth: Option<&str>| {
            let mut r = self.http.request(method.clone(), &url);
            for (k, v) in headers {
                r = r.header(*k, v);
            }
            if !body.is_empty() || method == reqwest::Method::PUT || method == reqwest::Method::POST
            {
                r = r.body(body.clone());
            }
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            r
        };
        let cached = self.tokens.lock().await.get(scope).cloned();
        let resp = build(cached.as_deref())
            .send()
            .await
            .map_err(|e| self.connect(e))?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let auth = if challenge.starts_with("Bearer ") {
            let (realm, service) = parse_bearer_challenge(&challenge);
            let realm = realm.ok_or_else(|| ClientError::Status {
                server: self.server.clone(),
                status: 401,
                what: "a challenge without a realm".into(),
            })?;
            let mut req = self.http.get(&realm);
            // Several scopes travel as several `scope` parameters, as docker sends them.
            for s in scope.split(' ') {
                req = req.query(&[("scope", s)]);
            }
            if let Some(s) = service {
                req = req.query(&[("service", s)]);
            }
            if let Some((u, p)) = &self.creds {
                req = req.basic_auth(u, Some(p));
            }
            let t = req.send().await.map_err(|e| self.connect(e))?;
            if !t.status().is_success() {
                return Err(ClientError::BadCredentials {
                    server: self.server.clone(),
                });
            }
            #[derive(Deserialize)]
            struct Tok {
                token: Option<String>,
                access_token: Option<String>,
            }
            let tok: Tok = t.json().await.map_err(|e| self.connect(e))?;
            let token = tok.token.or(tok.access_token).unwrap_or_default();
            let value = format!("Bearer {token}");
            self.tokens
                .lock()
                .await
                .insert(scope.to_string(), value.clone());
            value
        } else if let Some((u, p)) = &self.creds {
            format!("Basic {}", encode_auth(u, p))
        } else {
            return Err(ClientError::Status {
                server: self.server.clone(),
                status: 401,
                what: format!("{path}: log in first with `reg login {}`", self.server),
            });
        };
        build(Some(&auth)).send().await.map_err(|e| self.connect(e))
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    fn status(&self, status: u16, what: String) -> ClientError {
        ClientError::Status {
            server: self.server.clone(),
            status,
            what,
        }
    }

    /// Whether `repo` has the blob (HEAD).
    pub async fn has_blob(
        &self,
        repo: &crate::RepoName,
        digest: &crate::Digest,
    ) -> Result<bool, ClientError> {
        let scope = format!("repository:{repo}:pull,push");
        let r = self
            .send(
                reqwest::Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                &scope,
                &[],
                bytes::Bytes::new(),
            )
            .await?;
        Ok(r.status().is_success())
    }

    /// Asks `repo` to mount `digest` from `from` on the same registry (the cross-repository
    /// mount of the distribution spec): `true` when the registry did, so nothing is uploaded.
    /// A registry that declines opens an ordinary upload session instead, which is cancelled.
    pub async fn mount_blob(
        &self,
        repo: &crate::RepoName,
        digest: &crate::Digest,
        from: &crate::RepoName,
    ) -> Result<bool, ClientError> {
        let scope = format!("repository:{repo}:pull,push repository:{from}:pull");
        // Digests and repository names hold no character a query needs escaped.
        let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let r = self
            .send(
                reqwest::Method::POST,
                &path,
                &scope,
                &[],
                bytes::Bytes::new(),
            )
            .await?;
        match r.status().as_u16() {
            201 => Ok(true),
            202 => {
                if let Some(loc) = r.headers().get("location").and_then(|v| v.to_str().ok()) {
                    let loc = loc.to_string();
                    // Best effort: an abandoned session expires on its own anyway.
                    let _ = self
                        .send(
                            reqwest::Method::DELETE,
                            &loc,
                            &scope,
                            &[],
                            bytes::Bytes::new(),
                        )
                        .await;
                }
                Ok(false)
            }
            status => Err(self.status(
                status,
                format!(
                    "mounting {digest} from {from} into {repo} (may you push to it? `reg login`)"
                ),
            )),
        }
    }

    /// Opens an upload session; returns its absolute URL with `digest` added.
    async fn start_upload(
        &self,
        repo: &crate::RepoName,
        digest: &crate::Digest,
    ) -> Result<String, ClientError> {
        let scope = format!("repository:{repo}:pull,push");
        let r = self
            .send(
                reqwest::Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &scope,
                &[],
                bytes::Bytes::new(),
            )
            .await?;
        if r.status().as_u16() != 202 {
            return Err(self.status(
                r.status().as_u16(),
                format!("starting an upload to {repo} (may you push to it? `reg login`)"),
            ));
        }
        let loc = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.status(202, "an upload without a Location".into()))?;
        let loc = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc.to_string()
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        Ok(format!("{loc}{sep}digest={digest}"))
    }

    /// Uploads a blob held in memory (configs), in one monolithic PUT.
    pub async fn push_blob_bytes(
        &self,
        repo: &crate::RepoName,
        digest: &crate::Digest,
        data: bytes::Bytes,
    ) -> Result<(), ClientError> {
        let url = self.start_upload(repo, digest).await?;
        let scope = format!("repository:{repo}:pull,push");
        let r = self
            .send(
                reqwest::Method::PUT,
                &url,
                &scope,
                &[("content-type", "application/octet-stream".into())],
                data,
            )
            .await?;
        if r.status().as_u16() != 201 {
            return Err(self.status(r.status().as_u16(), format!("uploading {digest} to {repo}")));
        }
        Ok(())
    }

    /// Uploads a blob from a file, streamed (one PUT); `on_bytes` hears the bytes sent so far.
    pub async fn push_blob_file(
        &self,
        repo: &crate::RepoName,
        digest: &crate::Digest,
        path: &std::path::Path,
        on_bytes: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<(), ClientError> {
        use futures::StreamExt;
        let file = tokio::fs::File::open(path).await.map_err(|e| {
            self.status(0, format!("{}: {e} (pull the image again)", path.display()))
        })?;
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let url = self.start_upload(repo, digest).await?;
        let scope = format!("repository:{repo}:pull,push");
        // The upload session was opened with this scope: its token is cached.
        let auth = self.tokens.lock().await.get(&scope).cloned();
        let mut sent = 0u64;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |c| {
            if let Ok(b) = &c {
                sent += b.len() as u64;
                on_bytes(sent);
            }
            c
        });
        let mut req = self
            .http
            .put(&url)
            .header("content-type", "application/octet-stream")
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        } else if let Some((u, p)) = &self.creds {
            req = req.basic_auth(u, Some(p));
        }
        let r = req.send().await.map_err(|e| self.connect(e))?;
        if r.status().as_u16() != 201 {
            return Err(self.status(r.status().as_u16(), format!("uploading {digest} to {repo}")));
        }
        Ok(())
    }

    /// PUTs a manifest under `reference` (a tag or its digest).
    pub async fn put_manifest(
        &self,
        repo: &crate::RepoName,
        reference: &str,
        media_type: &str,
        body: bytes::Bytes,
    ) -> Result<(), ClientError> {
        let scope = format!("repository:{repo}:pull,push");
        let r = self
            .send(
                reqwest::Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &scope,
                &[("content-type", media_type.to_string())],
                body,
            )
            .await?;
        if r.status().as_u16() != 201 {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            return Err(self.status(status, format!("manifest {repo}:{reference}: {text}")));
        }
        Ok(())
    }

    /// Fetches a manifest; returns its bytes, media type and digest (verified when pinned).
    pub async fn manifest(
        &self,
        repo: &crate::RepoName,
        reference: &str,
    ) -> Result<(Vec<u8>, String, crate::Digest), ClientError> {
        match self
            .manifest_unless(repo, reference, None, usize::MAX)
            .await?
        {
            Fetched::Manifest {
                body,
                media_type,
                digest,
            } => Ok((body, media_type, digest)),
            // Only a request that names a known digest is answered "not modified".
            Fetched::NotModified => Err(self.status(304, format!("manifest {repo}:{reference}"))),
        }
    }

    /// Fetches a manifest unless it is still `known` (a conditional request: `If-None-Match`
    /// with its digest; a registry that ignores it answers the manifest, whose digest then
    /// tells). Pinned references are verified as by [`RegistryClient::manifest`].
    pub async fn manifest_unless(
        &self,
        repo: &crate::RepoName,
        reference: &str,
        known: Option<&crate::Digest>,
        max: usize,
    ) -> Result<Fetched, ClientError> {
        let scope = format!("repository:{repo}:pull");
        let path = format!("/v2/{repo}/manifests/{reference}");
        let mut headers = vec![("accept", MANIFEST_ACCEPT.to_string())];
        if let Some(k) = known {
            headers.push(("if-none-match", format!("\"{k}\"")));
        }
        let mut r = self.get(&path, &scope, &headers).await?;
        let status = r.status().as_u16();
        if status == 304 && known.is_some() {
            return Ok(Fetched::NotModified);
        }
        if status != 200 {
            return Err(self.status(
                status,
                format!("manifest {repo}:{reference} (is the name right, and are you logged in?)"),
            ));
        }
        let media_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut body = Vec::new();
        while let Some(chunk) = r.chunk().await.map_err(|e| self.connect(e))? {
            if body.len() + chunk.len() > max {
                return Err(self.status(
                    200,
                    format!("manifest {repo}:{reference}: larger than the limit of {max} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let digest = match crate::Digest::parse(reference) {
            Ok(want) => {
                let got = crate::Digest::of(want.algorithm(), &body);
                if got != want {
                    return Err(self.status(
                        200,
                        format!("manifest {reference}: content has digest {got}"),
                    ));
                }
                want
            }
            Err(_) => crate::Digest::sha256_of(&body),
        };
        if known == Some(&digest) {
            return Ok(Fetched::NotModified);
        }
        Ok(Fetched::Manifest {
            body,
            media_type,
            digest,
        })
    }

    /// A blob's size as `repo` reports it (HEAD); `None` when it does not have it.
    pub async fn blob_size(
        &self,
        repo: &crate::RepoName,
        digest: &crate::Digest,
    ) -> Result<Option<u64>, ClientError> {
        let scope = format!("repository:{repo}:pull");
        let r = self
            .send(
                reqwest::Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                &scope,
                &[],
                bytes::Bytes::new(),
            )
            .await?;
        match r.status().as_u16() {
            200 => Ok(r
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            404 => Ok(None),
            status => Err(self.status(status, format!("blob {digest} of {repo}"))),
        }
    }

    /// Starts a blob download at byte `offset` (a `Range` request when not 0).
    pub async fn blob(
        &self,
        repo: &crate::RepoName,
        digest: &crate::Digest,
        offset: u64,
    ) -> Result<reqwest::Response, ClientError> {
        let scope = format!("repository:{repo}:pull");
        let mut headers = Vec::new();
        if offset > 0 {
            headers.push(("range", format!("bytes={offset}-")));
        }
        let r = self
            .get(&format!("/v2/{repo}/blobs/{digest}"), &scope, &headers)
            .await?;
        let status = r.status().as_u16();
        if status != 200 && status != 206 {
            return Err(ClientError::Status {
                server: self.server.clone(),
                status,
                what: format!("blob {digest} of {repo}"),
            });
        }
        if offset > 0 && status != 206 {
            return Err(ClientError::Status {
                server: self.server.clone(),
                status,
                what: format!("a resumed download of {digest} (the registry ignored the Range)"),
            });
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parsing() {
        let (r, s) = parse_bearer_challenge(
            r#"Bearer realm="http://h:5000/auth/token",service="reg",scope="repository:a:pull""#,
        );
        assert_eq!(r.as_deref(), Some("http://h:5000/auth/token"));
        assert_eq!(s.as_deref(), Some("reg"));
    }

    #[test]
    fn loopback_is_plain_http() {
        assert_eq!(base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(base_url("localhost:5000"), "http://localhost:5000");
        assert_eq!(
            base_url("registry.example.com"),
            "https://registry.example.com"
        );
    }

    #[test]
    fn config_keeps_unknown_keys() {
        let cfg: DockerConfig =
            serde_json::from_str(r#"{"auths":{"h":{"auth":"dTpw"}},"credsStore":"x"}"#)
                .expect("json");
        assert_eq!(
            decode_auth(&cfg.auths["h"].auth),
            Some(("u".into(), "p".into()))
        );
        let back = serde_json::to_string(&cfg).expect("json");
        assert!(back.contains("credsStore"));
    }
}
