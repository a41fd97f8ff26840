//! The container as an OCI runtime-spec bundle: `config.json` (written and read with
//! `oci-spec`) beside `rootfs/` in the container's directory. The agent writes it before every
//! start; the monitor reads it back and runs what it says. The same bundle runs under `runc`
//! once the rootfs is mounted (a test does exactly that).
//!
//! What OCI has no field for travels in annotations: the image's layer snapshots
//! (`org.reg.layers`, mounted as the overlay rootfs by our runtime), the user as given
//! (`org.reg.user`, names are resolved inside the container), `org.reg.privileged`.

use std::path::{Path, PathBuf};

use super::rootfs::{MASKED, READONLY};
use super::seccomp::{Action, Op, Profile};
use super::spec::{BindMount, Limits, NsMode, SecuritySpec, Spec};

/// The bind mount option that marks a volume to be filled from the image (see
/// [`BindMount::copy_up`]).
const COPY_UP: &str = "reg-copy-up";

pub const CONFIG: &str = "config.json";

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// The first `path` found going down the image's layers (e.g. `etc/passwd`).
fn image_file(layers: &[std::path::PathBuf], path: &str) -> String {
    layers
        .iter()
        .rev()
        .find_map(|l| std::fs::read_to_string(l.join(path)).ok())
        .unwrap_or_default()
}

fn action_name(a: &Action) -> (&'static str, Option<u32>) {
    match a {
        Action::Allow => ("SCMP_ACT_ALLOW", None),
        Action::Errno(n) => ("SCMP_ACT_ERRNO", Some(*n)),
        Action::KillThread => ("SCMP_ACT_KILL_THREAD", None),
        Action::KillProcess => ("SCMP_ACT_KILL_PROCESS", None),
        Action::Trap => ("SCMP_ACT_TRAP", None),
        Action::Log => ("SCMP_ACT_LOG", None),
        Action::Trace(n) => ("SCMP_ACT_TRACE", Some(*n)),
    }
}

/// The profile as OCI's `linux.seccomp`, with the capability conditions already decided.
fn seccomp_json(p: &Profile, caps: &[String]) -> serde_json::Value {
    let holds = |c: &String| caps.iter().any(|h| h == c);
    let mut syscalls = Vec::new();
    for r in &p.rules {
        if !r.if_caps.iter().all(holds) || r.unless_caps.iter().any(holds) {
            continue;
        }
        let (action, errno) = action_name(&r.action);
        let args: Vec<serde_json::Value> = r
            .args
            .iter()
            .map(|a| {
                let (op, value, two) = match a.op {
                    Op::Eq => ("SCMP_CMP_EQ", a.value, 0),
                    Op::Ne => ("SCMP_CMP_NE", a.value, 0),
                    Op::Lt => ("SCMP_CMP_LT", a.value, 0),
                    Op::Le => ("SCMP_CMP_LE", a.value, 0),
                    Op::Gt => ("SCMP_CMP_GT", a.value, 0),
                    Op::Ge => ("SCMP_CMP_GE", a.value, 0),
                    Op::MaskedEq(mask) => ("SCMP_CMP_MASKED_EQ", mask, a.value),
                };
                serde_json::json!({ "index": a.index, "value": value, "valueTwo": two, "op": op })
            })
            .collect();
        let mut s = serde_json::json!({ "names": r.names, "action": action });
        if let Some(n) = errno {
            s["errnoRet"] = n.into();
        }
        if !args.is_empty() {
            s["args"] = args.into();
        }
        syscalls.push(s);
    }
    let (default, errno) = action_name(&p.default_action);
    let arches: &[&str] = match std::env::consts::ARCH {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => &[],
    };
    let mut v = serde_json::json!({
        "defaultAction": default,
        "architectures": arches,
        "syscalls": syscalls,
    });
    if let Some(n) = errno {
        v["defaultErrnoRet"] = n.into();
    }
    v
}

/// Writes `config.json` (and the /etc files it bind-mounts) into `spec.dir`.
pub fn write(spec: &Spec) -> Result<(), String> {
    std::fs::create_dir_all(spec.dir.join("rootfs")).map_err(|e| err("creating rootfs", e))?;
    let ids = match &spec.user {
        Some(u) => Some(super::spec::resolve_user(
            u,
            &image_file(&spec.layers, "etc/passwd"),
            &image_file(&spec.layers, "etc/group"),
        )?),
        None => None,
    };
    let (uid, gid, groups) = ids
        .as_ref()
        .map(|i| (i.uid, i.gid, i.groups.clone()))
        .unwrap_or((0, 0, Vec::new()));
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = match &ids {
            Some(i) if !i.home.is_empty() => i.home.clone(),
            Some(_) => "/".into(),
            None => "/root".into(),
        };
        env.push(format!("HOME={home}"));
    }
    // A non-root user keeps capabilities only in the bounding set, as docker does.
    let caps = &spec.security.caps;
    let live: &[String] = if uid == 0 { caps } else { &[] };
    for (name, content) in super::rootfs::etc_contents(spec) {
        super::monitor::write_atomic(&spec.dir, name, &content)
            .map_err(|e| err(&format!("writing {name}"), e))?;
    }
    let mut mounts = vec![
        serde_json::json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        serde_json::json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        serde_json::json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        serde_json::json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={}", spec.shm_size.unwrap_or(super::rootfs::DEFAULT_SHM_SIZE))]}),
        serde_json::json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": if spec.security.privileged { vec!["nosuid", "noexec", "nodev"] } else { vec!["nosuid", "noexec", "nodev", "ro"] }}),
    ];
    for name in super::rootfs::ETC_FILES {
        mounts.push(serde_json::json!({
            "destination": format!("/etc/{name}"), "type": "bind",
            "source": spec.dir.join(name), "options": ["rbind", "rprivate"],
        }));
    }
    for (k, m) in spec.mounts.iter().enumerate() {
        if !m.layers.is_empty() {
            // A merged view: an overlay mount, which runc performs as well.
            let dir = super::spec::view_dir(&spec.dir, k);
            let lower: Vec<String> = m
                .layers
                .iter()
                .rev()
                .map(|l| l.display().to_string())
                .collect();
            let mut options = vec![format!("lowerdir={}", lower.join(":"))];
            if m.readonly {
                options.push("ro".into());
            } else {
                options.push(format!("upperdir={}", dir.join("upper").display()));
                options.push(format!("workdir={}", dir.join("work").display()));
            }
            mounts.push(serde_json::json!({
                "destination": m.target, "type": "overlay", "source": "overlay", "options": options,
            }));
            continue;
        }
        let mut options = vec!["rbind", "rprivate"];
        if m.readonly {
            options.push("ro");
        }
        if m.copy_up {
            // Ours alone; other runtimes pass unknown options to mount(2) as data, which a
            // bind mount ignores.
            options.push(COPY_UP);
        }
        mounts.push(serde_json::json!({
            "destination": m.target, "type": "bind", "source": m.source, "options": options,
        }));
    }
    for t in &spec.tmpfs {
        mounts.push(serde_json::json!({
            "destination": t.target, "type": "tmpfs", "source": "tmpfs",
            "options": tmpfs_options(t),
        }));
    }
    let mut namespaces = vec![serde_json::json!({"type": "mount"})];
    for (kind, mode) in [
        ("pid", &spec.pid_ns),
        ("uts", &spec.uts_ns),
        ("ipc", &spec.ipc_ns),
    ] {
        match mode {
            NsMode::Private => namespaces.push(serde_json::json!({ "type": kind })),
            NsMode::Host => {}
            NsMode::Join(p) => namespaces.push(serde_json::json!({ "type": kind, "path": p })),
        }
    }
    match (&spec.netns, spec.network.as_str()) {
        (Some(p), _) => namespaces.push(serde_json::json!({"type": "network", "path": p})),
        (None, "host") => {}
        (None, _) => namespaces.push(serde_json::json!({"type": "network"})),
    }
    if spec.userns.is_some() {
        namespaces.push(serde_json::json!({"type": "user"}));
    }
    let resources = serde_json::to_value(super::cgroup::resources(spec)?)
        .map_err(|e| err("cgroup resources", e))?;
    let mut linux = serde_json::json!({
        "namespaces": namespaces,
        "cgroupsPath": format!("/reg/{}", spec.id),
        "resources": resources,
    });
    if let Some(m) = &spec.userns {
        linux["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": m.uid, "size": m.size}]);
        linux["gidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": m.gid, "size": m.size}]);
    }
    if !spec.security.devices.is_empty() {
        let devices: Vec<serde_json::Value> = spec
            .security
            .devices
            .iter()
            .map(|d| {
                serde_json::json!({
                    "path": d.path, "type": if d.block { "b" } else { "c" },
                    "major": d.major, "minor": d.minor, "fileMode": d.mode,
                    "uid": d.uid, "gid": d.gid,
                })
            })
            .collect();
        linux["devices"] = serde_json::json!(devices);
    }
    if !spec.sysctls.is_empty() {
        linux["sysctl"] = serde_json::json!(spec
            .sysctls
            .iter()
            .cloned()
            .collect::<std::collections::BTreeMap<_, _>>());
    }
    if !spec.security.privileged {
        linux["maskedPaths"] = serde_json::json!(MASKED);
        linux["readonlyPaths"] = serde_json::json!(READONLY);
    }
    if let Some(p) = &spec.security.seccomp {
        linux["seccomp"] = seccomp_json(p, caps);
    }
    let nofile = super::sys::nofile_limit();
    let mut rlimits =
        vec![serde_json::json!({ "type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile })];
    for l in &spec.security.rlimits {
        let name = format!("RLIMIT_{}", l.name.to_ascii_uppercase());
        rlimits.retain(|r| r["type"] != name.as_str());
        rlimits.push(serde_json::json!({ "type": name, "hard": l.hard, "soft": l.soft }));
    }
    let layers: Vec<String> = spec
        .layers
        .iter()
        .map(|l| l.display().to_string())
        .collect();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": "rootfs", "readonly": spec.read_only },
        "hostname": spec.hostname,
        "process": {
            "terminal": spec.tty,
            "consoleSize": spec.tty_size.map(|(h, w)| serde_json::json!({ "height": h, "width": w })),
            "user": { "uid": uid, "gid": gid, "additionalGids": groups },
            "args": spec.args,
            "env": env,
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": caps, "effective": live, "permitted": live, "inheritable": [],
            },
            "noNewPrivileges": true,
            "rlimits": rlimits,
        },
        "mounts": mounts,
        "linux": linux,
        "annotations": {
            "org.reg.id": spec.id,
            "org.reg.layers": serde_json::to_string(&layers).unwrap_or_default(),
            "org.reg.user": spec.user.clone().unwrap_or_default(),
            "org.reg.privileged": spec.security.privileged.to_string(),
            "org.reg.limits": serde_json::to_string(&spec.limits).unwrap_or_default(),
            "org.reg.init": spec.init.to_string(),
            "org.reg.discard-upper": spec.discard_upper.to_string(),
            "org.reg.log": serde_json::to_string(&spec.log).unwrap_or_default(),
            "org.reg.group-add": serde_json::to_string(&spec.security.group_add).unwrap_or_default(),
        },
    });
    let oci: oci_spec::runtime::Spec =
        serde_json::from_value(config).map_err(|e| err("building the OCI runtime spec", e))?;
    if let Some(json) = linux.get("seccomp") {
        // Keyed on the profile exactly as the monitor will read it back from config.json.
        let p = Profile::from_docker_json(&json.to_string()).map_err(|e| e.to_string())?;
        let programs = super::seccomp::compile_cached(&p, caps).map_err(|e| e.to_string())?;
        let key = super::seccomp::cache_key(&p, caps);
        super::seccomp::write_cache(&spec.dir, &key, &programs)
            .map_err(|e| err("writing the compiled seccomp filter", e))?;
    }
    let tmp = spec.dir.join(".config.json.tmp");
    oci.save(&tmp).map_err(|e| err("writing config.json", e))?;
    std::fs::rename(&tmp, spec.dir.join(CONFIG)).map_err(|e| err("writing config.json", e))
}

/// Reads the bundle in `dir` back into what the runtime runs.
pub fn read(dir: &Path) -> Result<Spec, String> {
    let oci = oci_spec::runtime::Spec::load(dir.join(CONFIG))
        .map_err(|e| err(&format!("reading {}", dir.join(CONFIG).display()), e))?;
    let v = serde_json::to_value(&oci).map_err(|e| err("config.json", e))?;
    let a = &v["annotations"];
    let strings = |x: &serde_json::Value| -> Vec<String> {
        x.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let layers: Vec<String> =
        serde_json::from_str(a["org.reg.layers"].as_str().unwrap_or("[]")).unwrap_or_default();
    let user = a["org.reg.user"]
        .as_str()
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    let limits: Limits =
        serde_json::from_str(a["org.reg.limits"].as_str().unwrap_or("{}")).unwrap_or_default();
    let p = &v["process"];
    let standard: Vec<String> = super::rootfs::ETC_FILES
        .iter()
        .map(|n| format!("/etc/{n}"))
        .collect();
    let mounts = v["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            (m["type"] == "bind" || m["type"] == "overlay")
                && !standard
                    .iter()
                    .any(|s| m["destination"].as_str() == Some(s.as_str()))
        })
        .map(|m| {
            let options = strings(&m["options"]);
            let layers: Vec<PathBuf> = if m["type"] == "overlay" {
                options
                    .iter()
                    .find_map(|o| o.strip_prefix("lowerdir="))
                    .map(|l| l.split(':').rev().map(PathBuf::from).collect())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            BindMount {
                source: m["source"].as_str().unwrap_or("").into(),
                target: m["destination"].as_str().unwrap_or("").to_string(),
                readonly: options.iter().any(|o| o == "ro"),
                layers,
                copy_up: options.iter().any(|o| o == COPY_UP),
            }
        })
        .collect();
    let tmpfs = v["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["type"] == "tmpfs" && m["destination"] != "/dev" && m["destination"] != "/dev/shm"
        })
        .map(|m| {
            super::spec::Tmpfs::parse(
                m["destination"].as_str().unwrap_or(""),
                &strings(&m["options"]).join(","),
            )
            .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let net_ns = v["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["type"] == "network");
    let network = net_ns.is_some();
    let netns = net_ns
        .and_then(|n| n["path"].as_str())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let seccomp = match v["linux"].get("seccomp") {
        Some(s) if !s.is_null() => {
            Some(Profile::from_docker_json(&s.to_string()).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let id = a["org.reg.id"]
        .as_str()
        .map(str::to_string)
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    Ok(Spec {
        id,
        layers: layers.into_iter().map(Into::into).collect(),
        dir: dir.to_path_buf(),
        args: strings(&p["args"]),
        env: strings(&p["env"]),
        cwd: p["cwd"].as_str().unwrap_or("/").to_string(),
        hostname: v["hostname"].as_str().unwrap_or("").to_string(),
        user,
        limits,
        security: SecuritySpec {
            privileged: a["org.reg.privileged"] == "true",
            caps: strings(&p["capabilities"]["bounding"]),
            seccomp,
            rlimits: p["rlimits"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    Some(super::spec::Rlimit {
                        name: r["type"]
                            .as_str()?
                            .strip_prefix("RLIMIT_")?
                            .to_ascii_lowercase(),
                        soft: r["soft"].as_u64()?,
                        hard: r["hard"].as_u64()?,
                    })
                })
                .collect(),
            devices: devices_of(&v["linux"]),
            group_add: serde_json::from_str(a["org.reg.group-add"].as_str().unwrap_or("[]"))
                .unwrap_or_default(),
        },
        mounts,
        network: if network { "none" } else { "host" }.into(),
        netns,
        ip: None,
        extra_hosts: Vec::new(),
        dns: Vec::new(),
        tty: p["terminal"].as_bool().unwrap_or(false),
        tty_size: p["consoleSize"]["height"]
            .as_u64()
            .zip(p["consoleSize"]["width"].as_u64())
            .map(|(h, w)| (h as u16, w as u16)),
        read_only: v["root"]["readonly"].as_bool().unwrap_or(false),
        tmpfs,
        shm_size: v["mounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["destination"] == "/dev/shm")
            .and_then(|m| {
                strings(&m["options"])
                    .iter()
                    .find_map(|o| o.strip_prefix("size=").and_then(|n| n.parse().ok()))
            })
            .filter(|s| *s != super::rootfs::DEFAULT_SHM_SIZE),
        sysctls: v["linux"]["sysctl"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
        init: a["org.reg.init"] == "true",
        discard_upper: a["org.reg.discard-upper"] == "true",
        pid_ns: ns_mode(&v, "pid"),
        ipc_ns: ns_mode(&v, "ipc"),
        uts_ns: ns_mode(&v, "uts"),
        userns: id_map(&v),
        log: serde_json::from_str(a["org.reg.log"].as_str().unwrap_or("{}")).unwrap_or_default(),
    })
}

/// The user namespace's mapping of a bundle: one range from container id 0, uids and gids.
fn id_map(v: &serde_json::Value) -> Option<super::userns::IdMap> {
    let first = |k: &str| -> Option<(u32, u32)> {
        let m = v["linux"][k].as_array()?.first()?;
        if m["containerID"].as_u64()? != 0 {
            return None;
        }
        let host = u32::try_from(m["hostID"].as_u64()?).ok()?;
        let size = u32::try_from(m["size"].as_u64()?).ok()?;
        Some((host, size))
    };
    let (uid, size) = first("uidMappings")?;
    let (gid, gsize) = first("gidMappings")?;
    Some(super::userns::IdMap {
        uid,
        gid,
        size: size.min(gsize),
    })
}

/// The mode of namespace `kind` in a bundle: absent is the host's, a path one to join.
fn ns_mode(v: &serde_json::Value, kind: &str) -> NsMode {
    let found = v["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["type"] == kind);
    match found {
        None => NsMode::Host,
        Some(n) => match n["path"].as_str().filter(|p| !p.is_empty()) {
            Some(p) => NsMode::Join(PathBuf::from(p)),
            None => NsMode::Private,
        },
    }
}

/// A tmpfs mount's OCI options: its flags as words, then its data.
fn tmpfs_options(t: &super::spec::Tmpfs) -> Vec<String> {
    use nix::mount::MsFlags as F;
    let flags = F::from_bits_truncate(t.flags);
    let mut o: Vec<String> = [
        (F::MS_RDONLY, "ro"),
        (F::MS_NOEXEC, "noexec"),
        (F::MS_NOSUID, "nosuid"),
        (F::MS_NODEV, "nodev"),
        (F::MS_NOATIME, "noatime"),
        (F::MS_NODIRATIME, "nodiratime"),
        (F::MS_RELATIME, "relatime"),
        (F::MS_STRICTATIME, "strictatime"),
        (F::MS_SYNCHRONOUS, "sync"),
    ]
    .iter()
    .filter(|(f, _)| flags.contains(*f))
    .map(|(_, w)| w.to_string())
    .collect();
    for word in [
        ("exec", F::MS_NOEXEC),
        ("suid", F::MS_NOSUID),
        ("dev", F::MS_NODEV),
    ] {
        if !flags.contains(word.1) {
            o.push(word.0.to_string());
        }
    }
    o.extend(
        t.data
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_string),
    );
    o
}

/// The `--device`s of a bundle: `linux.devices`, each with the access its cgroup rule allows.
fn devices_of(linux: &serde_json::Value) -> Vec<super::spec::Device> {
    let rules = linux["resources"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    linux["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let typ = d["type"].as_str()?;
            let (major, minor) = (d["major"].as_u64()?, d["minor"].as_u64()?);
            let access = rules
                .iter()
                .find(|r| {
                    r["allow"] == true
                        && r["type"] == typ
                        && r["major"].as_u64() == Some(major)
                        && r["minor"].as_u64() == Some(minor)
                })
                .and_then(|r| r["access"].as_str())
                .unwrap_or("rwm")
                .to_string();
            Some(super::spec::Device {
                path: d["path"].as_str()?.to_string(),
                block: typ == "b",
                major,
                minor,
                access,
                mode: d["fileMode"].as_u64().unwrap_or(0o666) as u32,
                uid: d["uid"].as_u64().unwrap_or(0) as u32,
                gid: d["gid"].as_u64().unwrap_or(0) as u32,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_reads_back_as_the_spec_it_was_written_from() {
        let t = tempfile::tempdir().expect("tempdir");
        let spec = Spec {
            id: "abc123".into(),
            layers: vec![t.path().join("l0"), t.path().join("l1")],
            dir: t.path().to_path_buf(),
            args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into(), "HOME=/root".into()],
            cwd: "/work".into(),
            hostname: "abc".into(),
            user: Some("1000:1000".into()),
            limits: Limits {
                memory: Some(64 << 20),
                pids: Some(10),
                cpus: Some(0.5),
                cpu_shares: Some(512),
                cpuset_cpus: Some("0".into()),
                memory_reservation: Some(32 << 20),
                oom_kill_disable: true,
                ..Limits::default()
            },
            security: SecuritySpec::default(),
            mounts: vec![
                BindMount {
                    source: "/srv/data".into(),
                    target: "/data".into(),
                    readonly: true,
                    layers: Vec::new(),
                    copy_up: true,
                },
                BindMount {
                    source: "overlay".into(),
                    target: "/stage".into(),
                    readonly: false,
                    layers: vec!["/s/1".into(), "/s/2".into()],
                    copy_up: false,
                },
            ],
            network: "demo".into(),
            netns: Some(t.path().join("netns")),
            ip: Some("172.18.0.2".into()),
            extra_hosts: vec!["172.18.0.3\tdb srv".into()],
            dns: vec!["127.0.0.11".into()],
            tty: true,
            tty_size: Some((30, 100)),
            read_only: true,
            tmpfs: vec![super::super::spec::Tmpfs::parse("/run", "size=1m,exec").expect("tmpfs")],
            shm_size: Some(128 << 20),
            sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
            init: true,
            discard_upper: true,
            log: super::super::spec::LogLimits {
                discard: false,
                max_size: Some(1 << 20),
                max_file: 3,
            },
            pid_ns: NsMode::Host,
            ipc_ns: NsMode::Join("/proc/1/ns/ipc".into()),
            uts_ns: NsMode::Private,
            userns: Some(super::super::userns::IdMap {
                uid: 200_000,
                gid: 300_000,
                size: 65536,
            }),
        };
        write(&spec).expect("write");
        let hosts = std::fs::read_to_string(t.path().join("hosts")).expect("hosts");
        assert!(hosts.contains("172.18.0.2\tabc\n"), "{hosts}");
        assert!(hosts.contains("172.18.0.3\tdb srv\n"), "{hosts}");
        let resolv = std::fs::read_to_string(t.path().join("resolv.conf")).expect("resolv");
        assert!(resolv.starts_with("nameserver 127.0.0.11\n"), "{resolv}");
        let back = read(t.path()).expect("read");
        assert_eq!(back.args, spec.args);
        assert_eq!(back.env, spec.env);
        assert_eq!(back.cwd, spec.cwd);
        assert_eq!(back.user, spec.user);
        assert_eq!(back.limits, spec.limits);
        assert_eq!(back.mounts, spec.mounts);
        assert_eq!(back.layers, spec.layers);
        assert_eq!(back.discard_upper, spec.discard_upper);
        assert_eq!(back.network, "none");
        assert_eq!(back.netns, spec.netns);
        assert_eq!((back.tty, back.tty_size), (true, Some((30, 100))));
        assert!(back.read_only && back.init);
        assert_eq!(back.tmpfs, spec.tmpfs);
        assert_eq!(back.shm_size, spec.shm_size);
        assert_eq!(back.sysctls, spec.sysctls);
        assert_eq!(back.log, spec.log);
        assert_eq!(back.userns, spec.userns);
        assert_eq!(
            (
                back.pid_ns.clone(),
                back.ipc_ns.clone(),
                back.uts_ns.clone()
            ),
            (
                spec.pid_ns.clone(),
                spec.ipc_ns.clone(),
                spec.uts_ns.clone()
            )
        );
        let sorted = |c: &[String]| {
            let mut c = c.to_vec();
            c.sort();
            c
        };
        assert_eq!(sorted(&back.security.caps), sorted(&spec.security.caps));
        // The seccomp profile survives the trip with the capability conditions decided.
        let compiled = |s: &Spec| {
            s.security
                .seccomp
                .as_ref()
                .map(|p| p.compile(&s.security.caps).expect("compile"))
        };
        assert_eq!(compiled(&back), compiled(&spec));
        let p = back.security.seccomp.as_ref().expect("seccomp");
        assert!(
            crate::runtime::seccomp::read_cache(
                t.path(),
                &crate::runtime::seccomp::cache_key(p, &back.security.caps)
            )
            .is_some(),
            "the monitor finds the filters compiled ahead"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(t.path().join(CONFIG)).expect("config"))
                .expect("json");
        assert_eq!(json["process"]["user"]["uid"], 1000);
        assert_eq!(
            json["process"]["capabilities"]["effective"],
            serde_json::json!([])
        );
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
    }
}
