//! Docker's Engine API on the node agent, driven by the real docker CLI pointed at the agent's
//! socket (`docker -H unix://…`): version negotiation, `info`, `ps`, `images`, `inspect`, and a
//! filter reg does not support refused rather than ignored.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

use std::process::Command;

/// `docker -H <the node's socket> ARGS…` with a config dir of its own: (exit code, stdout,
/// stderr). A client still waiting after a minute (an answer the agent never finishes) is
/// killed and fails the test.
fn docker(n: &Node, docker: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(docker)
        .args(["-H", &n.host])
        .args(args)
        .env("DOCKER_CONFIG", n.tmp.path().join("docker-config"))
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run docker");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("docker's status").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("docker {args:?} did not finish within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("docker's output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_docker_cli_lists_and_inspects_through_the_engine_api() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let id = n.run_d(&args(
        &["--name", "eng", IMG],
        &sh("exec /bin/busybox sleep 60"),
    ));
    let (code, _, err) = n.reg(&["run", "--name", "done", IMG, B, "true"]);
    assert_eq!(code, 0, "{err}");

    // The client negotiates down to the agent's version (it is newer, or the same).
    let (code, out, err) = docker(&n, &cli, &["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "1.44");

    let (code, out, err) = docker(
        &n,
        &cli,
        &["ps", "--format", "{{.ID}} {{.Names}} {{.State}}"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("{} eng running", &id[..12]), "{out}");

    let (code, out, err) = docker(
        &n,
        &cli,
        &["ps", "-a", "--format", "{{.Names}}|{{.Status}}"],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("eng|Up ")), "{out}");
    assert!(
        lines.iter().any(|l| l.starts_with("done|Exited (0) ")),
        "{out}"
    );
    assert_eq!(lines.len(), 2, "{out}");

    let (code, out, err) = docker(
        &n,
        &cli,
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    );
    assert_eq!(code, 0, "{err}");
    let full = format!("{}/{IMG}", n.server.host);
    assert!(out.lines().any(|l| l == full), "{out}");

    let (code, out, err) = docker(
        &n,
        &cli,
        &[
            "inspect",
            "--format",
            "{{.State.Status}} {{.Name}} {{.Id}}",
            "eng",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("running /eng {id}"));

    // An image by its full name (slashes and the registry's port in the path).
    let image_id = n.inspect("eng")["Image"].as_str().unwrap_or("").to_string();
    let (code, out, err) = docker(
        &n,
        &cli,
        &["image", "inspect", "--format", "{{.Id}}", &full],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), image_id);

    let (code, out, err) = docker(&n, &cli, &["info", "--format", "{{.ContainersRunning}}"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "1");

    // Not supported yet: refused with a reason, never answered as if unfiltered.
    let (code, _, err) = docker(&n, &cli, &["ps", "--filter", "name=eng"]);
    assert_ne!(code, 0);
    assert!(err.contains("filter"), "{err}");

    let (code, _, err) = n.reg(&["rm", "-f", "eng", "done"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_docker_cli_runs_detached_reads_logs_stops_and_removes() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let script = "echo out $GREETING; echo err >&2; trap 'exit 3' TERM; while :; do /bin/busybox sleep 0.1; done";
    // The full name: docker would read `node/run:v1` as Docker Hub's. Pulled by reg: the
    // Engine API's pull (`POST /images/create`) is not served yet.
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = docker(
        &n,
        &cli,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-e",
            "GREETING=hi",
            &img,
            B,
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    assert_eq!(n.inspect("web")["Id"], id.as_str());
    wait_until("the output", || {
        docker(&n, &cli, &["logs", "web"]).1.contains("out hi")
    });
    // stdout and stderr arrive as docker's two streams.
    let (code, out, err) = docker(&n, &cli, &["logs", "web"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "out hi");
    assert_eq!(err.trim(), "err");

    let (code, _, err) = docker(&n, &cli, &["stop", "-t", "5", "web"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = docker(&n, &cli, &["wait", "web"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "3");
    assert_eq!(n.inspect("web")["State"]["Status"], "exited");
    // Starting it again: it runs; a second start answers 304 (the CLI is quiet about it).
    let (code, _, err) = docker(&n, &cli, &["start", "web"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(n.inspect("web")["State"]["Status"], "running");
    let (code, _, err) = docker(&n, &cli, &["rm", "-f", "web"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = docker(&n, &cli, &["inspect", "web"]);
    assert_ne!(code, 0, "removed");

    // A flag reg cannot honour yet is refused, and nothing is created.
    let (code, _, err) = docker(
        &n,
        &cli,
        &[
            "run",
            "-d",
            "--cpu-shares",
            "512",
            "--name",
            "no",
            &img,
            B,
            "true",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("CpuShares"), "{err}");
    let (code, _, _) = docker(&n, &cli, &["inspect", "no"]);
    assert_ne!(code, 0, "nothing was created");
}
