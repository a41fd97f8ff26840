//! docker's container lifecycle through the agent: `run -d`, `ps`, `logs`, `exec`, `stop`,
//! `kill`, `start`, `wait`, `rm`, `inspect`; restart policies; containers that outlive an agent
//! restart; and the security knobs (`-u`, capabilities, seccomp, the sealed binary).

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

use reg_tests::{tar_layer, LayerFile};

/// The parent pid of `pid` (a container's init → its monitor), from /proc.
fn parent_of(pid: i64) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    stat.rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

#[test]
fn detached_container_lives_through_ps_logs_exec_stop_start_and_rm() {
    let Some(n) = node() else { return };
    let script = sh(
        "echo started; i=0; while true; do echo tick $i; i=$((i+1)); /bin/busybox sleep 0.1; done",
    );
    let id = n.run_d(&args(&["--name", "ticker", IMG], &script));
    assert_eq!(id.len(), 64, "the full id: {id}");

    let (_, ps, _) = n.reg(&["ps"]);
    assert!(
        ps.contains("ticker") && ps.contains(&id[..12]) && ps.contains("Up "),
        "{ps}"
    );
    wait_until("three ticks in the log", || {
        n.reg(&["logs", "ticker"]).1.contains("tick 3")
    });
    let (_, tail, _) = n.reg(&["logs", "--tail", "2", "ticker"]);
    assert_eq!(tail.lines().count(), 2, "--tail 2: {tail}");

    // exec: the container's namespaces (hostname, pid 1 is the script), its env, its code.
    let (code, out, err) = n.reg(&["exec", "-e", "X=42", "ticker", B, "sh", "-c", "/bin/busybox hostname; echo $X; /bin/busybox cat /proc/1/cmdline | /bin/busybox tr '\\0' ' '; exit 3"]);
    assert_eq!(code, 3, "exec exit code: {out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], &id[..12], "exec sees the container's hostname");
    assert_eq!(lines[1], "42");
    assert!(
        lines[2].contains("while true"),
        "pid 1 is the container's: {out}"
    );
    let (code, _, err) = n.reg(&["exec", "ticker", "no-such-tool"]);
    assert_eq!(code, 127, "{err}");
    // exec -i takes input; exec -t gets a terminal from the container's own devpts.
    let (code, out, _) = n.reg_with_input(
        &[
            "exec",
            "-i",
            "ticker",
            B,
            "sh",
            "-c",
            "/bin/busybox wc -l; exit 5",
        ],
        b"a\nb\n",
    );
    assert_eq!(code, 5);
    assert_eq!(out.trim(), "2");
    let (code, out, err) = n.reg(&[
        "exec",
        "-t",
        "ticker",
        B,
        "sh",
        "-c",
        "/bin/busybox tty; /bin/busybox stty size",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("/dev/pts/") && out.contains("24 80"),
        "{out:?}"
    );

    // rm refuses a running container.
    let (code, _, err) = n.reg(&["rm", "ticker"]);
    assert_ne!(code, 0);
    assert!(err.contains("stop it first"), "{err}");

    // stop: sh as PID 1 ignores SIGTERM, so SIGKILL after the grace period → 137.
    let t0 = std::time::Instant::now();
    let (code, out, err) = n.reg(&["stop", "-t", "1", "ticker"]);
    assert_eq!((code, out.trim()), (0, "ticker"), "{err}");
    assert!(
        t0.elapsed().as_secs_f64() < 8.0,
        "stop took {:?}",
        t0.elapsed()
    );
    let v = n.inspect("ticker");
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 137);
    assert_eq!(v["Name"], "/ticker");
    let (_, ps, _) = n.reg(&["ps"]);
    assert!(!ps.contains("ticker"), "ps hides stopped containers: {ps}");
    let (_, ps, _) = n.reg(&["ps", "-a"]);
    assert!(ps.contains("Exited (137)"), "{ps}");
    let (code, out, _) = n.reg(&["wait", "ticker"]);
    assert_eq!((code, out.trim()), (0, "137"));
    let (code, _, err) = n.reg(&["exec", "ticker", B, "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("not running"), "{err}");

    // start again: same container, same filesystem, the log continues.
    let (code, _, err) = n.reg(&["start", &id[..8]]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(n.inspect(&id)["State"]["Status"], "running");
    wait_until("the second run's output", || {
        n.reg(&["logs", "ticker"]).1.matches("started").count() == 2
    });
    let (code, _, _) = n.reg(&["kill", "ticker"]);
    assert_eq!(code, 0);
    let (_, out, _) = n.reg(&["wait", "ticker"]);
    assert_eq!(out.trim(), "137");

    let (code, _, err) = n.reg(&["rm", "ticker"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = n.reg(&["inspect", "ticker"]);
    assert_ne!(code, 0);
    assert!(err.contains("no such container"), "{err}");
    assert_eq!(n.container_dirs(), 0);
    wait_until("the removed directory deleted", || {
        n.removed_dirs_left() == 0
    });
    assert!(cgroup_dirs(&id).is_empty(), "{:?}", cgroup_dirs(&id));
    assert!(n.monitors().is_empty());
}

#[test]
fn rm_f_logs_f_and_name_conflicts() {
    let Some(n) = node() else { return };
    let id = n.run_d(&args(
        &["--name", "sleeper", IMG],
        &sh("echo up; exec /bin/busybox sleep 600"),
    ));
    let (code, _, err) = n.reg(&["run", "-d", "--name", "sleeper", IMG]);
    assert_ne!(code, 0);
    assert!(err.contains("already in use"), "{err}");
    // Starting it again is refused, as reg's start always did (the Engine API answers 304,
    // which docker's cli takes as success).
    let (code, _, err) = n.reg(&["start", "sleeper"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("container sleeper is already running"),
        "{err}"
    );
    let (code, out, err) = n.reg(&["rm", "-f", "sleeper"]);
    assert_eq!((code, out.trim()), (0, "sleeper"), "{err}");
    assert!(cgroup_dirs(&id).is_empty());

    // logs -f follows to the end and returns when the container exits.
    let script =
        sh("for i in 1 2 3; do echo line $i; /bin/busybox sleep 0.2; done; echo oops >&2; exit 4");
    let id = n.run_d(&args(&[IMG], &script));
    let (code, out, err) = n.reg(&["logs", "-f", &id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "line 1\nline 2\nline 3\n");
    assert_eq!(err, "oops\n", "stderr stays stderr");
    let (_, out, _) = n.reg(&["wait", &id]);
    assert_eq!(out.trim(), "4");
    // A generated docker-style name.
    let name = n.inspect(&id)["Name"].as_str().unwrap_or("").to_string();
    assert!(name.starts_with('/') && name.contains('_'), "{name}");
    assert_eq!(n.reg(&["rm", &id]).0, 0);
}

#[test]
fn restart_policy_on_failure_counts_and_stops() {
    let Some(n) = node() else { return };
    let id = n.run_d(&args(
        &["--restart", "on-failure:2", IMG],
        &sh("echo run; exit 3"),
    ));
    wait_until("two restarts", || {
        let v = n.inspect(&id);
        v["RestartCount"] == 2 && v["State"]["Status"] == "exited"
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    let v = n.inspect(&id);
    assert_eq!(v["RestartCount"], 2, "no third restart");
    assert_eq!(v["State"]["ExitCode"], 3);
    assert_eq!(n.reg(&["logs", &id]).1.matches("run").count(), 3);
    let (code, _, err) = n.reg(&["run", "--rm", "--restart", "always", IMG]);
    assert_eq!(code, 125);
    assert!(err.contains("conflicting options"), "{err}");
}

#[test]
fn containers_outlive_an_agent_restart_and_are_reattached() {
    let Some(mut n) = node() else { return };
    let id = n.run_d(&args(
        &["--name", "survivor", IMG],
        &sh("i=0; while [ $i -lt 600 ]; do echo n $i; i=$((i+1)); /bin/busybox sleep 0.05; done"),
    ));
    wait_until("output", || n.reg(&["logs", "survivor"]).1.contains("n 2"));
    let pid = n.inspect(&id)["State"]["Pid"].as_i64().unwrap_or(0);
    assert!(pid > 0);

    // kill -9 the agent (and registry): the container keeps running and logging.
    n.server.kill9();
    let before = std::fs::read_to_string(
        n.tmp
            .path()
            .join(format!("node/containers/{id}/container.log")),
    )
    .map(|s| s.len())
    .unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = std::fs::read_to_string(
        n.tmp
            .path()
            .join(format!("node/containers/{id}/container.log")),
    )
    .map(|s| s.len())
    .unwrap_or(0);
    assert!(after > before, "logs keep flowing without an agent");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    n.server = reg_tests::Registry::start_all(n.tmp.path());
    n.wait_for_agent();
    let v = n.inspect("survivor");
    assert_eq!(v["State"]["Status"], "running", "re-attached");
    assert_eq!(v["State"]["Pid"], pid);
    let (code, _, err) = n.reg(&["exec", "survivor", B, "true"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(n.reg(&["kill", "-s", "TERM", "survivor"]).0, 0);
    // sh ignores SIGTERM as PID 1: still running; SIGKILL ends it, and the new agent sees it.
    assert_eq!(n.reg(&["kill", "survivor"]).0, 0);
    let (_, out, _) = n.reg(&["wait", "survivor"]);
    assert_eq!(out.trim(), "137");
    assert_eq!(n.reg(&["rm", "survivor"]).0, 0);
    assert!(cgroup_dirs(&id).is_empty());
}

#[test]
fn oom_killed_shows_in_inspect() {
    let Some(n) = node() else { return };
    let id = n.run_d(&args(
        &["--memory", "32m", IMG],
        &sh("x=$(/bin/busybox head -c 200000000 /dev/zero | /bin/busybox tr '\\0' a)"),
    ));
    let (_, out, _) = n.reg(&["wait", &id]);
    assert_eq!(out.trim(), "137");
    let v = n.inspect(&id);
    assert_eq!(v["State"]["OOMKilled"], true, "{v}");
    assert_eq!(v["HostConfig"]["Memory"], 32 << 20);
    assert_eq!(n.reg(&["rm", &id]).0, 0);
}

fn passwd_layer() -> Vec<u8> {
    tar_layer(&[
        LayerFile {
            path: "etc/passwd",
            mode: 0o644,
            data: b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        },
        LayerFile {
            path: "etc/group",
            mode: 0o644,
            data: b"root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
        },
    ])
}

#[test]
fn users_capabilities_and_rlimits() {
    let Some(n) = node_with(&[passwd_layer()]) else {
        return;
    };
    let id_cmd =
        sh("/bin/busybox id; echo $HOME; /bin/busybox grep CapEff /proc/self/status; ulimit -n");
    let (code, out, err) = n.run(&args(&["-u", "app", IMG], &id_cmd));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("uid=1000(app) gid=1000(app)") && out.contains("50(staff)"),
        "{out}"
    );
    assert!(out.contains("/home/app"), "HOME from passwd: {out}");
    assert!(
        out.contains("CapEff:\t0000000000000000"),
        "a non-root user has no effective caps: {out}"
    );
    let (_, out, _) = n.run(&args(&["-u", "4242:4343", IMG], &id_cmd));
    assert!(out.contains("uid=4242 gid=4343"), "{out}");
    let (code, _, err) = n.run(&args(&["-u", "ghost", IMG], &id_cmd));
    assert_eq!(code, 125);
    assert!(err.contains("unable to find user ghost"), "{err}");

    // nofile: docker's 1048576, or this host's hard limit if lower.
    let (_, out, _) = n.run(&args(&[IMG], &id_cmd));
    let hard: u64 = String::from_utf8_lossy(
        &std::process::Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .expect("sh")
            .stdout,
    )
    .trim()
    .parse()
    .unwrap_or(1_048_576);
    assert_eq!(
        out.lines().last().unwrap_or(""),
        hard.min(1_048_576).to_string(),
        "{out}"
    );

    // --ulimit, and a limit above the node's own hard limit refused with the reason.
    let (code, out, err) = n.run(&args(
        &["--ulimit", "nofile=512:1024", "--ulimit", "nproc=300", IMG],
        &sh("ulimit -n; ulimit -Hn; ulimit -u"),
    ));
    assert_eq!((code, out.as_str()), (0, "512\n1024\n300\n"), "{err}");
    let (code, _, err) = n.run(&["--ulimit", &format!("nofile={}", u64::MAX - 1), IMG]);
    assert_eq!(code, 125);
    assert!(err.contains("hard limit"), "{err}");
    let (code, _, err) = n.run(&["--ulimit", "bogus=1", IMG]);
    assert_eq!(code, 125);
    assert!(err.contains("unknown limit"), "{err}");

    let caps = |extra: &[&str]| {
        let (code, out, err) = n.run(&args(
            extra,
            &sh("/bin/busybox grep CapEff /proc/self/status"),
        ));
        assert_eq!(code, 0, "{err}");
        out.trim().trim_start_matches("CapEff:").trim().to_string()
    };
    assert_eq!(caps(&["--cap-drop", "ALL", IMG]), "0000000000000000");
    // NET_ADMIN is bit 12.
    let with_admin = u64::from_str_radix(&caps(&["--cap-add", "NET_ADMIN", IMG]), 16).unwrap_or(0);
    assert_eq!(with_admin, 0xa80425fb | 1 << 12);
    let without_chown = u64::from_str_radix(&caps(&["--cap-drop", "chown", IMG]), 16).unwrap_or(0);
    assert_eq!(without_chown, 0xa80425fb & !1);
    let privileged = u64::from_str_radix(&caps(&["--privileged", IMG]), 16).unwrap_or(0);
    assert!(privileged.count_ones() >= 38, "{privileged:x}");
    let (code, _, err) = n.run(&["--cap-add", "NOT_A_CAP", IMG]);
    assert_eq!(code, 125);
    assert!(err.contains("unknown capability"), "{err}");
}

#[test]
fn seccomp_default_profile_custom_profile_and_unconfined() {
    let Some(n) = node() else { return };
    // Namespaces and mounts are refused by the default profile even with CAP_SYS_ADMIN's
    // absence aside: unshare(2) fails with EPERM.
    let probe =
        sh("/bin/busybox unshare -u /bin/busybox true && echo unshare-ok || echo unshare-denied");
    let (_, out, err) = n.run(&args(&[IMG], &probe));
    assert!(out.contains("unshare-denied"), "{out}{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    // Adding SYS_ADMIN lets the namespace syscalls back in (as docker's profile does).
    let (_, out, err) = n.run(&args(&["--cap-add", "SYS_ADMIN", IMG], &probe));
    assert!(out.contains("unshare-ok"), "{out}{err}");
    let (_, out, err) = n.run(&args(&["--privileged", IMG], &probe));
    assert!(out.contains("unshare-ok"), "{out}{err}");

    // A docker-format profile from a file: allow everything but mkdir.
    let profile = n.tmp.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .expect("profile");
    let opt = format!("seccomp={}", profile.display());
    let mk = sh("/bin/busybox mkdir /x && echo made || echo refused");
    let (_, out, err) = n.run(&args(&["--security-opt", &opt, IMG], &mk));
    assert!(
        out.contains("refused") && err.contains("Permission denied"),
        "{out}{err}"
    );
    let (_, out, _) = n.run(&args(&[IMG], &mk));
    assert!(out.contains("made"), "{out}");
    let (_, out, _) = n.run(&args(
        &[
            "--security-opt",
            "seccomp=unconfined",
            "--cap-add",
            "SYS_ADMIN",
            IMG,
        ],
        &probe,
    ));
    assert!(out.contains("unshare-ok"), "{out}");
    let bad = n.tmp.path().join("bad.json");
    std::fs::write(&bad, "{not json").expect("write");
    let (code, _, err) = n.run(&["--security-opt", &format!("seccomp={}", bad.display()), IMG]);
    assert_eq!(code, 125);
    assert!(err.contains("seccomp profile"), "{err}");
}

#[test]
fn the_reg_binary_cannot_be_reached_through_proc_exe() {
    let Some(n) = node() else { return };
    let id = n.run_d(&args(&[IMG], &sh("exec /bin/busybox sleep 600")));
    let pid = n.inspect(&id)["State"]["Pid"].as_i64().unwrap_or(0);
    let ppid = parent_of(pid);
    // The monitor (the container's parent) runs from a sealed memfd, not from the reg file.
    let exe = std::fs::read_link(format!("/proc/{ppid}/exe")).expect("monitor exe");
    assert!(
        exe.display().to_string().starts_with("/memfd:reg"),
        "{}",
        exe.display()
    );
    let w = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{ppid}/exe"));
    if let Ok(mut f) = w {
        use std::io::Write;
        assert!(
            f.write_all(b"pwned").is_err(),
            "the sealed copy refused the write"
        );
    }
    // A process started inside by exec also runs the user's binary, and `reg exec`'s helper
    // itself is sealed: the container's init sees busybox as its own exe.
    let (code, out, _) = n.reg(&["exec", &id, B, "readlink", "/proc/1/exe"]);
    assert_eq!((code, out.trim()), (0, "/bin/busybox"));
    assert_eq!(n.reg(&["rm", "-f", &id]).0, 0);
}

#[test]
fn volumes_bind_mounts_and_read_only() {
    let Some(n) = node() else { return };
    let host_dir = n.tmp.path().join("shared");
    std::fs::create_dir_all(&host_dir).expect("mkdir");
    std::fs::write(host_dir.join("in.txt"), "from the host\n").expect("write");
    let bind = format!("{}:/mnt/host", host_dir.display());
    let (code, out, err) = n.run(&args(
        &["-v", &bind, IMG],
        &sh("/bin/busybox cat /mnt/host/in.txt; echo back > /mnt/host/out.txt"),
    ));
    assert_eq!((code, out.as_str()), (0, "from the host\n"), "{err}");
    assert_eq!(
        std::fs::read_to_string(host_dir.join("out.txt")).unwrap_or_default(),
        "back\n",
        "writes reach the host"
    );
    let ro = format!("{bind}:ro");
    let (_, out, _) = n.run(&args(
        &["-v", &ro, IMG],
        &sh("echo x > /mnt/host/ro.txt && echo wrote || echo refused"),
    ));
    assert_eq!(out.trim(), "refused", "read-only bind");

    // A named volume survives its containers and is shared by the next one.
    let (code, out, err) = n.reg(&["volume", "create", "data1"]);
    assert_eq!((code, out.trim()), (0, "data1"), "{err}");
    let (code, _, err) = n.run(&args(
        &["-v", "data1:/data", IMG],
        &sh("echo kept > /data/f"),
    ));
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = n.run(&args(
        &["-v", "data1:/data:ro", IMG],
        &sh("/bin/busybox cat /data/f"),
    ));
    assert_eq!(out, "kept\n");
    // Auto-created by -v; listed; in use → refused; removed once unused.
    let id = n.run_d(&args(
        &["-v", "data2:/d", IMG],
        &sh("exec /bin/busybox sleep 600"),
    ));
    let (_, ls, _) = n.reg(&["volume", "ls", "-q"]);
    assert_eq!(ls, "data1\ndata2\n");
    let (code, _, err) = n.reg(&["volume", "rm", "data2"]);
    assert_ne!(code, 0);
    assert!(err.contains("in use by container"), "{err}");
    assert_eq!(n.inspect(&id)["Mounts"][0]["Destination"], "/d");
    assert_eq!(n.reg(&["rm", "-f", &id]).0, 0);
    assert_eq!(n.reg(&["volume", "rm", "data1", "data2"]).0, 0);
    let (_, ls, _) = n.reg(&["volume", "ls", "-q"]);
    assert_eq!(ls, "");

    // A symlink in the image pointing at an absolute path stays inside the rootfs.
    let (code, out, err) = n.run(&args(
        &["-v", &bind, IMG],
        &sh("/bin/busybox ls /mnt/host/in.txt"),
    ));
    assert_eq!((code, out.trim()), (0, "/mnt/host/in.txt"), "{err}");
    let (code, _, err) = n.run(&["-v", "relative/path", IMG]);
    assert_eq!(code, 125);
    assert!(err.contains("must be absolute"), "{err}");
}

#[test]
fn a_new_volume_starts_with_what_the_image_has_there() {
    let seed = tar_layer(&[
        LayerFile {
            path: "seed/conf/app.conf",
            mode: 0o640,
            data: b"port=80\n",
        },
        LayerFile {
            path: "seed/run.sh",
            mode: 0o755,
            data: b"#!/bin/sh\n",
        },
    ]);
    let Some(n) = node_with(&[seed]) else { return };
    // A new named volume where the image has files: it starts with a copy, modes kept.
    let (code, out, err) = n.run(&args(
        &["-v", "seeded:/seed", IMG],
        &sh("/bin/busybox cat /seed/conf/app.conf; \
             /bin/busybox stat -c '%a %n' /seed/conf/app.conf /seed/run.sh; \
             echo local > /seed/conf/app.conf"),
    ));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("port=80\n"), "{out}");
    assert!(out.contains("640 /seed/conf/app.conf"), "{out}");
    assert!(out.contains("755 /seed/run.sh"), "{out}");
    // No longer empty: the next container sees the volume's content, not the image's again.
    let (_, out, _) = n.run(&args(
        &["-v", "seeded:/seed", IMG],
        &sh("/bin/busybox cat /seed/conf/app.conf"),
    ));
    assert_eq!(out, "local\n");
    // An anonymous volume is filled too; a host directory never is.
    let (_, out, _) = n.run(&args(&["-v", "/seed", IMG], &sh("/bin/busybox ls /seed")));
    assert!(out.contains("run.sh"), "{out}");
    let host = n.tmp.path().join("empty-host-dir");
    std::fs::create_dir_all(&host).expect("mkdir");
    let bind = format!("{}:/seed", host.display());
    let (code, out, err) = n.run(&args(&["-v", &bind, IMG], &sh("/bin/busybox ls /seed")));
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(std::fs::read_dir(&host).is_ok_and(|mut d| d.next().is_none()));
    assert_eq!(n.reg(&["volume", "rm", "seeded"]).0, 0);
}

#[test]
fn host_network_info_and_version() {
    let Some(n) = node() else { return };
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let ns = |extra: &[&str]| {
        let (code, out, err) = n.run(&args(
            extra,
            &sh("/bin/busybox readlink /proc/self/ns/net; /bin/busybox hostname"),
        ));
        assert_eq!(code, 0, "{err}");
        out
    };
    let host_net = std::fs::read_link("/proc/self/ns/net")
        .expect("ns")
        .display()
        .to_string();
    let out = ns(&["--network", "host", IMG]);
    assert!(
        out.starts_with(&host_net),
        "host network shares the namespace: {out}"
    );
    assert!(out.ends_with(&host_name), "and the host's name: {out}");
    let out = ns(&[IMG]);
    assert!(!out.starts_with(&host_net), "{out}");
    let out = ns(&["--network", "none", IMG]);
    assert!(!out.starts_with(&host_net), "{out}");
    let (code, _, err) = n.run(&["--network", "nosuchnet", IMG]);
    assert_eq!(code, 125);
    assert!(err.contains("network nosuchnet not found"), "{err}");

    let id = n.run_d(&args(&[IMG], &sh("exec /bin/busybox sleep 600")));
    let (code, out, err) = n.reg(&["info"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Containers: 1") && out.contains("Running: 1"),
        "{out}"
    );
    assert!(
        out.contains("Images: 1") && out.contains("Storage Driver: overlay"),
        "{out}"
    );
    assert!(out.contains("Cgroup Version: "), "{out}");
    let (code, out, err) = n.reg(&["version"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Client:") && out.contains("Server (node agent):"),
        "{out}"
    );
    assert_eq!(n.reg(&["rm", "-f", &id]).0, 0);
}

#[test]
fn run_i_streams_stdin_to_the_container() {
    let Some(n) = node() else { return };
    let run_i = |input: &[u8], script: &str| {
        n.reg_with_input(&["run", "-i", "--rm", IMG, B, "sh", "-c", script], input)
    };
    let (code, out, err) = run_i(b"one\ntwo\nthree\n", "/bin/busybox wc -l");
    assert_eq!((code, out.trim()), (0, "3"), "{err}");
    // 4 MiB through the pipe, counted inside.
    let big = vec![b'x'; 4 << 20];
    let (code, out, err) = run_i(&big, "/bin/busybox wc -c");
    assert_eq!(
        (code, out.trim()),
        (0, (4u32 << 20).to_string().as_str()),
        "{err}"
    );
    // A container that stops reading early still ends.
    let (code, out, err) = run_i(&big, "/bin/busybox head -c 5; echo; exit 9");
    assert_eq!((code, out.as_str()), (9, "xxxxx\n"), "{err}");
    // Without -i, stdin is empty.
    let (code, out, _) = n.run(&[IMG, B, "wc", "-c"]);
    assert_eq!((code, out.trim()), (0, "0"));
    // -t: a pseudo-terminal inside (24x80 when the client has none); -it drives a shell.
    let (code, out, err) = n.run(&[
        "-t",
        IMG,
        B,
        "sh",
        "-c",
        "/bin/busybox tty; /bin/busybox stty size",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("/dev/pts/0") && out.contains("24 80"),
        "{out:?}"
    );
    let (code, text, _) = n.reg_with_input(
        &["run", "-it", "--rm", IMG, B, "sh"],
        b"echo hi-$((40+2))\nexit 3\n",
    );
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("hi-42"),
        "the shell ran the typed command: {text:?}"
    );
}

/// A bodyless POST to the agent's API: (status, body).
fn agent_post(n: &Node, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(n.host.trim_start_matches("unix://"))
        .expect("agent socket");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: reg\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[test]
fn resizing_a_terminal_reaches_the_container() {
    let Some(n) = node() else { return };
    let id = n.run_d(&args(
        &["-t", IMG],
        &sh("while :; do /bin/busybox stty size; /bin/busybox sleep 0.1; done"),
    ));
    wait_until("the first size", || {
        n.reg(&["logs", &id]).1.contains("24 80")
    });
    wait_until("the resize", || {
        agent_post(&n, &format!("/containers/{id}/resize?h=40&w=132")).0 == 200
            && n.reg(&["logs", &id]).1.contains("40 132")
    });
    // Without -t there is no terminal to resize: a clear refusal.
    let plain = n.run_d(&args(&[IMG], &sh("exec /bin/busybox sleep 600")));
    let (status, body) = agent_post(&n, &format!("/containers/{plain}/resize?h=40&w=132"));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("no terminal"), "{body}");
    assert_eq!(n.reg(&["rm", "-f", &id, &plain]).0, 0);
}

#[test]
fn a_killed_monitor_takes_its_container_along_and_leaves_nothing() {
    let Some(n) = node() else { return };
    let id = n.run_d(&args(&[IMG], &sh("exec /bin/busybox sleep 600")));
    let pid = n.inspect(&id)["State"]["Pid"].as_i64().unwrap_or(0);
    let monitor = parent_of(pid);
    assert!(monitor > 1);
    let _ = std::process::Command::new("kill")
        .args(["-9", &monitor.to_string()])
        .status();
    let (_, code, _) = n.reg(&["wait", &id]);
    assert_eq!(code.trim(), "255");
    let v = n.inspect(&id);
    assert!(
        v["State"]["Error"]
            .as_str()
            .unwrap_or("")
            .contains("monitor"),
        "{v}"
    );
    wait_until("the init to die with its monitor", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    wait_until("the cgroup to go", || cgroup_dirs(&id).is_empty());
    assert_eq!(n.reg(&["rm", &id]).0, 0);
}
