//! The container's cgroup through libcgroups: its resources (memory, cpu, pids, the device
//! rules), made before the init runs and removed when it ends.

use std::path::{Path, PathBuf};

use super::spec::{SecuritySpec, Spec};
use super::sys::err;

/// The container's device cgroup rules (docker's default allow-list, which libcgroups adds to
/// whatever is asked: `c *:* m`, `b *:* m`, the default nodes of [`super::rootfs`]'s `DEFAULT_DEVICES`,
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

pub(super) fn resources(spec: &Spec) -> Result<oci_spec::runtime::LinuxResources, String> {
    use oci_spec::runtime::{
        LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
        LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
    };
    let l = &spec.limits;
    let mut b = LinuxResourcesBuilder::default().devices(device_rules(&spec.security)?);
    if l.memory.is_some()
        || l.memory_swap.is_some()
        || l.memory_reservation.is_some()
        || l.oom_kill_disable
    {
        let mut m = LinuxMemoryBuilder::default();
        if let Some(v) = l.memory {
            m = m.limit(v);
        }
        if let Some(v) = l.memory_swap {
            m = m.swap(v);
        }
        if let Some(v) = l.memory_reservation {
            m = m.reservation(v);
        }
        if l.oom_kill_disable {
            m = m.disable_oom_killer(true);
        }
        b = b.memory(m.build().map_err(|e| err("memory limits", e))?);
    }
    if let Some(p) = l.pids {
        b = b.pids(
            LinuxPidsBuilder::default()
                .limit(p)
                .build()
                .map_err(|e| err("pids limit", e))?,
        );
    }
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if let Some(c) = l.cpus {
        let period: u64 = 100_000;
        cpu = cpu.period(period).quota((c * period as f64).round() as i64);
        any_cpu = true;
    }
    if let Some(p) = l.cpu_period {
        cpu = cpu.period(p);
        any_cpu = true;
    }
    if let Some(q) = l.cpu_quota {
        cpu = cpu.quota(q);
        any_cpu = true;
    }
    if let Some(s) = l.cpu_shares {
        cpu = cpu.shares(s);
        any_cpu = true;
    }
    if let Some(c) = &l.cpuset_cpus {
        cpu = cpu.cpus(c.clone());
        any_cpu = true;
    }
    if let Some(m) = &l.cpuset_mems {
        cpu = cpu.mems(m.clone());
        any_cpu = true;
    }
    if any_cpu {
        b = b.cpu(cpu.build().map_err(|e| err("cpu limits", e))?);
    }
    if l.blkio_weight.is_some() || !l.device_read_bps.is_empty() || !l.device_write_bps.is_empty() {
        let rates = |list: &[super::spec::DeviceRate]| {
            list.iter()
                .map(|d| {
                    LinuxThrottleDeviceBuilder::default()
                        .major(d.major)
                        .minor(d.minor)
                        .rate(d.rate)
                        .build()
                        .map_err(|e| err("device rate", e))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut io = LinuxBlockIoBuilder::default();
        if let Some(w) = l.blkio_weight {
            io = io.weight(w);
        }
        if !l.device_read_bps.is_empty() {
            io = io.throttle_read_bps_device(rates(&l.device_read_bps)?);
        }
        if !l.device_write_bps.is_empty() {
            io = io.throttle_write_bps_device(rates(&l.device_write_bps)?);
        }
        b = b.block_io(io.build().map_err(|e| err("block I/O limits", e))?);
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

/// The libcgroups manager of container `id`'s cgroup, `/reg/<id>` (v1, hybrid or v2).
pub(super) fn cgroup_manager(id: &str) -> Result<libcgroups::common::AnyCgroupManager, String> {
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
pub struct Cgroup(pub(super) libcgroups::common::AnyCgroupManager);

/// What a running container's cgroup could not do.
#[derive(Debug, thiserror::Error)]
#[error("container {id}'s cgroup: {message}")]
pub struct CgroupError {
    pub id: String,
    pub message: String,
}

fn running_manager(id: &str) -> Result<libcgroups::common::AnyCgroupManager, CgroupError> {
    cgroup_manager(id).map_err(|message| CgroupError {
        id: id.to_string(),
        message,
    })
}

/// Freezes (`pause`) or thaws (`unpause`) every process of container `id`: the freezer on
/// cgroup v1, `cgroup.freeze` on v2.
pub fn freeze(id: &str, frozen: bool) -> Result<(), CgroupError> {
    use libcgroups::common::{CgroupManager, FreezerState};
    let state = if frozen {
        FreezerState::Frozen
    } else {
        FreezerState::Thawed
    };
    running_manager(id)?.freeze(state).map_err(|e| CgroupError {
        id: id.to_string(),
        message: e.to_string(),
    })
}

/// The cgroup's counters (cpu, memory, pids, blkio) as libcgroups reads them.
pub fn stats(id: &str) -> Result<libcgroups::stats::Stats, CgroupError> {
    use libcgroups::common::CgroupManager;
    running_manager(id)?.stats().map_err(|e| CgroupError {
        id: id.to_string(),
        message: e.to_string(),
    })
}

/// The host pids of every process in container `id`'s cgroup.
pub fn pids(id: &str) -> Result<Vec<i32>, CgroupError> {
    use libcgroups::common::CgroupManager;
    Ok(running_manager(id)?
        .get_all_pids()
        .map_err(|e| CgroupError {
            id: id.to_string(),
            message: e.to_string(),
        })?
        .into_iter()
        .map(|p| p.as_raw())
        .collect())
}

/// Applies `spec`'s limits to its running container's cgroup (`docker update`).
pub fn update(spec: &Spec) -> Result<(), CgroupError> {
    use libcgroups::common::{CgroupManager, ControllerOpt};
    let fail = |message: String| CgroupError {
        id: spec.id.clone(),
        message,
    };
    let resources = resources(spec).map_err(fail)?;
    running_manager(&spec.id)?
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: spec.limits.oom_kill_disable,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| fail(e.to_string()))
}
