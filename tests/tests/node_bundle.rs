//! The container's OCI bundle (`config.json` + `rootfs/`) is a real one: `runc run` on it, with
//! the rootfs mounted from the same layer snapshots, gives what `reg run` gave.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Unmounts and deletes whatever the runc run left, even when the test fails.
struct Cleanup {
    rootfs: PathBuf,
    state: PathBuf,
    runc_id: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&self.state)
            .args(["delete", "-f", &self.runc_id])
            .output();
        let _ = Command::new("umount").arg(&self.rootfs).output();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn runc_runs_the_generated_bundle() {
    let Some(n) = node() else { return };
    if !have("runc") {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("runc is required under CI=true (apt-get install runc)");
        }
        reg_tests::skip("runc missing");
        return;
    }
    let host_dir = n.tmp.path().join("vol");
    std::fs::create_dir_all(&host_dir).expect("mkdir");
    std::fs::write(host_dir.join("f"), "volume content\n").expect("write");
    let vol = format!("{}:/data:ro", host_dir.display());
    let script = "echo hello from $(/bin/busybox hostname); /bin/busybox id -u; \
                  /bin/busybox grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
                  /bin/busybox cat /data/f; echo pid $$; \
                  /bin/busybox unshare -u /bin/busybox true 2>/dev/null && echo unshare-ok || echo unshare-denied";
    // Its own network namespace: a bridge network's lives only while the container runs, and
    // runc runs this bundle after it has ended.
    let id = n.run_d(&[
        "--network",
        "none",
        "--hostname",
        "bundled",
        "-m",
        "64m",
        "-v",
        &vol,
        IMG,
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]);
    let (_, code, _) = n.reg(&["wait", &id]);
    assert_eq!(code.trim(), "0");
    let (_, from_reg, _) = n.reg(&["logs", &id]);
    assert!(
        from_reg.contains("unshare-denied") && from_reg.contains("Seccomp:\t2"),
        "{from_reg}"
    );

    let dir = n.tmp.path().join("node/containers").join(&id);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config.json"))
            .expect("json");
    assert_eq!(config["ociVersion"], "1.0.2");
    assert_eq!(config["root"]["path"], "rootfs");
    let layers: Vec<String> = serde_json::from_str(
        config["annotations"]["org.reg.layers"]
            .as_str()
            .unwrap_or("[]"),
    )
    .expect("layers");
    assert_eq!(layers.len(), 3);

    // Mount the rootfs as our runtime does (fresh upper), then hand the bundle to runc.
    let scratch = n.tmp.path().join("runc-scratch");
    for d in ["upper", "work", "state"] {
        std::fs::create_dir_all(scratch.join(d)).expect("mkdir");
    }
    let rootfs = dir.join("rootfs");
    let lower: Vec<&str> = layers.iter().rev().map(String::as_str).collect();
    let guard = Cleanup {
        rootfs: rootfs.clone(),
        state: scratch.join("state"),
        runc_id: format!("reg-test-{}", &id[..12]),
    };
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        scratch.join("upper").display(),
        scratch.join("work").display()
    );
    let m = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&rootfs)
        .output()
        .expect("mount");
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let out = Command::new("runc")
        .arg("--root")
        .arg(&guard.state)
        .args(["run", "-b"])
        .arg(&dir)
        .arg(&guard.runc_id)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("runc run");
    let from_runc = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "runc: {from_runc}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(from_runc, from_reg, "runc and reg run the bundle alike");
    drop(guard);
    assert!(!Path::new(&format!("/sys/fs/cgroup/memory/reg/{id}")).exists());
    assert_eq!(n.reg(&["rm", &id]).0, 0);
}
