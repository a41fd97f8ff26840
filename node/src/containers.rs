//! Containers through the agent. First increment: `POST /containers/run` runs a container in
//! the foreground and removes it afterwards (`docker run --rm` without `-d`/`-t`): the agent
//! starts a monitor process (a re-exec of `reg node monitor`) that runs [`crate::runtime`], and
//! streams its stdout and stderr back as JSON lines, ending with `{"exit": code}`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::agent::{api_error, AgentState};
use crate::runtime::Spec;
use reg_registry::Reference;

/// `reg run` options the agent understands so far.
#[derive(Debug, Deserialize)]
pub struct RunRequest {
    pub image: String,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub limits: crate::runtime::Limits,
}

fn new_id() -> String {
    let mut s = String::new();
    while s.len() < 64 {
        s.push_str(&uuid_hex());
    }
    s.truncate(64);
    s
}

fn uuid_hex() -> String {
    // Random enough for ids: the registry's random source (OS RNG through uuid).
    reg_registry::Digest::sha256_of(
        format!(
            "{:?}{:?}",
            std::time::SystemTime::now(),
            std::thread::current().id()
        )
        .as_bytes(),
    )
    .hex()
    .to_string()
}

/// The container's argv and env from the image config and the request (docker's rules:
/// a CMD replaces the image's Cmd, an entrypoint replaces Entrypoint and drops the image's Cmd).
fn command(config: &serde_json::Value, req: &RunRequest) -> (Vec<String>, Vec<String>, String) {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let c = &config["config"];
    let entrypoint = req
        .entrypoint
        .clone()
        .unwrap_or_else(|| strings(&c["Entrypoint"]));
    let cmd = if !req.cmd.is_empty() {
        req.cmd.clone()
    } else if req.entrypoint.is_some() {
        Vec::new()
    } else {
        strings(&c["Cmd"])
    };
    let mut env = strings(&c["Env"]);
    for e in &req.env {
        let key = e.split('=').next().unwrap_or(e);
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push("HOME=/root".into());
    }
    let cwd = req
        .workdir
        .clone()
        .or_else(|| c["WorkingDir"].as_str().map(str::to_string))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    (entrypoint.into_iter().chain(cmd).collect(), env, cwd)
}

pub async fn run(State(st): State<Arc<AgentState>>, Json(req): Json<RunRequest>) -> Response {
    let r = match Reference::parse(&req.image, &st.default_registry) {
        Ok(r) => r,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let (store, key) = (st.store.clone(), r.to_string());
    let image = match tokio::task::spawn_blocking(move || store.get(&key)).await {
        Ok(Ok(Some(i))) => i,
        Ok(Ok(None)) => {
            return api_error(
                StatusCode::NOT_FOUND,
                format!("no such image: {r} (pull it first)"),
            )
        }
        Ok(Err(e)) => return api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let id = new_id();
    let dir = st.containers.join(&id);
    let (args, env, cwd) = command(&image.config, &req);
    if args.is_empty() {
        return api_error(
            StatusCode::BAD_REQUEST,
            format!("no command: {r} has no Cmd or Entrypoint; give one after the image"),
        );
    }
    let spec = Spec {
        id: id.clone(),
        layers: image
            .chain
            .iter()
            .map(|c| st.store.snapshot_dir(c))
            .collect(),
        dir: dir.clone(),
        args,
        env,
        cwd,
        hostname: req.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
        limits: req.limits.clone(),
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", dir.display()),
        );
    }
    let spec_path = dir.join("spec.json");
    let written = serde_json::to_vec(&spec)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&spec_path, b));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&dir);
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", spec_path.display()),
        );
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let child = tokio::process::Command::new(exe)
        .args(["node", "monitor", "--spec"])
        .arg(&spec_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("starting the container monitor: {e}"),
            );
        }
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    tokio::spawn(async move {
        let pump = |pipe: Option<tokio::process::ChildStdout>,
                    tx: tokio::sync::mpsc::UnboundedSender<Bytes>| async move {
            let Some(mut p) = pipe else { return };
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = p.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let line = serde_json::json!({ "stdout": String::from_utf8_lossy(&buf[..n]) });
                let _ = tx.send(Bytes::from(format!("{line}\n")));
            }
        };
        let pump_err = |pipe: Option<tokio::process::ChildStderr>,
                        tx: tokio::sync::mpsc::UnboundedSender<Bytes>| async move {
            let Some(mut p) = pipe else { return };
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = p.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let line = serde_json::json!({ "stderr": String::from_utf8_lossy(&buf[..n]) });
                let _ = tx.send(Bytes::from(format!("{line}\n")));
            }
        };
        tokio::join!(
            pump(out.take(), tx.clone()),
            pump_err(err.take(), tx.clone())
        );
        let code = match child.wait().await {
            Ok(s) => s.code().unwrap_or(125),
            Err(_) => 125,
        };
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
        let _ = tx.send(Bytes::from(format!(
            "{}\n",
            serde_json::json!({ "exit": code, "id": id })
        )));
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
