//! `create`: from a request and an image to a stored container record (status `created`)
//! with its address on its network. Nothing runs yet: [`super::control`] starts it.

use crate::runtime::IdMap;
use std::sync::Arc;

use reg_registry::Reference;

use super::error::{failed, ContainerError};
use super::service::{
    connect, now, remove, ContainerState, Containers, Record, RestartPolicy, RunRequest, Status,
};
use crate::image::ImageStore;
use crate::runtime::Spec;

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

/// `KEY=VALUE` entries of `extra` replace those of `env` with the same key.
pub(super) fn merge_env(env: &mut Vec<String>, extra: &[String]) {
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
    // docker sets TERM for a terminal unless the image or the user did.
    if req.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let cwd = req
        .workdir
        .clone()
        .or_else(|| c["WorkingDir"].as_str().map(str::to_string))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    (entrypoint.into_iter().chain(cmd).collect(), env, cwd)
}

/// What `create` made: the new container's id and name.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: String,
    pub name: String,
}

/// Ids in one container's user namespace (docker's `--userns-remap` gives every container the
/// first such slice of its range; `--userns=auto` gives each one of its own).
const USERNS_SLICE: u32 = 65536;

/// The id range of a new container: none with `--userns=host` or without a node range; the
/// range's first slice by default (docker's remap); with `--userns=auto`, the first slice after
/// it that no other container of this node holds.
fn userns_for(
    cs: &Arc<Containers>,
    req: &RunRequest,
    pool: Option<IdMap>,
    privileged: bool,
) -> Result<Option<IdMap>, ContainerError> {
    let bad = ContainerError::Invalid;
    let mode = req.userns_mode.as_deref().unwrap_or("");
    let pool = match (mode, pool) {
        ("host", _) | ("", None) => return Ok(None),
        ("auto" | "", Some(p)) => p,
        ("auto", None) => {
            return Err(bad(
                "--userns=auto needs a subordinate id range on the node: set \
                 node.userns_remap (a user of /etc/subuid and /etc/subgid, or BASE:SIZE) and \
                 restart it"
                    .into(),
            ))
        }
        (other, _) => {
            return Err(bad(format!(
                "--userns {other:?}: use host or auto (or leave it unset for the node's remap)"
            )))
        }
    };
    if privileged {
        return Err(bad(
            "privileged mode is incompatible with user namespaces: run the \
             container with --userns=host"
                .into(),
        ));
    }
    let slice = |k: u32| IdMap {
        uid: pool.uid + k * USERNS_SLICE,
        gid: pool.gid + k * USERNS_SLICE,
        size: USERNS_SLICE,
    };
    let slices = pool.size / USERNS_SLICE;
    if slices == 0 {
        return Err(bad(format!(
            "the node's id range has {} ids: a user namespace needs {USERNS_SLICE}",
            pool.size
        )));
    }
    if mode.is_empty() {
        return Ok(Some(slice(0)));
    }
    let taken: std::collections::BTreeSet<u32> = cs
        .list()?
        .iter()
        .filter_map(|r| r.spec.userns)
        .filter(|m| m.uid >= pool.uid)
        .map(|m| (m.uid - pool.uid) / USERNS_SLICE)
        .collect();
    match (1..slices).find(|k| !taken.contains(k)) {
        Some(k) => Ok(Some(slice(k))),
        None => Err(ContainerError::Conflict(format!(
            "--userns=auto: all {} ranges of the node's ids are held by containers; remove \
             some, or give node.userns_remap a larger range",
            slices.saturating_sub(1)
        ))),
    }
}

/// `create`: checks the request, resolves its image, network, ports and volumes, and stores
/// the container's record (status `created`) with its address on its network.
pub async fn create(
    cs: &Arc<Containers>,
    images: &Arc<ImageStore>,
    default_registry: &str,
    userns_pool: Option<IdMap>,
    req: RunRequest,
) -> Result<Created, ContainerError> {
    let bad = ContainerError::Invalid;
    let r = Reference::parse(&req.image, default_registry).map_err(|e| bad(e.to_string()))?;
    RestartPolicy::parse(req.restart.as_deref())?;
    if req.rm && !matches!(req.restart.as_deref(), None | Some("no")) {
        return Err(bad(
            "conflicting options: --restart and --rm (a removed container cannot restart)".into(),
        ));
    }
    if let Some(n) = &req.name {
        check_name(n)?;
    }
    let security = crate::runtime::resolve_security(&req.security)?;
    let userns = userns_for(cs, &req, userns_pool, security.privileged)?;
    let mut limits = req.limits.clone();
    limits.check().map_err(|e| bad(e.to_string()))?;
    let mut tmpfs = Vec::new();
    for (target, options) in &req.tmpfs {
        tmpfs.push(crate::runtime::Tmpfs::parse(target, options)?);
    }
    if let Some(s) = req.shm_size {
        if s <= 0 {
            return Err(bad(format!("--shm-size {s}: must be greater than 0")));
        }
    }
    if let Some(sig) = &req.stop_signal {
        super::control::parse_signal(sig)?;
    }
    let log = log_limits(&req.log)?;
    for (flag, mode, joinable) in [
        ("--pid", &req.pid_mode, true),
        ("--ipc", &req.ipc_mode, true),
        ("--uts", &req.uts_mode, false),
    ] {
        match mode.as_deref() {
            None | Some("" | "private" | "host") => {}
            Some("shareable") if flag == "--ipc" => {}
            Some(m) if joinable && m.starts_with("container:") => {
                cs.resolve(&m["container:".len()..])?;
            }
            Some(m) => {
                return Err(bad(format!(
                    "{flag} {m:?}: use host{}",
                    if joinable { " or container:NAME" } else { "" }
                )))
            }
        }
    }
    // The network: a mode (none, host, container:OTHER) or a bridge network by name.
    let mode = req
        .network
        .clone()
        .unwrap_or_else(|| crate::network::DEFAULT.into());
    let net = match mode.as_str() {
        "none" | "host" => None,
        m if m.starts_with("container:") => {
            cs.resolve(&m["container:".len()..])?;
            if !req.publish.is_empty() || req.publish_all {
                return Err(bad(
                    "conflicting options: port publishing and the container network mode".into(),
                ));
            }
            None
        }
        name => {
            let cs = cs.clone();
            Some(if name == crate::network::DEFAULT {
                cs.networks.ensure_default()?
            } else {
                cs.networks.get(name)?
            })
        }
    };
    let network = mode.as_str();
    let own_network = network != "host" && !network.starts_with("container:");
    for k in req.sysctls.keys() {
        crate::runtime::check_sysctl(k, own_network)?;
    }
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
        ports.push(crate::network::ports::PortSpec::parse(p)?);
    }
    if (!ports.is_empty() || req.publish_all) && net.is_none() {
        return Err(bad(format!(
            "published ports need a bridge network, not --network {network}"
        )));
    }
    let mut req = req;
    // `--volumes-from`: the other container's mounts as it has them (read-only with `:ro`).
    for from in req.volumes_from.clone() {
        let (name, mode) = match from.rsplit_once(':') {
            Some((n, m @ ("ro" | "rw"))) => (n, Some(m)),
            _ => (from.as_str(), None),
        };
        let other = cs.resolve(name)?;
        for m in &other.spec.mounts {
            if !m.layers.is_empty() {
                continue;
            }
            let ro = match mode {
                Some("ro") => true,
                Some(_) => false,
                None => m.readonly,
            };
            let spec = format!(
                "{}:{}{}",
                m.source.display(),
                m.target,
                if ro { ":ro" } else { "" }
            );
            if !req
                .volumes
                .iter()
                .any(|v| v.split(':').nth(1) == Some(&m.target))
            {
                req.volumes.push(spec);
            }
        }
    }
    let mut mounts = Vec::new();
    for v in &req.volumes {
        mounts.push(super::volumes::resolve(&cs.volumes, v)?);
    }
    let (store, key) = (images.clone(), r.to_string());
    let image = tokio::task::spawn_blocking(move || store.get(&key))
        .await
        .map_err(failed)??
        .ok_or_else(|| ContainerError::NotFound(format!("no such image: {r} (pull it first)")))?;
    for e in &req.expose {
        crate::network::ports::PortSpec::parse(e).map_err(|x| bad(format!("--expose {e}: {x}")))?;
    }
    if req.publish_all {
        let exposed = image.config["config"]["ExposedPorts"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .chain(&req.expose);
        for k in exposed {
            let mut p = crate::network::ports::PortSpec::parse(k)?;
            p.host_port = 0;
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
    }
    let id = crate::db::random_hex().map_err(failed)?;
    let dir = cs.dir().join(&id);
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
        layers: image.chain.iter().map(|c| images.snapshot_dir(c)).collect(),
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
        limits: limits.clone(),
        security,
        mounts,
        network: network.to_string(),
        netns: None,
        ip: None,
        extra_hosts: Vec::new(),
        dns: Vec::new(),
        tty: req.tty,
        tty_size: req.tty.then(|| req.tty_size.unwrap_or((24, 80))),
        read_only: req.read_only,
        tmpfs,
        shm_size: req.shm_size,
        sysctls: req.sysctls.clone().into_iter().collect(),
        init: req.init,
        discard_upper: req.rm,
        log,
        pid_ns: ns_mode(&req.pid_mode),
        ipc_ns: ns_mode(&req.ipc_mode),
        uts_ns: ns_mode(&req.uts_mode),
        userns,
    };
    std::fs::create_dir_all(&dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
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
        stop_signal: req
            .stop_signal
            .clone()
            .or_else(|| {
                image.config["config"]["StopSignal"]
                    .as_str()
                    .map(str::to_string)
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "SIGTERM".to_string()),
        request: RunRequest {
            limits,
            labels: image_labels(&image.config)
                .into_iter()
                .chain(req.labels.clone())
                .collect(),
            healthcheck: req.healthcheck.clone().or_else(|| {
                super::health::HealthCheck::from_docker(&image.config["config"]["Healthcheck"])
            }),
            ..req.clone()
        },
        spec,
        state: ContainerState {
            status: Status::Created,
            ..ContainerState::default()
        },
        networks: Vec::new(),
        ports,
    };
    let mut last = None;
    for n in names {
        rec.name = n;
        match cs.put(&rec) {
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
    cs.emit(&rec, "create", &[]);
    if let Some(net) = &net {
        if let Err(e) = connect(cs, &rec.id, net, fixed_ip, req.aliases.clone()) {
            let _ = remove(cs, &rec).await;
            return Err(e);
        }
    }
    Ok(Created { id, name: rec.name })
}

/// A namespace mode as create knows it: the host's, or its own (another container's is
/// joined at each start, where its pid is known).
fn ns_mode(mode: &Option<String>) -> crate::runtime::NsMode {
    match mode.as_deref() {
        Some("host") => crate::runtime::NsMode::Host,
        _ => crate::runtime::NsMode::Private,
    }
}

/// The monitor's log limits for a container's log config: json-file rotated by size (the node's
/// default applies when unset), or `none`.
fn log_limits(c: &super::service::LogConfig) -> Result<crate::runtime::LogLimits, ContainerError> {
    use super::service::LogDriver;
    if c.max_file == 0 {
        return Err(ContainerError::Invalid(
            "--log-opt max-file: must be at least 1".into(),
        ));
    }
    if c.max_file > 1 && c.max_size.is_none() {
        return Err(ContainerError::Invalid(
            "--log-opt max-file needs max-size".into(),
        ));
    }
    Ok(crate::runtime::LogLimits {
        discard: c.driver == LogDriver::None,
        max_size: c.max_size,
        max_file: c.max_file,
    })
}

/// The labels an image's config carries (`LABEL` in its Dockerfile).
fn image_labels(config: &serde_json::Value) -> Vec<(String, String)> {
    config["config"]["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// A container name docker would accept: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub(super) fn check_name(n: &str) -> Result<(), ContainerError> {
    let valid = !n.is_empty()
        && n.len() <= 255
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(ContainerError::Invalid(format!(
            "invalid container name {n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}
