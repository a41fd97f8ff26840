//! User namespaces (`--userns=auto`, the node's `userns_remap`): the container's root is an
//! unprivileged id of a subordinate range on the host.
//!
//! The shared layer snapshots are not copied or chowned (docker's remap keeps a chowned copy of
//! the whole image store): each lower layer is an **idmapped mount** (`mount_setattr` with
//! `MOUNT_ATTR_IDMAP`) of its snapshot, so a file owned by host id N shows as owned by
//! `base + N`, which the container's namespace maps back to N. The init does all its mounting
//! as the host's root, then joins the user namespace just before it execs, so the container's
//! processes hold capabilities only in their own namespace.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Ids `0..size` inside the container are host ids `uid..uid+size` (and `gid..gid+size`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMap {
    pub uid: u32,
    pub gid: u32,
    pub size: u32,
}

impl IdMap {
    /// A host id for container id `id` (`None`: outside the range).
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        (id < self.size).then(|| self.uid + id)
    }

    pub fn host_gid(&self, id: u32) -> Option<u32> {
        (id < self.size).then(|| self.gid + id)
    }

    /// Host uid `id` as the container sees it (one outside the range as it is).
    pub fn container_uid(&self, id: u32) -> u32 {
        inside(id, self.uid, self.size)
    }

    pub fn container_gid(&self, id: u32) -> u32 {
        inside(id, self.gid, self.size)
    }
}

fn inside(id: u32, base: u32, size: u32) -> u32 {
    if (base..base.saturating_add(size)).contains(&id) {
        id - base
    } else {
        id
    }
}

/// A user namespace with `map`, held by the returned fd (the process that made it is gone).
/// Must be called while the process is single-threaded.
#[allow(unsafe_code)]
pub fn make(map: &IdMap) -> std::io::Result<OwnedFd> {
    let (hold_r, hold_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (hold_raw, hold_w_raw) = (hold_r.as_raw_fd(), hold_w.as_raw_fd());
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: single-threaded caller; the child runs on its own copy of `stack` (no CLONE_VM)
    // and only blocks on a read, then exits.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(move || {
                // Our copy of the write end goes, so the parent's closing it ends the read.
                let _ = nix::unistd::close(hold_w_raw);
                let mut b = [0u8; 1];
                let _ = nix::unistd::read(hold_raw, &mut b);
                0
            }),
            &mut stack,
            nix::sched::CloneFlags::CLONE_NEWUSER,
            Some(nix::sys::signal::Signal::SIGCHLD as i32),
        )
    }?;
    drop(hold_r);
    let made = (|| {
        let proc = format!("/proc/{pid}");
        std::fs::write(
            format!("{proc}/uid_map"),
            format!("0 {} {}\n", map.uid, map.size),
        )?;
        std::fs::write(
            format!("{proc}/gid_map"),
            format!("0 {} {}\n", map.gid, map.size),
        )?;
        std::fs::File::open(format!("{proc}/ns/user")).map(OwnedFd::from)
    })();
    drop(hold_w);
    let _ = nix::sys::wait::waitpid(pid, None);
    made
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Mounts `source` (a directory of ours: a layer snapshot) at `target`, idmapped by `userns`.
#[allow(unsafe_code)]
pub fn idmapped_bind(source: &Path, target: &Path, userns: BorrowedFd<'_>) -> std::io::Result<()> {
    use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};
    let tree = open_tree(
        rustix::fs::CWD,
        source,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: a valid fd, an empty NUL-terminated path, and a pointer to a live `mount_attr`
    // of the size passed.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_mount_setattr,
            tree.as_fd().as_raw_fd(),
            c"".as_ptr(),
            nix::libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    move_mount(
        tree.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// Joins the user namespace `userns` and becomes its root (uid and gid 0, no groups): the last
/// step of the init (and of `exec`) before the user's program. Single-threaded callers only.
pub fn join(userns: BorrowedFd<'_>) -> std::io::Result<()> {
    nix::sched::setns(userns, nix::sched::CloneFlags::CLONE_NEWUSER)?;
    let root_g = nix::unistd::Gid::from_raw(0);
    let root_u = nix::unistd::Uid::from_raw(0);
    nix::unistd::setgroups(&[])?;
    nix::unistd::setresgid(root_g, root_g, root_g)?;
    nix::unistd::setresuid(root_u, root_u, root_u)?;
    Ok(())
}

/// A `node.userns_remap` value that names no usable range.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error("node.userns_remap {0:?}: use a user with entries in /etc/subuid and /etc/subgid, or BASE:SIZE")]
    Malformed(String),
    #[error(
        "node.userns_remap {user:?}: no entry for it in {file} (add a line `{user}:100000:65536`)"
    )]
    NoEntry { user: String, file: &'static str },
    #[error("node.userns_remap: reading {file}: {source}")]
    Read {
        file: &'static str,
        source: std::io::Error,
    },
    #[error("node.userns_remap {0:?}: the range must start above 0 and not wrap around")]
    Unsafe(String),
}

/// The node's subordinate range from `node.userns_remap`: `""` none; `BASE:SIZE` those ids
/// (uids and gids alike); a user name its first ranges in `/etc/subuid` and `/etc/subgid`.
pub fn node_range(setting: &str) -> Result<Option<IdMap>, RangeError> {
    let setting = setting.trim();
    if setting.is_empty() {
        return Ok(None);
    }
    let map = if let Some((base, size)) = setting.split_once(':') {
        let n = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| RangeError::Malformed(setting.to_string()))
        };
        let (base, size) = (n(base)?, n(size)?);
        IdMap {
            uid: base,
            gid: base,
            size,
        }
    } else {
        let first = |file: &'static str| -> Result<(u32, u32), RangeError> {
            let text = std::fs::read_to_string(file)
                .map_err(|source| RangeError::Read { file, source })?;
            text.lines()
                .filter_map(|l| {
                    let mut f = l.trim().split(':');
                    let (who, start, count) = (f.next()?, f.next()?, f.next()?);
                    (who == setting).then_some(())?;
                    Some((start.parse().ok()?, count.parse().ok()?))
                })
                .next()
                .ok_or_else(|| RangeError::NoEntry {
                    user: setting.to_string(),
                    file,
                })
        };
        let (uid, usize_) = first("/etc/subuid")?;
        let (gid, gsize) = first("/etc/subgid")?;
        IdMap {
            uid,
            gid,
            size: usize_.min(gsize),
        }
    };
    // Never the host's own root, and no wrap-around past the last id.
    if map.uid == 0
        || map.gid == 0
        || map.uid.checked_add(map.size).is_none()
        || map.gid.checked_add(map.size).is_none()
    {
        return Err(RangeError::Unsafe(setting.to_string()));
    }
    Ok(Some(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ranges_are_explicit_or_from_subuid_and_never_include_root() {
        assert_eq!(node_range("").expect("none"), None);
        assert_eq!(
            node_range("100000:131072").expect("range"),
            Some(IdMap {
                uid: 100_000,
                gid: 100_000,
                size: 131_072
            })
        );
        assert!(node_range("0:65536").is_err());
        assert!(node_range("4294967000:65536").is_err());
        assert!(node_range("a:b").is_err());
        assert_eq!(
            IdMap {
                uid: 5,
                gid: 7,
                size: 2
            }
            .host_uid(2),
            None
        );
    }
}
