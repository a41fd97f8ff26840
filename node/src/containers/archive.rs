//! `docker cp` both ways: a path inside a running container as a tar archive (and its stat,
//! in Go's `os.FileMode` layout as docker's CLI reads it), and a tar archive extracted into a
//! directory inside it.
//!
//! The container's files are untrusted (ARCHITECTURE.md, "Invariants"). Everything here goes
//! through a [`reg_untrusted::Tree`] rooted at the container's own view, `/proc/<init>/root`
//! (its rootfs with its volumes and binds as the container sees them): paths resolve inside
//! it, fd-relative, a symlink never leads out; files are opened only once they are known to be
//! regular (device nodes and FIFOs get their header only); owners, modes and times are set
//! through the new inode. The init is pinned by a `/proc/<pid>` directory fd, checked to be
//! the child of this container's monitor, so a reused pid can never hand us another root.
//!
//! Bounded: directories are walked with an explicit stack of streamed listings ([`MAX_DEPTH`]
//! deep at most), file contents and incoming archives are streamed, and the extension headers
//! of an incoming archive (long names, PAX records) may not exceed [`MAX_HEADER_BYTES`] per
//! entry. An archive entry that would climb out of the target directory (`..`, an absolute
//! name, a symlink or hard link pointing above it) is refused before anything of it is made.
//! Never: HTTP types here (the API maps [`ContainerError`]), `std::fs` by path into the tree.

#![deny(clippy::disallowed_methods)]

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

use reg_untrusted::Tree;

use super::error::ContainerError;
use super::service::{Containers, Record};
use crate::runtime::IdMap;

/// How deep a directory walk may go before it is refused.
pub const MAX_DEPTH: usize = 256;
/// The most bytes of extension headers (GNU long names, PAX records) one archive entry may
/// carry: the tar reader holds them in memory.
pub const MAX_HEADER_BYTES: u64 = 1024 * 1024;
/// How many symlinks resolving a link target may follow (the kernel's limit).
const MAX_LINKS: usize = 40;

/// docker's `ContainerPathStat`: what `HEAD`/`GET /containers/{id}/archive` say about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode` bits (type bits high, permissions low).
    pub mode: u32,
    pub mtime: SystemTime,
    /// For a symlink, its target resolved inside the container (absolute); else empty.
    pub link_target: String,
}

/// Go's `os.FileMode` bits (`io/fs`): the type and special bits live at the top of the word.
pub mod go_mode {
    pub const DIR: u32 = 1 << 31;
    pub const SYMLINK: u32 = 1 << 27;
    pub const DEVICE: u32 = 1 << 26;
    pub const NAMED_PIPE: u32 = 1 << 25;
    pub const SOCKET: u32 = 1 << 24;
    pub const SETUID: u32 = 1 << 23;
    pub const SETGID: u32 = 1 << 22;
    pub const CHAR_DEVICE: u32 = 1 << 21;
    pub const STICKY: u32 = 1 << 20;
}

/// A Unix `st_mode` in Go's `os.FileMode` layout, as Go's `os.Lstat` reports it.
pub fn go_file_mode(st_mode: u32) -> u32 {
    use go_mode::*;
    let mut m = st_mode & 0o777;
    m |= match st_mode & libc_s::IFMT {
        libc_s::IFDIR => DIR,
        libc_s::IFLNK => SYMLINK,
        libc_s::IFBLK => DEVICE,
        libc_s::IFCHR => DEVICE | CHAR_DEVICE,
        libc_s::IFIFO => NAMED_PIPE,
        libc_s::IFSOCK => SOCKET,
        _ => 0,
    };
    if st_mode & 0o4000 != 0 {
        m |= SETUID;
    }
    if st_mode & 0o2000 != 0 {
        m |= SETGID;
    }
    if st_mode & 0o1000 != 0 {
        m |= STICKY;
    }
    m
}

/// The file type bits of `st_mode` (POSIX values, the same on every Linux).
mod libc_s {
    pub const IFMT: u32 = 0o170000;
    pub const IFSOCK: u32 = 0o140000;
    pub const IFLNK: u32 = 0o120000;
    pub const IFBLK: u32 = 0o060000;
    pub const IFDIR: u32 = 0o040000;
    pub const IFCHR: u32 = 0o020000;
    pub const IFIFO: u32 = 0o010000;
}

/// A container path as docker reads it: relative to the container's root, cleaned lexically
/// (`..` stops at the root), with the name its archive entries take.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// The path below the root (empty: the root itself).
    rel: PathBuf,
    /// The first component of the archive's entries: the last name, or `.` for `DIR/.` and
    /// the root.
    name: String,
    /// A trailing `/` or `/.`: a final symlink is followed.
    follow: bool,
}

fn target(path: &str) -> Result<Target, ContainerError> {
    if path.is_empty() {
        return Err(ContainerError::Invalid(
            "a container path is required (path=)".into(),
        ));
    }
    if path.contains('\0') {
        return Err(ContainerError::Invalid(format!(
            "container path {path:?} contains a NUL byte"
        )));
    }
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    let dot = path.ends_with("/.") || path == ".";
    let follow = dot || path.ends_with('/');
    let name = match parts.last() {
        Some(last) if !dot => last.to_string_lossy().into_owned(),
        _ => ".".to_string(),
    };
    Ok(Target {
        rel: parts.iter().collect(),
        name,
        follow,
    })
}

/// A running container's view of its files, pinned to its init.
struct View {
    tree: Tree,
    rec: Record,
}

/// The container stopped while its files were being opened.
fn not_running(name: &str) -> ContainerError {
    ContainerError::Conflict(format!(
        "container {name} stopped while its files were opened: try again"
    ))
}

/// The parent pid in `/proc/<pid>/stat` (after the command name, which may hold anything).
fn stat_ppid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Opens the view of running container `key`: `/proc/<init>/root`, through a directory fd of
/// `/proc/<init>` that names that very process (once it is gone, nothing opens through it,
/// whatever reuses the number), checked to be the child of the container's monitor.
/// A container that is not running: its files through an overlay mounted for this view only
/// (see [`stopped_tree`]); `writable` for a copy into it.
fn open_view(cs: &Containers, key: &str, writable: bool) -> Result<View, ContainerError> {
    let rec = cs.resolve(key)?;
    let pid = rec.state.pid;
    if !rec.state.status.is_running() || pid <= 0 {
        let tree = stopped_tree(&rec, writable).map_err(|e| {
            ContainerError::Failed(format!(
                "opening the files of container {} (not running): {e}; if it is starting, \
                 try again once it runs",
                rec.name
            ))
        })?;
        // Still not running: a start racing this view would have failed on the busy upper
        // dir, or shows here.
        let now = cs.resolve(&rec.id)?;
        if now.state.status.is_running() {
            return Err(ContainerError::Conflict(format!(
                "container {} started meanwhile: try again",
                rec.name
            )));
        }
        return Ok(View { tree, rec: now });
    }
    let gone = || not_running(&rec.name);
    let proc_dir = open_proc_dir(pid).map_err(|_| gone())?;
    let is_ours = || -> bool {
        let ppid = read_proc(&proc_dir, "stat")
            .ok()
            .and_then(|s| stat_ppid(&s));
        ppid.is_some_and(|p| p > 0 && p == rec.state.monitor_pid)
            && monitor_names(rec.state.monitor_pid, &rec.id)
    };
    if !is_ours() {
        return Err(gone());
    }
    let tree = open_root(&proc_dir)
        .and_then(|root| Tree::from_dir_fd(root.into(), format!("/proc/{pid}/root")))
        .map_err(|e| {
            ContainerError::Failed(format!("opening the files of container {}: {e}", rec.name))
        })?;
    // Still the same process (the fd answers) and still the container's init by its record.
    let now = cs.resolve(&rec.id)?;
    if !is_ours() || !now.state.status.is_running() || now.state.pid != pid {
        return Err(gone());
    }
    Ok(View { tree, rec: now })
}

/// The files of a container that is not running: an overlay of its image's layers and its own
/// upper dir, made with the new mount API and never attached anywhere (the fd `fsmount` returns
/// is the only way to it, and it goes with the view). Read-only with the upper dir as one more
/// layer, so nothing else needs its work dir; `writable`: over its upper and work dirs (a start
/// meanwhile fails until the copy is done, as the kernel refuses a second user of them).
fn stopped_tree(rec: &Record, writable: bool) -> io::Result<Tree> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
        MountAttrFlags,
    };
    let dir = &rec.spec.dir;
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    // `lowerdir+` (one layer each, no length limit), the top layer first.
    let mut lowers: Vec<PathBuf> = rec.spec.layers.iter().rev().cloned().collect();
    if !writable {
        lowers.insert(0, dir.join("upper"));
    }
    // overlayfs wants one lower layer with an upper dir, two without (FROM scratch has none).
    let needed: usize = if writable { 1 } else { 2 };
    for i in 0..needed.saturating_sub(lowers.len()) {
        let empty = dir.join(format!("empty{i}"));
        #[allow(clippy::disallowed_methods)] // trusted: the container's own directory
        std::fs::create_dir_all(&empty)?;
        lowers.push(empty);
    }
    for l in &lowers {
        fsconfig_set_string(&fs, "lowerdir+", l.as_path())?;
    }
    if writable {
        for d in ["upper", "work"] {
            #[allow(clippy::disallowed_methods)] // trusted: the container's own directory
            std::fs::create_dir_all(dir.join(d))?;
        }
        fsconfig_set_string(&fs, "upperdir", dir.join("upper").as_path())?;
        fsconfig_set_string(&fs, "workdir", dir.join("work").as_path())?;
    }
    fsconfig_create(&fs)?;
    let attrs = if writable {
        MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOSUID
    } else {
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID
    };
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
    Tree::from_dir_fd(mnt, dir.join("rootfs"))
}

/// `/proc/<pid>` as an `O_PATH` directory fd. The host's procfs: a path we trust.
#[allow(clippy::disallowed_methods)]
fn open_proc_dir(pid: i32) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_PATH | nix::libc::O_DIRECTORY | nix::libc::O_CLOEXEC)
        .open(format!("/proc/{pid}"))
}

/// The root directory of the process behind `proc_dir` (its magic `root` link followed: the
/// host's procfs, a path we trust), as an `O_PATH` fd.
#[allow(clippy::disallowed_methods)]
fn open_root(proc_dir: &std::fs::File) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_PATH | nix::libc::O_DIRECTORY | nix::libc::O_CLOEXEC)
        .open(reg_untrusted::fd_path(proc_dir).join("root"))
}

/// A file of the process behind `proc_dir` (host procfs: trusted; through the fd, so it is
/// that process's or an error).
#[allow(clippy::disallowed_methods)]
fn read_proc(proc_dir: &std::fs::File, name: &str) -> io::Result<String> {
    std::fs::read_to_string(reg_untrusted::fd_path(proc_dir).join(name))
}

/// Whether process `pid` is the monitor of container `id` (its command line names it).
#[allow(clippy::disallowed_methods)] // the host's procfs
fn monitor_names(pid: i32, id: &str) -> bool {
    pid > 0
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(id))
}

/// An I/O failure on `path` in container `name`, by kind.
fn io_error(name: &str, path: &Path, e: io::Error) -> ContainerError {
    let shown = Path::new("/").join(path);
    let shown = shown.display();
    match reg_untrusted::errno(&e) {
        Some(nix::libc::ELOOP) => ContainerError::Invalid(format!(
            "{shown} in container {name}: refused, it resolves through a magic link or too many symlinks"
        )),
        Some(nix::libc::ENOTDIR) => ContainerError::Invalid(format!(
            "{shown} in container {name}: a part of the path is not a directory"
        )),
        Some(nix::libc::EROFS) => ContainerError::Invalid(format!(
            "{shown} in container {name} is on a read-only file system"
        )),
        Some(nix::libc::EXDEV) => ContainerError::Invalid(format!(
            "{shown} in container {name}: refused as unsafe: {e}"
        )),
        _ if reg_untrusted::is_not_found(&e) => ContainerError::NotFound(format!(
            "Could not find the file {shown} in container {name}"
        )),
        _ => ContainerError::Failed(format!("{shown} in container {name}: {e}")),
    }
}

/// A readable source: a path's stat, and its archive to come.
pub struct Source {
    view: View,
    target: Target,
    stat: PathStat,
    /// `export`: the root's own filesystem only (mounts inside it — /proc, /sys, /dev, volumes —
    /// appear as their empty mount points), entries named without a leading component.
    export: bool,
}

/// `export`: the running container's root filesystem as a tar (what its image and its writes
/// make; not what is mounted inside it).
pub fn open_export(cs: &Containers, key: &str) -> Result<Source, ContainerError> {
    let mut s = open_source(cs, key, "/")?;
    s.export = true;
    Ok(s)
}

/// `HEAD /containers/{id}/archive?path=`: the stat of `path` in running container `key`.
pub fn stat(cs: &Containers, key: &str, path: &str) -> Result<PathStat, ContainerError> {
    Ok(open_source(cs, key, path)?.stat)
}

/// Opens `path` in running container `key` for [`Source::write_tar`]; a missing path is
/// `NotFound`.
pub fn open_source(cs: &Containers, key: &str, path: &str) -> Result<Source, ContainerError> {
    let target = target(path)?;
    let view = open_view(cs, key, false)?;
    let name = view.rec.name.clone();
    let io = |e| io_error(&name, &target.rel, e);
    let meta = if target.follow {
        view.tree.metadata(&target.rel)
    } else {
        view.tree.symlink_metadata(&target.rel)
    }
    .map_err(io)?
    .ok_or_else(|| {
        ContainerError::NotFound(format!(
            "Could not find the file {path} in container {name}"
        ))
    })?;
    let link_target = if meta.file_type().is_symlink() {
        resolve_link(&view.tree, &target.rel)
            .map_err(io)?
            .to_string_lossy()
            .into_owned()
    } else {
        String::new()
    };
    let stat = PathStat {
        name: target.name.clone(),
        size: meta.size() as i64,
        mode: go_file_mode(meta.mode()),
        mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        link_target,
    };
    Ok(Source {
        view,
        target,
        stat,
        export: false,
    })
}

/// Where `rel` leads inside the tree, every symlink on the way followed inside it (as the
/// container would see it): an absolute container path. Only names are read (lstat and
/// readlink through the tree); a missing part ends the walk lexically.
fn resolve_link(tree: &Tree, rel: &Path) -> io::Result<PathBuf> {
    let mut done: Vec<std::ffi::OsString> = Vec::new();
    let mut todo: std::collections::VecDeque<std::ffi::OsString> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            done.pop();
            continue;
        }
        done.push(c);
        let here: PathBuf = done.iter().collect();
        let Some(m) = tree.symlink_metadata(&here)? else {
            continue;
        };
        if !m.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(io::Error::from_raw_os_error(nix::libc::ELOOP));
        }
        let to = tree.read_link(&here)?;
        done.pop();
        if to.is_absolute() {
            done.clear();
        }
        for c in to.components().rev() {
            match c {
                Component::Normal(p) => todo.push_front(p.to_os_string()),
                Component::ParentDir => todo.push_front("..".into()),
                _ => {}
            }
        }
    }
    Ok(Path::new("/").join(done.iter().collect::<PathBuf>()))
}

/// A reader that gives exactly `left` bytes: the file's, then zeros if it shrank (a tar
/// entry's size is promised in its header before its content is read).
struct Exactly<R> {
    inner: io::Take<R>,
    left: u64,
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            buf[..max].fill(0);
            n = max;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

impl Source {
    pub fn stat(&self) -> &PathStat {
        &self.stat
    }

    /// Writes the archive of the path to `out`: the path itself under its name, and, for a
    /// directory, everything below it (symlinks as symlinks, device nodes and FIFOs as
    /// headers, sockets skipped as docker does). Entries that vanish during the walk are
    /// skipped.
    pub fn write_tar(self, out: impl Write) -> Result<(), ContainerError> {
        let Source {
            view,
            target,
            export,
            ..
        } = self;
        let cname = view.rec.name.clone();
        let tree = &view.tree;
        let mut b = tar::Builder::new(out);
        let meta = if target.follow {
            tree.metadata(&target.rel)
        } else {
            tree.symlink_metadata(&target.rel)
        }
        .map_err(|e| io_error(&cname, &target.rel, e))?
        .ok_or_else(|| io_error(&cname, &target.rel, io::ErrorKind::NotFound.into()))?;
        let top = if export {
            PathBuf::new()
        } else {
            PathBuf::from(&target.name)
        };
        let root_dev = meta.dev();
        // With a followed final symlink, the walk starts at the resolved directory.
        let start = if target.follow && !target.rel.as_os_str().is_empty() {
            resolve_link(tree, &target.rel).map_err(|e| io_error(&cname, &target.rel, e))?
        } else {
            target.rel.clone()
        };
        let start = start.strip_prefix("/").unwrap_or(&start).to_path_buf();
        if !export {
            append(tree, &mut b, &start, &top, &meta, view.rec.spec.userns)
                .map_err(|e| io_error(&cname, &start, e))?;
        }
        if meta.is_dir() {
            let mut stack: Vec<(std::fs::ReadDir, PathBuf, PathBuf)> = Vec::new();
            stack.push((open_listing(tree, &start, &cname)?, start, top));
            while let Some((listing, rel, name)) = stack.last_mut() {
                let Some(entry) = listing.next() else {
                    stack.pop();
                    continue;
                };
                let entry = entry.map_err(|e| io_error(&cname, rel, e))?;
                let child_rel = rel.join(entry.file_name());
                let child_name = name.join(entry.file_name());
                let Some(m) = tree
                    .symlink_metadata(&child_rel)
                    .map_err(|e| io_error(&cname, &child_rel, e))?
                else {
                    continue;
                };
                match append(
                    tree,
                    &mut b,
                    &child_rel,
                    &child_name,
                    &m,
                    view.rec.spec.userns,
                ) {
                    Err(e) if reg_untrusted::is_not_found(&e) => continue,
                    r => r.map_err(|e| io_error(&cname, &child_rel, e))?,
                }
                // Another filesystem mounted here: its mount point only.
                if export && m.dev() != root_dev {
                    continue;
                }
                if m.is_dir() {
                    if stack.len() >= MAX_DEPTH {
                        return Err(ContainerError::Invalid(format!(
                            "{} in container {cname}: directories nest deeper than {MAX_DEPTH} levels",
                            Path::new("/").join(&child_rel).display()
                        )));
                    }
                    let listing = match open_listing(tree, &child_rel, &cname) {
                        Err(ContainerError::NotFound(_)) => continue,
                        r => r?,
                    };
                    stack.push((listing, child_rel, child_name));
                }
            }
        }
        b.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(|e| ContainerError::Failed(format!("writing the archive: {e}")))
    }
}

fn open_listing(tree: &Tree, rel: &Path, cname: &str) -> Result<std::fs::ReadDir, ContainerError> {
    let io = |e| io_error(cname, rel, e);
    let h = tree.resolve_nofollow(rel).map_err(io)?;
    reg_untrusted::read_dir_stream(&h).map_err(io)
}

/// Appends header `h` (size and type set) under `name`, kept byte for byte: docker's CLI
/// renames entries by their first component, `.` included (`docker cp ctr:/dir/. host`), which
/// the tar crate's own name handling would drop. Names or link targets too long for the header
/// go through the crate's GNU extensions.
fn put<W: Write>(
    b: &mut tar::Builder<W>,
    h: &mut tar::Header,
    name: &Path,
    link: Option<&Path>,
    data: impl Read,
) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_os_str().as_bytes();
    let slot = h.as_old().name.len();
    let link_fits = link.is_none_or(|l| l.as_os_str().len() < slot);
    if bytes.len() < slot && link_fits {
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        if let Some(l) = link {
            h.set_link_name(l)?;
        }
        h.set_cksum();
        b.append(h, data)
    } else if let Some(l) = link {
        b.append_link(h, name, l)
    } else {
        b.append_data(h, name, data)
    }
}

/// One entry of an outgoing archive, from its lstat `m`: a regular file's content is read
/// through the tree (only once the handle is known to be a regular file); nothing else is
/// opened.
/// `ids`: the container's user namespace, whose host ids are written as its own.
fn append<W: Write>(
    tree: &Tree,
    b: &mut tar::Builder<W>,
    rel: &Path,
    name: &Path,
    m: &std::fs::Metadata,
    ids: Option<IdMap>,
) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mode(m.mode() & 0o7777);
    let (uid, gid) = match ids {
        Some(map) => (map.container_uid(m.uid()), map.container_gid(m.gid())),
        None => (m.uid(), m.gid()),
    };
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(gid));
    h.set_mtime(u64::try_from(m.mtime()).unwrap_or(0));
    h.set_size(0);
    let kind = m.file_type();
    if kind.is_dir() {
        h.set_entry_type(tar::EntryType::Directory);
        put(b, &mut h, name, None, io::empty())
    } else if kind.is_symlink() {
        h.set_entry_type(tar::EntryType::Symlink);
        let to = tree.read_link(rel)?;
        put(b, &mut h, name, Some(&to), io::empty())
    } else if kind.is_file() {
        h.set_entry_type(tar::EntryType::Regular);
        let size = m.size();
        h.set_size(size);
        if size == 0 {
            // Never opened: procfs and sysfs files say 0 and some act on open (`/proc/kmsg`).
            return put(b, &mut h, name, None, io::empty());
        }
        let f = tree.open_file_nofollow(rel)?;
        let data = Exactly {
            inner: f.take(size),
            left: size,
        };
        put(b, &mut h, name, None, data)
    } else if kind.is_char_device() || kind.is_block_device() {
        h.set_entry_type(if kind.is_char_device() {
            tar::EntryType::Char
        } else {
            tar::EntryType::Block
        });
        let rdev = m.rdev();
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        h.set_device_major(u32::try_from(major).unwrap_or(0))?;
        h.set_device_minor(u32::try_from(minor).unwrap_or(0))?;
        put(b, &mut h, name, None, io::empty())
    } else if kind.is_fifo() {
        h.set_entry_type(tar::EntryType::Fifo);
        put(b, &mut h, name, None, io::empty())
    } else {
        Ok(()) // sockets: not archived (docker skips them too)
    }
}

/// How `PUT /containers/{id}/archive` extracts.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractOptions {
    /// Refuse to replace a directory with a non-directory or the reverse.
    pub no_overwrite_dir_non_dir: bool,
    /// Owners from the archive's headers; else everything is made root's (0:0).
    pub copy_uid_gid: bool,
}

/// Counts the bytes the tar reader takes between two entries (its extension headers, held in
/// memory by it) and refuses more than [`MAX_HEADER_BYTES`]; an entry's content, read by us,
/// is not counted.
struct HeaderBudget<R> {
    inner: R,
    used: Rc<Cell<u64>>,
    in_data: Rc<Cell<bool>>,
}

impl<R: Read> Read for HeaderBudget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if !self.in_data.get() {
            let used = self.used.get() + n as u64;
            if used > MAX_HEADER_BYTES + 2 * 512 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("an entry's headers exceed {MAX_HEADER_BYTES} bytes"),
                ));
            }
            self.used.set(used);
        }
        Ok(n)
    }
}

/// An archive entry's path made relative to the extraction directory; `None` for the
/// directory itself. Absolute names and `..` that climbs above it are refused.
fn entry_parts(raw: &Path) -> Result<Option<PathBuf>, String> {
    if raw.is_absolute() {
        return Err("absolute paths are refused".into());
    }
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err("its path climbs out of the target directory with '..'".into());
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are refused".into())
            }
        }
    }
    Ok((!parts.is_empty()).then(|| parts.iter().collect()))
}

/// Whether a symlink at `entry` (relative to the extraction directory) with relative target
/// `to` stays inside that directory, read lexically as docker does.
fn link_stays_inside(entry: &Path, to: &Path) -> bool {
    if to.is_absolute() {
        return true; // inside the container's root, where the tree resolves it
    }
    let base = entry.parent().unwrap_or(Path::new(""));
    entry_parts(&base.join(to)).is_ok()
}

/// `PUT /containers/{id}/archive?path=DIR`: extracts the tar read from `input` into directory
/// `dir` of running container `key` (a final symlink of `dir` followed inside the container).
pub fn extract(
    cs: &Containers,
    key: &str,
    dir: &str,
    input: impl Read,
    opts: ExtractOptions,
) -> Result<u64, ContainerError> {
    let t = target(dir)?;
    let view = open_view(cs, key, true)?;
    let cname = view.rec.name.clone();
    let tree = &view.tree;
    match tree
        .metadata(&t.rel)
        .map_err(|e| io_error(&cname, &t.rel, e))?
    {
        None => {
            return Err(ContainerError::NotFound(format!(
                "Could not find the file {dir} in container {cname}"
            )))
        }
        Some(m) if !m.is_dir() => {
            return Err(ContainerError::Invalid(format!(
                "extraction point is not a directory: {dir} in container {cname}"
            )))
        }
        Some(_) => {}
    }
    let used = Rc::new(Cell::new(0));
    let in_data = Rc::new(Cell::new(false));
    let mut archive = tar::Archive::new(HeaderBudget {
        inner: input,
        used: used.clone(),
        in_data: in_data.clone(),
    });
    let entries = archive.entries().map_err(bad_archive)?;
    let mut x = Extractor {
        tree,
        ids: view.rec.spec.userns,
        base: &t.rel,
        cname: &cname,
        opts,
    };
    let mut count = 0;
    for entry in entries {
        let mut entry = entry.map_err(bad_archive)?;
        in_data.set(true);
        x.entry(&mut entry)?;
        // Whatever of the content was not used is read past here, not by the tar reader.
        io::copy(&mut entry, &mut io::sink()).map_err(bad_archive)?;
        in_data.set(false);
        used.set(0);
        count += 1;
    }
    Ok(count)
}

fn bad_archive(e: io::Error) -> ContainerError {
    ContainerError::Invalid(format!("the archive is not a readable tar stream: {e}"))
}

struct Extractor<'a> {
    tree: &'a Tree,
    /// The container's user namespace: owners given are its ids, stored as the host's.
    ids: Option<IdMap>,
    /// The extraction directory, below the container's root.
    base: &'a Path,
    cname: &'a str,
    opts: ExtractOptions,
}

impl Extractor<'_> {
    fn refused(&self, entry: &Path, why: impl std::fmt::Display) -> ContainerError {
        ContainerError::Invalid(format!(
            "archive entry {:?} refused: {why}",
            entry.display().to_string()
        ))
    }

    fn io(&self, rel: &Path, e: io::Error) -> ContainerError {
        io_error(self.cname, rel, e)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ContainerError> {
        let raw = entry
            .path()
            .map_err(|e| ContainerError::Invalid(format!("an archive entry's name: {e}")))?
            .into_owned();
        let kind = entry.header().entry_type();
        let Some(parts) = entry_parts(&raw).map_err(|why| self.refused(&raw, why))? else {
            return Ok(()); // the extraction directory itself: left as it is
        };
        let rel = self.base.join(&parts);
        // Check everything about the entry before anything of it is made.
        let link = match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let to = entry
                    .link_name()
                    .map_err(|e| self.refused(&raw, e))?
                    .map(|p| p.into_owned())
                    .ok_or_else(|| self.refused(&raw, "a link without a target"))?;
                Some(to)
            }
            _ => None,
        };
        let hard_target = match (kind, &link) {
            (tar::EntryType::Symlink, Some(to)) => {
                if !link_stays_inside(&parts, to) {
                    return Err(self.refused(
                        &raw,
                        format!(
                            "its target {} points out of the target directory",
                            to.display()
                        ),
                    ));
                }
                None
            }
            (tar::EntryType::Link, Some(to)) => {
                let t = entry_parts(to)
                    .map_err(|why| {
                        self.refused(&raw, format!("hard link target {}: {why}", to.display()))
                    })?
                    .ok_or_else(|| self.refused(&raw, "a hard link to the target directory"))?;
                Some(self.base.join(t))
            }
            _ => None,
        };
        match kind {
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(self.refused(&raw, "device nodes are not copied into containers"))
            }
            tar::EntryType::Directory
            | tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::Symlink
            | tar::EntryType::Link
            | tar::EntryType::Fifo => {}
            // pax/GNU metadata are consumed by the reader; anything else carries no file.
            _ => return Ok(()),
        }

        if let Some(parent) = rel.parent() {
            self.tree
                .mkdir_all(parent, 0o755)
                .map_err(|e| self.io(parent, e))?;
        }
        let is_dir = kind == tar::EntryType::Directory;
        match self
            .tree
            .symlink_metadata(&rel)
            .map_err(|e| self.io(&rel, e))?
        {
            Some(m) if m.is_dir() && is_dir => {}
            Some(m) => {
                if self.opts.no_overwrite_dir_non_dir && m.is_dir() != is_dir {
                    let shown = Path::new("/").join(&rel);
                    return Err(ContainerError::Invalid(if is_dir {
                        format!(
                            "cannot overwrite non-directory {} with directory {}",
                            shown.display(),
                            raw.display()
                        )
                    } else {
                        format!(
                            "cannot overwrite directory {} with non-directory {}",
                            shown.display(),
                            raw.display()
                        )
                    }));
                }
                self.tree.remove_all(&rel).map_err(|e| self.io(&rel, e))?;
            }
            None => {}
        }

        let header = entry.header().clone();
        match kind {
            tar::EntryType::Directory => {
                match self.tree.mkdir(&rel, 0o700) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                        return Err(self.io(&rel, e))
                    }
                    _ => {}
                }
                let h = self
                    .tree
                    .resolve_nofollow(&rel)
                    .map_err(|e| self.io(&rel, e))?;
                if !reg_untrusted::metadata(&h)
                    .map_err(|e| self.io(&rel, e))?
                    .is_dir()
                {
                    return Err(self.refused(&raw, "it was replaced while being made"));
                }
                self.finish(&rel, &h, &header)
            }
            tar::EntryType::Symlink => {
                let to = link.unwrap_or_default();
                self.tree.symlink(&rel, &to).map_err(|e| self.io(&rel, e))?;
                let h = self
                    .tree
                    .resolve_nofollow(&rel)
                    .map_err(|e| self.io(&rel, e))?;
                self.finish(&rel, &h, &header)
            }
            tar::EntryType::Link => {
                let existing = hard_target.unwrap_or_default();
                let m = self
                    .tree
                    .symlink_metadata(&existing)
                    .map_err(|e| self.io(&existing, e))?
                    .ok_or_else(|| {
                        self.refused(&raw, "its hard link target is not in the archive")
                    })?;
                if m.is_dir() {
                    return Err(self.refused(&raw, "a hard link to a directory"));
                }
                self.tree
                    .hard_link(&rel, &existing)
                    .map_err(|e| self.io(&rel, e))
            }
            tar::EntryType::Fifo => {
                self.tree
                    .mknod(&rel, reg_untrusted::Node::Fifo, 0o600)
                    .map_err(|e| self.io(&rel, e))?;
                let h = self
                    .tree
                    .resolve_nofollow(&rel)
                    .map_err(|e| self.io(&rel, e))?;
                self.finish(&rel, &h, &header)
            }
            _ => {
                let mut f = self
                    .tree
                    .create_file(&rel, 0o600)
                    .map_err(|e| self.io(&rel, e))?;
                io::copy(entry, &mut f).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof
                        || e.kind() == io::ErrorKind::InvalidData
                    {
                        bad_archive(e)
                    } else {
                        self.io(&rel, e)
                    }
                })?;
                self.finish(&rel, &f, &header)
            }
        }
    }

    /// Owner, then mode (a chown clears set-id bits), then mtime, all through the inode.
    fn finish(
        &self,
        rel: &Path,
        fd: &impl std::os::fd::AsFd,
        header: &tar::Header,
    ) -> Result<(), ContainerError> {
        let io = |e| self.io(rel, e);
        let (uid, gid) = if self.opts.copy_uid_gid {
            (
                u32::try_from(header.uid().unwrap_or(0)).unwrap_or(0),
                u32::try_from(header.gid().unwrap_or(0)).unwrap_or(0),
            )
        } else {
            (0, 0)
        };
        // In a user namespace: its ids on the host (one it does not have is its root).
        let (uid, gid) = match self.ids {
            Some(map) => (
                map.host_uid(uid).unwrap_or(map.uid),
                map.host_gid(gid).unwrap_or(map.gid),
            ),
            None => (uid, gid),
        };
        reg_untrusted::set_owner(fd, uid, gid).map_err(io)?;
        if header.entry_type() != tar::EntryType::Symlink {
            let mode = header.mode().unwrap_or(0o644) & 0o7777;
            reg_untrusted::set_mode(fd, mode).map_err(io)?;
            let mtime = i64::try_from(header.mtime().unwrap_or(0)).unwrap_or(0);
            reg_untrusted::set_mtime(fd, mtime, 0).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_mode(st_mode: u32, go: u32) {
        assert_eq!(go_file_mode(st_mode), go, "st_mode {st_mode:o}");
    }

    #[test]
    fn stat_modes_use_go_file_mode_bits() {
        use go_mode::*;
        check_mode(0o100644, 0o644);
        check_mode(0o040755, DIR | 0o755);
        check_mode(0o120777, SYMLINK | 0o777);
        check_mode(0o020620, DEVICE | CHAR_DEVICE | 0o620);
        check_mode(0o060660, DEVICE | 0o660);
        check_mode(0o010600, NAMED_PIPE | 0o600);
        check_mode(0o140755, SOCKET | 0o755);
        check_mode(0o104755, SETUID | 0o755);
        check_mode(0o102755, SETGID | 0o755);
        check_mode(0o041777, DIR | STICKY | 0o777);
        // docker's CLI tests the directory bit as Go's ModeDir: the top bit of the word.
        assert_eq!(DIR, 0x8000_0000);
        assert_eq!(SYMLINK, 0x0800_0000);
    }

    #[track_caller]
    fn check_target(path: &str, rel: &str, name: &str, follow: bool) {
        let t = target(path).expect("a path");
        assert_eq!(
            (t.rel.to_string_lossy().as_ref(), t.name.as_str(), t.follow),
            (rel, name, follow),
            "{path}"
        );
    }

    #[test]
    fn container_paths_are_cleaned_inside_the_root() {
        check_target("/etc/hosts", "etc/hosts", "hosts", false);
        check_target("etc/hosts", "etc/hosts", "hosts", false);
        check_target("/data/", "data", "data", true);
        check_target("/data/.", "data", ".", true);
        check_target("/", "", ".", true);
        check_target("/../../etc/../tmp", "tmp", "tmp", false);
        assert!(target("").is_err());
    }

    #[test]
    fn archive_entries_may_not_climb_out() {
        assert_eq!(entry_parts(Path::new("a/./b")), Ok(Some("a/b".into())));
        assert_eq!(entry_parts(Path::new("a/../b")), Ok(Some("b".into())));
        assert_eq!(entry_parts(Path::new(".")), Ok(None));
        assert!(entry_parts(Path::new("../x")).is_err());
        assert!(entry_parts(Path::new("a/../../x")).is_err());
        assert!(entry_parts(Path::new("/etc/passwd")).is_err());
        assert!(link_stays_inside(Path::new("a/l"), Path::new("../b")));
        assert!(link_stays_inside(Path::new("l"), Path::new("/bin/sh")));
        assert!(!link_stays_inside(Path::new("l"), Path::new("../..")));
        assert!(!link_stays_inside(Path::new("a/l"), Path::new("../../x")));
    }

    #[test]
    fn proc_stat_parent_is_read_after_the_command_name() {
        assert_eq!(stat_ppid("42 (sh) S 7 42 42 0"), Some(7));
        assert_eq!(stat_ppid("42 (a) b) (c) S 9 1"), Some(9));
        assert_eq!(stat_ppid("garbage"), None);
    }
}
