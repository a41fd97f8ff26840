//! `reg build` end to end: the real binary's agent builds Dockerfiles from a context directory
//! (RUN steps in real containers), then `reg run` runs the result. The base image is the
//! busybox test image (only `/bin/busybox`), so Dockerfiles install its applets first.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

const INSTALL: &str = "RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// A context directory with `files` (path → content; a content starting with `->` makes a
/// symlink).
fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    for (p, content) in files {
        let path = d.path().join(p);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        match content.strip_prefix("->") {
            Some(target) => std::os::unix::fs::symlink(target, &path).expect("symlink"),
            None => std::fs::write(&path, content).expect("write"),
        }
    }
    d
}

fn build(n: &Node, ctx: &tempfile::TempDir, extra: &[&str]) -> (i32, String, String) {
    let dir = ctx.path().display().to_string();
    let mut a = vec!["build"];
    a.extend_from_slice(extra);
    a.push(&dir);
    n.reg(&a)
}

#[track_caller]
fn build_ok(n: &Node, ctx: &tempfile::TempDir, extra: &[&str]) -> String {
    let (code, out, err) = build(n, ctx, extra);
    assert_eq!(code, 0, "reg build {extra:?}:\n{out}\n{err}");
    out
}

const MULTI: &str = r#"FROM node/run:v1 AS base
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ARG GREETING=hello
ENV WHO=world
WORKDIR /app
COPY msg.txt .
RUN echo "$GREETING $WHO from $(pwd)" > out.txt && cat msg.txt >> out.txt

FROM base AS second
RUN rm /app/msg.txt && mkdir -p /data && echo second > /data/s

FROM node/run:v1
COPY --from=second /app/out.txt /data/s /result/
USER 1000:1000
ENTRYPOINT ["/bin/busybox", "cat"]
CMD ["/result/out.txt", "/result/s"]
"#;

#[test]
fn multi_stage_build_runs_caches_and_invalidates_exactly_what_changed() {
    let Some(n) = node() else { return };
    let ctx = context(&[("Dockerfile", MULTI), ("msg.txt", "the message\n")]);
    let out = build_ok(&n, &ctx, &["-t", "built/app:1"]);
    assert!(out.contains("Successfully tagged"), "{out}");
    assert_eq!(out.matches("CACHED").count(), 0, "{out}");

    let (code, run, err) = n.run(&["built/app:1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run, "hello world from /app\nthe message\nsecond\n");
    // CMD is replaced by the run's arguments; ENTRYPOINT stays.
    let (_, run, _) = n.run(&["built/app:1", "/result/s"]);
    assert_eq!(run, "second\n");
    let (_, who, _) = n.run(&["built/app:1", "/proc/self/status"]);
    assert!(who.contains("Uid:\t1000"), "USER: {who}");

    let img = n.inspect("built/app:1");
    let cfg = &img["Config"];
    assert_eq!(cfg["User"], "1000:1000", "{img}");
    assert_eq!(
        cfg["Entrypoint"],
        serde_json::json!(["/bin/busybox", "cat"])
    );
    assert_eq!(
        cfg["Cmd"],
        serde_json::json!(["/result/out.txt", "/result/s"])
    );

    // Nothing changed: every layer step is a cache hit and no RUN executes again.
    let again = build_ok(&n, &ctx, &["-t", "built/app:1"]);
    assert_eq!(again.matches("CACHED").count(), 5, "{again}");
    assert_eq!(n.inspect("built/app:1")["Id"], img["Id"]);

    // The COPY's input changed: it and every later layer step run again, nothing before.
    std::fs::write(ctx.path().join("msg.txt"), "a new message\n").expect("write");
    let third = build_ok(&n, &ctx, &["-t", "built/app:1"]);
    assert_eq!(third.matches("CACHED").count(), 1, "{third}");
    let (_, run, _) = n.run(&["built/app:1"]);
    assert_eq!(run, "hello world from /app\na new message\nsecond\n");

    // A build arg reaches RUN and changes its key.
    let fourth = build_ok(
        &n,
        &ctx,
        &["-t", "built/app:2", "--build-arg", "GREETING=hi"],
    );
    assert_eq!(fourth.matches("CACHED").count(), 2, "{fourth}");
    let (_, run, _) = n.run(&["built/app:2"]);
    assert!(run.starts_with("hi world from /app\n"), "{run}");

    // --target: the intermediate stage, where the file deleted by a RUN is gone (a whiteout
    // over the layer that added it).
    build_ok(&n, &ctx, &["-t", "built/second:1", "--target", "second"]);
    let (code, run, err) = n.run(&["built/second:1", "/bin/ls", "-a", "/app"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        run.split_whitespace().collect::<Vec<_>>(),
        [".", "..", "out.txt"]
    );
}

#[test]
fn heredocs_dockerignore_add_globs_and_image_metadata() {
    let Some(n) = node() else { return };
    let dockerfile = format!(
        r#"FROM node/run:v1
{INSTALL}SHELL ["/bin/sh", "-ec"]
RUN <<EOF
echo "from a heredoc" > /hd.txt
echo second line >> /hd.txt
EOF
ENV NAME=reg
COPY <<EOF /etc/motd
motd for $NAME
EOF
COPY . /ctx/
ADD bundle.tar.gz /opt/
ADD plain.txt /opt/
COPY --chmod=0755 --chown=1000:1000 tool.sh /usr/local/bin/tool
COPY sub/*.txt /globbed/
EXPOSE 8080 53/udp
LABEL org.example.team="platform team"
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --retries=2 CMD true
CMD ["/bin/sh", "-c", "cat /hd.txt /etc/motd; ls /ctx /ctx/docs /opt /globbed; stat -c '%a %u' /usr/local/bin/tool; /usr/local/bin/tool"]
"#
    );
    let ctx = context(&[
        ("Dockerfile", &dockerfile),
        (".dockerignore", "*.secret\ndocs\n!docs/keep.md\nbundle\n"),
        ("a.secret", "never sent"),
        ("docs/keep.md", "kept"),
        ("docs/drop.md", "dropped"),
        ("sub/a.txt", "a"),
        ("sub/b.txt", "b"),
        ("sub/c.md", "c"),
        ("tool.sh", "#!/bin/sh\necho tool ran\n"),
        ("plain.txt", "not an archive"),
        ("bundle/inner/file", "from the archive"),
    ]);
    let out = std::process::Command::new("tar")
        .args(["czf", "bundle.tar.gz", "-C", "bundle", "."])
        .current_dir(ctx.path())
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar: {out:?}");
    build_ok(&n, &ctx, &["-t", "built/meta:1"]);
    let (code, run, err) = n.run(&["built/meta:1"]);
    assert_eq!(code, 0, "{err}");
    let expected = "from a heredoc\nsecond line\nmotd for reg\n\
        /ctx:\nDockerfile\nbundle.tar.gz\ndocs\nplain.txt\nsub\ntool.sh\n\n\
        /ctx/docs:\nkeep.md\n\n\
        /globbed:\na.txt\nb.txt\n\n\
        /opt:\ninner\nplain.txt\n\
        755 1000\ntool ran\n";
    assert_eq!(run, expected);
    let (_, inner, _) = n.run(&["built/meta:1", "cat", "/opt/inner/file"]);
    assert_eq!(inner, "from the archive");
    // The agent's copy of the context follows deletions and additions.
    std::fs::remove_file(ctx.path().join("sub/b.txt")).expect("rm");
    std::fs::write(ctx.path().join("sub/d.txt"), "d").expect("write");
    build_ok(&n, &ctx, &["-t", "built/meta:2"]);
    let (_, globbed, _) = n.run(&["built/meta:2", "ls", "/globbed"]);
    assert_eq!(globbed, "a.txt\nd.txt\n");

    let cfg = n.inspect("built/meta:1")["Config"].clone();
    assert_eq!(
        cfg["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}, "53/udp": {}})
    );
    assert_eq!(cfg["Labels"]["org.example.team"], "platform team");
    assert_eq!(cfg["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(cfg["StopSignal"], "SIGINT");
    assert_eq!(
        cfg["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    assert_eq!(cfg["Healthcheck"]["Interval"], 30_000_000_000u64);
    assert_eq!(cfg["Healthcheck"]["Retries"], 2);
    assert!(cfg["Env"]
        .as_array()
        .is_some_and(|e| e.iter().any(|v| v == "NAME=reg")));
}

#[test]
fn run_mounts_bind_stages_and_the_context_and_never_write_through() {
    let Some(n) = node() else { return };
    let dockerfile = format!(
        r#"FROM node/run:v1 AS tools
{INSTALL}RUN mkdir -p /out && echo one > /out/a && echo two > /out/b
RUN rm /out/a && echo three > /out/c

FROM node/run:v1
{INSTALL}RUN --mount=type=bind,from=tools,source=/out,target=/mnt ls /mnt > /listing && cat /mnt/b /mnt/c >> /listing
RUN --mount=type=bind,source=data,target=/ctx,rw echo scribbled > /ctx/f.txt && cat /ctx/f.txt > /rw.txt
RUN --mount=type=bind,source=data/f.txt,target=/f.txt cat /f.txt > /ro.txt
RUN --mount=type=bind,from=tools,source=out,target=/t touch /t/x 2>/dev/null || echo read-only > /roview.txt
CMD ["/bin/sh", "-c", "cat /listing /rw.txt /ro.txt /roview.txt; ls /mnt /t /ctx 2>&1 | wc -l"]
"#
    );
    let ctx = context(&[("Dockerfile", &dockerfile), ("data/f.txt", "context\n")]);
    build_ok(&n, &ctx, &["-t", "built/mounts:1"]);
    let (code, run, err) = n.run(&["built/mounts:1"]);
    assert_eq!(code, 0, "{err}");
    // The stage's merged /out (a deleted by a later layer's whiteout), the rw mount's write
    // seen inside the step only, and no mount point left in the image.
    assert_eq!(run, "b\nc\ntwo\nthree\nscribbled\ncontext\nread-only\n3\n");
    // Nothing was written through: the stage still has its files, the context copy its own.
    let again = build_ok(&n, &ctx, &["-t", "built/mounts:1"]);
    assert_eq!(again.matches("CACHED").count(), 8, "{again}");
    // A changed file under a bind source invalidates the steps that mount it.
    std::fs::write(ctx.path().join("data/f.txt"), "changed\n").expect("write");
    let third = build_ok(&n, &ctx, &["-t", "built/mounts:2"]);
    assert_eq!(third.matches("CACHED").count(), 5, "{third}");
    let (_, run, _) = n.run(&["built/mounts:2", "cat", "/ro.txt"]);
    assert_eq!(run, "changed\n");
}

#[test]
fn hostile_or_failing_builds_are_refused_and_leave_nothing() {
    let Some(n) = node() else { return };
    let check = |dockerfile: &str, files: &[(&str, &str)], needle: &str| {
        let mut all = vec![("Dockerfile", dockerfile)];
        all.extend_from_slice(files);
        let ctx = context(&all);
        let (code, out, err) = build(&n, &ctx, &["-t", "built/bad:1"]);
        assert_eq!(code, 1, "{dockerfile}\n{out}{err}");
        assert!(
            err.contains(needle),
            "{dockerfile}: {needle:?} not in\n{out}{err}"
        );
        out
    };
    // Paths cannot leave the context: `..` is cleaned at its root, symlinks resolve inside it.
    check(
        "FROM node/run:v1\nCOPY ../../etc/passwd /x\n",
        &[],
        "\"../../etc/passwd\": not found in the build context",
    );
    check(
        "FROM node/run:v1\nCOPY link /x\n",
        &[("link", "->/etc/passwd")],
        "\"link\": not found in the build context",
    );
    check(
        "FROM node/run:v1\nCOPY root/etc/hostname /x\n",
        &[("root", "->../../../../")],
        "not found in the build context",
    );
    // A failing RUN: its output and exit code, and no image.
    let out = check(
        &format!("FROM node/run:v1\n{INSTALL}RUN echo doomed; exit 3\n"),
        &[],
        "Dockerfile:3: RUN: /bin/sh -c echo doomed; exit 3: the command returned a non-zero code: 3",
    );
    assert!(out.contains("doomed"), "{out}");
    // Syntax and reference errors name the place and what was expected.
    check(
        "FROM node/run:v1\nCOPPY a b\n",
        &[],
        "Dockerfile:2:1: unknown instruction 'COPPY'",
    );
    let ctx = context(&[("Dockerfile", "FROM node/run:v1 AS a\n")]);
    let (code, _, err) = build(&n, &ctx, &["--target", "nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("target stage \"nope\" could not be found (stages: a)"),
        "{err}"
    );
    check(
        "FROM node/run:v1\nRUN --mount=type=secret,id=x true\n",
        &[],
        "type=secret is not supported",
    );

    let (_, images, _) = n.reg(&["images"]);
    assert!(!images.contains("built/bad"), "{images}");
    // Nothing of the failed steps stays: no temp dirs, step monitors or their cgroups.
    let tmp: Vec<_> = std::fs::read_dir(n.tmp.path().join("node/tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "left in node/tmp: {tmp:?}");
    assert!(n.monitors().is_empty());
    assert_eq!(n.mounts_under_data(), 0);
}

#[test]
fn the_same_inputs_give_the_same_digest_on_two_nodes() {
    let (Some(a), Some(b)) = (node(), node()) else {
        return;
    };
    let ctx = context(&[
        (
            "Dockerfile",
            &format!("FROM node/run:v1\n{INSTALL}COPY f /f\nRUN echo built > /g && mkdir /d\n"),
        ),
        ("f", "same bytes"),
    ]);
    let zstd = ["-t", "built/repro:1", "--compression", "zstd"];
    build_ok(&a, &ctx, &zstd);
    // Other mtimes on the second machine: they must not matter.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.path().join("f"))
        .expect("open");
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30))
        .expect("touch");
    build_ok(&b, &ctx, &zstd);
    let (ia, ib) = (a.inspect("built/repro:1"), b.inspect("built/repro:1"));
    assert_eq!(ia["Id"], ib["Id"]);
    assert_eq!(ia["RepoDigests"], ib["RepoDigests"]);
    // zstd layers unpack and run on the node.
    let (code, out, err) = b.run(&["built/repro:1", "cat", "/f", "/g"]);
    assert_eq!((code, out.as_str()), (0, "same bytesbuilt\n"), "{err}");
}

#[test]
fn pushed_build_pulls_and_runs_under_docker_with_the_same_output() {
    let Some(n) = node() else { return };
    if !reg_tests::docker_ready() {
        return;
    }
    let ctx = context(&[("Dockerfile", MULTI), ("msg.txt", "via docker\n")]);
    let image = format!("{}/built/docker:1", n.server.host);
    let _cleanup = reg_tests::DockerImages(vec![image.clone()]);
    // gzip (the default): docker 20.10 cannot read zstd layers.
    let out = build_ok(&n, &ctx, &["-t", &image, "--push"]);
    assert!(out.contains("Pushed"), "{out}");
    // The base layers (three) came from node/run on the same registry: mounted, not uploaded.
    assert_eq!(out.matches("Mounted from node/run").count(), 3, "{out}");
    assert_eq!(out.matches(": Pushed").count(), 1, "{out}");
    let (_, ours, _) = n.run(&[&image]);
    assert_eq!(ours, "hello world from /app\nvia docker\nsecond\n");
    // A rebuild with --push sends nothing the registry has.
    let again = build_ok(&n, &ctx, &["-t", &image, "--push"]);
    assert_eq!(again.matches("Layer already exists").count(), 4, "{again}");
    assert!(!again.contains(": Pushed"), "{again}");

    reg_tests::run(std::process::Command::new("docker").args(["pull", &image]));
    let theirs = reg_tests::run(std::process::Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        &image,
    ]));
    assert_eq!(theirs, ours);
}

// Containment: a hostile Dockerfile, context, stage or archive never makes the builder (root,
// in the agent) write, chmod, chown or read a host file outside the trees it works on. Each
// test plants a way out towards a `Victim` and checks it is byte-for-byte, mode and owner
// untouched, and that the agent still builds.

/// The agent still answers and builds after a hostile build.
#[track_caller]
fn still_serves(n: &Node) {
    let (code, _, err) = n.reg(&["version"]);
    assert_eq!(code, 0, "reg version after a hostile build: {err}");
    let ctx = context(&[
        ("Dockerfile", "FROM node/run:v1\nCOPY f /f\n"),
        ("f", "fine\n"),
    ]);
    build_ok(n, &ctx, &["-t", "built/after:1"]);
    let (code, out, err) = n.run(&["built/after:1", "/bin/busybox", "cat", "/f"]);
    assert_eq!((code, out.as_str()), (0, "fine\n"), "{err}");
}

/// A build expected to fail with `needle` in its error.
#[track_caller]
fn build_fails(n: &Node, ctx: &tempfile::TempDir, needle: &str) {
    let (code, out, err) = build(n, ctx, &["-t", "built/hostile:1"]);
    assert_eq!(code, 1, "expected a refusal:\n{out}{err}");
    assert!(err.contains(needle), "{needle:?} not in\n{out}{err}");
}

/// Writes the tar `name` into `ctx` with `entries` (path, `->target` for a symlink or content),
/// names written as bytes, as a hostile archive would have them.
fn hostile_tar(ctx: &tempfile::TempDir, name: &str, entries: &[(&str, &str)]) {
    let mut b = tar::Builder::new(Vec::new());
    for (path, what) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        let data = match what.strip_prefix("->") {
            Some(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name(target).expect("link name");
                ""
            }
            None => {
                h.set_entry_type(tar::EntryType::Regular);
                *what
            }
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data.as_bytes()).expect("append");
    }
    std::fs::write(ctx.path().join(name), b.into_inner().expect("tar")).expect("write tar");
}

#[test]
fn copy_never_writes_through_a_symlink_from_an_earlier_source() {
    let Some(n) = node() else { return };
    let v = reg_tests::Victim::new();
    // A stage plants /a/sub -> victim; the second source's sub/keep.txt would land in it.
    let dockerfile = format!(
        "FROM node/run:v1 AS evil\n{INSTALL}\
         RUN mkdir -p /a /b/sub && ln -s {victim} /a/sub && echo PWNED > /b/sub/keep.txt\n\
         FROM scratch\n\
         COPY --from=evil --chmod=0777 --chown=4321:4321 /a /b /out/\n",
        victim = v.display()
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    build_fails(&n, &ctx, "COPY: cannot copy to non-directory: /out/sub");
    v.assert_untouched();
    still_serves(&n);
}

#[test]
fn copy_never_writes_through_a_symlink_from_an_earlier_context_dir() {
    let Some(n) = node() else { return };
    let v = reg_tests::Victim::new();
    let link = format!("->{}", v.display());
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM node/run:v1\nCOPY --chmod=0777 --chown=4321:4321 d1 d2 /out/\n",
        ),
        ("d1/sub", &link),
        ("d2/sub/keep.txt", "PWNED\n"),
        ("d2/sub/new.txt", "PWNED\n"),
    ]);
    build_fails(&n, &ctx, "COPY: cannot copy to non-directory: /out/sub");
    v.assert_untouched();
    still_serves(&n);
}

#[test]
fn add_never_writes_through_a_symlink_its_archive_planted() {
    let Some(n) = node() else { return };
    let v = reg_tests::Victim::new();
    let link = format!("->{}", v.display());
    // One archive: `link -> victim`, then `link/keep.txt`.
    let ctx = context(&[("Dockerfile", "FROM node/run:v1\nADD one.tar /out/\n")]);
    hostile_tar(
        &ctx,
        "one.tar",
        &[("link", &link), ("link/keep.txt", "PWNED\n")],
    );
    build_fails(
        &n,
        &ctx,
        "/out/link/keep.txt: a symlink put there by an earlier source",
    );
    v.assert_untouched();
    // `..` in an archive is refused, not cleaned into somewhere else.
    let ctx = context(&[("Dockerfile", "FROM node/run:v1\nADD up.tar /out/\n")]);
    hostile_tar(&ctx, "up.tar", &[("../../../../keep.txt", "PWNED\n")]);
    build_fails(&n, &ctx, "an entry with .. in its path is refused");

    // The archive plants `sub -> victim`, a later source of the same ADD has sub/keep.txt.
    let ctx = context(&[
        ("Dockerfile", "FROM node/run:v1\nADD plant.tar d2 /out/\n"),
        ("d2/sub/keep.txt", "PWNED\n"),
    ]);
    hostile_tar(&ctx, "plant.tar", &[("sub", &link)]);
    build_fails(&n, &ctx, "cannot copy to non-directory: /out/sub");
    v.assert_untouched();

    // A later instruction copying into the planted link: the link resolves inside the image
    // (as in the container), so the file lands at the victim's path *in the image*.
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM node/run:v1\nADD plant.tar /out/\nCOPY keep.txt /out/sub/\n",
        ),
        ("keep.txt", "PWNED\n"),
    ]);
    hostile_tar(&ctx, "plant.tar", &[("sub", &link)]);
    build_ok(&n, &ctx, &["-t", "built/contained:1"]);
    v.assert_untouched();
    let inside = format!("{}/keep.txt", v.display());
    let (code, out, err) = n.run(&["built/contained:1", "/bin/busybox", "cat", &inside]);
    assert_eq!((code, out.as_str()), (0, "PWNED\n"), "{err}");
    still_serves(&n);
}

#[test]
fn copy_into_a_workdir_symlinked_to_a_host_path_stays_in_the_image() {
    let Some(n) = node() else { return };
    let v = reg_tests::Victim::new();
    let dockerfile = format!(
        "FROM node/run:v1\n{INSTALL}RUN ln -s {victim} /w\nWORKDIR /w\n\
         COPY --chmod=0777 --chown=4321:4321 keep.txt .\nCOPY sub/ ./sub/\n",
        victim = v.display()
    );
    let ctx = context(&[
        ("Dockerfile", &dockerfile),
        ("keep.txt", "PWNED\n"),
        ("sub/data", "PWNED\n"),
    ]);
    build_ok(&n, &ctx, &["-t", "built/workdir:1"]);
    v.assert_untouched();
    // Inside the image, /w leads to the copies, as it would in a container.
    let (code, out, err) = n.run(&[
        "built/workdir:1",
        "/bin/sh",
        "-c",
        "cat /w/keep.txt /w/sub/data; stat -c '%a %u' /w/keep.txt",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "PWNED\nPWNED\n777 4321\n"),
        "{err}"
    );
    still_serves(&n);
}

#[test]
fn device_nodes_and_fifos_in_a_stage_are_copied_as_nodes_never_opened() {
    let Some(n) = node() else { return };
    let v = reg_tests::Victim::new();
    // 1:8 is the host's /dev/random: its bytes must not end up in the image. Opening the FIFO
    // would block the build forever.
    let dockerfile = format!(
        "FROM node/run:v1 AS evil\n{INSTALL}\
         RUN mknod /dev-node c 1 8 && mkfifo /fifo && chmod 0640 /fifo\n\
         FROM node/run:v1\n{INSTALL}\
         COPY --from=evil /dev-node /fifo /out/\n"
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    build_ok(&n, &ctx, &["-t", "built/nodes:1"]);
    let (code, out, err) = n.run(&[
        "built/nodes:1",
        "/bin/sh",
        "-c",
        "stat -c '%n %F %t:%T %s' /out/dev-node /out/fifo; stat -c '%a' /out/fifo",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "/out/dev-node character special file 1:8 0\n/out/fifo fifo 0:0 0\n640\n"
        ),
        "{err}"
    );
    // A writable bind of a FIFO would be a copy of it: refused, not read.
    let dockerfile = format!(
        "FROM node/run:v1 AS evil\n{INSTALL}RUN mkfifo /fifo\n\
         FROM node/run:v1\n{INSTALL}\
         RUN --mount=type=bind,from=evil,source=/fifo,target=/x,rw true\n"
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    build_fails(&n, &ctx, "source=/fifo,target=/x,rw: not a regular file");
    v.assert_untouched();
    still_serves(&n);
}

#[test]
fn chown_names_are_never_looked_up_in_a_fifo_or_a_device() {
    let Some(n) = node() else { return };
    // Reading a FIFO /etc/passwd would block forever, a /dev/zero /etc/group never end.
    let base = format!(
        "FROM node/run:v1\n{INSTALL}\
         RUN mkdir -p /etc && mkfifo /etc/passwd && mknod /etc/group c 1 5\n"
    );
    let ctx = context(&[
        ("Dockerfile", &format!("{base}COPY --chown=app f /f\n")),
        ("f", "x"),
    ]);
    build_fails(
        &n,
        &ctx,
        "--chown: no user \"app\" in the image's /etc/passwd",
    );
    let ctx = context(&[
        ("Dockerfile", &format!("{base}COPY --chown=0:staff f /f\n")),
        ("f", "x"),
    ]);
    build_fails(
        &n,
        &ctx,
        "--chown: no group \"staff\" in the image's /etc/group",
    );
    still_serves(&n);
}

// Hardening: one Dockerfile must not take the agent (and the registry in the same process) down.

#[test]
fn a_deeply_nested_substitution_is_refused_and_the_agent_keeps_serving() {
    let Some(n) = node() else { return };
    // ${a:-${a:-…end…}…} nested 5,000 deep (about 30 KB): it overflowed the stack before.
    let depth = 5000;
    let nested = format!("{}end{}", "${a:-".repeat(depth), "}".repeat(depth));
    let ctx = context(&[("Dockerfile", &format!("FROM node/run:v1\nENV X={nested}\n"))]);
    let (code, out, err) = build(&n, &ctx, &["-t", "built/nested:1"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("nested") || err.contains("deep"), "{out}{err}");
    still_serves(&n);
}
