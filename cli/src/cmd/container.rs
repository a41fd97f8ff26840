//! Container commands (`run`, `ps`, `logs`, `stop`, `kill`, `rm`, `wait`, `exec`, `start`,
//! `inspect`), all through the node agent's API, printed the way docker prints them.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{bail, Context};
use clap::Args;
use reg_node::api::AgentClient;
use reg_registry::Reference;

use super::image::{agent, agent_for_names, each, image_path, pull_to, query_value, rt, PullArgs};
use super::{format, Target};

#[derive(Args)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short = 'd', long)]
    pub(crate) detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub(crate) rm: bool,
    /// Keep stdin open: this terminal's (or pipe's) input goes to the container.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-terminal (with -i, this terminal goes raw and talks to it).
    #[arg(short = 't', long)]
    tty: bool,
    /// Name the container (default: a generated adjective_animal).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass this shell's value).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments).
    #[arg(long = "env-file")]
    env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// User to run as: USER[:GROUP], names or numeric ids.
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    /// Overwrite the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Memory limit, e.g. 64m, 1g (over it, the container is OOM-killed: exit 137).
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Maximum number of processes in the container.
    #[arg(long)]
    pids_limit: Option<i64>,
    /// CPUs, e.g. 0.5 (a CFS quota).
    #[arg(long)]
    cpus: Option<f64>,
    /// Network: bridge (the default network), a network's name, none (own namespace with lo
    /// only), host, or container:NAME (share another container's).
    #[arg(long = "network", alias = "net")]
    network: Option<String>,
    /// A fixed IPv4 address on the (user-defined) network.
    #[arg(long)]
    ip: Option<String>,
    /// Another name the container answers to on its network.
    #[arg(long = "network-alias", alias = "net-alias")]
    network_alias: Vec<String>,
    /// Add a link to another container: NAME[:ALIAS] (in /etc/hosts).
    #[arg(long)]
    link: Vec<String>,
    /// Publish a port: [HOSTIP:][HOSTPORT:]CONTAINERPORT[/udp].
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish every port the image exposes on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// A DNS server for the container.
    #[arg(long)]
    dns: Vec<String>,
    /// An /etc/hosts entry: NAME:IP (IP may be host-gateway).
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// Bind mount a host path or a named volume: /host:/ctr[:ro], NAME:/ctr[:ro], or /ctr.
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long)]
    pub(crate) restart: Option<String>,
    /// Add a Linux capability (e.g. NET_ADMIN, or ALL).
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop a Linux capability (e.g. CHOWN, or ALL).
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Every capability and device, no seccomp filter, no masked paths, writable /sys.
    #[arg(long)]
    privileged: bool,
    /// Give the container a host device: /dev/HOST[:/dev/CONTAINER[:rwm]].
    #[arg(long = "device")]
    device: Vec<String>,
    /// seccomp=unconfined or seccomp=PROFILE.json (docker's profile format).
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    /// A resource limit: NAME=SOFT[:HARD], e.g. nofile=1024:2048, nproc=512.
    #[arg(long = "ulimit")]
    ulimit: Vec<String>,
    /// CPU shares (relative weight; 1024 is the default).
    #[arg(short = 'c', long = "cpu-shares")]
    cpu_shares: Option<u64>,
    /// The CFS period in microseconds (with --cpu-quota).
    #[arg(long = "cpu-period")]
    cpu_period: Option<u64>,
    /// The CFS quota in microseconds per period.
    #[arg(long = "cpu-quota")]
    cpu_quota: Option<i64>,
    /// CPUs the container may run on: 0-3, 0,1.
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    /// Memory nodes the container may use: 0-3, 0,1.
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    /// Memory plus swap (e.g. 1g); -1 for unlimited swap.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Memory soft limit (e.g. 64m).
    #[arg(long = "memory-reservation")]
    memory_reservation: Option<String>,
    /// Do not OOM-kill the container's processes at the memory limit (they wait instead).
    #[arg(long = "oom-kill-disable")]
    oom_kill_disable: bool,
    /// Block I/O weight, 10 to 1000 (where the host's blkio controller has a weight).
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    /// Limit reads from a block device: /dev/HOST:RATE (e.g. /dev/vda:1mb).
    #[arg(long = "device-read-bps")]
    device_read_bps: Vec<String>,
    /// Limit writes to a block device: /dev/HOST:RATE.
    #[arg(long = "device-write-bps")]
    device_write_bps: Vec<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Mount a tmpfs: /PATH[:OPTIONS] (size=, mode=, uid=, gid=, ro, exec, …).
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Run an init as pid 1 that forwards signals and reaps orphans.
    #[arg(long)]
    init: bool,
    /// Size of /dev/shm (e.g. 256m; default 64m).
    #[arg(long = "shm-size")]
    shm_size: Option<String>,
    /// A namespaced kernel parameter: KEY=VALUE (net.*, kernel.shm*, kernel.msg*, fs.mqueue.*).
    #[arg(long)]
    sysctl: Vec<String>,
    /// Set a label: KEY=VALUE.
    #[arg(short = 'l', long = "label")]
    label: Vec<String>,
    /// Read labels from a file (KEY=VALUE lines).
    #[arg(long = "label-file")]
    label_file: Vec<std::path::PathBuf>,
    /// json-file (the default) or none.
    #[arg(long = "log-driver")]
    log_driver: Option<String>,
    /// A log option: max-size=SIZE, max-file=N.
    #[arg(long = "log-opt")]
    log_opt: Vec<String>,
    /// The signal that stops the container (default: the image's, else SIGTERM).
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    /// Seconds to wait for the stop signal before SIGKILL (default 10).
    #[arg(long = "stop-timeout")]
    stop_timeout: Option<u64>,
    /// Expose a port (or a range) without publishing it: -P publishes it.
    #[arg(long)]
    expose: Vec<String>,
    /// An additional group for the container's processes.
    #[arg(long = "group-add")]
    group_add: Vec<String>,
    /// Write the container's id to this file (which must not exist).
    #[arg(long)]
    pub(crate) cidfile: Option<std::path::PathBuf>,
    /// Pull the image: always, missing (the default) or never.
    #[arg(long, default_value = "missing")]
    pub(crate) pull: String,
    /// The health check's command (run by the node, in the container; NONE disables the
    /// image's check).
    #[arg(long = "health-cmd")]
    health_cmd: Option<String>,
    /// Time between health checks (e.g. 30s, 1m).
    #[arg(long = "health-interval")]
    health_interval: Option<String>,
    /// Longest a check may take (e.g. 10s).
    #[arg(long = "health-timeout")]
    health_timeout: Option<String>,
    /// Failures in a row before the container is unhealthy.
    #[arg(long = "health-retries")]
    health_retries: Option<u32>,
    /// Time to settle before failures count (e.g. 5s).
    #[arg(long = "health-start-period")]
    health_start_period: Option<String>,
    /// Checks during the start period this often (e.g. 1s).
    #[arg(long = "health-start-interval")]
    health_start_interval: Option<String>,
    /// No health check, even the image's.
    #[arg(long = "no-healthcheck")]
    no_healthcheck: bool,
    /// The pid namespace: host, or container:NAME (default: its own).
    #[arg(long)]
    pid: Option<String>,
    /// The IPC namespace: host, container:NAME, private or shareable (default: its own).
    #[arg(long)]
    ipc: Option<String>,
    /// The UTS namespace: host (default: its own).
    #[arg(long)]
    uts: Option<String>,
    /// Mount: type=bind|volume|tmpfs,source=…,target=…[,readonly][,tmpfs-size=…][,tmpfs-mode=…].
    #[arg(long)]
    mount: Vec<String>,
    /// Mount every volume of another container: NAME[:ro|:rw].
    #[arg(long = "volumes-from")]
    volumes_from: Vec<String>,
    /// The image's platform: this node's only (os/arch, e.g. linux/amd64).
    #[arg(long)]
    platform: Option<String>,
    /// The user namespace: host (the default; remapping is not supported yet).
    #[arg(long)]
    userns: Option<String>,
    /// A device cgroup rule (not supported: use --device).
    #[arg(long = "device-cgroup-rule")]
    device_cgroup_rule: Vec<String>,
    /// The keys that detach from the container, leaving it running (default ctrl-p,ctrl-q).
    #[arg(long = "detach-keys")]
    pub(crate) detach_keys: Option<String>,
    /// Attach to STDIN, STDOUT or STDERR (docker's -a): reg attaches stdout and stderr, and
    /// stdin with -i.
    #[arg(short = 'a', long = "attach")]
    attach: Vec<String>,
    pub(crate) image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

/// `64m`, `1g`, `512k`, `1048576` → bytes (the node's parser: the same units everywhere).
pub(crate) fn parse_size(s: &str) -> anyhow::Result<i64> {
    match reg_node::containers::parse_size(s) {
        None => bail!("{s:?} is not a size: use e.g. 64m or 1g"),
        Some(0) => bail!("{s:?}: a size must be positive"),
        Some(n) => i64::try_from(n).with_context(|| format!("{s:?}: too large")),
    }
}

/// `-e K=V` as given; `-e K` takes this shell's value (dropped when unset), like docker.
fn env_entries(args: &RunArgs) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut add = |e: &str| {
        if e.contains('=') {
            out.push(e.to_string());
        } else if let Ok(v) = std::env::var(e) {
            out.push(format!("{e}={v}"));
        }
    };
    for f in &args.env_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("--env-file {}", f.display()))?;
        for line in text.lines() {
            let l = line.trim_start();
            if !l.is_empty() && !l.starts_with('#') {
                add(l);
            }
        }
    }
    for e in &args.env {
        add(e);
    }
    Ok(out)
}

fn security(args: &RunArgs) -> anyhow::Result<reg_node::runtime::Security> {
    let mut seccomp = None;
    for o in &args.security_opt {
        let (k, v) = o.split_once(['=', ':']).with_context(|| {
            format!("--security-opt {o:?}: use seccomp=unconfined or seccomp=PROFILE.json")
        })?;
        match k {
            "seccomp" if v == "unconfined" => seccomp = Some(v.to_string()),
            "seccomp" => {
                seccomp = Some(
                    std::fs::read_to_string(v)
                        .with_context(|| format!("reading seccomp profile {v}"))?,
                )
            }
            "no-new-privileges" => {}
            _ => bail!("--security-opt {o:?}: only seccomp=… is supported"),
        }
    }
    Ok(reg_node::runtime::Security {
        privileged: args.privileged,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        seccomp,
        ulimits: args.ulimit.clone(),
        devices: args.device.clone(),
        group_add: args.group_add.clone(),
    })
}

/// docker's `HostConfig.Mounts` entry for `--mount type=…,source=…,target=…,…`.
fn mount_json(spec: &str) -> anyhow::Result<serde_json::Value> {
    use serde_json::json;
    let mut kind = "volume".to_string();
    let (mut source, mut target) = (String::new(), String::new());
    let mut readonly = false;
    let mut bind = serde_json::Map::new();
    let mut volume = serde_json::Map::new();
    let mut tmpfs = serde_json::Map::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let flag = || !matches!(v, "false" | "0");
        match k {
            "type" => kind = v.to_string(),
            "source" | "src" => source = v.to_string(),
            "target" | "destination" | "dst" => target = v.to_string(),
            "readonly" | "ro" => readonly = v.is_empty() || flag(),
            "bind-propagation" => {
                bind.insert("Propagation".into(), json!(v));
            }
            "bind-create-host-path" => {
                bind.insert("CreateMountpoint".into(), json!(v.is_empty() || flag()));
            }
            "volume-nocopy" => {
                volume.insert("NoCopy".into(), json!(v.is_empty() || flag()));
            }
            "volume-label" => {
                let (lk, lv) = v.split_once('=').unwrap_or((v, ""));
                let labels = volume.entry("Labels").or_insert_with(|| json!({}));
                labels[lk] = json!(lv);
            }
            "tmpfs-size" => {
                tmpfs.insert(
                    "SizeBytes".into(),
                    json!(parse_size(v).with_context(|| format!("--mount {spec}"))?),
                );
            }
            "tmpfs-mode" => {
                let mode = u32::from_str_radix(v, 8)
                    .with_context(|| format!("--mount {spec}: tmpfs-mode is octal, e.g. 1777"))?;
                tmpfs.insert("Mode".into(), json!(mode));
            }
            other => bail!("--mount {spec:?}: unknown option {other:?}"),
        }
    }
    if target.is_empty() {
        bail!("--mount {spec:?}: a target is required (target=/path)");
    }
    let mut m = json!({ "Type": kind, "Source": source, "Target": target, "ReadOnly": readonly });
    if !bind.is_empty() {
        m["BindOptions"] = serde_json::Value::Object(bind);
    }
    if !volume.is_empty() {
        m["VolumeOptions"] = serde_json::Value::Object(volume);
    }
    if !tmpfs.is_empty() {
        m["TmpfsOptions"] = serde_json::Value::Object(tmpfs);
    }
    Ok(m)
}

/// A duration as docker writes one (`30s`, `1m30s`, `500ms`) in nanoseconds, as the Engine
/// API takes it; `what` names it in the error.
pub(crate) fn duration_nanos(what: &str, s: &str) -> anyhow::Result<i64> {
    let d = humantime::parse_duration(s)
        .with_context(|| format!("{what} {s:?}: a duration, e.g. 30s or 1m30s"))?;
    Ok(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// docker's `Config.Healthcheck` from the `--health-*` flags (durations in nanoseconds).
fn healthcheck(args: &RunArgs) -> anyhow::Result<Option<serde_json::Value>> {
    let nanos = |flag: &str, v: &Option<String>| -> anyhow::Result<i64> {
        v.as_deref().map_or(Ok(0), |s| duration_nanos(flag, s))
    };
    let disabled = args.no_healthcheck || args.health_cmd.as_deref() == Some("NONE");
    if args.no_healthcheck && args.health_cmd.as_deref().is_some_and(|c| c != "NONE") {
        bail!("--no-healthcheck conflicts with --health-* options");
    }
    let test: Vec<String> = if disabled {
        vec!["NONE".into()]
    } else {
        match &args.health_cmd {
            Some(c) => vec!["CMD-SHELL".into(), c.clone()],
            None => Vec::new(),
        }
    };
    let any = !test.is_empty()
        || args.health_interval.is_some()
        || args.health_timeout.is_some()
        || args.health_retries.is_some()
        || args.health_start_period.is_some()
        || args.health_start_interval.is_some();
    if !any {
        return Ok(None);
    }
    Ok(Some(serde_json::json!({
        "Test": test,
        "Interval": nanos("--health-interval", &args.health_interval)?,
        "Timeout": nanos("--health-timeout", &args.health_timeout)?,
        "StartPeriod": nanos("--health-start-period", &args.health_start_period)?,
        "StartInterval": nanos("--health-start-interval", &args.health_start_interval)?,
        "Retries": args.health_retries.unwrap_or(0),
    })))
}

/// `-l KEY=VALUE` and `--label-file` lines (a file's first, as docker merges them).
fn labels(
    given: &[String],
    files: &[std::path::PathBuf],
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut out = serde_json::Map::new();
    let mut add = |l: &str| {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        out.insert(k.to_string(), serde_json::json!(v));
    };
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("--label-file {}", f.display()))?;
        for line in text.lines() {
            let l = line.trim();
            if !l.is_empty() && !l.starts_with('#') {
                add(l);
            }
        }
    }
    for l in given {
        add(l);
    }
    Ok(out)
}

/// The ports `-p` publishes (keys of `HostConfig.PortBindings`): they are exposed too.
fn port_bindings_keys(body: &serde_json::Value) -> Vec<String> {
    body["HostConfig"]["PortBindings"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// docker's create body for `reg run`'s flags: `Config` with `HostConfig` and
/// `NetworkingConfig`, as the Engine API's `POST /containers/create` reads them.
pub(crate) fn create_body(args: &RunArgs, image: &str) -> anyhow::Result<serde_json::Value> {
    use serde_json::{json, Map, Value};
    let security = security(args)?;
    let mut port_bindings = Map::new();
    for p in &args.publish {
        let (spec, proto) = p.rsplit_once('/').unwrap_or((p, "tcp"));
        if !matches!(proto, "tcp" | "udp") {
            bail!("-p {p:?}: the protocol is tcp or udp");
        }
        // [HOSTIP:][HOSTPORT:]CONTAINERPORT, the address possibly a bracketed IPv6 one.
        let mut parts = spec.rsplitn(3, ':');
        let ctr = parts.next().unwrap_or_default();
        let host_port = parts.next().unwrap_or_default();
        let host_ip = parts.next().unwrap_or_default();
        let entry = port_bindings
            .entry(format!("{ctr}/{proto}"))
            .or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!({ "HostIp": host_ip, "HostPort": host_port }));
        }
    }
    let restart = args.restart.as_deref().map(|r| {
        // `on-failure:N`; anything the agent cannot read goes as it is, for its error.
        match r.split_once(':').map(|(n, m)| (n, m.parse::<u64>())) {
            Some((name, Ok(max))) => json!({ "Name": name, "MaximumRetryCount": max }),
            _ => json!({ "Name": r, "MaximumRetryCount": 0 }),
        }
    });
    let mut ulimits = Vec::new();
    for u in &security.ulimits {
        let num = |v: &str| match v {
            "unlimited" => Some(-1),
            v => v.parse::<i64>().ok(),
        };
        let parsed = u.split_once('=').and_then(|(name, values)| {
            let (soft, hard) = values.split_once(':').unwrap_or((values, values));
            Some((name, num(soft)?, num(hard)?))
        });
        let Some((name, soft, hard)) = parsed else {
            match reg_node::runtime::parse_ulimit(u) {
                Err(e) => bail!("{e}"),
                Ok(_) => bail!("--ulimit {u:?}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048"),
            }
        };
        ulimits.push(json!({ "Name": name, "Soft": soft, "Hard": hard }));
    }
    let devices: Vec<Value> = security
        .devices
        .iter()
        .map(|d| {
            // /dev/HOST[:/dev/CONTAINER][:PERMISSIONS]
            let mut parts = d.splitn(3, ':');
            let host = parts.next().unwrap_or_default();
            let (ctr, perms) = match (parts.next(), parts.next()) {
                (Some(c), Some(p)) => (c, p),
                (Some(p), None) if !p.starts_with('/') => (host, p),
                (Some(c), None) => (c, "rwm"),
                _ => (host, "rwm"),
            };
            json!({ "PathOnHost": host, "PathInContainer": ctr, "CgroupPermissions": perms })
        })
        .collect();
    let security_opt: Vec<String> = security
        .seccomp
        .iter()
        .map(|p| format!("seccomp={p}"))
        .collect();
    let mut host = json!({
        "Binds": args.volume,
        "PortBindings": port_bindings,
        "PublishAllPorts": args.publish_all,
        "AutoRemove": args.rm,
        "Memory": args.memory.as_deref().map(parse_size).transpose()?.unwrap_or(0),
        "NanoCpus": args.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
        "PidsLimit": args.pids_limit.unwrap_or(0),
        "CapAdd": security.cap_add,
        "CapDrop": security.cap_drop,
        "Privileged": security.privileged,
        "SecurityOpt": security_opt,
        "Ulimits": ulimits,
        "Devices": devices,
        "Dns": args.dns,
        "ExtraHosts": args.add_host,
        "Links": args.link,
    });
    if let Some(n) = &args.network {
        host["NetworkMode"] = json!(n);
    }
    let size_of = |flag: &str, v: &str| -> anyhow::Result<i64> {
        parse_size(v).with_context(|| format!("{flag} {v:?}"))
    };
    if let Some(v) = args.cpu_shares {
        host["CpuShares"] = json!(v);
    }
    if let Some(v) = args.cpu_period {
        host["CpuPeriod"] = json!(v);
    }
    if let Some(v) = args.cpu_quota {
        host["CpuQuota"] = json!(v);
    }
    if let Some(v) = &args.cpuset_cpus {
        host["CpusetCpus"] = json!(v);
    }
    if let Some(v) = &args.cpuset_mems {
        host["CpusetMems"] = json!(v);
    }
    if let Some(v) = &args.memory_swap {
        host["MemorySwap"] = json!(if v == "-1" {
            -1
        } else {
            size_of("--memory-swap", v)?
        });
    }
    if let Some(v) = &args.memory_reservation {
        host["MemoryReservation"] = json!(size_of("--memory-reservation", v)?);
    }
    if args.oom_kill_disable {
        host["OomKillDisable"] = json!(true);
    }
    if let Some(v) = args.blkio_weight {
        host["BlkioWeight"] = json!(v);
    }
    for (key, list, flag) in [
        (
            "BlkioDeviceReadBps",
            &args.device_read_bps,
            "--device-read-bps",
        ),
        (
            "BlkioDeviceWriteBps",
            &args.device_write_bps,
            "--device-write-bps",
        ),
    ] {
        let mut rates = Vec::new();
        for d in list {
            let (path, rate) = d.rsplit_once(':').with_context(|| {
                format!("{flag} {d:?}: use /dev/DEVICE:RATE, e.g. /dev/vda:1mb")
            })?;
            rates.push(json!({ "Path": path, "Rate": size_of(flag, rate)? }));
        }
        if !rates.is_empty() {
            host[key] = json!(rates);
        }
    }
    if args.read_only {
        host["ReadonlyRootfs"] = json!(true);
    }
    if !args.tmpfs.is_empty() {
        let mut t = Map::new();
        for m in &args.tmpfs {
            let (path, opts) = m.split_once(':').unwrap_or((m, ""));
            t.insert(path.to_string(), json!(opts));
        }
        host["Tmpfs"] = Value::Object(t);
    }
    if args.init {
        host["Init"] = json!(true);
    }
    if let Some(v) = &args.shm_size {
        host["ShmSize"] = json!(size_of("--shm-size", v)?);
    }
    if !args.sysctl.is_empty() {
        let mut t = Map::new();
        for kv in &args.sysctl {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--sysctl {kv:?}: use KEY=VALUE"))?;
            t.insert(k.to_string(), json!(v));
        }
        host["Sysctls"] = Value::Object(t);
    }
    if !args.group_add.is_empty() {
        host["GroupAdd"] = json!(args.group_add);
    }
    if args.log_driver.is_some() || !args.log_opt.is_empty() {
        let mut config = Map::new();
        for o in &args.log_opt {
            let (k, v) = o
                .split_once('=')
                .with_context(|| format!("--log-opt {o:?}: use KEY=VALUE, e.g. max-size=10m"))?;
            config.insert(k.to_string(), json!(v));
        }
        host["LogConfig"] = json!({
            "Type": args.log_driver.clone().unwrap_or_else(|| "json-file".into()),
            "Config": config,
        });
    }
    if let Some(r) = restart {
        host["RestartPolicy"] = r;
    }
    let size = args
        .tty
        .then(|| reg_node::runtime::terminal_size(std::io::stdout().as_fd()))
        .flatten();
    if let Some((rows, cols)) = size {
        host["ConsoleSize"] = json!([rows, cols]);
    }
    let mut body = json!({
        "Image": image,
        "Cmd": args.cmd,
        "Env": env_entries(args)?,
        "Tty": args.tty,
        "OpenStdin": args.interactive,
        "StdinOnce": args.interactive,
        "AttachStdin": args.interactive,
        "AttachStdout": !args.detach,
        "AttachStderr": !args.detach,
        "HostConfig": host,
    });
    for (key, value) in [
        ("WorkingDir", &args.workdir),
        ("User", &args.user),
        ("Hostname", &args.hostname),
    ] {
        if let Some(v) = value {
            body[key] = json!(v);
        }
    }
    if let Some(e) = &args.entrypoint {
        body["Entrypoint"] = json!([e]);
    }
    if let Some(h) = healthcheck(args)? {
        body["Healthcheck"] = h;
    }
    for (key, mode) in [
        ("PidMode", &args.pid),
        ("IpcMode", &args.ipc),
        ("UTSMode", &args.uts),
    ] {
        if let Some(m) = mode {
            body["HostConfig"][key] = json!(m);
        }
    }
    if !args.mount.is_empty() {
        let mounts = args
            .mount
            .iter()
            .map(|m| mount_json(m))
            .collect::<anyhow::Result<Vec<_>>>()?;
        body["HostConfig"]["Mounts"] = json!(mounts);
    }
    if !args.volumes_from.is_empty() {
        body["HostConfig"]["VolumesFrom"] = json!(args.volumes_from);
    }
    match args.userns.as_deref() {
        None | Some("") => {}
        Some(mode @ ("host" | "auto")) => body["HostConfig"]["UsernsMode"] = json!(mode),
        Some(other) => bail!(
            "--userns {other:?}: use host, or auto for a range of its own from the node's \
             (node.userns_remap)"
        ),
    }
    if !args.device_cgroup_rule.is_empty() {
        body["HostConfig"]["DeviceCgroupRules"] = json!(args.device_cgroup_rule);
    }
    for a in &args.attach {
        match a.to_ascii_lowercase().as_str() {
            "stdout" | "stderr" => {}
            "stdin" if args.interactive => {}
            "stdin" => bail!("-a stdin needs -i (the container's input stays closed without it)"),
            other => bail!("-a {other:?}: one of STDIN, STDOUT, STDERR"),
        }
    }
    if let Some(p) = &args.platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let want = p.trim_end_matches('/');
        if want != format!("linux/{arch}") && want != "linux" {
            bail!("--platform {p}: this node runs linux/{arch} only");
        }
    }
    let labels = labels(&args.label, &args.label_file)?;
    if !labels.is_empty() {
        body["Labels"] = Value::Object(labels);
    }
    if let Some(s) = &args.stop_signal {
        body["StopSignal"] = json!(s);
    }
    if let Some(t) = args.stop_timeout {
        body["StopTimeout"] = json!(t);
    }
    if !args.expose.is_empty() {
        let mut exposed: Map<String, Value> = Map::new();
        for e in &args.expose {
            let (ports, proto) = e.split_once('/').unwrap_or((e, "tcp"));
            let (lo, hi) = match ports.split_once('-') {
                Some((a, b)) => (a.parse::<u16>(), b.parse::<u16>()),
                None => (ports.parse::<u16>(), ports.parse::<u16>()),
            };
            let (Ok(lo), Ok(hi)) = (lo, hi) else {
                bail!("--expose {e:?}: use PORT[/PROTO] or START-END[/PROTO]");
            };
            for p in lo..=hi {
                exposed.insert(format!("{p}/{proto}"), json!({}));
            }
        }
        for p in port_bindings_keys(&body) {
            exposed.insert(p, json!({}));
        }
        body["ExposedPorts"] = Value::Object(exposed);
    }
    if args.ip.is_some() || !args.network_alias.is_empty() {
        let mut endpoint = json!({ "Aliases": args.network_alias });
        if let Some(ip) = &args.ip {
            endpoint["IPAMConfig"] = json!({ "IPv4Address": ip });
        }
        let net = args.network.clone().unwrap_or_else(|| "default".into());
        body["NetworkingConfig"] = json!({ "EndpointsConfig": { net: endpoint } });
    }
    Ok(body)
}

/// Runs a hijacked connection to its end: the output to this process's stdout and stderr
/// (docker's frames taken apart; as it comes with a terminal), and with `stdin` this
/// process's input to it, half-closed at its end. With `detach`, typing those keys sends them
/// on (the agent then ends the attachment, leaving the container's input open) and the
/// session ends once the agent has closed it: `true` when it ended so.
pub(crate) async fn session<S>(io: S, tty: bool, stdin: bool, detach: Option<Vec<u8>>) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use http_body_util::BodyExt;
    use reg_node::api::detach::DetachKeys;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut rd, mut wr) = tokio::io::split(io);
    // The input's pump is aborted once the output has ended (stdin may never end).
    let mut pump = tokio::task::JoinSet::new();
    let (detached_tx, mut detached_rx) = tokio::sync::oneshot::channel::<()>();
    if stdin {
        pump.spawn(async move {
            let mut input = reg_node::api::stdin_body();
            let mut keys = detach.map(DetachKeys::new);
            while let Some(Ok(frame)) = input.frame().await {
                let Some(d) = frame.data_ref() else { continue };
                let (mut pass, detached) = match keys.as_mut() {
                    Some(k) => k.feed(d),
                    None => (d.to_vec(), false),
                };
                if let (true, Some(k)) = (detached, &keys) {
                    pass.extend_from_slice(k.sequence());
                    // Said before the keys go: the agent closes the connection once it sees
                    // them, and that end must read as a detach.
                    let _ = detached_tx.send(());
                    let _ = wr.write_all(&pass).await;
                    return;
                }
                if wr.write_all(&pass).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });
    }
    let mut demux = reg_node::api::Demux::default();
    let mut buf = vec![0u8; 32 * 1024];
    let mut detached = false;
    // The input's end (its sender dropped) answers once; the receiver is not polled again.
    let mut input_done = false;
    // After the keys, the agent's closing is awaited this long at most.
    let closing = tokio::time::sleep(std::time::Duration::from_secs(10));
    tokio::pin!(closing);
    loop {
        let n = tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    // The agent ends a detached session itself: the keys were sent by then.
                    if !input_done && detached_rx.try_recv().is_ok() {
                        detached = true;
                    }
                    break;
                }
                Ok(n) => n,
            },
            r = &mut detached_rx, if !input_done => {
                input_done = true;
                if r.is_ok() {
                    detached = true;
                    closing.as_mut().reset(tokio::time::Instant::now() + std::time::Duration::from_secs(10));
                }
                continue;
            }
            _ = &mut closing, if detached => break,
        };
        if tty {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
            continue;
        }
        demux.push(&buf[..n], |stream, payload| {
            if stream == 1 {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(payload);
                let _ = out.flush();
            } else {
                let _ = std::io::stderr().write_all(payload);
            }
        });
    }
    pump.abort_all();
    detached
}

/// The detach keys of an attachment with a terminal and input (else none), and the query
/// parameter that names them to the agent when they are not its default.
pub(crate) fn detach_settings(
    given: Option<&str>,
    tty: bool,
    stdin: bool,
) -> anyhow::Result<(Option<Vec<u8>>, String)> {
    use reg_node::api::detach::{parse_detach_keys, DEFAULT_DETACH_KEYS};
    if !(tty && stdin) {
        return Ok((None, String::new()));
    }
    let spec = given.unwrap_or(DEFAULT_DETACH_KEYS);
    let keys = parse_detach_keys(spec)?;
    let query = match given {
        Some(k) => format!("&detachKeys={}", query_value(k)),
        None => String::new(),
    };
    Ok((Some(keys), query))
}

/// The foreground of `run` and `start -a`: attaches to container `id`, waits for its next
/// exit (or, with `removed`, its removal), starts it, relays its streams; the exit code is
/// its own, or 125 with the reason when reg failed.
pub(crate) fn attached(
    rt: &tokio::runtime::Runtime,
    agent: &AgentClient,
    id: &str,
    tty: bool,
    stdin: bool,
    removed: bool,
    detach_keys: Option<&str>,
) -> anyhow::Result<u8> {
    let q = query_value(id);
    let (detach, detach_query) = detach_settings(detach_keys, tty, stdin)?;
    let mut attach = format!("/containers/{q}/attach?stream=1&stdout=1&stderr=1{detach_query}");
    if stdin {
        attach.push_str("&stdin=1");
    }
    let fail = |e: reg_node::api::AgentError| {
        eprintln!("reg: {e}");
        Ok(125)
    };
    let io = match rt.block_on(agent.hijack("POST", &attach, &serde_json::Value::Null)) {
        Ok(io) => io,
        Err(e) => return fail(e),
    };
    // As docker's cli: the wait is in place before the start, so no exit can slip past it.
    let condition = if removed { "removed" } else { "next-exit" };
    let waiting = match rt.block_on(agent.begin(
        "POST",
        &format!("/containers/{q}/wait?condition={condition}"),
    )) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    if let Err(e) = rt.block_on(agent.json("POST", &format!("/containers/{q}/start"))) {
        return fail(e);
    }
    if rt.block_on(session(io, tty, stdin, detach)) {
        // Detached: the container runs on.
        return Ok(0);
    }
    let v = match rt.block_on(waiting.json()) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if let Some(m) = v["Error"]["Message"].as_str() {
        eprintln!("reg: {m}");
        return Ok(125);
    }
    match v["StatusCode"].as_i64() {
        Some(c) => Ok(u8::try_from(c).unwrap_or(125)),
        None => {
            eprintln!("reg: the agent answered no exit code");
            Ok(125)
        }
    }
}

/// Sends this terminal's size to container `id` whenever it changes (SIGWINCH), while `rt` runs.
pub(crate) fn follow_resize(rt: &tokio::runtime::Runtime, agent: &AgentClient, id: &str) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut changed) = rt.block_on(async { signal(SignalKind::window_change()) }) else {
        return;
    };
    let (agent, id) = (agent.clone(), id.to_string());
    rt.spawn(async move {
        while changed.recv().await.is_some() {
            if let Some((h, w)) = reg_node::runtime::terminal_size(std::io::stdout().as_fd()) {
                let path = format!("/containers/{}/resize?h={h}&w={w}", query_value(&id));
                let _ = agent
                    .json_body("POST", &path, &serde_json::Value::Null)
                    .await;
            }
        }
    });
}

/// This process's terminal in raw mode while it lives (when stdin is a terminal).
pub(crate) struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    pub(crate) fn enter() -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        if !std::io::IsTerminal::is_terminal(&stdin) {
            return None;
        }
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin().as_fd(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}

/// `reg run`: pull if missing, create, start; in the foreground follow the output to the exit
/// code, with `-d` print the id.
pub fn run(config: Option<&Path>, host: &Target, args: RunArgs) -> anyhow::Result<u8> {
    if args.detach && args.rm && args.restart.is_some() {
        bail!("conflicting options: --restart and --rm");
    }
    let (agent, cfg) = super::image::agent_for_image(config, host, &args.image)?;
    let image = Reference::parse(&args.image, &cfg.node.default_registry)?.to_string();
    let rt = rt()?;
    if !matches!(args.pull.as_str(), "always" | "missing" | "never") {
        bail!("--pull {:?}: use always, missing or never", args.pull);
    }
    if let Some(f) = &args.cidfile {
        if f.exists() {
            bail!(
                "Container ID file found, make sure the other container isn't running or delete {}",
                f.display()
            );
        }
    }
    let body = create_body(&args, &image)?;
    let create = match &args.name {
        Some(n) => format!("/containers/create?name={}", query_value(n)),
        None => "/containers/create".to_string(),
    };
    let pull = |out: &mut dyn std::io::Write| {
        pull_to(
            config,
            host,
            PullArgs {
                image: image.clone(),
            },
            out,
        )
    };
    if args.pull == "always" {
        pull(&mut std::io::stderr())?;
    }
    // Create at once; only a missing image costs a pull (and a second try).
    let created = match rt.block_on(agent.json_body("POST", &create, &body)) {
        // A 404 is a missing image, container or network: only a missing image is pulled.
        Err(reg_node::api::AgentError::Api { status: 404, .. })
            if args.pull == "missing" && image_missing(&rt, &agent, &image) =>
        {
            eprintln!("Unable to find image '{image}' locally");
            pull(&mut std::io::stderr())?;
            rt.block_on(agent.json_body("POST", &create, &body))?
        }
        other => other?,
    };
    let id = created["Id"].as_str().unwrap_or_default().to_string();
    if let Some(f) = &args.cidfile {
        std::fs::write(f, &id).with_context(|| format!("--cidfile {}", f.display()))?;
    }
    if args.detach {
        rt.block_on(agent.json("POST", &format!("/containers/{id}/start")))?;
        println!("{id}");
        return Ok(0);
    }
    // With -t the container's terminal follows this one's size (docker's resize on SIGWINCH).
    if args.tty {
        follow_resize(&rt, &agent, &id);
    }
    // Keystrokes go to the container's terminal as they are typed (restored on return).
    let _raw = if args.tty && args.interactive {
        RawMode::enter()
    } else {
        None
    };
    attached(
        &rt,
        &agent,
        &id,
        args.tty,
        args.interactive,
        args.rm,
        args.detach_keys.as_deref(),
    )
}

#[derive(Args)]
pub struct StartArgs {
    /// Follow the output and exit with the container's code.
    #[arg(short = 'a', long)]
    attach: bool,
    containers: Vec<String>,
}

pub fn start(config: Option<&Path>, host: &Target, args: StartArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    if args.attach {
        let [one] = args.containers.as_slice() else {
            bail!("start -a takes exactly one container");
        };
        let c =
            rt.block_on(agent.json("GET", &format!("/containers/{}/json", query_value(one))))?;
        let tty = c["Config"]["Tty"].as_bool().unwrap_or(false);
        let removed = c["HostConfig"]["AutoRemove"].as_bool().unwrap_or(false);
        return attached(&rt, &agent, one, tty, false, removed, None);
    }
    if args.containers.is_empty() {
        bail!("give at least one container (name or id)");
    }
    let mut failed = false;
    for c in &args.containers {
        match start_one(&rt, &agent, c) {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("reg: {c}: {e}");
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

/// Starts container `key`. The Engine API answers 304 for one already running (docker's cli
/// takes that as success); reg's `start` reports it, as it always has.
fn start_one(rt: &tokio::runtime::Runtime, agent: &AgentClient, key: &str) -> anyhow::Result<()> {
    let q = query_value(key);
    let answer = rt.block_on(agent.begin("POST", &format!("/containers/{q}/start")))?;
    if answer.status() != 304 {
        rt.block_on(answer.json())?;
        return Ok(());
    }
    let c = rt.block_on(agent.json("GET", &format!("/containers/{q}/json")))?;
    let name = c["Name"].as_str().unwrap_or(key).trim_start_matches('/');
    bail!("container {name} is already running")
}

/// One request per container, each name printed as docker does.
fn each_container(
    rt: &tokio::runtime::Runtime,
    agent: &AgentClient,
    containers: &[String],
    method: &str,
    path: impl Fn(&str) -> String,
) -> anyhow::Result<u8> {
    let path = |c: &str| Ok(path(c));
    each(
        rt,
        agent,
        containers,
        "container (name or id)",
        method,
        path,
        |c, _| println!("{c}"),
    )
}

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short = 'a', long)]
    all: bool,
    /// Only ids.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Full ids and commands.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Filter: id=, name=, label=, status=, ancestor=, exited=, network=, volume=, health=.
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// The last N containers (of all states).
    #[arg(short = 'n', long = "last")]
    last: Option<i64>,
    /// The latest container (of all states).
    #[arg(short = 'l', long)]
    latest: bool,
    /// A Go template ('table {{.ID}}\t{{.Names}}', '{{json .}}'), or json.
    #[arg(long)]
    format: Option<String>,
}

/// docker's `ps` columns.
const PS_HEADERS: format::Headers = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("State", "STATE"),
];

const PS_TABLE: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

/// docker's `ps` filters as the API takes them: `{"key": ["value", …]}`.
pub(crate) fn filters_query(filters: &[String]) -> anyhow::Result<String> {
    let mut map: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .with_context(|| format!("bad format of filter {f:?} (expected name=value)"))?;
        map.entry(k.to_string()).or_default().push(v.to_string());
    }
    if map.is_empty() {
        return Ok(String::new());
    }
    Ok(format!(
        "&filters={}",
        query_value(&serde_json::to_string(&map)?)
    ))
}

/// `0.0.0.0:8080->80/tcp, 443/tcp` from a list entry's `Ports`.
fn ports_text(ports: &serde_json::Value) -> String {
    let mut shown: Vec<String> = ports
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let private = format!(
                "{}/{}",
                p["PrivatePort"],
                p["Type"].as_str().unwrap_or("tcp")
            );
            match p["PublicPort"].as_u64().filter(|n| *n > 0) {
                Some(public) => format!(
                    "{}:{public}->{private}",
                    p["IP"]
                        .as_str()
                        .filter(|i| !i.is_empty())
                        .unwrap_or("0.0.0.0")
                ),
                None => private,
            }
        })
        .collect();
    shown.dedup();
    shown.join(", ")
}

/// One `ps` row: docker's format context for a list entry.
pub(crate) fn ps_row(c: &serde_json::Value, no_trunc: bool) -> serde_json::Value {
    let id = c["Id"].as_str().unwrap_or("");
    let id = if no_trunc {
        id
    } else {
        &id[..id.len().min(12)]
    };
    let command = c["Command"].as_str().unwrap_or("");
    let command = if no_trunc || command.chars().count() <= 20 {
        format!("\"{command}\"")
    } else {
        format!("\"{}…\"", command.chars().take(19).collect::<String>())
    };
    let created = c["Created"].as_i64().unwrap_or(0);
    let names: Vec<&str> = c["Names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .map(|n| n.trim_start_matches('/'))
        .collect();
    let networks: Vec<&String> = c["NetworkSettings"]["Networks"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    let mounts: Vec<&str> = c["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["Source"].as_str())
        .collect();
    let created_at = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(created).unwrap_or(0)),
    )
    .to_string();
    serde_json::json!({
        "ID": id,
        "Image": c["Image"],
        "Command": command,
        "CreatedAt": created_at,
        "RunningFor": format!("{} ago", format::human_duration(format::since_unix(created))),
        "Ports": ports_text(&c["Ports"]),
        "Status": c["Status"],
        "Size": "0B",
        "Names": names.join(","),
        "Labels": format::pairs(&c["Labels"], ","),
        "Mounts": mounts.join(","),
        "Networks": networks.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(","),
        "State": c["State"],
    })
}

pub fn ps(config: Option<&Path>, host: &Target, args: PsArgs) -> anyhow::Result<()> {
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    let limit = if args.latest { Some(1) } else { args.last };
    let mut path = format!(
        "/containers/json?all={}{}",
        u8::from(args.all || limit.is_some()),
        filters_query(&args.filter)?
    );
    if let Some(n) = limit {
        path.push_str(&format!("&limit={n}"));
    }
    // One request: the list's entries carry every column (docker's STATUS text included).
    let list = rt.block_on(agent.json("GET", &path))?;
    let rows: Vec<serde_json::Value> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| ps_row(c, args.no_trunc))
        .collect();
    if args.quiet {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or(""));
        }
        return Ok(());
    }
    format::print(&rows, args.format.as_deref(), PS_TABLE, PS_HEADERS)
}

#[derive(Args)]
pub struct LogsArgs {
    /// Keep following the output until the container stops.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines ("all" by default).
    #[arg(short = 'n', long)]
    tail: Option<String>,
    /// Prefix each line with its timestamp.
    #[arg(short = 't', long)]
    timestamps: bool,
    container: String,
}

pub fn logs(config: Option<&Path>, host: &Target, args: LogsArgs) -> anyhow::Result<()> {
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    let q = query_value(&args.container);
    // With a terminal the log is one raw stream, else docker's multiplexed frames.
    let c = rt.block_on(agent.json("GET", &format!("/containers/{q}/json")))?;
    let tty = c["Config"]["Tty"].as_bool().unwrap_or(false);
    let mut path = format!(
        "/containers/{q}/logs?stdout=1&stderr=1&follow={}&timestamps={}",
        u8::from(args.follow),
        u8::from(args.timestamps)
    );
    if let Some(t) = &args.tail {
        path.push_str(&format!("&tail={}", query_value(t)));
    }
    let mut demux = reg_node::api::Demux::default();
    rt.block_on(agent.request_bytes("GET", &path, |data| {
        if tty {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(data);
            let _ = out.flush();
        } else {
            demux.push(data, |stream, payload| {
                if stream == 2 {
                    let _ = std::io::stderr().write_all(payload);
                } else {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(payload);
                    let _ = out.flush();
                }
            });
        }
    }))?;
    Ok(())
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait for the stop signal to work before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    time: u64,
    containers: Vec<String>,
}

pub fn stop(config: Option<&Path>, host: &Target, args: StopArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    each_container(&rt()?, &agent, &args.containers, "POST", |c| {
        format!("/containers/{}/stop?t={}", query_value(c), args.time)
    })
}

#[derive(Args)]
pub struct KillArgs {
    /// Signal to send (name or number).
    #[arg(short = 's', long = "signal", default_value = "KILL")]
    signal: String,
    containers: Vec<String>,
}

pub fn kill(config: Option<&Path>, host: &Target, args: KillArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    each_container(&rt()?, &agent, &args.containers, "POST", |c| {
        format!(
            "/containers/{}/kill?signal={}",
            query_value(c),
            query_value(&args.signal)
        )
    })
}

#[derive(Args)]
pub struct RmArgs {
    /// Kill and remove a running container.
    #[arg(short = 'f', long)]
    force: bool,
    containers: Vec<String>,
}

pub fn rm(config: Option<&Path>, host: &Target, args: RmArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    each_container(&rt()?, &agent, &args.containers, "DELETE", |c| {
        format!(
            "/containers/{}?force={}",
            query_value(c),
            u8::from(args.force)
        )
    })
}

#[derive(Args)]
pub struct WaitArgs {
    containers: Vec<String>,
}

/// Prints each container's exit code once it has stopped.
pub fn wait(config: Option<&Path>, host: &Target, args: WaitArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    if args.containers.is_empty() {
        bail!("give at least one container (name or id)");
    }
    let mut failed = false;
    for c in &args.containers {
        match wait_one(&rt, &agent, c) {
            Ok(code) => println!("{code}"),
            Err(e) => {
                eprintln!("reg: {c}: {e}");
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

/// One container's exit code once it has exited. docker's `not-running` answers at once for a
/// container never started; reg's `wait` waits for it to run and exit (`next-exit`).
fn wait_one(
    rt: &tokio::runtime::Runtime,
    agent: &AgentClient,
    container: &str,
) -> anyhow::Result<serde_json::Value> {
    let q = query_value(container);
    let c = rt.block_on(agent.json("GET", &format!("/containers/{q}/json")))?;
    let condition = match c["State"]["Status"].as_str() {
        Some("created") => "next-exit",
        _ => "not-running",
    };
    let v = rt.block_on(agent.json(
        "POST",
        &format!("/containers/{q}/wait?condition={condition}"),
    ))?;
    if let Some(m) = v["Error"]["Message"].as_str() {
        bail!("{m}");
    }
    Ok(v["StatusCode"].clone())
}

#[derive(Args)]
pub struct ExecArgs {
    /// Keep stdin open: this terminal's (or pipe's) input goes to the process.
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub(crate) tty: bool,
    /// Set an environment variable (KEY=VALUE).
    #[arg(short = 'e', long = "env")]
    pub(crate) env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub(crate) workdir: Option<String>,
    /// User to run as: USER[:GROUP].
    #[arg(short = 'u', long = "user")]
    pub(crate) user: Option<String>,
    pub(crate) container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub(crate) cmd: Vec<String>,
}

pub fn exec(config: Option<&Path>, host: &Target, args: ExecArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let size = args
        .tty
        .then(|| reg_node::runtime::terminal_size(std::io::stdout().as_fd()))
        .flatten()
        .map(|(rows, cols)| vec![rows, cols]);
    let body = serde_json::json!({
        "Cmd": args.cmd,
        "Env": args.env,
        "WorkingDir": args.workdir.clone().unwrap_or_default(),
        "User": args.user.clone().unwrap_or_default(),
        "Tty": args.tty,
        "ConsoleSize": size,
        "AttachStdin": args.interactive,
        "AttachStdout": true,
        "AttachStderr": true,
    });
    let rt = rt()?;
    let fail = |e: reg_node::api::AgentError| {
        eprintln!("reg: {e}");
        Ok(125)
    };
    let create = format!("/containers/{}/exec", query_value(&args.container));
    let id = match rt.block_on(agent.json_body("POST", &create, &body)) {
        Ok(v) => v["Id"].as_str().unwrap_or_default().to_string(),
        Err(e) => return fail(e),
    };
    let q = query_value(&id);
    let start = serde_json::json!({ "Detach": false, "Tty": args.tty, "ConsoleSize": size });
    let io = match rt.block_on(agent.hijack("POST", &format!("/exec/{q}/start"), &start)) {
        Ok(io) => io,
        Err(e) => return fail(e),
    };
    let _raw = if args.tty && args.interactive {
        RawMode::enter()
    } else {
        None
    };
    rt.block_on(session(io, args.tty, args.interactive, None));
    match rt.block_on(agent.json("GET", &format!("/exec/{q}/json"))) {
        Ok(v) => match v["ExitCode"].as_i64() {
            Some(c) => Ok(u8::try_from(c).unwrap_or(125)),
            None => {
                eprintln!("reg: the exec ended without an exit code");
                Ok(125)
            }
        },
        Err(e) => fail(e),
    }
}

#[derive(Args)]
pub struct PortArgs {
    container: String,
}

/// `reg port CTR`: `80/tcp -> 0.0.0.0:8080`, one line per binding.
pub fn port(config: Option<&Path>, host: &Target, args: PortArgs) -> anyhow::Result<()> {
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    let c = rt.block_on(agent.json(
        "GET",
        &format!("/containers/{}/json", query_value(&args.container)),
    ))?;
    if let Some(ports) = c["NetworkSettings"]["Ports"].as_object() {
        for (k, v) in ports {
            for b in v.as_array().into_iter().flatten() {
                println!(
                    "{k} -> {}:{}",
                    b["HostIp"].as_str().unwrap_or(""),
                    b["HostPort"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct InspectArgs {
    /// A Go template applied to each object (e.g. '{{.State.Pid}}', '{{json .Config}}').
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// Only this kind of object: container or image.
    #[arg(long = "type")]
    kind: Option<String>,
    /// Containers or images (containers first, as docker).
    names: Vec<String>,
}

pub fn inspect(config: Option<&Path>, host: &Target, args: InspectArgs) -> anyhow::Result<()> {
    let (agent, cfg) = agent_for_names(config, host)?;
    let rt = rt()?;
    let mut out = Vec::new();
    let (containers, images) = match args.kind.as_deref() {
        None => (true, true),
        Some("container") => (true, false),
        Some("image") => (false, true),
        Some(other) => bail!("\"{other}\" is not a valid value for --type (container or image)"),
    };
    for name in &args.names {
        let q = query_value(name);
        if containers {
            if let Ok(c) = rt.block_on(agent.json("GET", &format!("/containers/{q}/json"))) {
                out.push(c);
                continue;
            }
        }
        if !images {
            bail!("no such container: {name}");
        }
        let reference = Reference::parse(name, &cfg.node.default_registry)
            .map(|r| r.to_string())
            .map_err(|_| anyhow::anyhow!("no such container or image: {name}"))?;
        let v = rt
            .block_on(agent.json("GET", &format!("/images/{}/json", image_path(&reference))))
            .map_err(|_| anyhow::anyhow!("no such container or image: {name}"))?;
        out.push(image_summary(&reference, &v));
    }
    if out.is_empty() {
        bail!("give at least one container or image");
    }
    match &args.format {
        Some(f) => print!("{}", format::render_each(&out, f)?),
        None => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(())
}

/// What `reg inspect` shows of image `reference`, from the Engine API's inspect `v`: that
/// name, the digest of its manifest, its config.
fn image_summary(reference: &str, v: &serde_json::Value) -> serde_json::Value {
    // RepoDigests are `registry/repo@digest`, one per repository of the image id.
    let repo = reference
        .split_once('@')
        .map(|(r, _)| r)
        .unwrap_or_else(|| match reference.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => r,
            _ => reference,
        });
    let digest = v["RepoDigests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str()?.split_once('@'))
        .find(|(r, _)| *r == repo)
        .map(|(_, d)| d)
        .unwrap_or_default();
    serde_json::json!({
        "Id": v["Id"],
        "RepoTags": [reference],
        "RepoDigests": [digest],
        "Size": v["Size"],
        "Config": v["Config"],
        "RootFS": v["RootFS"],
        "Architecture": v["Architecture"],
        "Os": v["Os"],
    })
}

/// Whether the agent answers 404 for image `reference` (as opposed to having it).
pub(crate) fn image_missing(
    rt: &tokio::runtime::Runtime,
    agent: &AgentClient,
    reference: &str,
) -> bool {
    let path = format!("/images/{}/json", image_path(reference));
    matches!(exists(rt, agent, &path), Ok(false))
}

/// Whether the agent has what `GET path` names: false on its 404, an error on any other failure.
pub(crate) fn exists(
    rt: &tokio::runtime::Runtime,
    agent: &AgentClient,
    path: &str,
) -> Result<bool, reg_node::api::AgentError> {
    match rt.block_on(agent.json("GET", path)) {
        Ok(_) => Ok(true),
        Err(reg_node::api::AgentError::Api { status: 404, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
