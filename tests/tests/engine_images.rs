//! Images made on the node, through the real docker CLI pointed at a reg node: `docker commit`
//! (the container's changes as a layer, deletions as whiteouts, `--change`s applied), `docker
//! import` of an exported root filesystem, `docker image prune` of what no container uses, and
//! the build cache — kept by `rmi` of an unrelated image, emptied by `docker builder prune`.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

fn ok(n: &Node, cli: &std::path::Path, args: &[&str]) -> String {
    let (code, out, err) = docker(n, cli, args);
    assert_eq!(code, 0, "docker {args:?}: {out}{err}");
    out
}

#[test]
fn docker_commit_keeps_changes_and_deletions_and_applies_changes() {
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
            "--name",
            "c1",
            &img,
            B,
            "sh",
            "-c",
            "echo one > /added; mkdir /dir; echo two > /dir/f",
        ],
    );
    let one = format!("{}/made/one:v1", n.server.host);
    let id = ok(
        &n,
        &cli,
        &[
            "commit",
            "-c",
            "ENV GREETING=hello",
            "-c",
            "CMD [\"/bin/busybox\", \"cat\", \"/added\"]",
            "-m",
            "first",
            "c1",
            &one,
        ],
    );
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(ok(&n, &cli, &["run", "--rm", &one]), "one\n");
    assert_eq!(
        ok(
            &n,
            &cli,
            &[
                "run",
                "--rm",
                &one,
                B,
                "sh",
                "-c",
                "echo $GREETING; cat /dir/f"
            ]
        ),
        "hello\ntwo\n"
    );
    let history = ok(
        &n,
        &cli,
        &["history", "--no-trunc", "--format", "{{.Comment}}", &one],
    );
    assert!(history.lines().next() == Some("first"), "{history}");
    // A deletion is a whiteout in the next commit: the file is gone from the new image only.
    ok(
        &n,
        &cli,
        &["run", "--name", "c2", &one, B, "rm", "-r", "/added", "/dir"],
    );
    let two = format!("{}/made/two:v1", n.server.host);
    ok(&n, &cli, &["commit", "c2", &two]);
    let (code, out, _) = docker(&n, &cli, &["run", "--rm", &two, B, "ls", "/added", "/dir"]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(
        ok(&n, &cli, &["run", "--rm", &one]),
        "one\n",
        "the first image keeps it"
    );
    // A running container is committed too (frozen while its layer is written).
    ok(
        &n,
        &cli,
        &[
            "run",
            "-d",
            "--name",
            "c3",
            &img,
            B,
            "sh",
            "-c",
            "echo live > /live; exec sleep 600",
        ],
    );
    wait_until("c3 wrote its file", || {
        docker(&n, &cli, &["exec", "c3", B, "cat", "/live"]).1 == "live\n"
    });
    let three = format!("{}/made/three:v1", n.server.host);
    ok(&n, &cli, &["commit", "c3", &three]);
    assert_eq!(
        ok(&n, &cli, &["inspect", "-f", "{{.State.Status}}", "c3"]).trim(),
        "running"
    );
    assert_eq!(
        ok(&n, &cli, &["run", "--rm", &three, B, "cat", "/live"]),
        "live\n"
    );
    // An instruction commit cannot apply is refused, naming it.
    let (code, _, err) = docker(&n, &cli, &["commit", "-c", "RUN true", "c1"]);
    assert_ne!(code, 0);
    assert!(err.contains("RUN"), "{err}");
    ok(&n, &cli, &["rm", "-f", "c1", "c2", "c3"]);
}

#[test]
fn docker_import_of_an_export_runs_and_image_prune_removes_what_nothing_uses() {
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
            "src",
            &img,
            B,
            "sh",
            "-c",
            "echo exported > /mark; exec sleep 600",
        ],
    );
    wait_until("src wrote its file", || {
        docker(&n, &cli, &["exec", "src", B, "cat", "/mark"]).1 == "exported\n"
    });
    let tar = n.tmp.path().join("rootfs.tar");
    ok(
        &n,
        &cli,
        &["export", "-o", tar.to_str().expect("path"), "src"],
    );
    let data = std::fs::read(&tar).expect("export");
    let imported = format!("{}/imported/root:v1", n.server.host);
    let (code, out, err) = docker_with_input(
        &n,
        &cli,
        &[
            "import",
            "-c",
            "CMD [\"/bin/busybox\", \"cat\", \"/mark\"]",
            "-",
            &imported,
        ],
        Some(&data),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.trim().starts_with("sha256:"), "{out}");
    assert_eq!(ok(&n, &cli, &["run", "--rm", &imported]), "exported\n");
    // A tarball that is not one is refused, and nothing is stored.
    let (code, _, _) = docker_with_input(
        &n,
        &cli,
        &["import", "-", "junk:v1"],
        Some(b"not a tar at all"),
    );
    assert_ne!(code, 0);
    let (code, _, _) = docker(&n, &cli, &["image", "inspect", "junk:v1"]);
    assert_ne!(code, 0);

    // An untagged commit is dangling: `image prune` removes it; -a removes unused tagged ones.
    let dangling = ok(&n, &cli, &["commit", "src"]).trim().to_string();
    let out = ok(&n, &cli, &["image", "prune", "-f"]);
    assert!(
        out.contains("Deleted Images:") || out.contains("untagged"),
        "{out}"
    );
    let (code, _, _) = docker(&n, &cli, &["image", "inspect", &dangling]);
    assert_ne!(code, 0, "the dangling image is gone");
    assert_eq!(
        ok(&n, &cli, &["run", "--rm", &imported]),
        "exported\n",
        "tagged images stay"
    );
    ok(&n, &cli, &["rm", "-f", "src"]);
    ok(&n, &cli, &["image", "prune", "-a", "-f"]);
    for gone in [&imported, &img] {
        let (code, _, _) = docker(&n, &cli, &["image", "inspect", gone]);
        assert_ne!(code, 0, "{gone} was unused");
    }
}

#[test]
fn the_build_cache_survives_rmi_of_other_images_and_builder_prune_empties_it() {
    let Some(n) = node() else { return };
    let Some(cli) = reg_tests::peer("docker") else {
        return;
    };
    let img = format!("{}/{IMG}", n.server.host);
    ok(&n, &cli, &["pull", &img]);
    let ctx = n.tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {img}\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo cached > /step\"]\n"),
    )
    .expect("Dockerfile");
    let ctx_arg = ctx.to_str().expect("path");
    let app = format!("{}/built/app:v1", n.server.host);
    let out = ok(&n, &cli, &["build", "-t", &app, ctx_arg]);
    assert!(!out.contains("Using cache"), "{out}");
    // Another image, tagged twice, then both names removed: the build's cache stays usable.
    let other = format!("{}/other/x:v1", n.server.host);
    let retag = format!("{}/other/x:v2", n.server.host);
    ok(
        &n,
        &cli,
        &["run", "--name", "o", &img, B, "sh", "-c", "echo other > /o"],
    );
    ok(&n, &cli, &["commit", "o", &other]);
    ok(&n, &cli, &["tag", &other, &retag]);
    ok(&n, &cli, &["rm", "o"]);
    ok(&n, &cli, &["rmi", &retag]);
    ok(&n, &cli, &["rmi", &other]);
    // Even the built image itself removed: its step's layer is the cache's.
    ok(&n, &cli, &["rmi", &app]);
    let out = ok(&n, &cli, &["build", "-t", &app, ctx_arg]);
    assert!(out.contains("Using cache"), "the cache survived: {out}");
    assert_eq!(
        ok(&n, &cli, &["run", "--rm", &app, B, "cat", "/step"]),
        "cached\n"
    );
    // builder prune empties the cache: the next build runs its step again.
    let out = ok(&n, &cli, &["builder", "prune", "-f"]);
    assert!(out.contains("Total"), "{out}");
    let out = ok(&n, &cli, &["build", "-t", &app, ctx_arg]);
    assert!(!out.contains("Using cache"), "{out}");
}
