//! A registry + node agent (`reg serve`, as root) with the busybox test image pushed, and
//! `reg` commands pointed at it. Dropping it force-removes every container it still has, so a
//! failing test leaves no process, mount or cgroup behind.

#![allow(dead_code)]

use std::process::Command;

use reg_tests::*;

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

pub struct Node {
    pub server: Registry,
    pub host: String,
    pub tmp: tempfile::TempDir,
}

pub const IMG: &str = "node/run:v1";

/// The test image's only binary.
pub const B: &str = "/bin/busybox";

/// `busybox sh -c SCRIPT` as a container command.
pub fn sh(script: &str) -> Vec<String> {
    vec![B.into(), "sh".into(), "-c".into(), script.into()]
}

/// `pre` followed by `script`, as `reg` arguments.
pub fn args<'a>(pre: &[&'a str], script: &'a [String]) -> Vec<&'a str> {
    pre.iter()
        .copied()
        .chain(script.iter().map(String::as_str))
        .collect()
}

/// Polls `f` every 50 ms for up to 10 s.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// `None` (skip) without root, except under CI=true where containers are required.
pub fn node() -> Option<Node> {
    node_with(&[])
}

/// Like [`node`], with extra layers on top of the busybox image.
pub fn node_with(extra: &[Vec<u8>]) -> Option<Node> {
    node_configured(extra, &[])
}

/// Like [`node_with`], the node started with extra environment (`REG_NODE_…` settings).
pub fn node_configured(extra: &[Vec<u8>], env: &[(&str, &str)]) -> Option<Node> {
    if !is_root() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("container tests need root under CI=true");
        }
        skip("containers need root");
        return None;
    }
    let mut layers = busybox_layers()?;
    layers.extend(extra.iter().cloned());
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Registry::start_all_with(tmp.path(), env);
    push_layers(&client(), &server, "node/run", "v1", &layers);
    let n = Node {
        host: format!("unix://{}", tmp.path().join("node.sock").display()),
        server,
        tmp,
    };
    n.wait_for_agent();
    Some(n)
}

impl Node {
    pub fn wait_for_agent(&self) {
        let sock = self.tmp.path().join("node.sock");
        for _ in 0..200 {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("the node agent did not come up on {}", sock.display());
    }

    /// Any `reg` command against this node: (exit code, stdout, stderr).
    pub fn reg(&self, args: &[&str]) -> (i32, String, String) {
        self.reg_with_input(args, b"")
    }

    /// Like [`Node::reg`], with `input` on its stdin (written while it runs, then closed).
    pub fn reg_with_input(&self, args: &[&str], input: &[u8]) -> (i32, String, String) {
        self.reg_with_input_env(args, input, &[])
    }

    /// Like [`Node::reg_with_input`], with more environment (it wins over the defaults).
    pub fn reg_with_input_env(
        &self,
        args: &[&str],
        input: &[u8],
        env: &[(&str, &str)],
    ) -> (i32, String, String) {
        use std::io::Write;
        let mut child = Command::new(reg_bin())
            .args(args)
            .env("REG_HOST", &self.host)
            .env("REG_NODE_DEFAULT_REGISTRY", &self.server.host)
            .env("REG_CONFIG_DIR", "/nonexistent-reg-config")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run reg");
        let writer = child.stdin.take().map(|mut stdin| {
            let data = input.to_vec();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            })
        });
        let out = child.wait_with_output().expect("run reg");
        if let Some(w) = writer {
            let _ = w.join();
        }
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `reg run --rm ARGS…` in the foreground.
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        self.reg(&all)
    }

    /// `reg run -d ARGS…`: the new container's id.
    pub fn run_d(&self, args: &[&str]) -> String {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        let (code, out, err) = self.reg(&all);
        assert_eq!(code, 0, "reg run -d {args:?}: {err}");
        out.trim().to_string()
    }

    /// `reg inspect X` → the one object.
    pub fn inspect(&self, what: &str) -> serde_json::Value {
        let (code, out, err) = self.reg(&["inspect", what]);
        assert_eq!(code, 0, "inspect {what}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
        v[0].clone()
    }

    pub fn mounts_under_data(&self) -> usize {
        let data = self.tmp.path().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&data))
            .count()
    }

    /// Container directories still on disk.
    pub fn container_dirs(&self) -> usize {
        std::fs::read_dir(self.tmp.path().join("node/containers"))
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Removed containers' directories not yet deleted (the agent deletes them after it
    /// answers the removal).
    pub fn removed_dirs_left(&self) -> usize {
        std::fs::read_dir(self.tmp.path().join("node/containers/.removed"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Monitors of this node still running (their command line names the data dir).
    pub fn monitors(&self) -> Vec<i32> {
        let data = self.tmp.path().display().to_string();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("monitor") && c.contains(&data)
                })
            })
            .collect()
    }
}

/// A container's cgroup directories on this host (v1 controllers and the unified tree).
pub fn cgroup_dirs(id: &str) -> Vec<String> {
    [
        "memory",
        "pids",
        "cpu,cpuacct",
        "unified",
        "freezer",
        "devices",
    ]
    .iter()
    .map(|c| format!("/sys/fs/cgroup/{c}/reg/{id}"))
    .filter(|p| std::path::Path::new(p).exists())
    .collect()
}

impl Drop for Node {
    fn drop(&mut self) {
        let (_, ids, _) = self.reg(&["ps", "-aq", "--no-trunc"]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.reg(&args);
        }
        // Networks: the agent's own removal first, then whatever is left in the kernel.
        let (_, nets, _) = self.reg(&["network", "ls", "-q"]);
        let mut bridges = Vec::new();
        for id in nets.split_whitespace() {
            let (_, out, _) = self.reg(&["network", "inspect", id]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            if let Some(br) = v[0]["Options"]["com.docker.network.bridge.name"].as_str() {
                bridges.push((
                    br.to_string(),
                    v[0]["Id"].as_str().unwrap_or("").to_string(),
                ));
            }
            if v[0]["Name"] != "bridge" {
                let _ = self.reg(&["network", "rm", id]);
            }
        }
        for (br, id) in bridges {
            let _ = Command::new("ip").args(["link", "del", &br]).output();
            if id.len() >= 8 {
                let _ = Command::new("nft")
                    .args(["delete", "table", "ip", &format!("reg_{}", &id[..8])])
                    .output();
            }
        }
        // Subnets this node claimed host-wide.
        let me = self.tmp.path().join("node").display().to_string();
        for c in std::fs::read_dir("/run/reg/subnets")
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::read_to_string(c.path()).is_ok_and(|o| o == me) {
                let _ = std::fs::remove_file(c.path());
            }
        }
        // Whatever the agent could not reach (it may be the thing that failed).
        for pid in self.monitors() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        for d in std::fs::read_dir(self.tmp.path().join("node/containers"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(p) = std::fs::read_to_string(d.path().join("pid")) {
                let _ = Command::new("kill").args(["-9", p.trim()]).status();
            }
            let id = d.file_name().to_string_lossy().into_owned();
            let _ = umount_lazy(&d.path().join("netns"));
            std::thread::sleep(std::time::Duration::from_millis(50));
            for c in cgroup_dirs(&id) {
                let _ = std::fs::remove_dir(c);
            }
        }
    }
}

/// Unmounts a leftover network namespace file (as `umount -l`).
fn umount_lazy(p: &std::path::Path) -> std::io::Result<()> {
    if p.exists() {
        Command::new("umount").arg("-l").arg(p).output()?;
    }
    Ok(())
}

/// `docker -H <the node's socket> ARGS…` with a config dir of its own: (exit code, stdout,
/// stderr). A client still waiting after a minute (an answer the agent never finishes) is
/// killed and fails the test.
pub fn docker(n: &Node, docker: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    docker_with_input(n, docker, args, None)
}

/// [`docker`] with `input` on its stdin (else none: `/dev/null`).
pub fn docker_with_input(
    n: &Node,
    docker: &std::path::Path,
    args: &[&str],
    input: Option<&[u8]>,
) -> (i32, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(docker)
        .args(["-H", &n.host])
        .args(args)
        .env("DOCKER_CONFIG", n.tmp.path().join("docker-config"))
        // `docker build` on reg is the classic builder's contract (the CLI needs buildx for
        // BuildKit); other commands ignore it.
        .env("DOCKER_BUILDKIT", "0")
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run docker");
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        // A client answered before it read all of its input (a refused upload) closes it.
        if let Err(e) = stdin.write_all(data) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe,
                "docker's stdin: {e}"
            );
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // Output is read while waiting: a client blocked on a full pipe would never end.
    let (out_reader, err_reader) = reg_tests::drain_output(&mut child);
    let status = loop {
        if let Some(s) = child.try_wait().expect("docker's status") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("docker {args:?} did not finish within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}
