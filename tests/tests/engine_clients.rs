//! The Engine API's other clients, unmodified, against a reg node's socket: docker-compose
//! (Debian's, on docker-py) bringing a multi-service application up and down, docker-py and
//! testcontainers-python scenarios.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `program ARGS…` with `DOCKER_HOST` at the node, in `dir`: (exit code, stdout, stderr).
/// One still running after two minutes is killed and fails the test.
fn client(n: &Node, program: &Path, args: &[&str], dir: &Path) -> (i32, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("DOCKER_HOST", &n.host)
        .env("DOCKER_CONFIG", n.tmp.path().join("docker-config"))
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_API_VERSION")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let (out_reader, err_reader) = reg_tests::drain_output(&mut child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().expect("status") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} {args:?} did not finish within 120 s", program.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned(),
        String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned(),
    )
}

/// A port nothing listens on now (the kernel's pick).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Takes the project down even when the test fails half-way.
struct Down<'a> {
    n: &'a Node,
    compose: &'a Path,
    dir: &'a Path,
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = client(
            self.n,
            self.compose,
            &["-p", "regt", "down", "-v"],
            self.dir,
        );
    }
}

#[test]
fn docker_compose_brings_an_application_up_and_down() {
    let Some(n) = node() else { return };
    let Some(compose) = reg_tests::peer("docker-compose") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let port = free_port();
    let dir = n.tmp.path().join("app");
    std::fs::create_dir_all(&dir).expect("app dir");
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            r#"version: "3.8"
services:
  web:
    image: {img}
    command: ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/data"]
    ports: ["127.0.0.1:{port}:8080"]
    volumes: ["data:/data"]
    networks: [back]
  writer:
    image: {img}
    command: ["/bin/busybox", "sh", "-c", "echo $$GREETING > /data/index.html; exec /bin/busybox sleep 300"]
    environment:
      GREETING: hello from compose
    volumes: ["data:/data"]
    networks: [back]
    depends_on: [web]
networks:
  back: {{}}
volumes:
  data: {{}}
"#
        ),
    )
    .expect("compose file");
    let _down = Down {
        n: &n,
        compose: &compose,
        dir: &dir,
    };
    let (code, out, err) = client(&n, &compose, &["-p", "regt", "up", "-d"], &dir);
    assert_eq!(code, 0, "up: {out}\n{err}");
    let (code, out, err) = client(&n, &compose, &["-p", "regt", "ps"], &dir);
    assert_eq!(code, 0, "ps: {err}");
    assert!(
        out.contains("regt_web_1") && out.contains("regt_writer_1"),
        "{out}"
    );
    assert_eq!(out.matches(" Up ").count(), 2, "{out}");

    // The published port answers with what the other service wrote into the shared volume;
    // the services reach each other by name on their network.
    wait_until("the page through the published port", || {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = match std::net::TcpStream::connect_timeout(
            &addr,
            std::time::Duration::from_millis(300),
        ) {
            Ok(s) => s,
            Err(_) => return false,
        };
        // The port is held before the server in the container listens: never wait forever.
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(1)));
        use std::io::{Read, Write};
        let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("hello from compose")
    });
    let (code, out, err) = client(
        &n,
        &compose,
        &[
            "-p",
            "regt",
            "exec",
            "-T",
            "writer",
            "/bin/busybox",
            "wget",
            "-qO-",
            "http://web:8080/index.html",
        ],
        &dir,
    );
    assert_eq!(code, 0, "exec: {out}\n{err}");
    assert_eq!(out.trim(), "hello from compose");

    let (code, _, err) = client(&n, &compose, &["-p", "regt", "down", "-v"], &dir);
    assert_eq!(code, 0, "down: {err}");
    let left = n.reg(&["ps", "-a"]).1;
    assert!(!left.contains("regt_"), "{left}");
    let (_, nets, _) = n.reg(&["network", "ls"]);
    assert!(!nets.contains("regt_back"), "{nets}");
    let (_, vols, _) = n.reg(&["volume", "ls"]);
    assert!(!vols.contains("regt_data"), "{vols}");
}

/// A Python interpreter that has `module` (`None`, with a skip, when it is missing outside CI).
fn python_with(module: &str) -> Option<std::path::PathBuf> {
    let python = reg_tests::peer("python3")?;
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("python3 has no {module} module under CI=true (.ci/run installs it)");
    }
    reg_tests::skip(format!(
        "python3 has no {module} module; pip install it to run this test"
    ));
    None
}

/// Runs a Python `script` against the node with `IMG` set: it prints `ok` last when every
/// assertion in it held.
fn python_scenario(n: &Node, python: &Path, script: &str) {
    let dir = n.tmp.path().join("py");
    std::fs::create_dir_all(&dir).expect("py dir");
    let file = dir.join("scenario.py");
    std::fs::write(&file, script).expect("script");
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    std::env::set_var("IMG", &img);
    let (code, out, err) = client(n, python, &[file.to_str().expect("utf-8 path")], &dir);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.lines().last(), Some("ok"), "{out}\n{err}");
}

const DOCKER_PY: &str = r#"
import os, docker
img = os.environ["IMG"]
c = docker.from_env()
assert c.ping()
assert c.version()["ApiVersion"] == "1.44", c.version()

# run in the foreground: create, start, wait, logs; removed after.
out = c.containers.run(img, ["/bin/busybox", "echo", "hello"], remove=True)
assert out == b"hello\n", out

ct = c.containers.run(img, ["/bin/busybox", "sh", "-c", "echo started; exec /bin/busybox sleep 60"],
                      detach=True, labels={"suite": "py"}, environment={"A": "1"}, name="pyct")
ct.reload()
assert ct.status == "running", ct.status
assert ct.labels["suite"] == "py"
r = ct.exec_run(["/bin/busybox", "sh", "-c", "echo $A; exit 4"])
assert r.exit_code == 4 and r.output == b"1\n", r
assert [x.id for x in c.containers.list(filters={"label": "suite=py"})] == [ct.id]
for _ in range(200):
    if b"started" in ct.logs():
        break
assert b"started" in ct.logs()

net = c.networks.create("pynet", labels={"suite": "py"})
net.connect(ct, aliases=["pyalias"])
ct.reload()
assert "pynet" in ct.attrs["NetworkSettings"]["Networks"], ct.attrs["NetworkSettings"]
assert [x.name for x in c.networks.list(filters={"label": "suite=py"})] == ["pynet"]
net.disconnect(ct)
net.remove()

vol = c.volumes.create("pyvol", labels={"suite": "py"})
assert vol.attrs["Labels"] == {"suite": "py"}, vol.attrs
assert [v.name for v in c.volumes.list(filters={"label": "suite=py"})] == ["pyvol"]

ct.stop(timeout=1)
assert ct.wait()["StatusCode"] in (137, 143), "stopped"
ct.remove()
vol.remove()
assert img in c.images.get(img).tags
print("ok")
"#;

#[test]
fn docker_py_drives_containers_exec_networks_and_volumes() {
    let Some(n) = node() else { return };
    let Some(python) = python_with("docker") else {
        return;
    };
    python_scenario(&n, &python, DOCKER_PY);
}

const TESTCONTAINERS: &str = r#"
import os, urllib.request
from testcontainers.core.container import DockerContainer
from testcontainers.core.waiting_utils import wait_for_logs
img = os.environ["IMG"]
cmd = ["/bin/busybox", "sh", "-c",
       "/bin/busybox mkdir -p /www; echo tc-ok > /www/index.html; echo ready; "
       "exec /bin/busybox httpd -f -p 8080 -h /www"]
with DockerContainer(img).with_command(cmd).with_exposed_ports(8080) as c:
    wait_for_logs(c, "ready", timeout=30)
    host, port = c.get_container_host_ip(), c.get_exposed_port(8080)
    body = b""
    for _ in range(100):
        try:
            body = urllib.request.urlopen(f"http://{host}:{port}/index.html", timeout=5).read()
            break
        except OSError:
            import time; time.sleep(0.05)
    assert body == b"tc-ok\n", body
    cid = c.get_wrapped_container().id
import docker
try:
    docker.from_env().containers.get(cid)
    raise AssertionError("the container outlived its with-block")
except docker.errors.NotFound:
    pass
print("ok")
"#;

#[test]
fn testcontainers_python_runs_a_service_and_cleans_up() {
    let Some(n) = node() else { return };
    let Some(python) = python_with("testcontainers") else {
        return;
    };
    // Ryuk (the reaper) is an image from Docker Hub, which this machine cannot reach.
    std::env::set_var("TESTCONTAINERS_RYUK_DISABLED", "true");
    python_scenario(&n, &python, TESTCONTAINERS);
}

#[test]
fn docker_compose_up_in_the_foreground_shows_the_services_output() {
    let Some(n) = node() else { return };
    let Some(compose) = reg_tests::peer("docker-compose") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let dir = n.tmp.path().join("fg");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            r#"version: "3.8"
services:
  hello:
    image: {img}
    command: ["/bin/busybox", "sh", "-c", "echo hello-from-up; exit 0"]
"#
        ),
    )
    .expect("compose file");
    let down = |dir: &Path| {
        let _ = client(&n, &compose, &["-p", "regfg", "down"], dir);
    };
    // Attached: compose follows each container's output (attach with logs=1) to its end.
    let (code, out, err) = client(
        &n,
        &compose,
        &["-p", "regfg", "up", "--exit-code-from", "hello"],
        &dir,
    );
    down(&dir);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("hello-from-up"), "{out}\n{err}");
}
