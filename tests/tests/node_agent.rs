//! `reg serve` starts the node agent beside the registry; `reg pull`, `reg images` and
//! `reg inspect` go through its unix socket (REG_HOST), never to the store directly.

use std::process::Command;

use reg_tests::*;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn reg(host: &str, default_registry: &str, args: &[&str]) -> std::process::Output {
    Command::new(reg_bin())
        .args(args)
        .env("REG_HOST", host)
        .env("REG_NODE_DEFAULT_REGISTRY", default_registry)
        .env("REG_CONFIG_DIR", "/nonexistent-reg-config")
        .output()
        .expect("run reg")
}

#[test]
fn pull_images_inspect_through_the_agent() {
    if !is_root() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the node tests need root under CI=true");
        }
        skip("the node agent needs root");
        return;
    }
    let Some(layers) = busybox_layers() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Registry::start_all(tmp.path());
    push_layers(&client(), &server, "node/agent", "v1", &layers);
    let sock = tmp.path().join("node.sock");
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock)
            .expect("socket")
            .permissions()
            .mode()
            & 0o777,
        0o660
    );
    let host = format!("unix://{}", sock.display());

    let out = reg(&host, &server.host, &["pull", "node/agent:v1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pull: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("pull complete") && stdout.contains("Digest: sha256:"),
        "{stdout}"
    );

    let out = reg(&host, &server.host, &["images"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{}/node/agent", server.host)) && stdout.contains("v1"),
        "{stdout}"
    );

    let out = reg(
        &host,
        &server.host,
        &["inspect", &format!("{}/node/agent:v1", server.host)],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect prints JSON");
    assert!(
        v[0]["Id"]
            .as_str()
            .is_some_and(|id| id.starts_with("sha256:")),
        "{v}"
    );

    let out = reg(&host, &server.host, &["pull", "node/missing:v1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node/missing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_agent_is_a_clear_error() {
    let out = reg(
        "unix:///nonexistent/node.sock",
        "127.0.0.1:5000",
        &["images"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the node agent") && err.contains("reg node serve"),
        "{err}"
    );
}
