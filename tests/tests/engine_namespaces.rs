//! `docker run`'s sharing options through the real docker CLI on a reg node: `--pid`, `--ipc`
//! and `--uts` (the host's, or another container's namespaces), `--mount` (bind, volume,
//! tmpfs) and `--volumes-from`.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

fn ok(n: &Node, cli: &std::path::Path, args: &[&str]) -> String {
    let (code, out, err) = docker(n, cli, args);
    assert_eq!(code, 0, "docker {args:?}: {out}{err}");
    out
}

/// The inode of namespace `kind` of process `pid` (as `ls -l /proc/PID/ns/KIND` shows it).
fn ns_of(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[test]
fn pid_ipc_and_uts_namespaces_are_shared_as_asked() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    ok(&n, &cli, &["pull", &img]);
    ok(
        &n,
        &cli,
        &[
            "run",
            "-d",
            "--name",
            "main",
            "--hostname",
            "mainhost",
            &img,
            B,
            "sleep",
            "600",
        ],
    );
    let main_pid = ok(&n, &cli, &["inspect", "-f", "{{.State.Pid}}", "main"])
        .trim()
        .to_string();
    ok(
        &n,
        &cli,
        &[
            "run",
            "-d",
            "--name",
            "side",
            "--pid",
            "container:main",
            "--ipc",
            "container:main",
            &img,
            B,
            "sleep",
            "600",
        ],
    );
    let side_pid = ok(&n, &cli, &["inspect", "-f", "{{.State.Pid}}", "side"])
        .trim()
        .to_string();
    assert_eq!(ns_of(&side_pid, "pid"), ns_of(&main_pid, "pid"));
    assert_eq!(ns_of(&side_pid, "ipc"), ns_of(&main_pid, "ipc"));
    assert_ne!(ns_of(&side_pid, "uts"), ns_of(&main_pid, "uts"));
    // The sidecar sees main's processes.
    let ps = ok(&n, &cli, &["exec", "side", B, "ps", "-o", "args"]);
    assert_eq!(ps.matches("sleep 600").count(), 2, "{ps}");
    // --pid host and --uts host: the host's namespaces; the host keeps its hostname.
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let me = std::process::id().to_string();
    let out = ok(
        &n,
        &cli,
        &[
            "run",
            "--rm",
            "--pid",
            "host",
            "--uts",
            "host",
            &img,
            B,
            "sh",
            "-c",
            &format!("hostname; test -d /proc/{me} && echo sees-host-pids"),
        ],
    );
    assert_eq!(out, format!("{}sees-host-pids\n", host_name), "{out}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default(),
        host_name
    );
    // Joining a container that is not running is refused.
    ok(&n, &cli, &["stop", "-t", "0", "main"]);
    let (code, _, err) = docker(&n, &cli, &["restart", "-t", "0", "side"]);
    assert_ne!(code, 0);
    assert!(err.contains("not running"), "{err}");
    let (code, _, err) = docker(
        &n,
        &cli,
        &["run", "--rm", "--uts", "container:main", &img, B, "true"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("--uts"), "{err}");
    ok(&n, &cli, &["rm", "-f", "main", "side"]);
}

#[test]
fn mount_flags_and_volumes_from_mount_what_they_name() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    ok(&n, &cli, &["pull", &img]);
    let host_dir = n.tmp.path().join("shared");
    std::fs::create_dir_all(&host_dir).expect("dir");
    std::fs::write(host_dir.join("hello"), "from the host\n").expect("file");
    let bind = format!(
        "type=bind,source={},target=/host,readonly",
        host_dir.display()
    );
    let out = ok(
        &n,
        &cli,
        &[
            "run",
            "--name",
            "mounted",
            "--mount",
            &bind,
            "--mount",
            "type=volume,source=mdata,target=/data",
            "--mount",
            "type=tmpfs,target=/scratch,tmpfs-size=1048576",
            &img,
            B,
            "sh",
            "-c",
            "cat /host/hello; touch /host/x 2>/dev/null || echo ro; echo kept > /data/f; \
         grep ' /scratch ' /proc/mounts",
        ],
    );
    assert!(out.starts_with("from the host\nro\n"), "{out}");
    assert!(
        out.contains("tmpfs /scratch tmpfs") && out.contains("size=1024k"),
        "{out}"
    );
    // --volumes-from: the same mounts, read-only with :ro.
    let out = ok(
        &n,
        &cli,
        &[
            "run",
            "--rm",
            "--volumes-from",
            "mounted:ro",
            &img,
            B,
            "sh",
            "-c",
            "cat /data/f /host/hello; touch /data/y 2>/dev/null || echo ro",
        ],
    );
    assert_eq!(out, "kept\nfrom the host\nro\n");
    let (code, _, err) = docker(
        &n,
        &cli,
        &[
            "run",
            "--rm",
            "--mount",
            "type=bind,source=/srv,target=/s,bind-propagation=rshared",
            &img,
            B,
            "true",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("Propagation"), "{err}");
    ok(&n, &cli, &["rm", "mounted"]);
    ok(&n, &cli, &["volume", "rm", "mdata"]);
}
