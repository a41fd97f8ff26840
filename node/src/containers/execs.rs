//! docker's exec instances: a process configuration created for a running container, started
//! once (attached or detached), then inspected for its exit code. Kept in memory, as dockerd
//! keeps them: they end with the agent, and with their container.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::error::{failed, ContainerError};
use super::service::Containers;

use super::streams::{self, ExecRequest, Output};

/// At most this many exec instances are kept; finished ones go first to make room.
const MAX_EXECS: usize = 4096;

/// One exec instance, as `GET /exec/{id}/json` shows it.
#[derive(Debug, Clone)]
pub struct Exec {
    pub id: String,
    pub container: String,
    /// The container's state directory (the resize FIFO's home).
    dir: PathBuf,
    pub request: ExecRequest,
    /// Whether the client said it attaches stdin (`-i`).
    pub open_stdin: bool,
    pub running: bool,
    pub started: bool,
    pub exit_code: Option<i32>,
    /// Creation order, to drop the oldest finished instances first.
    seq: u64,
}

#[derive(Default)]
pub struct Execs {
    map: Mutex<HashMap<String, Exec>>,
    seq: std::sync::atomic::AtomicU64,
}

impl Execs {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Exec>) -> T) -> T {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut m)
    }
}

/// `exec` inspect.
pub fn inspect(cs: &Containers, id: &str) -> Result<Exec, ContainerError> {
    cs.execs
        .with(|m| m.get(id).cloned())
        .ok_or_else(|| ContainerError::NotFound(format!("no such exec instance: {id}")))
}

/// `exec` create: an instance for running container `key`.
pub fn create(
    cs: &Arc<Containers>,
    key: &str,
    request: ExecRequest,
    open_stdin: bool,
) -> Result<Exec, ContainerError> {
    let rec = cs.resolve(key)?;
    if !rec.state.status.is_running() {
        return Err(ContainerError::Conflict(format!(
            "container {} is not running",
            rec.name
        )));
    }
    if request.cmd.is_empty() {
        return Err(ContainerError::Invalid("exec needs a command".into()));
    }
    let live: std::collections::HashSet<String> = cs.list()?.into_iter().map(|r| r.id).collect();
    let rec_for_events = rec.clone();
    let exec = Exec {
        id: crate::db::random_hex().map_err(failed)?,
        dir: rec.spec.dir.clone(),
        container: rec.id,
        request,
        open_stdin,
        running: false,
        started: false,
        exit_code: None,
        seq: cs
            .execs
            .seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    };
    cs.execs.with(|m| {
        // Instances of removed containers go, then the oldest finished ones.
        m.retain(|_, e| live.contains(&e.container));
        while m.len() >= MAX_EXECS {
            let oldest = m
                .values()
                .filter(|e| e.exit_code.is_some() || !e.started)
                .min_by_key(|e| e.seq)
                .map(|e| e.id.clone());
            match oldest {
                Some(id) => m.remove(&id),
                None => {
                    return Err(ContainerError::Conflict(format!(
                        "{MAX_EXECS} exec instances are running on this node: wait for some to end"
                    )))
                }
            };
        }
        m.insert(exec.id.clone(), exec.clone());
        Ok(())
    })?;
    cs.emit(
        &rec_for_events,
        &format!("exec_create: {}", exec.request.cmd.join(" ")),
        &[("execID", exec.id.clone())],
    );
    Ok(exec)
}

/// The FIFO an exec's terminal takes its size from.
fn resize_fifo(exec: &Exec) -> PathBuf {
    exec.dir.join(format!("exec-{}.resize", &exec.id[..16]))
}

/// `exec` start: runs the instance (once). Its output as JSON lines, ending with its exit code,
/// which inspect shows from the moment that line is sent; with `open_stdin`, its input.
pub async fn start(
    cs: &Arc<Containers>,
    id: &str,
    tty_size: Option<(u16, u16)>,
) -> Result<(Output, Option<tokio::process::ChildStdin>), ContainerError> {
    let exec = cs.execs.with(|m| match m.get_mut(id) {
        None => Err(ContainerError::NotFound(format!(
            "no such exec instance: {id}"
        ))),
        Some(e) if e.started => Err(ContainerError::Conflict(format!(
            "exec instance {id} has already been started"
        ))),
        Some(e) => {
            e.started = true;
            e.running = true;
            if tty_size.is_some() {
                e.request.tty_size = tty_size;
            }
            Ok(e.clone())
        }
    })?;
    let fifo = exec.request.tty.then(|| resize_fifo(&exec));
    if let Some(p) = &fifo {
        let _ = std::fs::remove_file(p);
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| failed(format!("the exec's resize FIFO: {e}")))?;
    }
    let finish = |code: i32| {
        cs.execs.with(|m| {
            if let Some(e) = m.get_mut(id) {
                e.running = false;
                e.exit_code = Some(code);
            }
        })
    };
    let started = streams::exec(
        cs,
        &exec.container,
        exec.request.clone(),
        exec.open_stdin,
        fifo.clone(),
    )
    .await;
    let (mut inner, stdin) = match started {
        Ok(s) => s,
        Err(e) => {
            finish(126);
            if let Some(p) = &fifo {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };
    if let Ok(rec) = cs.resolve(&exec.container) {
        cs.emit(
            &rec,
            &format!("exec_start: {}", exec.request.cmd.join(" ")),
            &[("execID", exec.id.clone())],
        );
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let (cs, id) = (cs.clone(), id.to_string());
    tokio::spawn(async move {
        while let Some(line) = inner.recv().await {
            let exit = serde_json::from_slice::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["exit"].as_i64());
            if let Some(code) = exit {
                cs.execs.with(|m| {
                    if let Some(e) = m.get_mut(&id) {
                        e.running = false;
                        e.exit_code = Some(code as i32);
                    }
                });
                if let Some(p) = &fifo {
                    let _ = std::fs::remove_file(p);
                }
                if let Ok(rec) = cs.resolve(&exec.container) {
                    cs.emit(
                        &rec,
                        "exec_die",
                        &[("execID", exec.id.clone()), ("exitCode", code.to_string())],
                    );
                }
            }
            let _ = tx.send(line);
        }
    });
    Ok((rx, stdin))
}

/// `exec` resize: before the start, the size it starts with; while it runs, applied now.
pub fn resize(cs: &Arc<Containers>, id: &str, rows: u16, cols: u16) -> Result<(), ContainerError> {
    if rows == 0 || cols == 0 {
        return Err(ContainerError::Invalid(
            "a terminal needs at least one row and one column".into(),
        ));
    }
    let exec = cs.execs.with(|m| {
        let e = m.get_mut(id)?;
        if !e.started {
            e.request.tty_size = Some((rows, cols));
        }
        Some(e.clone())
    });
    let exec =
        exec.ok_or_else(|| ContainerError::NotFound(format!("no such exec instance: {id}")))?;
    if !exec.request.tty {
        return Err(ContainerError::Conflict(format!(
            "exec instance {id} has no terminal (exec -t)"
        )));
    }
    if !exec.started {
        return Ok(());
    }
    if !exec.running {
        return Err(ContainerError::Conflict(format!(
            "exec instance {id} has ended"
        )));
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(resize_fifo(&exec))
        .and_then(|mut f| f.write_all(format!("{rows} {cols}\n").as_bytes()))
        .map_err(|e| {
            ContainerError::Conflict(format!(
                "exec instance {id}: its terminal is not ready ({e}): try again"
            ))
        })
}
