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
}

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
            Box::new(move || init(&child_spec)),
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

    let old = sub(".reg-old-root");
    ensure_dir(&old)?;
    nix::unistd::pivot_root(&rootfs, &old).map_err(|e| err("pivot_root", e))?;
    nix::unistd::chdir("/").map_err(|e| err("chdir /", e))?;
    umount2("/.reg-old-root", MntFlags::MNT_DETACH)
        .map_err(|e| err("detaching the old root", e))?;
    let _ = std::fs::remove_dir("/.reg-old-root");
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

fn exec(spec: &Spec, program: &Path) -> isize {
    let shown = program.display().to_string();
    if let Some(name) = shown.strip_prefix("\0not-found:") {
        eprintln!(
            "reg: container {}: exec: {name:?}: executable file not found in $PATH",
            spec.id
        );
        return 127;
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
