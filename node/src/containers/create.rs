//! `create`: from a request and an image to a stored container record (status `created`)
//! with its address on its network. Nothing runs yet: [`super::control`] starts it.

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

/// `create`: checks the request, resolves its image, network, ports and volumes, and stores
/// the container's record (status `created`) with its address on its network.
pub async fn create(
    cs: &Arc<Containers>,
    images: &Arc<ImageStore>,
    default_registry: &str,
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
    let security = crate::runtime::resolve_security(&req.security)?;
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
    let mut mounts = Vec::new();
    for v in &req.volumes {
        mounts.push(super::volumes::resolve(&cs.volumes, v)?);
    }
    let (store, key) = (images.clone(), r.to_string());
    let image = tokio::task::spawn_blocking(move || store.get(&key))
        .await
        .map_err(failed)??
        .ok_or_else(|| ContainerError::NotFound(format!("no such image: {r} (pull it first)")))?;
    if req.publish_all {
        if let Some(exposed) = image.config["config"]["ExposedPorts"].as_object() {
            for k in exposed.keys() {
                let mut p = crate::network::ports::PortSpec::parse(k)?;
                p.host_port = 0;
                if !ports.contains(&p) {
                    ports.push(p);
                }
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
        stop_signal: image.config["config"]["StopSignal"]
            .as_str()
            .unwrap_or("SIGTERM")
            .to_string(),
        request: req.clone(),
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
    if let Some(net) = &net {
        if let Err(e) = connect(cs, &rec.id, net, fixed_ip, req.aliases.clone()) {
            let _ = remove(cs, &rec).await;
            return Err(e);
        }
    }
    Ok(Created { id, name: rec.name })
}
