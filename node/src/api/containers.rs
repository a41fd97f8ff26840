//! docker's inspect shape of a container (`GET /containers/{id}/json`) and of its endpoints,
//! which the Engine API's inspect and list serve.

use crate::containers::{Record, RestartPolicy};
use crate::runtime::monitor::LOG;

/// `docker inspect`'s shape of a container.
pub fn inspect_json(rec: &Record) -> serde_json::Value {
    let s = &rec.state;
    let running = s.status.is_running();
    let lower: Vec<String> = rec
        .spec
        .layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    serde_json::json!({
        "Id": rec.id,
        "Created": rec.created,
        "Path": rec.spec.args.first(),
        "Args": rec.spec.args.get(1..).unwrap_or_default(),
        "State": {
            "Status": s.docker_status(),
            "Running": running,
            "Paused": s.paused && running,
            "Health": s.health.as_ref().map(|h| serde_json::json!({
                "Status": h.status.as_str(),
                "FailingStreak": h.failing_streak,
                "Log": h.log.iter().map(|p| serde_json::json!({
                    "Start": p.start, "End": p.end, "ExitCode": p.exit_code, "Output": p.output,
                })).collect::<Vec<_>>(),
            })),
            "Restarting": false,
            "OOMKilled": s.oom_killed,
            "Dead": false,
            "Pid": if running { s.pid } else { 0 },
            "ExitCode": s.exit_code,
            "Error": s.error,
            "StartedAt": if s.started_at.is_empty() { "0001-01-01T00:00:00Z" } else { &s.started_at },
            "FinishedAt": if s.finished_at.is_empty() { "0001-01-01T00:00:00Z" } else { &s.finished_at },
        },
        "Image": rec.image_id,
        "Name": format!("/{}", rec.name),
        "RestartCount": s.restart_count,
        "LogPath": rec.spec.dir.join(LOG),
        "Mounts": rec.spec.mounts.iter().map(|m| serde_json::json!({
            "Source": m.source,
            "Destination": m.target,
            "RW": !m.readonly,
            "Type": if m.source.starts_with(crate::containers::volumes::root_of(&rec.spec.dir)) { "volume" } else { "bind" },
        })).collect::<Vec<_>>(),
        "Driver": "overlay",
        "HostConfig": host_config(rec),
        "Config": {
            "Hostname": rec.spec.hostname,
            "Tty": rec.spec.tty,
            "OpenStdin": rec.request.open_stdin,
            "Labels": rec.request.labels,
            "Healthcheck": rec.request.healthcheck.as_ref().map(|h| h.to_docker()),
            "StdinOnce": rec.request.open_stdin,
            "User": rec.request.user.clone().unwrap_or_default(),
            "Env": rec.spec.env,
            "Cmd": rec.request.cmd,
            "Image": rec.image,
            "WorkingDir": rec.spec.cwd,
            "Entrypoint": rec.request.entrypoint,
            "StopSignal": rec.stop_signal,
            "StopTimeout": rec.request.stop_timeout,
            "ExposedPorts": rec.request.expose.iter().map(|p| {
                let key = if p.contains('/') { p.clone() } else { format!("{p}/tcp") };
                (key, serde_json::json!({}))
            }).collect::<serde_json::Map<_, _>>(),
        },
        "NetworkSettings": network_settings(rec),
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "LowerDir": lower.join(":"),
                "UpperDir": rec.spec.dir.join("upper"),
                "WorkDir": rec.spec.dir.join("work"),
                "MergedDir": rec.spec.dir.join("rootfs"),
            },
        },
    })
}

/// docker's `NetworkSettings`: the first network's address at the top, every network by
/// name, and the published ports (`"80/tcp": [{"HostIp", "HostPort"}]`).
fn network_settings(rec: &Record) -> serde_json::Value {
    let first = rec.networks.first();
    let mut networks = serde_json::Map::new();
    for n in &rec.networks {
        networks.insert(n.network.clone(), endpoint_json(n));
    }
    let mut ports = serde_json::Map::new();
    for p in &rec.state.ports {
        let key = format!("{}/{}", p.container_port, p.proto);
        let entry = ports.entry(key).or_insert_with(|| serde_json::json!([]));
        if let Some(a) = entry.as_array_mut() {
            a.push(serde_json::json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}));
        }
    }
    serde_json::json!({
        "IPAddress": first.map(|n| n.ip.as_str()).unwrap_or(""),
        "IPPrefixLen": first.map(|n| n.prefix).unwrap_or(0),
        "Gateway": first.map(|n| n.gateway.as_str()).unwrap_or(""),
        "MacAddress": first.and_then(|n| n.ip.parse().ok()).map(crate::network::mac_string).unwrap_or_default(),
        "SandboxKey": if rec.networks.is_empty() { String::new() } else { rec.spec.dir.join("netns").display().to_string() },
        "Networks": networks,
        "Ports": ports,
    })
}

/// docker's `EndpointSettings` of a container on one network (inspect and `ps`).
pub(super) fn endpoint_json(n: &crate::containers::NetInfo) -> serde_json::Value {
    let ip: std::net::Ipv4Addr = n.ip.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    serde_json::json!({
        "NetworkID": n.network_id,
        "IPAddress": n.ip,
        "IPPrefixLen": n.prefix,
        "Gateway": n.gateway,
        "MacAddress": crate::network::mac_string(ip),
        "Aliases": n.aliases,
    })
}

/// docker's `HostConfig.LogConfig` of a container.
fn log_config(c: &crate::containers::LogConfig) -> serde_json::Value {
    let mut config = serde_json::Map::new();
    if let Some(m) = c.max_size {
        config.insert("max-size".into(), serde_json::json!(m.to_string()));
        config.insert("max-file".into(), serde_json::json!(c.max_file.to_string()));
    }
    let driver = match c.driver {
        crate::containers::LogDriver::JsonFile => "json-file",
        crate::containers::LogDriver::None => "none",
    };
    serde_json::json!({ "Type": driver, "Config": config })
}

/// docker's `HostConfig` of a container.
fn host_config(rec: &Record) -> serde_json::Value {
    let l = &rec.request.limits;
    let policy = RestartPolicy::parse(rec.request.restart.as_deref()).unwrap_or_default();
    serde_json::json!({
        "LogConfig": log_config(&rec.request.log),
        "CpuShares": l.cpu_shares.unwrap_or(0),
        "CpuPeriod": l.cpu_period.unwrap_or(0),
        "CpuQuota": l.cpu_quota.unwrap_or(0),
        "CpusetCpus": l.cpuset_cpus.clone().unwrap_or_default(),
        "CpusetMems": l.cpuset_mems.clone().unwrap_or_default(),
        "MemorySwap": l.memory_swap.unwrap_or(0),
        "MemoryReservation": l.memory_reservation.unwrap_or(0),
        "OomKillDisable": l.oom_kill_disable,
        "BlkioWeight": l.blkio_weight.unwrap_or(0),
        "BlkioDeviceReadBps": l.device_read_bps.iter().map(|d| serde_json::json!({"Path": d.path, "Rate": d.rate})).collect::<Vec<_>>(),
        "BlkioDeviceWriteBps": l.device_write_bps.iter().map(|d| serde_json::json!({"Path": d.path, "Rate": d.rate})).collect::<Vec<_>>(),
        "ReadonlyRootfs": rec.spec.read_only,
        "Tmpfs": rec.request.tmpfs,
        "ShmSize": rec.spec.shm_size.unwrap_or(crate::runtime::rootfs::DEFAULT_SHM_SIZE),
        "Sysctls": rec.request.sysctls,
        "Init": rec.request.init.then_some(true),
        "GroupAdd": rec.request.security.group_add,
        "PidMode": rec.request.pid_mode.clone().unwrap_or_default(),
        "UsernsMode": rec.request.userns_mode.clone().unwrap_or_default(),
        "IpcMode": rec.request.ipc_mode.clone().unwrap_or_else(|| "private".into()),
        "UTSMode": rec.request.uts_mode.clone().unwrap_or_default(),
        "VolumesFrom": rec.request.volumes_from,
        "AutoRemove": rec.request.rm,
        "NetworkMode": rec.spec.network,
        "Binds": rec.request.volumes,
        "Memory": rec.request.limits.memory.unwrap_or(0),
        "NanoCpus": rec.request.limits.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
        "PidsLimit": rec.request.limits.pids,
        "RestartPolicy": { "Name": policy.name(), "MaximumRetryCount": policy.max_retries() },
        "Privileged": rec.spec.security.privileged,
        "CapAdd": rec.request.security.cap_add,
        "CapDrop": rec.request.security.cap_drop,
        "SecurityOpt": rec.request.security.seccomp.as_ref().map(|p| vec![format!("seccomp={p}")]),
    })
}
