//! The container runtime, run inside the per-container monitor process (a fresh, single-threaded
//! re-exec of `reg`, so that `clone(2)` never happens in a multi-threaded process).
//!
//! `run` clones the container's init into new pid, mount, uts, ipc and net namespaces (and with a
//! range, joins a user namespace last, before exec: see `userns`). Inside,
//! before exec: mounts are made private, the rootfs is an overlay of the image's layer snapshots
//! with the container's own upper dir, `/proc`, `/dev` (tmpfs with the default device nodes,
//! `/dev/pts`, `/dev/shm`) and a read-only `/sys` are mounted, `pivot_root` switches to it and
//! the old root is detached. Everything mounted lives in the container's mount namespace, so it
//! disappears with the container: nothing can leak onto the host.
//!
//! Exit codes follow docker: the process's own; 125 when the runtime fails; 126 when the command
//! cannot be executed; 127 when it is not found; 128+N when killed by signal N.

//! The folder, from the top: `monitor` (the per-container process) → `process` (start, init,
//! exec, enter) → `rootfs`, `cgroup`, `tty` → `spec` → `seccomp`, `sys`, `userns`; `bundle` writes and
//! reads the OCI bundle; `exe` seals the binary monitors start from. No file here imports this
//! one.

pub mod bundle;
pub mod cgroup;
pub mod exe;
pub mod monitor;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod sys;
pub mod tty;
pub mod userns;

pub use cgroup::{remove_cgroup, warm_cgroup_moves, Cgroup, CgroupError};
pub use process::{enter, start, wait};
pub use spec::*;
pub use sys::{device_filter_available, nofile_limit};
pub use tty::{console_socket, receive_fd, set_terminal_size, terminal_size};
pub use userns::IdMap;
