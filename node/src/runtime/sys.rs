//! The runtime's small helpers on the host's and the container's process state: errors with
//! what was being done, the start-up handshake with the init, `$PATH` lookup, the loopback
//! interface, the fd limit, whether the kernel can filter devices.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Whether this host's cgroups can keep devices closed: the v1 `devices` controller (legacy and
/// hybrid hosts). On a unified (v2) host that needs an eBPF device program, which this build
/// does not load (libcgroups' `cgroupsv2_devices` needs libbpf and libelf at build time); there
/// every container instead gets a `nodev` rootfs and no `CAP_MKNOD` (unless `--cap-add MKNOD`
/// or `--privileged`), so the only devices it can open are the ones made in its own `/dev`:
/// docker's defaults and its `--device`s.
pub fn device_filter_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        !matches!(
            libcgroups::common::get_cgroup_setup(),
            Ok(libcgroups::common::CgroupSetup::Unified)
        )
    })
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(crate) fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// The init's side of the pipe on which the monitor says the init is in its cgroup, with the
/// cgroup's limits and device rules applied.
pub(crate) struct Ready {
    fd: std::os::fd::RawFd,
    joined: Option<bool>,
}

impl Ready {
    /// The init's end of the start-up pipe `fd`.
    pub(super) fn new(fd: std::os::fd::RawFd) -> Ready {
        Ready { fd, joined: None }
    }
}

impl Ready {
    /// Waits (once) for the monitor's word; false when it never came.
    pub(crate) fn wait(&mut self) -> bool {
        *self.joined.get_or_insert_with(|| {
            let mut b = [0u8; 1];
            matches!(nix::unistd::read(self.fd, &mut b), Ok(1))
        })
    }
}

/// The executable for `args[0]`: a path as given, else searched in the `PATH` of `env`.
pub(crate) fn find_program(args: &[String], env: &[String]) -> Result<Program, String> {
    let Some(arg0) = args.first() else {
        return Err("no command given and the image has none".into());
    };
    if arg0.contains('/') {
        return Ok(Program::Found(PathBuf::from(arg0)));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    Ok(path
        .split(':')
        .map(|d| Path::new(d).join(arg0))
        .find(|p| p.is_file())
        .map(Program::Found)
        .unwrap_or_else(|| Program::NotFound(arg0.clone())))
}

/// The program a container or an exec runs, looked up in its `$PATH` (inside its root).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Program {
    Found(PathBuf),
    /// Not in any directory of `$PATH`: exit 127 with docker's message, once the process is
    /// otherwise set up.
    NotFound(String),
}

nix::ioctl_read_bad!(get_if_flags, nix::libc::SIOCGIFFLAGS, nix::libc::ifreq);
nix::ioctl_write_ptr_bad!(set_if_flags, nix::libc::SIOCSIFFLAGS, nix::libc::ifreq);

/// Brings up `lo` in the container's network namespace (docker's `none` network has it up).
#[allow(unsafe_code)]
pub(crate) fn loopback_up() -> nix::Result<()> {
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

/// The `nofile` limit containers get: docker's 1048576, or this process's hard limit if lower.
pub fn nofile_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard.min(1_048_576))
        .unwrap_or(1024)
}

/// Whether this host's block I/O controller has a weight to set (`--blkio-weight`): the v1
/// `blkio.weight` (CFQ) or `blkio.bfq.weight` (BFQ), or v2's `io.weight`/`io.bfq.weight`.
pub fn blkio_weight_available() -> bool {
    [
        "/sys/fs/cgroup/blkio/blkio.weight",
        "/sys/fs/cgroup/blkio/blkio.bfq.weight",
        "/sys/fs/cgroup/reg/io.weight",
        "/sys/fs/cgroup/reg/io.bfq.weight",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
}

/// The numbers of block device `path` (a host path).
pub fn block_device(path: &str) -> Result<(u64, u64), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !m.file_type().is_block_device() {
        return Err("not a block device".into());
    }
    Ok((
        nix::sys::stat::major(m.rdev()),
        nix::sys::stat::minor(m.rdev()),
    ))
}
