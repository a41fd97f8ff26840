//! The container runtime, run inside the per-container monitor process (a fresh, single-threaded
//! re-exec of `reg`, so that `clone(2)` never happens in a multi-threaded process).
//!
//! `run` clones the container's init into new pid, mount, uts, ipc and net namespaces. Inside,
//! before exec: mounts are made private, the rootfs is an overlay of the image's layer snapshots
//! with the container's own upper dir, `/proc`, `/dev` (tmpfs with the default device nodes,
//! `/dev/pts`, `/dev/shm`) and a read-only `/sys` are mounted, `pivot_root` switches to it and
//! the old root is detached. Everything mounted lives in the container's mount namespace, so it
//! disappears with the container: nothing can leak onto the host.
//!
//! Exit codes follow docker: the process's own; 125 when the runtime fails; 126 when the command
//! cannot be executed; 127 when it is not found; 128+N when killed by signal N.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use serde::{Deserialize, Serialize};

/// What the monitor needs to start one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub id: String,
    /// Snapshot directories, bottom layer first.
    pub layers: Vec<PathBuf>,
    /// The container's own directory (upper, work, rootfs, log live here).
    pub dir: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub hostname: String,
    /// `-u USER[:GROUP]` (names resolved in the container's /etc/passwd and /etc/group).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub security: SecuritySpec,
    /// Bind mounts (host paths and volumes), in order.
    #[serde(default)]
    pub mounts: Vec<BindMount>,
    /// The network mode: `none` (own namespace with `lo`), `host`, a bridge network's name, or
    /// `container:OTHER`.
    #[serde(default)]
    pub network: String,
    /// A network namespace to join (a bridge network's, made by the agent, or another
    /// container's) instead of creating one.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// The container's address on its first network (named after its hostname in /etc/hosts).
    #[serde(default)]
    pub ip: Option<String>,
    /// More `/etc/hosts` lines (`--link`, `--add-host`).
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// Resolvers for `/etc/resolv.conf` instead of the host's.
    #[serde(default)]
    pub dns: Vec<String>,
    /// `-t`: stdio is a pseudo-terminal (the init's controlling terminal).
    #[serde(default)]
    pub tty: bool,
    /// Its size (rows, columns).
    #[serde(default)]
    pub tty_size: Option<(u16, u16)>,
}

/// `-v SOURCE:TARGET[:ro]` once resolved to a host path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
    /// When not empty, not a bind but a merged view of these directories (bottom first, overlay
    /// whiteouts honoured: a build's `RUN --mount=type=bind,from=STAGE`); `source` is unused.
    /// Writes to a view that is not read-only land in the container's directory and are
    /// discarded with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<PathBuf>,
    /// A volume (named or anonymous): when it is empty, what the image has at `target` is
    /// copied into it before it is mounted there (docker's behaviour; not for host paths).
    #[serde(default)]
    pub copy_up: bool,
}

/// Where the `k`th mount of a container keeps what its view needs (layer links, upper dir).
pub fn view_dir(container_dir: &Path, k: usize) -> PathBuf {
    container_dir.join(format!("view{k}"))
}

/// What a user asks for: `--privileged`, `--cap-add`, `--cap-drop`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Security {
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `--security-opt seccomp=…`: `unconfined`, or a docker-format profile's JSON.
    #[serde(default)]
    pub seccomp: Option<String>,
    /// `--ulimit NAME=SOFT[:HARD]`.
    #[serde(default)]
    pub ulimits: Vec<String>,
    /// `--device HOST[:CONTAINER[:PERMISSIONS]]`.
    #[serde(default)]
    pub devices: Vec<String>,
}

/// One resource limit (`nofile`, `nproc`, …) set before the user's program starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rlimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

const RLIMITS: [(&str, nix::sys::resource::Resource); 15] = {
    use nix::sys::resource::Resource as R;
    [
        ("as", R::RLIMIT_AS),
        ("core", R::RLIMIT_CORE),
        ("cpu", R::RLIMIT_CPU),
        ("data", R::RLIMIT_DATA),
        ("fsize", R::RLIMIT_FSIZE),
        ("locks", R::RLIMIT_LOCKS),
        ("memlock", R::RLIMIT_MEMLOCK),
        ("msgqueue", R::RLIMIT_MSGQUEUE),
        ("nice", R::RLIMIT_NICE),
        ("nofile", R::RLIMIT_NOFILE),
        ("nproc", R::RLIMIT_NPROC),
        ("rtprio", R::RLIMIT_RTPRIO),
        ("rttime", R::RLIMIT_RTTIME),
        ("sigpending", R::RLIMIT_SIGPENDING),
        ("stack", R::RLIMIT_STACK),
    ]
};

fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    RLIMITS.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// `nofile=1024:2048` → a limit this node can give (its own hard limit is the ceiling: without
/// CAP_SYS_RESOURCE a hard limit can only go down).
pub fn parse_ulimit(u: &str) -> Result<Rlimit, String> {
    let bad = || format!("--ulimit {u:?}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048");
    let (name, values) = u.split_once('=').ok_or_else(bad)?;
    let resource = rlimit_resource(name).ok_or_else(|| {
        let names: Vec<&str> = RLIMITS.iter().map(|(n, _)| *n).collect();
        format!(
            "--ulimit {u:?}: unknown limit {name:?} (one of {})",
            names.join(", ")
        )
    })?;
    let num = |v: &str| -> Result<u64, String> {
        if v == "-1" || v == "unlimited" {
            Ok(u64::MAX)
        } else {
            v.parse().map_err(|_| bad())
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (num(s)?, num(h)?),
        None => (num(values)?, num(values)?),
    };
    if soft > hard {
        return Err(format!(
            "--ulimit {u:?}: the soft limit is above the hard limit"
        ));
    }
    let (_, ceiling) = nix::sys::resource::getrlimit(resource).map_err(|e| e.to_string())?;
    if hard > ceiling {
        return Err(format!(
            "--ulimit {u:?}: above this node's hard limit {ceiling} (it cannot raise it without CAP_SYS_RESOURCE)"
        ));
    }
    Ok(Rlimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// The resolved security settings the runtime applies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecuritySpec {
    pub privileged: bool,
    /// The capability set (bounding, and effective/permitted for root).
    pub caps: Vec<String>,
    /// `None`: no filter (`unconfined` or `--privileged`).
    pub seccomp: Option<crate::seccomp::Profile>,
    /// `--ulimit`s (on top of the default `nofile`).
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// `--device`s: made in the container's /dev and allowed by its device cgroup.
    #[serde(default)]
    pub devices: Vec<Device>,
}

/// A host device given to a container (`--device`), resolved on the host once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Device {
    /// Where it appears, an absolute path under /dev.
    pub path: String,
    pub block: bool,
    pub major: u64,
    pub minor: u64,
    /// The device cgroup's access: some of `r`, `w`, `m`.
    pub access: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// `--device /dev/fuse[:/dev/fuse[:rwm]]`, looked up on the host: it must be a character or
/// block device.
pub fn parse_device(d: &str) -> Result<Device, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut parts = d.splitn(3, ':');
    let host = parts.next().unwrap_or_default();
    let (path, access) = match (parts.next(), parts.next()) {
        (None, _) => (host.to_string(), "rwm".to_string()),
        (Some(p), None) if !p.starts_with('/') => (host.to_string(), p.to_string()),
        (Some(p), None) => (p.to_string(), "rwm".to_string()),
        (Some(p), Some(a)) => (p.to_string(), a.to_string()),
    };
    if access.is_empty() || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(format!(
            "--device {d:?}: permissions must be some of r, w, m"
        ));
    }
    let m = std::fs::metadata(host).map_err(|e| format!("--device {d:?}: {host}: {e}"))?;
    let kind = m.file_type();
    if !kind.is_char_device() && !kind.is_block_device() {
        return Err(format!("--device {d:?}: {host} is not a device"));
    }
    if !path.starts_with("/dev/") || path.split('/').any(|c| c == "..") {
        return Err(format!(
            "--device {d:?}: the container path must be under /dev"
        ));
    }
    let rdev = m.rdev();
    Ok(Device {
        path,
        block: kind.is_block_device(),
        major: nix::sys::stat::major(rdev),
        minor: nix::sys::stat::minor(rdev),
        access,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
    })
}

/// Whether this host's cgroups can keep devices closed: the v1 `devices` controller (legacy and
/// hybrid hosts). On a unified (v2) host that needs an eBPF device program, which this build
/// does not load (libcgroups' `cgroupsv2_devices` needs libbpf and libelf at build time); there
/// every container instead gets a `nodev` rootfs and no `CAP_MKNOD` (unless `--cap-add MKNOD`
/// or `--privileged`), so the only devices it can open are the ones made in its own `/dev`:
/// docker's defaults and its `--device`s.
pub fn device_filter_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        !matches!(
            libcgroups::common::get_cgroup_setup(),
            Ok(libcgroups::common::CgroupSetup::Unified)
        )
    })
}

/// Docker's capability rules (see [`resolve_security`]), and where no device cgroup can keep
/// devices closed ([`device_filter_available`] false), no `CAP_MKNOD` unless asked for by name.
fn without_mknod_unless_asked(
    mut caps: std::collections::BTreeSet<String>,
    req: &Security,
    filter: bool,
) -> std::collections::BTreeSet<String> {
    let asked = req.cap_add.iter().any(|c| {
        let c = c.trim().to_ascii_uppercase();
        c == "MKNOD" || c == "CAP_MKNOD"
    });
    if !filter && !req.privileged && !asked {
        caps.remove(&caps::Capability::CAP_MKNOD.to_string());
    }
    caps
}

/// The container's device cgroup rules (docker's default allow-list, which libcgroups adds to
/// whatever is asked: `c *:* m`, `b *:* m`, the default nodes of [`DEFAULT_DEVICES`],
/// `/dev/console`, `/dev/pts/*`, `/dev/ptmx`, `/dev/net/tun`): everything denied first, then
/// each `--device`. `--privileged` allows every device, as docker does.
pub(crate) fn device_rules(
    security: &SecuritySpec,
) -> Result<Vec<oci_spec::runtime::LinuxDeviceCgroup>, String> {
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};
    let rule = |allow: bool, typ: Option<LinuxDeviceType>, major, minor, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access(access.to_string());
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().map_err(|e| err("device cgroup rule", e))
    };
    if security.privileged {
        return Ok(vec![rule(
            true,
            Some(LinuxDeviceType::A),
            None,
            None,
            "rwm",
        )?]);
    }
    let mut rules = vec![rule(false, Some(LinuxDeviceType::A), None, None, "rwm")?];
    for d in &security.devices {
        let typ = if d.block {
            LinuxDeviceType::B
        } else {
            LinuxDeviceType::C
        };
        rules.push(rule(
            true,
            Some(typ),
            Some(d.major as i64),
            Some(d.minor as i64),
            &d.access,
        )?);
    }
    Ok(rules)
}

impl Default for SecuritySpec {
    fn default() -> Self {
        SecuritySpec {
            privileged: false,
            caps: DEFAULT_CAPS.iter().map(|c| c.to_string()).collect(),
            seccomp: Some(crate::seccomp::Profile::default_profile()),
            rlimits: Vec::new(),
            devices: Vec::new(),
        }
    }
}

fn parse_cap(name: &str) -> Result<caps::Capability, String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    full.parse::<caps::Capability>()
        .map_err(|_| format!("unknown capability {name:?} (e.g. NET_ADMIN, SYS_PTRACE)"))
}

/// docker's rules: start from the default set (or all with `--privileged`), add `--cap-add`
/// (`ALL` = every capability), then remove `--cap-drop` (`ALL` = every capability).
pub fn resolve_security(req: &Security) -> Result<SecuritySpec, String> {
    let mut set: std::collections::BTreeSet<String> = if req.privileged {
        caps::all().iter().map(|c| c.to_string()).collect()
    } else {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    };
    for c in &req.cap_add {
        if c.eq_ignore_ascii_case("all") {
            set.extend(caps::all().iter().map(|c| c.to_string()));
        } else {
            set.insert(parse_cap(c)?.to_string());
        }
    }
    for c in &req.cap_drop {
        if c.eq_ignore_ascii_case("all") {
            set.clear();
        } else {
            set.remove(&parse_cap(c)?.to_string());
        }
    }
    let seccomp = match req.seccomp.as_deref() {
        _ if req.privileged => None,
        Some("unconfined") => None,
        None => Some(crate::seccomp::Profile::default_profile()),
        Some(json) => Some(crate::seccomp::Profile::from_docker_json(json)?),
    };
    let set = without_mknod_unless_asked(set, req, device_filter_available());
    Ok(SecuritySpec {
        privileged: req.privileged,
        caps: set.into_iter().collect(),
        seccomp,
        rlimits: req
            .ulimits
            .iter()
            .map(|u| parse_ulimit(u))
            .collect::<Result<_, _>>()?,
        devices: req
            .devices
            .iter()
            .map(|d| parse_device(d))
            .collect::<Result<_, _>>()?,
    })
}

/// Resource limits applied through the container's cgroup (libcgroups: v1, hybrid and v2).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes (`--memory`).
    pub memory: Option<i64>,
    /// Maximum number of processes (`--pids-limit`).
    pub pids: Option<i64>,
    /// CPUs as a fraction of one (`--cpus 0.5`), applied as a CFS quota.
    pub cpus: Option<f64>,
}

fn resources(spec: &Spec) -> Result<oci_spec::runtime::LinuxResources, String> {
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };
    let l = &spec.limits;
    let mut b = LinuxResourcesBuilder::default().devices(device_rules(&spec.security)?);
    if let Some(m) = l.memory {
        b = b.memory(
            LinuxMemoryBuilder::default()
                .limit(m)
                .build()
                .map_err(|e| err("memory limit", e))?,
        );
    }
    if let Some(p) = l.pids {
        b = b.pids(
            LinuxPidsBuilder::default()
                .limit(p)
                .build()
                .map_err(|e| err("pids limit", e))?,
        );
    }
    if let Some(c) = l.cpus {
        let period: u64 = 100_000;
        let quota = (c * period as f64).round() as i64;
        b = b.cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota(quota)
                .build()
                .map_err(|e| err("cpu quota", e))?,
        );
    }
    b.build().map_err(|e| err("resources", e))
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        remove_with_retries(&self.0);
    }
}

/// Removes a cgroup whose container ended: an exiting cgroup can stay busy for a moment
/// (there can be no process left in a dead pid namespace), so retry briefly.
fn remove_with_retries(m: &libcgroups::common::AnyCgroupManager) {
    use libcgroups::common::CgroupManager;
    for _ in 0..50 {
        if m.remove().is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Docker's default capability set; everything else leaves the bounding set.
const DEFAULT_CAPS: [caps::Capability; 14] = [
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_FSETID,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_MKNOD,
    caps::Capability::CAP_NET_RAW,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETFCAP,
    caps::Capability::CAP_SETPCAP,
    caps::Capability::CAP_NET_BIND_SERVICE,
    caps::Capability::CAP_SYS_CHROOT,
    caps::Capability::CAP_KILL,
    caps::Capability::CAP_AUDIT_WRITE,
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The libcgroups manager of container `id`'s cgroup, `/reg/<id>` (v1, hybrid or v2).
fn cgroup_manager(id: &str) -> Result<libcgroups::common::AnyCgroupManager, String> {
    libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: PathBuf::from(format!("/reg/{id}")),
        systemd_cgroup: false,
        container_name: id.to_string(),
    })
    .map_err(|e| e.to_string())
}

/// Keeps cgroup moves fast while a container starts: the RCU grace period that the init's
/// first move into its cgroup would wait for on the start's critical path is taken in the
/// background instead.
///
/// Moving a process into a cgroup (a write to `cgroup.procs`) takes the kernel's global
/// `cgroup_threadgroup_rwsem` for writing; when no move happened within about the last grace
/// period, that first waits for a whole one (10–20 ms measured here; every runtime pays it,
/// crun and runc too). Rewriting the agent's own pid into the cgroup it already is in changes
/// nothing but takes the lock: one thread does that every few ms for [`WARM_FOR`] after the
/// latest call, so the wait overlaps the rest of the start (network, bundle, monitor) and the
/// init's own move finds the lock ready. Concurrent starts share the one thread.
pub fn warm_cgroup_moves() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::OnceLock;
    static RUNNING: AtomicBool = AtomicBool::new(false);
    static UNTIL_MS: AtomicU64 = AtomicU64::new(0);
    // The agent's own cgroup does not change: found once.
    static PROCS: OnceLock<Option<PathBuf>> = OnceLock::new();
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    fn now_ms() -> u64 {
        EPOCH
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64
    }
    let Some(procs) = PROCS.get_or_init(own_cgroup_procs).clone() else {
        return;
    };
    UNTIL_MS.fetch_max(now_ms() + WARM_FOR.as_millis() as u64, Ordering::SeqCst);
    if RUNNING.swap(true, Ordering::SeqCst) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("cgroup-warm".into())
        .spawn(move || {
            let me = std::process::id().to_string();
            loop {
                while now_ms() < UNTIL_MS.load(Ordering::SeqCst) {
                    let _ = std::fs::write(&procs, &me);
                    std::thread::sleep(std::time::Duration::from_millis(4));
                }
                RUNNING.store(false, Ordering::SeqCst);
                // A call that came in between the last check and the store keeps us going.
                if now_ms() >= UNTIL_MS.load(Ordering::SeqCst)
                    || RUNNING.swap(true, Ordering::SeqCst)
                {
                    return;
                }
            }
        });
    if spawned.is_err() {
        RUNNING.store(false, Ordering::SeqCst);
    }
}

/// How long [`warm_cgroup_moves`] keeps the lock warm after a start began.
const WARM_FOR: std::time::Duration = std::time::Duration::from_millis(150);

/// The `cgroup.procs` of this process's own cgroup: in the v1 pids hierarchy where there is
/// one, else in the v2 hierarchy.
fn own_cgroup_procs() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut v2 = None;
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "pids") {
            return Some(
                Path::new("/sys/fs/cgroup/pids")
                    .join(path)
                    .join("cgroup.procs"),
            );
        }
        if controllers.is_empty() {
            v2 = Some(Path::new("/sys/fs/cgroup").join(path).join("cgroup.procs"));
        }
    }
    v2.filter(|p| p.exists())
}

/// Removes container `id`'s cgroup when its monitor could not (it was killed).
pub fn remove_cgroup(id: &str) {
    if let Ok(m) = cgroup_manager(id) {
        remove_with_retries(&m);
    }
}

/// A started container's cgroup; dropping it removes the cgroup (after the container ended).
pub struct Cgroup(libcgroups::common::AnyCgroupManager);

/// Waits for the container's init and returns docker's exit code.
pub fn wait(spec: &Spec, pid: nix::unistd::Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("reg: container {}: wait: {e}", spec.id);
                return 125;
            }
        }
    }
}

/// Starts the container: its init runs in new namespaces inside its cgroup. Must be called
/// while the process is single-threaded. `Err` carries the exit code (125) after the reason
/// was written to stderr.
#[allow(unsafe_code)]
/// `console`: with `-t`, the init's end of a socket on which it sends the master of the
/// terminal it allocates inside the container.
pub fn start(
    spec: &Spec,
    console: Option<&std::os::fd::OwnedFd>,
) -> Result<(nix::unistd::Pid, Cgroup), i32> {
    let console_fd = console.map(|c| c.as_raw_fd());
    for d in ["upper", "work", "rootfs"] {
        if let Err(e) = std::fs::create_dir_all(spec.dir.join(d)) {
            eprintln!(
                "reg: container {}: {}: {e}",
                spec.id,
                spec.dir.join(d).display()
            );
            return Err(125);
        }
    }
    let res = match resources(spec) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reg: container {}: {e}", spec.id);
            return Err(125);
        }
    };
    // The init waits on `ready` until it has been put into its cgroup; we wait on `done` until
    // the init has exec'd the user's program or failed (its end is close-on-exec): until then
    // its mount namespace still has the host's root, and nothing may join it (`reg exec`).
    let pipes = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .and_then(|r| Ok((r, nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)));
    let ((ready_r, ready_w), (done_r, done_w)) = match pipes {
        Ok(p) => p,
        Err(e) => {
            eprintln!("reg: container {}: pipe: {e}", spec.id);
            return Err(125);
        }
    };
    let done_r_raw = done_r.as_raw_fd();
    // Compiled ahead by the agent when it wrote the bundle; compiled here otherwise.
    let filters = match &spec.security.seccomp {
        Some(p) => match crate::seccomp::read_cache(
            &spec.dir,
            &crate::seccomp::cache_key(p, &spec.security.caps),
        ) {
            Some(f) => f,
            None => match p.compile(&spec.security.caps) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("reg: container {}: {e}", spec.id);
                    return Err(125);
                }
            },
        },
        None => Vec::new(),
    };
    let netns = match &spec.netns {
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!(
                    "reg: container {}: network namespace {}: {e}",
                    spec.id,
                    p.display()
                );
                return Err(125);
            }
        },
        None => None,
    };
    let netns_raw = netns.as_ref().map(|f| f.as_raw_fd());
    let ready_w_raw = ready_w.as_raw_fd();
    let mut stack = vec![0u8; 1024 * 1024];
    let flags = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | if spec.network == "host" || netns.is_some() {
            CloneFlags::empty()
        } else {
            CloneFlags::CLONE_NEWNET
        };
    let child_spec = spec.clone();
    // SAFETY: the monitor is single-threaded (no other thread can hold a lock the child would
    // need); without CLONE_VM the child runs on its own copy of `stack`, so the parent may free
    // its copy; the callback only makes syscalls and exits or execs.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(move || {
                // Our copy of the write end must go, or a dead monitor would leave us waiting.
                let _ = nix::unistd::close(ready_w_raw);
                let _ = nix::unistd::close(done_r_raw);
                // The container lives no longer than its monitor, which records its end.
                if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err() {
                    return 125;
                }
                if let Some(fd) = netns_raw {
                    // (Within the clone's unsafe block.) The parent keeps the file open until
                    // after clone; our copy of the fd table holds it for as long as this borrow.
                    let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                    if let Err(e) = nix::sched::setns(fd, CloneFlags::CLONE_NEWNET) {
                        eprintln!("reg: joining the network namespace: {e}");
                        return 125;
                    }
                }
                init(&child_spec, &filters, console_fd, ready_r.as_raw_fd())
            }),
            &mut stack,
            flags,
            Some(nix::sys::signal::Signal::SIGCHLD as i32),
        )
    };
    let pid = match pid {
        Ok(p) => p,
        Err(e) => {
            eprintln!("reg: container {}: cannot create namespaces: {e}", spec.id);
            return Err(125);
        }
    };
    // The cgroup is made while the init sets up its mounts (libcgroups needs ~10 ms to find
    // the controllers); the init waits for it before it execs.
    let cgroup = match cgroup_manager(&spec.id) {
        Ok(m) => Cgroup(m),
        Err(e) => {
            eprintln!("reg: container {}: cgroups: {e}", spec.id);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(125);
        }
    };
    {
        use libcgroups::common::{CgroupManager, ControllerOpt};
        let joined = cgroup
            .0
            .add_task(pid)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                cgroup
                    .0
                    .apply(&ControllerOpt {
                        resources: &res,
                        disable_oom_killer: false,
                        oom_score_adj: None,
                        freezer_state: None,
                    })
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = joined {
            eprintln!("reg: container {}: cgroups: {e}", spec.id);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(125);
        }
        if nix::unistd::write(&ready_w, &[1]).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        drop(ready_w);
    }
    drop(done_w);
    let mut b = [0u8; 1];
    while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(done_r.as_raw_fd(), &mut b) {}
    Ok((pid, cgroup))
}

/// The container's init before exec. Never returns on success.
fn init(
    spec: &Spec,
    filters: &[seccompiler::BpfProgram],
    console: Option<std::os::fd::RawFd>,
    ready: std::os::fd::RawFd,
) -> isize {
    let mut ready = Ready {
        fd: ready,
        joined: None,
    };
    let prepared = crate::rootfs::setup(spec, &mut ready).and_then(|program| {
        if let Some(sock) = console {
            terminal(sock, spec.tty_size)?;
        }
        Ok(program)
    });
    // Nothing of the user's runs before the init is in its cgroup.
    if !ready.wait() {
        return 125;
    }
    match prepared {
        Ok(program) => exec(
            &spec.id,
            &program,
            &spec.args,
            &spec.env,
            spec.user.as_deref(),
            &spec.security,
            filters,
        ),
        Err(e) => {
            eprintln!("reg: container {}: {}", spec.id, e.message);
            e.code
        }
    }
}

pub(crate) fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// The init's side of the pipe on which the monitor says the init is in its cgroup, with the
/// cgroup's limits and device rules applied.
pub(crate) struct Ready {
    fd: std::os::fd::RawFd,
    joined: Option<bool>,
}

impl Ready {
    /// Waits (once) for the monitor's word; false when it never came.
    pub(crate) fn wait(&mut self) -> bool {
        *self.joined.get_or_insert_with(|| {
            let mut b = [0u8; 1];
            matches!(nix::unistd::read(self.fd, &mut b), Ok(1))
        })
    }
}

/// The executable for `args[0]`: a path as given, else searched in the `PATH` of `env`.
pub(crate) fn find_program(args: &[String], env: &[String]) -> Result<PathBuf, String> {
    let Some(arg0) = args.first() else {
        return Err("no command given and the image has none".into());
    };
    if arg0.contains('/') {
        return Ok(PathBuf::from(arg0));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    Ok(path
        .split(':')
        .map(|d| Path::new(d).join(arg0))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(format!("\0not-found:{arg0}"))))
}

nix::ioctl_write_int_bad!(set_ctty, nix::libc::TIOCSCTTY);
nix::ioctl_write_ptr_bad!(set_win_size, nix::libc::TIOCSWINSZ, nix::libc::winsize);

/// `-t`, inside the container (after pivot_root): a terminal from the container's own devpts
/// (so `tty` names it), made the controlling terminal of a new session and stdio 0-2; its
/// master goes to the monitor over `sock` (as runc's console socket).
#[allow(unsafe_code)]
fn terminal(sock: std::os::fd::RawFd, size: Option<(u16, u16)>) -> Result<(), String> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| err("opening /dev/ptmx", e))?;
    nix::pty::grantpt(&master).map_err(|e| err("grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| err("unlockpt", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| err("ptsname", e))?;
    if let Some((rows, cols)) = size {
        let ws = nix::libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: a valid terminal fd and a valid winsize that outlives the call.
        unsafe { set_win_size(master.as_raw_fd(), &ws) }.map_err(|e| err("setting the size", e))?;
    }
    nix::unistd::setsid().map_err(|e| err("setsid", e))?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&name)
        .map_err(|e| err(&format!("opening {name}"), e))?;
    // SAFETY: the fd is the terminal just opened; TIOCSCTTY takes an int argument.
    unsafe { set_ctty(slave.as_raw_fd(), 0) }
        .map_err(|e| err("setting the controlling terminal", e))?;
    for target in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), target).map_err(|e| err("dup2", e))?;
    }
    let fds = [master.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(
        sock,
        &[std::io::IoSlice::new(b"t")],
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(|e| err("sending the terminal to the monitor", e))?;
    Ok(())
}

/// The pair of sockets over which an init (or exec'd process) sends its terminal's master.
pub fn console_socket() -> nix::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
}

/// Receives one fd sent with [`terminal`]; `None` when the init ended without sending one.
pub fn receive_fd(sock: &std::os::fd::OwnedFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let fd = msg.cmsgs().ok()?.find_map(|c| match c {
        nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
        _ => None,
    })?;
    #[allow(unsafe_code)]
    // SAFETY: the kernel just installed this fd in our table for us; nobody else owns it.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

nix::ioctl_read_bad!(get_win_size, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// Sets the size of the terminal on `fd` (a pty master: its processes get SIGWINCH).
#[allow(unsafe_code)]
pub fn set_terminal_size(fd: std::os::fd::BorrowedFd<'_>, rows: u16, cols: u16) -> nix::Result<()> {
    let ws = nix::libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: a valid fd and a valid winsize that outlives the call.
    unsafe { set_win_size(fd.as_raw_fd(), &ws) }.map(drop)
}

/// The size (rows, columns) of the terminal on `fd`, if it is one.
#[allow(unsafe_code)]
pub fn terminal_size(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain old data; the ioctl fills it or fails.
    let mut ws: nix::libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a valid out-pointer that outlives the call.
    unsafe { get_win_size(fd.as_raw_fd(), &mut ws) }.ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

nix::ioctl_read_bad!(get_if_flags, nix::libc::SIOCGIFFLAGS, nix::libc::ifreq);
nix::ioctl_write_ptr_bad!(set_if_flags, nix::libc::SIOCSIFFLAGS, nix::libc::ifreq);

/// Brings up `lo` in the container's network namespace (docker's `none` network has it up).
#[allow(unsafe_code)]
pub(crate) fn loopback_up() -> nix::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value for it.
    let mut req: nix::libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as nix::libc::c_char;
    }
    // SAFETY: the fd is a valid socket and `req` a valid ifreq that outlives both calls; the
    // union field written is the flags member that SIOCGIFFLAGS filled in.
    unsafe {
        get_if_flags(sock.as_raw_fd(), &mut req)?;
        req.ifr_ifru.ifru_flags |=
            (nix::libc::IFF_UP | nix::libc::IFF_RUNNING) as nix::libc::c_short;
        set_if_flags(sock.as_raw_fd(), &req)?;
    }
    Ok(())
}

/// Keeps only `keep` in the bounding and inheritable sets (root's effective and permitted
/// sets follow the bounding set at exec).
fn drop_privileges(keep: &[String]) -> Result<(), String> {
    // Only what this process has can be kept (root here may lack some, DESIGN.md §7).
    let have =
        caps::read(None, caps::CapSet::Bounding).map_err(|e| err("reading the bounding set", e))?;
    let keep: caps::CapsHashSet = keep
        .iter()
        .filter_map(|c| c.parse().ok())
        .filter(|c| have.contains(c))
        .collect();
    for c in caps::all() {
        if !keep.contains(&c) {
            caps::drop(None, caps::CapSet::Bounding, c)
                .map_err(|e| err(&format!("dropping {c}"), e))?;
        }
    }
    caps::set(None, caps::CapSet::Inheritable, &keep)
        .map_err(|e| err("setting inheritable capabilities", e))?;
    let _ = caps::clear(None, caps::CapSet::Ambient);
    Ok(())
}

/// docker's default `nofile` limit (1048576), clamped to the hard limit this process has:
/// without CAP_SYS_RESOURCE (DESIGN.md §7) a hard limit can only go down.
fn set_rlimits(extra: &[Rlimit]) -> Result<(), String> {
    use nix::sys::resource::{setrlimit, Resource};
    let want = nofile_limit();
    setrlimit(Resource::RLIMIT_NOFILE, want, want).map_err(|e| err("setting RLIMIT_NOFILE", e))?;
    for l in extra {
        let r = rlimit_resource(&l.name).ok_or_else(|| format!("unknown rlimit {}", l.name))?;
        setrlimit(r, l.soft, l.hard).map_err(|e| err(&format!("setting ulimit {}", l.name), e))?;
    }
    Ok(())
}

/// The `nofile` limit containers get: docker's 1048576, or this process's hard limit if lower.
pub fn nofile_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard.min(1_048_576))
        .unwrap_or(1024)
}

/// A user's ids as the container's /etc/passwd and /etc/group define them.
#[derive(Debug, PartialEq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Resolves `USER[:GROUP]` (names or numbers) against passwd/group file contents, the way
/// docker does: an unknown name is an error, an unknown number is used as is.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<Ids, String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let found = entries
        .iter()
        .find(|f| f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u));
    let (uid, mut gid, home, name) = match (found, u.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .map_err(|_| format!("bad uid in /etc/passwd for {u}"))?,
            f[3].parse::<u32>().unwrap_or(0),
            f[5].to_string(),
            Some(f[0].to_string()),
        ),
        (None, Ok(n)) => (n, 0, "/".to_string(), None),
        (None, Err(_)) => {
            return Err(format!(
                "unable to find user {u}: no matching entries in passwd file"
            ))
        }
    };
    let groups_file: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    if let Some(g) = g {
        gid = match groups_file.iter().find(|f| f[0] == g) {
            Some(f) => f[2]
                .parse()
                .map_err(|_| format!("bad gid in /etc/group for {g}"))?,
            None => g.parse().map_err(|_| {
                format!("unable to find group {g}: no matching entries in group file")
            })?,
        };
    }
    let mut groups = vec![gid];
    if let Some(name) = name {
        for f in &groups_file {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(n) = f[2].parse::<u32>() {
                    if !groups.contains(&n) {
                        groups.push(n);
                    }
                }
            }
        }
    }
    Ok(Ids {
        uid,
        gid,
        groups,
        home,
    })
}

/// Last steps before the user's program, shared by a container's init and `exec`:
/// capabilities, rlimits, user, no_new_privs, seccomp, execve.
fn exec(
    id: &str,
    program: &Path,
    args: &[String],
    env: &[String],
    user: Option<&str>,
    security: &SecuritySpec,
    filters: &[seccompiler::BpfProgram],
) -> isize {
    let shown = program.display().to_string();
    if let Some(name) = shown.strip_prefix("\0not-found:") {
        eprintln!("reg: container {id}: exec: {name:?}: executable file not found in $PATH");
        return 127;
    }
    let mut env = env.to_vec();
    let ids = match user {
        Some(u) => {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
            match resolve_user(u, &passwd, &group) {
                Ok(ids) => Some(ids),
                Err(e) => {
                    eprintln!("reg: container {id}: {e}");
                    return 125;
                }
            }
        }
        None => None,
    };
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = match &ids {
            Some(i) if !i.home.is_empty() => i.home.clone(),
            Some(_) => "/".to_string(),
            None => "/root".to_string(),
        };
        env.push(format!("HOME={home}"));
    }
    let prepared = drop_privileges(&security.caps)
        .and_then(|()| set_rlimits(&security.rlimits))
        .and_then(|()| match &ids {
            Some(i) => {
                let gids: Vec<nix::unistd::Gid> = i
                    .groups
                    .iter()
                    .map(|g| nix::unistd::Gid::from_raw(*g))
                    .collect();
                nix::unistd::setgroups(&gids)
                    .map_err(|e| err("setgroups", e))
                    .and_then(|()| {
                        nix::unistd::setgid(nix::unistd::Gid::from_raw(i.gid))
                            .map_err(|e| err("setgid", e))
                    })
                    .and_then(|()| {
                        nix::unistd::setuid(nix::unistd::Uid::from_raw(i.uid))
                            .map_err(|e| err("setuid", e))
                    })
            }
            None => Ok(()),
        })
        .and_then(|()| {
            nix::sys::prctl::set_no_new_privs().map_err(|e| err("setting no_new_privs", e))
        })
        .and_then(|()| only_stdio_across_exec())
        .and_then(|()| crate::seccomp::install(filters));
    if let Err(e) = prepared {
        eprintln!("reg: container {id}: {e}");
        return 125;
    }
    let cstr = |s: &str| CString::new(s.as_bytes()).unwrap_or_default();
    let args: Vec<CString> = args.iter().map(|a| cstr(a)).collect();
    let env: Vec<CString> = env.iter().map(|e| cstr(e)).collect();
    let err = nix::unistd::execve(&cstr(&shown), &args, &env).err();
    let code = match err {
        Some(nix::errno::Errno::ENOENT) => 127,
        _ => 126,
    };
    eprintln!(
        "reg: container {id}: exec {shown:?}: {}",
        err.map(|e| e.desc()).unwrap_or("failed")
    );
    code
}

/// Marks every fd above 2 close-on-exec, right before the user's program is executed: it
/// starts with only stdin, stdout and stderr (a terminal is among them), and no descriptor of
/// the runtime — a host procfs handle, a namespace file, a socket of the monitor — survives
/// into the container (CVE-2024-21626). The last fd the runtime needs has been used by then.
#[allow(unsafe_code)]
fn only_stdio_across_exec() -> Result<(), String> {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets a flag on open descriptors;
    // it touches no memory of ours.
    let r = unsafe {
        nix::libc::close_range(
            3,
            u32::MAX,
            nix::libc::CLOSE_RANGE_CLOEXEC as nix::libc::c_int,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: every descriptor that is open, one by one.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| err("listing open descriptors", e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // One that closed meanwhile (the listing's own) answers EBADF: nothing to do.
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    Ok(())
}

/// Copies stdin (when `input`) to the terminal's master and the master to stdout until the
/// terminal closes; single-threaded.
fn relay(master: &std::os::fd::OwnedFd, input: bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let mut reading = input;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if reading {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (master_ready, stdin_ready) = (ready(0), ready(1));
        if master_ready {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => return, // EIO: the terminal's last user is gone
                Ok(n) => {
                    use std::io::Write;
                    let mut out = std::io::stdout();
                    let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
                }
            }
        }
        if stdin_ready {
            match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    // End of input: an EOF character tells the terminal's reader, as ^D would.
                    let _ = nix::unistd::write(master, &[4]);
                    reading = false;
                }
                Ok(n) => {
                    let _ = nix::unistd::write(master, &buf[..n]);
                }
            }
        }
    }
}

/// What `reg exec` runs: a process joining a running container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    pub id: String,
    /// The container init's host pid.
    pub pid: i32,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: Option<String>,
    pub security: SecuritySpec,
    /// `exec -t`: a terminal from the container's devpts, of this size.
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub tty_size: Option<(u16, u16)>,
    /// `exec -i`: this helper's stdin is the process's input.
    #[serde(default)]
    pub interactive: bool,
}

/// Joins the container's cgroup and namespaces and runs the command in it; returns its exit
/// code. Runs in a fresh single-threaded process (`reg node enter`), itself started from the
/// sealed binary.
#[allow(unsafe_code)]
pub fn enter(e: &ExecSpec) -> i32 {
    use nix::sched::{setns, CloneFlags as F};
    let fail = |what: String| {
        eprintln!("reg: exec in container {}: {what}", e.id);
        125
    };
    let filters = match &e.security.seccomp {
        Some(p) => match p.compile(&e.security.caps) {
            Ok(f) => f,
            Err(m) => return fail(m),
        },
        None => Vec::new(),
    };
    // Open every namespace first: once in the mount namespace, the host's /proc is gone.
    let mut nss = Vec::new();
    for (name, flag) in [
        ("ipc", F::CLONE_NEWIPC),
        ("uts", F::CLONE_NEWUTS),
        ("net", F::CLONE_NEWNET),
        ("pid", F::CLONE_NEWPID),
        ("mnt", F::CLONE_NEWNS),
    ] {
        match std::fs::File::open(format!("/proc/{}/ns/{name}", e.pid)) {
            Ok(f) => nss.push((name, f, flag)),
            Err(err) => {
                return fail(format!(
                    "the container is not running ({name} namespace: {err})"
                ))
            }
        }
    }
    {
        use libcgroups::common::CgroupManager;
        let joined = cgroup_manager(&e.id)
            .and_then(|m| m.add_task(nix::unistd::getpid()).map_err(|x| x.to_string()));
        if let Err(x) = joined {
            return fail(format!("joining the cgroup: {x}"));
        }
    }
    for (name, f, flag) in &nss {
        if let Err(x) = setns(f, *flag) {
            return fail(format!("joining the {name} namespace: {x}"));
        }
    }
    drop(nss);
    let console = if e.tty {
        match console_socket() {
            Ok(pair) => Some(pair),
            Err(x) => return fail(format!("console socket: {x}")),
        }
    } else {
        None
    };
    // The pid namespace applies to children: fork one that lives in the container.
    // SAFETY: this process is single-threaded (a fresh `reg node enter`), so the child may
    // run arbitrary code after fork.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            if let Err(x) = crate::rootfs::enter_workdir(&e.cwd, false) {
                eprintln!("reg: exec in container {}: {}", e.id, x.message);
                std::process::exit(x.code as i32);
            }
            if let Some((_, theirs)) = &console {
                if let Err(x) = terminal(theirs.as_raw_fd(), e.tty_size) {
                    eprintln!("reg: exec in container {}: {x}", e.id);
                    std::process::exit(125);
                }
            }
            let code = match find_program(&e.args, &e.env) {
                Ok(p) => exec(
                    &e.id,
                    &p,
                    &e.args,
                    &e.env,
                    e.user.as_deref(),
                    &e.security,
                    &filters,
                ),
                Err(x) => {
                    eprintln!("reg: exec in container {}: {x}", e.id);
                    125
                }
            };
            std::process::exit(code as i32);
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            // With a terminal, relay: our stdin → its master → our stdout. No threads: after
            // setns into a pid namespace this process may not create any (EINVAL), so a poll loop.
            if let Some((ours, theirs)) = console {
                drop(theirs);
                if let Some(master) = receive_fd(&ours) {
                    relay(&master, e.interactive);
                }
            }
            let code = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => break code,
                    Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(x) => return fail(format!("wait: {x}")),
                }
            };
            code
        }
        Err(x) => fail(format!("fork: {x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nwheel:x:10:app,root\n";

    #[test]
    fn without_a_device_filter_mknod_goes_unless_asked_for() {
        let defaults = || -> std::collections::BTreeSet<String> {
            DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
        };
        let mknod = caps::Capability::CAP_MKNOD.to_string();
        let plain = Security::default();
        assert!(without_mknod_unless_asked(defaults(), &plain, true).contains(&mknod));
        assert!(!without_mknod_unless_asked(defaults(), &plain, false).contains(&mknod));
        let asked = Security {
            cap_add: vec!["mknod".into()],
            ..Security::default()
        };
        assert!(without_mknod_unless_asked(defaults(), &asked, false).contains(&mknod));
        let privileged = Security {
            privileged: true,
            ..Security::default()
        };
        assert!(without_mknod_unless_asked(defaults(), &privileged, false).contains(&mknod));
    }

    #[test]
    fn users_resolve_like_docker() {
        let app = resolve_user("app", PASSWD, GROUP).expect("app");
        assert_eq!(
            app,
            Ids {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 10],
                home: "/home/app".into()
            }
        );
        let n = resolve_user("1234:5678", PASSWD, GROUP).expect("numeric");
        assert_eq!((n.uid, n.gid, n.home.as_str()), (1234, 5678, "/"));
        let g = resolve_user("nobody:wheel", PASSWD, GROUP).expect("group by name");
        assert_eq!((g.uid, g.gid), (65534, 10));
        let by_uid = resolve_user("1000", PASSWD, GROUP).expect("uid in passwd");
        assert_eq!(by_uid.home, "/home/app");
        let e = resolve_user("ghost", PASSWD, GROUP).expect_err("unknown");
        assert!(e.contains("unable to find user ghost"), "{e}");
        let e = resolve_user("app:ghosts", PASSWD, GROUP).expect_err("unknown group");
        assert!(e.contains("unable to find group ghosts"), "{e}");
    }
}
