//! The docker verbs of the `reg` cli beyond run/ps/rm, each driven through the real binary
//! against a real node agent, and checked on what the test's own containers show: pause and
//! unpause, restart, rename, update (read back from the container's cgroup), top, diff, stats,
//! cp both ways (bytes compared, and a container's symlink never leading a copy out of the
//! destination), export, save | load, history, events, create, attach, and the prunes. Flag
//! errors exit 125 and a failed request on one of several containers exits 1, as docker's.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

fn state(n: &Node, name: &str) -> serde_json::Value {
    n.inspect(name)["State"].clone()
}

fn id_of(n: &Node, name: &str) -> String {
    n.inspect(name)["Id"]
        .as_str()
        .expect("container id")
        .to_string()
}

/// `reg ARGS…` that must succeed: its stdout.
#[track_caller]
fn ok(n: &Node, args: &[&str]) -> String {
    let (code, out, err) = n.reg(args);
    assert_eq!(code, 0, "reg {args:?}: {out}{err}");
    out
}

/// The entry names of a tar archive.
fn entry_names(tar: &[u8]) -> Vec<String> {
    tar::Archive::new(tar)
        .entries()
        .expect("a tar")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("name")
                .display()
                .to_string()
        })
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
fn pause_unpause_restart_rename_update_top_and_diff_act_on_the_container() {
    let Some(n) = node() else { return };
    let id = n.run_d(&["--name", "verbs", IMG, B, "sleep", "600"]);

    assert_eq!(ok(&n, &["pause", "verbs"]), "verbs\n");
    let st = state(&n, "verbs");
    assert_eq!(st["Paused"], true, "{st}");
    assert_eq!(st["Status"], "paused", "{st}");
    assert_eq!(ok(&n, &["unpause", "verbs"]), "verbs\n");
    let st = state(&n, "verbs");
    assert_eq!(st["Paused"], false, "{st}");
    assert_eq!(st["Status"], "running", "{st}");

    // top: docker's Titles/Processes table, with this container's sleep in it.
    let out = ok(&n, &["top", "verbs"]);
    let mut lines = out.lines();
    let header = lines.next().expect("a header");
    assert!(header.starts_with("UID") && header.contains("PID"), "{out}");
    assert!(header.trim_end().ends_with("CMD"), "{out}");
    assert!(lines.any(|l| l.contains("sleep 600")), "{out}");

    // diff: the file this test adds.
    ok(&n, &["exec", "verbs", B, "touch", "/added-by-test"]);
    let out = ok(&n, &["diff", "verbs"]);
    assert!(out.lines().any(|l| l == "A /added-by-test"), "{out}");

    // update: the new limit reaches the container's cgroup.
    assert_eq!(ok(&n, &["update", "--memory", "96m", "verbs"]), "verbs\n");
    let limit = format!("/sys/fs/cgroup/memory/reg/{id}/memory.limit_in_bytes");
    if let Ok(v) = std::fs::read_to_string(&limit) {
        assert_eq!(v.trim(), "100663296", "{limit}");
    }
    assert_eq!(
        n.inspect("verbs")["HostConfig"]["Memory"],
        100_663_296,
        "inspect shows the update"
    );
    let (code, _, err) = n.reg(&["update", "verbs"]);
    assert_eq!(code, 1);
    assert!(err.contains("you must provide one or more flags"), "{err}");

    // rename: the new name answers, the old one no longer does.
    assert_eq!(ok(&n, &["rename", "verbs", "renamed"]), "");
    assert_eq!(n.inspect("renamed")["Name"], "/renamed");
    assert_eq!(id_of(&n, "renamed"), id);
    let (code, _, _) = n.reg(&["inspect", "verbs"]);
    assert_ne!(code, 0, "the old name is gone");

    // restart: a new process, running again.
    let before = state(&n, "renamed")["Pid"].clone();
    assert_eq!(ok(&n, &["restart", "-t", "1", "renamed"]), "renamed\n");
    wait_until("the restarted container to run", || {
        let st = state(&n, "renamed");
        st["Running"] == true && st["Pid"] != before
    });

    // One of several fails: the rest still done, exit 1; a wrong flag: 125.
    let (code, out, err) = n.reg(&["pause", "no-such-container", "renamed"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out, "renamed\n");
    assert!(err.contains("no-such-container"), "{err}");
    assert_eq!(state(&n, "renamed")["Status"], "paused");
    ok(&n, &["unpause", "renamed"]);
    for args in [
        &["pause", "--bogus", "renamed"][..],
        &["stats", "--bogus"],
        &["top"],
        &["container", "prune", "--bogus"],
        &["volume", "prune", "--bogus"],
    ] {
        let (code, _, err) = n.reg(args);
        assert_eq!(code, 125, "{args:?}: {err}");
    }
}

#[test]
fn cp_copies_files_and_directories_both_ways_byte_for_byte() {
    let Some(n) = node() else { return };
    n.run_d(&["--name", "cpc", "--tmpfs", "/tmp", IMG, B, "sleep", "600"]);
    let host = tempfile::tempdir().expect("tempdir");
    let h = |p: &str| host.path().join(p).display().to_string();

    // A file in and back out.
    let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(h("in.bin"), &data).expect("write");
    ok(&n, &["cp", &h("in.bin"), "cpc:/tmp/in.bin"]);
    ok(&n, &["cp", "cpc:/tmp/in.bin", &h("out.bin")]);
    assert_eq!(std::fs::read(h("out.bin")).expect("copied out"), data);
    // Into an existing directory it keeps its name.
    std::fs::create_dir(h("into")).expect("mkdir");
    ok(&n, &["cp", "cpc:/tmp/in.bin", &h("into")]);
    assert_eq!(std::fs::read(h("into/in.bin")).expect("copied"), data);

    // A directory in (under an existing one) and out to a new name.
    std::fs::create_dir_all(h("tree/sub")).expect("mkdir");
    std::fs::write(h("tree/a.txt"), b"alpha\n").expect("write");
    std::fs::write(h("tree/sub/b.txt"), b"beta\n").expect("write");
    ok(&n, &["cp", &h("tree"), "cpc:/tmp"]);
    let (code, out, err) = n.reg(&["exec", "cpc", B, "cat", "/tmp/tree/sub/b.txt"]);
    assert_eq!((code, out.as_str()), (0, "beta\n"), "{err}");
    ok(&n, &["cp", "cpc:/tmp/tree", &h("back")]);
    assert_eq!(std::fs::read(h("back/a.txt")).expect("a"), b"alpha\n");
    assert_eq!(std::fs::read(h("back/sub/b.txt")).expect("b"), b"beta\n");

    // `-`: a tar to stdout, and a tar from stdin.
    let out = std::process::Command::new(reg_tests::reg_bin())
        .args(["cp", "cpc:/tmp/tree/a.txt", "-"])
        .env("REG_HOST", &n.host)
        .env("REG_CONFIG_DIR", "/nonexistent-reg-config")
        .output()
        .expect("reg cp to stdout");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ar = tar::Archive::new(&out.stdout[..]);
    let mut names = Vec::new();
    for e in ar.entries().expect("a tar") {
        let mut e = e.expect("entry");
        names.push(e.path().expect("name").display().to_string());
        let mut s = String::new();
        std::io::Read::read_to_string(&mut e, &mut s).expect("content");
        assert_eq!(s, "alpha\n");
    }
    assert_eq!(names, ["a.txt"]);
    let mut b = tar::Builder::new(Vec::new());
    let mut hd = tar::Header::new_gnu();
    hd.set_size(6);
    hd.set_mode(0o644);
    b.append_data(&mut hd, "from-stdin.txt", &b"piped\n"[..])
        .expect("append");
    let input = b.into_inner().expect("tar");
    let (code, _, err) = n.reg_with_input(&["cp", "-", "cpc:/tmp"], &input);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = n.reg(&["exec", "cpc", B, "cat", "/tmp/from-stdin.txt"]);
    assert_eq!(out, "piped\n");

    // Missing paths fail with exit 1.
    let (code, _, _) = n.reg(&["cp", "cpc:/no/such/file", &h("x")]);
    assert_eq!(code, 1);
    let (code, _, _) = n.reg(&["cp", "cpc:/tmp/in.bin", &h("no/such/dir/x")]);
    assert_eq!(code, 1);
}

#[test]
fn cp_out_never_follows_a_containers_symlink_out_of_the_destination() {
    let Some(n) = node() else { return };
    let host = tempfile::tempdir().expect("tempdir");
    let outside = host.path().join("outside");
    let dest = host.path().join("dest");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::create_dir_all(&dest).expect("mkdir");
    let script = format!(
        "mkdir -p /trap /payload/esc /payload/etc && ln -s {} /trap/esc && ln -s /etc /trap/etc \
         && echo evil > /payload/esc/pwned && echo evil > /payload/etc/reg-cp-pwned && sleep 600",
        outside.display()
    );
    let sh = sh(&script);
    n.run_d(&args(&["--name", "trap", IMG], &sh));
    wait_until("the container's files", || {
        n.reg(&["exec", "trap", B, "test", "-e", "/payload/etc/reg-cp-pwned"])
            .0
            == 0
    });
    // The symlinks come out as symlinks, pointing where they point; nothing is written there.
    ok(&n, &["cp", "trap:/trap/.", &dest.display().to_string()]);
    assert_eq!(
        std::fs::read_link(dest.join("esc")).expect("a symlink"),
        outside
    );
    assert_eq!(
        std::fs::read_link(dest.join("etc")).expect("a symlink"),
        std::path::Path::new("/etc")
    );
    // A second copy whose directories have those names must not write through them.
    let (code, out, err) = n.reg(&["cp", "trap:/payload/.", &dest.display().to_string()]);
    assert_eq!(code, 1, "refused: {out}{err}");
    assert!(!outside.join("pwned").exists(), "written through esc");
    assert!(
        !std::path::Path::new("/etc/reg-cp-pwned").exists(),
        "written into the host's /etc"
    );
    assert!(dest.join("esc").is_symlink() && dest.join("etc").is_symlink());
}

#[test]
fn create_stats_events_export_attach_and_prunes() {
    let Some(n) = node() else { return };
    let since = (unix_now() - 1).to_string();

    // create: the id, a container that has not started.
    let id = ok(&n, &["create", "--name", "made", IMG, B, "sleep", "600"])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(state(&n, "made")["Status"], "created");
    ok(&n, &["start", "made"]);

    // stats: one reading, docker's columns, this container's row.
    let out = ok(&n, &["stats", "--no-stream", "made"]);
    let mut lines = out.lines();
    let header = lines.next().expect("a header");
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        assert!(header.contains(col), "{col}: {out}");
    }
    let row = lines.next().expect("a row");
    assert!(row.starts_with(&id[..12]), "{out}");
    assert!(
        row.contains(" made ") && row.contains(" / ") && row.contains('%'),
        "{out}"
    );
    let all = ok(&n, &["stats", "--no-stream"]);
    assert!(all.contains(" made "), "{all}");

    // events: this container's create and start, in docker's line format.
    let until = (unix_now() + 1).to_string();
    let out = ok(&n, &["events", "--since", &since, "--until", &until]);
    let start = out
        .lines()
        .find(|l| l.contains(&format!(" container start {id} ")))
        .unwrap_or_else(|| panic!("no start event: {out}"));
    assert!(start.contains("name=made"), "{start}");
    assert!(start.ends_with(')'), "{start}");
    let filtered = ok(
        &n,
        &[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "-f",
            "event=create",
        ],
    );
    assert!(
        filtered.contains(&format!("container create {id}")),
        "{filtered}"
    );
    assert!(!filtered.contains("container start"), "{filtered}");

    // export: the container's root filesystem.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let tar_path = elsewhere.path().join("made.tar");
    ok(
        &n,
        &["export", "-o", &tar_path.display().to_string(), "made"],
    );
    let bytes = std::fs::read(&tar_path).expect("exported");
    let names = entry_names(&bytes);
    assert!(
        names
            .iter()
            .any(|p| p.trim_start_matches("./") == "bin/busybox"),
        "{names:?}"
    );

    // attach: the running container's output from then on, and its exit code as ours.
    let sh = sh("while [ ! -e /go ]; do sleep 0.1; done; echo attached-out; exit 3");
    let att = n.run_d(&args(&["--name", "att", IMG], &sh));
    let attached_since = (unix_now() - 1).to_string();
    let child = std::process::Command::new(reg_tests::reg_bin())
        .args(["attach", "att"])
        .env("REG_HOST", &n.host)
        .env("REG_CONFIG_DIR", "/nonexistent-reg-config")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("reg attach");
    wait_until("the attach event", || {
        let now = unix_now().to_string();
        let (_, out, _) = n.reg(&["events", "--since", &attached_since, "--until", &now]);
        out.contains(&format!("container attach {att}"))
    });
    ok(&n, &["exec", "att", B, "touch", "/go"]);
    let done = child.wait_with_output().expect("reg attach ends");
    assert_eq!(
        done.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&done.stdout), "attached-out\n");
    wait_until("att to stop", || state(&n, "att")["Status"] == "exited");
    let (code, _, err) = n.reg(&["attach", "att"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("You cannot attach to a stopped container"),
        "{err}"
    );

    // container prune: asked first ("n" keeps everything), -f removes the stopped one only.
    let (code, out, _) = n.reg_with_input(&["container", "prune"], b"n\n");
    assert_eq!(code, 0);
    assert!(
        out.contains("WARNING! This will remove all stopped containers.")
            && out.contains("Are you sure you want to continue? [y/N]"),
        "{out}"
    );
    let out = ok(&n, &["container", "prune", "-f"]);
    assert_eq!(
        out,
        format!("Deleted Containers:\n{att}\n\nTotal reclaimed space: 0B\n")
    );
    assert_eq!(state(&n, "made")["Status"], "running");
    // The group's aliases are the verbs.
    let ls = ok(&n, &["container", "ls", "-q"]);
    assert_eq!(ls.trim(), &id[..12]);

    // volume and network prune.
    ok(&n, &["volume", "create", "unused-vol"]);
    let out = ok(&n, &["volume", "prune", "-f", "-a"]);
    assert!(out.starts_with("Deleted Volumes:\nunused-vol\n"), "{out}");
    assert!(out.ends_with("Total reclaimed space: 0B\n"), "{out}");
    ok(&n, &["network", "create", "unused-net"]);
    let out = ok(&n, &["network", "prune", "-f"]);
    assert_eq!(out, "Deleted Networks:\nunused-net\n\n");
}

#[test]
fn save_then_load_round_trips_an_image_and_history_lists_it() {
    let Some(n) = node() else { return };
    ok(&n, &["pull", IMG]);
    ok(&n, &["tag", IMG, "copies/run:v2"]);
    let file = n.tmp.path().join("saved.tar");
    ok(
        &n,
        &["save", "-o", &file.display().to_string(), "copies/run:v2"],
    );
    let saved = std::fs::read(&file).expect("saved");
    let names = entry_names(&saved);
    assert!(names.iter().any(|p| p == "manifest.json"), "{names:?}");
    // To a pipe, the same archive.
    let piped = ok(&n, &["save", "copies/run:v2"]);
    assert!(!piped.is_empty());

    let (code, out, err) = n.reg(&["rmi", "copies/run:v2"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, _) = n.reg(&["history", "copies/run:v2"]);
    assert_eq!(code, 1, "gone before the load");
    let out = ok(&n, &["load", "-i", &file.display().to_string()]);
    assert!(
        out.starts_with("Loaded image: ") && out.contains("copies/run:v2"),
        "{out}"
    );
    let (code, out, err) = n.reg_with_input(&["load", "-q"], &saved);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("copies/run:v2"), "{out}");

    let out = ok(&n, &["history", "copies/run:v2"]);
    let header = out.lines().next().expect("a header");
    for col in ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"] {
        assert!(header.contains(col), "{col}: {out}");
    }
    // A failed save never touches what `-o` names: not a device (this once replaced the
    // host's /dev/null with a file), not an existing archive.
    let (code, _, _) = n.reg(&["save", "no/such:image", "-o", "/dev/null"]);
    assert_eq!(code, 1);
    {
        use std::os::unix::fs::FileTypeExt;
        let null = std::fs::metadata("/dev/null").expect("/dev/null");
        assert!(
            null.file_type().is_char_device(),
            "/dev/null is still the device"
        );
    }
    let before = std::fs::read(&file).expect("the archive");
    let (code, _, _) = n.reg(&["save", "-o", &file.display().to_string(), "no/such:image"]);
    assert_eq!(code, 1);
    assert_eq!(
        std::fs::read(&file).expect("the archive"),
        before,
        "left as it was"
    );
    // Saving into a device writes into it.
    ok(&n, &["save", "-o", "/dev/null", "copies/run:v2"]);
    let leftovers: Vec<_> = std::fs::read_dir(n.tmp.path())
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".reg-save-"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file left");
}

#[test]
fn commit_import_and_the_prunes_of_reg() {
    let Some(n) = node() else { return };
    ok(
        &n,
        &[
            "run",
            "--name",
            "src",
            IMG,
            B,
            "sh",
            "-c",
            "echo made > /made",
        ],
    );
    let id = ok(
        &n,
        &[
            "commit",
            "-c",
            "CMD [\"/bin/busybox\", \"cat\", \"/made\"]",
            "-m",
            "mine",
            "src",
            "made/one:v1",
        ],
    );
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(ok(&n, &["run", "--rm", "made/one:v1"]), "made\n");
    // Untagged: dangling, gone with `image prune`.
    let dangling = ok(&n, &["commit", "src"]).trim().to_string();
    let out = ok(&n, &["image", "prune", "-f"]);
    assert!(
        out.contains("Deleted Images:") && out.contains("Total reclaimed space:"),
        "{out}"
    );
    let (code, _, _) = n.reg(&["inspect", "--type", "image", &dangling]);
    assert_ne!(code, 0, "{dangling} is gone");
    // import: a tarball on stdin (an export of a running container).
    let runner = n.run_d(&[
        IMG,
        B,
        "sh",
        "-c",
        "echo imported > /mark; exec /bin/busybox sleep 600",
    ]);
    wait_until("the mark", || {
        n.reg(&["exec", &runner, B, "cat", "/mark"]).1 == "imported\n"
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let tar = dir.path().join("root.tar");
    ok(&n, &["export", "-o", &tar.display().to_string(), &runner]);
    let data = std::fs::read(&tar).expect("tar");
    let (code, out, err) = n.reg_with_input(&["import", "-", "imported/root:v1"], &data);
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().starts_with("sha256:"), "{out}");
    assert_eq!(
        ok(&n, &["run", "--rm", "imported/root:v1", B, "cat", "/mark"]),
        "imported\n"
    );
    // builder prune and system df/prune answer in docker's words.
    let out = ok(&n, &["builder", "prune", "-f"]);
    assert!(out.contains("Total reclaimed space:"), "{out}");
    let df = ok(&n, &["system", "df"]);
    for row in [
        "TYPE",
        "Images",
        "Containers",
        "Local Volumes",
        "Build Cache",
    ] {
        assert!(df.contains(row), "{df}");
    }
    ok(&n, &["rm", "-f", &runner]);
    let out = ok(&n, &["system", "prune", "-f"]);
    assert!(
        out.contains("Deleted Containers:"),
        "src was stopped: {out}"
    );
    let (code, _, _) = n.reg(&["inspect", "src"]);
    assert_ne!(code, 0);
}
