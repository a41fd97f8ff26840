//! `reg run` (foreground, removed on exit) in real namespaces on an overlay of the image's
//! layers: PID 1 inside, its own hostname, docker's exit codes, copy-on-write, and nothing left
//! mounted or on disk afterwards.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

#[test]
fn container_is_pid_1_with_its_own_hostname_and_no_host_processes() {
    let Some(n) = node() else { return };
    let (code, out, err) = n.run(&[
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        "echo pid=$$; /bin/busybox hostname; /bin/busybox ps | /bin/busybox wc -l",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1");
    assert_eq!(
        lines[1].len(),
        12,
        "hostname is the short container id: {out}"
    );
    // header + sh + ps + wc: nothing of the host.
    assert!(lines[2].trim().parse::<u32>().unwrap_or(99) <= 5, "{out}");
    let (_, out, _) = n.run(&["--hostname", "web1", IMG, "/bin/busybox", "hostname"]);
    assert_eq!(out.trim(), "web1");
    // Its own mount table: the overlay as /, nothing of the host's.
    let (code, out, _) = n.run(&[IMG, "/bin/busybox", "cat", "/proc/self/mountinfo"]);
    assert_eq!(code, 0);
    let root = out
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap_or("");
    assert!(root.contains(" - overlay "), "/ is the overlay: {out}");
    let data = n.tmp.path().display().to_string();
    assert!(
        !out.lines().any(|l| l
            .split_whitespace()
            .nth(4)
            .is_some_and(|m| m.starts_with(&data))),
        "no host mount point is visible: {out}"
    );
    // Under /sys/fs/cgroup only the container's own cgroups (`/reg/<id>` of each hierarchy).
    for l in out.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(4).is_some_and(|m| m.starts_with("/sys/fs/cgroup/")) {
            let root = f.get(3).copied().unwrap_or("");
            let parts: Vec<&str> = root.trim_start_matches('/').split('/').collect();
            assert!(
                parts.len() == 2 && parts[0] == "reg" && parts[1].len() == 64,
                "a cgroup mount that is not the container's own: {l}"
            );
        }
    }
}

#[test]
fn exit_codes_follow_docker() {
    let Some(n) = node() else { return };
    assert_eq!(n.run(&[IMG, "/bin/busybox", "sh", "-c", "exit 7"]).0, 7);
    let (code, _, err) = n.run(&[IMG, "no-such-command"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("executable file not found"), "{err}");
    assert_eq!(n.run(&[IMG, "/etc/hello.txt"]).0, 126, "not executable");
}

#[test]
fn writes_stay_in_the_container_and_nothing_is_left_behind() {
    let Some(n) = node() else { return };
    let (code, _, err) = n.run(&[
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        "echo x > /bin/new && rm /etc/hello.txt",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = n.run(&[
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox cat /etc/hello.txt; /bin/busybox ls /bin",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("hello from layer 2"),
        "the image is unchanged: {out}"
    );
    assert!(
        !out.contains("new"),
        "another container does not see the write: {out}"
    );
    assert_eq!(n.mounts_under_data(), 0, "no mount left on the host");
    assert_eq!(
        n.container_dirs(),
        0,
        "--rm removes the container's directory"
    );
    // Moved aside at once, deleted right after the answer.
    wait_until("the removed directory deleted", || {
        n.removed_dirs_left() == 0
    });
}

#[test]
fn env_workdir_and_image_defaults() {
    let Some(n) = node() else { return };
    let (code, out, err) = n.run(&[
        "-e",
        "GREETING=hi there",
        "-w",
        "/tmp/work",
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        "echo $GREETING; /bin/busybox pwd; echo $PATH; echo $HOME",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["hi there", "/tmp/work", "/bin", "/root"],
        "image Env (PATH=/bin) kept, HOME added"
    );
}

#[test]
fn docker_default_hardening_applies() {
    let Some(n) = node() else { return };
    let script = "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; \
                  for f in /proc/kcore /proc/keys /proc/timer_list; do [ -e $f ] && echo masked:$f:$(/bin/busybox wc -c < $f); done; \
                  (echo 1 > /proc/sys/kernel/domainname) 2>/dev/null && echo sys-writable || echo sys-readonly; \
                  /bin/busybox cat /etc/hostname /etc/hosts; \
                  /bin/busybox ip link show lo | /bin/busybox grep -o 'state [A-Z]*\\|UP' | /bin/busybox head -1";
    let (code, out, err) = n.run(&[
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        &script.replace("grep ", "/bin/busybox grep "),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("CapEff:\t00000000a80425fb"),
        "docker's default capabilities: {out}"
    );
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    let masked: Vec<&str> = out.lines().filter(|l| l.starts_with("masked:")).collect();
    assert!(
        !masked.is_empty() && masked.iter().all(|l| l.ends_with(":0")),
        "masked paths read empty: {out}"
    );
    assert!(out.contains("sys-readonly"), "{out}");
    assert!(out.contains("localhost"), "/etc/hosts: {out}");
    assert!(out.contains("UP"), "lo is up: {out}");
}

#[test]
fn limits_memory_hog_is_oom_killed_and_fork_bomb_stops_at_the_pids_limit() {
    let Some(n) = node() else { return };
    // ~200 MB into a shell variable under a 32 MiB limit. Named and not `--rm`: the test
    // checks that the cgroups of *its* containers are gone, whatever else runs on the host.
    let (code, out, err) = n.reg(&[
        "run",
        "--name",
        "hog",
        "--memory",
        "32m",
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        "x=$(/bin/busybox head -c 200000000 /dev/zero | /bin/busybox tr '\\0' a); echo survived",
    ]);
    assert_eq!(code, 137, "OOM kill: {out}{err}");
    assert!(!out.contains("survived"));

    let (code, out, err) = n.reg(&[
        "run",
        "--name",
        "bomb",
        "--pids-limit",
        "8",
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        "n=0; i=0; while [ $i -lt 30 ]; do /bin/busybox sleep 2 & [ $? -eq 0 ] && n=$((n+1)); i=$((i+1)); done; echo started=$n",
    ]);
    let _ = code;
    // busybox sh gives up at the first failed fork; either way, 30 processes never started.
    assert!(!out.contains("started=30"), "{out}");
    assert!(
        err.contains("can't fork") || err.contains("Resource temporarily unavailable"),
        "the pids limit stopped the forks: {out}{err}"
    );
    for name in ["hog", "bomb"] {
        let id = n.inspect(name)["Id"]
            .as_str()
            .expect("container id")
            .to_string();
        let (code, _, err) = n.reg(&["rm", name]);
        assert_eq!(code, 0, "rm {name}: {err}");
        wait_until("its cgroups to go", || cgroup_dirs(&id).is_empty());
    }
}

#[test]
fn an_image_with_150_layers_still_mounts() {
    let names: Vec<String> = (0..150).map(|i| format!("layers/f{i:03}")).collect();
    let extra: Vec<Vec<u8>> = names
        .iter()
        .map(|p| {
            reg_tests::tar_layer(&[reg_tests::LayerFile {
                path: p,
                mode: 0o644,
                data: p.as_bytes(),
            }])
        })
        .collect();
    let Some(n) = node_with(&extra) else { return };
    let (code, out, err) = n.run(&[
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox ls /layers | /bin/busybox wc -l; /bin/busybox cat /layers/f149",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "150\nlayers/f149", "every layer is in the rootfs");
}
