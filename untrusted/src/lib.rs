//! File operations inside a tree whose content came from someone we do not trust: an image
//! layer being unpacked, a snapshot, a container's rootfs or upper dir, a volume, a build
//! context copy, a layer directory being assembled by the builder.
//!
//! The one rule (ARCHITECTURE.md, "Invariants"): every host-side operation on such a tree
//! resolves its path *inside* the tree, fd-relative, and never follows a symlink out of it;
//! metadata changes go through the opened inode, never through a path that could be swapped.
//! This crate is the only way in: [`Tree`] wraps libpathrs' `Root` (openat2 with
//! `RESOLVE_IN_ROOT`, each step checked against races), and the crates that handle untrusted
//! trees deny the `std::fs` path functions with clippy's `disallowed-methods` in those modules.
//!
//! Two kinds of tree:
//! - [`Tree::open`]: symlinks inside the tree are followed, but resolve inside it (an absolute
//!   link is relative to the tree's root, `..` stops at it) — the container's view of its
//!   rootfs, which is what mount targets and image paths mean.
//! - [`Tree::open_strict`]: any symlink on the way is an error (`ELOOP`, see
//!   [`is_symlink_refusal`]) — for trees we fill ourselves (layers being unpacked or
//!   assembled, volume copy-ups), where writing *through* a symlink is never intended.
//!
//! Never: open a device node or a FIFO found in a tree (reading one on the host would read the
//! host's device), follow a symlink with a host path, or chmod/chown/utimes by path.

use std::ffi::OsString;
use std::fs::{File, Metadata, Permissions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use pathrs::flags::{OpenFlags, ResolverFlags};
pub use pathrs::Handle;
use pathrs::InodeType;

/// A directory tree with untrusted content, opened by a path we trust (under our data dir).
#[derive(Debug)]
pub struct Tree {
    root: pathrs::Root,
    dir: PathBuf,
}

/// Turns libpathrs' error into the `io::Error` every caller already handles, keeping the errno
/// (`ELOOP` for a refused symlink, `EXDEV` for a detected race or escape).
fn io_err(e: pathrs::error::Error) -> io::Error {
    use pathrs::error::ErrorKind;
    // libpathrs says what it did on top and why below: keep the whole chain.
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        message = format!("{message}: {c}");
        cause = c.source();
    }
    match e.kind() {
        ErrorKind::OsError(Some(n)) => io::Error::new(
            io::Error::from_raw_os_error(n).kind(),
            IoWithErrno(n, message),
        ),
        ErrorKind::SafetyViolation => io::Error::new(
            io::ErrorKind::PermissionDenied,
            IoWithErrno(nix::libc::EXDEV, format!("refused as unsafe: {message}")),
        ),
        _ => io::Error::other(message),
    }
}

/// An error message that keeps its errno, so [`errno`] can read it back.
#[derive(Debug)]
struct IoWithErrno(i32, String);

impl std::fmt::Display for IoWithErrno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for IoWithErrno {}

/// The errno behind an error of this crate (or any `io::Error` made from one).
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<IoWithErrno>())
            .map(|w| w.0)
    })
}

/// Whether `e` says a path met a symlink where a strict tree allows none (or `O_NOFOLLOW` met one).
pub fn is_symlink_refusal(e: &io::Error) -> bool {
    errno(e) == Some(nix::libc::ELOOP)
}

/// Whether `e` means "nothing there".
pub fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || errno(e) == Some(nix::libc::ENOENT)
}

/// `/proc/self/fd/N`: names exactly the inode behind `fd` (a magic link), for the few calls
/// that take only a path — `mount(2)` above all, so a mount lands on the inode we resolved and
/// not on whatever a racing process put at its path meanwhile.
pub fn fd_path(fd: &impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// What kind of special file [`Tree::mknod`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Char { major: u64, minor: u64 },
    Block { major: u64, minor: u64 },
    Fifo,
}

/// `e` with the path it is about in front.
fn named(rel: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", rel.display()))
}

/// Whether `rel` names the tree's root itself (no normal component).
fn is_root(rel: &Path) -> bool {
    !rel.components().any(|c| matches!(c, Component::Normal(_)))
}

impl Tree {
    /// Opens `dir`; symlinks met inside resolve inside it.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Tree> {
        let dir = dir.as_ref().to_path_buf();
        let root = pathrs::Root::open(&dir).map_err(io_err)?;
        Ok(Tree { root, dir })
    }

    /// The tree rooted at the directory `fd`, opened by the caller: for a root only a magic
    /// link names, such as a process's `/proc/<pid>/root` (which [`Tree::open`] does not
    /// follow). Symlinks met inside resolve inside it; `dir` names it in messages.
    pub fn from_dir_fd(fd: OwnedFd, dir: impl Into<PathBuf>) -> io::Result<Tree> {
        if !metadata(&fd)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory",
            ));
        }
        Ok(Tree {
            root: pathrs::Root::from_fd(fd),
            dir: dir.into(),
        })
    }

    /// Opens `dir`; any symlink on a path's way is refused (`ELOOP`). The last component of
    /// [`Tree::symlink_metadata`], [`Tree::remove`] and [`Tree::symlink`] may be one.
    pub fn open_strict(dir: impl AsRef<Path>) -> io::Result<Tree> {
        let mut t = Tree::open(dir)?;
        t.root.set_resolver_flags(ResolverFlags::NO_SYMLINKS);
        Ok(t)
    }

    /// The subtree at `rel` (a final symlink followed inside this tree) as a tree of its own,
    /// with the same rules: paths resolved in it never leave the subtree.
    pub fn subtree(&self, rel: impl AsRef<Path>) -> io::Result<Tree> {
        let rel = rel.as_ref();
        let h = self.resolve(rel)?;
        if !metadata(&h)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", rel.display()),
            ));
        }
        let root =
            pathrs::Root::from_fd(OwnedFd::from(h)).with_resolver_flags(self.root.resolver_flags());
        Ok(Tree {
            root,
            dir: self.dir.join(rel.strip_prefix("/").unwrap_or(rel)),
        })
    }

    /// The host path of the tree (for messages and for handing to the kernel as a whole).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `O_PATH` descriptor of the tree's root.
    pub fn root_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// A handle on `rel`, a final symlink followed (inside the tree).
    pub fn resolve(&self, rel: impl AsRef<Path>) -> io::Result<Handle> {
        let rel = rel.as_ref();
        if is_root(rel) {
            return self
                .root
                .try_clone()
                .map(|r| Handle::from_fd(OwnedFd::from(r)))
                .map_err(io_err);
        }
        self.root.resolve(rel).map_err(io_err)
    }

    /// A handle on `rel` itself, even if it is a symlink.
    pub fn resolve_nofollow(&self, rel: impl AsRef<Path>) -> io::Result<Handle> {
        let rel = rel.as_ref();
        if is_root(rel) {
            return self.resolve(rel);
        }
        self.root.resolve_nofollow(rel).map_err(io_err)
    }

    /// `lstat` inside the tree; `None` when nothing is there.
    pub fn symlink_metadata(&self, rel: impl AsRef<Path>) -> io::Result<Option<Metadata>> {
        match self.resolve_nofollow(rel) {
            Ok(h) => metadata(&h).map(Some),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `stat` inside the tree (a final symlink followed inside it); `None` when nothing is there.
    pub fn metadata(&self, rel: impl AsRef<Path>) -> io::Result<Option<Metadata>> {
        match self.resolve(rel) {
            Ok(h) => metadata(&h).map(Some),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `mkdir -p` inside the tree; new directories get `mode` (before the umask). Returns the
    /// directory.
    pub fn mkdir_all(&self, rel: impl AsRef<Path>, mode: u32) -> io::Result<Handle> {
        let rel = rel.as_ref();
        if is_root(rel) {
            return self.resolve(rel);
        }
        self.root
            .mkdir_all(rel, &Permissions::from_mode(mode))
            .map_err(io_err)
    }

    /// Makes the one directory `rel` (its parent must exist).
    pub fn mkdir(&self, rel: impl AsRef<Path>, mode: u32) -> io::Result<()> {
        self.root
            .create(rel, &InodeType::Directory(Permissions::from_mode(mode)))
            .map_err(io_err)
    }

    /// Creates a new regular file `rel` for writing with exactly `mode` (set through the fd).
    /// Fails if anything is already there: remove it first.
    pub fn create_file(&self, rel: impl AsRef<Path>, mode: u32) -> io::Result<File> {
        let f = self
            .root
            .create_file(
                rel,
                OpenFlags::O_WRONLY
                    | OpenFlags::O_EXCL
                    | OpenFlags::O_NOFOLLOW
                    | OpenFlags::O_CLOEXEC,
                &Permissions::from_mode(mode & 0o777),
            )
            .map_err(io_err)?;
        f.set_permissions(Permissions::from_mode(mode & 0o7777))?;
        Ok(f)
    }

    /// Opens the regular file `rel` for reading (a final symlink followed inside the tree).
    /// Anything but a regular file is refused before it is opened: a device node or a FIFO
    /// from an image must never be opened on the host.
    pub fn open_file(&self, rel: impl AsRef<Path>) -> io::Result<File> {
        let rel = rel.as_ref();
        let h = self.resolve(rel)?;
        open_regular(&h).map_err(|e| named(rel, e))
    }

    /// Opens `rel` for reading if it is itself a regular file (a symlink is not followed).
    pub fn open_file_nofollow(&self, rel: impl AsRef<Path>) -> io::Result<File> {
        let rel = rel.as_ref();
        let h = self.resolve_nofollow(rel)?;
        open_regular(&h).map_err(|e| named(rel, e))
    }

    /// Writes `data` into the existing regular file `rel` (not following a final symlink),
    /// without creating or truncating it: a `/proc/sys` parameter, a cgroup file.
    pub fn write_existing(&self, rel: impl AsRef<Path>, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let rel = rel.as_ref();
        let h = self.resolve_nofollow(rel)?;
        if !metadata(&h)?.is_file() {
            return Err(named(
                rel,
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        let mut f = h
            .reopen(OpenFlags::O_WRONLY | OpenFlags::O_CLOEXEC)
            .map_err(io_err)?;
        f.write_all(data).map_err(|e| named(rel, e))
    }

    /// Opens the directory `rel` (not following a final symlink) for reading its entries or
    /// setting its xattrs through the fd.
    pub fn open_dir(&self, rel: impl AsRef<Path>) -> io::Result<File> {
        let h = self.resolve_nofollow(rel)?;
        if !metadata(&h)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory",
            ));
        }
        h.reopen(OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY | OpenFlags::O_CLOEXEC)
            .map_err(io_err)
    }

    /// Makes the symlink `rel` → `target` (the target is stored as it is, never resolved here).
    pub fn symlink(&self, rel: impl AsRef<Path>, target: impl AsRef<Path>) -> io::Result<()> {
        self.root
            .create(rel, &InodeType::Symlink(target.as_ref().to_path_buf()))
            .map_err(io_err)
    }

    /// Makes `rel` a hard link to `existing`, both inside the tree.
    pub fn hard_link(&self, rel: impl AsRef<Path>, existing: impl AsRef<Path>) -> io::Result<()> {
        self.root
            .create(rel, &InodeType::Hardlink(existing.as_ref().to_path_buf()))
            .map_err(io_err)
    }

    /// Makes a device node or FIFO `rel` with exactly `mode`.
    pub fn mknod(&self, rel: impl AsRef<Path>, node: Node, mode: u32) -> io::Result<()> {
        let rel = rel.as_ref();
        let perm = Permissions::from_mode(mode & 0o777);
        let kind = match node {
            Node::Char { major, minor } => {
                InodeType::CharacterDevice(perm, nix::sys::stat::makedev(major, minor))
            }
            Node::Block { major, minor } => {
                InodeType::BlockDevice(perm, nix::sys::stat::makedev(major, minor))
            }
            Node::Fifo => InodeType::Fifo(perm),
        };
        self.root.create(rel, &kind).map_err(io_err)?;
        let h = self.resolve_nofollow(rel)?;
        set_mode(&h, mode)
    }

    /// Removes the file, symlink or empty directory `rel`; nothing there is not an error.
    pub fn remove(&self, rel: impl AsRef<Path>) -> io::Result<()> {
        let rel = rel.as_ref();
        let r = match self.symlink_metadata(rel)? {
            None => return Ok(()),
            Some(m) if m.is_dir() => self.root.remove_dir(rel),
            Some(_) => self.root.remove_file(rel),
        };
        match r.map_err(io_err) {
            Err(e) if is_not_found(&e) => Ok(()),
            other => other,
        }
    }

    /// Removes `rel` and everything below it; nothing there is not an error.
    pub fn remove_all(&self, rel: impl AsRef<Path>) -> io::Result<()> {
        let rel = rel.as_ref();
        if is_root(rel) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "refusing to remove a tree's root",
            ));
        }
        match self.root.remove_all(rel).map_err(io_err) {
            Err(e) if is_not_found(&e) => Ok(()),
            other => other,
        }
    }

    /// The target of the symlink `rel`, as stored.
    pub fn read_link(&self, rel: impl AsRef<Path>) -> io::Result<PathBuf> {
        self.root.readlink(rel).map_err(io_err)
    }

    /// The names in directory `rel` (not following a final symlink), sorted.
    pub fn read_dir(&self, rel: impl AsRef<Path>) -> io::Result<Vec<OsString>> {
        let h = self.resolve_nofollow(rel)?;
        read_dir(&h)
    }
}

/// Opens the regular file behind the handle `h` for reading; anything else is refused before
/// it is opened. Through the magic link of the handle: exactly the inode it names (libpathrs'
/// `reopen` re-validates procfs on every call, ~60 syscalls a file).
pub fn open_regular(h: &impl AsFd) -> io::Result<File> {
    if !metadata(h)?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (never opened)",
        ));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(fd_path(h))
}

/// `fstat` of a handle (works on `O_PATH` descriptors).
pub fn metadata(fd: &impl AsFd) -> io::Result<Metadata> {
    let owned = fd.as_fd().try_clone_to_owned()?;
    File::from(owned).metadata()
}

/// The names in the directory behind `fd`, sorted.
pub fn read_dir(fd: &impl AsFd) -> io::Result<Vec<OsString>> {
    let m = metadata(fd)?;
    if !m.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory",
        ));
    }
    // The magic link names exactly this directory, whatever happened to its path since.
    let mut names = std::fs::read_dir(fd_path(&fd.as_fd()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// The entries of the directory behind `fd`, read as they come (unsorted, not collected): for
/// walks of trees too large to list at once. Through the magic link of `fd`: exactly this
/// directory, whatever happened to its path since.
pub fn read_dir_stream(fd: &impl AsFd) -> io::Result<std::fs::ReadDir> {
    if !metadata(fd)?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory",
        ));
    }
    std::fs::read_dir(fd_path(&fd.as_fd()))
}

/// `chown` of exactly the inode behind `fd` (a symlink itself, never its target).
pub fn set_owner(fd: &impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    nix::unistd::fchownat(
        Some(fd.as_fd().as_raw_fd()),
        "",
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .map_err(io::Error::from)
}

/// `chmod` of exactly the inode behind `fd` (symlinks have no mode of their own: skipped).
pub fn set_mode(fd: &impl AsFd, mode: u32) -> io::Result<()> {
    if metadata(fd)?.file_type().is_symlink() {
        return Ok(());
    }
    nix::sys::stat::fchmodat(
        None,
        &fd_path(&fd.as_fd()),
        nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Sets the access and modification times of exactly the inode behind `fd` (symlinks: skipped).
pub fn set_mtime(fd: &impl AsFd, secs: i64, nanos: i64) -> io::Result<()> {
    let m = metadata(fd)?;
    let kind = m.file_type();
    if kind.is_symlink() || kind.is_socket() {
        return Ok(());
    }
    let t = nix::sys::time::TimeSpec::new(secs, nanos);
    nix::sys::stat::utimensat(
        None,
        &fd_path(&fd.as_fd()),
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().expect("tempdir");
        let tree = t.path().join("tree");
        let victim = t.path().join("victim");
        std::fs::create_dir_all(&tree).expect("tree");
        std::fs::create_dir_all(&victim).expect("victim");
        std::fs::write(victim.join("keep.txt"), "original").expect("victim file");
        (t, tree, victim)
    }

    #[test]
    fn writes_through_an_absolute_symlink_stay_inside() {
        let (_t, dir, victim) = setup();
        std::os::unix::fs::symlink(&victim, dir.join("sub")).expect("plant");
        let tree = Tree::open(&dir).expect("open");
        // The link dangles inside the tree: nothing can be made through it.
        assert!(tree.mkdir_all("sub", 0o755).is_err());
        assert!(tree.create_file("sub/keep.txt", 0o644).is_err());
        // Once the link's target exists inside the tree, writes land there.
        let inside = victim.strip_prefix("/").expect("absolute");
        tree.mkdir_all(inside, 0o755).expect("mkdir inside");
        let mut f = tree
            .create_file("sub/keep.txt", 0o644)
            .expect("create inside");
        io::Write::write_all(&mut f, b"PWNED").expect("write");
        assert_eq!(
            std::fs::read_to_string(victim.join("keep.txt")).expect("read"),
            "original"
        );
        let landed = dir.join(inside).join("keep.txt");
        assert_eq!(std::fs::read_to_string(landed).expect("inside"), "PWNED");
    }

    #[test]
    fn strict_trees_refuse_any_symlink_on_the_way() {
        let (_t, dir, victim) = setup();
        std::os::unix::fs::symlink(&victim, dir.join("sub")).expect("plant");
        std::os::unix::fs::symlink("real", dir.join("rel")).expect("plant relative");
        std::fs::create_dir(dir.join("real")).expect("real");
        let tree = Tree::open_strict(&dir).expect("open");
        let e = tree
            .create_file("sub/keep.txt", 0o644)
            .expect_err("refused");
        assert!(is_symlink_refusal(&e), "{e}");
        let e = tree.create_file("rel/x", 0o644).expect_err("refused");
        assert!(is_symlink_refusal(&e), "{e}");
        // The link itself can be looked at and removed.
        let m = tree.symlink_metadata("sub").expect("lstat").expect("there");
        assert!(m.file_type().is_symlink());
        tree.remove("sub").expect("remove link");
        assert!(victim.join("keep.txt").exists());
    }

    #[test]
    fn dot_dot_stops_at_the_root() {
        let (_t, dir, _victim) = setup();
        let tree = Tree::open(&dir).expect("open");
        tree.create_file("../../escape", 0o600).expect("create");
        assert!(dir.join("escape").exists());
        assert!(tree.remove_all("..").is_err() || dir.exists());
    }

    #[test]
    fn metadata_changes_go_to_the_inode_not_the_link() {
        let (_t, dir, victim) = setup();
        std::os::unix::fs::symlink(victim.join("keep.txt"), dir.join("l")).expect("plant");
        let before = std::fs::metadata(victim.join("keep.txt")).expect("stat");
        let tree = Tree::open(&dir).expect("open");
        let h = tree.resolve_nofollow("l").expect("handle");
        set_mode(&h, 0o777).expect("mode skipped for a symlink");
        set_mtime(&h, 0, 0).expect("time skipped for a symlink");
        let after = std::fs::metadata(victim.join("keep.txt")).expect("stat");
        assert_eq!(before.mode(), after.mode());
        assert_eq!(before.mtime(), after.mtime());
    }

    #[test]
    fn a_tree_from_a_directory_fd_keeps_paths_inside_it() {
        let (_t, dir, victim) = setup();
        std::os::unix::fs::symlink(&victim, dir.join("sub")).expect("plant");
        let fd: OwnedFd = File::open(&dir).expect("open").into();
        let tree = Tree::from_dir_fd(fd, &dir).expect("tree");
        assert!(
            tree.open_file("sub/keep.txt").is_err(),
            "not the host's file"
        );
        let names: Vec<_> = read_dir_stream(&tree.root_fd())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("sub")]);
        let file: OwnedFd = File::open(victim.join("keep.txt")).expect("file").into();
        assert!(Tree::from_dir_fd(file, "keep.txt").is_err());
    }

    #[test]
    fn open_file_refuses_what_is_not_a_regular_file() {
        let (_t, dir, _victim) = setup();
        let tree = Tree::open(&dir).expect("open");
        tree.mknod("fifo", Node::Fifo, 0o644).expect("fifo");
        let e = tree.open_file("fifo").expect_err("refused, not blocking");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        tree.mkdir_all("d/e", 0o700).expect("dirs");
        assert_eq!(tree.read_dir("d").expect("list"), vec![OsString::from("e")]);
        assert!(tree.open_file("d").is_err());
    }
}
