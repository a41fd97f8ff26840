//! The cli's side of the agent: HTTP/1 over the agent's unix socket or TCP (with mutual TLS),
//! and request bodies streamed from this process (stdin, a build context).

use bytes::Bytes;
use http_body_util::BodyExt;

use super::listen::{Dial, TlsFiles};
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

/// The cli's side: HTTP/1 over the agent's unix socket or TCP, to docker's Engine API (paths
/// are sent under `/v1.44`), or with [`AgentClient::own`] to reg's extensions.
#[derive(Clone)]
pub struct AgentClient {
    dial: Dial,
    /// What every path is sent under: the Engine API's version (`/v1.44`), or reg's
    /// extensions' prefix ([`super::OWN_API_PREFIX`]).
    prefix: String,
}

impl AgentClient {
    /// `host` is `unix:///path/to/node.sock` (or a bare path).
    pub fn new(host: &str) -> Result<AgentClient, AgentError> {
        Self::connect(host, None)
    }

    /// `host` is `unix:///path/to/node.sock`, a bare path or `tcp://HOST:PORT`; with `tls`
    /// a TCP agent is verified against its CA and shown our certificate (docker's
    /// `--tlsverify`), else TCP is plain HTTP.
    pub fn connect(host: &str, tls: Option<&TlsFiles>) -> Result<AgentClient, AgentError> {
        Ok(AgentClient {
            dial: Dial::new(host, tls)?,
            // The version this build serves: no negotiation is needed.
            prefix: format!("/v{}", super::engine::ENGINE_API_VERSION),
        })
    }

    /// The same agent, its paths sent to reg's extensions (under [`super::OWN_API_PREFIX`]):
    /// the build and its context sync.
    pub fn own(&self) -> AgentClient {
        AgentClient {
            dial: self.dial.clone(),
            prefix: super::OWN_API_PREFIX.to_string(),
        }
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
        let mut pending = Vec::new();
        let status = self
            .exchange(method, path_and_query, headers, json, body, |_, data| {
                pending.extend_from_slice(data);
                while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=pos).collect();
                    on_line(String::from_utf8_lossy(&line[..line.len() - 1]).as_ref());
                }
            })
            .await?;
        if !pending.is_empty() {
            on_line(String::from_utf8_lossy(&pending).as_ref());
        }
        Ok(status)
    }

    /// A request whose answer is a byte stream (docker's multiplexed or raw streams are not
    /// made of lines): a 2xx answer's bytes go to `on_data` as they arrive; any other answer
    /// is an error with the agent's message.
    pub async fn request_bytes(
        &self,
        method: &str,
        path_and_query: &str,
        on_data: impl FnMut(&[u8]),
    ) -> Result<(), AgentError> {
        let empty = empty_body();
        let mut on_data = on_data;
        let mut refusal = Vec::new();
        let status = self
            .exchange(method, path_and_query, &[], false, empty, |status, data| {
                if (200..300).contains(&status) {
                    on_data(data);
                } else {
                    refusal.extend_from_slice(data);
                }
            })
            .await?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        let v: serde_json::Value = serde_json::from_slice(&refusal).unwrap_or_default();
        Err(AgentError::Api {
            status,
            message: v["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&refusal).trim().to_string()),
        })
    }

    /// Sends one request; the answer's status and its bytes as they arrive go to `on_data`.
    async fn exchange(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        json: bool,
        body: http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
        mut on_data: impl FnMut(u16, &[u8]),
    ) -> Result<u16, AgentError> {
        let (mut sender, driver) = self.open().await?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.prefix))
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
        while let Some(frame) = body.frame().await {
            // A connection cut after the answer's last line (the agent stops reading a `-i`
            // body once the container ends) loses nothing: callers check their final line.
            let Ok(frame) = frame else { break };
            if let Some(data) = frame.data_ref() {
                on_data(status, data);
            }
        }
        driver.abort();
        Ok(status)
    }

    /// Opens a connection and shakes hands, the connection driven by `driver` (with upgrades,
    /// so a hijacked connection can be taken over).
    async fn open(
        &self,
    ) -> Result<
        (
            hyper::client::conn::http1::SendRequest<
                http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
            >,
            tokio::task::JoinHandle<Result<(), hyper::Error>>,
        ),
        AgentError,
    > {
        let stream = self
            .dial
            .connect()
            .await
            .map_err(|source| AgentError::Connect {
                agent: self.dial.describe(),
                source,
            })?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| AgentError::Protocol(e.to_string()))?;
        Ok((sender, tokio::spawn(conn.with_upgrades())))
    }

    /// A request with `body` (JSON unless empty) whose answer is read later: returns once the
    /// status and headers are in (docker's wait answers them at once and the body at the
    /// container's exit, so a client can wait before it starts the container).
    pub async fn begin(&self, method: &str, path_and_query: &str) -> Result<Pending, AgentError> {
        let (mut sender, driver) = self.open().await?;
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.prefix))
            .header("host", "node")
            .body(empty_body())
            .map_err(|e| AgentError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| AgentError::Protocol(e.to_string()))?;
        Ok(Pending {
            status: resp.status().as_u16(),
            body: resp.into_body(),
            driver,
        })
    }

    /// docker's hijacked connection (`POST /containers/{id}/attach`, `POST /exec/{id}/start`):
    /// sent with `Connection: Upgrade`, `Upgrade: tcp`; once the agent answers 101 the
    /// connection is the process's streams both ways (docker's frames, or raw bytes with a
    /// terminal, out; its input in, a half-close ending it). Any other answer is an error with
    /// the agent's message.
    pub async fn hijack(
        &self,
        method: &str,
        path_and_query: &str,
        body: &serde_json::Value,
    ) -> Result<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>, AgentError> {
        let (mut sender, driver) = self.open().await?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.prefix))
            .header("host", "node")
            .header("connection", "Upgrade")
            .header("upgrade", "tcp");
        let body = if body.is_null() {
            empty_body()
        } else {
            req = req.header("content-type", "application/json");
            let bytes =
                serde_json::to_vec(body).map_err(|e| AgentError::Protocol(e.to_string()))?;
            http_body_util::Full::new(Bytes::from(bytes))
                .map_err(|never| match never {})
                .boxed()
        };
        let req = req
            .body(body)
            .map_err(|e| AgentError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| AgentError::Protocol(e.to_string()))?;
        if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            return Err(Pending {
                status: resp.status().as_u16(),
                body: resp.into_body(),
                driver,
            }
            .refusal()
            .await);
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|e| AgentError::Protocol(format!("the agent's hijacked connection: {e}")))?;
        // Handed over: the HTTP side of the connection has nothing left to do.
        let _ = driver.await;
        Ok(hyper_util::rt::TokioIo::new(upgraded))
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
    /// (204, or the Engine API's 304 "nothing changed", which docker's client takes as
    /// success) is `null`.
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
        if !(200..300).contains(&status) && status != 304 {
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

fn empty_body() -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// An answer whose status is in and whose body is still to come ([`AgentClient::begin`]).
pub struct Pending {
    status: u16,
    body: hyper::body::Incoming,
    /// The connection, driven until the answer is read (aborted with it).
    driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

impl Pending {
    /// The answer's status.
    pub fn status(&self) -> u16 {
        self.status
    }

    async fn bytes(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(Ok(frame)) = self.body.frame().await {
            if let Some(d) = frame.data_ref() {
                out.extend_from_slice(d);
            }
        }
        self.driver.abort();
        out
    }

    /// The answer as JSON (`null` when empty); a non-2xx one is an error with its message.
    pub async fn json(self) -> Result<serde_json::Value, AgentError> {
        if !(200..300).contains(&self.status) {
            return Err(self.refusal().await);
        }
        let bytes = self.bytes().await;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| AgentError::Protocol(format!("{e}: {}", String::from_utf8_lossy(&bytes))))
    }

    /// A refusal's status and docker's `{"message"}` as an error.
    async fn refusal(self) -> AgentError {
        let status = self.status;
        let bytes = self.bytes().await;
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        AgentError::Api {
            status,
            message: v["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string()),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // An answer nobody reads ends with its connection.
        self.driver.abort();
    }
}

/// docker's multiplexed stream (logs, attach and exec without a terminal) taken apart: each
/// frame is `[stream, 0, 0, 0, size (big endian u32)]` then `size` bytes of that stream
/// (0 stdin, 1 stdout, 2 stderr, 3 the daemon's own error). Bytes arrive in chunks that need
/// not follow frame bounds; what is pushed is kept until its frame is whole.
#[derive(Debug, Default)]
pub struct Demux {
    pending: Vec<u8>,
}

impl Demux {
    /// Takes `data` in, handing each whole frame's stream and payload to `out`.
    pub fn push(&mut self, data: &[u8], mut out: impl FnMut(u8, &[u8])) {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        while let Some(header) = self.pending.get(at..at + 8) {
            let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
            let Some(payload) = self.pending.get(at + 8..at + 8 + size) else {
                break;
            };
            out(header[0], payload);
            at += 8 + size;
        }
        self.pending.drain(..at);
    }

    /// Bytes of a frame cut off by the end of the stream (none when it ended cleanly).
    pub fn leftover(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Demux;

    /// Frames fed in `chunks` come out as `(stream, payload)` pairs, `leftover` bytes kept.
    #[track_caller]
    fn check(chunks: &[&[u8]], want: &[(u8, &[u8])], leftover: usize) {
        let mut d = Demux::default();
        let mut got: Vec<(u8, Vec<u8>)> = Vec::new();
        for c in chunks {
            d.push(c, |s, p| got.push((s, p.to_vec())));
        }
        let want: Vec<(u8, Vec<u8>)> = want.iter().map(|(s, p)| (*s, p.to_vec())).collect();
        assert_eq!(got, want);
        assert_eq!(d.leftover(), leftover);
    }

    #[test]
    fn frames_are_split_by_stream_whatever_the_chunking() {
        let two = b"\x01\0\0\0\0\0\0\x03hi\n\x02\0\0\0\0\0\0\x04err\n";
        check(&[two], &[(1, b"hi\n"), (2, b"err\n")], 0);
        let one_by_one: Vec<&[u8]> = two.chunks(1).collect();
        check(&one_by_one, &[(1, b"hi\n"), (2, b"err\n")], 0);
        check(&[&two[..5], &two[5..13]], &[(1, b"hi\n")], 2);
        check(&[b"\x01\0\0\0\0\0\0\0"], &[(1, b"")], 0);
        check(&[b"\x01\0\0\0\0\0\0\x09short"], &[], 13);
        check(&[], &[], 0);
    }
}
