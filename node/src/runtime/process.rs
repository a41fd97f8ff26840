//! The container's processes: `start` clones the init into its namespaces and cgroup and
//! returns once it has exec'd; `init` prepares the root filesystem and becomes the user's
//! program; `exec` is the last steps before `execve`; `enter` is `reg exec` joining a running
//! container; `wait` turns the init's end into docker's exit code.

use std::ffi::CString;
use std::os::fd::AsRawFd;

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};

use super::cgroup::{cgroup_manager, resources, Cgroup};
use super::rootfs;
use super::seccomp;
use super::spec::{
    resolve_groups, resolve_user, rlimit_resource, ExecSpec, Rlimit, SecuritySpec, Spec,
};
use super::sys::{err, find_program, nofile_limit, Program, Ready};
use super::tty::{console_socket, receive_fd, relay, terminal};

/// Waits for the container's init and returns docker's exit code.
pub fn wait(spec: &Spec, pid: nix::unistd::Pid) -> i32 {
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

/// Starts the container: its init runs in new namespaces inside its cgroup. Must be called
/// while the process is single-threaded. `Err` carries the exit code (125) after the reason
/// was written to stderr.
#[allow(unsafe_code)]
/// `console`: with `-t`, the init's end of a socket on which it sends the master of the
/// terminal it allocates inside the container.
pub fn start(
    spec: &Spec,
    console: Option<&std::os::fd::OwnedFd>,
) -> Result<(nix::unistd::Pid, Cgroup), i32> {
    let console_fd = console.map(|c| c.as_raw_fd());
    for d in ["upper", "work", "rootfs"] {
        if let Err(e) = std::fs::create_dir_all(spec.dir.join(d)) {
            eprintln!(
                "reg: container {}: {}: {e}",
                spec.id,
                spec.dir.join(d).display()
            );
            return Err(125);
        }
    }
    // The user namespace is made first (single-threaded here), and the upper dir belongs to
    // the container's root, so that what it writes lands owned by its range on the host.
    let userns = match &spec.userns {
        Some(map) => {
            #[allow(clippy::disallowed_methods)] // trusted: the container's own directory
            let made =
                std::os::unix::fs::chown(spec.dir.join("upper"), Some(map.uid), Some(map.gid))
                    .and_then(|()| super::userns::make(map));
            match made {
                Ok(fd) => Some(fd),
                Err(e) => {
                    eprintln!("reg: container {}: the user namespace: {e}", spec.id);
                    return Err(125);
                }
            }
        }
        None => None,
    };
    let userns_raw = userns.as_ref().map(|f| f.as_raw_fd());
    let res = match resources(spec) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reg: container {}: {e}", spec.id);
            return Err(125);
        }
    };
    // The init waits on `ready` until it has been put into its cgroup; we wait on `done` until
    // the init has exec'd the user's program or failed (its end is close-on-exec): until then
    // its mount namespace still has the host's root, and nothing may join it (`reg exec`).
    let pipes = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .and_then(|r| Ok((r, nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)));
    let ((ready_r, ready_w), (done_r, done_w)) = match pipes {
        Ok(p) => p,
        Err(e) => {
            eprintln!("reg: container {}: pipe: {e}", spec.id);
            return Err(125);
        }
    };
    let done_r_raw = done_r.as_raw_fd();
    // Compiled ahead by the agent when it wrote the bundle; compiled here otherwise.
    let filters = match &spec.security.seccomp {
        Some(p) => {
            match seccomp::read_cache(&spec.dir, &seccomp::cache_key(p, &spec.security.caps)) {
                Some(f) => f,
                None => match p.compile(&spec.security.caps) {
                    Ok(f) => f,
                    Err(e) => {
                        eprintln!("reg: container {}: {e}", spec.id);
                        return Err(125);
                    }
                },
            }
        }
        None => Vec::new(),
    };
    let netns = match &spec.netns {
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!(
                    "reg: container {}: network namespace {}: {e}",
                    spec.id,
                    p.display()
                );
                return Err(125);
            }
        },
        None => None,
    };
    let netns_raw = netns.as_ref().map(|f| f.as_raw_fd());
    // Namespaces to join (another container's): pid is joined here, by the monitor, so that
    // the init is created in it; ipc and uts by the init itself, like the network's.
    let open_ns = |kind: &str, mode: &super::spec::NsMode| -> Result<Option<std::fs::File>, i32> {
        match mode {
            super::spec::NsMode::Join(p) => std::fs::File::open(p).map(Some).map_err(|e| {
                eprintln!(
                    "reg: container {}: {kind} namespace {}: {e}",
                    spec.id,
                    p.display()
                );
                125
            }),
            _ => Ok(None),
        }
    };
    // Once the init is made, the monitor returns to its own pid namespace for its children:
    // while they differ, the kernel refuses it new threads (the output pumps).
    let mut own_pid_ns = None;
    if let Some(f) = open_ns("pid", &spec.pid_ns)? {
        let ours = std::fs::File::open("/proc/self/ns/pid").map_err(|e| {
            eprintln!("reg: container {}: /proc/self/ns/pid: {e}", spec.id);
            125
        })?;
        if let Err(e) = nix::sched::setns(&f, CloneFlags::CLONE_NEWPID) {
            eprintln!("reg: container {}: joining the pid namespace: {e}", spec.id);
            return Err(125);
        }
        own_pid_ns = Some(ours);
    }
    let ipcns = open_ns("ipc", &spec.ipc_ns)?;
    let utsns = open_ns("uts", &spec.uts_ns)?;
    let joins: Vec<(std::os::fd::RawFd, CloneFlags)> = [
        (ipcns.as_ref(), CloneFlags::CLONE_NEWIPC),
        (utsns.as_ref(), CloneFlags::CLONE_NEWUTS),
    ]
    .into_iter()
    .filter_map(|(f, kind)| f.map(|f| (f.as_raw_fd(), kind)))
    .collect();
    let own = |mode: &super::spec::NsMode, flag: CloneFlags| {
        if mode.is_private() {
            flag
        } else {
            CloneFlags::empty()
        }
    };
    let ready_w_raw = ready_w.as_raw_fd();
    let mut stack = vec![0u8; 1024 * 1024];
    let flags = own(&spec.pid_ns, CloneFlags::CLONE_NEWPID)
        | CloneFlags::CLONE_NEWNS
        | own(&spec.uts_ns, CloneFlags::CLONE_NEWUTS)
        | own(&spec.ipc_ns, CloneFlags::CLONE_NEWIPC)
        | if spec.network == "host" || netns.is_some() {
            CloneFlags::empty()
        } else {
            CloneFlags::CLONE_NEWNET
        };
    let child_spec = spec.clone();
    // SAFETY: the monitor is single-threaded (no other thread can hold a lock the child would
    // need); without CLONE_VM the child runs on its own copy of `stack`, so the parent may free
    // its copy; the callback only makes syscalls and exits or execs.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(move || {
                // Our copy of the write end must go, or a dead monitor would leave us waiting.
                let _ = nix::unistd::close(ready_w_raw);
                let _ = nix::unistd::close(done_r_raw);
                // The container lives no longer than its monitor, which records its end.
                if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err() {
                    return 125;
                }
                for (fd, kind) in &joins {
                    let fd = std::os::fd::BorrowedFd::borrow_raw(*fd);
                    if let Err(e) = nix::sched::setns(fd, *kind) {
                        eprintln!("reg: joining a namespace of another container: {e}");
                        return 125;
                    }
                }
                if let Some(fd) = netns_raw {
                    // (Within the clone's unsafe block.) The parent keeps the file open until
                    // after clone; our copy of the fd table holds it for as long as this borrow.
                    let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                    if let Err(e) = nix::sched::setns(fd, CloneFlags::CLONE_NEWNET) {
                        eprintln!("reg: joining the network namespace: {e}");
                        return 125;
                    }
                }
                // (Within the clone's unsafe block.) Kept open by the parent until after clone.
                let userns = userns_raw.map(|fd| std::os::fd::BorrowedFd::borrow_raw(fd));
                init(
                    &child_spec,
                    &filters,
                    console_fd,
                    ready_r.as_raw_fd(),
                    userns,
                )
            }),
            &mut stack,
            flags,
            Some(nix::sys::signal::Signal::SIGCHLD as i32),
        )
    };
    if let Some(ours) = own_pid_ns {
        if let Err(e) = nix::sched::setns(&ours, CloneFlags::CLONE_NEWPID) {
            eprintln!(
                "reg: container {}: back to the monitor's pid namespace: {e}",
                spec.id
            );
            if let Ok(p) = pid {
                let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(p, None);
            }
            return Err(125);
        }
    }
    let pid = match pid {
        Ok(p) => p,
        Err(e) => {
            eprintln!("reg: container {}: cannot create namespaces: {e}", spec.id);
            return Err(125);
        }
    };
    // The cgroup is made while the init sets up its mounts (libcgroups needs ~10 ms to find
    // the controllers); the init waits for it before it execs.
    let cgroup = match cgroup_manager(&spec.id) {
        Ok(m) => Cgroup(m),
        Err(e) => {
            eprintln!("reg: container {}: cgroups: {e}", spec.id);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(125);
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
                        disable_oom_killer: spec.limits.oom_kill_disable,
                        oom_score_adj: None,
                        freezer_state: None,
                    })
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = joined {
            eprintln!("reg: container {}: cgroups: {e}", spec.id);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(125);
        }
        if nix::unistd::write(&ready_w, &[1]).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        drop(ready_w);
    }
    drop(done_w);
    let mut b = [0u8; 1];
    while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(done_r.as_raw_fd(), &mut b) {}
    Ok((pid, cgroup))
}

/// The container's init before exec. Never returns on success.
fn init(
    spec: &Spec,
    filters: &[seccompiler::BpfProgram],
    console: Option<std::os::fd::RawFd>,
    ready: std::os::fd::RawFd,
    userns: Option<std::os::fd::BorrowedFd<'_>>,
) -> isize {
    let mut ready = Ready::new(ready);
    let prepared = rootfs::setup(spec, &mut ready, userns).and_then(|program| {
        if let Some(sock) = console {
            terminal(sock, spec.tty_size)?;
        }
        Ok(program)
    });
    // Nothing of the user's runs before the init is in its cgroup.
    if !ready.wait() {
        return 125;
    }
    // Everything is mounted: from here on the init is its user namespace's root, and no
    // more than that on the host.
    let prepared = match (prepared, userns) {
        (Ok(program), Some(ns)) => super::userns::join(ns)
            .map(|()| program)
            .map_err(|e| rootfs::SetupError::from(format!("joining the user namespace: {e}"))),
        (other, _) => other,
    };
    match prepared {
        Ok(program) if spec.init => reaper(spec, &program, filters),
        Ok(program) => exec(
            &spec.id,
            &program,
            &spec.args,
            &spec.env,
            spec.user.as_deref(),
            &spec.security,
            filters,
        ),
        Err(e) => {
            eprintln!("reg: container {}: {}", spec.id, e.message);
            e.code
        }
    }
}

/// `--init`: this process stays pid 1 and forks the program; every signal it gets is passed
/// on to the program, and every process that ends in the container is reaped (orphans are
/// re-parented to pid 1). Ends with the program's exit status (128 + signal when killed).
/// Before waiting it gives up every capability and installs the container's seccomp filter,
/// like the program itself.
#[allow(unsafe_code)]
fn reaper(spec: &Spec, program: &Program, filters: &[seccompiler::BpfProgram]) -> isize {
    use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    // Blocked before the fork, so nothing sent between the fork and the wait is lost.
    let all = SigSet::all();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), None) {
        eprintln!("reg: container {}: --init: blocking signals: {e}", spec.id);
        return 125;
    }
    // SAFETY: the init is single-threaded (a fresh clone); the child only execs or exits.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            let code = exec(
                &spec.id,
                program,
                &spec.args,
                &spec.env,
                spec.user.as_deref(),
                &spec.security,
                filters,
            );
            std::process::exit(code as i32);
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
        Err(e) => {
            eprintln!("reg: container {}: --init: fork: {e}", spec.id);
            return 125;
        }
    };
    // Nothing of the runtime's stays open here: the start handshake's pipe (closed at the
    // program's exec in the child, and now here: the monitor learns the container runs), and
    // no host descriptor for a process of the container to reach through /proc/1/fd. Not
    // dumpable either, so /proc/1 of this root process is closed to the container's.
    // SAFETY: close_range(2) only closes descriptors; none of them is used after this.
    let closed = unsafe { nix::libc::close_range(3, u32::MAX, 0) };
    if closed != 0 {
        for fd in 3..nofile_limit().min(65536) as i32 {
            let _ = nix::unistd::close(fd);
        }
    }
    let _ = nix::sys::prctl::set_dumpable(false);
    rename_as_init();
    let confined = drop_privileges(&[])
        .and_then(|()| {
            caps::clear(None, caps::CapSet::Effective)
                .and_then(|()| caps::clear(None, caps::CapSet::Permitted))
                .map_err(|e| err("dropping capabilities", e))
        })
        .and_then(|()| {
            nix::sys::prctl::set_no_new_privs().map_err(|e| err("setting no_new_privs", e))
        })
        .and_then(|()| seccomp::install(filters).map_err(|e| e.to_string()));
    if let Err(e) = confined {
        eprintln!("reg: container {}: --init: {e}", spec.id);
        let _ = kill(child, Signal::SIGKILL);
    }
    loop {
        match all.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == child => return code as isize,
                    Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                        return 128 + sig as isize
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            },
            Ok(sig) => {
                let _ = kill(child, sig);
            }
            Err(_) => {}
        }
    }
}

/// What `ps` in the container shows for the `--init` reaper, instead of the monitor's command
/// line it inherited (which names the node's data directory on the host).
const INIT_NAME: &[u8] = b"/sbin/reg-init";

/// Overwrites this process's command line (the monitor's, inherited through the clone) with
/// [`INIT_NAME`].
fn rename_as_init() {
    let _ = nix::sys::prctl::set_name(c"reg-init");
    overwrite_cmdline(INIT_NAME);
}

/// Overwrites this process's command line with `new` (NUL-separated arguments, cut to the
/// space the original took): `/proc/PID/cmdline` reads this memory, between the `arg_start`
/// and `arg_end` of `/proc/self/stat`. False when it could not.
#[allow(unsafe_code)]
pub(crate) fn overwrite_cmdline(new: &[u8]) -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    // Fields after the command name in parentheses (which may itself hold spaces).
    let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return false;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // arg_start and arg_end are fields 48 and 49; `rest` starts at field 3.
    let (Some(Ok(start)), Some(Ok(end))) = (
        f.get(45).map(|s| s.parse::<usize>()),
        f.get(46).map(|s| s.parse::<usize>()),
    ) else {
        return false;
    };
    if end <= start || end - start > 1 << 20 {
        return false;
    }
    let len = end - start;
    // SAFETY: [arg_start, arg_end) is this process's own argument area on its stack, mapped
    // and writable, and nothing of ours reads it any more (std copied the arguments at start).
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
    area.fill(0);
    let n = new.len().min(len.saturating_sub(1));
    area[..n].copy_from_slice(&new[..n]);
    n == new.len()
}

/// Keeps only `keep` in the bounding and inheritable sets (root's effective and permitted
/// sets follow the bounding set at exec).
fn drop_privileges(keep: &[String]) -> Result<(), String> {
    // Only what this process has can be kept (root here may lack some, DESIGN.md §7).
    let have =
        caps::read(None, caps::CapSet::Bounding).map_err(|e| err("reading the bounding set", e))?;
    let keep: caps::CapsHashSet = keep
        .iter()
        .filter_map(|c| c.parse().ok())
        .filter(|c| have.contains(c))
        .collect();
    for c in caps::all() {
        if !keep.contains(&c) {
            caps::drop(None, caps::CapSet::Bounding, c)
                .map_err(|e| err(&format!("dropping {c}"), e))?;
        }
    }
    caps::set(None, caps::CapSet::Inheritable, &keep)
        .map_err(|e| err("setting inheritable capabilities", e))?;
    let _ = caps::clear(None, caps::CapSet::Ambient);
    Ok(())
}

/// docker's default `nofile` limit (1048576), clamped to the hard limit this process has:
/// without CAP_SYS_RESOURCE (DESIGN.md §7) a hard limit can only go down.
fn set_rlimits(extra: &[Rlimit]) -> Result<(), String> {
    use nix::sys::resource::{setrlimit, Resource};
    let want = nofile_limit();
    setrlimit(Resource::RLIMIT_NOFILE, want, want).map_err(|e| err("setting RLIMIT_NOFILE", e))?;
    for l in extra {
        let r = rlimit_resource(&l.name).ok_or_else(|| format!("unknown rlimit {}", l.name))?;
        setrlimit(r, l.soft, l.hard).map_err(|e| err(&format!("setting ulimit {}", l.name), e))?;
    }
    Ok(())
}

/// Last steps before the user's program, shared by a container's init and `exec`:
/// capabilities, rlimits, user, no_new_privs, seccomp, execve.
fn exec(
    id: &str,
    program: &Program,
    args: &[String],
    env: &[String],
    user: Option<&str>,
    security: &SecuritySpec,
    filters: &[seccompiler::BpfProgram],
) -> isize {
    let shown = match program {
        Program::Found(p) => p.display().to_string(),
        Program::NotFound(name) => {
            eprintln!("reg: container {id}: exec: {name:?}: executable file not found in $PATH");
            return 127;
        }
    };
    let mut env = env.to_vec();
    let ids = match user {
        Some(u) => {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
            match resolve_user(u, &passwd, &group) {
                Ok(ids) => Some(ids),
                Err(e) => {
                    eprintln!("reg: container {id}: {e}");
                    return 125;
                }
            }
        }
        None => None,
    };
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = match &ids {
            Some(i) if !i.home.is_empty() => i.home.clone(),
            Some(_) => "/".to_string(),
            None => "/root".to_string(),
        };
        env.push(format!("HOME={home}"));
    }
    let added = if security.group_add.is_empty() {
        Vec::new()
    } else {
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        match resolve_groups(&security.group_add, &group) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("reg: container {id}: {e}");
                return 125;
            }
        }
    };
    let prepared = drop_privileges(&security.caps)
        .and_then(|()| set_rlimits(&security.rlimits))
        .and_then(|()| match &ids {
            Some(i) => {
                let gids: Vec<nix::unistd::Gid> = i
                    .groups
                    .iter()
                    .chain(&added)
                    .map(|g| nix::unistd::Gid::from_raw(*g))
                    .collect();
                nix::unistd::setgroups(&gids)
                    .map_err(|e| err("setgroups", e))
                    .and_then(|()| {
                        nix::unistd::setgid(nix::unistd::Gid::from_raw(i.gid))
                            .map_err(|e| err("setgid", e))
                    })
                    .and_then(|()| {
                        nix::unistd::setuid(nix::unistd::Uid::from_raw(i.uid))
                            .map_err(|e| err("setuid", e))
                    })
            }
            None if added.is_empty() => Ok(()),
            None => {
                let gids: Vec<nix::unistd::Gid> = added
                    .iter()
                    .map(|g| nix::unistd::Gid::from_raw(*g))
                    .collect();
                nix::unistd::setgroups(&gids).map_err(|e| err("setgroups", e))
            }
        })
        .and_then(|()| {
            nix::sys::prctl::set_no_new_privs().map_err(|e| err("setting no_new_privs", e))
        })
        .and_then(|()| only_stdio_across_exec())
        .and_then(|()| seccomp::install(filters).map_err(|e| e.to_string()));
    if let Err(e) = prepared {
        eprintln!("reg: container {id}: {e}");
        return 125;
    }
    let cstr = |s: &str| CString::new(s.as_bytes()).unwrap_or_default();
    let args: Vec<CString> = args.iter().map(|a| cstr(a)).collect();
    let env: Vec<CString> = env.iter().map(|e| cstr(e)).collect();
    let err = nix::unistd::execve(&cstr(&shown), &args, &env).err();
    let code = match err {
        Some(nix::errno::Errno::ENOENT) => 127,
        _ => 126,
    };
    eprintln!(
        "reg: container {id}: exec {shown:?}: {}",
        err.map(|e| e.desc()).unwrap_or("failed")
    );
    code
}

/// Marks every fd above 2 close-on-exec, right before the user's program is executed: it
/// starts with only stdin, stdout and stderr (a terminal is among them), and no descriptor of
/// the runtime — a host procfs handle, a namespace file, a socket of the monitor — survives
/// into the container (CVE-2024-21626). The last fd the runtime needs has been used by then.
#[allow(unsafe_code)]
fn only_stdio_across_exec() -> Result<(), String> {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets a flag on open descriptors;
    // it touches no memory of ours.
    let r = unsafe {
        nix::libc::close_range(
            3,
            u32::MAX,
            nix::libc::CLOSE_RANGE_CLOEXEC as nix::libc::c_int,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: every descriptor that is open, one by one.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| err("listing open descriptors", e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // One that closed meanwhile (the listing's own) answers EBADF: nothing to do.
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    Ok(())
}

/// Joins the container's cgroup and namespaces and runs the command in it; returns its exit
/// code. Runs in a fresh single-threaded process (`reg node enter`), itself started from the
/// sealed binary.
#[allow(unsafe_code)]
pub fn enter(e: &ExecSpec) -> i32 {
    use nix::sched::{setns, CloneFlags as F};
    let fail = |what: String| {
        eprintln!("reg: exec in container {}: {what}", e.id);
        125
    };
    let filters = match &e.security.seccomp {
        Some(p) => match p.compile(&e.security.caps) {
            Ok(f) => f,
            Err(m) => return fail(m.to_string()),
        },
        None => Vec::new(),
    };
    // The resize FIFO is the agent's, on the host: opened before the mount namespace changes
    // (read-write, so it never reads end-of-file; non-blocking, for the relay's poll loop).
    let resize = match (&e.resize, e.tty) {
        (Some(path), true) => {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(path)
            {
                Ok(f) => Some(std::os::fd::OwnedFd::from(f)),
                Err(x) => return fail(format!("the resize FIFO {}: {x}", path.display())),
            }
        }
        _ => None,
    };
    // Open every namespace first: once in the mount namespace, the host's /proc is gone.
    let mut nss = Vec::new();
    for (name, flag) in [
        ("ipc", F::CLONE_NEWIPC),
        ("uts", F::CLONE_NEWUTS),
        ("net", F::CLONE_NEWNET),
        ("pid", F::CLONE_NEWPID),
        ("mnt", F::CLONE_NEWNS),
    ] {
        match std::fs::File::open(format!("/proc/{}/ns/{name}", e.pid)) {
            Ok(f) => nss.push((name, f, flag)),
            Err(err) => {
                return fail(format!(
                    "the container is not running ({name} namespace: {err})"
                ))
            }
        }
    }
    {
        use libcgroups::common::CgroupManager;
        let joined = cgroup_manager(&e.id)
            .and_then(|m| m.add_task(nix::unistd::getpid()).map_err(|x| x.to_string()));
        if let Err(x) = joined {
            return fail(format!("joining the cgroup: {x}"));
        }
    }
    // A container with a user namespace of its own: that one is joined last (the others
    // belong to the host's, which only its root may join).
    let userns = match (
        std::fs::File::open(format!("/proc/{}/ns/user", e.pid)),
        std::fs::metadata("/proc/self/ns/user"),
    ) {
        (Ok(theirs), Ok(ours)) => {
            use std::os::unix::fs::MetadataExt;
            match theirs.metadata() {
                Ok(m) if m.ino() != ours.ino() => Some(std::os::fd::OwnedFd::from(theirs)),
                Ok(_) => None,
                Err(x) => return fail(format!("its user namespace: {x}")),
            }
        }
        (Err(x), _) | (_, Err(x)) => return fail(format!("its user namespace: {x}")),
    };
    for (name, f, flag) in &nss {
        if let Err(x) = setns(f, *flag) {
            return fail(format!("joining the {name} namespace: {x}"));
        }
    }
    drop(nss);
    if let Some(ns) = &userns {
        use std::os::fd::AsFd;
        if let Err(x) = super::userns::join(ns.as_fd()) {
            return fail(format!("joining the user namespace: {x}"));
        }
    }
    let console = if e.tty {
        match console_socket() {
            Ok(pair) => Some(pair),
            Err(x) => return fail(format!("console socket: {x}")),
        }
    } else {
        None
    };
    // The pid namespace applies to children: fork one that lives in the container.
    // SAFETY: this process is single-threaded (a fresh `reg node enter`), so the child may
    // run arbitrary code after fork.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            if let Err(x) = rootfs::enter_workdir(&e.cwd, false) {
                eprintln!("reg: exec in container {}: {}", e.id, x.message);
                std::process::exit(x.code as i32);
            }
            if let Some((_, theirs)) = &console {
                if let Err(x) = terminal(theirs.as_raw_fd(), e.tty_size) {
                    eprintln!("reg: exec in container {}: {x}", e.id);
                    std::process::exit(125);
                }
            }
            let code = match find_program(&e.args, &e.env) {
                Ok(p) => exec(
                    &e.id,
                    &p,
                    &e.args,
                    &e.env,
                    e.user.as_deref(),
                    &e.security,
                    &filters,
                ),
                Err(x) => {
                    eprintln!("reg: exec in container {}: {x}", e.id);
                    125
                }
            };
            std::process::exit(code as i32);
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            // With a terminal, relay: our stdin → its master → our stdout. No threads: after
            // setns into a pid namespace this process may not create any (EINVAL), so a poll loop.
            if let Some((ours, theirs)) = console {
                drop(theirs);
                if let Some(master) = receive_fd(&ours) {
                    relay(&master, e.interactive, resize.as_ref());
                }
            }
            let code = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => break code,
                    Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(x) => return fail(format!("wait: {x}")),
                }
            };
            code
        }
        Err(x) => fail(format!("fork: {x}")),
    }
}
