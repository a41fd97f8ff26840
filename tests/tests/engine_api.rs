//! Docker's Engine API on the node agent, driven by the real docker CLI pointed at the agent's
//! socket (`docker -H unix://…`): version negotiation, `info`, `ps`, `images`, `inspect`; run
//! detached and in the foreground (attach, stdin, terminals), exec; pull/tag/push/rmi;
//! networks, volumes, labels and filters (one reg does not support refused, never ignored);
//! `docker cp` both ways, never out of the container; pause, top, stats, events, build.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

use std::process::Command;

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
    let (code, _, err) = docker(&n, &cli, &["ps", "--filter", "publish=80"]);
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
    // --since and --until pick records by their time.
    let (code, out, err) = docker(
        &n,
        &cli,
        &["logs", "--until", "2000-01-01T00:00:00Z", "web"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "");
    let (code, out, err) = docker(
        &n,
        &cli,
        &["logs", "--since", "2000-01-01T00:00:00Z", "web"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "out hi");

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
            "--cpu-rt-runtime",
            "1000",
            "--name",
            "no",
            &img,
            B,
            "true",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("CpuRealtimeRuntime"), "{err}");
    let (code, _, _) = docker(&n, &cli, &["inspect", "no"]);
    assert_ne!(code, 0, "nothing was created");
}

#[test]
fn the_docker_cli_runs_in_the_foreground_with_input_a_terminal_and_exec() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");

    // `run` without -d: create, attach (hijacked), wait for the next exit, start. The exit code
    // is the container's; stdout and stderr stay apart; --rm has removed it when run returns.
    let (code, out, err) = docker(
        &n,
        &cli,
        &[
            "run",
            "--rm",
            "--name",
            "fg",
            &img,
            B,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    let (code, _, _) = docker(&n, &cli, &["inspect", "fg"]);
    assert_ne!(code, 0, "--rm removed it before run returned");

    // -i: the client's input is the container's stdin, to its end.
    let input = b"one\ntwo\n";
    let (code, out, err) = docker_with_input(
        &n,
        &cli,
        &["run", "-i", "--rm", &img, B, "sh", "-c", "cat; echo done"],
        Some(input),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "one\ntwo\ndone\n");

    // -t: one raw stream from a terminal (its line discipline turns \n into \r\n).
    let (code, out, err) = docker(&n, &cli, &["run", "-t", "--rm", &img, B, "tty"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("/dev/pts/") && out.ends_with("\r\n"),
        "{out:?}"
    );

    // create, then start -a.
    let (code, _, err) = docker(
        &n,
        &cli,
        &["create", "--name", "later", &img, B, "echo", "started"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = docker(&n, &cli, &["start", "-a", "later"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "started\n");
    // logs -f of a container that is not running: what it logged, then the end.
    let (code, out, err) = docker(&n, &cli, &["logs", "-f", "later"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "started\n");

    // exec: exit code, streams, input, a terminal.
    let (code, _, err) = docker(
        &n,
        &cli,
        &["run", "-d", "--name", "ex", &img, B, "sleep", "60"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = docker(
        &n,
        &cli,
        &[
            "exec",
            "-e",
            "X=1",
            "ex",
            B,
            "sh",
            "-c",
            "echo in $X; echo e >&2; exit 5",
        ],
    );
    assert_eq!(code, 5, "{err}");
    assert_eq!(out, "in 1\n");
    assert_eq!(err, "e\n");
    let (code, out, err) =
        docker_with_input(&n, &cli, &["exec", "-i", "ex", B, "cat"], Some(b"piped\n"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "piped\n");
    let (code, out, err) = docker(&n, &cli, &["exec", "-t", "ex", B, "tty"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("/dev/pts/"), "{out:?}");
    let (code, _, err) = docker(&n, &cli, &["exec", "-d", "ex", B, "touch", "/detached"]);
    assert_eq!(code, 0, "{err}");
    wait_until("the detached exec's file", || {
        docker(&n, &cli, &["exec", "ex", B, "test", "-e", "/detached"]).0 == 0
    });
    // Not running: exec is refused.
    let (code, _, err) = docker(&n, &cli, &["exec", "later", B, "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("not running"), "{err}");

    let (code, _, err) = docker(&n, &cli, &["rm", "-f", "ex", "later"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_docker_cli_pulls_tags_pushes_and_removes_images() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, out, err) = docker(&n, &cli, &["pull", &img]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Digest: sha256:"), "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {img}")),
        "{out}"
    );
    let (code, out, err) = docker(&n, &cli, &["pull", &img]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("Status: Image is up to date for {img}")),
        "{out}"
    );
    let (code, out, err) = docker(&n, &cli, &["history", "--no-trunc", &img]);
    assert_eq!(code, 0, "{err}");
    // The test image's config has no history: docker's header, no rows.
    assert!(out.starts_with("IMAGE"), "{out}");

    // A name the registry does not have: docker's error message, a failed pull.
    let missing = format!("{}/node/missing:v1", n.server.host);
    let (code, _, err) = docker(&n, &cli, &["pull", &missing]);
    assert_ne!(code, 0);
    assert!(!err.is_empty());

    // tag → push → rmi → pull back from the registry.
    let copy = format!("{}/copies/eng:v2", n.server.host);
    let (code, _, err) = docker(&n, &cli, &["tag", &img, &copy]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = docker(&n, &cli, &["push", &copy]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("v2: digest: sha256:"), "{out}");
    let (code, out, err) = docker(&n, &cli, &["rmi", &copy]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("Untagged: {copy}")), "{out}");
    let (code, out, _) = docker(
        &n,
        &cli,
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    );
    assert_eq!(code, 0);
    assert!(!out.lines().any(|l| l == copy), "{out}");
    // `run` of an image the node lacks: the client pulls it (create answers 404 first).
    let (code, out, err) = docker(&n, &cli, &["run", "--rm", &copy, B, "echo", "back"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Unable to find image"), "{err}");
    assert!(out.ends_with("back\n"), "{out}");

    // In use by a container: refused without -f.
    let (code, _, err) = docker(&n, &cli, &["create", "--name", "user", &copy, B, "true"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker(&n, &cli, &["rmi", &copy]);
    assert_ne!(code, 0);
    assert!(err.contains("user"), "{err}");
    let (code, _, err) = docker(&n, &cli, &["rm", "user"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_docker_cli_manages_networks_volumes_labels_and_filters() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");

    let (code, _, err) = docker(
        &n,
        &cli,
        &["network", "create", "--label", "app=t1", "engnet"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = docker(
        &n,
        &cli,
        &[
            "network",
            "ls",
            "--filter",
            "label=app=t1",
            "--format",
            "{{.Name}}",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "engnet");
    let (code, _, err) = docker(
        &n,
        &cli,
        &["volume", "create", "--label", "app=t1", "engvol"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = docker(
        &n,
        &cli,
        &[
            "volume",
            "ls",
            "--filter",
            "label=app=t1",
            "--format",
            "{{.Name}}",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "engvol");
    let (code, out, err) = docker(
        &n,
        &cli,
        &[
            "volume",
            "inspect",
            "--format",
            "{{.Labels.app}} {{.Driver}}",
            "engvol",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "t1 local");

    // A labelled container on the network, writing into the volume; one other that exited 7.
    let (code, _, err) = docker(
        &n,
        &cli,
        &[
            "run",
            "-d",
            "--name",
            "lab",
            "--label",
            "app=t1",
            "--network",
            "engnet",
            "-v",
            "engvol:/data",
            &img,
            B,
            "sh",
            "-c",
            "echo hi > /data/f; exec /bin/busybox sleep 60",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker(
        &n,
        &cli,
        &["run", "--name", "seven", &img, B, "sh", "-c", "exit 7"],
    );
    assert_eq!(code, 7, "{err}");
    // -p on the default network, now that a user network exists too (each network has its own
    // subnet: the default one once took engnet's, and the port went to the wrong bridge).
    let (code, _, err) = docker(
        &n,
        &cli,
        &[
            "run",
            "-d",
            "--name",
            "web-p",
            "-p",
            "127.0.0.1::8080",
            &img,
            B,
            "sh",
            "-c",
            "echo published > /index.html; exec /bin/busybox httpd -f -p 8080 -h /",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = docker(
        &n,
        &cli,
        &[
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
            "bridge",
            "engnet",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let subnets: Vec<&str> = out.lines().collect();
    assert!(subnets.len() == 2 && subnets[0] != subnets[1], "{out}");
    let (code, out, err) = docker(&n, &cli, &["port", "web-p", "8080"]);
    assert_eq!(code, 0, "{err}");
    let addr = out.trim().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{out}");
    wait_until("the published port", || {
        use std::io::{Read, Write};
        let Ok(sa) = addr.parse::<std::net::SocketAddr>() else {
            return false;
        };
        let Ok(mut s) =
            std::net::TcpStream::connect_timeout(&sa, std::time::Duration::from_millis(300))
        else {
            return false;
        };
        // The port is held before the server in the container listens: never wait forever.
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(1)));
        let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("published")
    });
    let (code, _, err) = docker(&n, &cli, &["rm", "-f", "web-p"]);
    assert_eq!(code, 0, "{err}");
    let ps = |filter: &str| {
        let (code, out, err) = docker(
            &n,
            &cli,
            &["ps", "-a", "--filter", filter, "--format", "{{.Names}}"],
        );
        assert_eq!(code, 0, "{filter}: {err}");
        let mut names: Vec<String> = out.lines().map(str::to_string).collect();
        names.sort();
        names.join(",")
    };
    assert_eq!(ps("label=app=t1"), "lab");
    assert_eq!(ps("label=app"), "lab");
    assert_eq!(ps("label=app=t2"), "");
    assert_eq!(ps("name=sev"), "seven");
    assert_eq!(ps("status=exited"), "seven");
    assert_eq!(ps("exited=7"), "seven");
    assert_eq!(ps("network=engnet"), "lab");
    assert_eq!(ps("volume=engvol"), "lab");
    assert_eq!(ps(&format!("ancestor={img}")), "lab,seven");
    let (code, out, err) = docker(
        &n,
        &cli,
        &["inspect", "--format", "{{.Config.Labels.app}}", "lab"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "t1");
    // A filter reg has no meaning for yet is refused, not ignored.
    let (code, _, err) = docker(&n, &cli, &["ps", "--filter", "is-task=true"]);
    assert_ne!(code, 0);
    assert!(err.contains("is-task"), "{err}");

    // In use: neither goes; once the container is gone, both do.
    let (code, _, _) = docker(&n, &cli, &["volume", "rm", "engvol"]);
    assert_ne!(code, 0);
    let (code, _, _) = docker(&n, &cli, &["network", "rm", "engnet"]);
    assert_ne!(code, 0);
    let (code, _, err) = docker(&n, &cli, &["rm", "-f", "lab", "seven"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker(&n, &cli, &["network", "rm", "engnet"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = docker(&n, &cli, &["volume", "prune", "-f", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("engvol"), "{out}");
    let (code, _, _) = docker(&n, &cli, &["volume", "inspect", "engvol"]);
    assert_ne!(code, 0, "pruned");
}

#[test]
fn the_docker_cli_pauses_restarts_renames_and_reads_top_stats_and_df() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    // A counter that only moves while the container is not frozen.
    let script = "i=0; while :; do i=$((i+1)); echo $i > /count; /bin/busybox sleep 0.05; done";
    let (code, _, err) = docker(
        &n,
        &cli,
        &["run", "-d", "--name", "ctl", &img, B, "sh", "-c", script],
    );
    assert_eq!(code, 0, "{err}");
    let count = || {
        docker(&n, &cli, &["exec", "ctl", B, "cat", "/count"])
            .1
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    wait_until("the counter", || count() > 0);

    let (code, _, err) = docker(&n, &cli, &["pause", "ctl"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = docker(
        &n,
        &cli,
        &[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.Paused}}",
            "ctl",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "paused true");
    let (_, ps, _) = docker(&n, &cli, &["ps", "--format", "{{.Status}}"]);
    assert!(ps.contains("(Paused)"), "{ps}");
    // Pausing twice is refused; unpausing lets the counter move again.
    let (code, _, err) = docker(&n, &cli, &["pause", "ctl"]);
    assert_ne!(code, 0);
    assert!(err.contains("already paused"), "{err}");
    let (code, _, err) = docker(&n, &cli, &["unpause", "ctl"]);
    assert_eq!(code, 0, "{err}");
    let before = count();
    wait_until("the counter after unpause", || count() > before);

    // top lists the shell and its sleep; stats reads the cgroup.
    let (code, out, err) = docker(&n, &cli, &["top", "ctl"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("UID") && out.contains("sh -c"), "{out}");
    let (code, out, err) = docker(
        &n,
        &cli,
        &[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.MemUsage}} {{.PIDs}}",
            "ctl",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ctl "), "{out}");
    assert!(!out.contains(" 0B /"), "memory is counted: {out}");

    // rename, restart (a new start time), stop of a paused container.
    let (code, _, err) = docker(&n, &cli, &["rename", "ctl", "ctl2"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = docker(&n, &cli, &["inspect", "ctl"]);
    assert_ne!(code, 0, "the old name is gone");
    // update: new limits on the running container's cgroup, and a restart policy.
    let (code, _, err) = docker(
        &n,
        &cli,
        &[
            "update",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "50",
            "--restart",
            "on-failure:2",
            "ctl2",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let hc = n.inspect("ctl2")["HostConfig"].clone();
    assert_eq!(hc["Memory"], 64 << 20);
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["PidsLimit"], 50);
    assert_eq!(hc["RestartPolicy"]["Name"], "on-failure");
    let id = n.inspect("ctl2")["Id"].as_str().unwrap_or("").to_string();
    let limit = ["/sys/fs/cgroup/memory/reg", "/sys/fs/cgroup/reg"]
        .iter()
        .find_map(|root| {
            let d = format!("{root}/{id}");
            std::fs::read_to_string(format!("{d}/memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(format!("{d}/memory.max")))
                .ok()
        })
        .unwrap_or_default();
    assert_eq!(
        limit.trim(),
        (64u64 << 20).to_string(),
        "the cgroup's limit"
    );
    let (code, _, err) = docker(&n, &cli, &["update", "--cpu-rt-runtime", "1000", "ctl2"]);
    assert_ne!(code, 0);
    assert!(err.contains("CpuRealtimeRuntime"), "{err}");
    let (code, _, err) = docker(&n, &cli, &["update", "--cpu-shares", "512", "ctl2"]);
    assert_eq!(code, 0, "{err}");
    let shares = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/reg/{id}/cpu.shares"))
        .or_else(|_| {
            std::fs::read_to_string(format!("/sys/fs/cgroup/cpu,cpuacct/reg/{id}/cpu.shares"))
        });
    if let Ok(s) = shares {
        assert_eq!(
            s.trim(),
            "512",
            "docker update --cpu-shares reached the cgroup"
        );
    }
    let started = n.inspect("ctl2")["State"]["StartedAt"].clone();
    let (code, _, err) = docker(&n, &cli, &["restart", "-t", "1", "ctl2"]);
    assert_eq!(code, 0, "{err}");
    let now = n.inspect("ctl2")["State"].clone();
    assert_eq!(now["Status"], "running");
    assert_ne!(now["StartedAt"], started);
    let (code, _, err) = docker(&n, &cli, &["pause", "ctl2"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker(&n, &cli, &["stop", "-s", "KILL", "ctl2"]);
    assert_eq!(code, 0, "{err}");
    let state = n.inspect("ctl2")["State"].clone();
    assert_eq!(state["Status"], "exited");
    assert_eq!(state["ExitCode"], 137, "stopped by the signal asked for");

    let (code, out, err) = docker(&n, &cli, &["system", "df"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("TYPE"), "{out}");
    let (code, out, err) = docker(&n, &cli, &["container", "prune", "-f"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id), "{out}");
}

#[test]
fn the_docker_cli_reads_past_and_live_events_with_filters() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    // Whole seconds: the first is before anything this test does.
    let t0 = unix().saturating_sub(1).to_string();

    // Live: a client following the events of one container sees it happen.
    let mut live = Command::new(&cli)
        .args([
            "-H",
            &n.host,
            "events",
            "--filter",
            "container=live",
            "--format",
            "{{.Action}}",
        ])
        .env("DOCKER_CONFIG", n.tmp.path().join("docker-config"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker events");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let out = live.stdout.take().expect("stdout");
    let mut live = Kill(live);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The client is subscribed once the agent has answered it, which it does not print: run
    // containers until one run's events arrive whole (the first may precede the subscription).
    let whole = ["create", "attach", "start", "die", "destroy"];
    let mut seen: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.len() < whole.len() || seen[seen.len() - whole.len()..] != whole {
        assert!(
            std::time::Instant::now() < deadline,
            "live events: {seen:?}"
        );
        let (code, _, err) = docker(
            &n,
            &cli,
            &["run", "--rm", "--name", "live", &img, B, "true"],
        );
        assert_eq!(code, 0, "{err}");
        while let Ok(a) = rx.recv_timeout(std::time::Duration::from_millis(500)) {
            seen.push(a);
        }
    }
    let tail: Vec<&str> = seen
        .iter()
        .rev()
        .take(5)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        ["create", "attach", "start", "die", "destroy"],
        "{seen:?}"
    );
    let _ = live.0.kill();

    // Past: `--since` replays what is kept, `--until` ends the stream.
    let (code, _, _) = docker(
        &n,
        &cli,
        &[
            "run", "--name", "ev", "--label", "team=a", &img, B, "sh", "-c", "exit 2",
        ],
    );
    assert_eq!(code, 2);
    for args in [
        &["network", "create", "evnet"][..],
        &["network", "rm", "evnet"],
        &["volume", "create", "evvol"],
        &["volume", "rm", "evvol"],
        &["rm", "ev"],
    ] {
        let (code, _, err) = docker(&n, &cli, args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    let t1 = (unix() + 1).to_string();
    let events = |filters: &[&str], format: &str| {
        let mut args = vec!["events", "--since", &t0, "--until", &t1, "--format", format];
        for f in filters {
            args.extend(["--filter", f]);
        }
        let (code, out, err) = docker(&n, &cli, &args);
        assert_eq!(code, 0, "{err}");
        out.lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(
        events(&["container=ev"], "{{.Action}}"),
        ["create", "attach", "start", "die", "destroy"]
    );
    assert_eq!(
        events(
            &["label=team=a", "event=die"],
            "{{.Actor.Attributes.exitCode}}"
        ),
        ["2"]
    );
    assert_eq!(
        events(
            &["type=network", "network=evnet"],
            "{{.Action}} {{.Actor.Attributes.name}}"
        ),
        ["create evnet", "destroy evnet"]
    );
    assert_eq!(
        events(&["type=volume"], "{{.Action}} {{.Actor.ID}}"),
        ["create evvol", "destroy evvol"]
    );
}

#[test]
fn the_docker_cli_builds_with_the_classic_builder_and_paths_answer_unversioned() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let ctx = n.tmp.path().join("ctx");
    std::fs::create_dir_all(ctx.join("sub")).expect("context");
    std::fs::write(ctx.join("sub/file.txt"), "from the context\n").expect("file");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {img}\nARG GREETING=hello\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo $GREETING > /greeting\"]\nCOPY sub/file.txt /file.txt\n"
        ),
    )
    .expect("Dockerfile");
    // The classic builder's contract: `docker()` sets DOCKER_BUILDKIT=0.
    let tag = format!("{}/built/app:v1", n.server.host);
    let ctx_arg = ctx.to_str().expect("utf-8 path");
    let (code, out, err) = docker(
        &n,
        &cli,
        &["build", "-t", &tag, "--build-arg", "GREETING=hi", ctx_arg],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Step 1/4 : FROM"), "{out}");
    assert!(out.contains(&format!("Successfully tagged {tag}")), "{out}");
    let (code, out, err) = docker(
        &n,
        &cli,
        &["run", "--rm", &tag, B, "cat", "/greeting", "/file.txt"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hi\nfrom the context\n");
    // A second build of the same context uses the cache.
    let (code, out, err) = docker(
        &n,
        &cli,
        &["build", "-t", &tag, "--build-arg", "GREETING=hi", ctx_arg],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Using cache"), "{out}");
    // An option reg cannot honour is refused, not ignored.
    let (code, _, err) = docker(&n, &cli, &["build", "--memory", "64m", ctx_arg]);
    assert_ne!(code, 0);
    assert!(err.contains("memory"), "{err}");

    // Unversioned paths answer as versioned ones (clients that have not negotiated yet).
    let sock = n.host.trim_start_matches("unix://").to_string();
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("socket");
        write!(s, "GET {path} HTTP/1.0\r\nHost: node\r\n\r\n").expect("request");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("answer");
        answer
    };
    let (code, _, err) = docker(&n, &cli, &["create", "--name", "plain", &img, B, "true"]);
    assert_eq!(code, 0, "{err}");
    for path in [
        "/containers/plain/json",
        "/v1.44/containers/plain/json",
        "/images/json",
    ] {
        let a = get(path);
        assert!(
            a.starts_with("HTTP/1.0 200") || a.starts_with("HTTP/1.1 200"),
            "{path}: {a}"
        );
    }
    let (code, _, err) = docker(&n, &cli, &["rm", "plain"]);
    assert_eq!(code, 0, "{err}");
}

/// `docker exec NAME /bin/busybox sh -c SCRIPT`: its stdout, the exec required to succeed.
fn exec_sh(n: &Node, cli: &std::path::Path, name: &str, script: &str) -> String {
    let (code, out, err) = docker(n, cli, &["exec", name, B, "sh", "-c", script]);
    assert_eq!(code, 0, "{script}: {err}");
    out
}

#[test]
fn the_docker_cli_copies_files_and_directories_into_and_out_of_a_container() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker(
        &n,
        &cli,
        &["run", "-d", "--name", "box", &img, B, "sleep", "300"],
    );
    assert_eq!(code, 0, "{err}");

    let host = tempfile::tempdir().expect("tempdir");
    let h = host.path();
    std::fs::write(h.join("in.txt"), "hello from the host\n").expect("file");
    std::fs::create_dir_all(h.join("tree/sub")).expect("dirs");
    std::fs::write(h.join("tree/top.txt"), "top\n").expect("top");
    std::fs::write(h.join("tree/sub/deep.txt"), "deep\n").expect("deep");
    std::os::unix::fs::symlink("top.txt", h.join("tree/link")).expect("link");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(h.join("tree/big.bin"), &big).expect("big");

    // Into the container: a file to a new name, a directory to a new name and into a
    // directory that exists.
    let src = |p: &str| h.join(p).display().to_string();
    let (code, _, err) = docker(&n, &cli, &["cp", &src("in.txt"), "box:/in.txt"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        exec_sh(&n, &cli, "box", &format!("{B} cat /in.txt")),
        "hello from the host\n"
    );
    let (code, _, err) = docker(&n, &cli, &["cp", &src("tree"), "box:/copied"]);
    assert_eq!(code, 0, "{err}");
    exec_sh(&n, &cli, "box", &format!("{B} mkdir /into"));
    let (code, _, err) = docker(&n, &cli, &["cp", &src("tree"), "box:/into"]);
    assert_eq!(code, 0, "{err}");
    let out = exec_sh(
        &n,
        &cli,
        "box",
        &format!(
            "{B} cat /copied/sub/deep.txt /into/tree/top.txt; {B} readlink /copied/link; \
             {B} stat -c %u:%g /copied/top.txt; {B} md5sum < /copied/big.bin"
        ),
    );
    let md5 = {
        let o = Command::new("md5sum")
            .arg(h.join("tree/big.bin"))
            .output()
            .expect("md5sum");
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(out, format!("deep\ntop\ntop.txt\n0:0\n{md5}  -\n"));

    // Out of the container: a file, a directory (a symlink in it stays one).
    exec_sh(
        &n,
        &cli,
        "box",
        &format!(
            "{B} mkdir -p /made/d && echo made > /made/d/f && {B} ln -s d/f /made/l && \
             {B} chmod 640 /made/d/f"
        ),
    );
    let out_dir = tempfile::tempdir().expect("tempdir");
    let o = out_dir.path();
    let dst = |p: &str| o.join(p).display().to_string();
    let (code, _, err) = docker(&n, &cli, &["cp", "box:/made", &dst("made")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(o.join("made/d/f")).expect("f"),
        "made\n"
    );
    assert_eq!(
        std::fs::read_link(o.join("made/l")).expect("link"),
        std::path::Path::new("d/f")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(o.join("made/d/f"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    let (code, _, err) = docker(&n, &cli, &["cp", "box:/copied/big.bin", &dst("big.bin")]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(o.join("big.bin")).expect("big") == big);
    // The contents of a directory (`DIR/.`) into one that exists.
    std::fs::create_dir(o.join("contents")).expect("dir");
    let (code, _, err) = docker(&n, &cli, &["cp", "box:/made/.", &dst("contents")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(o.join("contents/d/f")).expect("f"),
        "made\n"
    );
    // A path that is not there.
    let (code, _, err) = docker(&n, &cli, &["cp", "box:/nothing", &dst("x")]);
    assert_ne!(code, 0);
    assert!(err.contains("Could not find the file /nothing"), "{err}");

    // A stopped container: its files both ways (an overlay mounted for the copy only), and
    // what went in is there once it runs again.
    let (code, _, err) = docker(&n, &cli, &["stop", "-t", "1", "box"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker(&n, &cli, &["cp", "box:/made/d/f", &dst("late.txt")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(o.join("late.txt")).expect("late"),
        "made\n"
    );
    let (code, _, err) = docker(&n, &cli, &["cp", &src("in.txt"), "box:/made/late.txt"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = docker(&n, &cli, &["export", "box"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("made/late.txt") && out.contains("bin/busybox"),
        "the export lists its files"
    );
    let (code, _, err) = docker(&n, &cli, &["start", "box"]);
    assert_eq!(code, 0, "{err}");
    let out = exec_sh(&n, &cli, "box", &format!("{B} cat /made/late.txt"));
    assert_eq!(out, std::fs::read_to_string(src("in.txt")).expect("in"));
    let (code, _, err) = docker(&n, &cli, &["rm", "-f", "box"]);
    assert_eq!(code, 0, "{err}");
}

/// A tar of raw (possibly hostile) entries: (name, type, link target, data).
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        // GNU headers: the tar reader honours GNU extension entries only in those.
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

#[test]
fn docker_cp_stays_inside_the_container_through_its_symlinks_and_hostile_archives() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker(
        &n,
        &cli,
        &["run", "-d", "--name", "trap", &img, B, "sleep", "300"],
    );
    assert_eq!(code, 0, "{err}");

    // A host directory only this test knows; the container has the same path with its own
    // secret, and symlinks that would lead to the host's if followed on the host.
    let victim = tempfile::tempdir().expect("victim");
    let v = victim.path().display().to_string();
    std::fs::write(victim.path().join("secret.txt"), "HOST SECRET\n").expect("secret");
    exec_sh(
        &n,
        &cli,
        "trap",
        &format!(
            "{B} mkdir -p {v} /up/a /dst && echo container-own > {v}/secret.txt && \
             {B} ln -s / /esc && {B} ln -s ../../.. /up/a/esc"
        ),
    );
    let host = tempfile::tempdir().expect("tempdir");
    let input = host.path().join("in.txt");
    std::fs::write(&input, "copied in\n").expect("file");
    let input = input.display().to_string();
    for (i, link) in ["/esc", "/up/a/esc"].iter().enumerate() {
        // In through the link: lands in the container's path, never the host's.
        let to = format!("trap:{link}{v}/new{i}.txt");
        let (code, _, err) = docker(&n, &cli, &["cp", &input, &to]);
        assert_eq!(code, 0, "{to}: {err}");
        assert!(
            std::fs::symlink_metadata(victim.path().join(format!("new{i}.txt"))).is_err(),
            "{to} wrote to the host"
        );
        assert_eq!(
            exec_sh(&n, &cli, "trap", &format!("{B} cat {v}/new{i}.txt")),
            "copied in\n"
        );
        // Out through the link: the container's file, never the host's.
        let out = host.path().join(format!("out{i}.txt"));
        let from = format!("trap:{link}{v}/secret.txt");
        let (code, _, err) = docker(&n, &cli, &["cp", &from, &out.display().to_string()]);
        assert_eq!(code, 0, "{from}: {err}");
        assert_eq!(
            std::fs::read_to_string(&out).expect("out"),
            "container-own\n"
        );
    }
    // Copying the link itself out gives the link, not what it points to on the host.
    let out = host.path().join("esc");
    let (code, _, err) = docker(&n, &cli, &["cp", "trap:/esc", &out.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_link(&out).expect("a link"),
        std::path::Path::new("/")
    );

    // Hostile archives (`docker cp - trap:/dst` sends stdin as it is): refused with a 400 that
    // says why, and nothing of them made.
    let long = vec![b'a'; 2 * 1024 * 1024];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            raw_tar(&[("../escape.txt", tar::EntryType::Regular, "", b"x")]),
            "climbs out",
        ),
        (
            raw_tar(&[("/abs.txt", tar::EntryType::Regular, "", b"x")]),
            "absolute paths",
        ),
        (
            raw_tar(&[
                ("l", tar::EntryType::Symlink, "../../..", b""),
                ("l/escape.txt", tar::EntryType::Regular, "", b"x"),
            ]),
            "points out",
        ),
        (
            raw_tar(&[("h", tar::EntryType::Link, "../../etc/passwd", b"")]),
            "climbs out",
        ),
        (
            raw_tar(&[("dev", tar::EntryType::Block, "", b"")]),
            "device nodes",
        ),
        (
            raw_tar(&[("././@LongLink", tar::EntryType::GNULongName, "", &long)]),
            "headers exceed",
        ),
    ];
    for (bytes, why) in &cases {
        let (code, out, err) =
            docker_with_input(&n, &cli, &["cp", "-", "trap:/dst"], Some(bytes.as_slice()));
        assert_ne!(code, 0, "{why}: {out} {err}");
        assert!(err.contains(why), "{why}: {err}");
    }
    assert_eq!(
        exec_sh(
            &n,
            &cli,
            "trap",
            &format!("{B} ls -A /dst; {B} ls / | {B} grep -c escape || true")
        ),
        "0\n"
    );
    assert!(std::fs::symlink_metadata("/escape.txt").is_err());
    assert_eq!(
        std::fs::read_to_string(victim.path().join("secret.txt")).expect("secret"),
        "HOST SECRET\n"
    );
}

/// `docker ARGS…` against the machine's dockerd (no `-H`): (exit code, stdout, stderr).
fn dockerd(cli: &std::path::Path, home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(cli)
        .args(args)
        .env("DOCKER_CONFIG", home.join("dockerd-config"))
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run docker");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn docker_save_and_load_round_trip_and_interoperate_with_dockerd() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let dir = n.tmp.path().join("archives");
    std::fs::create_dir_all(&dir).expect("dir");
    let ours = dir.join("reg.tar");
    let ours_s = ours.to_str().expect("utf-8");
    let (code, _, err) = docker(&n, &cli, &["save", "-o", ours_s, &img]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker(&n, &cli, &["rmi", &img]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = docker(&n, &cli, &["load", "-i", ours_s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("Loaded image: {img}")), "{out}");
    let (code, out, err) = docker(&n, &cli, &["run", "--rm", &img, B, "echo", "loaded"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "loaded\n");
    // Not an archive: refused with a reason, nothing recorded.
    let junk = dir.join("junk.tar");
    std::fs::write(&junk, b"not a tar at all").expect("junk");
    let (code, _, err) = docker(&n, &cli, &["load", "-i", junk.to_str().expect("utf-8")]);
    assert_ne!(code, 0);
    assert!(!err.is_empty());

    // The other direction and the other daemon: where dockerd runs here, each loads what the
    // other saved.
    if dockerd(&cli, n.tmp.path(), &["info"]).0 != 0 {
        reg_tests::skip("dockerd is not running: save/load interop with it not checked");
        return;
    }
    struct Rmi<'a>(&'a std::path::Path, &'a std::path::Path, String);
    impl Drop for Rmi<'_> {
        fn drop(&mut self) {
            let _ = dockerd(self.0, self.1, &["rmi", "-f", &self.2]);
        }
    }
    let _rmi = Rmi(&cli, n.tmp.path(), img.clone());
    let (code, out, err) = dockerd(&cli, n.tmp.path(), &["load", "-i", ours_s]);
    assert_eq!(code, 0, "dockerd loads reg's archive: {err}");
    assert!(out.contains(&img), "{out}");
    let theirs = dir.join("dockerd.tar");
    let theirs_s = theirs.to_str().expect("utf-8");
    let (code, _, err) = dockerd(&cli, n.tmp.path(), &["save", "-o", theirs_s, &img]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker(&n, &cli, &["rmi", &img]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = docker(&n, &cli, &["load", "-i", theirs_s]);
    assert_eq!(code, 0, "reg loads dockerd's archive: {err}");
    assert!(out.contains("Loaded image"), "{out}");
    let (code, out, err) = docker(&n, &cli, &["run", "--rm", &img, B, "echo", "from dockerd"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "from dockerd\n");
}

#[test]
fn docker_diff_lists_what_the_container_added_and_changed() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker(
        &n,
        &cli,
        &[
            "run", "--name", "differ", &img, B, "sh", "-c",
            "/bin/busybox touch /bin/newfile && /bin/busybox mkdir -p /made/deep && echo x > /made/deep/f",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = docker(&n, &cli, &["diff", "differ"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        "C /bin",
        "A /bin/newfile",
        "A /made",
        "A /made/deep",
        "A /made/deep/f",
    ] {
        assert!(lines.contains(&want), "{want} in {out}");
    }
    let (code, _, err) = docker(&n, &cli, &["rm", "differ"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn health_checks_run_in_the_node_and_show_in_inspect_ps_and_events() {
    // `--health-cmd` is docker's CMD-SHELL form: the image needs /bin/sh.
    let sh_layer = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_link_name("busybox").expect("link");
        h.set_path("bin/sh").expect("path");
        h.set_cksum();
        b.append(&h, std::io::empty()).expect("append");
        b.into_inner().expect("tar")
    };
    let Some(n) = node_with(&[sh_layer]) else {
        return;
    };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    // Healthy once /ready exists; the file appears after a moment.
    let (code, _, err) = docker(
        &n,
        &cli,
        &[
            "run",
            "-d",
            "--name",
            "hc",
            "--health-cmd",
            "/bin/busybox test -e /ready",
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
            &img,
            B,
            "sh",
            "-c",
            "/bin/busybox sleep 1; /bin/busybox touch /ready; exec /bin/busybox sleep 300",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let health = || {
        n.inspect("hc")["State"]["Health"]["Status"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    wait_until("healthy", || health() == "healthy");
    let (_, ps, _) = docker(
        &n,
        &cli,
        &[
            "ps",
            "--filter",
            "health=healthy",
            "--format",
            "{{.Names}} {{.Status}}",
        ],
    );
    assert!(ps.starts_with("hc Up") && ps.contains("(healthy)"), "{ps}");
    // Failing checks: unhealthy after the retries, with the probes' output kept.
    let (code, _, err) = docker(&n, &cli, &["exec", "hc", B, "rm", "/ready"]);
    assert_eq!(code, 0, "{err}");
    wait_until("unhealthy", || health() == "unhealthy");
    let h = n.inspect("hc")["State"]["Health"].clone();
    assert!(h["FailingStreak"].as_u64().unwrap_or(0) >= 2, "{h}");
    let log = h["Log"].as_array().cloned().unwrap_or_default();
    assert!(!log.is_empty() && log.len() <= 5, "{h}");
    assert_ne!(
        log.last().map(|p| p["ExitCode"].clone()),
        Some(serde_json::json!(0))
    );
    let (code, out, err) = docker(
        &n,
        &cli,
        &[
            "events",
            "--since",
            "0",
            "--until",
            &format!(
                "{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() + 1)
                    .unwrap_or(0)
            ),
            "--filter",
            "container=hc",
            "--filter",
            "event=health_status",
            "--format",
            "{{.Action}}",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("health_status: healthy") && out.contains("health_status: unhealthy"),
        "{out}"
    );
    // --no-healthcheck: none, and no Health in inspect.
    let (code, _, err) = docker(
        &n,
        &cli,
        &[
            "run",
            "-d",
            "--name",
            "nohc",
            "--no-healthcheck",
            &img,
            B,
            "sleep",
            "300",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(n.inspect("nohc")["State"]["Health"].is_null());
    let (code, _, err) = docker(&n, &cli, &["rm", "-f", "hc", "nohc"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn docker_run_it_on_a_terminal_echoes_input_and_exits_with_the_shells_code() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let config = n.tmp.path().join("docker-config");
    let config = config.to_string_lossy();
    let envs = [("DOCKER_CONFIG", config.as_ref())];
    let wait = std::time::Duration::from_secs(60);
    // docker refuses -it without a terminal: the test is one. The shell reads the typed lines
    // from it and exits with the code the last one asks for.
    let mut term = reg_tests::terminal::OnTerminal::spawn(
        &cli,
        &[
            "-H", &n.host, "run", "-it", "--rm", "--name", "tty-it", &img, B, "sh",
        ],
        &envs,
    );
    term.type_bytes(b"echo typed-$((6*7))\nexit 3\n");
    let status = term.wait(wait);
    let shown = term.shown();
    assert!(shown.contains("typed-42"), "{shown}");
    assert_eq!(status.and_then(|s| s.code()), Some(3), "{shown}");

    // `run -dit`: the node holds the input open; `docker attach` types into it, and ctrl-p
    // ctrl-q (which the docker CLI keeps to itself) leaves it running with its input open.
    let (code, _, err) = docker(
        &n,
        &cli,
        &["run", "-dit", "--name", "tty-dit", &img, B, "sh"],
    );
    assert_eq!(code, 0, "{err}");
    for round in ["first", "second"] {
        let mut term = reg_tests::terminal::OnTerminal::spawn(
            &cli,
            &["-H", &n.host, "attach", "tty-dit"],
            &envs,
        );
        term.type_bytes(format!("echo {round}-$((6*7))\n").as_bytes());
        term.wait_for(&format!("{round}-42"), 0, wait);
        term.type_bytes(&[0x10, 0x11]);
        // docker attach says so and exits 1 when it detaches (docker run -it exits 0).
        let status = term.wait(wait);
        assert_eq!(status.and_then(|s| s.code()), Some(1), "{}", term.shown());
        assert!(
            term.shown().contains("read escape sequence"),
            "{}",
            term.shown()
        );
        let (code, out, err) = docker(
            &n,
            &cli,
            &["inspect", "-f", "{{.State.Running}}", "tty-dit"],
        );
        assert_eq!((code, out.trim()), (0, "true"), "{err}");
    }
    let (code, _, err) = docker(&n, &cli, &["rm", "-f", "tty-dit"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn docker_export_writes_the_root_filesystem_without_what_is_mounted_in_it() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker(
        &n,
        &cli,
        &[
            "run",
            "-d",
            "--name",
            "exp",
            "-v",
            "expvol:/data",
            &img,
            B,
            "sh",
            "-c",
            "echo mine > /written; echo vol > /data/in-volume; exec /bin/busybox sleep 300",
        ],
    );
    assert_eq!(code, 0, "{err}");
    wait_until("the files", || {
        docker(
            &n,
            &cli,
            &["exec", "exp", B, "test", "-e", "/data/in-volume"],
        )
        .0 == 0
    });
    let out = n.tmp.path().join("exp.tar");
    let (code, _, err) = docker(
        &n,
        &cli,
        &["export", "-o", out.to_str().expect("utf-8"), "exp"],
    );
    assert_eq!(code, 0, "{err}");
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&out).expect("export"));
    for e in ar.entries().expect("entries") {
        let e = e.expect("entry");
        names.push(e.path().expect("path").to_string_lossy().into_owned());
    }
    let has = |p: &str| names.iter().any(|n| n.trim_end_matches('/') == p);
    assert!(has("bin/busybox") && has("written"), "{names:?}");
    // Mount points are there, empty: no volume content, nothing of /proc or /sys.
    assert!(has("data") && !has("data/in-volume"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("proc/") && n.len() > 5),
        "{names:?}"
    );
    let (code, _, err) = docker(&n, &cli, &["rm", "-f", "exp"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker(&n, &cli, &["volume", "rm", "expvol"]);
    assert_eq!(code, 0, "{err}");
}

/// The same docker commands against dockerd and against reg: exit codes and output compared.
/// (Where dockerd runs here; CI starts one.)
#[test]
fn the_same_docker_commands_give_the_same_results_on_dockerd_and_on_reg() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    if dockerd(&cli, n.tmp.path(), &["info"]).0 != 0 {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("dockerd is not running under CI=true (.ci/run starts it)");
        }
        reg_tests::skip("dockerd is not running: nothing to compare with");
        return;
    }
    let img = format!("{}/{IMG}", n.server.host);
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    // dockerd gets the same image through an archive (it cannot reach the test registry's
    // name resolution any differently; this also exercises save/load).
    let archive = n.tmp.path().join("cmp.tar");
    let a = archive.to_str().expect("utf-8");
    assert_eq!(docker(&n, &cli, &["save", "-o", a, &img]).0, 0);
    assert_eq!(dockerd(&cli, n.tmp.path(), &["load", "-i", a]).0, 0);
    struct Clean<'a>(&'a std::path::Path, &'a std::path::Path, String);
    impl Drop for Clean<'_> {
        fn drop(&mut self) {
            let _ = dockerd(self.0, self.1, &["rm", "-f", "cmp-a", "cmp-b"]);
            let _ = dockerd(self.0, self.1, &["rmi", "-f", &self.2]);
        }
    }
    let _clean = Clean(&cli, n.tmp.path(), img.clone());
    let scenario: Vec<Vec<&str>> = vec![
        vec![
            "run",
            "--rm",
            "--network",
            "none",
            &img,
            B,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        vec![
            "run",
            "--rm",
            "--network",
            "none",
            "-e",
            "A=1",
            "-w",
            "/bin",
            &img,
            B,
            "sh",
            "-c",
            "echo $A $(pwd)",
        ],
        vec![
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            "cmp-a",
            "--label",
            "k=v",
            &img,
            B,
            "sleep",
            "60",
        ],
        vec![
            "ps",
            "--filter",
            "name=cmp-a",
            "--format",
            "{{.Names}} {{.Labels}} {{.State}}",
        ],
        vec!["exec", "cmp-a", B, "sh", "-c", "echo in; exit 4"],
        vec![
            "inspect",
            "--format",
            "{{.State.Status}} {{.Config.Labels}} {{.HostConfig.NetworkMode}}",
            "cmp-a",
        ],
        vec!["pause", "cmp-a"],
        vec![
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.Paused}}",
            "cmp-a",
        ],
        vec!["unpause", "cmp-a"],
        vec!["kill", "cmp-a"],
        vec!["wait", "cmp-a"],
        vec![
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            "cmp-a",
        ],
        vec!["start", "cmp-a"],
        vec!["stop", "-t", "1", "cmp-a"],
        vec!["rm", "cmp-a"],
        vec!["inspect", "cmp-a"],
        vec![
            "create",
            "--network",
            "none",
            "--name",
            "cmp-b",
            &img,
            B,
            "echo",
            "later",
        ],
        vec!["start", "-a", "cmp-b"],
        vec!["logs", "cmp-b"],
        vec!["rm", "cmp-b"],
        vec!["exec", "nothing-here", B, "true"],
    ];
    for args in &scenario {
        let (rc, rout, rerr) = docker(&n, &cli, args);
        let (dc, dout, derr) = dockerd(&cli, n.tmp.path(), args);
        assert_eq!(
            rc, dc,
            "{args:?}: exit codes differ\nreg: {rerr}\ndockerd: {derr}"
        );
        // Ids differ; everything else printed must not.
        let ids = |s: &str| !s.trim().chars().all(|c| c.is_ascii_hexdigit()) || s.trim().is_empty();
        if ids(&rout) || ids(&dout) {
            assert_eq!(rout, dout, "{args:?}: stdout differs");
        }
        // Errors are worded by each daemon; both must say something, or nothing.
        assert_eq!(
            rerr.is_empty(),
            derr.is_empty(),
            "{args:?}: reg: {rerr:?} dockerd: {derr:?}"
        );
    }
}
