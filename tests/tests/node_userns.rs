//! User namespaces end to end: a node with a subordinate range (`node.userns_remap`) runs its
//! containers as the range's first 65536 ids, `--userns=auto` gives each container a slice of
//! its own, `--userns=host` opts out. The image's layers are shared, not chowned: inside, its
//! files belong to root; on the host, the snapshots keep their owners and what the container
//! writes belongs to its range.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

use std::os::unix::fs::MetadataExt;

const BASE: u32 = 2_000_000;
const SLICE: u32 = 65536;

fn ok(n: &Node, args: &[&str]) -> String {
    let (code, out, err) = n.reg(args);
    assert_eq!(code, 0, "reg {args:?}: {err}");
    out
}

/// The first line of `/proc/PID/status` that starts with `key`.
fn status_line(pid: i64, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    text.lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_default()
        .to_string()
}

/// Every `bin/busybox` under `dir` (walked without following symlinks).
fn busyboxes(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            busyboxes(&p, found);
        } else if p.ends_with("bin/busybox") {
            found.push(p);
        }
    }
}

#[test]
fn userns_remap_and_auto_map_root_to_ranges_of_their_own_over_unchowned_layers() {
    let range = format!("{BASE}:{}", 4 * SLICE);
    let Some(n) = node_configured(&[], &[("REG_NODE_USERNS_REMAP", &range)]) else {
        return;
    };
    ok(&n, &["pull", IMG]);
    let map = |args: &[&str]| -> String {
        let out = ok(&n, args);
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    // The node's remap: the range's first slice, by default.
    assert_eq!(
        map(&["run", "--rm", IMG, B, "cat", "/proc/self/uid_map"]),
        format!("0 {BASE} {SLICE}")
    );
    assert_eq!(
        map(&["run", "--rm", IMG, B, "cat", "/proc/self/gid_map"]),
        format!("0 {BASE} {SLICE}")
    );
    // --userns=host: the host's ids.
    assert_eq!(
        map(&[
            "run",
            "--rm",
            "--userns=host",
            IMG,
            B,
            "cat",
            "/proc/self/uid_map"
        ]),
        "0 0 4294967295"
    );
    // --userns=auto: a slice each, while both exist.
    let a = n.run_d(&["--userns=auto", "--name", "ns-a", IMG, B, "sleep", "1000"]);
    let b = n.run_d(&["--userns=auto", "--name", "ns-b", IMG, B, "sleep", "1000"]);
    let (a_base, b_base) = (BASE + SLICE, BASE + 2 * SLICE);
    assert_eq!(
        map(&["exec", "ns-a", B, "cat", "/proc/self/uid_map"]),
        format!("0 {a_base} {SLICE}")
    );
    assert_eq!(
        map(&["exec", "ns-b", B, "cat", "/proc/self/uid_map"]),
        format!("0 {b_base} {SLICE}")
    );
    assert_eq!(n.inspect("ns-a")["HostConfig"]["UsernsMode"], "auto");
    // Inside: root, the image's files are root's, and root writes where root may.
    let inside = ok(
        &n,
        &[
            "exec",
            "ns-a",
            B,
            "sh",
            "-c",
            "id -u; stat -c %u:%g /bin/busybox; echo hi > /made; stat -c %u /made; \
             for f in /bin/t /dev/shm/s /etc/hosts /dev/null; do touch $f || echo not $f; done; \
             chown 1000:1000 /made && stat -c %u /made",
        ],
    );
    assert_eq!(inside, "0\n0:0\n0\n1000\n", "inside ns-a");
    // On the host: its process and its files are its range's ids.
    let pid = n.inspect("ns-a")["State"]["Pid"].as_i64().expect("pid");
    assert!(
        status_line(pid, "Uid:").starts_with(&format!("Uid:\t{a_base}\t")),
        "{}",
        status_line(pid, "Uid:")
    );
    let made = n
        .tmp
        .path()
        .join("node/containers")
        .join(&a)
        .join("upper/made");
    let meta = std::fs::metadata(&made).expect("the upper dir's file");
    assert_eq!((meta.uid(), meta.gid()), (a_base + 1000, a_base + 1000));
    // The shared snapshots are untouched: no chowned copy, the owners are the host's root.
    let mut found = Vec::new();
    busyboxes(&n.tmp.path().join("node"), &mut found);
    let snapshots: Vec<_> = found
        .iter()
        .filter(|p| !p.starts_with(n.tmp.path().join("node/containers")))
        .collect();
    assert!(!snapshots.is_empty(), "no snapshot of busybox in {found:?}");
    for p in snapshots {
        let meta = std::fs::metadata(p).expect("snapshot");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{}", p.display());
    }
    // A named volume is its root's: written from inside as 0, on the host as the range's.
    let out = ok(
        &n,
        &[
            "run",
            "--rm",
            "--userns=auto",
            "-v",
            "nsdata:/data",
            IMG,
            B,
            "sh",
            "-c",
            "echo x > /data/f && stat -c %u /data/f",
        ],
    );
    assert_eq!(out, "0\n");
    let vol = n.tmp.path().join("node/volumes/nsdata/_data/f");
    let meta = std::fs::metadata(&vol).expect("the volume's file");
    assert!(
        meta.uid() > BASE && meta.uid() < BASE + 4 * SLICE,
        "{}: {}",
        vol.display(),
        meta.uid()
    );
    // What leaves the container carries its own ids (export, cp, commit), and what comes in
    // is stored as its range's.
    let tar_path = n.tmp.path().join("ns-a.tar");
    ok(
        &n,
        &["export", "-o", tar_path.to_str().expect("path"), "ns-a"],
    );
    let owners = |data: &[u8], want: &str| -> Option<(u64, u64)> {
        let mut a = tar::Archive::new(data);
        for e in a.entries().expect("entries") {
            let e = e.expect("entry");
            let path = e.path().expect("path").to_string_lossy().into_owned();
            if path.trim_start_matches("./").trim_end_matches('/') == want {
                let h = e.header();
                return Some((h.uid().expect("uid"), h.gid().expect("gid")));
            }
        }
        None
    };
    let tar_bytes = std::fs::read(&tar_path).expect("export");
    assert_eq!(
        owners(&tar_bytes, "made"),
        Some((1000, 1000)),
        "export of /made"
    );
    assert_eq!(
        owners(&tar_bytes, "bin/busybox"),
        Some((0, 0)),
        "export of the image's file"
    );
    let host_file = n.tmp.path().join("to-copy");
    std::fs::write(&host_file, "in\n").expect("write");
    ok(
        &n,
        &["cp", host_file.to_str().expect("path"), "ns-a:/copied"],
    );
    assert_eq!(
        ok(&n, &["exec", "ns-a", B, "stat", "-c", "%u:%g", "/copied"]),
        "0:0\n"
    );
    let copied = n
        .tmp
        .path()
        .join("node/containers")
        .join(&a)
        .join("upper/copied");
    let meta = std::fs::metadata(&copied).expect("the copied file");
    assert_eq!((meta.uid(), meta.gid()), (a_base, a_base));
    ok(&n, &["commit", "ns-a", "node/committed:v1"]);
    let out = ok(
        &n,
        &[
            "run",
            "--rm",
            "--userns=host",
            "node/committed:v1",
            B,
            "stat",
            "-c",
            "%u",
            "/made",
        ],
    );
    assert_eq!(out, "1000\n", "the committed layer has the container's ids");
    // exec -u: an id of the container's, the range's on the host.
    let out = ok(&n, &["exec", "-u", "1000", "ns-a", B, "id", "-u"]);
    assert_eq!(out, "1000\n");
    // Privileged containers need the host's ids, as with docker's remap.
    let (code, _, err) = n.reg(&["run", "--rm", "--privileged", IMG, B, "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("--userns=host"), "{err}");
    let (code, _, err) = n.reg(&["run", "--rm", "--userns=other", IMG, B, "true"]);
    assert_eq!(code, 125, "{err}");
    ok(&n, &["rm", "-f", &a, &b]);
    // A slice is free again once its container is gone.
    let c = n.run_d(&["--userns=auto", IMG, B, "sleep", "1000"]);
    assert_eq!(
        map(&["exec", &c, B, "cat", "/proc/self/uid_map"]),
        format!("0 {a_base} {SLICE}")
    );
    ok(&n, &["rm", "-f", &c]);
}
