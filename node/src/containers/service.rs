//! The container service: records (`containers.db`) with their typed state, the lifecycle
//! (start, exit watching, restart policies, re-attach, removal) and network connections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{failed, ContainerError};
use crate::db::Db;
use crate::runtime::exe::SealedExe;
use crate::runtime::monitor::{EXIT, LOG, OOM, PID};
use crate::runtime::Spec;

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
    /// docker's `OpenStdin` (`-i`): an attach may give the container input.
    #[serde(default)]
    pub open_stdin: bool,
    /// `--label`s; once created, with the image's labels under them (as docker shows them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--health-*`; once created, the image's `HEALTHCHECK` when none was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<super::health::HealthCheck>,
    /// `--stop-signal` (the image's `STOPSIGNAL`, else SIGTERM, when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `--stop-timeout` in seconds: how long `stop` waits before SIGKILL (10 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u64>,
    /// `--read-only`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// `--tmpfs TARGET[:OPTIONS]`: target → options.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tmpfs: std::collections::BTreeMap<String, String>,
    /// `--shm-size` in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<i64>,
    /// `--sysctl KEY=VALUE`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// `--init`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// `--log-driver` and `--log-opt`s.
    #[serde(default)]
    pub log: LogConfig,
    /// `--expose PORT[/PROTO]`: more ports the container listens on (published by `-P`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    /// `--volumes-from CONTAINER[:ro|:rw]`: its volumes and binds, mounted here too
    /// (resolved into `volumes` at create).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<String>,
    /// `--pid`, `--ipc`, `--uts`: `host`, `container:NAME` (not uts), or unset (its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uts_mode: Option<String>,
    /// `--userns`: `host`, `auto` (a range of its own), or unset (the node's remap, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns_mode: Option<String>,
}

/// `10m`, `1g`, `512k`, `2048` (bytes; docker's units, powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num.parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n * mult as f64) as u64)
}

/// Where a container's output goes: `json-file` (its log, rotated at `max_size` keeping
/// `max_file` files) or `none` (nowhere: `logs` has nothing to show).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogConfig {
    pub driver: LogDriver,
    /// Rotate when the log reaches this many bytes (`max-size`); unset, the node's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// How many files to keep, the current one included (`max-file`, default 1).
    #[serde(default = "one")]
    pub max_file: u32,
}

fn one() -> u32 {
    1
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            driver: LogDriver::JsonFile,
            max_size: None,
            max_file: 1,
        }
    }
}

/// The log drivers reg has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogDriver {
    JsonFile,
    None,
}

/// A container's state, docker's fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerState {
    pub status: Status,
    /// Running, with its processes frozen (`pause`).
    #[serde(default)]
    pub paused: bool,
    /// Its health checks' state, when it has checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<super::health::Health>,
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
    pub ports: Vec<crate::network::ports::PortBinding>,
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    pub ports: Vec<crate::network::ports::PortSpec>,
}

/// Where a container is in docker's lifecycle: created → running → exited (→ running again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Exited,
}

impl Status {
    /// docker's name of the status (`docker ps --filter status=`, inspect's `State.Status`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }

    pub fn is_running(self) -> bool {
        self == Status::Running
    }

    /// Whether `start` may start it.
    pub fn can_start(self) -> bool {
        !self.is_running()
    }

    /// Whether it has a process to signal.
    pub fn can_kill(self) -> bool {
        self.is_running()
    }

    /// Whether `rm` (without force) may remove it.
    pub fn can_delete(self) -> bool {
        !self.is_running()
    }
}

impl ContainerState {
    /// docker's status word: [`Status::as_str`], or `paused` for a paused running container.
    pub fn docker_status(&self) -> &'static str {
        if self.paused && self.status.is_running() {
            "paused"
        } else {
            self.status.as_str()
        }
    }
}

/// `--restart`: when the agent starts a container again after it exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    #[default]
    No,
    Always,
    UnlessStopped,
    /// At most this many times (0: no limit).
    OnFailure(u32),
}

impl RestartPolicy {
    /// `no`, `always`, `unless-stopped`, `on-failure[:N]`; none means `no`.
    pub fn parse(p: Option<&str>) -> Result<RestartPolicy, ContainerError> {
        let p = p.unwrap_or("no");
        let bad =
            |why: &str| ContainerError::Invalid(format!("invalid restart policy {p:?}: {why}"));
        let (name, n) = match p.split_once(':') {
            Some((name, n)) => (
                name,
                Some(
                    n.parse::<u32>()
                        .map_err(|_| bad("the count must be a number"))?,
                ),
            ),
            None => (p, None),
        };
        match (name, n) {
            ("no", None | Some(0)) => Ok(RestartPolicy::No),
            ("always", None | Some(0)) => Ok(RestartPolicy::Always),
            ("unless-stopped", None | Some(0)) => Ok(RestartPolicy::UnlessStopped),
            ("on-failure", n) => Ok(RestartPolicy::OnFailure(n.unwrap_or(0))),
            ("no" | "always" | "unless-stopped", _) => Err(bad("only on-failure takes a count")),
            _ => Err(bad("use no, on-failure[:N], always or unless-stopped")),
        }
    }

    /// docker's name (inspect's `HostConfig.RestartPolicy.Name`).
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure(_) => "on-failure",
        }
    }

    /// docker's `MaximumRetryCount`.
    pub fn max_retries(self) -> u32 {
        match self {
            RestartPolicy::OnFailure(n) => n,
            _ => 0,
        }
    }

    /// Whether a container that exited with `code`, restarted `count` times so far, and not
    /// stopped by a user, starts again.
    pub fn restarts(self, code: i32, count: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure(max) => code != 0 && (max == 0 || count < max),
        }
    }
}

/// The agent's containers: records in SQLite, change notifications, the sealed binary.
pub struct Containers {
    root: PathBuf,
    pub networks: Arc<crate::network::Networks>,
    /// Named volumes: `<node>/volumes/NAME/_data`.
    pub volumes: PathBuf,
    db: Arc<Db>,
    pub(super) changed: tokio::sync::watch::Sender<u64>,
    exe: tokio::sync::OnceCell<Arc<SealedExe>>,
    /// Exit codes of containers removed on exit (`--rm`), for whoever follows them.
    pub(super) last_exit: Mutex<HashMap<String, i32>>,
    /// Containers due for a restart by their policy (started by one task: see `reattach`).
    restarts: tokio::sync::mpsc::UnboundedSender<String>,
    restarts_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    /// docker's exec instances (in memory, as dockerd keeps them).
    pub(super) execs: super::execs::Execs,
    /// What happens on the node (`docker events`).
    pub events: crate::events::Events,
    /// Action times for `/metrics` (see [`crate::metrics`]).
    pub metrics: crate::metrics::NodeMetrics,
    /// A container monitor started ahead of time, waiting for its bundle (see
    /// [`Containers::prepare_monitor`]).
    spare: Mutex<Option<tokio::process::Child>>,
}

pub(super) fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

fn read_file(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Returns once the monitor `pid` of container `id` (started by an earlier agent) has ended:
/// its pidfd becomes readable when it exits. Where pidfds are missing (Linux before 5.3), the
/// `exit` file and the process are checked every 100 ms.
#[allow(unsafe_code)]
async fn monitor_gone(pid: i32, id: &str, dir: &Path) {
    let pidfd = rustix::process::Pid::from_raw(pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    // Opened first, then checked to be ours: a pid reused since then cannot be mistaken.
    if !monitor_alive(pid, id) {
        return;
    }
    // SAFETY: the pidfd is moved into the AsyncFd, which owns it from here on: nothing else
    // can close it while it is registered (tokio's I/O-safety condition for `register`).
    let watched = pidfd.and_then(|fd| unsafe { tokio::io::unix::AsyncFd::register(fd) }.ok());
    if let Some(fd) = watched {
        let _ = fd.readable().await;
        return;
    }
    while !dir.join(EXIT).exists() && monitor_alive(pid, id) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the monitor of container `id` still runs (its command line names the container).
fn monitor_alive(pid: i32, id: &str) -> bool {
    pid > 0
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(id))
}

impl Containers {
    pub fn open(node_root: &Path) -> Result<Arc<Containers>, ContainerError> {
        let root = node_root.join("containers");
        let _ = std::fs::create_dir_all(&root);
        // What an earlier agent moved aside and did not get to delete.
        let trash = root.join(TRASH);
        if trash.exists() {
            std::thread::spawn(move || empty_trash(&trash));
        }
        let db = Db::open(&node_root.join("containers.db"))?;
        db.with(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS containers (
                     id TEXT PRIMARY KEY,
                     name TEXT NOT NULL UNIQUE,
                     record TEXT NOT NULL
                 );",
            )
        })?;
        let networks = crate::network::Networks::open(node_root, db.clone())?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Arc::new(Containers {
            root,
            networks,
            volumes: node_root.join("volumes"),
            db,
            changed: tokio::sync::watch::channel(0).0,
            exe: tokio::sync::OnceCell::new(),
            last_exit: Mutex::new(HashMap::new()),
            restarts: tx,
            restarts_rx: Mutex::new(Some(rx)),
            execs: Default::default(),
            events: Default::default(),
            metrics: Default::default(),
            spare: Mutex::new(None),
        }))
    }

    /// Starts the spare monitor the next container start takes, unless one waits already: the
    /// exec of the binary and its start-up (~1–3 ms of `run --rm IMG true`) then happen before
    /// a container needs them.
    pub fn prepare_monitor(self: &Arc<Self>) {
        let cs = self.clone();
        tokio::spawn(async move {
            let Ok(exe) = cs.sealed_exe().await else {
                return;
            };
            let Ok(mut slot) = cs.spare.lock() else {
                return;
            };
            if slot.is_none() {
                *slot = spawn_monitor(&exe, None, false).ok();
            }
        });
    }

    /// The monitor of the container in `dir`: the spare, told its bundle, when one waits;
    /// else a new one.
    async fn monitor_for(&self, dir: &Path) -> std::io::Result<tokio::process::Child> {
        use tokio::io::AsyncWriteExt;
        let spare = self.spare.lock().ok().and_then(|mut s| s.take());
        if let Some(mut child) = spare {
            if let (Ok(None), Some(mut stdin)) = (child.try_wait(), child.stdin.take()) {
                let mut line = dir.as_os_str().as_encoded_bytes().to_vec();
                line.push(b'\n');
                if line.len() <= crate::runtime::monitor::SPARE_ROOM
                    && stdin.write_all(&line).await.is_ok()
                {
                    return Ok(child);
                }
            }
            // Gone, or the path does not fit: a fresh monitor (tokio reaps this one once it
            // reads end-of-file and exits).
        }
        let exe = self.sealed_exe().await.map_err(std::io::Error::other)?;
        spawn_monitor(&exe, Some(dir), false)
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Emits container event `action` about `rec` (its name, image and labels attached).
    pub(super) fn emit(&self, rec: &Record, action: &str, extra: &[(&str, String)]) {
        let mut e = crate::events::Event::new(crate::events::Kind::Container, action, &rec.id)
            .with("name", &rec.name)
            .with("image", &rec.image);
        for (k, v) in extra {
            e = e.with(k, v.clone());
        }
        self.events.emit(e.with_all(&rec.request.labels));
    }

    pub fn list(&self) -> Result<Vec<Record>, ContainerError> {
        let mut out: Vec<Record> = self
            .db
            .with(|db| records(db, "SELECT record FROM containers", []))?;
        out.sort_by(|a, b| b.created.cmp(&a.created));
        Ok(out)
    }

    pub(super) fn get(&self, id: &str) -> Result<Option<Record>, ContainerError> {
        self.db.with(|db| get_in(db, id))
    }

    /// A container by full id, unique id prefix, or name.
    pub fn resolve(&self, key: &str) -> Result<Record, ContainerError> {
        use rusqlite::OptionalExtension;
        let key = key.trim_start_matches('/');
        let found = self.db.with(|db| -> Result<Vec<String>, rusqlite::Error> {
            // A full id or a name: one indexed row. Otherwise an id prefix, which must be
            // unique.
            let exact: Option<String> = db
                .query_row(
                    "SELECT record FROM containers WHERE id = ?1 OR name = ?1",
                    [key],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(match exact {
                Some(r) => vec![r],
                None if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    Vec::new()
                }
                None => {
                    let mut st = db.prepare(
                        "SELECT record FROM containers WHERE substr(id, 1, length(?1)) = ?1 LIMIT 2",
                    )?;
                    let rows = st.query_map([key], |r| r.get::<_, String>(0))?;
                    rows.filter_map(Result::ok).collect()
                }
            })
        })?;
        match found.as_slice() {
            [one] => serde_json::from_str(one).map_err(failed),
            [] => Err(ContainerError::NotFound(format!(
                "no such container: {key}"
            ))),
            _ => Err(ContainerError::Invalid(format!(
                "{key:?} matches several containers: give more of the id"
            ))),
        }
    }

    pub(super) fn put(&self, r: &Record) -> Result<(), ContainerError> {
        self.db.with(|db| put_in(db, r))?;
        self.changed.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Changes a stored record in place (no-op when it is gone): read, changed and written in
    /// one transaction, so concurrent updates of one container never lose each other's change.
    pub(super) fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut Record),
    ) -> Result<Option<Record>, ContainerError> {
        let updated = self.db.with(|db| -> Result<_, ContainerError> {
            let tx = db.transaction()?;
            let Some(mut r) = get_in(&tx, id)? else {
                return Ok(None);
            };
            f(&mut r);
            put_in(&tx, &r)?;
            tx.commit()?;
            Ok(Some(r))
        })?;
        if updated.is_some() {
            self.changed.send_modify(|g| *g += 1);
        }
        Ok(updated)
    }

    pub(super) async fn sealed_exe(&self) -> Result<Arc<SealedExe>, ContainerError> {
        self.exe
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(SealedExe::new)
                    .await
                    .map_err(failed)?
                    .map(Arc::new)
                    .map_err(|e| failed(format!("sealing a copy of the reg binary: {e}")))
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
    ) -> Result<i32, ContainerError> {
        let bridged = match spec.network.as_str() {
            "none" | "host" => false,
            crate::network::DEFAULT => true,
            other => {
                return Err(ContainerError::Invalid(format!(
                    "a build step runs with network bridge, none or host, not {other}"
                )))
            }
        };
        if !bridged {
            return self.run_step_in(spec, on_output).await;
        }
        let net = self.networks.ensure_default()?;
        let ep = self
            .networks
            .allocate(&net, &spec.id, &spec.hostname, None, Vec::new())?;
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
            Err(e) => Err(ContainerError::from(e).context(format!(
                "connecting the step to the {} network",
                crate::network::DEFAULT
            ))),
        };
        let _ = self.networks.release(&id, None);
        result
    }

    async fn run_step_in(
        self: &Arc<Self>,
        spec: crate::runtime::Spec,
        on_output: impl Fn(String) + Send + Sync + 'static,
    ) -> Result<i32, ContainerError> {
        let dir = spec.dir.clone();
        let written = spec.clone();
        tokio::task::spawn_blocking(move || crate::runtime::bundle::write(&written))
            .await
            .map_err(failed)?
            .map_err(ContainerError::Invalid)?;
        let exe = self.sealed_exe().await?;
        let mut child = spawn_monitor(&exe, Some(&dir), true)
            .map_err(|e| failed(format!("starting the step's monitor: {e}")))?;
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
            tokio::task::spawn_blocking(move || crate::runtime::rootfs::remove_mount_points(&spec))
                .await;
        read_file(&dir, EXIT)
            .and_then(|c| c.trim().parse().ok())
            .ok_or_else(|| failed("the step's monitor ended without recording an exit code"))
    }

    /// Waits until `id` is no longer running (or gone); false on timeout.
    pub(super) async fn wait_stopped(&self, id: &str, timeout: Duration) -> bool {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.get(id) {
                Ok(Some(r)) if r.state.status == Status::Running => {}
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
        self.prepare_monitor();
        if let Some(mut rx) = self.restarts_rx.lock().ok().and_then(|mut r| r.take()) {
            let cs = self.clone();
            tokio::spawn(async move {
                while let Some(id) = rx.recv().await {
                    // Each restart waits for its container's dependencies on its own: one
                    // waiting must not hold up the others (its dependencies among them).
                    let cs = cs.clone();
                    tokio::spawn(async move {
                        super::order::wait_for_dependencies(&cs, &id).await;
                        let still = matches!(cs.get(&id), Ok(Some(r)) if r.state.status == Status::Exited && !r.state.manually_stopped);
                        if still {
                            let _ = cs.update(&id, |r| r.state.restart_count += 1);
                            if let Err(e) = start(&cs, &id).await {
                                tracing::warn!(container = %id, error = %e, "restart failed");
                            }
                        }
                    });
                }
            });
        }
        let Ok(all) = self.list() else { return };
        for r in all
            .into_iter()
            .filter(|r| r.state.status == Status::Running)
        {
            tracing::info!(container = %r.id, "re-attaching");
            if !r.networks.is_empty() {
                let (n, id, ports) = (self.networks.clone(), r.id.clone(), r.state.ports.clone());
                let netns = r.spec.dir.join("netns");
                let upstream = crate::network::upstream_resolvers(&r.request.dns);
                tokio::spawn(async move {
                    if let Err(e) = n.reattach(&id, &netns, &ports, upstream).await {
                        tracing::warn!(container = %id, error = %e, "re-attaching the network");
                    }
                });
            }
            super::health::watch(self, &r, false);
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
fn extra_hosts(cs: &Arc<Containers>, rec: &Record) -> Result<Vec<String>, ContainerError> {
    let mut out = Vec::new();
    for l in &rec.request.links {
        let (name, alias) = l.split_once(':').unwrap_or((l, l));
        let o = cs
            .resolve(name)
            .map_err(|e| e.context(format!("--link {l}")))?;
        if o.state.status != Status::Running {
            return Err(ContainerError::Conflict(format!(
                "--link {l}: cannot link to container {}: it is not running",
                o.name
            )));
        }
        // Its address on a network both share, else its first.
        let ip = o
            .networks
            .iter()
            .find(|n| rec.networks.iter().any(|m| m.network_id == n.network_id))
            .or(o.networks.first())
            .map(|n| n.ip.clone())
            .ok_or_else(|| {
                ContainerError::Conflict(format!(
                    "--link {l}: container {} has no network address",
                    o.name
                ))
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
                    ContainerError::Invalid(format!(
                        "--add-host {h}: host-gateway needs a bridge network"
                    ))
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
///
/// Without `dir`, a spare (`--spare ROOM`): it reads its bundle's path from stdin, a pipe, and
/// rewrites its command line to name it within ROOM. A spare whose agent went away reads
/// end-of-file and exits.
fn spawn_monitor(
    exe: &SealedExe,
    dir: Option<&Path>,
    kill_on_drop: bool,
) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(exe.path());
    cmd.args(["node", "monitor"]);
    match dir {
        Some(d) => cmd.arg("--bundle").arg(d).stdin(Stdio::null()),
        None => cmd
            .arg("--spare")
            .arg(".".repeat(crate::runtime::monitor::SPARE_ROOM))
            .stdin(Stdio::piped()),
    };
    cmd
        // The monitor writes the init's pid here once it runs (see `started_pid`).
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(kill_on_drop)
        .spawn()
}

/// Starting a container that runs: a conflict for reg's API (docker's answers 304).
pub(super) fn already_running(name: &str) -> ContainerError {
    ContainerError::Conflict(format!("container {name} is already running"))
}

/// Starts the monitor of an existing container and marks it running.
pub(super) async fn start(cs: &Arc<Containers>, id: &str) -> Result<Record, ContainerError> {
    let began = std::time::Instant::now();
    let started = start_timed(cs, id).await;
    if started.is_ok() {
        cs.metrics.observe("start", began.elapsed());
    }
    started
}

async fn start_timed(cs: &Arc<Containers>, id: &str) -> Result<Record, ContainerError> {
    let rec = cs
        .get(id)?
        .ok_or_else(|| ContainerError::NotFound(format!("no such container: {id}")))?;
    if rec.state.status == Status::Running {
        return Err(already_running(&rec.name));
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
            .map_err(|e| e.context(format!("container {}", rec.name)))?;
        spec.netns = Some(netns.clone());
        spec.ip = rec.networks.first().map(|n| n.ip.clone());
        if rec
            .networks
            .iter()
            .any(|n| n.network != crate::network::DEFAULT)
        {
            spec.dns = vec!["127.0.0.11".into()];
        }
    } else if let Some(other) = spec.network.clone().strip_prefix("container:") {
        let o = cs.resolve(other)?;
        if o.state.status != Status::Running {
            return Err(ContainerError::Conflict(format!(
                "cannot join the network of container {}: it is not running",
                o.name
            )));
        }
        let theirs = o.spec.dir.join("netns");
        spec.netns = Some(if theirs.exists() {
            theirs
        } else {
            format!("/proc/{}/ns/net", o.state.pid).into()
        });
    }
    // `--pid container:X`, `--ipc container:X`: X's namespaces, while X runs.
    for (mode, slot, kind) in [
        (&rec.request.pid_mode, &mut spec.pid_ns, "pid"),
        (&rec.request.ipc_mode, &mut spec.ipc_ns, "ipc"),
    ] {
        if let Some(other) = mode.as_deref().and_then(|m| m.strip_prefix("container:")) {
            let o = cs.resolve(other)?;
            if o.state.status != Status::Running || o.state.pid <= 0 {
                return Err(ContainerError::Conflict(format!(
                    "cannot join the {kind} namespace of container {}: it is not running",
                    o.name
                )));
            }
            *slot = crate::runtime::NsMode::Join(format!("/proc/{}/ns/{kind}", o.state.pid).into());
        }
    }
    let undo = |cs: Arc<Containers>,
                id: String,
                netns: PathBuf,
                ports: Vec<crate::network::ports::PortBinding>| async move {
        let _ = cs.networks.detach(&id, &netns, &ports).await;
    };
    let written = tokio::task::spawn_blocking(move || crate::runtime::bundle::write(&spec))
        .await
        .map_err(failed)
        .and_then(|r| {
            r.map_err(|e| ContainerError::Invalid(format!("container {}: {e}", rec.name)))
        });
    if let Err(e) = written {
        undo(cs.clone(), id.to_string(), netns, bound).await;
        return Err(e);
    }
    // `-i` without a client attached before the start (`run -dit`, compose's `stdin_open`):
    // the node holds the input open for this run, as dockerd does, so a later attach can type
    // into it. An attachment waiting for this start made the FIFO already and takes its input.
    let held_rw = if rec.request.open_stdin && !dir.join(crate::runtime::monitor::STDIN).exists() {
        match super::control::open_stdin(&dir) {
            Ok(rw) => Some(rw),
            Err(e) => {
                undo(cs.clone(), id.to_string(), netns, bound).await;
                return Err(failed(format!("container {}: its input: {e}", rec.name)));
            }
        }
    } else {
        None
    };
    let child = cs.monitor_for(&dir).await;
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            undo(cs.clone(), id.to_string(), netns, bound).await;
            return Err(failed(format!("starting the container monitor: {e}")));
        }
    };
    let monitor_pid = child.id().map(|p| p as i32).unwrap_or(0);
    // The monitor writes the pid once the init is in its namespaces and cgroup; end-of-file
    // (0) when it ended without starting one (its `exit` file says why).
    let pid = started_pid(&mut child).await;
    // The next start's monitor, made while this container runs.
    cs.prepare_monitor();
    // The monitor has the read end now: what the node holds is a write end only.
    let held = held_rw.and_then(|rw| super::control::hand_over_stdin(&dir, rw));
    let rec = cs
        .update(id, |r| {
            r.state = ContainerState {
                status: Status::Running,
                pid,
                monitor_pid,
                started_at: now(),
                restart_count: r.state.restart_count,
                ports: bound,
                ..ContainerState::default()
            };
        })?
        .ok_or_else(|| ContainerError::NotFound(format!("no such container: {id}")))?;
    cs.emit(&rec, "start", &[]);
    super::health::watch(cs, &rec, true);
    let watched = watch_exit(cs.clone(), id.to_string(), Some(child), monitor_pid);
    tokio::spawn(async move {
        let _held = held;
        watched.await
    });
    Ok(rec)
}

/// The init's pid as the container's monitor reports it on its stdout: 0 when the monitor ends
/// (or says nothing for 30 s) without starting it.
async fn started_pid(child: &mut tokio::process::Child) -> i32 {
    use tokio::io::AsyncBufReadExt;
    let Some(out) = child.stdout.take() else {
        return 0;
    };
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(out);
    match tokio::time::timeout(Duration::from_secs(30), reader.read_line(&mut line)).await {
        Ok(Ok(_)) => line.trim().parse().unwrap_or(0),
        _ => 0,
    }
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
        None => monitor_gone(monitor_pid, &id, &dir).await,
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
            tracing::warn!(container = %id, error = %e, "taking down the container's network");
        }
    }
    if let Ok(mut m) = cs.last_exit.lock() {
        m.insert(id.clone(), code);
    }
    cs.emit(&rec, "die", &[("exitCode", code.to_string())]);
    if oom {
        cs.emit(&rec, "oom", &[]);
    }
    if rec.request.rm {
        // Removed before anyone following it hears the exit code: `run --rm` returns after.
        let _ = remove(&cs, &rec).await;
        return;
    }
    let Ok(Some(rec)) = cs.update(&id, |r| {
        r.state.status = Status::Exited;
        r.state.paused = false;
        r.state.exit_code = code;
        r.state.oom_killed = oom;
        r.state.finished_at = now();
        r.state.error = error;
    }) else {
        return;
    };
    let policy = RestartPolicy::parse(rec.request.restart.as_deref()).unwrap_or_default();
    let again = !rec.state.manually_stopped && policy.restarts(code, rec.state.restart_count);
    if again {
        // docker's back-off: 100 ms doubling, capped at a minute.
        let delay = 100u64 << rec.state.restart_count.min(9);
        tokio::time::sleep(Duration::from_millis(delay.min(60_000))).await;
        let _ = cs.restarts.send(id);
    }
}

pub(super) async fn remove(cs: &Arc<Containers>, rec: &Record) -> Result<(), ContainerError> {
    let began = std::time::Instant::now();
    let removed = remove_timed(cs, rec).await;
    if removed.is_ok() {
        cs.metrics.observe("delete", began.elapsed());
    }
    removed
}

async fn remove_timed(cs: &Arc<Containers>, rec: &Record) -> Result<(), ContainerError> {
    // The namespace file is a mount point: it must go before the directory can.
    if !rec.networks.is_empty() || rec.spec.dir.join("netns").exists() {
        cs.networks
            .detach(&rec.id, &rec.spec.dir.join("netns"), &rec.state.ports)
            .await?;
    }
    // The directory goes first: whoever sees the record gone may rely on it being gone. It is
    // moved aside (one rename) and deleted after the answer: deleting it in place (its upper
    // and work dirs, the overlay's marks) took 1–2.5 ms of every `run --rm`.
    let (dir, trash) = (rec.spec.dir.clone(), cs.root.join(TRASH).join(&rec.id));
    let moved = tokio::task::spawn_blocking(move || {
        let aside = trash
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::rename(&dir, &trash));
        match aside {
            Ok(()) => Ok(Some(trash)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir.exists() => Ok(None),
            // Not movable (a mount point left by a crash, say): deleted in place.
            Err(_) => match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("{}: {e}", dir.display()))
                }
                _ => Ok(None),
            },
        }
    })
    .await
    .map_err(failed)?;
    let aside = match moved {
        Ok(aside) => aside,
        Err(e) => {
            tracing::warn!(container = %rec.id, error = %e, "removing the container's directory");
            None
        }
    };
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
    // Its addresses and its record go together.
    cs.db.with(|db| -> Result<(), rusqlite::Error> {
        let tx = db.transaction()?;
        crate::network::release_in(&tx, &rec.id, None)?;
        tx.execute("DELETE FROM containers WHERE id = ?1", [&rec.id])?;
        tx.commit()
    })?;
    cs.emit(rec, "destroy", &[]);
    cs.changed.send_modify(|g| *g += 1);
    if let Some(aside) = aside {
        tokio::task::spawn_blocking(move || empty_trash(&aside));
    }
    Ok(())
}

/// Where removed containers' directories wait to be deleted (inside the containers directory,
/// so that moving one there is a rename; container ids are hex, never this name).
const TRASH: &str = ".removed";

/// Deletes a removed container's directory (`std::fs::remove_dir_all` never follows a symlink
/// the container left in its upper dir).
fn empty_trash(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "deleting a removed container's directory");
        }
    }
}

/// Allocates container `id` an address on `net` and records it (takes effect at its next start).
pub(super) fn connect(
    cs: &Arc<Containers>,
    id: &str,
    net: &crate::network::Network,
    ip: Option<std::net::Ipv4Addr>,
    aliases: Vec<String>,
) -> Result<Record, ContainerError> {
    let rec = cs
        .get(id)?
        .ok_or_else(|| ContainerError::NotFound(format!("no such container: {id}")))?;
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
        .ok_or_else(|| ContainerError::NotFound(format!("no such container: {id}")))
}

/// `network connect NET CTR`: an address now, an interface at once if it runs.
pub async fn network_connect(
    cs: &Arc<Containers>,
    net: &str,
    container: &str,
    ip: Option<std::net::Ipv4Addr>,
    aliases: Vec<String>,
) -> Result<(), ContainerError> {
    let net = if net == crate::network::DEFAULT {
        cs.networks.ensure_default()?
    } else {
        cs.networks.get(net)?
    };
    let rec = cs.resolve(container)?;
    if rec.networks.is_empty() {
        return Err(ContainerError::Invalid(format!(
            "container {} uses --network {}: only containers on bridge networks can join more",
            rec.name, rec.spec.network
        )));
    }
    let rec = connect(cs, &rec.id, &net, ip, aliases)?;
    if rec.state.status == Status::Running {
        let ep = cs
            .networks
            .endpoints_of(&rec.id)?
            .into_iter()
            .find(|e| e.network == net.id)
            .ok_or_else(|| failed("endpoint vanished"))?;
        if let Err(e) = cs
            .networks
            .hot_plug(&net, &ep, &rec.spec.dir.join("netns"))
            .await
        {
            let _ = network_disconnect(cs, &net.id, &rec.id).await;
            return Err(e.into());
        }
    }
    Ok(())
}

/// `network disconnect NET CTR`.
pub async fn network_disconnect(
    cs: &Arc<Containers>,
    net: &str,
    container: &str,
) -> Result<(), ContainerError> {
    let net = cs.networks.get(net)?;
    let rec = cs.resolve(container)?;
    let Some(ep) = cs
        .networks
        .endpoints_of(&rec.id)?
        .into_iter()
        .find(|e| e.network == net.id)
    else {
        return Err(ContainerError::NotFound(format!(
            "container {} is not connected to network {}",
            rec.name, net.name
        )));
    };
    if rec.state.status == Status::Running {
        cs.networks.hot_unplug(&ep).await?;
    }
    cs.networks.release(&rec.id, Some(&net.id))?;
    cs.update(&rec.id, |r| r.networks.retain(|n| n.network_id != net.id))?;
    Ok(())
}

/// Container `id`'s record, read with `db` (which may be a transaction).
fn get_in(db: &rusqlite::Connection, id: &str) -> Result<Option<Record>, ContainerError> {
    use rusqlite::OptionalExtension;
    let s: Option<String> = db
        .query_row("SELECT record FROM containers WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
}

/// Stores `r` with `db` (which may be a transaction): a taken name is a conflict.
fn put_in(db: &rusqlite::Connection, r: &Record) -> Result<(), ContainerError> {
    let json = serde_json::to_string(r).map_err(failed)?;
    db.execute(
        "INSERT INTO containers (id, name, record) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, record = excluded.record",
        rusqlite::params![r.id, r.name, json],
    )
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            ContainerError::Conflict(format!(
                "the name {:?} is already in use by another container: remove it or choose another name",
                r.name
            ))
        }
        e => ContainerError::Db(e),
    })?;
    Ok(())
}

/// [`crate::db::records`], failing as a `ContainerError`.
fn records<T: serde::de::DeserializeOwned>(
    db: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>, ContainerError> {
    Ok(crate::db::records(db, sql, params)?)
}
