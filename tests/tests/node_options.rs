//! `reg run`'s everyday options, end to end in real containers: cgroup limits beyond memory,
//! cpu and pids (read back from the host's cgroup files of *this* container and from inside),
//! a read-only root with tmpfs mounts and a sized /dev/shm, `--init`, stop signals and
//! timeouts, sysctls, extra groups, labels, a terminal's TERM, log rotation and `--log-driver
//! none`, `--cidfile`, `--pull never`, `--expose` with `-P`. What reg refuses exits 125 with
//! docker's message.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

/// The container's file `name` in its cgroup of controller `ctl` (v1), if the host has it.
fn cgroup_file(ctl: &str, id: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/fs/cgroup/{ctl}/reg/{id}/{name}"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn id_of(n: &Node, name: &str) -> String {
    n.inspect(name)["Id"]
        .as_str()
        .expect("container id")
        .to_string()
}

/// The block device the test's data directory lives on (`MAJOR:MINOR` and a /dev path).
fn a_block_device() -> Option<(String, String)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for e in std::fs::read_dir("/dev").ok()?.flatten() {
        let m = e.metadata().ok()?;
        if m.file_type().is_block_device() {
            let (ma, mi) = (
                m.rdev() >> 8 & 0xfff,
                (m.rdev() & 0xff) | (m.rdev() >> 12 & 0xfff00),
            );
            // A whole disk (minor 0) of a real driver: throttling takes whole devices.
            if mi == 0 && ma != 7 && ma != 1 {
                return Some((format!("{ma}:{mi}"), e.path().display().to_string()));
            }
        }
    }
    None
}

#[test]
fn cgroup_limits_of_every_controller_reach_the_containers_cgroup() {
    let Some(n) = node() else { return };
    let mut args = vec![
        "--name",
        "limited",
        "--cpu-shares",
        "512",
        "--cpuset-cpus",
        "0",
        "--cpu-period",
        "50000",
        "--cpu-quota",
        "25000",
        "--memory",
        "64m",
        "--memory-reservation",
        "32m",
        "--memory-swap",
        "128m",
        "--oom-kill-disable",
        "--pids-limit",
        "50",
    ];
    let dev = a_block_device();
    let rate;
    if let Some((_, path)) = &dev {
        rate = format!("{path}:1mb");
        args.extend(["--device-write-bps", &rate]);
    }
    args.extend([IMG, "/bin/busybox", "sleep", "600"]);
    let id = n.run_d(&args);
    let want = [
        ("cpu", "cpu.shares", "512"),
        ("cpu", "cpu.cfs_period_us", "50000"),
        ("cpu", "cpu.cfs_quota_us", "25000"),
        ("cpuset", "cpuset.cpus", "0"),
        ("memory", "memory.limit_in_bytes", "67108864"),
        ("memory", "memory.soft_limit_in_bytes", "33554432"),
        ("memory", "memory.memsw.limit_in_bytes", "134217728"),
        ("pids", "pids.max", "50"),
    ];
    let mut checked = 0;
    for (ctl, file, value) in want {
        if let Some(got) = cgroup_file(ctl, &id, file) {
            assert_eq!(got, value, "{ctl}/{file}");
            checked += 1;
        }
    }
    assert!(
        checked >= 6,
        "the host's v1 controllers were read: {checked}"
    );
    if let Some(oom) = cgroup_file("memory", &id, "memory.oom_control") {
        assert!(oom.contains("oom_kill_disable 1"), "{oom}");
    }
    if let (Some((majmin, _)), Some(bps)) = (
        &dev,
        cgroup_file("blkio", &id, "blkio.throttle.write_bps_device"),
    ) {
        assert_eq!(bps, format!("{majmin} 1048576"));
    }
    // Inside, the process sees its cpuset.
    let (code, out, err) = n.reg(&[
        "exec",
        "limited",
        "/bin/busybox",
        "grep",
        "Cpus_allowed_list",
        "/proc/self/status",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().ends_with("\t0"), "{out}");
    // `update` changes a running container's limits.
    let (code, _, err) = n.reg(&["rm", "-f", "limited"]);
    assert_eq!(code, 0, "{err}");
    wait_until("its cgroups to go", || cgroup_dirs(&id).is_empty());
}

#[test]
fn what_docker_refuses_or_this_host_cannot_apply_exits_125_with_a_reason() {
    let Some(n) = node() else { return };
    for (args, says) in [
        (
            vec!["--memory", "4m"],
            "Minimum memory limit allowed is 6MB",
        ),
        (
            vec!["--memory", "64m", "--memory-swap", "32m"],
            "Minimum memoryswap limit should be larger than memory limit",
        ),
        (vec!["--memory-swap", "64m"], "set the Memory limit"),
        (
            vec!["--cpus", "1", "--cpu-quota", "50000"],
            "Conflicting options",
        ),
        (vec!["--cpuset-cpus", "zero"], "--cpuset-cpus"),
        (
            vec!["--sysctl", "vm.swappiness=10"],
            "not a namespaced parameter",
        ),
        (
            vec!["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"],
            "own network namespace",
        ),
        (vec!["--tmpfs", "/run:bogus=1"], "--tmpfs"),
        (vec!["--log-driver", "syslog"], "not supported"),
        (vec!["--log-opt", "max-file=3"], "needs max-size"),
        (vec!["--stop-signal", "SIGNOPE"], "SIGNOPE"),
    ] {
        let mut all = vec!["run", "--rm"];
        all.extend(&args);
        all.extend([IMG, "/bin/busybox", "true"]);
        let (code, out, err) = n.reg(&all);
        assert_eq!(code, 125, "{args:?} refused: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // --blkio-weight: applied where the host's blkio has a weight, else refused.
    let weight = [
        "/sys/fs/cgroup/blkio/blkio.weight",
        "/sys/fs/cgroup/blkio/blkio.bfq.weight",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists());
    let (code, _, err) = n.run(&["--blkio-weight", "300", IMG, "/bin/busybox", "true"]);
    if weight {
        assert_eq!(code, 0, "{err}");
    } else {
        assert_eq!(code, 125);
        assert!(err.contains("no weight"), "{err}");
    }
    assert_eq!(n.container_dirs(), 0, "nothing was created");
}

#[test]
fn a_read_only_root_with_tmpfs_mounts_a_sized_shm_and_a_writable_volume() {
    let Some(n) = node() else { return };
    let (code, out, err) = n.run(&[
        "--read-only",
        "--tmpfs",
        "/run:size=1m,mode=0700",
        "--tmpfs",
        "/scratch",
        "--shm-size",
        "128m",
        "-v",
        "data:/data",
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        "touch /x 2>&1; echo root=$?; touch /run/x && echo run=ok; touch /data/x && echo data=ok; \
         touch /dev/shm/x && echo shm=ok; /bin/busybox grep -E ' /(run|scratch|dev/shm) ' /proc/mounts",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!out.contains("root=0"), "{out}");
    for ok in ["run=ok", "data=ok", "shm=ok"] {
        assert!(out.contains(ok), "{ok}: {out}");
    }
    let line = |target: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(target))
            .unwrap_or_else(|| panic!("{target} mounted: {out}"))
            .to_string()
    };
    let run = line("/run");
    assert!(run.starts_with("tmpfs /run tmpfs rw,"), "{run}");
    assert!(
        run.contains("size=1024k") && run.contains("mode=700"),
        "{run}"
    );
    assert!(
        run.contains("nosuid") && run.contains("nodev") && run.contains("noexec"),
        "{run}"
    );
    assert!(line("/dev/shm").contains("size=131072k"), "{out}");
    let (code, _, err) = n.reg(&["volume", "rm", "data"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn init_forwards_the_stop_signal_that_a_bare_pid_1_would_ignore() {
    let Some(n) = node() else { return };
    // pid 1 without handlers ignores SIGTERM: stop waits out --stop-timeout, then SIGKILL.
    n.run_d(&[
        "--name",
        "bare",
        "--stop-timeout",
        "1",
        IMG,
        "/bin/busybox",
        "sleep",
        "600",
    ]);
    // With --init the program is pid 2..: SIGTERM reaches it and ends it at once.
    n.run_d(&[
        "--name",
        "inited",
        "--init",
        IMG,
        "/bin/busybox",
        "sleep",
        "600",
    ]);
    let (code, out, err) = n.reg(&["exec", "inited", "/bin/busybox", "ps", "-o", "pid,args"]);
    assert_eq!(code, 0, "{err}");
    let sleeper = out
        .lines()
        .find(|l| l.contains("sleep 600"))
        .unwrap_or_else(|| panic!("the program runs: {out}"));
    assert_ne!(sleeper.split_whitespace().next(), Some("1"), "{out}");
    // The reaper holds nothing of the host's: no descriptor beyond stdio to reach through
    // /proc/1/fd (closed to the container's processes anyway), no host path in its name.
    let (_, out, _) = n.reg(&[
        "exec",
        "inited",
        "/bin/busybox",
        "sh",
        "-c",
        "ls /proc/1/fd 2>&1; cat /proc/1/cmdline",
    ]);
    assert!(
        out.contains("Permission denied")
            || out
                .split_whitespace()
                .all(|f| ["0", "1", "2"].contains(&f) || f.contains("reg-init")),
        "{out}"
    );
    assert!(out.contains("/sbin/reg-init"), "{out}");
    assert!(!out.contains(&n.tmp.path().display().to_string()), "{out}");
    for name in ["bare", "inited"] {
        let (code, _, err) = n.reg(&["stop", name]);
        assert_eq!(code, 0, "stop {name}: {err}");
    }
    assert_eq!(n.inspect("bare")["State"]["ExitCode"], 137);
    assert_eq!(n.inspect("inited")["State"]["ExitCode"], 143);
    // The stop signal given at run is the one stop sends.
    n.run_d(&[
        "--name",
        "usr1",
        "--stop-signal",
        "SIGUSR1",
        "--init",
        IMG,
        "/bin/busybox",
        "sleep",
        "600",
    ]);
    let (code, _, err) = n.reg(&["stop", "usr1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(n.inspect("usr1")["State"]["ExitCode"], 138, "128 + SIGUSR1");
    for name in ["bare", "inited", "usr1"] {
        let (code, _, err) = n.reg(&["rm", name]);
        assert_eq!(code, 0, "rm {name}: {err}");
    }
}

#[test]
fn sysctls_groups_labels_term_cidfile_and_pull_never() {
    let Some(n) = node() else { return };
    let (code, out, err) = n.run(&[
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "--sysctl",
        "kernel.shm_rmid_forced=1",
        "--group-add",
        "1234",
        "--group-add",
        "10",
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced; id -G",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["1", "1"], "{out}");
    let groups: Vec<&str> = lines[2].split_whitespace().collect();
    assert!(groups.contains(&"1234") && groups.contains(&"10"), "{out}");

    let (code, out, err) = n.run(&["-t", IMG, "/bin/busybox", "sh", "-c", "echo $TERM"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "xterm");

    let dir = tempfile::tempdir().expect("tempdir");
    let labels = dir.path().join("labels");
    std::fs::write(&labels, "# team\nteam=platform\ntier=web\n").expect("label file");
    let cid = dir.path().join("cid");
    let id = n.run_d(&[
        "--name",
        "labelled",
        "-l",
        "tier=db",
        "--label",
        "owner=me",
        "--label-file",
        labels.to_str().expect("path"),
        "--cidfile",
        cid.to_str().expect("path"),
        IMG,
        "/bin/busybox",
        "true",
    ]);
    assert_eq!(std::fs::read_to_string(&cid).expect("cidfile"), id);
    let l = &n.inspect("labelled")["Config"]["Labels"];
    assert_eq!(l["team"], "platform");
    assert_eq!(l["tier"], "db", "-l wins over the file");
    assert_eq!(l["owner"], "me");
    // An existing cidfile is refused before anything is created.
    let (code, _, err) = n.reg(&[
        "run",
        "-d",
        "--cidfile",
        cid.to_str().expect("path"),
        IMG,
        "/bin/busybox",
        "true",
    ]);
    assert_eq!(code, 125);
    assert!(err.contains("Container ID file found"), "{err}");
    let (code, _, err) = n.reg(&["rm", "-f", "labelled"]);
    assert_eq!(code, 0, "{err}");

    let (code, _, err) = n.run(&["--pull", "never", "node/run:absent", "/bin/busybox", "true"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("No such image") || err.contains("no such image"),
        "{err}"
    );
    assert!(
        !err.contains("Pulling"),
        "--pull never pulls nothing: {err}"
    );
}

#[test]
fn logs_rotate_at_max_size_and_the_none_driver_keeps_nothing() {
    let Some(n) = node() else { return };
    // 200 lines of ~100 bytes, each record ~150 bytes in the log: ~30 KB through 4 KiB files.
    let script = "i=0; while [ $i -lt 200 ]; do printf 'line %03d %090d\\n' $i 0; i=$((i+1)); done";
    let (code, _, err) = n.reg(&[
        "run",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=4k",
        "--log-opt",
        "max-file=3",
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(code, 0, "{err}");
    let id = id_of(&n, "chatty");
    let dir = n.tmp.path().join("node/containers").join(&id);
    let mut logs: Vec<String> = std::fs::read_dir(&dir)
        .expect("container dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with("container.log"))
        .collect();
    logs.sort();
    assert_eq!(
        logs,
        ["container.log", "container.log.1", "container.log.2"]
    );
    for f in &logs {
        let size = std::fs::metadata(dir.join(f)).expect("log file").len();
        assert!(size < 4096 + 300, "{f}: {size} bytes");
    }
    let (code, out, err) = n.reg(&["logs", "chatty"]);
    assert_eq!(code, 0, "{err}");
    let shown: Vec<&str> = out.lines().collect();
    assert!(
        shown.len() < 200 && shown.len() > 40,
        "{} lines",
        shown.len()
    );
    assert!(
        shown.last().is_some_and(|l| l.starts_with("line 199 ")),
        "{out}"
    );
    // The kept lines are the newest, in order, none lost between the files.
    let first: usize = shown[0][5..8].parse().expect("line number");
    for (k, l) in shown.iter().enumerate() {
        assert!(l.starts_with(&format!("line {:03} ", first + k)), "{l}");
    }
    let (code, _, err) = n.reg(&["rm", "chatty"]);
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = n.reg(&[
        "run",
        "--name",
        "silent",
        "--log-driver",
        "none",
        IMG,
        "/bin/busybox",
        "echo",
        "unseen",
    ]);
    assert_eq!(code, 0, "{err}");
    // As with docker, the attached client still sees the output; only `logs` has nothing.
    assert_eq!(out.trim(), "unseen");
    let (code, _, err) = n.reg(&["logs", "silent"]);
    assert_ne!(code, 0);
    assert!(err.contains("does not support reading"), "{err}");
    let (code, _, err) = n.reg(&["rm", "silent"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn expose_and_publish_all_publish_the_exposed_port() {
    let Some(n) = node() else { return };
    n.run_d(&[
        "--name",
        "exposed",
        "--expose",
        "8080",
        "-P",
        IMG,
        "/bin/busybox",
        "sleep",
        "600",
    ]);
    let (code, out, err) = n.reg(&["port", "exposed"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("8080/tcp -> 0.0.0.0:"), "{out}");
    let (code, _, err) = n.reg(&["rm", "-f", "exposed"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_container_sees_its_own_cgroup_and_limits_read_only_under_sys_fs_cgroup() {
    let Some(n) = node() else { return };
    let (code, out, err) = n.run(&[
        "--memory",
        "48m",
        "--pids-limit",
        "33",
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; \
         ls /sys/fs/cgroup; echo 1 > /sys/fs/cgroup/pids/pids.max 2>&1; echo write=$?; \
         cat /sys/fs/cgroup/pids/cgroup.procs",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["50331648", "33"], "{out}");
    for ctl in ["cpu", "memory", "pids"] {
        assert!(lines.contains(&ctl), "{ctl} listed: {out}");
    }
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(out.contains("write=1"), "{out}");
    // Only its own processes are in the cgroup it sees (none of the host's or the agent's).
    let procs: Vec<&str> = lines
        .iter()
        .skip_while(|l| !l.starts_with("write="))
        .skip(1)
        .copied()
        .collect();
    assert!(!procs.is_empty() && procs.len() <= 3, "{out}");
    // A privileged container may write its own limits.
    let (code, out, err) = n.run(&[
        "--privileged",
        "--pids-limit",
        "33",
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        "echo 40 > /sys/fs/cgroup/pids/pids.max && cat /sys/fs/cgroup/pids/pids.max",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "40");
}

#[test]
fn health_namespace_and_mount_flags_of_reg_run() {
    let Some(n) = node() else { return };
    n.run_d(&[
        "--name",
        "checked",
        "--health-cmd",
        "test -e /ready",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        // The check runs `/bin/sh -c` (docker's CMD-SHELL); the test image has busybox only.
        "/bin/busybox ln -s busybox /bin/sh; /bin/busybox touch /ready; exec /bin/busybox sleep 600",
    ]);
    wait_until("the health check to pass", || {
        n.inspect("checked")["State"]["Health"]["Status"] == "healthy"
    });
    let (code, out, err) = n.reg(&["ps", "--format", "{{.Status}}", "--filter", "name=checked"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(healthy)"), "{out}");
    // --pid container: sees the other's processes; --mount tmpfs and --volumes-from work.
    let (code, out, err) = n.run(&[
        "--pid",
        "container:checked",
        "--mount",
        "type=tmpfs,target=/scratch,tmpfs-size=2m",
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox ps -o args | /bin/busybox grep -c 'busybox slee[p] 600$'; /bin/busybox grep ' /scratch ' /proc/mounts",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("1\n") && out.contains("size=2048k"),
        "{out}"
    );
    for (args, says) in [
        (vec!["--userns", "auto"], "node.userns_remap"),
        (
            vec!["--mount", "type=bind,target=/x,bogus=1"],
            "unknown option",
        ),
        (vec!["--platform", "linux/s390x"], "this node runs"),
        (vec!["--health-interval", "soon"], "--health-interval"),
        (vec!["--pid", "sideways"], "--pid"),
    ] {
        let mut all = vec!["run", "--rm"];
        all.extend(&args);
        all.extend([IMG, "/bin/busybox", "true"]);
        let (code, _, err) = n.reg(&all);
        assert_eq!(code, 125, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, _, _) = n.reg(&["run", "--no-such-flag", IMG]);
    assert_eq!(code, 125, "an unknown flag exits 125, as docker's");
    let (code, _, err) = n.reg(&["rm", "-f", "checked"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn ctrl_p_ctrl_q_detaches_from_run_it_and_leaves_the_container_running() {
    let Some(n) = node() else { return };
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let mut term = reg_tests::terminal::OnTerminal::spawn(
        &reg_tests::reg_bin(),
        &[
            "run",
            "-it",
            "--name",
            "detached",
            IMG,
            "/bin/busybox",
            "sh",
        ],
        &[
            ("REG_HOST", &n.host),
            ("REG_NODE_DEFAULT_REGISTRY", &n.server.host),
            ("REG_CONFIG_DIR", "/nonexistent-reg-config"),
        ],
    );
    let wait = std::time::Duration::from_secs(30);
    term.type_bytes(b"echo typed-$((6*7))\n");
    // Once the shell answered, the detach keys; the terminal stays open, so only they may
    // end the session.
    term.wait_for("typed-42", 0, wait);
    term.type_bytes(&[0x10, 0x11]);
    let status = term.wait(wait);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "ctrl-p ctrl-q did not detach: {}",
        term.shown()
    );
    assert_eq!(
        n.inspect("detached")["State"]["Running"],
        true,
        "it runs on"
    );
    // Its input stayed open: the shell still answers what is typed on a new attachment.
    let mut again = reg_tests::terminal::OnTerminal::spawn(
        &reg_tests::reg_bin(),
        &["attach", "detached"],
        &[("REG_HOST", &n.host)],
    );
    again.type_bytes(b"echo again-$((6*7))\n");
    again.wait_for("again-42", 0, wait);
    again.type_bytes(b"exit 4\n");
    let status = again.wait(wait);
    assert_eq!(status.and_then(|s| s.code()), Some(4), "{}", again.shown());
    let (code, _, err) = n.reg(&["rm", "-f", "detached"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn short_names_mean_the_nodes_registry_not_the_clients_setting() {
    let Some(n) = node() else { return };
    // `reg serve` without node.default_registry: the node's registry for short names is the
    // registry it serves beside itself, as bound. A client configured otherwise follows it.
    let out = std::process::Command::new(reg_tests::reg_bin())
        .args(["run", "--rm", IMG, "/bin/busybox", "echo", "pulled"])
        .env("REG_HOST", &n.host)
        .env("REG_NODE_DEFAULT_REGISTRY", "127.0.0.1:1")
        .env("REG_CONFIG_DIR", "/nonexistent-reg-config")
        .output()
        .expect("reg run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pulled\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&n.server.host),
        "pulled from the node's registry: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
