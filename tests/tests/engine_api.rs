//! Docker's Engine API on the node agent, driven by the real docker CLI pointed at the agent's
//! socket (`docker -H unix://…`): version negotiation, `info`, `ps`, `images`, `inspect`, and a
//! filter reg does not support refused rather than ignored.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

use std::process::Command;

/// `docker -H <the node's socket> ARGS…` with a config dir of its own: (exit code, stdout,
/// stderr).
fn docker(n: &Node, docker: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(docker)
        .args(["-H", &n.host])
        .args(args)
        .env("DOCKER_CONFIG", n.tmp.path().join("docker-config"))
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .output()
        .expect("run docker");
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
