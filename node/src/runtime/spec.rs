//! What a container or an exec is asked to be, as data: the spec the agent writes into the
//! bundle and the monitor runs, the security options resolved from a request (capabilities,
//! seccomp, devices, rlimits), the user from the image's passwd and group files. Pure, apart
//! from [`parse_device`] looking the host device up.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::sys::device_filter_available;

/// What the monitor needs to start one container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// `--read-only`: the root filesystem mounted read-only (mounts, `/dev`, `/proc` and
    /// tmpfs mounts keep their own modes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// `--tmpfs TARGET[:OPTIONS]`, validated at create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<Tmpfs>,
    /// `--shm-size` in bytes (docker's default 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<i64>,
    /// `--sysctl KEY=VALUE`: namespaced kernel parameters, validated at create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sysctls: Vec<(String, String)>,
    /// `--init`: pid 1 is reg's own reaper, which forwards signals to the program and reaps
    /// orphans (docker's tini), instead of the program itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// `--rm`: the writable layer goes away with the container, so its overlay is mounted
    /// `volatile` — no sync of the host's filesystem when the container's mount namespace ends.
    /// (That sync, a disk cache flush included, ran in the exiting init and held back its exit
    /// status: 4–50 ms of every `run --rm`.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub discard_upper: bool,
    /// What the monitor does with the output: keep it in `container.log` (rotated), or not.
    #[serde(default)]
    pub log: LogLimits,
    /// `--pid`, `--ipc`, `--uts`: a namespace of its own (the default), the host's, or one
    /// to join (another container's).
    #[serde(default, skip_serializing_if = "NsMode::is_private")]
    pub pid_ns: NsMode,
    #[serde(default, skip_serializing_if = "NsMode::is_private")]
    pub ipc_ns: NsMode,
    #[serde(default, skip_serializing_if = "NsMode::is_private")]
    pub uts_ns: NsMode,
    /// `--userns=auto` or the node's remap: the container's ids are this range of the host's
    /// (none: the host's own ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<super::userns::IdMap>,
}

/// Which namespace of a kind a container runs in.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum NsMode {
    /// Its own, new one.
    #[default]
    Private,
    /// The host's (the agent's).
    Host,
    /// The one this namespace file (`/proc/PID/ns/KIND` of another container) names.
    Join(PathBuf),
}

impl NsMode {
    pub fn is_private(&self) -> bool {
        *self == NsMode::Private
    }
}

/// The monitor's log: discarded (`--log-driver none`), or rotated once it reaches `max_size`
/// bytes, keeping `max_file` files (`container.log`, `.1`, … oldest last).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LogLimits {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub discard: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    #[serde(default)]
    pub max_file: u32,
}

/// A tmpfs mount: where, and its mount flags and data (`size=`, `mode=`, `uid=`, `gid=`,
/// `nr_inodes=`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tmpfs {
    pub target: String,
    /// `MsFlags` bits.
    pub flags: u64,
    pub data: String,
}

impl Tmpfs {
    /// `--tmpfs TARGET[:OPTIONS]` (docker's defaults: `noexec,nosuid,nodev`).
    pub fn parse(target: &str, options: &str) -> Result<Tmpfs, SpecError> {
        use nix::mount::MsFlags as F;
        let flag = |why: String| SpecError::Flag {
            flag: "--tmpfs",
            value: format!("{target}:{options}"),
            why,
        };
        if !target.starts_with('/') || target.split('/').any(|c| c == "..") || target == "/" {
            return Err(flag(
                "the target must be an absolute path other than /".into(),
            ));
        }
        let mut flags = F::MS_NOEXEC | F::MS_NOSUID | F::MS_NODEV;
        let mut data = Vec::new();
        for o in options.split(',').filter(|o| !o.is_empty()) {
            match o {
                "rw" => flags.remove(F::MS_RDONLY),
                "ro" => flags.insert(F::MS_RDONLY),
                "exec" => flags.remove(F::MS_NOEXEC),
                "noexec" => flags.insert(F::MS_NOEXEC),
                "suid" => flags.remove(F::MS_NOSUID),
                "nosuid" => flags.insert(F::MS_NOSUID),
                "dev" => flags.remove(F::MS_NODEV),
                "nodev" => flags.insert(F::MS_NODEV),
                "noatime" => flags.insert(F::MS_NOATIME),
                "atime" => flags.remove(F::MS_NOATIME),
                "nodiratime" => flags.insert(F::MS_NODIRATIME),
                "relatime" => flags.insert(F::MS_RELATIME),
                "strictatime" => flags.insert(F::MS_STRICTATIME),
                "sync" => flags.insert(F::MS_SYNCHRONOUS),
                "async" => flags.remove(F::MS_SYNCHRONOUS),
                o => {
                    let (k, v) = o.split_once('=').unwrap_or((o, ""));
                    let valid = match k {
                        "size" | "nr_blocks" | "nr_inodes" => {
                            let n = v.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
                            !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())
                        }
                        "mode" => !v.is_empty() && v.chars().all(|c| c.is_digit(8)) && v.len() <= 4,
                        "uid" | "gid" => v.parse::<u32>().is_ok(),
                        _ => false,
                    };
                    if !valid {
                        return Err(flag(format!(
                            "option {o:?}: use ro, rw, exec, noexec, suid, nosuid, dev, nodev, \
                             size=, mode=, uid=, gid=, nr_inodes="
                        )));
                    }
                    data.push(o.to_string());
                }
            }
        }
        Ok(Tmpfs {
            target: target.to_string(),
            flags: flags.bits(),
            data: data.join(","),
        })
    }
}

/// The namespaced kernel parameters a container may set (docker's list): IPC ones always, the
/// network ones only in a network namespace of its own.
pub fn check_sysctl(key: &str, own_network: bool) -> Result<(), SpecError> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let flag = |why: &str| SpecError::Flag {
        flag: "--sysctl",
        value: key.to_string(),
        why: why.to_string(),
    };
    let well_formed = !key.is_empty()
        && key.split('.').all(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_-".contains(ch))
        });
    if !well_formed {
        return Err(flag("not a kernel parameter name"));
    }
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        return Ok(());
    }
    if key.starts_with("net.") {
        return if own_network {
            Ok(())
        } else {
            Err(flag("network parameters need the container's own network namespace (not --network host or container:)"))
        };
    }
    Err(flag("not a namespaced parameter: only kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.* and net.* can be set per container"))
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
    /// `--group-add GROUP`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
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

pub(super) fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    RLIMITS.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// `nofile=1024:2048` → a limit this node can give (its own hard limit is the ceiling: without
/// CAP_SYS_RESOURCE a hard limit can only go down).
pub fn parse_ulimit(u: &str) -> Result<Rlimit, SpecError> {
    let flag = |why: String| SpecError::Flag {
        flag: "--ulimit",
        value: u.to_string(),
        why,
    };
    let bad = || flag("use NAME=SOFT[:HARD], e.g. nofile=1024:2048".into());
    let (name, values) = u.split_once('=').ok_or_else(bad)?;
    let resource = rlimit_resource(name).ok_or_else(|| {
        let names: Vec<&str> = RLIMITS.iter().map(|(n, _)| *n).collect();
        flag(format!(
            "unknown limit {name:?} (one of {})",
            names.join(", ")
        ))
    })?;
    let num = |v: &str| -> Result<u64, SpecError> {
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
        return Err(flag("the soft limit is above the hard limit".into()));
    }
    let (_, ceiling) =
        nix::sys::resource::getrlimit(resource).map_err(|e| flag(format!("getrlimit: {e}")))?;
    if hard > ceiling {
        return Err(flag(format!(
            "above this node's hard limit {ceiling} (it cannot raise it without CAP_SYS_RESOURCE)"
        )));
    }
    Ok(Rlimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// A run request the runtime cannot honour, naming what in it is wrong.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// `FLAG "VALUE": why` (`--ulimit`, `--device`).
    #[error("{flag} {value:?}: {why}")]
    Flag {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("unknown capability {0:?} (e.g. NET_ADMIN, SYS_PTRACE)")]
    UnknownCapability(String),
    #[error(transparent)]
    Seccomp(#[from] super::seccomp::SeccompError),
}

/// The resolved security settings the runtime applies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecuritySpec {
    pub privileged: bool,
    /// The capability set (bounding, and effective/permitted for root).
    pub caps: Vec<String>,
    /// `None`: no filter (`unconfined` or `--privileged`).
    pub seccomp: Option<super::seccomp::Profile>,
    /// `--ulimit`s (on top of the default `nofile`).
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// `--device`s: made in the container's /dev and allowed by its device cgroup.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// `--group-add`: more groups for the container's processes (names in its /etc/group, or
    /// numbers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
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
pub fn parse_device(d: &str) -> Result<Device, SpecError> {
    let flag = |why: String| SpecError::Flag {
        flag: "--device",
        value: d.to_string(),
        why,
    };
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
        return Err(flag("permissions must be some of r, w, m".into()));
    }
    let m = std::fs::metadata(host).map_err(|e| flag(format!("{host}: {e}")))?;
    let kind = m.file_type();
    if !kind.is_char_device() && !kind.is_block_device() {
        return Err(flag(format!("{host} is not a device")));
    }
    if !path.starts_with("/dev/") || path.split('/').any(|c| c == "..") {
        return Err(flag("the container path must be under /dev".into()));
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

impl Default for SecuritySpec {
    fn default() -> Self {
        SecuritySpec {
            privileged: false,
            caps: DEFAULT_CAPS.iter().map(|c| c.to_string()).collect(),
            seccomp: Some(super::seccomp::Profile::default_profile()),
            rlimits: Vec::new(),
            devices: Vec::new(),
            group_add: Vec::new(),
        }
    }
}

fn parse_cap(name: &str) -> Result<caps::Capability, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    full.parse::<caps::Capability>()
        .map_err(|_| SpecError::UnknownCapability(name.to_string()))
}

/// docker's rules: start from the default set (or all with `--privileged`), add `--cap-add`
/// (`ALL` = every capability), then remove `--cap-drop` (`ALL` = every capability).
pub fn resolve_security(req: &Security) -> Result<SecuritySpec, SpecError> {
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
        None => Some(super::seccomp::Profile::default_profile()),
        Some(json) => Some(super::seccomp::Profile::from_docker_json(json)?),
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
        group_add: req
            .group_add
            .iter()
            .map(|g| {
                let valid = !g.is_empty() && !g.contains([':', '\n']);
                if valid {
                    Ok(g.clone())
                } else {
                    Err(SpecError::Flag {
                        flag: "--group-add",
                        value: g.clone(),
                        why: "a group name or number".into(),
                    })
                }
            })
            .collect::<Result<_, _>>()?,
    })
}

/// The gids of `--group-add` entries: numbers as they are, names from the container's
/// `/etc/group`.
pub fn resolve_groups(names: &[String], group: &str) -> Result<Vec<u32>, String> {
    names
        .iter()
        .map(|g| {
            if let Ok(n) = g.parse::<u32>() {
                return Ok(n);
            }
            group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("Unable to find group {g}: no matching entries in group file")
                })
        })
        .collect()
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
    /// `--cpu-shares`: the relative weight (cpu.shares; 1024 is everyone's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// `--cpu-period` and `--cpu-quota` in microseconds (a CFS quota given directly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<i64>,
    /// `--cpuset-cpus`, `--cpuset-mems`: `0-3`, `0,2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_mems: Option<String>,
    /// `--memory-swap`: memory plus swap in bytes; -1 unlimited swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<i64>,
    /// `--memory-reservation`: the soft limit, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i64>,
    /// `--oom-kill-disable`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_kill_disable: bool,
    /// `--blkio-weight` (10–1000), where the host's blkio controller has a weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blkio_weight: Option<u16>,
    /// `--device-read-bps`, `--device-write-bps`: bytes per second per block device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_read_bps: Vec<DeviceRate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_write_bps: Vec<DeviceRate>,
}

/// A rate limit on one block device, as docker's `HostConfig.BlkioDeviceReadBps` entries
/// carry it (`Path`, `Rate`), with the device's numbers resolved at create.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeviceRate {
    pub path: String,
    pub rate: u64,
    #[serde(default)]
    pub major: i64,
    #[serde(default)]
    pub minor: i64,
}

/// What [`Limits::check`] refuses.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LimitError(pub String);

impl Limits {
    /// Refuses what docker refuses (memory under 6 MB, swap below memory, a quota without a
    /// period's minimum) and what this host's cgroups cannot apply, and resolves the block
    /// devices of the rate limits. Run at create and update, never at start.
    pub fn check(&mut self) -> Result<(), LimitError> {
        const MIN_MEMORY: i64 = 6 * 1024 * 1024;
        let bad = |m: String| Err(LimitError(m));
        if let Some(m) = self.memory {
            if m < MIN_MEMORY {
                return bad("Minimum memory limit allowed is 6MB (--memory)".into());
            }
        }
        if let Some(r) = self.memory_reservation {
            if r < MIN_MEMORY {
                return bad("Minimum memory reservation allowed is 6MB".into());
            }
            if self.memory.is_some_and(|m| r > m) {
                return bad("Minimum memory limit can not be less than memory reservation limit, see usage (--memory-reservation above --memory)".into());
            }
        }
        if let Some(s) = self.memory_swap {
            match self.memory {
                None if s != -1 => {
                    return bad("You should always set the Memory limit when using Memoryswap limit, see usage (--memory-swap needs --memory)".into())
                }
                Some(m) if s != -1 && s < m => {
                    return bad("Minimum memoryswap limit should be larger than memory limit, see usage (--memory-swap is memory plus swap)".into())
                }
                _ => {}
            }
        }
        if let Some(p) = self.cpu_period {
            if !(1000..=1_000_000).contains(&p) {
                return bad("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)".into());
            }
        }
        if let Some(q) = self.cpu_quota {
            if q > 0 && q < 1000 {
                return bad("CPU cfs quota can not be less than 1ms (i.e. 1000)".into());
            }
        }
        if self.cpus.is_some() && (self.cpu_quota.is_some() || self.cpu_period.is_some()) {
            return bad(
                "Conflicting options: --cpus and --cpu-period/--cpu-quota cannot both be set"
                    .into(),
            );
        }
        for (what, set) in [
            ("--cpuset-cpus", &self.cpuset_cpus),
            ("--cpuset-mems", &self.cpuset_mems),
        ] {
            if let Some(s) = set {
                if !valid_cpuset(s) {
                    return bad(format!("{what} {s:?}: use a list like 0-3 or 0,2"));
                }
            }
        }
        if let Some(w) = self.blkio_weight {
            if !(10..=1000).contains(&w) {
                return bad(format!("--blkio-weight {w}: the range is 10 to 1000"));
            }
            if !super::sys::blkio_weight_available() {
                return bad("--blkio-weight: this host's blkio cgroup has no weight (no CFQ/BFQ weight file); leave it unset".into());
            }
        }
        for d in self
            .device_read_bps
            .iter_mut()
            .chain(self.device_write_bps.iter_mut())
        {
            let (major, minor) = super::sys::block_device(&d.path).map_err(|e| {
                LimitError(format!(
                    "--device-read-bps/--device-write-bps {}: {e}",
                    d.path
                ))
            })?;
            d.major = major as i64;
            d.minor = minor as i64;
        }
        Ok(())
    }
}

/// `0-3`, `0,2`, `1,3-5`.
fn valid_cpuset(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            let a = ends.next().and_then(|a| a.parse::<u32>().ok());
            match (a, ends.next()) {
                (Some(_), None) => true,
                (Some(a), Some(b)) => b.parse::<u32>().is_ok_and(|b| b >= a),
                _ => false,
            }
        })
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
    /// With `tty`: a FIFO (in the agent's own state directory) of `ROWS COLS` lines applied to
    /// the terminal while the process runs.
    #[serde(default)]
    pub resize: Option<std::path::PathBuf>,
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
