//! The defence against the runc CVE-2019-5736 class: a process that runs the `reg` binary and
//! then enters a container (the monitor's cloned init before its exec, the `reg exec` helper
//! before its exec) exposes that binary as `/proc/PID/exe` to the container, which could open
//! it and overwrite the host's `reg`. So every such process is started from a sealed, private
//! copy of the binary in a memfd (what runc did for years): `/proc/PID/exe` then points at
//! the memfd, whose seals refuse any write, shrink or grow.
//!
//! The copy is made once per agent, at the first container it starts.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};

/// A sealed in-memory copy of the running binary.
pub struct SealedExe {
    fd: OwnedFd,
}

impl SealedExe {
    pub fn new() -> std::io::Result<SealedExe> {
        let fd = memfd_create(
            c"reg",
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )?;
        let mut copy = File::from(fd);
        let mut src = File::open("/proc/self/exe")?;
        std::io::copy(&mut src, &mut copy)?;
        fcntl(
            copy.as_raw_fd(),
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SEAL
                    | SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_WRITE,
            ),
        )?;
        Ok(SealedExe {
            fd: OwnedFd::from(copy),
        })
    }

    /// The path to exec: the memfd through the *child's* own fd table (the fd is close-on-exec,
    /// which is fine for an ELF binary: the kernel opens it before closing the fds).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_refuses_writes() {
        let exe = SealedExe::new().expect("memfd copy");
        let len = std::fs::metadata(exe.path()).expect("stat").len();
        assert_eq!(
            len,
            std::fs::metadata("/proc/self/exe").expect("stat").len()
        );
        let w = std::fs::OpenOptions::new().write(true).open(exe.path());
        // Opening may succeed; the write must not.
        if let Ok(mut f) = w {
            use std::io::Write;
            assert!(f.write_all(b"owned").is_err(), "a sealed copy took a write");
        }
    }
}
