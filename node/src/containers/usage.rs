//! What a running container uses: its processes (`top`) and its cgroup's and network
//! namespace's counters (`stats`). Read from the host's procfs and the container's cgroup.

use std::sync::Arc;

use super::error::{failed, ContainerError};
use super::service::{Containers, Record};

/// One process of a container, as `top` lists it.
#[derive(Debug, Clone)]
pub struct Process {
    pub uid: u32,
    pub pid: i32,
    pub ppid: i32,
    /// Its command line (its name in brackets when it has none, as ps shows kernel threads).
    pub cmd: String,
}

fn running(cs: &Arc<Containers>, key: &str) -> Result<Record, ContainerError> {
    let rec = cs.resolve(key)?;
    if !rec.state.status.is_running() {
        return Err(ContainerError::Conflict(format!(
            "container {} is not running",
            rec.name
        )));
    }
    Ok(rec)
}

/// `top`: every process in the container's cgroup, by pid.
pub fn top(cs: &Arc<Containers>, key: &str) -> Result<Vec<Process>, ContainerError> {
    let rec = running(cs, key)?;
    let mut pids = crate::runtime::cgroup::pids(&rec.id).map_err(failed)?;
    pids.sort_unstable();
    // A process that ended between the listing and its reading is left out.
    Ok(pids.into_iter().filter_map(process).collect())
}

fn process(pid: i32) -> Option<Process> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .map(str::to_string)
    };
    let uid = field("Uid:")?.split_whitespace().next()?.parse().ok()?;
    let ppid = field("PPid:")?.parse().ok()?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    let cmd = if cmd.is_empty() {
        format!("[{}]", field("Name:").unwrap_or_default())
    } else {
        cmd
    };
    Some(Process {
        uid,
        pid,
        ppid,
        cmd,
    })
}

/// One interface's counters in the container's network namespace.
#[derive(Debug, Clone, Default)]
pub struct NetCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// One reading of a container's counters.
pub struct Sample {
    pub read: std::time::SystemTime,
    pub cgroup: libcgroups::stats::Stats,
    pub networks: Vec<NetCounters>,
    /// The host's cpu time since boot, in nanoseconds (docker's `system_cpu_usage`).
    pub system_cpu: u64,
    pub online_cpus: u32,
    /// The container's cpu time in nanoseconds: total, user, kernel (cgroup v2 counts in
    /// microseconds; converted).
    pub cpu_ns: (u64, u64, u64),
    /// Its memory limit, or the host's memory when it has none (as docker reports it).
    pub memory_limit: u64,
}

/// `stats`: a reading of the running container's counters, with its record.
pub fn sample(cs: &Arc<Containers>, key: &str) -> Result<(Record, Sample), ContainerError> {
    let rec = running(cs, key)?;
    let cgroup = crate::runtime::cgroup::stats(&rec.id).map_err(failed)?;
    let networks = std::fs::read_to_string(format!("/proc/{}/net/dev", rec.state.pid))
        .map(|t| net_dev(&t))
        .unwrap_or_default();
    let (system_cpu, online_cpus) = system_cpu();
    let unified = matches!(
        libcgroups::common::get_cgroup_setup(),
        Ok(libcgroups::common::CgroupSetup::Unified)
    );
    let scale = if unified { 1000 } else { 1 };
    let u = &cgroup.cpu.usage;
    let cpu_ns = (
        u.usage_total.saturating_mul(scale),
        u.usage_user.saturating_mul(scale),
        u.usage_kernel.saturating_mul(scale),
    );
    let host = host_memory();
    let limit = cgroup.memory.memory.limit;
    let memory_limit = if limit == 0 || (host > 0 && limit > host) {
        host
    } else {
        limit
    };
    Ok((
        rec,
        Sample {
            read: std::time::SystemTime::now(),
            cgroup,
            networks,
            system_cpu,
            online_cpus,
            cpu_ns,
            memory_limit,
        },
    ))
}

/// The host's memory in bytes (`MemTotal` of `/proc/meminfo`; 0 when unreadable).
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let kib: u64 = s
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

/// `/proc/PID/net/dev`'s interfaces, loopback left out (as docker does).
fn net_dev(text: &str) -> Vec<NetCounters> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let n: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            if n.len() < 16 {
                return None;
            }
            Some(NetCounters {
                name: name.to_string(),
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            })
        })
        .collect()
}

/// The host's total cpu time (the `cpu` line of `/proc/stat`, in ns) and its online cpus.
fn system_cpu() -> (u64, u32) {
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as u64;
    let total: u64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("cpu "))?.to_string();
            Some(
                line.split_whitespace()
                    .skip(1)
                    .take(8)
                    .filter_map(|f| f.parse::<u64>().ok())
                    .sum(),
            )
        })
        .unwrap_or(0);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    (total.saturating_mul(1_000_000_000 / ticks_per_second), cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_reads_interfaces_and_leaves_out_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  eth0:    1500      10    1    2    0     0          0         0      900       7    3    4    0     0       0          0\n";
        let n = net_dev(text);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].name, "eth0");
        assert_eq!(
            (
                n[0].rx_bytes,
                n[0].rx_packets,
                n[0].rx_errors,
                n[0].rx_dropped
            ),
            (1500, 10, 1, 2)
        );
        assert_eq!(
            (
                n[0].tx_bytes,
                n[0].tx_packets,
                n[0].tx_errors,
                n[0].tx_dropped
            ),
            (900, 7, 3, 4)
        );
    }
}
