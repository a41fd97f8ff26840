//! What a user does to an existing container: start (optionally attached), stop, kill,
//! resize its terminal, wait for it, remove it.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::error::{failed, ContainerError};
use super::service::{already_running, remove, start, Containers, Record, Status};
use super::streams::{follow_log, open_log, Output};

/// A started, attached container: its output from this start on, and (with `-i`) the write
/// end of its stdin.
pub struct Attached {
    pub output: Output,
    pub stdin: Option<tokio::fs::File>,
}

/// What a start or a stop found (docker answers 304 when it changed nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Container `name` was already running (start) or already not running (stop).
    Unchanged {
        name: String,
    },
}

impl Outcome {
    /// For reg's own API, where starting a running container is a conflict.
    pub fn started_or_conflict(self) -> Result<(), ContainerError> {
        match self {
            Outcome::Done => Ok(()),
            Outcome::Unchanged { name } => Err(already_running(&name)),
        }
    }
}

/// `start` without attaching.
pub async fn start_detached(cs: &Arc<Containers>, key: &str) -> Result<Outcome, ContainerError> {
    let rec = cs.resolve(key)?;
    if rec.state.status.is_running() {
        return Ok(Outcome::Unchanged { name: rec.name });
    }
    started(cs, &rec, start(cs, &rec.id).await).await?;
    Ok(Outcome::Done)
}

/// `start -a [-i]` (and `run` without `-d`): starts the container and follows its output from
/// this start to its exit; with `stdin`, hands back its stdin.
pub async fn start_attached(
    cs: &Arc<Containers>,
    key: &str,
    stdin: bool,
) -> Result<Attached, ContainerError> {
    let rec = cs.resolve(key)?;
    let fifo = if stdin {
        Some(open_stdin(&rec.spec.dir).map_err(failed)?)
    } else {
        None
    };
    // Open the log before starting, at its current end: everything this run writes is ours.
    let log = open_log(&rec.spec.dir).map_err(failed)?;
    let mut file = tokio::fs::File::from_std(log);
    use tokio::io::AsyncSeekExt;
    file.seek(std::io::SeekFrom::End(0)).await.map_err(failed)?;
    started(cs, &rec, start(cs, &rec.id).await).await?;
    let mut stdin = None;
    if let Some(rw) = fifo {
        // The monitor has opened the read end. Write through a write-only handle, so that
        // writes fail (instead of blocking forever) once the container stops reading, and let
        // the name go (a later restart gets no stdin).
        let path = rec.spec.dir.join(crate::runtime::monitor::STDIN);
        use std::os::unix::fs::OpenOptionsExt;
        let wo = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&path);
        let _ = std::fs::remove_file(&path);
        drop(rw);
        if let Ok(f) = wo {
            use std::os::fd::AsRawFd;
            let _ = nix::fcntl::fcntl(
                f.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
            );
            stdin = Some(tokio::fs::File::from_std(f));
        }
    }
    Ok(Attached {
        output: follow_log(cs.clone(), rec.id, file, true, None),
        stdin,
    })
}

/// A container created with `--rm` that could not start is removed, as docker does.
async fn started(
    cs: &Arc<Containers>,
    rec: &Record,
    r: Result<Record, ContainerError>,
) -> Result<Record, ContainerError> {
    if r.is_err() && rec.request.rm && rec.state.status == Status::Created {
        let _ = remove(cs, rec).await;
    }
    r
}

/// Makes the container's stdin FIFO and opens its write end (read-write, so it never blocks).
fn open_stdin(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    let path = dir.join(crate::runtime::monitor::STDIN);
    let _ = std::fs::remove_file(&path);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
}

/// A signal by number or name, with or without `SIG` (`9`, `KILL`, `SIGKILL`).
pub fn parse_signal(s: &str) -> Result<Signal, ContainerError> {
    use std::str::FromStr;
    let s = s.trim();
    let bad = || ContainerError::Invalid(format!("invalid signal {s:?}"));
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

fn signal(rec: &Record, sig: Signal) -> Result<(), ContainerError> {
    if rec.state.pid <= 0 {
        return Err(failed(format!("container {} has no process", rec.name)));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(rec.state.pid), sig)
        .map_err(|e| failed(format!("signalling container {}: {e}", rec.name)))
}

/// `stop`: the image's STOPSIGNAL (default SIGTERM), then SIGKILL after `timeout` (10 s).
pub async fn stop(
    cs: &Arc<Containers>,
    key: &str,
    timeout: Option<Duration>,
) -> Result<Outcome, ContainerError> {
    let rec = cs.resolve(key)?;
    if !rec.state.status.can_kill() {
        let _ = cs.update(&rec.id, |r| r.state.manually_stopped = true);
        return Ok(Outcome::Unchanged { name: rec.name });
    }
    let rec = cs
        .update(&rec.id, |r| r.state.manually_stopped = true)?
        .unwrap_or(rec);
    let sig = parse_signal(&rec.stop_signal).unwrap_or(Signal::SIGTERM);
    let _ = signal(&rec, sig);
    let t = timeout.unwrap_or(Duration::from_secs(10));
    if !cs.wait_stopped(&rec.id, t).await {
        let _ = signal(&rec, Signal::SIGKILL);
        cs.wait_stopped(&rec.id, Duration::from_secs(60)).await;
    }
    Ok(Outcome::Done)
}

/// `kill [-s SIGNAL]` (SIGKILL by default).
pub async fn kill(
    cs: &Arc<Containers>,
    key: &str,
    sig: Option<&str>,
) -> Result<(), ContainerError> {
    let rec = cs.resolve(key)?;
    let sig = parse_signal(sig.unwrap_or("SIGKILL"))?;
    if !rec.state.status.can_kill() {
        return Err(ContainerError::Conflict(format!(
            "container {} is not running",
            rec.name
        )));
    }
    use Signal::*;
    if matches!(sig, SIGKILL | SIGTERM | SIGINT | SIGQUIT) {
        cs.update(&rec.id, |r| r.state.manually_stopped = true)?;
    }
    signal(&rec, sig)
}

/// The size of a `-t` container's terminal (rows, columns), passed to its monitor.
pub fn resize(cs: &Arc<Containers>, key: &str, rows: u16, cols: u16) -> Result<(), ContainerError> {
    let rec = cs.resolve(key)?;
    let conflict = ContainerError::Conflict;
    if !rec.state.status.is_running() {
        return Err(conflict(format!("container {} is not running", rec.name)));
    }
    if !rec.spec.tty {
        return Err(conflict(format!(
            "container {} has no terminal (start it with -t to resize one)",
            rec.name
        )));
    }
    if rows == 0 || cols == 0 {
        return Err(ContainerError::Invalid(
            "a terminal needs at least one row and one column".into(),
        ));
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a monitor that is not reading (yet) makes this fail instead of hang.
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(rec.spec.dir.join(crate::runtime::monitor::RESIZE))
        .and_then(|mut f| f.write_all(format!("{rows} {cols}\n").as_bytes()))
        .map_err(|e| {
            conflict(format!(
                "container {}: its terminal is not ready ({e}): try again",
                rec.name
            ))
        })
}

/// `wait`: the exit code, once the container has exited (or was removed by `--rm`).
pub async fn wait(cs: &Arc<Containers>, key: &str) -> Result<i32, ContainerError> {
    let rec = cs.resolve(key)?;
    let mut rx = cs.changed.subscribe();
    loop {
        match cs.get(&rec.id)? {
            Some(r) if r.state.status == Status::Exited => return Ok(r.state.exit_code),
            Some(_) => {}
            None => {
                return Ok(cs
                    .last_exit
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&rec.id).copied())
                    .unwrap_or(0))
            }
        }
        let _ = rx.changed().await;
    }
}

/// `rm [-f]`: a running container only with `force` (killed first).
pub async fn delete(cs: &Arc<Containers>, key: &str, force: bool) -> Result<(), ContainerError> {
    let rec = cs.resolve(key)?;
    if !rec.state.status.can_delete() {
        if !force {
            return Err(ContainerError::Conflict(format!(
                "cannot remove running container {}: stop it first, or use rm -f",
                rec.name
            )));
        }
        cs.update(&rec.id, |r| r.state.manually_stopped = true)?;
        let _ = signal(&rec, Signal::SIGKILL);
        cs.wait_stopped(&rec.id, Duration::from_secs(60)).await;
    }
    let rec = cs.get(&rec.id)?.unwrap_or(rec);
    remove(cs, &rec).await
}

/// `volume rm [-f]`: a volume no container uses (running or not, as docker); with `force`, a
/// missing volume is no error.
pub async fn remove_volume(
    cs: &Arc<Containers>,
    name: &str,
    force: bool,
) -> Result<(), ContainerError> {
    use super::volumes;
    if !volumes::exists(&cs.volumes, name) {
        if force {
            return Ok(());
        }
        return Err(volumes::VolumeError::NotFound(name.to_string()).into());
    }
    let data = volumes::data_dir(&cs.volumes, name);
    let users: Vec<String> = cs
        .list()?
        .into_iter()
        .filter(|r| r.spec.mounts.iter().any(|m| m.source == data))
        .map(|r| r.name)
        .collect();
    if !users.is_empty() {
        return Err(volumes::VolumeError::InUse(format!(
            "volume {name} is in use by container {}: remove the container first",
            users.join(", ")
        ))
        .into());
    }
    let (root, name) = (cs.volumes.clone(), name.to_string());
    tokio::task::spawn_blocking(move || volumes::remove(&root, &name))
        .await
        .map_err(failed)??;
    Ok(())
}
