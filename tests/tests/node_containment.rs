//! Containment: what an image, a layer or a container does never reaches the host. Each test
//! feeds the real agent hostile input (an image pushed to the registry, a container run with
//! docker's default settings) aimed at a host "victim" directory, then checks that the victim's
//! recursive listing (names, modes, owners, sha256) is unchanged and that the agent still serves.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

use reg_tests::*;

/// A tar layer from raw entries: (path, kind, link target or content).
enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

fn layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty())
            }
            Entry::File(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data)
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target)
            }
        }
        .expect("tar entry");
    }
    b.into_inner().expect("tar")
}

/// Pushes busybox + `extra` as `repo:v1` to the node's registry.
fn push_image(n: &Node, repo: &str, extra: Vec<Vec<u8>>) -> String {
    let mut layers = busybox_layers().expect("busybox");
    layers.extend(extra);
    push_layers(&client(), &n.server, repo, "v1", &layers);
    format!("{repo}:v1")
}

/// Runs `script` in the test image under docker (pulled from the node's registry), when docker
/// is here: the same hostile input, to show what docker contains. `None` without docker.
fn under_docker(n: &Node, extra: &[&str], script: &str) -> Option<(i32, String, String)> {
    if !docker_ready() {
        return None;
    }
    let image = format!("{}/{IMG}", n.server.host);
    let _cleanup = DockerImages(vec![image.clone()]);
    run(std::process::Command::new("docker").args(["pull", "-q", &image]));
    let out = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none"])
        .args(extra)
        .args([&image, B, "sh", "-c", script])
        .output()
        .expect("docker run");
    Some((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[track_caller]
fn still_serving(n: &Node) {
    let (code, out, err) = n.run(&[IMG, B, "echo", "alive"]);
    assert_eq!(
        (code, out.trim()),
        (0, "alive"),
        "the agent stopped serving: {err}"
    );
}

#[test]
fn default_containers_cannot_open_host_devices() {
    let Some(n) = node() else { return };
    // mknod is allowed (CAP_MKNOD, `c *:* m` as docker); opening what was made is not.
    let script = "mkdir -p /tmp && cd /tmp; \
        mknod kmsg c 1 11 && (echo X > kmsg) 2>&1; \
        mknod kvm c 10 232 && (cat kvm) 2>&1; \
        mknod loop b 7 0 && (dd if=loop bs=512 count=1 of=/dev/null) 2>&1; \
        mknod sda b 8 0 && (dd if=sda bs=512 count=1 of=/dev/null) 2>&1; \
        mknod mem c 1 1 && (dd if=mem bs=1 count=1 of=/dev/null) 2>&1; \
        mknod port c 1 4 && (dd if=port bs=1 count=1 of=/dev/null) 2>&1; \
        mknod tty1 c 4 1 && (echo X > tty1) 2>&1; \
        head -c 3 /dev/zero | wc -c; echo fine > /dev/null && echo null-ok";
    let (code, out, err) = n.run(&args(&[IMG], &sh(script)));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.matches("Operation not permitted").count(),
        7,
        "every host device refused:\n{out}"
    );
    assert!(
        out.contains("null-ok") && out.lines().any(|l| l.trim() == "3"),
        "{out}"
    );
    if let Some((code, theirs, err)) = under_docker(&n, &[], script) {
        assert_eq!(code, 0, "docker: {theirs}\n{err}");
        assert_eq!(
            theirs.matches("Operation not permitted").count(),
            7,
            "docker: {theirs}"
        );
    }

    // The container's own device cgroup: deny-all plus docker's list, not `a *:* rwm`.
    let id = n.run_d(&[IMG, B, "sleep", "300"]);
    let list = std::fs::read_to_string(format!("/sys/fs/cgroup/devices/reg/{id}/devices.list"));
    if let Ok(list) = list {
        assert!(!list.lines().any(|l| l == "a *:* rwm"), "{list}");
        for rule in [
            "c 1:3 rwm",
            "c 1:5 rwm",
            "c *:* m",
            "b *:* m",
            "c 136:* rwm",
        ] {
            assert!(list.lines().any(|l| l == rule), "{rule} missing:\n{list}");
        }
    } else {
        eprintln!("no v1 devices controller here: the cgroup's list is not checked");
    }
    n.reg(&["rm", "-f", &id]);

    // --device gives one device (here the host's null under another name); --privileged all.
    let (code, out, err) = n.run(&args(
        &["--device", "/dev/null:/dev/extnull:rw", IMG],
        &sh("echo x > /dev/extnull && echo dev-ok; mknod /k c 1 11 && (echo X > /k) 2>&1; true"),
    ));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("dev-ok"), "{out}");
    let both = format!("{out}{err}");
    assert_eq!(both.matches("Operation not permitted").count(), 1, "{both}");
    let (code, out, err) = n.run(&args(
        &["--privileged", IMG],
        &sh("mkdir -p /tmp && mknod /tmp/z c 1 5 && head -c 2 /tmp/z | wc -c"),
    ));
    assert_eq!((code, out.trim()), (0, "2"), "{err}");
    let (code, _, err) = n.run(&["--device", "/etc/passwd", IMG, B, "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("not a device"), "{err}");
    still_serving(&n);
}

#[test]
fn an_image_whose_etc_points_at_the_host_cannot_reach_it() {
    let Some(n) = node() else { return };
    let v = Victim::new();
    let victim = v.display();
    let keep = format!("{victim}/keep.txt");
    let data = format!("{victim}/sub/data");
    let images = [
        push_image(
            &n,
            "evil/etc-abs",
            vec![layer(&[Entry::Symlink("etc", &victim)])],
        ),
        push_image(
            &n,
            "evil/etc-self",
            vec![layer(&[Entry::Symlink("etc", "/etc")])],
        ),
        push_image(
            &n,
            "evil/etc-up",
            vec![layer(&[Entry::Symlink("etc", "../../../../../../..")])],
        ),
        push_image(
            &n,
            "evil/etc-files",
            vec![layer(&[
                Entry::Dir("etc/"),
                Entry::Symlink("etc/hosts", &keep),
                Entry::Symlink("etc/hostname", &data),
                Entry::Symlink("etc/resolv.conf", &format!("{victim}/new")),
            ])],
        ),
        push_image(
            &n,
            "evil/dev-proc",
            vec![layer(&[
                Entry::Symlink("dev", &victim),
                Entry::Symlink("proc", &format!("{victim}/sub")),
                Entry::Symlink("sys", &victim),
            ])],
        ),
    ];
    // A bind mount's or a volume's target behind the image's symlink to the victim.
    let mnt = push_image(
        &n,
        "evil/mnt",
        vec![layer(&[Entry::Symlink("mnt", &victim)])],
    );
    let src = tempfile::tempdir().expect("bind source");
    let bind = format!("{}:/mnt/sub", src.path().display());
    for extra in [["-v", bind.as_str()], ["-v", "evil-vol:/mnt/vol"]] {
        let (code, out, err) = n.run(&[extra[0], extra[1], &mnt, B, "true"]);
        assert!(
            code == 0 || (code == 125 && err.contains("reg: container")),
            "{extra:?}: {code}\n{out}\n{err}"
        );
        v.assert_untouched();
    }
    for img in &images {
        // Whether it starts or is refused, it must say why and touch nothing of the host's.
        let (code, out, err) = n.run(&[img, B, "sh", "-c", "echo started; cat /etc/hosts"]);
        assert!(
            code == 0 || (code == 125 && err.contains("reg: container")),
            "{img}: {code}\n{out}\n{err}"
        );
        v.assert_untouched();
    }
    // Started containers see their own /etc files, not the host's.
    let (code, out, err) = n.run(&[&images[3], B, "cat", "/etc/hostname"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains('\u{7}'), "{out}");
    v.assert_untouched();
    still_serving(&n);
}

#[test]
fn whiteouts_of_dot_dot_are_refused_and_pulls_go_on() {
    let Some(n) = node() else { return };
    let tmp = n.tmp.path().join("node/tmp");
    let before = std::fs::read_dir(&tmp).map(|d| d.count()).ok();
    for (repo, name) in [("evil/wh-root", ".wh..."), ("evil/wh-sub", "sub/.wh...")] {
        let img = push_image(
            &n,
            repo,
            vec![layer(&[Entry::Dir("sub/"), Entry::File(name, b"")])],
        );
        let (code, out, err) = n.reg(&["pull", &img]);
        assert_ne!(code, 0, "{out}");
        assert!(err.contains("refused") && err.contains(".wh..."), "{err}");
        assert!(tmp.is_dir(), "the node's tmp dir survives");
    }
    if let Some(b) = before {
        assert!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) <= b);
    }
    still_serving(&n);
}

#[test]
fn volume_copy_up_never_writes_outside_the_volume() {
    let Some(n) = node() else { return };
    let v = Victim::new();
    let victim = v.display();
    // An image with a /data dir big enough that the copy-up takes a while.
    let chunk = vec![b'x'; 2 << 20];
    let names: Vec<String> = (0..50).map(|i| format!("f{i:03}")).collect();
    let paths: Vec<String> = names.iter().map(|f| format!("data/{f}")).collect();
    let mut entries = vec![Entry::Dir("data/")];
    for p in &paths {
        entries.push(Entry::File(p, &chunk));
    }
    let img = push_image(&n, "evil/volume", vec![layer(&entries)]);
    // A second container with the same volume, once the copy has begun, plants a symlink to
    // the host's victim at each name the copy has yet to write (last names first, so it gets
    // ahead of the copy).
    let reversed: Vec<&str> = names.iter().rev().map(String::as_str).collect();
    let planter = format!(
        "while [ -z \"$(ls /vol)\" ]; do :; done; \
         for f in {}; do ln -s {victim}/$f /vol/$f 2>/dev/null; done; sleep 30",
        reversed.join(" ")
    );
    let b = n.run_d(&args(&["-v", "shared:/vol", IMG], &sh(&planter)));
    let (code, out, err) = n.run(&[
        "-v",
        "shared:/data",
        &img,
        B,
        "sh",
        "-c",
        "ls /data | wc -l",
    ]);
    assert!(
        code == 0 || (code == 125 && err.contains("into its volume")),
        "{code}\n{out}\n{err}"
    );
    n.reg(&["rm", "-f", &b]);
    v.assert_untouched();
    still_serving(&n);
}

#[test]
fn no_host_descriptor_reaches_a_container() {
    let Some(n) = node() else { return };
    // The shell's own descriptors, listed by a child (`ls` as a separate process, and not the
    // last command, which the shell would exec in its own place).
    let fds = "/bin/busybox ls /proc/$$/fd; true";
    let listed = |out: &str| out.split_whitespace().collect::<Vec<_>>().join(" ");
    let (code, out, err) = n.run(&args(&[IMG], &sh(fds)));
    assert_eq!((code, listed(&out)), (0, "0 1 2".into()), "{err}");
    let (code, out, err) = n.run(&args(&["-t", IMG], &sh(fds)));
    assert_eq!((code, listed(&out)), (0, "0 1 2".into()), "{err}");
    if let Some((code, theirs, err)) = under_docker(&n, &[], fds) {
        assert_eq!(
            (code, listed(&theirs)),
            (0, "0 1 2".into()),
            "docker: {err}"
        );
    }

    let id = n.run_d(&["-w", "/work", IMG, B, "sleep", "300"]);
    for extra in [
        &[][..],
        &["-t"],
        &["-i"],
        &["-u", "1000"],
        &["-w", "/bin"],
        &["-it"],
    ] {
        let mut a = vec!["exec"];
        a.extend_from_slice(extra);
        a.push(&id);
        let script = sh(fds);
        let (code, out, err) = n.reg(&args(&a, &script));
        assert_eq!(
            (code, listed(&out)),
            (0, "0 1 2".into()),
            "exec {extra:?}: {err}"
        );
    }
    // A working directory that is a descriptor of the runtime's is refused, never entered.
    for fd in 3..=32 {
        let w = format!("/proc/self/fd/{fd}");
        let (code, out, err) = n.reg(&["exec", "-w", &w, &id, B, "pwd"]);
        assert_eq!(code, 126, "exec -w {w}: {out}\n{err}");
        assert!(err.contains("working directory"), "{err}");
        let (code, out, err) = n.run(&["-w", &w, IMG, B, "pwd"]);
        assert_eq!(code, 126, "run -w {w}: {out}\n{err}");
    }
    n.reg(&["rm", "-f", &id]);
    still_serving(&n);
}

#[test]
fn a_working_directory_swapped_for_a_symlink_cannot_lead_out() {
    let Some(n) = node() else { return };
    let v = Victim::new();
    let victim = v.display();
    let id = n.run_d(&["-w", "/work", IMG, B, "sleep", "300"]);
    let (code, out, err) = n.reg(&["exec", &id, B, "sh", "-c", "touch inside && pwd"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for target in [victim.clone(), format!("../../../../../../../..{victim}")] {
        let swap = format!("cd / && rm -rf /work && ln -s {target} /work");
        let (code, _, err) = n.reg(&args(&["exec", "-w", "/", &id], &sh(&swap)));
        assert_eq!(code, 0, "{err}");
        // The container's working directory now names the host's victim by a symlink.
        let (code, out, err) = n.reg(&["exec", &id, B, "sh", "-c", "touch planted; ls"]);
        assert_eq!(code, 126, "{out}\n{err}");
        let (code, out, err) = n.reg(&["exec", "-w", "/work", &id, B, "touch", "planted"]);
        assert_eq!(code, 126, "{out}\n{err}");
        v.assert_untouched();
    }
    n.reg(&["rm", "-f", &id]);
    still_serving(&n);
}
