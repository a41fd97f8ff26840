//! The cli's side of the agent: HTTP/1 over the agent's unix socket, and request bodies
//! streamed from this process (stdin, a build context).

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::BodyExt;

use super::shared::AgentError;

/// This process's stdin as a request body (read on a thread of its own; ends at end-of-file).
pub fn stdin_body() -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    writer_body(|w| {
        let mut stdin = std::io::stdin().lock();
        std::io::copy(&mut stdin, w).map(|_| ())
    })
}

/// A request body written by `produce` on a thread of its own (`reg build` streams the context
/// tar this way); an error it returns ends the body with that error.
pub fn writer_body(
    produce: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send + 'static,
) -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    struct Chunks(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);
    impl std::io::Write for Chunks {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .blocking_send(Ok(Bytes::copy_from_slice(buf)))
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    std::thread::spawn(move || {
        // Unbuffered: each write is a frame (stdin must reach the container as typed).
        if let Err(e) = produce(&mut Chunks(tx.clone())) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|r| (r.map(hyper::body::Frame::data), rx))
    });
    http_body_util::StreamBody::new(frames).boxed()
}

/// The cli's side: HTTP/1 over the agent's unix socket.
#[derive(Clone)]
pub struct AgentClient {
    socket: PathBuf,
}

impl AgentClient {
    /// `host` is `unix:///path/to/node.sock` (or a bare path).
    pub fn new(host: &str) -> Result<AgentClient, AgentError> {
        let path = host.strip_prefix("unix://").unwrap_or(host);
        if host.contains("://") && !host.starts_with("unix://") {
            return Err(AgentError::Protocol(format!(
                "unsupported host {host:?}: use unix:///path/to/node.sock"
            )));
        }
        Ok(AgentClient {
            socket: PathBuf::from(path),
        })
    }

    /// Sends one request; returns the status and the response body as a stream of lines
    /// handed to `on_line` as they arrive.
    pub async fn request(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        on_line: impl FnMut(&str),
    ) -> Result<u16, AgentError> {
        self.request_with_body(method, path_and_query, headers, Bytes::new(), on_line)
            .await
    }

    /// Like [`AgentClient::request`] with a JSON body.
    pub async fn request_with_body(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Bytes,
        on_line: impl FnMut(&str),
    ) -> Result<u16, AgentError> {
        let json = !body.is_empty();
        let body = http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed();
        self.request_streaming(method, path_and_query, headers, json, body, on_line)
            .await
    }

    /// Like [`AgentClient::request`], sending `body` as it comes (the request and the
    /// answer stream at the same time: `reg run -i` sends stdin this way).
    pub async fn request_streaming(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        json: bool,
        body: http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
        mut on_line: impl FnMut(&str),
    ) -> Result<u16, AgentError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| AgentError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| AgentError::Protocol(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", "node");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if json {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(body)
            .map_err(|e| AgentError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| AgentError::Protocol(e.to_string()))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            // A connection cut after the answer's last line (the agent stops reading a `-i`
            // body once the container ends) loses nothing: callers check their final line.
            let Ok(frame) = frame else { break };
            if let Some(data) = frame.data_ref() {
                pending.extend_from_slice(data);
                while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=pos).collect();
                    on_line(String::from_utf8_lossy(&line[..line.len() - 1]).as_ref());
                }
            }
        }
        if !pending.is_empty() {
            on_line(String::from_utf8_lossy(&pending).as_ref());
        }
        driver.abort();
        Ok(status)
    }

    /// A JSON request; non-2xx answers become errors with the agent's message.
    pub async fn json(
        &self,
        method: &str,
        path_and_query: &str,
    ) -> Result<serde_json::Value, AgentError> {
        self.json_body(method, path_and_query, &serde_json::Value::Null)
            .await
    }

    /// Like [`AgentClient::json`] with `body` (a [`super::wire`] type) as its JSON body.
    pub async fn send<B: serde::Serialize>(
        &self,
        method: &str,
        path_and_query: &str,
        body: &B,
    ) -> Result<serde_json::Value, AgentError> {
        let body = serde_json::to_value(body).map_err(|e| AgentError::Protocol(e.to_string()))?;
        self.json_body(method, path_and_query, &body).await
    }

    /// Like [`AgentClient::json`] with a JSON body (none for `null`); an empty answer
    /// (204) is `null`.
    pub async fn json_body(
        &self,
        method: &str,
        path_and_query: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, AgentError> {
        let bytes = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(serde_json::to_vec(body).map_err(|e| AgentError::Protocol(e.to_string()))?)
        };
        let mut text = String::new();
        let status = self
            .request_with_body(method, path_and_query, &[], bytes, |l| {
                text.push_str(l);
                text.push('\n');
            })
            .await?;
        let v: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| AgentError::Protocol(format!("{e}: {text}")))?
        };
        if !(200..300).contains(&status) {
            return Err(AgentError::Api {
                status,
                message: v["message"]
                    .as_str()
                    .unwrap_or("request failed")
                    .to_string(),
            });
        }
        Ok(v)
    }
}
