//! The container's root filesystem, made by its init before `pivot_root` (and its upper dir
//! cleaned after a build step): the overlay of the image's snapshots, `/proc`, `/sys`, a fresh
//! `/dev`, the `/etc` files, volumes, bind mounts and views, docker's masked and read-only
//! paths, the working directory.
//!
//! Everything here works on a tree whose content came from an image or a container. The rule
//! (ARCHITECTURE.md, "Invariants"): every path in it is resolved *inside* it through
//! [`reg_untrusted::Tree`] (openat2 `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`), every mount lands
//! on the resolved inode (`/proc/self/fd/N`), metadata changes go through fds. Path-based
//! `std::fs` calls are denied in this module by clippy (`node/clippy.toml`); the few on paths
//! of ours (the container's own directory, the host's resolv.conf) carry a narrow allow.
#![deny(clippy::disallowed_methods)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::makedev;

use super::spec::{view_dir, BindMount, Spec};
use super::sys::{err, find_program, loopback_up, Program, Ready};
use super::userns::IdMap;

/// Docker's default masked paths (hidden behind /dev/null or an empty read-only tmpfs).
pub(crate) const MASKED: [&str; 11] = [
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
pub(crate) const READONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// How the init failed before exec: docker's 125, or 126 for a working directory it refuses.
#[derive(Debug)]
pub(crate) struct SetupError {
    pub code: isize,
    pub message: String,
}

impl From<String> for SetupError {
    fn from(message: String) -> Self {
        SetupError { code: 125, message }
    }
}

/// Mounts `what` onto exactly the inode behind `at` (resolved inside the rootfs), never onto a
/// path a racing process could have swapped meanwhile.
fn mount_on(
    source: Option<&Path>,
    at: &reg_untrusted::Handle,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    mount(source, &reg_untrusted::fd_path(at), fstype, flags, data)
}

/// `userns`: the container's user namespace (its map is `spec.userns`), which the image's
/// layers are idmapped into and what is made here is owned by the root of.
pub(crate) fn setup(
    spec: &Spec,
    ready: &mut Ready,
    userns: Option<BorrowedFd<'_>>,
) -> Result<Program, SetupError> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|e| err("making mounts private", e))?;
    let rootfs = spec.dir.join("rootfs");
    let image_flags = image_mount_flags(spec.security.privileged);
    let idmapped = userns.filter(|_| spec.userns.is_some());
    let upper = if spec.discard_upper {
        Upper::Volatile
    } else {
        Upper::Kept
    };
    overlay_with(
        &spec.dir,
        &spec.layers,
        upper,
        &rootfs,
        image_flags,
        idmapped,
    )
    .map_err(|e| err("mounting the overlay rootfs", e))?;
    // What is made here for the container belongs to its root: the host's, or its range's.
    let (root_uid, root_gid) = spec.userns.map_or((0, 0), |m| (m.uid, m.gid));
    let owned = |data: &str| {
        if spec.userns.is_some() {
            format!("{data},uid={root_uid},gid={root_gid}")
        } else {
            data.to_string()
        }
    };
    // From here on every path in the rootfs (the image's content) resolves inside it.
    let root = reg_untrusted::Tree::open(&rootfs).map_err(|e| err("opening the rootfs", e))?;
    let dir = |rel: &str| {
        root.mkdir_all(rel, 0o755)
            .map_err(|e| err(&format!("creating /{rel}"), e))
    };
    mount_on(
        Some(Path::new("proc")),
        &dir("proc")?,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .map_err(|e| err("mounting /proc", e))?;
    mount_on(
        Some(Path::new("sysfs")),
        &dir("sys")?,
        Some("sysfs"),
        if spec.security.privileged {
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
        } else {
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY
        },
        none,
    )
    .map_err(|e| err("mounting /sys", e))?;
    mount_on(
        Some(Path::new("tmpfs")),
        &dir("dev")?,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some(&owned("mode=755,size=65536k")),
    )
    .map_err(|e| err("mounting /dev", e))?;
    // Device nodes are made once the device cgroup is in force: while the monitor writes its
    // rules (deny all, then allow) an mknod would fail; the mounts above overlapped that.
    if !ready.wait() {
        return Err("the monitor did not put the container into its cgroup"
            .to_string()
            .into());
    }
    // /dev is now our own fresh tmpfs: nothing of the image's is in it.
    let dev = root.subtree("dev").map_err(|e| err("opening /dev", e))?;
    for (name, major, minor) in DEFAULT_DEVICES {
        dev.mknod(name, reg_untrusted::Node::Char { major, minor }, 0o666)
            .and_then(|()| match spec.userns {
                Some(_) => dev
                    .resolve_nofollow(name)
                    .and_then(|h| reg_untrusted::set_owner(&h, root_uid, root_gid)),
                None => Ok(()),
            })
            .map_err(|e| err(&format!("creating /dev/{name}"), e))?;
    }
    for d in &spec.security.devices {
        let rel = d.path.trim_start_matches("/dev/");
        if let Some(parent) = Path::new(rel).parent() {
            dev.mkdir_all(parent, 0o755)
                .map_err(|e| err(&format!("creating {}", d.path), e))?;
        }
        let node = if d.block {
            reg_untrusted::Node::Block {
                major: d.major,
                minor: d.minor,
            }
        } else {
            reg_untrusted::Node::Char {
                major: d.major,
                minor: d.minor,
            }
        };
        // Owners are the container's ids: on the host, within its range.
        let (uid, gid) = match spec.userns {
            Some(m) => (
                m.host_uid(d.uid).unwrap_or(root_uid),
                m.host_gid(d.gid).unwrap_or(root_gid),
            ),
            None => (d.uid, d.gid),
        };
        dev.mknod(rel, node, d.mode)
            .and_then(|()| dev.resolve_nofollow(rel))
            .and_then(|h| reg_untrusted::set_owner(&h, uid, gid))
            .map_err(|e| err(&format!("creating {}", d.path), e))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        dev.symlink(link, target)
            .map_err(|e| err(&format!("creating /dev/{link}"), e))?;
    }
    let dev_dir = |rel: &str| {
        dev.mkdir_all(rel, 0o755)
            .map_err(|e| err(&format!("creating /dev/{rel}"), e))
    };
    mount_on(
        Some(Path::new("devpts")),
        &dev_dir("pts")?,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(&owned("newinstance,ptmxmode=0666,mode=0620")),
    )
    .map_err(|e| err("mounting /dev/pts", e))?;
    mount_on(
        Some(Path::new("shm")),
        &dev_dir("shm")?,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(&owned(&format!(
            "mode=1777,size={}",
            spec.shm_size.unwrap_or(DEFAULT_SHM_SIZE)
        ))),
    )
    .map_err(|e| err("mounting /dev/shm", e))?;
    drop(dev);
    // Its cgroup is made by now (`ready` came): /sys/fs/cgroup shows it, and only it.
    mount_own_cgroups(&root, &spec.id, spec.security.privileged)?;

    // Only in a UTS namespace of its own: the host's (or another container's) keeps its name.
    if spec.uts_ns.is_private() {
        nix::unistd::sethostname(&spec.hostname).map_err(|e| err("setting the hostname", e))?;
    }
    etc_files(spec, &root)?;
    if let Some(m) = &spec.userns {
        // The files are the node's (in the container's directory); their bind mounts show them.
        for name in ETC_FILES {
            #[allow(clippy::disallowed_methods)] // trusted: the container's own directory
            std::os::unix::fs::lchown(spec.dir.join(name), Some(m.uid), Some(m.gid))
                .map_err(|e| err(&format!("giving /etc/{name} to the container's root"), e))?;
        }
    }
    // Bind mounts, views and tmpfs mounts, shallowest target first (a volume inside a tmpfs
    // lands on the tmpfs, not under it); a stable sort keeps the given order among equals.
    enum Mount<'a> {
        Bind(usize, &'a BindMount),
        Tmpfs(&'a super::spec::Tmpfs),
    }
    let depth = |t: &str| t.split('/').filter(|c| !c.is_empty()).count();
    let mut all: Vec<(usize, Mount)> = spec
        .mounts
        .iter()
        .enumerate()
        .map(|(k, m)| (depth(&m.target), Mount::Bind(k, m)))
        .chain(
            spec.tmpfs
                .iter()
                .map(|t| (depth(&t.target), Mount::Tmpfs(t))),
        )
        .collect();
    all.sort_by_key(|(d, _)| *d);
    for (_, m) in all {
        match m {
            Mount::Bind(_, m) if m.layers.is_empty() => bind(&root, m, spec.userns.as_ref())?,
            Mount::Bind(k, m) => view(&root, &view_dir(&spec.dir, k), m)?,
            Mount::Tmpfs(t) => {
                let at = root
                    .mkdir_all(t.target.trim_start_matches('/'), 0o755)
                    .map_err(|e| err(&format!("creating {}", t.target), e))?;
                // Owned by the container's root unless the options name an owner.
                let data =
                    if spec.userns.is_some() && !t.data.split(',').any(|o| o.starts_with("uid=")) {
                        owned(&t.data).trim_start_matches(',').to_string()
                    } else {
                        t.data.clone()
                    };
                mount_on(
                    Some(Path::new("tmpfs")),
                    &at,
                    Some("tmpfs"),
                    MsFlags::from_bits_truncate(t.flags),
                    Some(data.as_str()).filter(|d| !d.is_empty()),
                )
                .map_err(|e| err(&format!("mounting a tmpfs at {}", t.target), e))?;
            }
        }
    }

    // pivot_root(".", ".") with the new root as working directory (as runc does): no
    // directory of the image's is needed for the old root, which is then detached from ".".
    nix::unistd::fchdir(root.root_fd().as_raw_fd()).map_err(|e| err("entering the rootfs", e))?;
    drop(root);
    nix::unistd::pivot_root(".", ".").map_err(|e| err("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| err("detaching the old root", e))?;
    set_sysctls(&spec.sysctls)?;
    if !spec.security.privileged {
        mask_and_protect()?;
    }
    if spec.read_only {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | image_flags;
        mount(none, "/", none, flags, none)
            .map_err(|e| err("making the root filesystem read-only", e))?;
    }
    if spec.network != "host" {
        loopback_up().map_err(|e| err("bringing up lo", e))?;
    }
    enter_workdir(&spec.cwd, true)?;
    Ok(find_program(&spec.args, &spec.env)?)
}

/// `/sys/fs/cgroup` as docker gives it: a tmpfs with, for each hierarchy of the host, the
/// container's own cgroup directory bound at the hierarchy's name (`memory`, `cpu`, … on v1;
/// the directory itself on a unified host, `unified` on a hybrid one), read-only unless
/// privileged. Programs that size themselves from their limits (JVMs, Go, Node) read them
/// there. Runs before `pivot_root`: the host's hierarchies are still at /sys/fs/cgroup, and
/// this process is already in its cgroup (`/proc/self/cgroup` names it).
/// A hierarchy where the container has no cgroup of its own (its path there is not
/// `…/<id>`) is left out: it would show the agent's, or the host's root.
#[allow(clippy::disallowed_methods)] // trusted: the host's /proc and /sys/fs/cgroup (before pivot_root)
fn mount_own_cgroups(root: &reg_untrusted::Tree, id: &str, privileged: bool) -> Result<(), String> {
    let own_path = |p: &str| p.trim_end_matches('/').ends_with(&format!("/{id}"));
    let none: Option<&str> = None;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| err("reading /proc/self/cgroup", e))?;
    let host = Path::new("/sys/fs/cgroup");
    let unified = host.join("cgroup.controllers").exists();
    let Ok(at) = root.resolve_nofollow("sys/fs/cgroup") else {
        return Ok(()); // a sysfs without fs/cgroup: nothing to show
    };
    let ro = if privileged {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if unified {
        // The whole view is the container's own directory.
        let Some(path) = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .filter(|p| own_path(p))
        else {
            return Ok(());
        };
        let source = host.join(path.trim_start_matches('/'));
        mount_on(
            Some(&source),
            &at,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )
        .map_err(|e| err("binding the container's cgroup", e))?;
        let mounted = root
            .resolve_nofollow("sys/fs/cgroup")
            .map_err(|e| err("/sys/fs/cgroup", e))?;
        return mount_on(
            None,
            &mounted,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | ro,
            none,
        )
        .map_err(|e| err("making /sys/fs/cgroup read-only", e));
    }
    mount_on(
        Some(Path::new("tmpfs")),
        &at,
        Some("tmpfs"),
        flags,
        Some("mode=755"),
    )
    .map_err(|e| err("mounting /sys/fs/cgroup", e))?;
    let cg = root
        .subtree("sys/fs/cgroup")
        .map_err(|e| err("/sys/fs/cgroup", e))?;
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(ctls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let name = if ctls.is_empty() {
            "unified"
        } else {
            ctls.trim_start_matches("name=")
        };
        let source = host.join(name).join(path.trim_start_matches('/'));
        if name.is_empty() || name.contains('/') || !own_path(path) || !source.is_dir() {
            continue;
        }
        let target = cg
            .mkdir_all(name, 0o755)
            .map_err(|e| err(&format!("creating /sys/fs/cgroup/{name}"), e))?;
        mount_on(Some(&source), &target, none, MsFlags::MS_BIND, none)
            .map_err(|e| err(&format!("binding the container's {name} cgroup"), e))?;
        let mounted = cg
            .resolve_nofollow(name)
            .map_err(|e| err(&format!("/sys/fs/cgroup/{name}"), e))?;
        mount_on(
            None,
            &mounted,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | ro,
            none,
        )
        .map_err(|e| err(&format!("making /sys/fs/cgroup/{name} read-only"), e))?;
    }
    // The host's combined names (`cpu,cpuacct` → `cpu` and `cpuacct`) as docker's links.
    for (link, to) in [("cpu,cpuacct", "cpu"), ("net_cls,net_prio", "net_cls")] {
        if cg.symlink_metadata(to).ok().flatten().is_some()
            && cg.symlink_metadata(link).ok().flatten().is_none()
            && host.join(link).exists()
        {
            let _ = cg.symlink(link, to);
        }
    }
    drop(cg);
    let mounted = root
        .resolve_nofollow("sys/fs/cgroup")
        .map_err(|e| err("/sys/fs/cgroup", e))?;
    mount_on(
        None,
        &mounted,
        none,
        MsFlags::MS_REMOUNT | flags | ro,
        Some("mode=755"),
    )
    .map_err(|e| err("making /sys/fs/cgroup read-only", e))
}

/// docker's `/dev/shm` size without `--shm-size`: 64 MiB.
pub(crate) const DEFAULT_SHM_SIZE: i64 = 64 << 20;

/// Writes `--sysctl`s into the container's own `/proc/sys` (after `pivot_root`, before it is
/// made read-only). The names were checked at create to be namespaced ones.
fn set_sysctls(sysctls: &[(String, String)]) -> Result<(), String> {
    if sysctls.is_empty() {
        return Ok(());
    }
    let sys = reg_untrusted::Tree::open("/proc/sys").map_err(|e| err("opening /proc/sys", e))?;
    for (k, v) in sysctls {
        let rel = k.replace('.', "/");
        sys.write_existing(&rel, v.as_bytes())
            .map_err(|e| err(&format!("setting sysctl {k}={v}"), e))?;
    }
    Ok(())
}

/// The device nodes every container gets in its /dev (docker's defaults; the device cgroup
/// allows exactly these, see [`super::cgroup::device_rules`]).
const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Changes into the working directory `cwd` of the container whose root is now `/`: resolved
/// inside that root (a symlink the container planted, `..`, or a magic link such as
/// `/proc/self/fd/N` cannot lead out of it), entered through the resolved fd, then checked: a
/// working directory outside the root is refused with 126, as runc and docker do
/// (CVE-2024-21626). `create` makes it when missing (`run -w`, `WORKDIR`); `exec -w` does not.
pub(crate) fn enter_workdir(cwd: &str, create: bool) -> Result<(), SetupError> {
    let cwd = if cwd.is_empty() { "/" } else { cwd };
    let refuse = |why: String| SetupError {
        code: 126,
        message: format!("working directory {cwd:?}: {why}"),
    };
    let root = reg_untrusted::Tree::open("/").map_err(|e| refuse(e.to_string()))?;
    let h = if create {
        root.mkdir_all(cwd, 0o755)
    } else {
        root.resolve(cwd)
    }
    .map_err(|e| {
        if reg_untrusted::is_symlink_refusal(&e)
            || reg_untrusted::errno(&e) == Some(nix::libc::EXDEV)
        {
            refuse("it leads outside the container".into())
        } else {
            refuse(e.to_string())
        }
    })?;
    nix::unistd::fchdir(h.as_fd().as_raw_fd()).map_err(|e| refuse(e.to_string()))?;
    // The kernel names a directory outside our root "(unreachable)/…".
    match nix::unistd::getcwd() {
        Ok(p) if p.is_absolute() => Ok(()),
        Ok(_) => Err(refuse("it is outside the container".into())),
        Err(e) => Err(refuse(e.to_string())),
    }
}

/// Bind-mounts a volume or host path into the rootfs (before `pivot_root`); the target is
/// resolved (and made) inside the rootfs and the mount lands on the resolved inode.
/// `userns`: the container's range, whose root a volume that still belongs to the host's root
/// is given to (as docker's remap makes its volumes); host paths keep their owners.
fn bind(root: &reg_untrusted::Tree, m: &BindMount, userns: Option<&IdMap>) -> Result<(), String> {
    let none: Option<&str> = None;
    let what = format!("mounting {} at {}", m.source.display(), m.target);
    // The source is a host path the user named, or a volume's directory of ours.
    #[allow(clippy::disallowed_methods)]
    let src_meta = std::fs::metadata(&m.source).map_err(|e| err(&what, e))?;
    if let (Some(map), true) = (userns, m.copy_up && src_meta.is_dir()) {
        use std::os::unix::fs::MetadataExt;
        if src_meta.uid() == 0 && src_meta.gid() == 0 {
            // The volume's own top directory (through its fd: nothing inside is followed).
            reg_untrusted::Tree::open(&m.source)
                .and_then(|vol| reg_untrusted::set_owner(&vol.root_fd(), map.uid, map.gid))
                .map_err(|e| err(&what, e))?;
        }
    }
    if m.copy_up && src_meta.is_dir() {
        copy_up(root, m).map_err(|e| {
            err(
                &format!("copying the image's {} into its volume", m.target),
                e,
            )
        })?;
    }
    let target = if src_meta.is_dir() {
        root.mkdir_all(&m.target, 0o755)
            .map_err(|e| err(&what, e))?
    } else {
        match root.resolve(&m.target) {
            Ok(h) => h,
            Err(e) if reg_untrusted::is_not_found(&e) => {
                let rel = Path::new(&m.target);
                if let Some(parent) = rel.parent() {
                    root.mkdir_all(parent, 0o755).map_err(|e| err(&what, e))?;
                }
                root.create_file(rel, 0o644).map_err(|e| err(&what, e))?;
                root.resolve(rel).map_err(|e| err(&what, e))?
            }
            Err(e) => return Err(err(&what, e)),
        }
    };
    mount_on(
        Some(&m.source),
        &target,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(|e| err(&what, e))?;
    if m.readonly {
        // The new mount is on top of what `target` names: resolve again to reach it.
        let mounted = root.resolve(&m.target).map_err(|e| err(&what, e))?;
        mount_on(
            None,
            &mounted,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            none,
        )
        .map_err(|e| err(&format!("making {} read-only", m.target), e))?;
    }
    Ok(())
}

/// docker's copy-up: when the volume `m.source` is empty and the image has a directory at
/// `m.target`, the image's tree is copied into the volume first. Both sides are untrusted (the
/// image's content, and a volume another container may be writing into right now): the image
/// side is read inside the rootfs without following symlinks, the volume side is written
/// through a strict tree (any symlink on the way refused, new entries created exclusively,
/// owners and modes set through the new inodes), so nothing lands outside the volume.
fn copy_up(root: &reg_untrusted::Tree, m: &BindMount) -> std::io::Result<()> {
    let from = match root.symlink_metadata(&m.target)? {
        Some(meta) if meta.is_dir() => root.subtree(&m.target)?,
        _ => return Ok(()),
    };
    let to = reg_untrusted::Tree::open_strict(&m.source)?;
    if !to.read_dir("")?.is_empty() {
        return Ok(());
    }
    let mut budget = COPY_UP_MAX_ENTRIES;
    copy_dir(&from, &to, Path::new(""), 0, &mut budget)?;
    // The volume's own root takes the image directory's owner and mode.
    let src = from.resolve("")?;
    let meta = reg_untrusted::metadata(&src)?;
    let dst = to.resolve("")?;
    use std::os::unix::fs::MetadataExt;
    reg_untrusted::set_owner(&dst, meta.uid(), meta.gid())?;
    reg_untrusted::set_mode(&dst, meta.mode())
}

/// Bounds of a copy-up: an image's directory deeper or larger than this is an error, not a
/// stack overflow or an endless copy.
const COPY_UP_MAX_DEPTH: usize = 256;

const COPY_UP_MAX_ENTRIES: usize = 1_000_000;

fn copy_dir(
    from: &reg_untrusted::Tree,
    to: &reg_untrusted::Tree,
    rel: &Path,
    depth: usize,
    budget: &mut usize,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if depth > COPY_UP_MAX_DEPTH {
        return Err(std::io::Error::other(format!(
            "{}: more than {COPY_UP_MAX_DEPTH} directory levels",
            rel.display()
        )));
    }
    for name in from.read_dir(rel)? {
        *budget = budget.checked_sub(1).ok_or_else(|| {
            std::io::Error::other(format!("more than {COPY_UP_MAX_ENTRIES} entries"))
        })?;
        let child = rel.join(&name);
        let Some(meta) = from.symlink_metadata(&child)? else {
            continue; // gone meanwhile
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            to.mkdir(&child, 0o700)?;
            copy_dir(from, to, &child, depth + 1, budget)?;
        } else if kind.is_file() {
            let mut src = from.open_file_nofollow(&child)?;
            let mut dst = to.create_file(&child, 0o600)?;
            std::io::copy(&mut src, &mut dst)?;
        } else if kind.is_symlink() {
            to.symlink(&child, from.read_link(&child)?)?;
        } else {
            continue; // sockets, FIFOs and devices are left out, as docker does
        }
        let dst = to.resolve_nofollow(&child)?;
        reg_untrusted::set_owner(&dst, meta.uid(), meta.gid())?;
        reg_untrusted::set_mode(&dst, meta.mode())?;
    }
    Ok(())
}

/// Mounts the merged view `m` into the rootfs (before `pivot_root`): an overlay of its layers,
/// read-only, or with an upper dir in `dir` that goes away with the container.
fn view(root: &reg_untrusted::Tree, dir: &Path, m: &BindMount) -> Result<(), String> {
    let what = format!("mounting a view at {}", m.target);
    // The view's dir is ours, in the container's directory; std's remove_dir_all never
    // follows a symlink a container left in an upper dir there.
    #[allow(clippy::disallowed_methods)]
    let _ = std::fs::remove_dir_all(dir);
    let target = root
        .mkdir_all(&m.target, 0o755)
        .map_err(|e| err(&what, e))?;
    // A view is image content too (build steps, never privileged).
    overlay_with(
        dir,
        &m.layers,
        if m.readonly {
            Upper::None
        } else {
            Upper::Volatile
        },
        &reg_untrusted::fd_path(&target),
        image_mount_flags(false),
        None,
    )
    .map_err(|e| err(&what, e))
}

/// Extra flags for overlays of image content: without a device cgroup to keep them closed (a
/// cgroup v2 host, see `runtime::device_filter_available`), an image's device nodes must not
/// open at all, unless the container is privileged.
fn image_mount_flags(privileged: bool) -> MsFlags {
    if privileged || super::sys::device_filter_available() {
        MsFlags::empty()
    } else {
        MsFlags::MS_NODEV
    }
}

/// An overlay's upper dir.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Upper {
    /// None: the overlay is read-only.
    None,
    /// Kept across host crashes: unmounting syncs the host filesystem under it.
    Kept,
    /// Thrown away with the container (`--rm`, a view): mounted `volatile` where the kernel
    /// has it (5.10+), so its unmount does not sync.
    Volatile,
}

/// Mounts an overlay of `layers` (bottom first) at `target`, with `dir/upper` as its upper dir
/// (see [`Upper`]), or read-only. Leaves the working directory at `dir`.
///
/// The mount data is limited to one page: long snapshot paths would cap an image at a few dozen
/// layers. So each layer gets a short symlink `dir/l/N`, and the overlay is mounted with paths
/// relative to `dir` (the kernel takes up to 500 layers).
/// `extra`: more mount flags (`MS_NODEV` where no device cgroup keeps devices closed).
#[allow(clippy::disallowed_methods)] // trusted: `dir` is the container's own directory, ours
/// `idmapped`: each layer is mounted idmapped into this user namespace first (under `dir/m`,
/// detached again once the overlay holds it), so the image's files belong to its ids.
fn overlay_with(
    dir: &Path,
    layers: &[PathBuf],
    upper: Upper,
    target: &Path,
    extra: MsFlags,
    idmapped: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let links = dir.join("l");
    let _ = std::fs::remove_dir_all(&links);
    std::fs::create_dir_all(&links)?;
    let mut layers = layers.to_vec();
    // overlayfs wants one lower dir with an upper dir, two without (FROM scratch has none).
    let needed: usize = if upper == Upper::None { 2 } else { 1 };
    for i in 0..needed.saturating_sub(layers.len()) {
        let empty = dir.join(format!("empty{i}"));
        std::fs::create_dir_all(&empty)?;
        layers.insert(0, empty);
    }
    let mapped = dir.join("m");
    let mut staged = Vec::new();
    if let Some(ns) = idmapped {
        std::fs::create_dir_all(&mapped)?;
        for (i, l) in layers.iter().enumerate() {
            let at = mapped.join(i.to_string());
            std::fs::create_dir_all(&at)?;
            super::userns::idmapped_bind(l, &at, ns)?;
            staged.push(at);
        }
    }
    for (i, l) in layers.iter().enumerate() {
        std::os::unix::fs::symlink(staged.get(i).unwrap_or(l), links.join(i.to_string()))?;
    }
    let lower: Vec<String> = (0..layers.len()).rev().map(|i| format!("l/{i}")).collect();
    let mut data = format!("lowerdir={}", lower.join(":"));
    let mut flags = MsFlags::MS_RDONLY;
    if upper != Upper::None {
        for d in ["upper", "work"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        data.push_str(",upperdir=upper,workdir=work");
        flags = MsFlags::empty();
    }
    nix::unistd::chdir(dir)?;
    // A volatile overlay leaves this mark, and refuses to mount over it again (after a crash,
    // its upper dir may be torn): such an upper dir is thrown away anyway.
    let _ = std::fs::remove_dir(dir.join("work/work/incompat/volatile"));
    let mounted = if upper == Upper::Volatile {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            flags | extra,
            Some(format!("{data},volatile").as_str()),
        )
    } else {
        Err(nix::errno::Errno::EINVAL)
    };
    // EINVAL: a kernel without `volatile` (before 5.10) — the overlay syncs, as it always did.
    if let Err(nix::errno::Errno::EINVAL) = mounted {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            flags | extra,
            Some(data.as_str()),
        )?;
    } else {
        mounted?;
    }
    // The overlay keeps private clones of its layers' mounts.
    for at in staged {
        umount2(&at, MntFlags::MNT_DETACH)?;
    }
    Ok(())
}

/// The contents of `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` for `spec`.
#[allow(clippy::disallowed_methods)] // trusted: the host's own /etc/resolv.conf
pub(crate) fn etc_contents(spec: &Spec) -> [(&'static str, String); 3] {
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let host_network = spec.network == "host";
    // Loopback resolvers of the host mean nothing inside the container's own network.
    let resolv: String = host_resolv
        .lines()
        .filter(|l| {
            host_network
                || !(l.starts_with("nameserver") && (l.contains(" 127.") || l.contains(" ::1")))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let resolv = if spec.dns.is_empty() {
        resolv
    } else {
        let mut r: String = spec
            .dns
            .iter()
            .map(|d| format!("nameserver {d}\n"))
            .collect();
        r.extend(
            host_resolv
                .lines()
                .filter(|l| l.starts_with("search") || l.starts_with("options"))
                .map(|l| format!("{l}\n")),
        );
        r
    };
    let mut hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
        spec.ip.as_deref().unwrap_or("127.0.1.1"),
        spec.hostname
    );
    for l in &spec.extra_hosts {
        hosts.push_str(l);
        hosts.push('\n');
    }
    [
        ("hosts", hosts),
        ("hostname", format!("{}\n", spec.hostname)),
        ("resolv.conf", resolv),
    ]
}

/// The `/etc` files a container gets from its bundle (written by [`crate::runtime::bundle::write`]).
pub(crate) const ETC_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

/// Removes from a finished container's upper dir the mount points `setup` made because the
/// image lacked them (`/proc`, `/sys`, `/dev`, the `/etc` files it binds over, bind-mount
/// targets): for a build step the upper dir becomes a layer, and they are the runtime's, not the
/// step's. Only empty files and directories go; a path any layer has stays.
pub fn remove_mount_points(spec: &Spec) {
    // The upper dir holds what the step wrote: looked at through strict trees only.
    let Ok(upper) = reg_untrusted::Tree::open_strict(spec.dir.join("upper")) else {
        return;
    };
    let layers: Vec<reg_untrusted::Tree> = spec
        .layers
        .iter()
        .filter_map(|l| reg_untrusted::Tree::open_strict(l).ok())
        .collect();
    // A path any layer has, or might have behind a symlink of its own, stays.
    let in_image = |p: &str| {
        layers
            .iter()
            .any(|l| !matches!(l.symlink_metadata(p), Ok(None)))
    };
    let mut paths: Vec<String> = ["dev", "proc", "sys", ".reg-old-root"]
        .iter()
        .map(|p| p.to_string())
        .collect();
    paths.extend(ETC_FILES.iter().map(|f| format!("etc/{f}")));
    paths.extend(
        spec.mounts
            .iter()
            .map(|m| m.target.trim_matches('/').to_string()),
    );
    paths.push("etc".into());
    for p in paths {
        if p.is_empty() || in_image(&p) {
            continue;
        }
        match upper.symlink_metadata(&p) {
            Ok(Some(m)) if m.is_dir() || (m.is_file() && m.len() == 0) => {
                // Fails for a non-empty directory, as it should.
                let _ = upper.remove(&p);
            }
            _ => {}
        }
    }
}

/// Bind-mounts the bundle's `/etc` files over the image's, which stays unchanged. Resolved
/// inside the rootfs: an image whose `/etc` (or `/etc/hosts`) is a symlink cannot point the
/// mounts, or the files made for them, at the host.
fn etc_files(spec: &Spec, root: &reg_untrusted::Tree) -> Result<(), String> {
    root.mkdir_all("etc", 0o755)
        .map_err(|e| err("creating /etc", e))?;
    let none: Option<&str> = None;
    for name in ETC_FILES {
        let src = spec.dir.join(name);
        let rel = format!("etc/{name}");
        let what = |w: &str| format!("{w} /etc/{name}");
        match root.symlink_metadata(&rel) {
            Ok(Some(m)) if m.is_file() => {}
            // A symlink in the image (e.g. resolv.conf -> elsewhere) is replaced by a file.
            Ok(Some(m)) if !m.is_dir() => {
                root.remove(&rel).map_err(|e| err(&what("replacing"), e))?;
                root.create_file(&rel, 0o644)
                    .map_err(|e| err(&what("creating"), e))?;
            }
            Ok(Some(_)) => return Err(format!("/etc/{name} is a directory in the image")),
            Ok(None) => {
                root.create_file(&rel, 0o644)
                    .map_err(|e| err(&what("creating"), e))?;
            }
            Err(e) => return Err(err(&what("looking up"), e)),
        }
        let at = root
            .resolve_nofollow(&rel)
            .map_err(|e| err(&what("looking up"), e))?;
        mount_on(Some(&src), &at, none, MsFlags::MS_BIND, none)
            .map_err(|e| err(&what("mounting"), e))?;
    }
    Ok(())
}

/// Masks and write-protects what docker does in /proc and /sys (after `pivot_root`). Every
/// target is resolved inside the container's root and mounted on through its fd, and the mask
/// source is our own /dev/null, checked to be the null device (CVE-2025-31133: an image's
/// `/dev/null` that is a symlink or a file must not redirect a mask).
fn mask_and_protect() -> Result<(), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let none: Option<&str> = None;
    let root = reg_untrusted::Tree::open("/").map_err(|e| err("opening /", e))?;
    let null = root
        .resolve_nofollow("dev/null")
        .map_err(|e| err("opening /dev/null", e))?;
    let m = reg_untrusted::metadata(&null).map_err(|e| err("opening /dev/null", e))?;
    if !m.file_type().is_char_device() || m.rdev() != makedev(1, 3) {
        return Err("/dev/null is not the null device".into());
    }
    let null_path = reg_untrusted::fd_path(&null);
    for p in MASKED {
        let Ok(at) = root.resolve_nofollow(p) else {
            continue;
        };
        let is_dir = reg_untrusted::metadata(&at).is_ok_and(|m| m.is_dir());
        if is_dir {
            mount_on(
                Some(Path::new("tmpfs")),
                &at,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                none,
            )
            .map_err(|e| err(&format!("masking {p}"), e))?;
        } else {
            mount_on(Some(&null_path), &at, none, MsFlags::MS_BIND, none)
                .map_err(|e| err(&format!("masking {p}"), e))?;
        }
    }
    for p in READONLY {
        let Ok(at) = root.resolve_nofollow(p) else {
            continue;
        };
        let here = reg_untrusted::fd_path(&at);
        mount(
            Some(&here),
            &here,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )
        .map_err(|e| err(&format!("binding {p}"), e))?;
        // The bind is on top of what `at` names: resolve again to reach it.
        let mounted = root
            .resolve_nofollow(p)
            .map_err(|e| err(&format!("binding {p}"), e))?;
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        mount_on(None, &mounted, none, flags, none)
            .map_err(|e| err(&format!("making {p} read-only"), e))?;
    }
    Ok(())
}
