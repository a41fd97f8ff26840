//! Containers through the agent, docker's lifecycle: create → start → (running) → exited →
//! start again or remove. Each started container gets one monitor process (a re-exec of
//! `reg node monitor` from the sealed copy of the binary, in its own process group) that owns
//! the container and writes what happens into the container's directory: `container.log`
//! (JSON lines), `pid`, `exit`, `oom`. The agent keeps the records in SQLite
//! (`containers.db`) and learns everything else from those files, so containers keep running
//! and logging while the agent restarts, and a restarted agent re-attaches from its records.
//!
//! The folder: [`service`](self::Containers) (records, lifecycle), `create`, `control` (what a
//! user does to a container), `archive` (`docker cp` both ways), `changes` (`docker diff`), `health` (checks run by the node), `streams` (logs, exec), `execs` (docker's exec instances), `usage` (top, stats), `volumes`, `error`. It never imports
//! [`crate::api`]: the API maps [`ContainerError`] to HTTP. No file here imports this one.

pub mod archive;
pub mod changes;
pub mod control;
pub mod create;
mod error;
pub mod execs;
pub mod health;
pub mod order;
mod service;
pub mod streams;
pub mod usage;
pub mod volumes;

pub use error::ContainerError;
pub use service::{
    network_connect, network_disconnect, parse_size, ContainerState, Containers, LogConfig,
    LogDriver, NetInfo, Record, RestartPolicy, RunRequest, Status,
};
