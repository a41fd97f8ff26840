//! The real peers against the real registry: docker, skopeo, podman and umoci, unmodified.
//! A missing peer skips its test locally and fails it under CI=true.

use std::process::Command;

use reg_tests::*;

fn digest_in(output: &str, marker: &str) -> String {
    output
        .lines()
        .find_map(|l| l.split(marker).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {marker:?} in output:\n{output}"))
        .to_string()
}

#[test]
fn docker_push_then_pull_keeps_the_digest() {
    if !docker_ready() {
        return;
    }
    let Some(_) = busybox_layers() else { return };
    let reg = Registry::start();
    let ctx = tempfile::tempdir().expect("tempdir");
    std::fs::copy("/bin/busybox", ctx.path().join("busybox")).expect("copy busybox");
    std::fs::write(ctx.path().join("a.txt"), "a\n").expect("a.txt");
    std::fs::write(ctx.path().join("b.txt"), "b\n").expect("b.txt");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\nCMD [\"/bin/busybox\", \"sh\"]\n",
    )
    .expect("Dockerfile");
    let image = format!("{}/compat/docker/busybox:v1", reg.host);
    let _cleanup = DockerImages(vec![image.clone()]);
    run(Command::new("docker")
        .args(["build", "-q", "-t", &image])
        .arg(ctx.path())
        .env("DOCKER_BUILDKIT", "0"));

    let out = run(Command::new("docker").args(["push", &image]));
    let pushed = digest_in(&out, "digest: ");
    assert!(pushed.starts_with("sha256:"), "{out}");

    // The registry has all three layers and serves the manifest with docker's media type.
    let r = client()
        .get(reg.url(&format!("/v2/compat/docker/busybox/manifests/{pushed}")))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .expect("GET manifest");
    assert_eq!(r.status(), 200);
    let m: serde_json::Value = r.json().expect("manifest json");
    assert_eq!(m["layers"].as_array().map(Vec::len), Some(3), "{m}");

    run(Command::new("docker").args(["rmi", "-f", &image]));
    let out = run(Command::new("docker").args(["pull", &image]));
    assert_eq!(
        digest_in(&out, "Digest: "),
        pushed,
        "digest survives the round trip"
    );
    let by_digest = format!("{}/compat/docker/busybox@{pushed}", reg.host);
    run(Command::new("docker").args(["pull", &by_digest]));
    // A second push of the same image uploads nothing new and keeps the digest.
    let out = run(Command::new("docker").args(["push", &image]));
    assert_eq!(digest_in(&out, "digest: "), pushed);
}

#[test]
fn skopeo_copies_both_ways_and_umoci_unpacks_the_result() {
    if peer("skopeo").is_none() || peer("umoci").is_none() {
        return;
    }
    let Some(layers) = busybox_layers() else {
        return;
    };
    let reg = Registry::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    let manifest = write_oci_layout(&src, "v1", &layers);
    let dest = format!("docker://{}/compat/skopeo/busybox:v1", reg.host);
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(&dest));

    let raw = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &dest]));
    assert_eq!(
        sha256(raw.as_bytes()),
        manifest,
        "the manifest is stored byte-for-byte"
    );

    let back = tmp.path().join("back");
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", &dest])
        .arg(format!("oci:{}:v1", back.display())));
    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", back.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read(rootfs.join("bin/busybox")).expect("busybox"),
        std::fs::read("/bin/busybox").expect("host busybox")
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/hello.txt")).expect("hello"),
        "hello from layer 2\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("a.txt")).expect("a.txt"),
        "layer 3\n"
    );
}

#[test]
fn podman_pulls_and_pushes() {
    if peer("podman").is_none() || peer("skopeo").is_none() {
        return;
    }
    let Some(layers) = busybox_layers() else {
        return;
    };
    let reg = Registry::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write_oci_layout(&src, "v1", &layers);
    let seeded = format!("{}/compat/podman/seed:v1", reg.host);
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{seeded}")));

    // Private storage so the host's podman store is never touched.
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(tmp.path().join("root"))
            .arg("--runroot")
            .arg(tmp.path().join("runroot"));
        c.args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ]);
        c.args(args);
        c
    };
    run(&mut podman(&["pull", "--tls-verify=false", &seeded]));
    let pushed = format!("{}/compat/podman/pushed:v2", reg.host);
    run(&mut podman(&["tag", &seeded, &pushed]));
    run(&mut podman(&["push", "--tls-verify=false", &pushed]));
    run(&mut podman(&["rmi", "-a", "-f"]));
    run(&mut podman(&["pull", "--tls-verify=false", &pushed]));

    let r = client()
        .get(reg.url("/v2/compat/podman/pushed/tags/list"))
        .send()
        .expect("GET tags");
    assert_eq!(
        r.json::<serde_json::Value>().expect("json")["tags"],
        serde_json::json!(["v2"])
    );
    let _ = podman(&["rmi", "-a", "-f"]).output();
}
