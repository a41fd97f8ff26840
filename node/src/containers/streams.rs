//! A container's output as JSON lines (`{"stdout": …}`, `{"stderr": …}`, with `time` for
//! logged records, ending with `{"exit": code}` when followed to its end): its log, followed or
//! not, and the processes `exec` runs in it.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc::UnboundedSender;

use super::create::merge_env;
use super::error::{failed, ContainerError};
use super::service::{Containers, Status};
use crate::runtime::monitor::LOG;

/// JSON lines, one `Bytes` each, as they come.
pub type Output = tokio::sync::mpsc::UnboundedReceiver<Bytes>;

pub(super) fn open_log(dir: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(dir.join(LOG))
}

/// Turns a log record into the stream's line.
fn forward(record: &str, tx: &UnboundedSender<Bytes>) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(record) else {
        return;
    };
    let stream = if v["stream"] == "stderr" {
        "stderr"
    } else {
        "stdout"
    };
    let line = serde_json::json!({ stream: v["log"], "time": v["time"] });
    let _ = tx.send(Bytes::from(format!("{line}\n")));
}

/// How far a log is followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Follow {
    /// What is there now.
    No,
    /// Until the container is not running.
    Running,
    /// Through the first run that starts after `started_at` (the start time it had), to its end.
    NextRun { started_at: String },
}

/// Streams a container's log from `file`'s position; when followed, to the end of the run
/// `follow` names, then its exit code.
/// The rotated log files of the container in `dir`, oldest first (`container.log.N` … `.1`).
pub(super) fn rotated_logs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut n = 1;
    let mut found = Vec::new();
    while dir.join(crate::runtime::monitor::rotated(n)).exists() {
        found.push(dir.join(crate::runtime::monitor::rotated(n)));
        n += 1;
    }
    found.reverse();
    found
}

/// Every complete record of `path`, in order.
async fn records_of(path: &Path, into: &mut Vec<String>) {
    let Ok(f) = tokio::fs::File::open(path).await else {
        return;
    };
    let mut r = tokio::io::BufReader::new(f);
    let mut line = String::new();
    loop {
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if line.ends_with('\n') => into.push(std::mem::take(&mut line)),
            Ok(_) => {}
        }
    }
}

/// Whether the log in `dir` is no longer the file `reader` reads (the monitor rotated it).
async fn rotated_away(dir: &Path, file: &tokio::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        tokio::fs::metadata(dir.join(LOG)).await,
        file.metadata().await,
    ) {
        (Ok(now), Ok(ours)) => now.ino() != ours.ino(),
        _ => false,
    }
}

/// Streams a container's log from `file`'s position, after every record of `older` (rotated
/// files, oldest first); when followed, to the end of the run `follow` names (onto the next
/// file whenever the log rotates), then its exit code.
pub(super) fn follow_log(
    cs: Arc<Containers>,
    id: String,
    dir: std::path::PathBuf,
    file: tokio::fs::File,
    older: Vec<std::path::PathBuf>,
    follow: Follow,
    tail: Option<usize>,
) -> Output {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let mut changed = cs.changed.subscribe();
        let mut older = older;
        let mut reader = tokio::io::BufReader::new(file);
        let mut pending = String::new();
        let mut first = tail;
        // Read again only when a record changed; in between, only the log file is polled.
        let mut state = cs.get(&id).ok().flatten().map(|r| r.state);
        loop {
            // Whether the container had ended before this read: then the log is complete.
            let ended = match (&state, &follow) {
                (None, _) => true,
                (Some(s), Follow::NextRun { started_at }) => {
                    s.status != Status::Running && s.started_at != *started_at
                }
                (Some(s), _) => s.status != Status::Running,
            };
            let mut batch = Vec::new();
            for path in older.drain(..) {
                records_of(&path, &mut batch).await;
            }
            loop {
                match reader.read_line(&mut pending).await {
                    Ok(0) | Err(_) => {
                        // At the end of a file the monitor has rotated away: on to the new one.
                        if follow == Follow::No || !rotated_away(&dir, reader.get_ref()).await {
                            break;
                        }
                        match tokio::fs::File::open(dir.join(LOG)).await {
                            Ok(f) => {
                                reader = tokio::io::BufReader::new(f);
                                pending.clear();
                            }
                            Err(_) => break,
                        }
                    }
                    Ok(_) if pending.ends_with('\n') => batch.push(std::mem::take(&mut pending)),
                    Ok(_) => {}
                }
            }
            if let Some(n) = first.take() {
                let skip = batch.len().saturating_sub(n);
                batch.drain(..skip);
            }
            for record in &batch {
                forward(record, &tx);
            }
            if tx.is_closed() {
                return;
            }
            if follow == Follow::No {
                return;
            }
            if ended {
                let code = match &state {
                    Some(s) => s.exit_code,
                    None => cs
                        .last_exit
                        .lock()
                        .ok()
                        .and_then(|m| m.get(&id).copied())
                        .unwrap_or(255),
                };
                let _ = tx.send(Bytes::from(format!(
                    "{}\n",
                    serde_json::json!({ "exit": code, "id": id })
                )));
                return;
            }
            tokio::select! {
                _ = changed.changed() => state = cs.get(&id).ok().flatten().map(|r| r.state),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
    rx
}

/// `logs [-f] [--tail N]`: the log from its start (its last `tail` records), with `follow`
/// until the container is no longer running.
pub fn logs(
    cs: &Arc<Containers>,
    key: &str,
    follow: bool,
    tail: Option<usize>,
) -> Result<Output, ContainerError> {
    let rec = cs.resolve(key)?;
    if rec.spec.log.discard {
        return Err(ContainerError::Invalid(
            "configured logging driver does not support reading (the container runs with --log-driver none)".into(),
        ));
    }
    let file = tokio::fs::File::from_std(open_log(&rec.spec.dir).map_err(failed)?);
    let follow = if follow { Follow::Running } else { Follow::No };
    let older = rotated_logs(&rec.spec.dir);
    Ok(follow_log(
        cs.clone(),
        rec.id,
        rec.spec.dir.clone(),
        file,
        older,
        follow,
        tail,
    ))
}

/// What `reg exec` asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub tty_size: Option<(u16, u16)>,
}

/// `exec`: runs a process inside the running container (a helper from the sealed binary joins
/// its namespaces and cgroup); its output and exit code as JSON lines, and with `interactive`
/// its stdin. With a terminal, `resize` names a FIFO of `ROWS COLS` lines for it.
pub async fn exec(
    cs: &Arc<Containers>,
    key: &str,
    req: ExecRequest,
    interactive: bool,
    resize: Option<std::path::PathBuf>,
) -> Result<(Output, Option<tokio::process::ChildStdin>), ContainerError> {
    let rec = cs.resolve(key)?;
    if !rec.state.status.is_running() {
        return Err(ContainerError::Conflict(format!(
            "container {} is not running",
            rec.name
        )));
    }
    if req.cmd.is_empty() {
        return Err(ContainerError::Invalid("exec needs a command".into()));
    }
    let mut env = rec.spec.env.clone();
    merge_env(&mut env, &req.env);
    let spec = crate::runtime::ExecSpec {
        id: rec.id.clone(),
        pid: rec.state.pid,
        args: req.cmd.clone(),
        env,
        cwd: req.workdir.clone().unwrap_or_else(|| rec.spec.cwd.clone()),
        user: req.user.clone().or_else(|| rec.spec.user.clone()),
        security: rec.spec.security.clone(),
        tty: req.tty,
        tty_size: req.tty.then(|| req.tty_size.unwrap_or((24, 80))),
        interactive,
        resize: resize.filter(|_| req.tty),
    };
    let json = serde_json::to_string(&spec).map_err(failed)?;
    let exe = cs.sealed_exe().await?;
    let mut child = tokio::process::Command::new(exe.path())
        .args(["node", "enter", "--spec"])
        .arg(json)
        .stdin(if interactive {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("starting the exec helper: {e}")))?;
    let stdin = child.stdin.take();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let out = child.stdout.take();
    let err = child.stderr.take();
    async fn pump<R: tokio::io::AsyncRead + Unpin>(
        pipe: Option<R>,
        name: &'static str,
        tx: UnboundedSender<Bytes>,
    ) {
        use tokio::io::AsyncReadExt;
        let Some(mut p) = pipe else { return };
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = p.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let line = serde_json::json!({ name: String::from_utf8_lossy(&buf[..n]) });
            let _ = tx.send(Bytes::from(format!("{line}\n")));
        }
    }
    tokio::spawn(async move {
        tokio::join!(
            pump(out, "stdout", tx.clone()),
            pump(err, "stderr", tx.clone())
        );
        let code = match child.wait().await {
            Ok(s) => s.code().unwrap_or(125),
            Err(_) => 125,
        };
        let _ = tx.send(Bytes::from(format!(
            "{}\n",
            serde_json::json!({ "exit": code })
        )));
    });
    Ok((rx, stdin))
}
