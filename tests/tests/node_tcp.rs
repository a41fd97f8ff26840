//! The node agent on TCP, as `dockerd -H tcp://… --tlsverify`: mutual TLS with certificates made
//! here by `openssl` (a CA, the agent's, a client's), driven by the real docker CLI and by
//! `reg -H tcp://…` with docker's `DOCKER_CERT_PATH` + `DOCKER_TLS_VERIFY`; the same router on
//! the unix socket beside it; plain TCP only on loopback; `--socket tcp://…` refused.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::is_root;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reg_tests::{peer, reg_bin, run, skip};

/// `reg node serve ARGS…` on a data dir of its own, stopped (SIGTERM, then SIGKILL) on drop.
struct Agent {
    child: Child,
    /// `127.0.0.1:PORT` of its TCP listener (asked for as port 0).
    tcp: String,
    socket: PathBuf,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Agent {
    /// Starts the agent with a unix socket under `dir` and `-H tcp://127.0.0.1:0` plus `extra`,
    /// and waits (with a deadline) until both listeners answer.
    fn start(dir: &Path, extra: &[&str]) -> Agent {
        let socket = dir.join("node.sock");
        let mut child = Command::new(reg_bin())
            .args(["node", "serve", "--data"])
            .arg(dir.join("data"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(["-H", "tcp://127.0.0.1:0"])
            .args(extra)
            .env("REG_LOG", "info")
            .env("REG_CONFIG_DIR", "/nonexistent-reg-config")
            .env_remove("REG_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn reg node serve");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("node agent listening on tcp://").nth(1) {
                    if let Some(t) = tx.take() {
                        let _ = t.send(rest.split_whitespace().next().unwrap_or("").to_string());
                    }
                }
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let mut agent = Agent {
            child,
            tcp: String::new(),
            socket,
            log,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => agent.tcp = addr,
            Err(_) => panic!("the agent did not listen on TCP; its log:\n{}", agent.log()),
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&agent.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "the agent's socket never answered; its log:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        agent
    }

    fn host(&self) -> String {
        format!("tcp://{}", self.tcp)
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, the agent's certificate (127.0.0.1 and localhost) and a client's, all made by openssl
/// under `dir`. The client's files are `dir/client/{ca,cert,key}.pem`, docker's layout.
struct Certs {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_dir: PathBuf,
}

fn key_and_request(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    let (key, csr) = (
        dir.join(format!("{name}-key.pem")),
        dir.join(format!("{name}.csr")),
    );
    run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-subj", &format!("/CN={cn}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    (key, csr)
}

fn sign(dir: &Path, csr: &Path, out: &Path, extensions: &str) {
    let ext = dir.join("ext.cnf");
    std::fs::write(&ext, extensions).expect("extensions file");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-in"])
        .arg(csr)
        .arg("-CA")
        .arg(dir.join("ca.pem"))
        .arg("-CAkey")
        .arg(dir.join("ca-key.pem"))
        .args(["-CAcreateserial", "-extfile"])
        .arg(&ext)
        .arg("-out")
        .arg(out));
}

fn make_certs(dir: &Path) -> Certs {
    std::fs::create_dir_all(dir).expect("certs dir");
    let ca = dir.join("ca.pem");
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=reg test CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(dir.join("ca-key.pem"))
        .arg("-out")
        .arg(&ca));
    let (server_key, csr) = key_and_request(dir, "server", "127.0.0.1");
    let server_cert = dir.join("server-cert.pem");
    sign(
        dir,
        &csr,
        &server_cert,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    let client_dir = dir.join("client");
    std::fs::create_dir_all(&client_dir).expect("client dir");
    let (client_key, csr) = key_and_request(dir, "client", "reg test client");
    sign(
        dir,
        &csr,
        &client_dir.join("cert.pem"),
        "extendedKeyUsage=clientAuth\n",
    );
    std::fs::copy(&client_key, client_dir.join("key.pem")).expect("client key");
    std::fs::copy(&ca, client_dir.join("ca.pem")).expect("client's CA");
    Certs {
        ca,
        server_cert,
        server_key,
        client_dir,
    }
}

impl Certs {
    fn server_flags(&self) -> Vec<String> {
        let p = |p: &PathBuf| p.display().to_string();
        vec![
            "--tlsverify".into(),
            "--tlscacert".into(),
            p(&self.ca),
            "--tlscert".into(),
            p(&self.server_cert),
            "--tlskey".into(),
            p(&self.server_key),
        ]
    }
}

/// A command with its own config dirs and no inherited agent address or TLS settings, killed
/// if it has not finished within a minute: (exit code, stdout, stderr).
fn output(cmd: &mut Command, home: &Path) -> (i32, String, String) {
    let mut child = cmd
        .env("HOME", home)
        .env("DOCKER_CONFIG", home.join("docker-config"))
        .env("REG_CONFIG_DIR", "/nonexistent-reg-config")
        .env_remove("REG_HOST")
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let (out_reader, err_reader) = reg_tests::drain_output(&mut child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("status") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned(),
        String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned(),
    )
}

/// Root, or a skip (a failure under CI=true, where the node tests must run).
fn root() -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("node agent tests need root under CI=true");
    }
    skip("the node agent needs root");
    false
}

#[test]
fn docker_and_reg_reach_the_agent_over_mutual_tls_and_no_client_certificate_is_refused() {
    if !root() || peer("openssl").is_none() {
        return;
    }
    let Some(docker) = peer("docker") else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = make_certs(&tmp.path().join("certs"));
    let flags = certs.server_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let agent = Agent::start(tmp.path(), &flags);
    let host = agent.host();
    let home = tmp.path().join("home");
    let client = |name: &str| certs.client_dir.join(name).display().to_string();
    let tls = [
        "--tlsverify".to_string(),
        "--tlscacert".into(),
        client("ca.pem"),
        "--tlscert".into(),
        client("cert.pem"),
        "--tlskey".into(),
        client("key.pem"),
    ];

    // docker with its certificate, over TLS on a loopback address.
    for args in [
        &["version", "--format", "{{.Server.APIVersion}}"][..],
        &["ps", "-a", "--format", "{{.ID}}"][..],
    ] {
        let (code, out, err) = output(
            Command::new(&docker)
                .args(&tls)
                .args(["-H", &host])
                .args(args),
            &home,
        );
        assert_eq!(code, 0, "docker {args:?}: {err}\nagent:\n{}", agent.log());
        if args[0] == "version" {
            assert_eq!(out.trim(), "1.44", "{out}");
        }
    }

    // The same CA, no client certificate: the handshake is refused, nothing is answered.
    let empty = tmp.path().join("no-certs");
    std::fs::create_dir_all(&empty).expect("empty cert dir");
    let (code, out, err) = output(
        Command::new(&docker)
            .args(["--tlsverify", "--tlscacert", &client("ca.pem")])
            .args(["-H", &host, "version", "--format", "{{.Server.APIVersion}}"])
            .env("DOCKER_CERT_PATH", &empty),
        &home,
    );
    assert_ne!(code, 0, "served without a client certificate: {out}");
    assert!(!out.contains("1.44"), "{out}\n{err}");
    assert!(err.contains("certificate"), "{err}");

    // reg, the docker way: DOCKER_CERT_PATH holds ca.pem, cert.pem and key.pem.
    let reg_ps = |env: &[(&str, &Path)], verify: bool| {
        let mut cmd = Command::new(reg_bin());
        cmd.args(["-H", &host, "ps", "-a"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if verify {
            cmd.env("DOCKER_TLS_VERIFY", "1");
        } else {
            cmd.env_remove("DOCKER_TLS_VERIFY");
        }
        output(&mut cmd, &home)
    };
    let (code, out, err) = reg_ps(&[("DOCKER_CERT_PATH", &certs.client_dir)], true);
    assert_eq!(code, 0, "reg ps over TLS: {err}\nagent:\n{}", agent.log());
    assert!(out.starts_with("CONTAINER ID"), "{out}");
    // Without DOCKER_TLS_VERIFY it speaks plain HTTP, which a TLS port does not answer.
    let (code, _, _) = reg_ps(&[("DOCKER_CERT_PATH", &certs.client_dir)], false);
    assert_ne!(code, 0, "plain HTTP answered on the TLS port");
    // A directory without the client's files: reg says which file it could not read.
    let (code, _, err) = reg_ps(&[("DOCKER_CERT_PATH", &empty)], true);
    assert_ne!(code, 0);
    assert!(err.contains("ca.pem"), "{err}");

    // The unix socket beside it serves the same API, without TLS.
    let (code, out, err) = output(
        Command::new(reg_bin()).args(["-H", &format!("unix://{}", agent.socket.display()), "ps"]),
        &home,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("CONTAINER ID"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&agent.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "socket mode {mode:o}");
}

#[test]
fn plain_tcp_is_served_on_loopback() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(tmp.path(), &[]);
    let home = tmp.path().join("home");
    let (code, out, err) = output(
        Command::new(reg_bin()).args(["-H", &agent.host(), "ps", "-a"]),
        &home,
    );
    assert_eq!(code, 0, "{err}\nagent:\n{}", agent.log());
    assert!(out.starts_with("CONTAINER ID"), "{out}");
    if let Some(docker) = peer("docker") {
        let (code, out, err) = output(
            Command::new(docker).args([
                "-H",
                &agent.host(),
                "version",
                "--format",
                "{{.Server.APIVersion}}",
            ]),
            &home,
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), "1.44");
    }
}

#[test]
fn tcp_beyond_loopback_without_tls_is_refused_at_startup() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    for host in ["tcp://0.0.0.0:0", "tcp://[::]:0"] {
        let (code, _, err) = output(
            Command::new(reg_bin())
                .args(["node", "serve", "-H", host, "--data"])
                .arg(&data),
            tmp.path(),
        );
        assert_eq!(code, 1, "{host}: {err}");
        assert!(err.contains("without TLS"), "{host}: {err}");
        assert!(
            err.contains(
                "--tlsverify --tlscacert ca.pem --tlscert server-cert.pem --tlskey server-key.pem"
            ),
            "{host}: {err}"
        );
    }
    // Refused before anything was made.
    assert!(!data.exists(), "the refused agent made its data dir");
    // Half the TLS flags are refused too, naming what is missing.
    let (code, _, err) = output(
        Command::new(reg_bin())
            .args([
                "node",
                "serve",
                "-H",
                "tcp://0.0.0.0:0",
                "--tlsverify",
                "--data",
            ])
            .arg(&data),
        tmp.path(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("node.tls_ca"), "{err}");
}

/// Regression: `--socket tcp://…` made a unix socket file named `tcp:` in the working directory.
#[test]
fn socket_flag_with_a_tcp_url_is_refused_and_makes_no_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = output(
        Command::new(reg_bin())
            .current_dir(tmp.path())
            .args([
                "node",
                "serve",
                "--socket",
                "tcp://127.0.0.1:2375",
                "--data",
            ])
            .arg(tmp.path().join("data")),
        tmp.path(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("-H tcp://127.0.0.1:2375"), "{err}");
    assert!(
        !tmp.path().join("tcp:").exists(),
        "a file named tcp: was made"
    );
    assert!(!tmp.path().join("data").exists());
}

/// Force-removes the named containers through `socket` when dropped (a failing test leaves none).
struct Remove<'a> {
    socket: &'a Path,
    names: &'a [&'a str],
}

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        let _ = Command::new(reg_bin())
            .args([
                "-H",
                &format!("unix://{}", self.socket.display()),
                "rm",
                "-f",
            ])
            .args(self.names)
            .env_remove("REG_HOST")
            .env("REG_CONFIG_DIR", "/nonexistent-reg-config")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn docker_pulls_runs_attached_and_execs_over_mutual_tls() {
    if !root() || peer("openssl").is_none() {
        return;
    }
    let Some(docker) = peer("docker") else { return };
    let Some(layers) = reg_tests::busybox_layers() else {
        return;
    };
    let registry = reg_tests::Registry::start();
    reg_tests::push_layers(&reg_tests::client(), &registry, "tls/run", "v1", &layers);
    let img = format!("{}/tls/run:v1", registry.host);
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = make_certs(&tmp.path().join("certs"));
    let flags = certs.server_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let agent = Agent::start(tmp.path(), &flags);
    let _cleanup = Remove {
        socket: &agent.socket,
        names: &["tls-fg", "tls-bg"],
    };
    let home = tmp.path().join("home");
    let client = |name: &str| certs.client_dir.join(name).display().to_string();
    let host = agent.host();
    let docker_tls = |args: &[&str]| {
        output(
            Command::new(&docker)
                .args(["--tlsverify", "--tlscacert", &client("ca.pem")])
                .args([
                    "--tlscert",
                    &client("cert.pem"),
                    "--tlskey",
                    &client("key.pem"),
                ])
                .args(["-H", &host])
                .args(args),
            &home,
        )
    };
    let b = "/bin/busybox";
    let (code, _, err) = docker_tls(&["pull", &img]);
    assert_eq!(code, 0, "pull: {err}\nagent:\n{}", agent.log());
    // The foreground run's attach and the exec are hijacked connections, here inside TLS.
    let (code, out, err) = docker_tls(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--name",
        "tls-fg",
        &img,
        b,
        "sh",
        "-c",
        "echo over tls; exit 4",
    ]);
    assert_eq!(code, 4, "run: {err}\nagent:\n{}", agent.log());
    assert_eq!(out, "over tls\n");
    let (code, _, err) = docker_tls(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "tls-bg",
        &img,
        b,
        "sleep",
        "60",
    ]);
    assert_eq!(code, 0, "run -d: {err}");
    let (code, out, err) = docker_tls(&["exec", "tls-bg", b, "sh", "-c", "echo exec; exit 5"]);
    assert_eq!(code, 5, "exec: {err}");
    assert_eq!(out, "exec\n");
    let (code, _, err) = docker_tls(&["rm", "-f", "tls-bg"]);
    assert_eq!(code, 0, "{err}");
}
