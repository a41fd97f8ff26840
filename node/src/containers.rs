//! Containers through the agent, docker's lifecycle: create → start → (running) → exited →
//! start again or remove. Each started container gets one monitor process (a re-exec of
//! `reg node monitor` from the sealed copy of the binary, in its own process group) that owns
//! the container and writes what happens into the container's directory: `container.log`
//! (JSON lines), `pid`, `exit`, `oom`. The agent keeps the records in SQLite
//! (`containers.db`) and learns everything else from those files, so containers keep running
//! and logging while the agent restarts, and a restarted agent re-attaches from its records.
//!
//! API (JSON; streams are JSON lines `{"stdout": …}`, `{"stderr": …}`, ending with
//! `{"exit": code}` when following a container to its end):
//! `POST /containers/create`, `GET /containers?all=1`, `GET /containers/{id}/json`,
//! `POST /containers/{id}/start[?attach=1]`, `GET /containers/{id}/logs?follow=1&tail=N`,
//! `POST /containers/{id}/stop?t=S`, `POST /containers/{id}/kill?signal=S`,
//! `POST /containers/{id}/wait`, `DELETE /containers/{id}?force=1`,
//! `POST /containers/{id}/exec` (streams).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc::UnboundedSender;

use crate::agent::{api_error, AgentState};
use crate::exe::SealedExe;
use crate::monitor::{EXIT, LOG, OOM, PID};
use crate::runtime::Spec;
use reg_registry::Reference;

/// What `reg run` / `reg create` asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunRequest {
    pub image: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub limits: crate::runtime::Limits,
    /// Remove the container when it exits (`--rm`).
    #[serde(default)]
    pub rm: bool,
    /// `no`, `on-failure[:N]`, `always`, `unless-stopped`.
    #[serde(default)]
    pub restart: Option<String>,
    #[serde(default)]
    pub security: crate::runtime::Security,
    /// `-v /host:/ctr[:ro]`, `-v NAME:/ctr[:ro]`, `-v /ctr` (anonymous volume).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// `bridge` (default), a network's name, `none`, `host` or `container:OTHER`.
    #[serde(default)]
    pub network: Option<String>,
    /// `--ip`: a fixed address on the network.
    #[serde(default)]
    pub ip: Option<String>,
    /// `--network-alias`: more names the container answers to on its network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `--link NAME[:ALIAS]`.
    #[serde(default)]
    pub links: Vec<String>,
    /// `-p [HOSTIP:][HOSTPORT:]CTRPORT[/udp]`.
    #[serde(default)]
    pub publish: Vec<String>,
    /// `-P`: every port the image EXPOSEs, on a free host port.
    #[serde(default)]
    pub publish_all: bool,
    /// `--dns`: resolvers for the container (forwarded to, on user-defined networks).
    #[serde(default)]
    pub dns: Vec<String>,
    /// `--add-host NAME:IP` (IP may be `host-gateway`).
    #[serde(default)]
    pub add_hosts: Vec<String>,
    /// `-t`: a pseudo-terminal, of this size (rows, columns).
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub tty_size: Option<(u16, u16)>,
}

/// A container's state, docker's fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerState {
    /// `created`, `running` or `exited`.
    pub status: String,
    pub pid: i32,
    pub monitor_pid: i32,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub started_at: String,
    pub finished_at: String,
    pub restart_count: u32,
    /// Stopped or killed by a user: the restart policy leaves it alone.
    pub manually_stopped: bool,
    pub error: String,
    /// Published ports as bound by the last start.
    #[serde(default)]
    pub ports: Vec<crate::network::PortBinding>,
}

/// The container's place on one network, for inspect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetInfo {
    pub network: String,
    pub network_id: String,
    pub ip: String,
    pub prefix: u8,
    pub gateway: String,
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    /// The image reference it was created from, and that image's id.
    pub image: String,
    pub image_id: String,
    pub created: String,
    pub stop_signal: String,
    pub request: RunRequest,
    pub spec: Spec,
    pub state: ContainerState,
    #[serde(default)]
    pub networks: Vec<NetInfo>,
    /// What `-p`/`-P` asked for, resolved at create.
    #[serde(default)]
    pub ports: Vec<crate::ports::PortSpec>,
}

impl Record {
    /// `docker inspect`'s shape.
    pub fn docker_json(&self) -> serde_json::Value {
        let s = &self.state;
        let running = s.status == "running";
        let (policy, retries) = restart_policy(self.request.restart.as_deref()).unwrap_or_default();
        let lower: Vec<String> = self
            .spec
            .layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        serde_json::json!({
            "Id": self.id,
            "Created": self.created,
            "Path": self.spec.args.first(),
            "Args": self.spec.args.get(1..).unwrap_or_default(),
            "State": {
                "Status": s.status,
                "Running": running,
                "Paused": false,
                "Restarting": false,
                "OOMKilled": s.oom_killed,
                "Dead": false,
                "Pid": if running { s.pid } else { 0 },
                "ExitCode": s.exit_code,
                "Error": s.error,
                "StartedAt": if s.started_at.is_empty() { "0001-01-01T00:00:00Z" } else { &s.started_at },
                "FinishedAt": if s.finished_at.is_empty() { "0001-01-01T00:00:00Z" } else { &s.finished_at },
            },
            "Image": self.image_id,
            "Name": format!("/{}", self.name),
            "RestartCount": s.restart_count,
            "LogPath": self.spec.dir.join(LOG),
            "Mounts": self.spec.mounts.iter().map(|m| serde_json::json!({
                "Source": m.source,
                "Destination": m.target,
                "RW": !m.readonly,
                "Type": if m.source.starts_with(crate::volumes::root_of(&self.spec.dir)) { "volume" } else { "bind" },
            })).collect::<Vec<_>>(),
            "Driver": "overlay",
            "HostConfig": {
                "AutoRemove": self.request.rm,
                "NetworkMode": self.spec.network,
                "Binds": self.request.volumes,
                "Memory": self.request.limits.memory.unwrap_or(0),
                "NanoCpus": self.request.limits.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
                "PidsLimit": self.request.limits.pids,
                "RestartPolicy": { "Name": policy, "MaximumRetryCount": retries },
                "Privileged": self.spec.security.privileged,
                "CapAdd": self.request.security.cap_add,
                "CapDrop": self.request.security.cap_drop,
                "SecurityOpt": self.request.security.seccomp.as_ref().map(|p| vec![format!("seccomp={p}")]),
            },
            "Config": {
                "Hostname": self.spec.hostname,
                "Tty": self.spec.tty,
                "User": self.request.user.clone().unwrap_or_default(),
                "Env": self.spec.env,
                "Cmd": self.request.cmd,
                "Image": self.image,
                "WorkingDir": self.spec.cwd,
                "Entrypoint": self.request.entrypoint,
                "StopSignal": self.stop_signal,
            },
            "NetworkSettings": self.network_settings(),
            "GraphDriver": {
                "Name": "overlay",
                "Data": {
                    "LowerDir": lower.join(":"),
                    "UpperDir": self.spec.dir.join("upper"),
                    "WorkDir": self.spec.dir.join("work"),
                    "MergedDir": self.spec.dir.join("rootfs"),
                },
            },
        })
    }
}

impl Record {
    /// docker's `NetworkSettings`: the first network's address at the top, every network by
    /// name, and the published ports (`"80/tcp": [{"HostIp", "HostPort"}]`).
    fn network_settings(&self) -> serde_json::Value {
        let first = self.networks.first();
        let mut networks = serde_json::Map::new();
        for n in &self.networks {
            let ip: std::net::Ipv4Addr = n.ip.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            networks.insert(
                n.network.clone(),
                serde_json::json!({
                    "NetworkID": n.network_id,
                    "IPAddress": n.ip,
                    "IPPrefixLen": n.prefix,
                    "Gateway": n.gateway,
                    "MacAddress": crate::network::mac_string(ip),
                    "Aliases": n.aliases,
                }),
            );
        }
        let mut ports = serde_json::Map::new();
        for p in &self.state.ports {
            let key = format!("{}/{}", p.container_port, p.proto);
            let entry = ports.entry(key).or_insert_with(|| serde_json::json!([]));
            if let Some(a) = entry.as_array_mut() {
                a.push(
                    serde_json::json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}),
                );
            }
        }
        serde_json::json!({
            "IPAddress": first.map(|n| n.ip.as_str()).unwrap_or(""),
            "IPPrefixLen": first.map(|n| n.prefix).unwrap_or(0),
            "Gateway": first.map(|n| n.gateway.as_str()).unwrap_or(""),
            "MacAddress": first.and_then(|n| n.ip.parse().ok()).map(crate::network::mac_string).unwrap_or_default(),
            "SandboxKey": if self.networks.is_empty() { String::new() } else { self.spec.dir.join("netns").display().to_string() },
            "Networks": networks,
            "Ports": ports,
        })
    }
}

/// `on-failure:3` → ("on-failure", 3).
fn restart_policy(p: Option<&str>) -> Result<(String, u32), String> {
    let p = p.unwrap_or("no");
    let (name, n) = match p.split_once(':') {
        Some((name, n)) => (
            name,
            n.parse::<u32>()
                .map_err(|_| format!("invalid restart policy {p:?}: the count must be a number"))?,
        ),
        None => (p, 0),
    };
    match name {
        "no" | "always" | "unless-stopped" if n == 0 => Ok((name.to_string(), 0)),
        "on-failure" => Ok((name.to_string(), n)),
        "no" | "always" | "unless-stopped" => Err(format!(
            "invalid restart policy {p:?}: only on-failure takes a count"
        )),
        _ => Err(format!(
            "invalid restart policy {p:?}: use no, on-failure[:N], always or unless-stopped"
        )),
    }
}

/// The agent's containers: records in SQLite, change notifications, the sealed binary.
pub struct Containers {
    root: PathBuf,
    pub networks: Arc<crate::network::Networks>,
    /// Named volumes: `<node>/volumes/NAME/_data`.
    pub volumes: PathBuf,
    db: Mutex<rusqlite::Connection>,
    changed: tokio::sync::watch::Sender<u64>,
    exe: tokio::sync::OnceCell<Arc<SealedExe>>,
    /// Exit codes of containers removed on exit (`--rm`), for whoever follows them.
    last_exit: Mutex<HashMap<String, i32>>,
    /// Containers due for a restart by their policy (started by one task: see `reattach`).
    restarts: tokio::sync::mpsc::UnboundedSender<String>,
    restarts_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
}

#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        api_error(self.0, self.1)
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The JSON `record` column of each row `sql` selects, parsed (rows that do not parse are
/// skipped): containers, networks and endpoints are all stored this way.
pub(crate) fn records<T: serde::de::DeserializeOwned>(
    db: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>, ApiError> {
    let mut st = db.prepare(sql).map_err(internal)?;
    let rows = st
        .query_map(params, |r| r.get::<_, String>(0))
        .map_err(internal)?;
    Ok(rows
        .filter_map(Result::ok)
        .filter_map(|s| serde_json::from_str(&s).ok())
        .collect())
}

fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// 64 hex digits from the OS's random source (container ids, anonymous volume names).
pub(crate) fn random_hex() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

const ADJECTIVES: [&str; 16] = [
    "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nimble", "proud", "quiet", "sharp", "tender", "witty",
];
const NOUNS: [&str; 16] = [
    "albatross",
    "badger",
    "crane",
    "dolphin",
    "falcon",
    "gecko",
    "heron",
    "ibis",
    "jaguar",
    "koala",
    "lemur",
    "marmot",
    "newt",
    "otter",
    "panda",
    "quokka",
];

fn read_file(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether the monitor of container `id` still runs (its command line names the container).
fn monitor_alive(pid: i32, id: &str) -> bool {
    pid > 0
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(id))
}

impl Containers {
    pub fn open(node_root: &Path) -> Result<Arc<Containers>, rusqlite::Error> {
        let root = node_root.join("containers");
        let _ = std::fs::create_dir_all(&root);
        let db = rusqlite::Connection::open(node_root.join("containers.db"))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS containers (
                 id TEXT PRIMARY KEY,
                 name TEXT NOT NULL UNIQUE,
                 record TEXT NOT NULL
             );",
        )?;
        let networks = crate::network::Networks::open(node_root).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(e),
            )
        })?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Arc::new(Containers {
            root,
            networks,
            volumes: node_root.join("volumes"),
            db: Mutex::new(db),
            changed: tokio::sync::watch::channel(0).0,
            exe: tokio::sync::OnceCell::new(),
            last_exit: Mutex::new(HashMap::new()),
            restarts: tx,
            restarts_rx: Mutex::new(Some(rx)),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, rusqlite::Connection>, ApiError> {
        self.db
            .lock()
            .map_err(|_| internal("container database lock poisoned"))
    }

    pub fn list(&self) -> Result<Vec<Record>, ApiError> {
        let mut out: Vec<Record> = records(&*self.db()?, "SELECT record FROM containers", [])?;
        out.sort_by(|a, b| b.created.cmp(&a.created));
        Ok(out)
    }

    fn get(&self, id: &str) -> Result<Option<Record>, ApiError> {
        use rusqlite::OptionalExtension;
        let db = self.db()?;
        let s: Option<String> = db
            .query_row("SELECT record FROM containers WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(internal)?;
        Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// A container by full id, unique id prefix, or name.
    pub fn resolve(&self, key: &str) -> Result<Record, ApiError> {
        use rusqlite::OptionalExtension;
        let key = key.trim_start_matches('/');
        let db = self.db()?;
        // A full id or a name: one indexed row. Otherwise an id prefix, which must be unique.
        let exact: Option<String> = db
            .query_row(
                "SELECT record FROM containers WHERE id = ?1 OR name = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map_err(internal)?;
        let found: Vec<String> = match exact {
            Some(r) => vec![r],
            None if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) => Vec::new(),
            None => {
                let mut st = db
                    .prepare("SELECT record FROM containers WHERE substr(id, 1, length(?1)) = ?1 LIMIT 2")
                    .map_err(internal)?;
                let rows = st
                    .query_map([key], |r| r.get::<_, String>(0))
                    .map_err(internal)?;
                rows.filter_map(Result::ok).collect()
            }
        };
        match found.as_slice() {
            [one] => serde_json::from_str(one).map_err(internal),
            [] => Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no such container: {key}"),
            )),
            _ => Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("{key:?} matches several containers: give more of the id"),
            )),
        }
    }

    fn put(&self, r: &Record) -> Result<(), ApiError> {
        let json = serde_json::to_string(r).map_err(internal)?;
        self.db()?
            .execute(
                "INSERT INTO containers (id, name, record) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET record = excluded.record",
                rusqlite::params![r.id, r.name, json],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    ApiError(
                        StatusCode::CONFLICT,
                        format!(
                            "the name {:?} is already in use by another container: remove it or choose another name",
                            r.name
                        ),
                    )
                }
                e => internal(e),
            })?;
        self.changed.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Changes a stored record in place (no-op when it is gone).
    fn update(&self, id: &str, f: impl FnOnce(&mut Record)) -> Result<Option<Record>, ApiError> {
        let Some(mut r) = self.get(id)? else {
            return Ok(None);
        };
        f(&mut r);
        self.put(&r)?;
        Ok(Some(r))
    }

    async fn sealed_exe(&self) -> Result<Arc<SealedExe>, ApiError> {
        self.exe
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(SealedExe::new)
                    .await
                    .map_err(internal)?
                    .map(Arc::new)
                    .map_err(|e| internal(format!("sealing a copy of the reg binary: {e}")))
            })
            .await
            .cloned()
    }

    /// Runs `spec` once to its end as a build step (`reg build`'s RUN): the same monitor and
    /// runtime as a container, but no record and no name. Its network is `bridge` (docker
    /// build's default: an address on the default bridge network for the step's life, NAT to
    /// the outside, nothing of the host's loopback), `none` or `host`. Each line of output goes
    /// to `on_output` as the monitor logs it. Returns the exit code; the step's directory
    /// (bundle, upper dir, log) is the caller's, and its upper dir holds only what the step
    /// changed (the runtime's own mount points are removed).
    pub async fn run_step(
        self: &Arc<Self>,
        mut spec: crate::runtime::Spec,
        on_output: impl Fn(String) + Send + Sync + 'static,
    ) -> Result<i32, String> {
        let bridged = match spec.network.as_str() {
            "none" | "host" => false,
            crate::network::DEFAULT => true,
            other => {
                return Err(format!(
                    "a build step runs with network bridge, none or host, not {other}"
                ))
            }
        };
        if !bridged {
            return self.run_step_in(spec, on_output).await;
        }
        let net = self.networks.ensure_default().map_err(|e| e.1)?;
        let ep = self
            .networks
            .allocate(&net, &spec.id, &spec.hostname, None, Vec::new())
            .map_err(|e| e.1)?;
        let netns = spec.dir.join("netns");
        let id = spec.id.clone();
        let attached = self
            .networks
            .attach(&id, &netns, &[], crate::network::upstream_resolvers(&[]))
            .await;
        let result = match attached {
            Ok(_) => {
                spec.netns = Some(netns.clone());
                spec.ip = Some(ep.ip.to_string());
                let r = self.run_step_in(spec, on_output).await;
                let _ = self.networks.detach(&id, &netns, &[]).await;
                r
            }
            Err(e) => Err(format!(
                "connecting the step to the {} network: {}",
                crate::network::DEFAULT,
                e.1
            )),
        };
        let _ = self.networks.release(&id, None);
        result
    }

    async fn run_step_in(
        self: &Arc<Self>,
        spec: crate::runtime::Spec,
        on_output: impl Fn(String) + Send + Sync + 'static,
    ) -> Result<i32, String> {
        let dir = spec.dir.clone();
        let written = spec.clone();
        tokio::task::spawn_blocking(move || crate::bundle::write(&written))
            .await
            .map_err(|e| e.to_string())??;
        let exe = self.sealed_exe().await.map_err(|e| e.1)?;
        let mut child = spawn_monitor(&exe, &dir, true)
            .map_err(|e| format!("starting the step's monitor: {e}"))?;
        let log_path = dir.join(LOG);
        // The log, opened once it exists and read as it grows; a record is one line of JSON.
        let mut log: Option<std::fs::File> = None;
        let mut partial: Vec<u8> = Vec::new();
        let mut drain = || {
            use std::io::Read;
            if log.is_none() {
                log = std::fs::File::open(&log_path).ok();
            }
            let Some(f) = log.as_mut() else { return };
            let _ = f.read_to_end(&mut partial);
            while let Some(i) = partial.iter().position(|&b| b == b'\n') {
                let record: Vec<u8> = partial.drain(..=i).collect();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&record) {
                    if let Some(text) = v["log"].as_str() {
                        on_output(text.trim_end_matches('\n').to_string());
                    }
                }
            }
        };
        loop {
            tokio::select! {
                _ = child.wait() => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => drain(),
            }
        }
        drain();
        let _ =
            tokio::task::spawn_blocking(move || crate::rootfs::remove_mount_points(&spec)).await;
        read_file(&dir, EXIT)
            .and_then(|c| c.trim().parse().ok())
            .ok_or_else(|| "the step's monitor ended without recording an exit code".to_string())
    }

    /// Waits until `id` is no longer running (or gone); false on timeout.
    async fn wait_stopped(&self, id: &str, timeout: Duration) -> bool {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.get(id) {
                Ok(Some(r)) if r.state.status == "running" => {}
                _ => return true,
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }

    /// Re-attaches to the containers a previous agent left running, and starts the task that
    /// restarts containers by their policy. Call once, inside the runtime.
    pub fn reattach(self: &Arc<Self>) {
        if let Some(mut rx) = self.restarts_rx.lock().ok().and_then(|mut r| r.take()) {
            let cs = self.clone();
            tokio::spawn(async move {
                while let Some(id) = rx.recv().await {
                    let still = matches!(cs.get(&id), Ok(Some(r)) if r.state.status == "exited" && !r.state.manually_stopped);
                    if still {
                        let _ = cs.update(&id, |r| r.state.restart_count += 1);
                        if let Err(e) = start(&cs, &id).await {
                            tracing::warn!(container = %id, error = %e.1, "restart failed");
                        }
                    }
                }
            });
        }
        let Ok(all) = self.list() else { return };
        for r in all.into_iter().filter(|r| r.state.status == "running") {
            tracing::info!(container = %r.id, "re-attaching");
            if !r.networks.is_empty() {
                let (n, id, ports) = (self.networks.clone(), r.id.clone(), r.state.ports.clone());
                let netns = r.spec.dir.join("netns");
                let upstream = crate::network::upstream_resolvers(&r.request.dns);
                tokio::spawn(async move {
                    if let Err(e) = n.reattach(&id, &netns, &ports, upstream).await {
                        tracing::warn!(container = %id, error = %e.1, "re-attaching the network");
                    }
                });
            }
            tokio::spawn(watch_exit(
                self.clone(),
                r.id.clone(),
                None,
                r.state.monitor_pid,
            ));
        }
    }
}

/// `/etc/hosts` lines from `--link` (the linked container must run) and `--add-host`.
fn extra_hosts(cs: &Arc<Containers>, rec: &Record) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for l in &rec.request.links {
        let (name, alias) = l.split_once(':').unwrap_or((l, l));
        let o = cs
            .resolve(name)
            .map_err(|e| ApiError(e.0, format!("--link {l}: {}", e.1)))?;
        if o.state.status != "running" {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "--link {l}: cannot link to container {}: it is not running",
                    o.name
                ),
            ));
        }
        // Its address on a network both share, else its first.
        let ip = o
            .networks
            .iter()
            .find(|n| rec.networks.iter().any(|m| m.network_id == n.network_id))
            .or(o.networks.first())
            .map(|n| n.ip.clone())
            .ok_or_else(|| {
                ApiError(
                    StatusCode::CONFLICT,
                    format!("--link {l}: container {} has no network address", o.name),
                )
            })?;
        let names = if alias == o.name {
            format!("{} {}", o.name, &o.id[..12])
        } else {
            format!("{alias} {} {}", o.name, &o.id[..12])
        };
        out.push(format!("{ip}\t{names}"));
    }
    for h in &rec.request.add_hosts {
        let Some((name, ip)) = h.split_once(':') else {
            continue;
        };
        let ip = if ip == "host-gateway" {
            rec.networks
                .first()
                .map(|n| n.gateway.clone())
                .ok_or_else(|| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("--add-host {h}: host-gateway needs a bridge network"),
                    )
                })?
        } else {
            ip.to_string()
        };
        out.push(format!("{ip}\t{name}"));
    }
    Ok(out)
}

/// `reg node monitor --bundle DIR` from the sealed copy of the binary, in its own process group
/// (a ^C meant for a foreground agent does not reach it). A container's monitor outlives the
/// agent (`kill_on_drop` false); a build step's goes with its build.
fn spawn_monitor(
    exe: &SealedExe,
    dir: &Path,
    kill_on_drop: bool,
) -> std::io::Result<tokio::process::Child> {
    tokio::process::Command::new(exe.path())
        .args(["node", "monitor", "--bundle"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(kill_on_drop)
        .spawn()
}

/// Starts the monitor of an existing container and marks it running.
async fn start(cs: &Arc<Containers>, id: &str) -> Result<Record, ApiError> {
    let rec = cs
        .get(id)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no such container: {id}")))?;
    if rec.state.status == "running" {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("container {} is already running", rec.name),
        ));
    }
    crate::runtime::warm_cgroup_moves();
    let dir = rec.spec.dir.clone();
    for f in [PID, EXIT, OOM] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let mut spec = rec.spec.clone();
    spec.extra_hosts = extra_hosts(cs, &rec)?;
    spec.dns = rec.request.dns.clone();
    let netns = dir.join("netns");
    let mut bound = Vec::new();
    if !rec.networks.is_empty() {
        let upstream = crate::network::upstream_resolvers(&rec.request.dns);
        bound = cs
            .networks
            .attach(&rec.id, &netns, &rec.ports, upstream)
            .await
            .map_err(|e| ApiError(e.0, format!("container {}: {}", rec.name, e.1)))?;
        spec.netns = Some(netns.clone());
        spec.ip = rec.networks.first().map(|n| n.ip.clone());
        if rec
            .networks
            .iter()
            .any(|n| n.network != crate::network::DEFAULT)
        {
            spec.dns = vec!["127.0.0.11".into()];
        }
    } else if let Some(other) = spec.network.strip_prefix("container:") {
        let o = cs.resolve(other)?;
        if o.state.status != "running" {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "cannot join the network of container {}: it is not running",
                    o.name
                ),
            ));
        }
        let theirs = o.spec.dir.join("netns");
        spec.netns = Some(if theirs.exists() {
            theirs
        } else {
            format!("/proc/{}/ns/net", o.state.pid).into()
        });
    }
    let undo = |cs: Arc<Containers>,
                id: String,
                netns: PathBuf,
                ports: Vec<crate::network::PortBinding>| async move {
        let _ = cs.networks.detach(&id, &netns, &ports).await;
    };
    let written = tokio::task::spawn_blocking(move || crate::bundle::write(&spec))
        .await
        .map_err(internal)
        .and_then(|r| {
            r.map_err(|e| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("container {}: {e}", rec.name),
                )
            })
        });
    if let Err(e) = written {
        undo(cs.clone(), id.to_string(), netns, bound).await;
        return Err(e);
    }
    let exe = match cs.sealed_exe().await {
        Ok(e) => e,
        Err(e) => {
            undo(cs.clone(), id.to_string(), netns, bound).await;
            return Err(e);
        }
    };
    let child = spawn_monitor(&exe, &dir, false);
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            undo(cs.clone(), id.to_string(), netns, bound).await;
            return Err(internal(format!("starting the container monitor: {e}")));
        }
    };
    let monitor_pid = child.id().map(|p| p as i32).unwrap_or(0);
    // The monitor writes `pid` once the init is in its namespaces and cgroup (or `exit`).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut pid = 0;
    while std::time::Instant::now() < deadline {
        if let Some(p) = read_file(&dir, PID).and_then(|p| p.parse().ok()) {
            pid = p;
            break;
        }
        if dir.join(EXIT).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rec = cs
        .update(id, |r| {
            r.state = ContainerState {
                status: "running".into(),
                pid,
                monitor_pid,
                started_at: now(),
                restart_count: r.state.restart_count,
                ports: bound,
                ..ContainerState::default()
            };
        })?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no such container: {id}")))?;
    tokio::spawn(watch_exit(
        cs.clone(),
        id.to_string(),
        Some(child),
        monitor_pid,
    ));
    Ok(rec)
}

/// Waits for a container's monitor to end, then records the exit and applies `--rm` and the
/// restart policy. `child` is the monitor when this agent started it; a re-attached monitor
/// (started by an earlier agent) is watched through its files.
async fn watch_exit(
    cs: Arc<Containers>,
    id: String,
    child: Option<tokio::process::Child>,
    monitor_pid: i32,
) {
    let Ok(Some(rec)) = cs.get(&id) else { return };
    let dir = rec.spec.dir.clone();
    match child {
        Some(mut c) => {
            let _ = c.wait().await;
        }
        None => {
            while !dir.join(EXIT).exists() && monitor_alive(monitor_pid, &id) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let (code, error) = match read_file(&dir, EXIT).and_then(|c| c.parse::<i32>().ok()) {
        Some(c) => (c, String::new()),
        None => {
            // The monitor was killed: its init died with it (parent-death signal); what the
            // monitor would have cleaned up, the agent does.
            let id2 = id.clone();
            let _ = tokio::task::spawn_blocking(move || crate::runtime::remove_cgroup(&id2)).await;
            (
                255,
                "the container's monitor ended without recording an exit code".into(),
            )
        }
    };
    let oom = dir.join(OOM).exists();
    if !rec.networks.is_empty() {
        if let Err(e) = cs
            .networks
            .detach(&id, &dir.join("netns"), &rec.state.ports)
            .await
        {
            tracing::warn!(container = %id, error = %e.1, "taking down the container's network");
        }
    }
    if let Ok(mut m) = cs.last_exit.lock() {
        m.insert(id.clone(), code);
    }
    if rec.request.rm {
        // Removed before anyone following it hears the exit code: `run --rm` returns after.
        let _ = remove(&cs, &rec).await;
        return;
    }
    let Ok(Some(rec)) = cs.update(&id, |r| {
        r.state.status = "exited".into();
        r.state.exit_code = code;
        r.state.oom_killed = oom;
        r.state.finished_at = now();
        r.state.error = error;
    }) else {
        return;
    };
    let (policy, max) = restart_policy(rec.request.restart.as_deref()).unwrap_or_default();
    let again = !rec.state.manually_stopped
        && match policy.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => code != 0 && (max == 0 || rec.state.restart_count < max),
            _ => false,
        };
    if again {
        // docker's back-off: 100 ms doubling, capped at a minute.
        let delay = 100u64 << rec.state.restart_count.min(9);
        tokio::time::sleep(Duration::from_millis(delay.min(60_000))).await;
        let _ = cs.restarts.send(id);
    }
}

async fn remove(cs: &Arc<Containers>, rec: &Record) -> Result<(), ApiError> {
    // The namespace file is a mount point: it must go before the directory can.
    if !rec.networks.is_empty() || rec.spec.dir.join("netns").exists() {
        cs.networks
            .detach(&rec.id, &rec.spec.dir.join("netns"), &rec.state.ports)
            .await?;
    }
    cs.networks.release(&rec.id, None)?;
    // The directory goes first: whoever sees the record gone may rely on it being gone.
    let dir = rec.spec.dir.clone();
    let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("{}: {e}", dir.display()))
        }
        _ => Ok(()),
    })
    .await
    .map_err(internal)?;
    if let Err(e) = removed {
        tracing::warn!(container = %rec.id, error = %e, "removing the container's directory");
    }
    // Anonymous volumes (`-v /path`, named by 64 hex digits) go with their container.
    for m in &rec.spec.mounts {
        let anonymous = m.source.starts_with(&cs.volumes)
            && m.source
                .parent()
                .and_then(|p| p.file_name())
                .is_some_and(|n| {
                    n.len() == 64 && n.to_string_lossy().bytes().all(|b| b.is_ascii_hexdigit())
                });
        if anonymous {
            if let Some(vol) = m.source.parent() {
                let _ = std::fs::remove_dir_all(vol);
            }
        }
    }
    cs.db()?
        .execute("DELETE FROM containers WHERE id = ?1", [&rec.id])
        .map_err(internal)?;
    cs.changed.send_modify(|g| *g += 1);
    Ok(())
}

/// `KEY=VALUE` entries of `extra` replace those of `env` with the same key.
fn merge_env(env: &mut Vec<String>, extra: &[String]) {
    for e in extra {
        let key = e.split('=').next().unwrap_or(e);
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
}

/// The container's argv and env from the image config and the request (docker's rules:
/// a CMD replaces the image's Cmd, an entrypoint replaces Entrypoint and drops the image's Cmd).
fn command(config: &serde_json::Value, req: &RunRequest) -> (Vec<String>, Vec<String>, String) {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let c = &config["config"];
    let entrypoint = req
        .entrypoint
        .clone()
        .unwrap_or_else(|| strings(&c["Entrypoint"]));
    let cmd = if !req.cmd.is_empty() {
        req.cmd.clone()
    } else if req.entrypoint.is_some() {
        Vec::new()
    } else {
        strings(&c["Cmd"])
    };
    let mut env = strings(&c["Env"]);
    merge_env(&mut env, &req.env);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let cwd = req
        .workdir
        .clone()
        .or_else(|| c["WorkingDir"].as_str().map(str::to_string))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    (entrypoint.into_iter().chain(cmd).collect(), env, cwd)
}

/// Allocates container `id` an address on `net` and records it (takes effect at its next start).
fn connect(
    cs: &Arc<Containers>,
    id: &str,
    net: &crate::network::Network,
    ip: Option<std::net::Ipv4Addr>,
    aliases: Vec<String>,
) -> Result<Record, ApiError> {
    let rec = cs
        .get(id)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no such container: {id}")))?;
    let mut aliases = aliases;
    if net.name != crate::network::DEFAULT {
        // docker: the short id answers too, on user-defined networks.
        aliases.push(id[..12].to_string());
    }
    let ep = cs
        .networks
        .allocate(net, id, &rec.name, ip, aliases.clone())?;
    let prefix = crate::network::Subnet::parse(&net.subnet)
        .map(|s| s.prefix)
        .unwrap_or(16);
    let info = NetInfo {
        network: net.name.clone(),
        network_id: net.id.clone(),
        ip: ep.ip.to_string(),
        prefix,
        gateway: net.gateway.clone(),
        aliases,
    };
    cs.update(id, |r| r.networks.push(info))?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no such container: {id}")))
}

/// `network connect NET CTR`: an address now, an interface at once if it runs.
pub async fn network_connect(
    cs: &Arc<Containers>,
    net: &str,
    container: &str,
    ip: Option<std::net::Ipv4Addr>,
    aliases: Vec<String>,
) -> Result<(), ApiError> {
    let net = if net == crate::network::DEFAULT {
        cs.networks.ensure_default()?
    } else {
        cs.networks.get(net)?
    };
    let rec = cs.resolve(container)?;
    if rec.networks.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "container {} uses --network {}: only containers on bridge networks can join more",
                rec.name, rec.spec.network
            ),
        ));
    }
    let rec = connect(cs, &rec.id, &net, ip, aliases)?;
    if rec.state.status == "running" {
        let ep = cs
            .networks
            .endpoints_of(&rec.id)?
            .into_iter()
            .find(|e| e.network == net.id)
            .ok_or_else(|| internal("endpoint vanished"))?;
        if let Err(e) = cs
            .networks
            .hot_plug(&net, &ep, &rec.spec.dir.join("netns"))
            .await
        {
            let _ = network_disconnect(cs, &net.id, &rec.id).await;
            return Err(e);
        }
    }
    Ok(())
}

/// `network disconnect NET CTR`.
pub async fn network_disconnect(
    cs: &Arc<Containers>,
    net: &str,
    container: &str,
) -> Result<(), ApiError> {
    let net = cs.networks.get(net)?;
    let rec = cs.resolve(container)?;
    let Some(ep) = cs
        .networks
        .endpoints_of(&rec.id)?
        .into_iter()
        .find(|e| e.network == net.id)
    else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "container {} is not connected to network {}",
                rec.name, net.name
            ),
        ));
    };
    if rec.state.status == "running" {
        cs.networks.hot_unplug(&ep).await?;
    }
    cs.networks.release(&rec.id, Some(&net.id))?;
    cs.update(&rec.id, |r| r.networks.retain(|n| n.network_id != net.id))?;
    Ok(())
}

pub async fn create(
    State(st): State<Arc<AgentState>>,
    Json(req): Json<RunRequest>,
) -> Result<Response, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let r = Reference::parse(&req.image, &st.default_registry).map_err(|e| bad(e.to_string()))?;
    restart_policy(req.restart.as_deref()).map_err(bad)?;
    if req.rm && !matches!(req.restart.as_deref(), None | Some("no")) {
        return Err(bad(
            "conflicting options: --restart and --rm (a removed container cannot restart)".into(),
        ));
    }
    if let Some(n) = &req.name {
        let valid = !n.is_empty()
            && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err(bad(format!(
                "invalid container name {n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
    }
    let security = crate::runtime::resolve_security(&req.security).map_err(bad)?;
    // The network: a mode (none, host, container:OTHER) or a bridge network by name.
    let mode = req
        .network
        .clone()
        .unwrap_or_else(|| crate::network::DEFAULT.into());
    let net = match mode.as_str() {
        "none" | "host" => None,
        m if m.starts_with("container:") => {
            st.containers.resolve(&m["container:".len()..])?;
            if !req.publish.is_empty() || req.publish_all {
                return Err(bad(
                    "conflicting options: port publishing and the container network mode".into(),
                ));
            }
            None
        }
        name => {
            let cs = st.containers.clone();
            Some(if name == crate::network::DEFAULT {
                cs.networks.ensure_default()?
            } else {
                cs.networks.get(name)?
            })
        }
    };
    let network = mode.as_str();
    if net.is_none() && (req.ip.is_some() || !req.aliases.is_empty() || !req.links.is_empty()) {
        return Err(bad(format!(
            "--ip, --network-alias and --link need a bridge network, not --network {network}"
        )));
    }
    let fixed_ip: Option<std::net::Ipv4Addr> = match &req.ip {
        Some(ip) => Some(
            ip.parse()
                .map_err(|_| bad(format!("--ip {ip}: not an IPv4 address")))?,
        ),
        None => None,
    };
    if fixed_ip.is_some()
        && net
            .as_ref()
            .is_some_and(|n| n.name == crate::network::DEFAULT)
    {
        return Err(bad("--ip works on user-defined networks only (as with docker): create one with `reg network create`".into()));
    }
    for h in &req.add_hosts {
        let ok = h.split_once(':').is_some_and(|(n, ip)| {
            !n.is_empty() && (ip == "host-gateway" || ip.parse::<std::net::IpAddr>().is_ok())
        });
        if !ok {
            return Err(bad(format!(
                "--add-host {h}: expected NAME:IP (or NAME:host-gateway)"
            )));
        }
    }
    for d in &req.dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(bad(format!("--dns {d}: not an IP address")));
        }
    }
    let mut ports = Vec::new();
    for p in &req.publish {
        ports.push(crate::ports::PortSpec::parse(p).map_err(bad)?);
    }
    if (!ports.is_empty() || req.publish_all) && net.is_none() {
        return Err(bad(format!(
            "published ports need a bridge network, not --network {network}"
        )));
    }
    let mut mounts = Vec::new();
    for v in &req.volumes {
        mounts.push(crate::volumes::resolve(&st.containers.volumes, v).map_err(bad)?);
    }
    let (store, key) = (st.store.clone(), r.to_string());
    let image = tokio::task::spawn_blocking(move || store.get(&key))
        .await
        .map_err(internal)?
        .map_err(internal)?
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no such image: {r} (pull it first)"),
            )
        })?;
    if req.publish_all {
        if let Some(exposed) = image.config["config"]["ExposedPorts"].as_object() {
            for k in exposed.keys() {
                let mut p = crate::ports::PortSpec::parse(k).map_err(bad)?;
                p.host_port = 0;
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
        }
    }
    let id = random_hex().map_err(internal)?;
    let dir = st.containers.dir().join(&id);
    let (args, env, cwd) = command(&image.config, &req);
    if args.is_empty() {
        return Err(bad(format!(
            "no command: {r} has no Cmd or Entrypoint; give one after the image"
        )));
    }
    let user = req
        .user
        .clone()
        .or_else(|| image.config["config"]["User"].as_str().map(str::to_string))
        .filter(|u| !u.is_empty());
    let spec = Spec {
        id: id.clone(),
        layers: image
            .chain
            .iter()
            .map(|c| st.store.snapshot_dir(c))
            .collect(),
        dir: dir.clone(),
        args,
        env,
        cwd,
        user,
        hostname: req.hostname.clone().unwrap_or_else(|| {
            if network == "host" {
                nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| id[..12].to_string())
            } else {
                id[..12].to_string()
            }
        }),
        limits: req.limits.clone(),
        security,
        mounts,
        network: network.to_string(),
        netns: None,
        ip: None,
        extra_hosts: Vec::new(),
        dns: Vec::new(),
        tty: req.tty,
        tty_size: req.tty.then(|| req.tty_size.unwrap_or((24, 80))),
    };
    std::fs::create_dir_all(&dir).map_err(|e| internal(format!("{}: {e}", dir.display())))?;
    let names: Vec<String> = match &req.name {
        Some(n) => vec![n.clone()],
        None => (0..8)
            .map(|i| {
                let b = id.as_bytes();
                let a = ADJECTIVES[(b[i] as usize) % ADJECTIVES.len()];
                let n = NOUNS[(b[i + 8] as usize) % NOUNS.len()];
                format!(
                    "{a}_{n}{}",
                    if i == 0 { String::new() } else { i.to_string() }
                )
            })
            .chain(std::iter::once(id[..12].to_string()))
            .collect(),
    };
    let mut rec = Record {
        id: id.clone(),
        name: String::new(),
        image: r.to_string(),
        image_id: image.id.clone(),
        created: now(),
        stop_signal: image.config["config"]["StopSignal"]
            .as_str()
            .unwrap_or("SIGTERM")
            .to_string(),
        request: req.clone(),
        spec,
        state: ContainerState {
            status: "created".into(),
            ..ContainerState::default()
        },
        networks: Vec::new(),
        ports,
    };
    let mut last = None;
    for n in names {
        rec.name = n;
        match st.containers.put(&rec) {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    if let Some(net) = &net {
        if let Err(e) = connect(&st.containers, &rec.id, net, fixed_ip, req.aliases.clone()) {
            let _ = remove(&st.containers, &rec).await;
            return Err(e);
        }
    }
    Ok(Json(serde_json::json!({ "Id": id, "Name": rec.name, "Warnings": [] })).into_response())
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default, deserialize_with = "flag")]
    all: bool,
}

/// A query flag: `1`, `true` or `yes` (as docker's API takes them).
pub(crate) fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = String::deserialize(d)?;
    Ok(matches!(v.as_str(), "1" | "true" | "yes"))
}

pub async fn list(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let all = q.all;
    let list: Vec<serde_json::Value> = st
        .containers
        .list()?
        .into_iter()
        .filter(|r| all || r.state.status == "running")
        .map(|r| r.docker_json())
        .collect();
    Ok(Json(list).into_response())
}

pub async fn inspect(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(st.containers.resolve(&id)?.docker_json()).into_response())
}

#[derive(Deserialize)]
pub struct StartQuery {
    #[serde(default, deserialize_with = "flag")]
    attach: bool,
    /// `-i`: the request body is the container's stdin.
    #[serde(default, deserialize_with = "flag")]
    stdin: bool,
}

/// `POST /containers/{id}/start[?attach=1]`: with attach, streams the output of this run and
/// its exit code (what `docker run` without `-d` and `docker start -a` show).
pub async fn start_handler(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<StartQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let rec = st.containers.resolve(&id)?;
    let cs = st.containers.clone();
    let stdin = if q.stdin {
        Some(open_stdin(&rec.spec.dir).map_err(internal)?)
    } else {
        None
    };
    if !q.attach {
        started(&cs, &rec, start(&cs, &rec.id).await).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // Open the log before starting, at its current end: everything this run writes is ours.
    let log = open_log(&rec.spec.dir).map_err(internal)?;
    let mut file = tokio::fs::File::from_std(log);
    use tokio::io::AsyncSeekExt;
    file.seek(std::io::SeekFrom::End(0))
        .await
        .map_err(internal)?;
    started(&cs, &rec, start(&cs, &rec.id).await).await?;
    if let Some(rw) = stdin {
        // The monitor has opened the read end. Write through a write-only handle, so that
        // writes fail (instead of blocking forever) once the container stops reading, and let
        // the name go (a later restart gets no stdin).
        let path = rec.spec.dir.join(crate::monitor::STDIN);
        use std::os::unix::fs::OpenOptionsExt;
        let wo = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&path);
        let _ = std::fs::remove_file(&path);
        drop(rw);
        if let Ok(f) = wo {
            use std::os::fd::AsRawFd;
            let _ = nix::fcntl::fcntl(
                f.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
            );
            tokio::spawn(pump_stdin(body, tokio::fs::File::from_std(f)));
        }
    }
    Ok(stream_response(follow_log(cs, rec.id, file, true, None)))
}

/// A container created with `--rm` that could not start is removed, as docker does.
async fn started(
    cs: &Arc<Containers>,
    rec: &Record,
    r: Result<Record, ApiError>,
) -> Result<Record, ApiError> {
    if r.is_err() && rec.request.rm && rec.state.status == "created" {
        let _ = remove(cs, rec).await;
    }
    r
}

/// Makes the container's stdin FIFO and opens its write end (read-write, so it never blocks).
fn open_stdin(dir: &Path) -> std::io::Result<std::fs::File> {
    let path = dir.join(crate::monitor::STDIN);
    let _ = std::fs::remove_file(&path);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
}

/// Copies the request body into `fifo` (a container's stdin); closing it gives end-of-file.
async fn pump_stdin(body: Body, fifo: impl tokio::io::AsyncWrite + Unpin) {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut fifo = fifo;
    let mut stream = body.into_data_stream();
    let mut open = true;
    while let Some(Ok(chunk)) = stream.next().await {
        // Once the container stops reading, the rest is drained (a connection closed with
        // unread input would be reset, and the client could lose the end of the output).
        if open && fifo.write_all(&chunk).await.is_err() {
            open = false;
        }
    }
    let _ = fifo.flush().await;
}

fn open_log(dir: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(dir.join(LOG))
}

/// A stream of JSON lines from a channel, as an `application/x-ndjson` answer.
pub fn stream_response(rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Turns a log record into the stream's line.
fn forward(record: &str, tx: &UnboundedSender<Bytes>) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(record) else {
        return;
    };
    let stream = if v["stream"] == "stderr" {
        "stderr"
    } else {
        "stdout"
    };
    let line = serde_json::json!({ stream: v["log"], "time": v["time"] });
    let _ = tx.send(Bytes::from(format!("{line}\n")));
}

/// Streams a container's log from `file`'s position; with `follow`, until the container is no
/// longer running, then its exit code.
fn follow_log(
    cs: Arc<Containers>,
    id: String,
    file: tokio::fs::File,
    follow: bool,
    tail: Option<usize>,
) -> tokio::sync::mpsc::UnboundedReceiver<Bytes> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let mut changed = cs.changed.subscribe();
        let mut reader = tokio::io::BufReader::new(file);
        let mut pending = String::new();
        let mut first = tail;
        // Read again only when a record changed; in between, only the log file is polled.
        let mut state = cs.get(&id).ok().flatten().map(|r| r.state);
        loop {
            // Whether the container had ended before this read: then the log is complete.
            let ended = match &state {
                Some(s) => s.status != "running",
                None => true,
            };
            let mut batch = Vec::new();
            loop {
                match reader.read_line(&mut pending).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) if pending.ends_with('\n') => batch.push(std::mem::take(&mut pending)),
                    Ok(_) => {}
                }
            }
            if let Some(n) = first.take() {
                let skip = batch.len().saturating_sub(n);
                batch.drain(..skip);
            }
            for record in &batch {
                forward(record, &tx);
            }
            if tx.is_closed() {
                return;
            }
            if !follow {
                return;
            }
            if ended {
                let code = match &state {
                    Some(s) => s.exit_code,
                    None => cs
                        .last_exit
                        .lock()
                        .ok()
                        .and_then(|m| m.get(&id).copied())
                        .unwrap_or(255),
                };
                let _ = tx.send(Bytes::from(format!(
                    "{}\n",
                    serde_json::json!({ "exit": code, "id": id })
                )));
                return;
            }
            tokio::select! {
                _ = changed.changed() => state = cs.get(&id).ok().flatten().map(|r| r.state),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
    rx
}

#[derive(Deserialize)]
pub struct LogsQuery {
    #[serde(default, deserialize_with = "flag")]
    follow: bool,
    #[serde(default)]
    tail: Option<String>,
}

pub async fn logs(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let rec = st.containers.resolve(&id)?;
    let tail = match q.tail.as_deref() {
        None | Some("all") => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("--tail {n:?}: give a number or \"all\""),
            )
        })?),
    };
    let file = tokio::fs::File::from_std(open_log(&rec.spec.dir).map_err(internal)?);
    Ok(stream_response(follow_log(
        st.containers.clone(),
        rec.id,
        file,
        q.follow,
        tail,
    )))
}

fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, ApiError> {
    use std::str::FromStr;
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("invalid signal {s:?}")));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("invalid signal {s:?}")))
}

fn signal(rec: &Record, sig: nix::sys::signal::Signal) -> Result<(), ApiError> {
    if rec.state.pid <= 0 {
        return Err(internal(format!("container {} has no process", rec.name)));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(rec.state.pid), sig)
        .map_err(|e| internal(format!("signalling container {}: {e}", rec.name)))
}

#[derive(Deserialize)]
pub struct StopQuery {
    #[serde(default)]
    t: Option<u64>,
}

/// `stop`: the image's STOPSIGNAL (default SIGTERM), then SIGKILL after `t` seconds (10).
pub async fn stop(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<StopQuery>,
) -> Result<Response, ApiError> {
    let rec = st.containers.resolve(&id)?;
    if rec.state.status != "running" {
        let _ = st
            .containers
            .update(&rec.id, |r| r.state.manually_stopped = true);
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let rec = st
        .containers
        .update(&rec.id, |r| r.state.manually_stopped = true)?
        .unwrap_or(rec);
    let sig = parse_signal(&rec.stop_signal).unwrap_or(nix::sys::signal::Signal::SIGTERM);
    let _ = signal(&rec, sig);
    let t = Duration::from_secs(q.t.unwrap_or(10));
    if !st.containers.wait_stopped(&rec.id, t).await {
        let _ = signal(&rec, nix::sys::signal::Signal::SIGKILL);
        st.containers
            .wait_stopped(&rec.id, Duration::from_secs(60))
            .await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct KillQuery {
    #[serde(default)]
    signal: Option<String>,
}

pub async fn kill(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<KillQuery>,
) -> Result<Response, ApiError> {
    let rec = st.containers.resolve(&id)?;
    let sig = parse_signal(q.signal.as_deref().unwrap_or("SIGKILL"))?;
    if rec.state.status != "running" {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("container {} is not running", rec.name),
        ));
    }
    use nix::sys::signal::Signal::*;
    if matches!(sig, SIGKILL | SIGTERM | SIGINT | SIGQUIT) {
        st.containers
            .update(&rec.id, |r| r.state.manually_stopped = true)?;
    }
    signal(&rec, sig)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct ResizeQuery {
    h: u16,
    w: u16,
}

/// `POST /containers/{id}/resize?h=ROWS&w=COLS` (docker's): the size of a `-t` container's
/// terminal, passed to its monitor.
pub async fn resize(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<ResizeQuery>,
) -> Result<Response, ApiError> {
    let rec = st.containers.resolve(&id)?;
    let conflict = |m: String| ApiError(StatusCode::CONFLICT, m);
    if rec.state.status != "running" {
        return Err(conflict(format!("container {} is not running", rec.name)));
    }
    if !rec.spec.tty {
        return Err(conflict(format!(
            "container {} has no terminal (start it with -t to resize one)",
            rec.name
        )));
    }
    if q.h == 0 || q.w == 0 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a terminal needs at least one row and one column".into(),
        ));
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a monitor that is not reading (yet) makes this fail instead of hang.
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(rec.spec.dir.join(crate::monitor::RESIZE))
        .and_then(|mut f| f.write_all(format!("{} {}\n", q.h, q.w).as_bytes()))
        .map_err(|e| {
            conflict(format!(
                "container {}: its terminal is not ready ({e}): try again",
                rec.name
            ))
        })?;
    Ok(StatusCode::OK.into_response())
}

pub async fn wait(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let rec = st.containers.resolve(&id)?;
    let mut rx = st.containers.changed.subscribe();
    loop {
        match st.containers.get(&rec.id)? {
            Some(r) if r.state.status == "exited" => {
                return Ok(
                    Json(serde_json::json!({ "StatusCode": r.state.exit_code })).into_response()
                )
            }
            Some(_) => {}
            None => {
                let code = st
                    .containers
                    .last_exit
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&rec.id).copied())
                    .unwrap_or(0);
                return Ok(Json(serde_json::json!({ "StatusCode": code })).into_response());
            }
        }
        let _ = rx.changed().await;
    }
}

#[derive(Deserialize)]
pub struct RemoveQuery {
    #[serde(default, deserialize_with = "flag")]
    force: bool,
}

pub async fn delete(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<Response, ApiError> {
    let rec = st.containers.resolve(&id)?;
    if rec.state.status == "running" {
        if !q.force {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "cannot remove running container {}: stop it first, or use rm -f",
                    rec.name
                ),
            ));
        }
        st.containers
            .update(&rec.id, |r| r.state.manually_stopped = true)?;
        let _ = signal(&rec, nix::sys::signal::Signal::SIGKILL);
        st.containers
            .wait_stopped(&rec.id, Duration::from_secs(60))
            .await;
    }
    let rec = st.containers.get(&rec.id)?.unwrap_or(rec);
    remove(&st.containers, &rec).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What `reg exec` asks for.
#[derive(Debug, Clone, Deserialize)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub tty_size: Option<(u16, u16)>,
}

#[derive(Deserialize)]
pub struct ExecQuery {
    #[serde(default, deserialize_with = "flag")]
    stdin: bool,
}

/// `POST /containers/{id}/exec`: runs a process inside the running container (a helper from
/// the sealed binary joins its namespaces and cgroup) and streams its output and exit code.
/// The request is the JSON body; with `?stdin=1` (`exec -i`) it travels in the `X-Reg-Exec`
/// header (base64 JSON) and the body is the process's stdin.
pub async fn exec(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<ExecQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    use base64::Engine as _;
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let interactive = q.stdin;
    let (req, stdin): (ExecRequest, Option<Body>) = if interactive {
        let raw = headers
            .get("x-reg-exec")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| base64::engine::general_purpose::URL_SAFE.decode(v).ok())
            .ok_or_else(|| bad("exec with stdin needs the X-Reg-Exec header".into()))?;
        (
            serde_json::from_slice(&raw).map_err(|e| bad(format!("X-Reg-Exec: {e}")))?,
            Some(body),
        )
    } else {
        let raw = axum::body::to_bytes(body, 1 << 20)
            .await
            .map_err(|e| bad(e.to_string()))?;
        (
            serde_json::from_slice(&raw).map_err(|e| bad(format!("exec request: {e}")))?,
            None,
        )
    };
    let rec = st.containers.resolve(&id)?;
    if rec.state.status != "running" {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("container {} is not running", rec.name),
        ));
    }
    if req.cmd.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "exec needs a command".into(),
        ));
    }
    let mut env = rec.spec.env.clone();
    merge_env(&mut env, &req.env);
    let spec = crate::runtime::ExecSpec {
        id: rec.id.clone(),
        pid: rec.state.pid,
        args: req.cmd.clone(),
        env,
        cwd: req.workdir.clone().unwrap_or_else(|| rec.spec.cwd.clone()),
        user: req.user.clone().or_else(|| rec.spec.user.clone()),
        security: rec.spec.security.clone(),
        tty: req.tty,
        tty_size: req.tty.then(|| req.tty_size.unwrap_or((24, 80))),
        interactive,
    };
    let json = serde_json::to_string(&spec).map_err(internal)?;
    let exe = st.containers.sealed_exe().await?;
    let mut child = tokio::process::Command::new(exe.path())
        .args(["node", "enter", "--spec"])
        .arg(json)
        .stdin(if interactive {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| internal(format!("starting the exec helper: {e}")))?;
    if let (Some(body), Some(input)) = (stdin, child.stdin.take()) {
        tokio::spawn(pump_stdin(body, input));
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let out = child.stdout.take();
    let err = child.stderr.take();
    async fn pump<R: tokio::io::AsyncRead + Unpin>(
        pipe: Option<R>,
        name: &'static str,
        tx: UnboundedSender<Bytes>,
    ) {
        use tokio::io::AsyncReadExt;
        let Some(mut p) = pipe else { return };
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = p.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let line = serde_json::json!({ name: String::from_utf8_lossy(&buf[..n]) });
            let _ = tx.send(Bytes::from(format!("{line}\n")));
        }
    }
    tokio::spawn(async move {
        tokio::join!(
            pump(out, "stdout", tx.clone()),
            pump(err, "stderr", tx.clone())
        );
        let code = match child.wait().await {
            Ok(s) => s.code().unwrap_or(125),
            Err(_) => 125,
        };
        let _ = tx.send(Bytes::from(format!(
            "{}\n",
            serde_json::json!({ "exit": code })
        )));
    });
    Ok(stream_response(rx))
}
