//! What `reg ps`, `reg images` and `reg inspect` print, set against what the real docker CLI
//! prints for the same node (pointed at its socket): docker's columns (PORTS included) aligned
//! whatever the widths, `--format` with Go templates (`table`, `{{json .}}`, `{{.State.Pid}}`,
//! `index`), `-q`, filters.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

/// What the docker CLI prints for the same node (it must succeed).
fn docker_out(n: &Node, cli: &std::path::Path, args: &[&str]) -> String {
    let (code, out, err) = docker(n, cli, args);
    assert_eq!(code, 0, "docker {args:?}: {err}");
    out
}

fn reg_ok(n: &Node, args: &[&str]) -> String {
    let (code, out, err) = n.reg(args);
    assert_eq!(code, 0, "reg {args:?}: {err}");
    out
}

#[test]
fn ps_prints_docker_columns_aligned_and_formats_like_docker() {
    let Some(n) = node() else { return };
    let id = n.run_d(&[
        "--name",
        "web-with-a-long-name",
        "-l",
        "tier=front",
        "-p",
        "127.0.0.1::80",
        IMG,
        "/bin/busybox",
        "sleep",
        "600",
    ]);
    n.run_d(&["--name", "db", IMG, "/bin/busybox", "sleep", "600"]);
    let out = reg_ok(&n, &["ps"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let header = lines[0];
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(col), "{header}");
    }
    // Every row's NAMES starts where the header's does, however wide the other columns are.
    let at = header.find("NAMES").expect("NAMES");
    for row in &lines[1..] {
        let name = row[at..].trim();
        assert!(name == "db" || name == "web-with-a-long-name", "{out}");
    }
    let web = lines
        .iter()
        .find(|l| l.contains("web-with"))
        .expect("web row");
    assert!(
        web.contains("127.0.0.1:") && web.contains("->80/tcp"),
        "{web}"
    );
    assert!(web.starts_with(&id[..12]), "{web}");

    // --format, -q and filters against what docker's CLI prints for the same containers.
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    for format in [
        "table {{.ID}}\\t{{.Image}}\\t{{.Ports}}\\t{{.Names}}",
        "{{.Names}} {{.State}} {{.Labels}}",
        "{{.ID}}: {{.Command}}",
    ] {
        let mut ours: Vec<String> = reg_ok(&n, &["ps", "--format", format])
            .lines()
            .map(str::to_string)
            .collect();
        let mut theirs: Vec<String> = docker_out(&n, &cli, &["ps", "--format", format])
            .lines()
            .map(str::to_string)
            .collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "ps --format {format}");
    }
    assert_eq!(
        reg_ok(&n, &["ps", "-q", "--filter", "label=tier=front"]).trim(),
        &id[..12]
    );
    assert_eq!(
        reg_ok(&n, &["ps", "--filter", "name=db", "--format", "{{.Names}}"]).trim(),
        "db"
    );
    let json = reg_ok(
        &n,
        &["ps", "--filter", "name=web", "--format", "{{json .}}"],
    );
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object");
    assert_eq!(v["Names"], "web-with-a-long-name");
    assert_eq!(v["Labels"], "tier=front");

    // inspect --format, as docker's.
    for format in [
        "{{.State.Pid}}",
        "{{json .Config.Labels}}",
        "{{index .Config.Labels \"tier\"}} {{.Name}}",
    ] {
        assert_eq!(
            reg_ok(&n, &["inspect", "-f", format, "web-with-a-long-name"]),
            docker_out(&n, &cli, &["inspect", "-f", format, "web-with-a-long-name"]),
            "inspect -f {format}"
        );
    }
    let pid: i64 = reg_ok(&n, &["inspect", "-f", "{{.State.Pid}}", "db"])
        .trim()
        .parse()
        .expect("a pid");
    assert!(pid > 1);
    let (code, _, err) = n.reg(&["ps", "--format", "{{.ID"]);
    assert_ne!(code, 0);
    assert!(err.contains("template"), "{err}");
    for name in ["web-with-a-long-name", "db"] {
        reg_ok(&n, &["rm", "-f", name]);
    }
}

#[test]
fn images_lists_quietly_and_with_formats_like_docker() {
    let Some(n) = node() else { return };
    let img = format!("{}/{IMG}", n.server.host);
    reg_ok(&n, &["pull", IMG]);
    reg_ok(&n, &["tag", IMG, "second/name:v2"]);
    let out = reg_ok(&n, &["images"]);
    let header = out.lines().next().unwrap_or("");
    for col in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(col), "{out}");
    }
    assert_eq!(out.lines().count(), 3, "one row per name: {out}");
    let ids = reg_ok(&n, &["images", "-q"]);
    assert_eq!(ids.lines().count(), 1, "one id for the two names: {ids}");
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    for format in [
        "{{.Repository}}:{{.Tag}} {{.ID}}",
        "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}",
    ] {
        let mut ours: Vec<String> = reg_ok(&n, &["images", "--format", format])
            .lines()
            .map(str::to_string)
            .collect();
        let mut theirs: Vec<String> = docker_out(&n, &cli, &["images", "--format", format])
            .lines()
            .map(str::to_string)
            .collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "images --format {format}");
    }
    assert_eq!(
        reg_ok(&n, &["images", "--format", "{{.Tag}}", &img]).trim(),
        "v1"
    );
}

#[test]
fn network_and_volume_listings_print_what_docker_prints() {
    let Some(n) = node() else { return };
    reg_ok(&n, &["network", "create", "fmtnet"]);
    reg_ok(&n, &["volume", "create", "fmtvol"]);
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    for args in [
        vec!["network", "ls"],
        vec![
            "network",
            "ls",
            "--format",
            "{{.Name}} {{.Driver}} {{.Scope}}",
        ],
        vec!["network", "ls", "-q", "--filter", "name=fmtnet"],
        vec!["volume", "ls"],
        vec!["volume", "ls", "--format", "{{json .Name}}"],
        vec!["volume", "ls", "-q"],
    ] {
        let mut ours: Vec<String> = reg_ok(&n, &args).lines().map(str::to_string).collect();
        let mut theirs: Vec<String> = docker_out(&n, &cli, &args)
            .lines()
            .map(str::to_string)
            .collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{args:?}");
    }
    reg_ok(&n, &["network", "rm", "fmtnet"]);
    reg_ok(&n, &["volume", "rm", "fmtvol"]);
}
