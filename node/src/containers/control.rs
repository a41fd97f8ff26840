//! What a user does to an existing container: start, attach, stop, kill,
//! resize its terminal, wait for it, remove it.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::error::{failed, ContainerError};
use super::service::{remove, start, Containers, Record, Status};
use super::streams::{follow_log, open_log, Follow, Output};

/// What a start or a stop found (docker answers 304 when it changed nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Container `name` was already running (start) or already not running (stop).
    Unchanged {
        name: String,
    },
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

/// A stream attached to a container (docker's `attach`, and `run` without `-d`, which attaches
/// before it starts): its output from now on, through its next run to that run's end (the
/// current run, if it is running). With `stdin`, its input: from its next start for a container
/// that is not running, from now on for one that is (while anything still reads it).
pub struct Attachment {
    pub output: Output,
    pub stdin: Option<tokio::sync::oneshot::Receiver<tokio::fs::File>>,
}

/// With `logs`, the output starts with everything the container logged so far.
pub async fn attach(
    cs: &Arc<Containers>,
    key: &str,
    stdin: bool,
    logs: bool,
) -> Result<Attachment, ContainerError> {
    let rec = cs.resolve(key)?;
    let running = rec.state.status.is_running();
    let (file, older) = if logs {
        (
            tokio::fs::File::from_std(open_log(&rec.spec.dir).map_err(failed)?),
            super::streams::rotated_logs(&rec.spec.dir),
        )
    } else {
        (log_at_end(&rec).await?, Vec::new())
    };
    let follow = if running {
        Follow::Running
    } else {
        Follow::NextRun {
            started_at: rec.state.started_at.clone(),
        }
    };
    // As docker: a container created without `-i` takes no input.
    let stdin = match (stdin && rec.request.open_stdin, running) {
        (false, _) => None,
        (true, true) => {
            // The input of a running container: one more writer of its FIFO, refused once
            // nobody reads it (its process or a client ended it).
            let Some(f) = running_stdin(&rec.spec.dir) else {
                return Err(ContainerError::Conflict(format!(
                    "the input of container {} has ended (its process closed it, or an attached \
                     client ended it): restart it with `docker start -ai` to type into it",
                    rec.name
                )));
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(f);
            Some(rx)
        }
        (true, false) => {
            let rw = open_stdin(&rec.spec.dir).map_err(failed)?;
            let (mut tx, rx) = tokio::sync::oneshot::channel();
            let (cs2, id, dir, since) = (
                cs.clone(),
                rec.id.clone(),
                rec.spec.dir.clone(),
                rec.state.started_at.clone(),
            );
            // Once the monitor has the read end (it opens it before the container runs), hand
            // over a write-only end; until then client input waits in its connection.
            tokio::spawn(async move {
                let mut changed = cs2.changed.subscribe();
                loop {
                    match cs2.get(&id) {
                        Ok(Some(r)) if r.state.started_at != since => {
                            if let Some(f) = hand_over_stdin(&dir, rw) {
                                let _ = tx.send(f);
                            }
                            return;
                        }
                        Ok(Some(_)) => {}
                        _ => return,
                    }
                    tokio::select! {
                        r = changed.changed() => if r.is_err() { return },
                        _ = tx.closed() => return,
                    }
                }
            });
            Some(rx)
        }
    };
    cs.emit(&rec, "attach", &[]);
    Ok(Attachment {
        output: follow_log(
            cs.clone(),
            rec.id,
            rec.spec.dir.clone(),
            file,
            older,
            follow,
            None,
        ),
        stdin,
    })
}

/// The container's log, opened at its current end.
async fn log_at_end(rec: &Record) -> Result<tokio::fs::File, ContainerError> {
    let log = open_log(&rec.spec.dir).map_err(failed)?;
    let mut file = tokio::fs::File::from_std(log);
    use tokio::io::AsyncSeekExt;
    file.seek(std::io::SeekFrom::End(0)).await.map_err(failed)?;
    Ok(file)
}

/// Once the monitor has opened the stdin FIFO's read end: a write-only handle to it, so that
/// writes fail (instead of blocking forever) once the container stops reading; the read-write
/// handle that kept it open is dropped.
pub(super) fn hand_over_stdin(dir: &std::path::Path, rw: std::fs::File) -> Option<tokio::fs::File> {
    let wo = running_stdin(dir);
    drop(rw);
    wo
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

/// A write end of a running container's stdin FIFO, when something still reads it.
fn running_stdin(dir: &std::path::Path) -> Option<tokio::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, so a FIFO without a reader fails (ENXIO) instead of waiting for one.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(dir.join(crate::runtime::monitor::STDIN))
        .ok()?;
    nix::fcntl::fcntl(
        f.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .ok()?;
    Some(tokio::fs::File::from_std(f))
}

/// Makes the container's stdin FIFO and opens its write end (read-write, so it never blocks).
pub(super) fn open_stdin(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
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
        .map_err(|e| failed(format!("signalling container {}: {e}", rec.name)))?;
    // A frozen process handles its signal only once thawed (stop and kill end a paused
    // container, as docker's do).
    if rec.state.paused {
        crate::runtime::cgroup::freeze(&rec.id, false).map_err(failed)?;
    }
    Ok(())
}

/// `pause`: freezes every process of the running container.
pub fn pause(cs: &Arc<Containers>, key: &str) -> Result<(), ContainerError> {
    let rec = cs.resolve(key)?;
    if !rec.state.status.is_running() {
        return Err(ContainerError::Conflict(format!(
            "container {} is not running",
            rec.name
        )));
    }
    if rec.state.paused {
        return Err(ContainerError::Conflict(format!(
            "container {} is already paused",
            rec.name
        )));
    }
    crate::runtime::cgroup::freeze(&rec.id, true).map_err(failed)?;
    cs.update(&rec.id, |r| r.state.paused = true)?;
    cs.emit(&rec, "pause", &[]);
    Ok(())
}

/// `unpause`: thaws a paused container.
pub fn unpause(cs: &Arc<Containers>, key: &str) -> Result<(), ContainerError> {
    let rec = cs.resolve(key)?;
    if !rec.state.status.is_running() || !rec.state.paused {
        return Err(ContainerError::Conflict(format!(
            "container {} is not paused",
            rec.name
        )));
    }
    crate::runtime::cgroup::freeze(&rec.id, false).map_err(failed)?;
    cs.update(&rec.id, |r| r.state.paused = false)?;
    cs.emit(&rec, "unpause", &[]);
    Ok(())
}

/// `restart [-t S] [-s SIGNAL]`: stop (when running), then start.
pub async fn restart(
    cs: &Arc<Containers>,
    key: &str,
    timeout: Option<Duration>,
    signal_name: Option<&str>,
) -> Result<(), ContainerError> {
    let rec = cs.resolve(key)?;
    stop(cs, &rec.id, timeout, signal_name).await?;
    start_detached(cs, &rec.id).await?;
    cs.emit(&rec, "restart", &[]);
    Ok(())
}

/// What `update` changes (unset: unchanged).
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub memory: Option<i64>,
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_period: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub blkio_weight: Option<u16>,
    pub restart: Option<String>,
}

/// `update`: new limits (applied to the cgroup at once when it runs) and restart policy.
pub fn update(cs: &Arc<Containers>, key: &str, u: Update) -> Result<(), ContainerError> {
    let rec = cs.resolve(key)?;
    if let Some(r) = &u.restart {
        super::service::RestartPolicy::parse(Some(r))?;
        if rec.request.rm && r != "no" {
            return Err(ContainerError::Invalid(
                "conflicting options: --restart and --rm (a removed container cannot restart)"
                    .into(),
            ));
        }
    }
    let mut limits = rec.spec.limits.clone();
    fn set<T>(slot: &mut Option<T>, v: Option<T>) {
        if v.is_some() {
            *slot = v;
        }
    }
    set(&mut limits.memory, u.memory);
    set(&mut limits.cpus, u.cpus);
    set(&mut limits.pids, u.pids);
    set(&mut limits.cpu_shares, u.cpu_shares);
    set(&mut limits.cpu_period, u.cpu_period);
    set(&mut limits.cpu_quota, u.cpu_quota);
    set(&mut limits.cpuset_cpus, u.cpuset_cpus);
    set(&mut limits.cpuset_mems, u.cpuset_mems);
    set(&mut limits.memory_swap, u.memory_swap);
    set(&mut limits.memory_reservation, u.memory_reservation);
    set(&mut limits.blkio_weight, u.blkio_weight);
    // `--cpus` replaces a quota given directly, and the other way round.
    if u.cpus.is_some() {
        limits.cpu_quota = None;
        limits.cpu_period = None;
    } else if u.cpu_quota.is_some() || u.cpu_period.is_some() {
        limits.cpus = None;
    }
    limits
        .check()
        .map_err(|e| ContainerError::Invalid(e.to_string()))?;
    if rec.state.status.is_running() {
        let mut spec = rec.spec.clone();
        spec.limits = limits.clone();
        crate::runtime::cgroup::update(&spec)
            .map_err(|e| ContainerError::Invalid(e.to_string()))?;
    }
    let updated = cs.update(&rec.id, |r| {
        r.spec.limits = limits.clone();
        r.request.limits = limits.clone();
        if let Some(p) = &u.restart {
            r.request.restart = Some(p.clone()).filter(|p| p != "no");
        }
    })?;
    if let Some(r) = updated {
        cs.emit(&r, "update", &[]);
    }
    Ok(())
}

/// `rename OLD NEW`.
pub fn rename(cs: &Arc<Containers>, key: &str, new: &str) -> Result<(), ContainerError> {
    let rec = cs.resolve(key)?;
    let new = new.trim_start_matches('/');
    super::create::check_name(new)?;
    if new == rec.name {
        return Err(ContainerError::Invalid(format!(
            "renaming container {new} to the name it already has"
        )));
    }
    // The name column is unique: a name in use is refused by the update itself.
    if let Some(renamed) = cs.update(&rec.id, |r| r.name = new.to_string())? {
        cs.emit(&renamed, "rename", &[("oldName", format!("/{}", rec.name))]);
    }
    Ok(())
}

/// `stop [-s SIGNAL]`: `signal`, else the image's STOPSIGNAL (default SIGTERM), then SIGKILL
/// after `timeout` (10 s).
pub async fn stop(
    cs: &Arc<Containers>,
    key: &str,
    timeout: Option<Duration>,
    signal_name: Option<&str>,
) -> Result<Outcome, ContainerError> {
    let asked = signal_name.map(parse_signal).transpose()?;
    let rec = cs.resolve(key)?;
    if !rec.state.status.can_kill() {
        let _ = cs.update(&rec.id, |r| r.state.manually_stopped = true);
        return Ok(Outcome::Unchanged { name: rec.name });
    }
    let rec = cs
        .update(&rec.id, |r| r.state.manually_stopped = true)?
        .unwrap_or(rec);
    let sig = asked.unwrap_or_else(|| parse_signal(&rec.stop_signal).unwrap_or(Signal::SIGTERM));
    if signal(&rec, sig).is_ok() {
        cs.emit(&rec, "kill", &[("signal", (sig as i32).to_string())]);
    }
    let t = timeout.unwrap_or(Duration::from_secs(10));
    if !cs.wait_stopped(&rec.id, t).await {
        let now = cs.get(&rec.id)?.unwrap_or_else(|| rec.clone());
        if signal(&now, Signal::SIGKILL).is_ok() {
            cs.emit(
                &now,
                "kill",
                &[("signal", (Signal::SIGKILL as i32).to_string())],
            );
        }
        cs.wait_stopped(&rec.id, Duration::from_secs(60)).await;
    }
    cs.emit(&rec, "stop", &[]);
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
    signal(&rec, sig)?;
    cs.emit(&rec, "kill", &[("signal", (sig as i32).to_string())]);
    Ok(())
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

/// What `wait` waits for (docker's `condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    /// reg's own `wait`: until it has exited (a created container is waited for).
    Exited,
    /// Until it is not running (a created or exited container answers at once).
    NotRunning,
    /// Until the end of its next run (or of the current one, if it is running).
    NextExit,
    /// Until it is removed (`run --rm`).
    Removed,
}

/// `wait`: the exit code, once `condition` holds. A container removed meanwhile (`--rm`)
/// answers with the exit code it had.
pub async fn wait(
    cs: &Arc<Containers>,
    key: &str,
    condition: WaitCondition,
) -> Result<i32, ContainerError> {
    let rec = cs.resolve(key)?;
    let mut rx = cs.changed.subscribe();
    let finished = rec.state.finished_at.clone();
    loop {
        match cs.get(&rec.id)? {
            Some(r) => {
                let s = &r.state;
                let done = match condition {
                    WaitCondition::Exited => s.status == Status::Exited,
                    WaitCondition::NotRunning => !s.status.is_running(),
                    WaitCondition::NextExit => !s.status.is_running() && s.finished_at != finished,
                    WaitCondition::Removed => false,
                };
                if done {
                    return Ok(s.exit_code);
                }
            }
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
