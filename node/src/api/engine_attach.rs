//! Docker's Engine API for streams a client holds open both ways: `attach` (what `docker run`
//! without `-d` and `docker start -a` use), exec instances (create, start, resize, inspect)
//! and a container's terminal size. A client that asks for `Upgrade: tcp` gets the connection
//! hijacked (101, then docker's 8-byte multiplexed frames without a terminal, raw bytes with
//! one; its input goes to the process); one that does not gets the output as the body.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::engine_containers::frame;
use super::error::ApiError;
use super::shared::{channel_body, flag, AgentState, Param};
use crate::containers::streams::{ExecRequest, Output};
use crate::containers::{control, execs};

/// How long a finished session still reads what the client sends, so that closing the
/// connection does not reset it before the client has read the end of the output.
const LINGER: Duration = Duration::from_secs(30);

/// Which of the output's streams the client wants, and how they are framed.
#[derive(Clone, Copy)]
struct Framing {
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl Framing {
    /// A line of the output (`{"stdout": …}`, `{"stderr": …}`, `{"exit": …}`) as the bytes the
    /// client reads, if it wants them.
    fn encode(self, line: &[u8]) -> Option<Bytes> {
        let v: Value = serde_json::from_slice(line).ok()?;
        let (n, text) = if let Some(t) = v["stdout"].as_str() {
            (1u8, t)
        } else if let Some(t) = v["stderr"].as_str() {
            (2u8, t)
        } else {
            return None;
        };
        if (n == 1 && !self.stdout) || (n == 2 && !self.stderr) {
            return None;
        }
        Some(if self.tty {
            Bytes::copy_from_slice(text.as_bytes())
        } else {
            frame(n, text.as_bytes())
        })
    }

    fn content_type(self) -> &'static str {
        if self.tty {
            "application/vnd.docker.raw-stream"
        } else {
            "application/vnd.docker.multiplexed-stream"
        }
    }
}

/// Where the client's input goes, once it may (a container's stdin exists from its start).
type Input<W> = Option<tokio::sync::oneshot::Receiver<W>>;

/// The answer to a request that streams `output` (and takes input): the connection hijacked
/// when the client asked for it, the output as the body otherwise.
/// `detach`: the keys that end the attachment and leave the input open (container attach).
fn session<W>(
    mut req: Request,
    framing: Framing,
    output: Output,
    input: Input<W>,
    detach: Option<Vec<u8>>,
) -> Response
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"));
    if !upgrade {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut output = output;
            while let Some(line) = output.recv().await {
                if let Some(b) = framing.encode(&line) {
                    if tx.send(b).is_err() {
                        return;
                    }
                }
            }
        });
        return Response::builder()
            .header(header::CONTENT_TYPE, framing.content_type())
            .body(channel_body(rx))
            .unwrap_or_else(|e| ApiError::internal(e).into_response());
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => relay(TokioIo::new(upgraded), framing, output, input, detach).await,
            Err(e) => tracing::debug!(error = %e, "a hijacked connection failed to upgrade"),
        }
    });
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(framing.content_type()),
    );
    r
}

/// Runs a hijacked connection: output to the client until it ends (then a half-close), the
/// client's input to `input` until the client half-closes (then the input is closed).
/// `detach` (an attachment to a container's terminal) changes the input's end, as dockerd's:
/// the client typing those keys ends the connection, and neither they nor the client's
/// half-close close the container's input, which stays open until its output ends.
async fn relay<S, W>(
    conn: S,
    framing: Framing,
    mut output: Output,
    input: Input<W>,
    detach: Option<Vec<u8>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(conn);
    // The input kept open at its end: (the sink, whether the client detached).
    let (kept_tx, mut kept_rx) = tokio::sync::oneshot::channel::<(W, bool)>();
    let reader = tokio::spawn(async move {
        if let Some(rx) = input {
            if let Ok(mut sink) = rx.await {
                let keep_open = detach.is_some();
                let mut keys = detach.map(super::detach::DetachKeys::new);
                let mut buf = vec![0u8; 32 * 1024];
                let mut detached = false;
                loop {
                    let n = match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let pass = match keys.as_mut() {
                        Some(k) => {
                            let (pass, keyed) = k.feed(&buf[..n]);
                            detached = keyed;
                            pass
                        }
                        None => buf[..n].to_vec(),
                    };
                    // Once the process stops reading, the rest is drained.
                    if sink.write_all(&pass).await.is_err() {
                        break;
                    }
                    if detached {
                        break;
                    }
                }
                if keep_open {
                    let _ = kept_tx.send((sink, detached));
                    if detached {
                        return;
                    }
                } else {
                    let _ = sink.shutdown().await;
                }
            }
        }
        // Whatever else comes is read and dropped until the client closes.
        let _ = tokio::io::copy(&mut rd, &mut tokio::io::sink()).await;
    });
    // The input held open until the output ends (the reader's end answers once).
    let mut kept = None;
    let mut input_done = false;
    loop {
        tokio::select! {
            line = output.recv() => match line {
                Some(line) => {
                    if let Some(b) = framing.encode(&line) {
                        if wr.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                }
                None => break,
            },
            end = &mut kept_rx, if !input_done => {
                input_done = true;
                match end {
                    Ok((sink, true)) => {
                        let _ = wr.shutdown().await;
                        // Detached: the input stays open while the container runs, and its
                        // output (ending with it) is read on without a client.
                        tokio::spawn(async move {
                            let _held = sink;
                            while output.recv().await.is_some() {}
                        });
                        return;
                    }
                    Ok((sink, false)) => kept = Some(sink),
                    Err(_) => {}
                }
            }
        }
    }
    drop(kept);
    let _ = wr.shutdown().await;
    // The client closes once it has read the end; one that does not is cut off after a while.
    let abort = reader.abort_handle();
    if tokio::time::timeout(LINGER, reader).await.is_err() {
        abort.abort();
    }
}

#[derive(Deserialize)]
pub struct AttachQuery {
    #[serde(default, deserialize_with = "flag")]
    stream: bool,
    #[serde(default, deserialize_with = "flag")]
    logs: bool,
    #[serde(default, deserialize_with = "flag")]
    stdin: bool,
    #[serde(default, deserialize_with = "flag")]
    stdout: bool,
    #[serde(default, deserialize_with = "flag")]
    stderr: bool,
    #[serde(default, rename = "detachKeys")]
    detach_keys: Option<String>,
}

/// `POST /containers/{id}/attach?stream=1&stdin=&stdout=&stderr=`.
pub async fn attach(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    Query(q): Query<AttachQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    if !q.stream && !q.logs {
        return Err(ApiError::bad_request(
            "attach needs stream=1 or logs=1 (with neither it would return at once)",
        ));
    }
    if !q.stream {
        return Err(ApiError::bad_request(
            "attach with logs=1 and without stream=1 is not supported by reg: read the logs \
             with GET /containers/{id}/logs",
        ));
    }
    let keys = q
        .detach_keys
        .as_deref()
        .filter(|k| !k.is_empty())
        .unwrap_or(super::detach::DEFAULT_DETACH_KEYS);
    let detach =
        super::detach::parse_detach_keys(keys).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let rec = st.containers.resolve(&id)?;
    let a = control::attach(&st.containers, &id, q.stdin, q.logs).await?;
    let framing = Framing {
        stdout: q.stdout,
        stderr: q.stderr,
        tty: rec.spec.tty,
    };
    // As dockerd: the keys are looked for only in a terminal's input (piped bytes pass), and
    // only a terminal's input outlives the attachment.
    Ok(session(
        req,
        framing,
        a.output,
        a.stdin,
        Some(detach).filter(|_| rec.spec.tty),
    ))
}

#[derive(Deserialize)]
pub struct SizeQuery {
    #[serde(default)]
    h: Option<u16>,
    #[serde(default)]
    w: Option<u16>,
}

impl SizeQuery {
    fn size(&self) -> Result<(u16, u16), ApiError> {
        match (self.h, self.w) {
            (Some(h), Some(w)) => Ok((h, w)),
            _ => Err(ApiError::bad_request("resize needs h and w")),
        }
    }
}

/// `POST /containers/{id}/resize?h=&w=`.
pub async fn resize(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    Query(q): Query<SizeQuery>,
) -> Result<Response, ApiError> {
    let (h, w) = q.size()?;
    control::resize(&st.containers, &id, h, w)?;
    Ok(StatusCode::OK.into_response())
}

/// docker's `ExecConfig`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecConfig {
    #[serde(default)]
    attach_stdin: bool,
    #[serde(default)]
    tty: bool,
    #[serde(default)]
    console_size: Option<Vec<u16>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    cmd: Vec<String>,
    #[serde(default)]
    privileged: bool,
    #[serde(default)]
    user: String,
    #[serde(default)]
    working_dir: String,
    #[serde(default)]
    detach_keys: String,
    // Which streams the client will read: it chooses at start, reg sends both.
    #[serde(default)]
    #[allow(dead_code)]
    attach_stdout: bool,
    #[serde(default)]
    #[allow(dead_code)]
    attach_stderr: bool,
}

fn console_size(v: Option<&[u16]>) -> Option<(u16, u16)> {
    match v {
        Some([rows, cols]) if *rows > 0 && *cols > 0 => Some((*rows, *cols)),
        _ => None,
    }
}

/// `POST /containers/{id}/exec`: 201 `{"Id"}`.
pub async fn exec_create(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    Json(c): Json<ExecConfig>,
) -> Result<Response, ApiError> {
    if c.privileged {
        return Err(ApiError::bad_request(
            "exec --privileged is not supported by reg: an exec gets its container's privileges",
        ));
    }
    if !c.detach_keys.is_empty() {
        return Err(ApiError::bad_request(
            "detach keys are not supported by reg yet: leave --detach-keys unset",
        ));
    }
    let request = ExecRequest {
        cmd: c.cmd,
        env: c.env.unwrap_or_default(),
        workdir: Some(c.working_dir).filter(|w| !w.is_empty()),
        user: Some(c.user).filter(|u| !u.is_empty()),
        tty: c.tty,
        tty_size: console_size(c.console_size.as_deref()),
    };
    let e = execs::create(&st.containers, &id, request, c.attach_stdin)?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "Id": e.id }))).into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ExecStart {
    #[serde(default)]
    detach: bool,
    #[serde(default)]
    tty: bool,
    #[serde(default)]
    console_size: Option<Vec<u16>>,
}

/// `POST /exec/{id}/start`: the process's streams on the (hijacked) connection, or with
/// `Detach` 200 at once.
pub async fn exec_start(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the exec start body: {e}")))?;
    let start: ExecStart = if bytes.iter().all(u8::is_ascii_whitespace) {
        ExecStart::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("the exec start body: {e}")))?
    };
    let e = execs::inspect(&st.containers, &id)?;
    if start.tty != e.request.tty && start.tty {
        return Err(ApiError::bad_request(
            "exec start asks for a terminal the exec was not created with (exec -t)",
        ));
    }
    let (mut output, stdin) = execs::start(
        &st.containers,
        &id,
        console_size(start.console_size.as_deref()),
    )
    .await?;
    if start.detach {
        // Nobody reads it: the output is dropped, the exit code kept for inspect.
        tokio::spawn(async move { while output.recv().await.is_some() {} });
        return Ok(StatusCode::OK.into_response());
    }
    let framing = Framing {
        stdout: true,
        stderr: true,
        tty: e.request.tty,
    };
    let input = stdin.map(|s| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(s);
        rx
    });
    let req = Request::from_parts(parts, axum::body::Body::empty());
    Ok(session(req, framing, output, input, None))
}

/// `POST /exec/{id}/resize?h=&w=`.
pub async fn exec_resize(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    Query(q): Query<SizeQuery>,
) -> Result<Response, ApiError> {
    let (h, w) = q.size()?;
    execs::resize(&st.containers, &id, h, w)?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /exec/{id}/json`.
pub async fn exec_inspect(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
) -> Result<Json<Value>, ApiError> {
    let e = execs::inspect(&st.containers, &id)?;
    let (entrypoint, arguments) = match e.request.cmd.split_first() {
        Some((first, rest)) => (first.clone(), rest.to_vec()),
        None => (String::new(), Vec::new()),
    };
    Ok(Json(serde_json::json!({
        "ID": e.id,
        "ContainerID": e.container,
        "Running": e.running,
        "ExitCode": e.exit_code,
        "CanRemove": false,
        "DetachKeys": "",
        "OpenStdin": e.open_stdin,
        "OpenStdout": true,
        "OpenStderr": true,
        "Pid": 0,
        "ProcessConfig": {
            "entrypoint": entrypoint,
            "arguments": arguments,
            "privileged": false,
            "tty": e.request.tty,
            "user": e.request.user.clone().unwrap_or_default(),
        },
    })))
}
