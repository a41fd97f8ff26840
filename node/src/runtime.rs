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
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
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
    #[serde(default)]
    pub limits: Limits,
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

fn resources(l: &Limits) -> Result<oci_spec::runtime::LinuxResources, String> {
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };
    let mut b = LinuxResourcesBuilder::default();
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

/// The container's cgroup, removed when dropped.
struct Cgroup(libcgroups::common::AnyCgroupManager);

impl Drop for Cgroup {
    fn drop(&mut self) {
        use libcgroups::common::CgroupManager;
        // The init is gone; stray processes (there can be none left in a dead pid namespace)
        // would keep the cgroup busy, so retry briefly.
        for _ in 0..50 {
            if self.0.remove().is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
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

/// Docker's default masked paths (hidden behind /dev/null or an empty read-only tmpfs).
const MASKED: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's default read-only paths.
const READONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the container to its end and returns its exit code (docker's numbering).
/// Output goes to the monitor's stdout/stderr, which the caller points at the log.
#[allow(unsafe_code)]
pub fn run(spec: &Spec) -> i32 {
    for d in ["upper", "work", "rootfs"] {
        if let Err(e) = std::fs::create_dir_all(spec.dir.join(d)) {
            eprintln!(
                "reg: container {}: {}: {e}",
                spec.id,
                spec.dir.join(d).display()
            );
            return 125;
        }
    }
    let cgroup = match libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: PathBuf::from(format!("/reg/{}", spec.id)),
        systemd_cgroup: false,
        container_name: spec.id.clone(),
    }) {
        Ok(m) => Cgroup(m),
        Err(e) => {
            eprintln!("reg: container {}: cgroups: {e}", spec.id);
            return 125;
        }
    };
    let res = match resources(&spec.limits) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reg: container {}: {e}", spec.id);
            return 125;
        }
    };
    // The init waits on this pipe until it has been put into its cgroup.
    let (ready_r, ready_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("reg: container {}: pipe: {e}", spec.id);
            return 125;
        }
    };
    let ready_w_raw = ready_w.as_raw_fd();
    let mut stack = vec![0u8; 1024 * 1024];
    let flags = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET;
    let child_spec = spec.clone();
    // SAFETY: the monitor is single-threaded (no other thread can hold a lock the child would
    // need), the stack outlives the child's use of it (we wait for the child below), and the
    // callback only makes syscalls and exits or execs.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(move || {
                // Our copy of the write end must go, or a dead monitor would leave us waiting.
                let _ = nix::unistd::close(ready_w_raw);
                let mut b = [0u8; 1];
                if !matches!(nix::unistd::read(ready_r.as_raw_fd(), &mut b), Ok(1)) {
                    return 125;
                }
                init(&child_spec)
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
            return 125;
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
            return 125;
        }
        if nix::unistd::write(&ready_w, &[1]).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        drop(ready_w);
    }
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

/// The container's init before exec. Never returns on success.
fn init(spec: &Spec) -> isize {
    match setup(spec) {
        Ok(program) => exec(spec, &program),
        Err(e) => {
            eprintln!("reg: container {}: {e}", spec.id);
            125
        }
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

fn setup(spec: &Spec) -> Result<PathBuf, String> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|e| err("making mounts private", e))?;
    let rootfs = spec.dir.join("rootfs");
    let lower: Vec<String> = spec
        .layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        spec.dir.join("upper").display(),
        spec.dir.join("work").display()
    );
    mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| err("mounting the overlay rootfs", e))?;

    let sub = |p: &str| rootfs.join(p.trim_start_matches('/'));
    let ensure_dir = |p: &Path| {
        std::fs::create_dir_all(p).map_err(|e| err(&format!("creating {}", p.display()), e))
    };
    ensure_dir(&sub("proc"))?;
    mount(
        Some("proc"),
        &sub("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .map_err(|e| err("mounting /proc", e))?;
    ensure_dir(&sub("sys"))?;
    mount(
        Some("sysfs"),
        &sub("sys"),
        Some("sysfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        none,
    )
    .map_err(|e| err("mounting /sys", e))?;
    ensure_dir(&sub("dev"))?;
    mount(
        Some("tmpfs"),
        &sub("dev"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(|e| err("mounting /dev", e))?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = sub(&format!("dev/{name}"));
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|e| err(&format!("creating /dev/{name}"), e))?;
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666));
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(target, sub(&format!("dev/{link}")))
            .map_err(|e| err(&format!("creating /dev/{link}"), e))?;
    }
    ensure_dir(&sub("dev/pts"))?;
    mount(
        Some("devpts"),
        &sub("dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| err("mounting /dev/pts", e))?;
    ensure_dir(&sub("dev/shm"))?;
    mount(
        Some("shm"),
        &sub("dev/shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(|e| err("mounting /dev/shm", e))?;

    nix::unistd::sethostname(&spec.hostname).map_err(|e| err("setting the hostname", e))?;
    etc_files(spec, &rootfs)?;

    let old = sub(".reg-old-root");
    ensure_dir(&old)?;
    nix::unistd::pivot_root(&rootfs, &old).map_err(|e| err("pivot_root", e))?;
    nix::unistd::chdir("/").map_err(|e| err("chdir /", e))?;
    umount2("/.reg-old-root", MntFlags::MNT_DETACH)
        .map_err(|e| err("detaching the old root", e))?;
    let _ = std::fs::remove_dir("/.reg-old-root");
    mask_and_protect()?;
    loopback_up().map_err(|e| err("bringing up lo", e))?;
    let cwd = if spec.cwd.is_empty() {
        "/"
    } else {
        spec.cwd.as_str()
    };
    std::fs::create_dir_all(cwd).map_err(|e| err(&format!("creating the working dir {cwd}"), e))?;
    nix::unistd::chdir(cwd).map_err(|e| err(&format!("chdir {cwd}"), e))?;

    let Some(arg0) = spec.args.first() else {
        return Err("no command given and the image has none".into());
    };
    if arg0.contains('/') {
        return Ok(PathBuf::from(arg0));
    }
    let path = spec
        .env
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

/// `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, written beside the container and bind
/// mounted over the image's (as docker does), so the image itself is never changed.
fn etc_files(spec: &Spec, rootfs: &Path) -> Result<(), String> {
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    // Loopback resolvers of the host mean nothing inside the container's own network.
    let resolv: String = host_resolv
        .lines()
        .filter(|l| !(l.starts_with("nameserver") && (l.contains(" 127.") || l.contains(" ::1"))))
        .map(|l| format!("{l}\n"))
        .collect();
    let files = [
        (
            "hosts",
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
                spec.hostname
            ),
        ),
        ("hostname", format!("{}\n", spec.hostname)),
        ("resolv.conf", resolv),
    ];
    let etc = rootfs.join("etc");
    std::fs::create_dir_all(&etc).map_err(|e| err("creating /etc", e))?;
    let none: Option<&str> = None;
    for (name, content) in files {
        let src = spec.dir.join(name);
        std::fs::write(&src, content).map_err(|e| err(&format!("writing {}", src.display()), e))?;
        let dst = etc.join(name);
        // A symlink in the image (e.g. resolv.conf -> elsewhere) would be followed by the mount.
        if std::fs::symlink_metadata(&dst).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&dst).map_err(|e| err(&format!("replacing /etc/{name}"), e))?;
        }
        if !dst.exists() {
            std::fs::write(&dst, "").map_err(|e| err(&format!("creating /etc/{name}"), e))?;
        }
        mount(Some(&src), &dst, none, MsFlags::MS_BIND, none)
            .map_err(|e| err(&format!("mounting /etc/{name}"), e))?;
    }
    Ok(())
}

/// Masks and write-protects what docker does in /proc and /sys.
fn mask_and_protect() -> Result<(), String> {
    let none: Option<&str> = None;
    for p in MASKED {
        let Ok(m) = std::fs::symlink_metadata(p) else {
            continue;
        };
        if m.is_dir() {
            mount(Some("tmpfs"), p, Some("tmpfs"), MsFlags::MS_RDONLY, none)
                .map_err(|e| err(&format!("masking {p}"), e))?;
        } else {
            mount(Some("/dev/null"), p, none, MsFlags::MS_BIND, none)
                .map_err(|e| err(&format!("masking {p}"), e))?;
        }
    }
    for p in READONLY {
        if std::fs::symlink_metadata(p).is_err() {
            continue;
        }
        mount(Some(p), p, none, MsFlags::MS_BIND | MsFlags::MS_REC, none)
            .map_err(|e| err(&format!("binding {p}"), e))?;
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        mount(none, p, none, flags, none).map_err(|e| err(&format!("making {p} read-only"), e))?;
    }
    Ok(())
}

nix::ioctl_read_bad!(get_if_flags, nix::libc::SIOCGIFFLAGS, nix::libc::ifreq);
nix::ioctl_write_ptr_bad!(set_if_flags, nix::libc::SIOCSIFFLAGS, nix::libc::ifreq);

/// Brings up `lo` in the container's network namespace (docker's `none` network has it up).
#[allow(unsafe_code)]
fn loopback_up() -> nix::Result<()> {
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

/// Drops every capability outside docker's default set and sets no_new_privs.
fn drop_privileges() -> Result<(), String> {
    let keep: caps::CapsHashSet = DEFAULT_CAPS.iter().copied().collect();
    for c in caps::all() {
        if !keep.contains(&c) {
            caps::drop(None, caps::CapSet::Bounding, c)
                .map_err(|e| err(&format!("dropping {c}"), e))?;
        }
    }
    caps::set(None, caps::CapSet::Inheritable, &keep)
        .map_err(|e| err("setting inheritable capabilities", e))?;
    let _ = caps::clear(None, caps::CapSet::Ambient);
    nix::sys::prctl::set_no_new_privs().map_err(|e| err("setting no_new_privs", e))?;
    Ok(())
}

fn exec(spec: &Spec, program: &Path) -> isize {
    let shown = program.display().to_string();
    if let Some(name) = shown.strip_prefix("\0not-found:") {
        eprintln!(
            "reg: container {}: exec: {name:?}: executable file not found in $PATH",
            spec.id
        );
        return 127;
    }
    if let Err(e) = drop_privileges() {
        eprintln!("reg: container {}: {e}", spec.id);
        return 125;
    }
    let cstr = |s: &str| CString::new(s.as_bytes()).unwrap_or_default();
    let args: Vec<CString> = spec.args.iter().map(|a| cstr(a)).collect();
    let env: Vec<CString> = spec.env.iter().map(|e| cstr(e)).collect();
    let err = nix::unistd::execve(&cstr(&shown), &args, &env).err();
    let code = match err {
        Some(nix::errno::Errno::ENOENT) => 127,
        _ => 126,
    };
    eprintln!(
        "reg: container {}: exec {shown:?}: {}",
        spec.id,
        err.map(|e| e.desc()).unwrap_or("failed")
    );
    code
}
