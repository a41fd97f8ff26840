//! Typed configuration for every part of `reg`.
//!
//! One source of truth, layered: embedded defaults, then an optional TOML file, then `REG_*`
//! environment variables (`REG_<SECTION>_<KEY>`, e.g. `REG_REGISTRY_ADDR`), then command-line
//! flags applied by the caller. Validation happens once, at load, and every error names the key.
//! This crate owns the data-dir layout too, so no other crate invents paths of its own.
//! It never opens a socket or a database.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors from loading or validating configuration; each names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key} (from {origin}): {message}")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
}

/// The whole configuration of one `reg` process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Root of everything `reg` stores on this machine.
    pub data_dir: PathBuf,
    pub registry: RegistryConfig,
    pub node: NodeConfig,
    pub log: LogConfig,
}

/// Settings of the node agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Unix socket of the agent's API (a path, or `unix:///path`); empty: `<data_dir>/node.sock`
    /// unless `hosts` is given.
    pub socket: String,
    /// Where the agent listens, as `dockerd -H`: `unix:///path` or `tcp://IP:PORT`. A TCP
    /// address other than loopback needs `tls_verify` and the three files.
    pub hosts: Vec<String>,
    /// Serve TCP with mutual TLS: clients must show a certificate signed by `tls_ca`.
    pub tls_verify: bool,
    /// PEM CA whose certificates clients must present (`--tlscacert`).
    pub tls_ca: String,
    /// PEM certificate chain of the agent (`--tlscert`).
    pub tls_cert: String,
    /// PEM private key of `tls_cert` (`--tlskey`).
    pub tls_key: String,
    /// Registry used for references without a host (there is no Docker Hub here).
    pub default_registry: String,
    /// A container's log is rotated at this many bytes unless it asks otherwise
    /// (`--log-opt max-size`); 0: never (docker's default, which lets a chatty container
    /// fill the disk).
    pub log_max_size: u64,
    /// How many log files a container keeps at most by default, the current one included
    /// (`--log-opt max-file`).
    pub log_max_file: u32,
    /// The build cache's size limit: after a build, its oldest entries go until the layers
    /// the rest keep fit; 0: unlimited. `reg builder prune` empties it.
    pub build_cache_max_bytes: u64,
    /// User namespaces (docker's `--userns-remap`): a user named in /etc/subuid and
    /// /etc/subgid, or `BASE:SIZE`. Containers then run as the first 65536 ids of that range
    /// unless created with `--userns=host`; `--userns=auto` gives each its own 65536. Empty: off.
    pub userns_remap: String,
    /// Where the agent serves `/metrics` (Prometheus's text format, dockerd's names), on a
    /// listener of its own; empty (the default): nowhere.
    pub metrics_addr: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            socket: String::new(),
            hosts: Vec::new(),
            tls_verify: false,
            tls_ca: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            default_registry: "127.0.0.1:5000".to_string(),
            log_max_size: 20 * 1024 * 1024,
            log_max_file: 5,
            build_cache_max_bytes: 10 * 1024 * 1024 * 1024,
            userns_remap: String::new(),
            metrics_addr: String::new(),
        }
    }
}

/// The agent's mutual-TLS files, all three present (see [`NodeConfig::tls`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl NodeConfig {
    /// The mutual-TLS files when `tls_verify` is on (validation made sure all three are set).
    pub fn tls(&self) -> Option<NodeTls> {
        (self.tls_verify
            && !self.tls_ca.is_empty()
            && !self.tls_cert.is_empty()
            && !self.tls_key.is_empty())
        .then(|| NodeTls {
            ca: PathBuf::from(&self.tls_ca),
            cert: PathBuf::from(&self.tls_cert),
            key: PathBuf::from(&self.tls_key),
        })
    }
}

/// Settings of the registry server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Address the registry listens on.
    pub addr: String,
    /// Where `/metrics` (Prometheus's text format) is served, on a listener of its own: whoever
    /// can reach it reads the metrics. Empty (the default): no metrics listener.
    pub metrics_addr: String,
    /// Largest manifest accepted, in bytes (the spec asks registries to take at least 4 MiB).
    pub max_manifest_bytes: u64,
    /// Seconds an idle upload session lives before it is removed with its data.
    pub upload_expiry_secs: u64,
    /// Seconds that in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Largest page that tag and catalog listings return when the client asks for none.
    pub default_page_size: u32,
    /// Serve without authentication: on a non-loopback address while no user exists, or
    /// after every user was removed (the registry otherwise keeps requiring auth for good
    /// once it has had a user). Logged at start.
    pub insecure_no_auth: bool,
    /// Require authentication even before the first user exists (every request is 401 until
    /// one is added with `reg admin user add`).
    pub require_auth: bool,
    /// Addresses of reverse proxies (`10.0.0.0/8`, `192.0.2.7/32`, `::1/128`): only for
    /// connections from these is the client taken from `X-Forwarded-For` (the right-most
    /// address that is not itself a trusted proxy), for throttling and the audit log.
    pub trusted_proxies: Vec<String>,
    /// Bounds that keep the server up under hostile clients (`[registry.limits]`).
    pub limits: LimitsConfig,
    /// Token endpoint URL announced in challenges; empty: `/auth/token` on this registry.
    pub token_realm: String,
    /// Delay added after the third failed login of a user, access token or (after the
    /// fifteenth) client address; it doubles with each further failure, up to 50 times this.
    pub login_failure_delay_ms: u64,
    /// PEM certificate chain and private key: serve HTTPS (rustls) instead of HTTP.
    /// Empty: plain HTTP.
    pub tls_cert: String,
    pub tls_key: String,
    /// Where the metadata lives (`[registry.metadata]`).
    pub metadata: MetadataConfig,
    /// Where blob bytes live (`[registry.storage]`).
    pub storage: StorageConfig,
    /// Online garbage collection (`[registry.gc]`).
    pub gc: GcConfig,
    /// Retention rules per repository pattern (`[[registry.retention]]`), applied by the
    /// garbage collector; `immutable_tags` is enforced on every push and delete.
    pub retention: Vec<RetentionRule>,
    /// Pull-through mirrors of upstream registries (`[[registry.mirror]]`): names they serve are
    /// fetched from the upstream on a miss, kept as ordinary content, and refused to pushes.
    pub mirror: Vec<MirrorConfig>,
    /// Webhooks told of pushes, pulls and deletes (`[[registry.notify]]`), in distribution's
    /// notification envelope.
    pub notify: Vec<NotifyConfig>,
}

/// One webhook endpoint: where events go, which ones, and how hard to try.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// A name for logs and `reg admin notify` (unique).
    pub name: String,
    /// Where envelopes are POSTed (`http://` or `https://`).
    pub url: String,
    /// Extra request headers (`Authorization = "Bearer …"`).
    pub headers: std::collections::BTreeMap<String, String>,
    /// Which actions it gets: `push`, `pull`, `delete`, `mount`; empty: all.
    pub actions: Vec<String>,
    /// Which repositories (a glob).
    pub repositories: String,
    /// Media types it does not get (e.g. `application/octet-stream`: no blob events).
    pub ignore_media_types: Vec<String>,
    /// How long one delivery may take.
    pub timeout: String,
    /// The wait before the first retry; it doubles with each failure, up to 5 minutes.
    pub backoff: String,
    /// Deliveries tried before an event is recorded as failed (`reg admin notify failed`).
    pub max_attempts: u32,
    /// Events kept waiting for this endpoint; past it the oldest are recorded as failed.
    pub queue_limit: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            name: String::new(),
            url: String::new(),
            headers: std::collections::BTreeMap::new(),
            actions: Vec::new(),
            repositories: "**".into(),
            ignore_media_types: Vec::new(),
            timeout: "5s".into(),
            backoff: "1s".into(),
            max_attempts: 10,
            queue_limit: 10_000,
        }
    }
}

/// One pull-through mirror: which names it serves and where their content comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    /// The upstream registry's URL: `https://registry-1.docker.io`, `https://ghcr.io`,
    /// `http://127.0.0.1:5001`.
    pub upstream: String,
    /// The first path component(s) of the names this mirror serves, removed before asking the
    /// upstream: `ghcr.io` serves `reg.example/ghcr.io/org/app` as the upstream's `org/app`.
    /// `"-"` (the default) means the upstream's host name (`host:port` if it has a port).
    /// Empty: unprefixed names (as dockerd's `registry-mirrors` sends Docker Hub's), limited by
    /// `repositories`.
    pub prefix: String,
    /// Which names (after the prefix) the mirror serves: a glob (`library/*`, `**`).
    pub repositories: String,
    /// Added in front of one-component names when asking the upstream (`busybox` →
    /// `library/busybox`): `"-"` (the default) means `library` for Docker Hub and none
    /// otherwise.
    pub implied_namespace: String,
    /// Credentials for the upstream (Basic, or its token flow); empty: anonymous.
    pub username: String,
    pub password: String,
    /// How long a tag fetched from the upstream is served without asking the upstream again
    /// (a conditional request: unchanged tags move no manifest bytes).
    pub tag_ttl: String,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            upstream: String::new(),
            prefix: "-".into(),
            repositories: "**".into(),
            implied_namespace: "-".into(),
            username: String::new(),
            password: String::new(),
            tag_ttl: "5m".into(),
        }
    }
}

/// Resource bounds of the registry server: what one client, or many, can make it hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Connections served at once; more wait in the kernel's accept queue until one ends.
    /// `reg serve` raises its open-file limit to the hard limit at start.
    pub max_connections: usize,
    /// Seconds a client gets to send a request's headers; also how long an idle keep-alive
    /// connection stays open.
    pub header_timeout_secs: u64,
    /// A request body must bring at least `min_body_bytes_per_sec` on average over each
    /// window of this many seconds, or the request is cut (an upload keeps what arrived).
    pub body_window_secs: u64,
    pub min_body_bytes_per_sec: u64,
    /// Password checks (argon2, about 19 MiB of memory each) at once; 0: half the CPUs.
    pub password_checks: usize,
    /// Logins that may wait for a check; more are answered 429 TOOMANYREQUESTS + Retry-After.
    pub password_queue: usize,
    /// Logins in flight or waiting from one client address (more: 429), so that one client
    /// cannot take every check.
    pub password_checks_per_client: usize,
    /// Open upload sessions of one user (or, anonymous, one client address); more: 429.
    pub upload_sessions_per_client: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 4096,
            header_timeout_secs: 15,
            body_window_secs: 30,
            min_body_bytes_per_sec: 1024,
            password_checks: 0,
            password_queue: 64,
            password_checks_per_client: 4,
            upload_sessions_per_client: 256,
        }
    }
}

/// The registry's metadata database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (shared by several replicas), or a
    /// SQLite file path; empty: SQLite at `<data_dir>/registry/meta.db`.
    pub url: String,
}

/// The registry's blob storage: the local filesystem under the data dir, or an S3 bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `filesystem` or `s3`.
    pub kind: String,
    /// S3 endpoint URL (`http://127.0.0.1:3900` for Garage/MinIO); empty: AWS.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `http://endpoint/bucket/key` rather than `http://bucket.endpoint/key`.
    pub path_style: bool,
    /// Key prefix inside the bucket, e.g. `registry/`.
    pub prefix: String,
    /// Answer blob GETs with a redirect to a presigned URL of the object (clients then fetch
    /// from the bucket directly), as distribution does by default. Off: the registry streams
    /// the bytes itself, which also works when clients cannot reach the bucket.
    pub redirect: bool,
}

impl StorageConfig {
    /// `S3 bucket B at ENDPOINT` for S3; `None` for the local filesystem.
    pub fn describe(&self) -> Option<String> {
        (self.kind == "s3").then(|| format!("S3 bucket {} at {}", self.bucket, self.endpoint))
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: "filesystem".into(),
            endpoint: String::new(),
            bucket: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            path_style: true,
            prefix: String::new(),
            redirect: false,
        }
    }
}

/// When and how the registry collects garbage while it serves. Durations are humantime
/// strings: `90s`, `15m`, `1h`, `7d`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// Time between collections inside `reg serve`; `0s`: never (run `reg registry gc`).
    pub interval: String,
    /// A blob uploaded or mounted, or a link made, within this window is never collected.
    pub grace: String,
    /// Untagged manifests older than this (and not reachable from a tag) are removed;
    /// empty: never — untagged manifests stay pullable by digest.
    pub untagged: String,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval: "24h".into(),
            grace: "1h".into(),
            untagged: String::new(),
        }
    }
}

/// One retention rule: which repositories (a glob: `team/*`, `**`), which tags to keep, which
/// are immutable. A tag is kept when any keep condition holds; a rule without any keeps all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionRule {
    pub repositories: String,
    /// Keep the N most recently pushed tags (immutable ones are kept besides); 0: no count
    /// rule.
    pub keep_last: u32,
    /// Keep tags pushed within this duration; empty: no age rule.
    pub keep_newer_than: String,
    /// Tags matching this glob can neither be overwritten nor deleted (`DENIED`), and the
    /// collector never removes them; empty: none.
    pub immutable_tags: String,
}

/// Parses a humantime duration (`0s`, `90s`, `1h`, `7d`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?}: {e} (expected e.g. 90s, 15m, 1h, 7d)"))
}

impl MirrorConfig {
    /// The upstream's `host[:port]` (empty when `upstream` is not a URL).
    pub fn upstream_host(&self) -> String {
        let Ok(url) = url::Url::parse(&self.upstream) else {
            return String::new();
        };
        match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        }
    }

    /// The name prefix this mirror serves, resolved (`"-"`: the upstream's host).
    pub fn name_prefix(&self) -> String {
        if self.prefix == "-" {
            self.upstream_host()
        } else {
            self.prefix.trim_matches('/').to_string()
        }
    }

    /// The namespace put in front of one-component names, resolved (`"-"`: `library` for
    /// Docker Hub).
    pub fn namespace(&self) -> String {
        if self.implied_namespace != "-" {
            return self.implied_namespace.trim_matches('/').to_string();
        }
        let host = self.upstream_host();
        if matches!(
            host.as_str(),
            "registry-1.docker.io" | "index.docker.io" | "docker.io"
        ) {
            "library".into()
        } else {
            String::new()
        }
    }
}

impl RegistryConfig {
    /// The certificate and key paths when TLS is configured.
    pub fn tls(&self) -> Option<(PathBuf, PathBuf)> {
        (!self.tls_cert.is_empty() && !self.tls_key.is_empty())
            .then(|| (PathBuf::from(&self.tls_cert), PathBuf::from(&self.tls_key)))
    }
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `reg=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            registry: RegistryConfig::default(),
            node: NodeConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            addr: "127.0.0.1:5000".to_string(),
            metrics_addr: String::new(),
            max_manifest_bytes: 4 * 1024 * 1024,
            upload_expiry_secs: 24 * 3600,
            shutdown_grace_secs: 30,
            default_page_size: 1000,
            insecure_no_auth: false,
            require_auth: false,
            trusted_proxies: Vec::new(),
            limits: LimitsConfig::default(),
            token_realm: String::new(),
            login_failure_delay_ms: 100,
            tls_cert: String::new(),
            tls_key: String::new(),
            metadata: MetadataConfig::default(),
            storage: StorageConfig::default(),
            gc: GcConfig::default(),
            retention: Vec::new(),
            mirror: Vec::new(),
            notify: Vec::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: "text".to_string(),
        }
    }
}

/// `ADDRESS/PREFIX` (IPv4 or IPv6; a bare address is one host): the network and its prefix.
pub fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (a, p) = s.split_once('/').unwrap_or((s, ""));
    let ip: std::net::IpAddr = a
        .trim()
        .parse()
        .map_err(|e| format!("{s:?}: {e}; expected an address or ADDRESS/PREFIX"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = if p.is_empty() {
        max
    } else {
        p.trim()
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("{s:?}: the prefix must be 0..={max}"))?
    };
    Ok((ip, prefix))
}

/// Whether `ip` is inside `net/prefix` (IPv4-mapped IPv6 addresses count as IPv4).
pub fn cidr_contains(net: (std::net::IpAddr, u8), ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (net.0, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(net.1)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(net.1)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Default data dir: `/var/lib/reg` for root, `$XDG_DATA_HOME/reg` or `~/.local/share/reg` otherwise.
pub fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/reg");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("reg");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/share/reg");
    }
    PathBuf::from(".reg-data")
}

fn is_root() -> bool {
    // Reading /proc avoids unsafe libc calls; a missing /proc means "not root" (the safe default).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Where each part keeps its files below the data dir.
#[derive(Debug, Clone)]
pub struct DataLayout {
    root: PathBuf,
}

impl DataLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataLayout { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Root of the registry's content-addressed blob objects.
    pub fn registry_blobs(&self) -> PathBuf {
        self.root.join("registry/blobs")
    }
    /// Upload sessions in progress (same filesystem as the blobs so commit is a rename).
    pub fn registry_uploads(&self) -> PathBuf {
        self.root.join("registry/uploads")
    }
    /// Where the token signing key was kept before it moved into the metadata database.
    pub fn registry_auth(&self) -> PathBuf {
        self.root.join("registry/auth")
    }
    /// The node's image store (blobs, snapshots, index).
    pub fn node_root(&self) -> PathBuf {
        self.root.join("node")
    }
    /// SQLite database of the registry's metadata.
    pub fn registry_db(&self) -> PathBuf {
        self.root.join("registry/meta.db")
    }
}

impl Config {
    /// Loads defaults, then `file` (if given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("REG_"))
            .collect();
        Self::load_from(file, &env)
    }

    /// Like [`Config::load`] with an explicit environment (testable without touching the process).
    pub fn load_from(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut value =
            toml::Value::try_from(Config::default()).map_err(|e| ConfigError::Parse {
                path: PathBuf::from("<defaults>"),
                message: e.to_string(),
            })?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let from_file: toml::Value = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            merge(&mut value, from_file);
            // Check the merged document now so unknown keys are reported against the file.
            value
                .clone()
                .try_into::<Config>()
                .map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        }
        apply_env(&mut value, "REG", "", env)?;
        let cfg: Config = value.try_into().map_err(|e| ConfigError::Parse {
            path: file.map_or_else(|| PathBuf::from("<environment>"), Path::to_path_buf),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            origin: "configuration".to_string(),
            message,
        };
        self.registry.addr.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "registry.addr",
                format!("{e}; expected HOST:PORT such as 127.0.0.1:5000"),
            )
        })?;
        if self.registry.max_manifest_bytes < 4 * 1024 * 1024 {
            return Err(invalid(
                "registry.max_manifest_bytes",
                "must be at least 4194304 (4 MiB, the distribution spec's minimum)".into(),
            ));
        }
        if self.registry.tls_cert.is_empty() != self.registry.tls_key.is_empty() {
            return Err(invalid(
                "registry.tls_cert",
                "tls_cert and tls_key must be given together".into(),
            ));
        }
        let st = &self.registry.storage;
        match st.kind.as_str() {
            "filesystem" => {}
            "s3" if st.bucket.is_empty() => {
                return Err(invalid(
                    "registry.storage.bucket",
                    "is required when registry.storage.kind = \"s3\"".into(),
                ))
            }
            "s3" => {}
            other => {
                return Err(invalid(
                    "registry.storage.kind",
                    format!("{other:?}: expected \"filesystem\" or \"s3\""),
                ))
            }
        }
        if !st.prefix.is_empty() && !st.prefix.ends_with('/') {
            return Err(invalid(
                "registry.storage.prefix",
                format!("{:?} must end in /", st.prefix),
            ));
        }
        for (i, p) in self.registry.trusted_proxies.iter().enumerate() {
            parse_cidr(p).map_err(|m| invalid(&format!("registry.trusted_proxies[{i}]"), m))?;
        }
        let l = &self.registry.limits;
        for (key, v) in [
            ("registry.limits.max_connections", l.max_connections as u64),
            ("registry.limits.header_timeout_secs", l.header_timeout_secs),
            ("registry.limits.body_window_secs", l.body_window_secs),
            (
                "registry.limits.password_checks_per_client",
                l.password_checks_per_client as u64,
            ),
            (
                "registry.limits.upload_sessions_per_client",
                l.upload_sessions_per_client,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if self.registry.default_page_size == 0 {
            return Err(invalid(
                "registry.default_page_size",
                "must be at least 1".into(),
            ));
        }
        for (key, v) in [
            ("registry.gc.interval", &self.registry.gc.interval),
            ("registry.gc.grace", &self.registry.gc.grace),
        ] {
            parse_duration(v).map_err(|m| invalid(key, m))?;
        }
        if !self.registry.gc.untagged.is_empty() {
            parse_duration(&self.registry.gc.untagged)
                .map_err(|m| invalid("registry.gc.untagged", m))?;
        }
        for (i, r) in self.registry.retention.iter().enumerate() {
            let key = |k: &str| format!("registry.retention[{i}].{k}");
            if r.repositories.is_empty() {
                return Err(invalid(
                    &key("repositories"),
                    "must name a repository glob such as team/* or **".into(),
                ));
            }
            if !r.keep_newer_than.is_empty() {
                parse_duration(&r.keep_newer_than)
                    .map_err(|m| invalid(&key("keep_newer_than"), m))?;
            }
        }
        let mut prefixes = std::collections::BTreeSet::new();
        for (i, m) in self.registry.mirror.iter().enumerate() {
            let key = |k: &str| format!("registry.mirror[{i}].{k}");
            let url = url::Url::parse(&m.upstream).map_err(|e| {
                invalid(
                    &key("upstream"),
                    format!("{:?}: {e} (expected e.g. https://ghcr.io)", m.upstream),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(invalid(
                    &key("upstream"),
                    format!("{:?}: expected an http:// or https:// URL", m.upstream),
                ));
            }
            parse_duration(&m.tag_ttl).map_err(|e| invalid(&key("tag_ttl"), e))?;
            globset::Glob::new(&m.repositories)
                .map_err(|e| invalid(&key("repositories"), e.to_string()))?;
            if !prefixes.insert(m.name_prefix()) {
                return Err(invalid(
                    &key("prefix"),
                    format!(
                        "{:?} is served by an earlier mirror already",
                        m.name_prefix()
                    ),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, n) in self.registry.notify.iter().enumerate() {
            let key = |k: &str| format!("registry.notify[{i}].{k}");
            if n.name.is_empty() || !names.insert(n.name.clone()) {
                return Err(invalid(
                    &key("name"),
                    format!("{:?}: every endpoint needs a name of its own", n.name),
                ));
            }
            match url::Url::parse(&n.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => {
                    return Err(invalid(
                        &key("url"),
                        format!("{:?}: expected an http:// or https:// URL", n.url),
                    ))
                }
            }
            for a in &n.actions {
                if !matches!(a.as_str(), "push" | "pull" | "delete" | "mount") {
                    return Err(invalid(
                        &key("actions"),
                        format!("{a:?}: expected push, pull, delete or mount"),
                    ));
                }
            }
            globset::Glob::new(&n.repositories)
                .map_err(|e| invalid(&key("repositories"), e.to_string()))?;
            parse_duration(&n.timeout).map_err(|e| invalid(&key("timeout"), e))?;
            parse_duration(&n.backoff).map_err(|e| invalid(&key("backoff"), e))?;
            if n.max_attempts == 0 || n.queue_limit == 0 {
                return Err(invalid(
                    &key("max_attempts"),
                    "max_attempts and queue_limit must be at least 1".into(),
                ));
            }
        }
        self.validate_node()?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid(
                "log.format",
                format!("{:?}: expected text or json", self.log.format),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".into()));
        }
        Ok(())
    }

    /// The node's keys: hosts with a scheme the agent knows, a socket that is a path, and
    /// TLS files that go together. Whether a TCP address may go without TLS (loopback only) is
    /// decided where it is parsed, by the agent.
    fn validate_node(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            origin: "configuration".to_string(),
            message,
        };
        let n = &self.node;
        if n.log_max_file == 0 {
            return Err(invalid(
                "node.log_max_file",
                "must be at least 1 (the current log file)".into(),
            ));
        }
        if n.socket.contains("://") && !n.socket.starts_with("unix://") {
            return Err(invalid(
                "node.socket",
                format!(
                    "{:?} is not a socket path; put TCP addresses in node.hosts (-H tcp://IP:PORT)",
                    n.socket
                ),
            ));
        }
        for (i, h) in n.hosts.iter().enumerate() {
            let ok = h
                .strip_prefix("unix://")
                .or_else(|| h.strip_prefix("tcp://"))
                .is_some_and(|rest| !rest.is_empty());
            if !ok {
                return Err(invalid(
                    &format!("node.hosts[{i}]"),
                    format!("{h:?}: expected unix:///path/to/node.sock or tcp://IP:PORT"),
                ));
            }
        }
        let files = [
            ("node.tls_ca", &n.tls_ca),
            ("node.tls_cert", &n.tls_cert),
            ("node.tls_key", &n.tls_key),
        ];
        if n.tls_verify {
            if let Some((key, _)) = files.iter().find(|(_, v)| v.is_empty()) {
                return Err(invalid(
                    key,
                    "node.tls_verify needs node.tls_ca, node.tls_cert and node.tls_key \
                     (--tlscacert, --tlscert, --tlskey)"
                        .into(),
                ));
            }
        } else if let Some((key, _)) = files.iter().find(|(_, v)| !v.is_empty()) {
            return Err(invalid(
                key,
                "is set but node.tls_verify is off: the agent serves TCP with mutual TLS only \
                 (pass --tlsverify)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The agent's socket path.
    pub fn node_socket(&self) -> PathBuf {
        if self.node.socket.is_empty() {
            self.data_dir.join("node.sock")
        } else {
            let s = &self.node.socket;
            PathBuf::from(s.strip_prefix("unix://").unwrap_or(s))
        }
    }

    /// Where the agent listens: `node.hosts`, plus `node.socket` when it is set; with neither,
    /// the socket `<data_dir>/node.sock`.
    pub fn node_hosts(&self) -> Vec<String> {
        let mut hosts = self.node.hosts.clone();
        if !self.node.socket.is_empty() || hosts.is_empty() {
            let sock = format!("unix://{}", self.node_socket().display());
            if !hosts.contains(&sock) {
                hosts.insert(0, sock);
            }
        }
        hosts
    }

    /// The agent a client talks to by default: the socket, or else the first configured host.
    pub fn node_client_host(&self) -> String {
        if self.node.socket.is_empty() {
            if let Some(h) = self.node.hosts.first() {
                return h.clone();
            }
        }
        format!("unix://{}", self.node_socket().display())
    }

    pub fn layout(&self) -> DataLayout {
        DataLayout::new(&self.data_dir)
    }

    /// The effective configuration as TOML, for `reg config show`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Overrides every leaf of `value` whose env name (`PREFIX_SECTION_KEY`, upper case) is set.
fn apply_env(
    value: &mut toml::Value,
    prefix: &str,
    dotted: &str,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let toml::Value::Table(table) = value else {
        return Ok(());
    };
    for (key, slot) in table.iter_mut() {
        let name = format!("{prefix}_{}", key.to_ascii_uppercase());
        let path = if dotted.is_empty() {
            key.clone()
        } else {
            format!("{dotted}.{key}")
        };
        if let toml::Value::Table(_) = slot {
            apply_env(slot, &name, &path, env)?;
            continue;
        }
        let Some(raw) = env.get(&name) else { continue };
        let invalid = |message: String| ConfigError::Invalid {
            key: path.clone(),
            origin: format!("environment variable {name}"),
            message,
        };
        *slot = match slot {
            toml::Value::Integer(_) => toml::Value::Integer(
                raw.trim()
                    .parse()
                    .map_err(|e| invalid(format!("{raw:?} is not an integer: {e}")))?,
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(
                raw.trim()
                    .parse()
                    .map_err(|_| invalid(format!("{raw:?} is not true or false")))?,
            ),
            // A list: comma-separated (`REG_REGISTRY_TRUSTED_PROXIES=10.0.0.0/8,::1`).
            toml::Value::Array(_) => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| toml::Value::String(v.to_string()))
                    .collect(),
            ),
            _ => toml::Value::String(raw.clone()),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn trusted_proxies_and_limits_from_the_environment() {
        let cfg = Config::load_from(
            None,
            &env(&[
                ("REG_REGISTRY_TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
                ("REG_REGISTRY_LIMITS_MAX_CONNECTIONS", "100"),
            ]),
        )
        .expect("valid");
        assert_eq!(cfg.registry.trusted_proxies, vec!["10.0.0.0/8", "::1"]);
        assert_eq!(cfg.registry.limits.max_connections, 100);
        let err = Config::load_from(
            None,
            &env(&[("REG_REGISTRY_TRUSTED_PROXIES", "10.0.0.0/40")]),
        )
        .expect_err("bad prefix");
        assert!(err.to_string().contains("trusted_proxies[0]"), "{err}");
        let net = parse_cidr("10.0.0.0/8").expect("cidr");
        assert!(cidr_contains(net, "10.1.2.3".parse().expect("ip")));
        assert!(cidr_contains(net, "::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!cidr_contains(net, "11.0.0.1".parse().expect("ip")));
        assert!(cidr_contains(
            parse_cidr("::1").expect("v6"),
            "::1".parse().expect("ip")
        ));
        assert!(cidr_contains(
            parse_cidr("0.0.0.0/0").expect("all"),
            "1.2.3.4".parse().expect("ip")
        ));
    }

    #[test]
    fn defaults_validate() {
        let cfg = Config::load_from(None, &env(&[])).expect("defaults are valid");
        assert_eq!(cfg.registry.addr, "127.0.0.1:5000");
    }

    #[test]
    fn mirrors_are_checked_and_their_prefixes_resolved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("reg.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).expect("write");
            Config::load_from(Some(&file), &env(&[]))
        };
        let cfg = load(
            "[[registry.mirror]]\nupstream = \"https://ghcr.io\"\n\n\
             [[registry.mirror]]\nupstream = \"https://registry-1.docker.io\"\nprefix = \"\"\n",
        )
        .expect("valid");
        let m = &cfg.registry.mirror;
        assert_eq!(
            (m[0].name_prefix(), m[0].namespace()),
            ("ghcr.io".into(), String::new())
        );
        assert_eq!(
            (m[1].name_prefix(), m[1].namespace()),
            (String::new(), "library".into())
        );
        assert_eq!(m[1].tag_ttl, "5m");
        for (text, key) in [
            ("upstream = \"ghcr.io\"", "registry.mirror[0].upstream"),
            ("upstream = \"ftp://x\"", "registry.mirror[0].upstream"),
            (
                "upstream = \"https://a\"\ntag_ttl = \"soon\"",
                "registry.mirror[0].tag_ttl",
            ),
            (
                "upstream = \"https://a\"\nrepositories = \"[\"",
                "registry.mirror[0].repositories",
            ),
        ] {
            let err = load(&format!("[[registry.mirror]]\n{text}\n")).expect_err(text);
            assert!(err.to_string().contains(key), "{err}");
        }
        let err = load(
            "[[registry.mirror]]\nupstream = \"https://ghcr.io\"\n\
             [[registry.mirror]]\nupstream = \"http://ghcr.io\"\n",
        )
        .expect_err("same prefix twice");
        assert!(
            err.to_string().contains("registry.mirror[1].prefix"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("reg.toml");
        std::fs::write(
            &file,
            "data_dir = \"/srv/reg\"\n[registry]\naddr = \"127.0.0.1:6000\"\n",
        )
        .expect("write");
        let cfg = Config::load_from(
            Some(&file),
            &env(&[("REG_REGISTRY_ADDR", "127.0.0.1:7000")]),
        )
        .expect("valid");
        assert_eq!(cfg.data_dir, PathBuf::from("/srv/reg"));
        assert_eq!(cfg.registry.addr, "127.0.0.1:7000");
    }

    #[test]
    fn unknown_key_in_file_names_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("reg.toml");
        std::fs::write(&file, "[registry]\nadress = \"x\"\n").expect("write");
        let err = Config::load_from(Some(&file), &env(&[])).expect_err("unknown key");
        assert!(err.to_string().contains("adress"), "{err}");
    }

    #[test]
    fn bad_env_integer_names_the_variable() {
        let err = Config::load_from(None, &env(&[("REG_REGISTRY_UPLOAD_EXPIRY_SECS", "soon")]))
            .expect_err("not an integer");
        assert!(
            err.to_string().contains("REG_REGISTRY_UPLOAD_EXPIRY_SECS"),
            "{err}"
        );
    }

    #[test]
    fn node_hosts_and_tls_from_the_environment() {
        let cfg = Config::load_from(
            None,
            &env(&[
                ("REG_DATA_DIR", "/srv/reg"),
                ("REG_NODE_HOSTS", "unix:///run/reg.sock, tcp://0.0.0.0:2376"),
                ("REG_NODE_TLS_VERIFY", "true"),
                ("REG_NODE_TLS_CA", "/etc/reg/ca.pem"),
                ("REG_NODE_TLS_CERT", "/etc/reg/cert.pem"),
                ("REG_NODE_TLS_KEY", "/etc/reg/key.pem"),
            ]),
        )
        .expect("valid");
        assert_eq!(
            cfg.node_hosts(),
            vec!["unix:///run/reg.sock", "tcp://0.0.0.0:2376"]
        );
        assert_eq!(cfg.node_client_host(), "unix:///run/reg.sock");
        assert_eq!(
            cfg.node.tls().map(|t| t.ca),
            Some(PathBuf::from("/etc/reg/ca.pem"))
        );
        let plain = Config::load_from(None, &env(&[("REG_DATA_DIR", "/srv/reg")])).expect("ok");
        assert_eq!(plain.node_hosts(), vec!["unix:///srv/reg/node.sock"]);
    }

    #[test]
    fn node_keys_that_make_no_sense_are_refused_with_their_key() {
        #[track_caller]
        fn check(vars: &[(&str, &str)], key: &str) {
            let err = Config::load_from(None, &env(vars)).expect_err("refused");
            assert!(err.to_string().contains(key), "{err}");
        }
        check(&[("REG_NODE_SOCKET", "tcp://0.0.0.0:2376")], "node.socket");
        check(&[("REG_NODE_HOSTS", "0.0.0.0:2376")], "node.hosts[0]");
        check(&[("REG_NODE_HOSTS", "unix:///a,ssh://b")], "node.hosts[1]");
        check(&[("REG_NODE_TLS_VERIFY", "true")], "node.tls_ca");
        check(&[("REG_NODE_TLS_CERT", "/c.pem")], "node.tls_cert");
    }

    #[test]
    fn bad_addr_is_refused_with_key() {
        let err = Config::load_from(None, &env(&[("REG_REGISTRY_ADDR", "localhost")]))
            .expect_err("no port");
        assert!(err.to_string().contains("registry.addr"), "{err}");
    }
}
