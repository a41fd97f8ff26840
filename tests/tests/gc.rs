//! Online garbage collection against the real binary: `reg registry gc` as a second process
//! while `reg registry serve` keeps serving the same data dir; retention rules and immutable
//! tags from a config file; a race of pushers, deletes and collections; `kill -9` of the
//! registry and the collector at random moments.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use reg_tests::{
    client, push_blob, sha256, Registry, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
};
use reqwest::blocking::Client;

/// `reg registry gc --data DATA ARGS…`: exit code, stdout, stderr.
fn gc(data: &Path, args: &[&str]) -> (i32, String, String) {
    let out = reg_tests::reg_on(data)
        .args(["registry", "gc", "--data"])
        .arg(data)
        .args(args)
        .env_remove("REG_CONFIG")
        .output()
        .expect("run reg registry gc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `secs` seconds from now, for `reg registry gc --now`: the collection judges ages as if that
/// much time had passed, so a test need not sleep through a grace window (timestamps are whole
/// seconds: a link made at second T stays while T >= now - grace).
fn later(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    (now.as_secs() + secs).to_string()
}

#[track_caller]
fn gc_ok(data: &Path, args: &[&str]) -> String {
    let (code, out, err) = gc(data, args);
    assert_eq!(code, 0, "reg registry gc {args:?}:\n{out}\n{err}");
    out
}

/// Objects in the blob store (`alg:hex`), on disk or in the test bucket.
fn objects(data: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for alg in ["sha256", "sha512"] {
        for name in reg_tests::stored(data, &format!("{alg}/")) {
            let hex = name.rsplit('/').next().unwrap_or("");
            out.insert(format!("{alg}:{hex}"));
        }
    }
    out
}

fn put_manifest(
    c: &Client,
    reg: &Registry,
    repo: &str,
    reference: &str,
    media: &str,
    body: &str,
) -> reqwest::blocking::Response {
    c.put(reg.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", media)
        .body(body.to_string())
        .send()
        .expect("PUT manifest")
}

/// An image of a config and the given layers (pushed first); returns the manifest's digest.
fn image(
    c: &Client,
    reg: &Registry,
    repo: &str,
    tag: &str,
    seed: &str,
    layers: &[&[u8]],
) -> String {
    RegistryView::of(reg)
        .try_image(c, repo, tag, seed, layers)
        .unwrap_or_else(|e| panic!("push {repo}:{tag}: {e}"))
}

fn status(c: &Client, url: String) -> u16 {
    c.head(url).send().map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Every (repository, tag) the registry lists.
fn tagged(c: &Client, reg: &Registry) -> Vec<(String, String)> {
    let get = |path: &str| -> serde_json::Value {
        c.get(reg.url(path))
            .send()
            .and_then(|r| r.json())
            .expect("listing")
    };
    let mut out = Vec::new();
    for repo in get("/v2/_catalog")["repositories"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let repo = repo.as_str().unwrap_or("");
        for tag in get(&format!("/v2/{repo}/tags/list"))["tags"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out.push((repo.to_string(), tag.as_str().unwrap_or("").to_string()));
        }
    }
    out
}

/// Every tag of every repository pulls: its manifest (and an index's children) and every blob
/// arrive and match their digests.
fn verify_all(c: &Client, reg: &Registry) -> usize {
    let tags = tagged(c, reg);
    for (repo, tag) in &tags {
        verify_manifest(c, reg, repo, tag);
    }
    tags.len()
}

fn verify_manifest(c: &Client, reg: &Registry, repo: &str, reference: &str) {
    let r = c
        .get(reg.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
        .send()
        .expect("GET manifest");
    assert_eq!(r.status(), 200, "{repo}:{reference}");
    let body = r.bytes().expect("body");
    let m: serde_json::Value = serde_json::from_slice(&body).expect("manifest json");
    for child in m["manifests"].as_array().into_iter().flatten() {
        verify_manifest(c, reg, repo, child["digest"].as_str().unwrap_or(""));
    }
    for d in blobs_of(&m) {
        let r = c
            .get(reg.url(&format!("/v2/{repo}/blobs/{d}")))
            .send()
            .expect("GET blob");
        assert_eq!(
            r.status(),
            200,
            "{repo}:{reference} names {d}, which is gone"
        );
        let bytes = r.bytes().expect("blob body");
        assert_eq!(sha256(&bytes), d, "{repo}:{reference}: blob {d} is corrupt");
    }
}

#[test]
fn gc_removes_only_what_nothing_reaches_and_dry_run_says_so_first() {
    let reg = Registry::start();
    let c = client();
    let data = reg.data_dir().to_path_buf();
    let shared: &[u8] = b"a layer both images share";
    let a = image(&c, &reg, "team/app", "1", "a", &[shared, b"only in a"]);
    let b = image(&c, &reg, "team/app", "2", "b", &[shared, b"only in b"]);
    // A signature of a (a referrer), an index over a, and a blob nobody names.
    let sig_cfg = push_blob(&c, &reg, "team/app", b"{}");
    let sig = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sig_cfg, "size": 2},
        "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": a, "size": 1},
    })
    .to_string();
    let sig_digest = sha256(sig.as_bytes());
    assert_eq!(
        put_manifest(&c, &reg, "team/app", &sig_digest, OCI_MANIFEST, &sig).status(),
        201
    );
    let orphan = push_blob(&c, &reg, "team/app", b"uploaded, never named");
    // b loses its tag: untagged, still pullable by digest.
    let r = c
        .delete(reg.url("/v2/team/app/manifests/2"))
        .send()
        .expect("DELETE tag");
    assert_eq!(r.status(), 202);

    // Within the grace window nothing goes.
    let out = gc_ok(&data, &["--grace", "1h"]);
    assert!(
        out.contains("removed 0 tags, 0 manifests, 0 links, 0 blobs"),
        "{out}"
    );

    // Past the 1 s grace window of what follows (3 s on, without waiting for them).
    let at = later(3);
    let before = objects(&data);
    let dry = gc_ok(&data, &["--grace", "1s", "--now", &at, "--dry-run"]);
    assert!(
        dry.contains(&format!("would remove blob {orphan}")),
        "{dry}"
    );
    assert!(
        dry.contains("would remove 0 tags, 0 manifests, 1 links, 1 blobs"),
        "{dry}"
    );
    assert_eq!(objects(&data), before, "a dry run removes nothing");

    // While the registry serves: the orphan goes, everything else stays.
    let out = gc_ok(&data, &["--grace", "1s", "--now", &at]);
    assert!(
        out.contains("removed 0 tags, 0 manifests, 1 links, 1 blobs"),
        "{out}"
    );
    assert!(!objects(&data).contains(&orphan));
    assert_eq!(
        status(&c, reg.url(&format!("/v2/team/app/blobs/{orphan}"))),
        404
    );
    verify_manifest(&c, &reg, "team/app", "1");
    verify_manifest(&c, &reg, "team/app", &b);
    verify_manifest(&c, &reg, "team/app", &sig_digest);

    // The untagged policy takes b and what only b named; a's referrer stays (a is tagged).
    let dry = gc_ok(
        &data,
        &[
            "--grace",
            "1s",
            "--untagged",
            "0s",
            "--now",
            &at,
            "--dry-run",
        ],
    );
    assert!(
        dry.contains(&format!("would remove manifest team/app@{b}")),
        "{dry}"
    );
    assert!(
        dry.contains("would remove 0 tags, 1 manifests, 2 links, 2 blobs"),
        "{dry}"
    );
    let out = gc_ok(&data, &["--grace", "1s", "--untagged", "0s", "--now", &at]);
    assert!(
        out.contains("removed 0 tags, 1 manifests, 2 links, 2 blobs"),
        "{out}"
    );
    assert_eq!(
        status(&c, reg.url(&format!("/v2/team/app/manifests/{b}"))),
        404
    );
    assert_eq!(
        status(
            &c,
            reg.url(&format!("/v2/team/app/blobs/{}", sha256(b"only in b")))
        ),
        404
    );
    verify_manifest(&c, &reg, "team/app", "1");
    verify_manifest(&c, &reg, "team/app", &sig_digest);
    assert_eq!(
        status(
            &c,
            reg.url(&format!("/v2/team/app/blobs/{}", sha256(shared)))
        ),
        200
    );

    // A second run finds nothing; the registry pushes on as before.
    let out = gc_ok(&data, &["--grace", "1s", "--untagged", "0s", "--now", &at]);
    assert!(
        out.contains("removed 0 tags, 0 manifests, 0 links, 0 blobs"),
        "{out}"
    );
    image(&c, &reg, "team/app", "3", "c", &[shared]);
    assert_eq!(verify_all(&c, &reg), 2);
}

#[test]
fn retention_keeps_the_newest_tags_and_immutable_tags_refuse_change() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("reg.toml");
    std::fs::write(
        &cfg,
        "[registry.gc]\ninterval = \"0s\"\n\n[[registry.retention]]\nrepositories = \"keep/*\"\n\
         keep_last = 2\nimmutable_tags = \"v*\"\n",
    )
    .expect("config");
    let data = tmp.path().join("data");
    let cfg_s = cfg.display().to_string();
    let reg = Registry::start_on(&data, &[("REG_CONFIG", &cfg_s)]);
    let c = client();
    let v1 = image(&c, &reg, "keep/app", "v1", "v1", &[b"v1 layer"]);
    for (i, t) in ["t1", "t2", "t3"].iter().enumerate() {
        image(
            &c,
            &reg,
            "keep/app",
            t,
            t,
            &[format!("layer {i}").as_bytes()],
        );
        std::thread::sleep(Duration::from_millis(1100));
    }
    // Immutable: no overwrite with other content, no delete by tag or by digest.
    let config = push_blob(&c, &reg, "keep/app", b"{\"other\":1}");
    let other = reg_tests::image_manifest((&config, 11), &[]);
    let r = put_manifest(&c, &reg, "keep/app", "v1", OCI_MANIFEST, &other);
    assert_eq!(r.status(), 403);
    let body = r.text().unwrap_or_default();
    assert!(
        body.contains("DENIED") && body.contains("immutable"),
        "{body}"
    );
    for reference in ["v1", v1.as_str()] {
        let r = c
            .delete(reg.url(&format!("/v2/keep/app/manifests/{reference}")))
            .send()
            .expect("DELETE");
        assert_eq!(r.status(), 403, "delete {reference}");
    }
    // The same content again is no change: accepted.
    let same = c
        .get(reg.url("/v2/keep/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .and_then(|r| r.text())
        .expect("GET");
    assert_eq!(
        put_manifest(&c, &reg, "keep/app", "v1", OCI_MANIFEST, &same).status(),
        201
    );

    let gc_with_config = |args: &[&str]| {
        let out = reg_tests::reg_on(&data)
            .args(["--config", &cfg_s, "registry", "gc", "--data"])
            .arg(&data)
            .args(args)
            .output()
            .expect("gc");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = gc_with_config(&["--grace", "1h"]);
    // v1 is older than every t but immutable; of t1..t3 the two newest stay.
    assert!(out.contains("removed tag keep/app:t1"), "{out}");
    assert!(out.contains("removed 1 tags, 1 manifests"), "{out}");
    let tags: serde_json::Value = c
        .get(reg.url("/v2/keep/app/tags/list"))
        .send()
        .and_then(|r| r.json())
        .expect("tags");
    assert_eq!(tags["tags"], serde_json::json!(["t2", "t3", "v1"]));
    // Other repositories are under no rule.
    image(&c, &reg, "free/app", "a", "fa", &[b"fa"]);
    image(&c, &reg, "free/app", "b", "fb", &[b"fb"]);
    let out = gc_with_config(&["--grace", "1h"]);
    assert!(out.contains("removed 0 tags, 0 manifests"), "{out}");
    assert_eq!(verify_all(&c, &reg), 5);
}

/// Seconds of the race test (the issue asks for 60; `REG_GC_RACE_SECS` shortens it locally).
fn race_secs() -> u64 {
    std::env::var("REG_GC_RACE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

#[test]
fn pushes_tag_churn_and_deletes_race_a_looping_gc_and_lose_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let reg = Registry::start_on(tmp.path(), &[("REG_REGISTRY_GC_INTERVAL", "0s")]);
    let data = reg.data_dir().to_path_buf();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let grace = "3s";
    // The collector loops as a separate process, as an operator's cron would run it.
    let collector = {
        let (stop, data) = (stop.clone(), data.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (code, out, err) = gc(&data, &["--grace", grace, "--untagged", "2s"]);
                assert_eq!(code, 0, "gc failed during the race:\n{out}\n{err}");
                runs += 1;
            }
            runs
        })
    };
    let deadline = Instant::now() + Duration::from_secs(race_secs());
    let pushers: Vec<_> = (0..16)
        .map(|p| {
            let view = RegistryView::of(&reg);
            let reg_url = view.url.clone();
            std::thread::spawn(move || {
                let c = client();
                let mut n = 0u32;
                let shared = format!("base layer {}", p % 4).into_bytes();
                while Instant::now() < deadline {
                    let repo = format!("race/r{}", p % 4);
                    let tag = format!("p{p}-{}", n % 3);
                    // Content comes back: a blob the collector is removing is pushed again.
                    let own = format!("pusher {p} content {}", n % 5).into_bytes();
                    if let Err(e) =
                        view.try_image(&c, &repo, &tag, &format!("{p}-{n}"), &[&shared, &own])
                    {
                        panic!("{e}");
                    }
                    if n % 4 == 3 {
                        // Tag churn: delete one of this pusher's tags.
                        let r = c
                            .delete(format!(
                                "{reg_url}/v2/{repo}/manifests/p{p}-{}",
                                (n + 1) % 3
                            ))
                            .send()
                            .expect("DELETE tag");
                        assert!(matches!(r.status().as_u16(), 202 | 404), "{r:?}");
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let pushes: u32 = pushers.into_iter().map(|p| p.join().expect("pusher")).sum();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = collector.join().expect("collector");
    assert!(pushes > 16 && runs > 1, "pushes {pushes}, gc runs {runs}");
    let c = client();
    let tags = verify_all(&c, &reg);
    assert!(tags > 0);

    // Past the grace window a last collection leaves exactly what the tags name. Timestamps
    // are whole seconds and a link made at second T stays while T >= now - 3: judged 5 s on,
    // the window is over for every push (no waiting, nothing left to a loaded machine).
    let at = later(5);
    gc_ok(&data, &["--grace", grace, "--untagged", "0s", "--now", &at]);
    assert_eq!(verify_all(&c, &reg), tags);
    let named = named_blobs(&c, &reg);
    assert_eq!(objects(&data), named, "unreferenced objects remain");
    println!("race: {pushes} pushes, {runs} collections, {tags} tags verified");
}

/// The config and layer digests an image manifest names.
fn blobs_of(m: &serde_json::Value) -> impl Iterator<Item = &str> {
    m["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&m["config"]))
        .filter_map(|d| d["digest"].as_str())
}

/// Every blob named by a tagged manifest.
fn named_blobs(c: &Client, reg: &Registry) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (repo, tag) in tagged(c, reg) {
        let m: serde_json::Value = c
            .get(reg.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .and_then(|r| r.json())
            .expect("manifest");
        out.extend(blobs_of(&m).map(str::to_string));
    }
    out
}

/// The registry's URL for pushers on other threads (a `Registry` stays with the test).
#[derive(Clone)]
struct RegistryView {
    url: String,
}

impl RegistryView {
    fn of(reg: &Registry) -> RegistryView {
        RegistryView { url: reg.url("") }
    }

    fn blob(&self, c: &Client, repo: &str, data: &[u8]) -> Result<String, String> {
        let digest = sha256(data);
        let r = c
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.url))
            .send()
            .map_err(|e| e.to_string())?;
        if r.status() != 202 {
            return Err(format!("start upload: {}", r.status()));
        }
        let loc = reg_tests::location(&r);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = c
            .put(format!("{}{loc}{sep}digest={digest}", self.url))
            .body(data.to_vec())
            .send()
            .map_err(|e| e.to_string())?;
        if r.status() != 201 {
            return Err(format!("upload {digest}: {} {:?}", r.status(), r.text()));
        }
        Ok(digest)
    }

    fn try_image(
        &self,
        c: &Client,
        repo: &str,
        tag: &str,
        seed: &str,
        layers: &[&[u8]],
    ) -> Result<String, String> {
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}\"}}");
        let cd = self.blob(c, repo, config.as_bytes())?;
        let mut ls = Vec::new();
        for l in layers {
            ls.push(serde_json::json!({"mediaType": OCI_LAYER, "digest": self.blob(c, repo, l)?, "size": l.len()}));
        }
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": config.len()},
            "layers": ls,
        })
        .to_string();
        let r = c
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.url))
            .header("content-type", OCI_MANIFEST)
            .body(m.clone())
            .send()
            .map_err(|e| e.to_string())?;
        if r.status() != 201 {
            return Err(format!("{repo}:{tag}: {} {:?}", r.status(), r.text()));
        }
        Ok(sha256(m.as_bytes()))
    }
}

#[test]
fn kill_9_during_pushes_and_collections_never_leaves_a_dangling_tag() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().to_path_buf();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let rounds: u64 = std::env::var("REG_GC_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    for round in 0..rounds {
        // The registry collects on its own every second, with a grace window of one.
        let mut reg = Registry::start_on(
            &data,
            &[
                ("REG_REGISTRY_GC_INTERVAL", "1s"),
                ("REG_REGISTRY_GC_GRACE", "1s"),
                ("REG_REGISTRY_GC_UNTAGGED", "1s"),
            ],
        );
        let c = client();
        // What survived the previous crash is whole.
        verify_all(&c, &reg);
        let view = RegistryView::of(&reg);
        let mut collector = reg_tests::reg_on(&data)
            .args([
                "registry",
                "gc",
                "--grace",
                "1s",
                "--untagged",
                "1s",
                "--data",
            ])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("gc");
        let pushers: Vec<_> = (0..4)
            .map(|p| {
                let view = view.clone();
                std::thread::spawn(move || {
                    let c = client();
                    for n in 0..50 {
                        let shared = b"crash base".to_vec();
                        let own = format!("round {round} pusher {p} push {n}").into_bytes();
                        // Pushes fail once the registry is killed: that is the point.
                        let r = view.try_image(
                            &c,
                            &format!("crash/r{p}"),
                            &format!("t{}", n % 5),
                            &format!("{round}-{p}-{n}"),
                            &[&shared, &own],
                        );
                        if r.is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200 + rand(1500)));
        reg.kill9();
        let _ = collector.kill();
        let _ = collector.wait();
        for p in pushers {
            let _ = p.join();
        }
    }
    let reg = Registry::start_on(&data, &[("REG_REGISTRY_GC_INTERVAL", "0s")]);
    let c = client();
    let tags = verify_all(&c, &reg);
    assert!(tags > 0, "no tag survived {rounds} rounds");
}
