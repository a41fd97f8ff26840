//! Pull-through mirrors (`[[registry.mirror]]`) against a real upstream: distribution's
//! `docker-registry` from Debian on loopback, whose access log counts what reaches it. Images
//! go in and come out with skopeo; dockerd's `registry-mirrors` is used when CI configured it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reg_tests::{peer, skip, Registry};

/// The address CI's dockerd has as its registry mirror (`.ci/run`: `--registry-mirror`).
const DOCKERD_MIRROR: &str = "127.0.0.1:47990";

/// distribution's registry on a free loopback port, its access log kept.
struct Upstream {
    child: Option<Child>,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Upstream {
    fn start(bin: &Path) -> Upstream {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog: {{ level: error, accesslog: {{ disabled: false }} }}\n\
                 storage:\n  filesystem: {{ rootdirectory: {} }}\n  delete: {{ enabled: true }}\n\
                 http: {{ addr: \"{addr}\" }}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("config.yml");
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (out, sink) = (child.stdout.take().expect("stdout"), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let up = Upstream {
            child: Some(child),
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&up.addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        up
    }

    /// Access-log lines so far that contain `needle`.
    fn requests(&self, needle: &str) -> usize {
        self.log
            .lock()
            .map(|l| l.iter().filter(|x| x.contains(needle)).count())
            .unwrap_or(0)
    }

    /// Waits until the access log has `n` lines (it is written after each answer).
    fn wait_log(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.requests("") < n {
            assert!(
                Instant::now() < deadline,
                "access log stuck below {n} lines"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn peers() -> Option<(PathBuf, PathBuf)> {
    let Some(dist) = peer("docker-registry") else {
        skip("docker-registry (distribution) is not installed");
        return None;
    };
    let Some(skopeo) = peer("skopeo") else {
        skip("skopeo is not installed");
        return None;
    };
    Some((dist, skopeo))
}

fn skopeo(bin: &Path, args: &[&str]) {
    let out = Command::new(bin).args(args).output().expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies the image tagged v1 in the OCI layout `dir` to `dest` (`host:port/name:tag`).
fn publish(skopeo_bin: &Path, dir: &Path, dest: &str) {
    let src = format!("oci:{}:v1", dir.display());
    skopeo(
        skopeo_bin,
        &[
            "copy",
            "-q",
            "--dest-tls-verify=false",
            &src,
            &format!("docker://{dest}"),
        ],
    );
}

/// An OCI layout with one image of two layers of `mib` MiB each, distinct per `seed`.
fn image(dir: &Path, seed: u32, mib: usize) -> (String, Vec<String>) {
    let layers: Vec<Vec<u8>> = (0..2u32)
        .map(|l| {
            let mut x = seed.wrapping_mul(7919).wrapping_add(l) | 1;
            let data: Vec<u8> = (0..mib << 20)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            reg_tests::tar_layer(&[reg_tests::LayerFile {
                path: "data.bin",
                mode: 0o644,
                data: &data,
            }])
        })
        .collect();
    let manifest = reg_tests::write_oci_layout(dir, "v1", &layers);
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            dir.join("blobs/sha256")
                .join(manifest.trim_start_matches("sha256:")),
        )
        .expect("manifest"),
    )
    .expect("json");
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap_or("").to_string()];
    for l in m["layers"].as_array().into_iter().flatten() {
        blobs.push(l["digest"].as_str().unwrap_or("").to_string());
    }
    (manifest, blobs)
}

fn mirror_config(dir: &Path, upstream: &str) -> PathBuf {
    let path = dir.join("reg.toml");
    std::fs::write(
        &path,
        format!(
            "[[registry.mirror]]\nupstream = \"http://{upstream}\"\nprefix = \"\"\n\
             repositories = \"library/*\"\ntag_ttl = \"1h\"\n\n\
             [[registry.mirror]]\nupstream = \"http://{upstream}\"\nprefix = \"always\"\n\
             tag_ttl = \"0s\"\n"
        ),
    )
    .expect("reg.toml");
    path
}

fn start_reg(cfg: &Path) -> Registry {
    Registry::start_fresh_with(&[("REG_CONFIG", cfg.to_str().unwrap_or(""))])
}

#[test]
fn a_cold_pull_fetches_each_blob_once_a_warm_pull_asks_nothing_and_pushes_are_refused() {
    let Some((dist, skopeo_bin)) = peers() else {
        return;
    };
    let up = Upstream::start(&dist);
    let work = tempfile::tempdir().expect("tempdir");
    let (manifest, blobs) = image(&work.path().join("src"), 1, 2);
    publish(
        &skopeo_bin,
        &work.path().join("src"),
        &format!("{}/library/app:v1", up.addr),
    );
    let cfg = mirror_config(work.path(), &up.addr);
    let reg = start_reg(&cfg);
    let host = reg.url("").trim_start_matches("http://").to_string();
    let before = up.requests("");

    let pull = |to: &str| {
        skopeo(
            &skopeo_bin,
            &[
                "copy",
                "-q",
                "--src-tls-verify=false",
                &format!("docker://{host}/library/app:v1"),
                &format!("oci:{}:v1", work.path().join(to).display()),
            ],
        );
    };
    pull("cold");
    for b in &blobs {
        let hex = b.trim_start_matches("sha256:");
        assert!(
            work.path().join("cold/blobs/sha256").join(hex).exists(),
            "{b} pulled"
        );
        assert_eq!(
            up.requests(&format!("GET /v2/library/app/blobs/{b}")),
            1,
            "one upstream fetch of {b}"
        );
    }
    let hex = manifest.trim_start_matches("sha256:");
    assert!(work.path().join("cold/blobs/sha256").join(hex).exists());
    let after_cold = up.requests("");
    assert!(after_cold > before);

    pull("warm");
    assert_eq!(
        up.requests(""),
        after_cold,
        "a warm pull must not reach the upstream:\n{:?}",
        up.log.lock().map(|l| l.clone()).unwrap_or_default()
    );

    let c = reg_tests::client();
    let r = c
        .post(reg.url("/v2/library/app/blobs/uploads/"))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 403);
    let text = r.text().unwrap_or_default();
    assert!(text.contains("DENIED") && text.contains("mirror"), "{text}");
    let r = c
        .put(reg.url("/v2/library/app/manifests/v2"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body("{}")
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 403);
    // A name outside every mirror is an ordinary repository.
    reg_tests::push_image(&c, &reg, "mine/app", "v1", "own");

    // The cached content is ordinary content: listed, with metrics counted.
    let r = c
        .get(reg.url("/v2/library/app/tags/list"))
        .send()
        .expect("tags");
    assert!(r.text().unwrap_or_default().contains("v1"));
}

#[test]
fn eight_concurrent_cold_pulls_share_one_upstream_fetch_per_blob() {
    let Some((dist, skopeo_bin)) = peers() else {
        return;
    };
    let up = Upstream::start(&dist);
    let work = tempfile::tempdir().expect("tempdir");
    let (_, blobs) = image(&work.path().join("src"), 2, 8);
    publish(
        &skopeo_bin,
        &work.path().join("src"),
        &format!("{}/library/big:v1", up.addr),
    );
    let cfg = mirror_config(work.path(), &up.addr);
    let reg = start_reg(&cfg);
    let host = reg.url("").trim_start_matches("http://").to_string();
    std::thread::scope(|s| {
        for i in 0..8 {
            let (skopeo_bin, host, work) = (&skopeo_bin, &host, work.path());
            s.spawn(move || {
                skopeo(
                    skopeo_bin,
                    &[
                        "copy",
                        "-q",
                        "--src-tls-verify=false",
                        &format!("docker://{host}/library/big:v1"),
                        &format!("oci:{}:v1", work.join(format!("out{i}")).display()),
                    ],
                );
            });
        }
    });
    for i in 0..8 {
        for b in &blobs {
            let p = work
                .path()
                .join(format!("out{i}/blobs/sha256"))
                .join(b.trim_start_matches("sha256:"));
            assert!(p.exists(), "pull {i} has {b}");
        }
    }
    for b in &blobs {
        assert_eq!(
            up.requests(&format!("GET /v2/library/big/blobs/{b}")),
            1,
            "eight pulls, one upstream fetch of {b}"
        );
    }
}

#[test]
fn with_the_upstream_stopped_cached_tags_still_pull_and_new_ones_say_why_not() {
    let Some((dist, skopeo_bin)) = peers() else {
        return;
    };
    let mut up = Upstream::start(&dist);
    let work = tempfile::tempdir().expect("tempdir");
    let (manifest, _) = image(&work.path().join("src"), 3, 1);
    publish(
        &skopeo_bin,
        &work.path().join("src"),
        &format!("{}/team/app:v1", up.addr),
    );
    let cfg = mirror_config(work.path(), &up.addr);
    let reg = start_reg(&cfg);
    let host = reg.url("").trim_start_matches("http://").to_string();
    let pull = |to: &str| {
        Command::new(&skopeo_bin)
            .args([
                "copy",
                "-q",
                "--src-tls-verify=false",
                &format!("docker://{host}/always/team/app:v1"),
                &format!("oci:{}:v1", work.path().join(to).display()),
            ])
            .output()
            .expect("skopeo")
    };
    assert!(pull("first").status.success());
    // tag_ttl = 0s: every pull asks the upstream again, conditionally.
    let n = up.requests("");
    assert!(pull("second").status.success());
    up.wait_log(n + 1);
    assert_eq!(
        up.requests("GET /v2/team/app/blobs/"),
        3,
        "blobs were fetched once"
    );

    up.stop();
    let out = pull("stale");
    assert!(
        out.status.success(),
        "a cached tag pulls with its upstream down: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        reg.log()
    );
    let hex = manifest.trim_start_matches("sha256:");
    assert!(work.path().join("stale/blobs/sha256").join(hex).exists());
    let r = reg_tests::client()
        .get(reg.url("/v2/always/team/other/manifests/v1"))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 404);
    let text = r.text().unwrap_or_default();
    assert!(text.contains("upstream"), "{text}");
}

/// Relays each TCP connection to `to`; from the upstream to reg it passes only as many bytes
/// as `allow` holds, so a test can hold a blob half-sent.
struct Valve {
    addr: String,
    allow: Arc<AtomicI64>,
}

impl Valve {
    fn start(to: String, allow: i64) -> Valve {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let allow = Arc::new(AtomicI64::new(allow));
        let budget = allow.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(&to) else {
                    continue;
                };
                let (Ok(mut c_in), Ok(mut s_out)) = (conn.try_clone(), server.try_clone()) else {
                    continue;
                };
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_in, mut c_out, budget) = (server, conn, budget.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        let mut left = budget.load(Ordering::SeqCst);
                        while left <= 0 {
                            std::thread::sleep(Duration::from_millis(5));
                            left = budget.load(Ordering::SeqCst);
                        }
                        let want = buf.len().min(usize::try_from(left).unwrap_or(buf.len()));
                        match s_in.read(&mut buf[..want]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                budget.fetch_sub(n as i64, Ordering::SeqCst);
                                if c_out.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Valve { addr, allow }
    }
}

#[test]
fn a_cold_blob_streams_to_the_client_before_it_is_complete_and_is_visible_only_once_verified() {
    let Some((dist, skopeo_bin)) = peers() else {
        return;
    };
    let up = Upstream::start(&dist);
    let work = tempfile::tempdir().expect("tempdir");
    let (_, blobs) = image(&work.path().join("src"), 4, 16);
    publish(
        &skopeo_bin,
        &work.path().join("src"),
        &format!("{}/library/slow:v1", up.addr),
    );
    // The upstream may send reg 4 MiB of the 16 MiB layer, then nothing until the test says.
    let valve = Valve::start(up.addr.clone(), 4 << 20);
    let cfg = mirror_config(work.path(), &valve.addr);
    let reg = start_reg(&cfg);
    let layer = &blobs[1];
    let c = reg_tests::client();
    let mut r = c
        .get(reg.url(&format!("/v2/library/slow/blobs/{layer}")))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 200);
    let size: usize = reg_tests::header(&r, "content-length")
        .and_then(|v| v.parse().ok())
        .expect("content-length");
    assert!(size > 8 << 20, "the layer is {size} bytes");
    let mut first = vec![0u8; 1 << 20];
    r.read_exact(&mut first)
        .expect("the first MiB, while the rest is held upstream");
    // Not verified yet, so not stored: no object, and no repository has it.
    let hex = layer.trim_start_matches("sha256:").to_string();
    assert!(
        !reg_tests::stored(reg.data_dir(), "sha256/")
            .iter()
            .any(|o| o.ends_with(&hex)),
        "an unverified blob was stored"
    );
    let other = c
        .head(reg.url(&format!("/v2/mine/app/blobs/{layer}")))
        .send()
        .expect("HEAD");
    assert_eq!(other.status(), 404);
    valve.allow.store(i64::MAX / 2, Ordering::SeqCst);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).expect("rest");
    assert_eq!(first.len() + rest.len(), size);
    let mut all = first;
    all.extend_from_slice(&rest);
    assert_eq!(reg_tests::sha256(&all), *layer);
}

#[test]
fn dockerd_with_registry_mirrors_pulls_a_docker_hub_name_through_reg() {
    let Some((dist, skopeo_bin)) = peers() else {
        return;
    };
    if !reg_tests::docker_ready() {
        return;
    }
    let info = Command::new("docker")
        .args(["info", "--format", "{{json .RegistryConfig.Mirrors}}"])
        .output()
        .expect("docker info");
    let mirrors = String::from_utf8_lossy(&info.stdout).to_string();
    if !mirrors.contains(DOCKERD_MIRROR) {
        skip(format!(
            "dockerd has no registry mirror at {DOCKERD_MIRROR} (.ci/run starts it with one); it has {}",
            mirrors.trim()
        ));
        return;
    }
    let up = Upstream::start(&dist);
    let work = tempfile::tempdir().expect("tempdir");
    let busybox = match reg_tests::busybox_layers() {
        Some(l) => l,
        None => {
            skip("busybox-static is not installed");
            return;
        }
    };
    let manifest = reg_tests::write_oci_layout(&work.path().join("src"), "v1", &busybox);
    let name = format!("regmirror{}", std::process::id());
    publish(
        &skopeo_bin,
        &work.path().join("src"),
        &format!("{}/library/{name}:v1", up.addr),
    );
    let cfg = mirror_config(work.path(), &up.addr);
    let data = tempfile::tempdir().expect("data");
    let _reg = Registry::start_at(
        DOCKERD_MIRROR,
        data.path(),
        &[("REG_CONFIG", cfg.to_str().unwrap_or(""))],
    );
    let _cleanup = reg_tests::DockerImages(vec![format!("{name}:v1")]);
    let out = Command::new("docker")
        .args(["pull", &format!("{name}:v1")])
        .output()
        .expect("docker pull");
    assert!(
        out.status.success(),
        "docker pull {name}:v1 through the mirror: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &format!("{name}:v1"),
        ])
        .output()
        .expect("docker inspect");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&manifest),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(up.requests(&format!("/v2/library/{name}/blobs/")) >= 1);
}
