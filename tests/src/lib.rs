//! Harness for the end-to-end tests: starts the real `reg` binary on a loopback port with its own
//! data dir, and offers small helpers to push content over plain HTTP. Every process it starts
//! is killed when its handle drops, so a failing test leaves nothing running.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest as _;

pub mod fuzz_checks;
pub mod terminal;

pub use reqwest::blocking::Client;

/// Path of the `reg` binary under test: `$REG_BIN`, else `target/<profile>/reg` next to this
/// test. `reg` lives in another package, so cargo gives this one no `CARGO_BIN_EXE_reg`; instead
/// the binary must be newer than every source file of the crates it is built from, or the tests
/// would run (and pass on) a stale binary.
pub fn reg_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("REG_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/reg
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in target/<profile>/deps");
        let bin = dir.join("reg");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified());
        let Ok(built) = built else {
            panic!(
                "{} is missing: build it first (scripts/test does: cargo build --bin reg)",
                bin.display()
            );
        };
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ is in the workspace");
        let crates = ["cli", "config", "registry", "node", "builder", "untrusted"];
        if let Some(newer) = crates
            .iter()
            .flat_map(|c| newer_sources(&workspace.join(c).join("src"), built))
            .next()
        {
            panic!(
                "{} is older than {}: rebuild it (cargo build --bin reg) so the tests run the code \
                 as it is",
                bin.display(),
                newer.display()
            );
        }
        bin
    })
    .clone()
}

/// The `.rs` files under `dir` modified after `t`.
fn newer_sources(dir: &Path, t: std::time::SystemTime) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(ft) if ft.is_dir() => stack.push(p),
                Ok(_)
                    if p.extension().is_some_and(|x| x == "rs")
                        && e.metadata().and_then(|m| m.modified()).is_ok_and(|m| m > t) =>
                {
                    out.push(p)
                }
                _ => {}
            }
        }
    }
    out
}

/// `$REG_TEST_POSTGRES`: a PostgreSQL server URL (e.g. `postgres://postgres@127.0.0.1:55432/postgres`).
/// When set, every registry the tests start keeps its metadata in a database of its own on that
/// server instead of SQLite (scripts/test runs the registry suite both ways).
pub fn test_postgres() -> Option<String> {
    std::env::var("REG_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A short name for data dir `data`: its PostgreSQL database and its S3 key prefix.
fn data_dir_key(data: &Path) -> String {
    let hash = hex::encode(sha2::Sha256::digest(data.to_string_lossy().as_bytes()));
    format!("reg_{}", &hash[..20])
}

/// The database of data dir `data` on the test server: created on first use, the same one
/// for every later process on that data dir (restarts, `reg admin`, `reg registry gc`).
fn postgres_url_for(server: &str, data: &Path) -> String {
    let name = data_dir_key(data);
    let mut admin = postgres::Client::connect(server, postgres::NoTls)
        .unwrap_or_else(|e| panic!("REG_TEST_POSTGRES={server}: {e}"));
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .expect("look up the test database")
        .is_some();
    if !exists {
        // Two processes may race to create it: a duplicate is fine.
        if let Err(e) = admin.batch_execute(&format!("CREATE DATABASE {name}")) {
            let duplicate = e.code() == Some(&postgres::error::SqlState::DUPLICATE_DATABASE);
            assert!(duplicate, "CREATE DATABASE {name}: {e}");
        }
    }
    match server.rfind('/') {
        Some(i) if i > server.find("://").map_or(0, |s| s + 2) => {
            format!("{}/{name}", &server[..i])
        }
        _ => format!("{server}/{name}"),
    }
}

/// Drops the database of `data` (after its registry stopped).
fn drop_postgres_for(server: &str, data: &Path) {
    let name = data_dir_key(data);
    if let Ok(mut admin) = postgres::Client::connect(server, postgres::NoTls) {
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }
}

/// `reg` with the environment that points it at the metadata of `data`: the PostgreSQL
/// database of that data dir when `REG_TEST_POSTGRES` is set, else (nothing to add) SQLite.
/// Use it for every `reg` that opens a registry's data dir.
pub fn reg_on(data: &Path) -> Command {
    let mut cmd = Command::new(reg_bin());
    for (k, v) in shared_storage_env(data) {
        cmd.env(k, v);
    }
    cmd
}

/// The metadata URL and S3 settings of `data` as environment (empty on SQLite + local
/// files). A second registry started with these on another data dir is a replica of the
/// first: same database, same bucket prefix.
pub fn shared_storage_env(data: &Path) -> Vec<(String, String)> {
    let mut env = s3_env(data);
    if let Some(server) = test_postgres() {
        env.push((
            "REG_REGISTRY_METADATA_URL".into(),
            postgres_url_for(&server, data),
        ));
    }
    env
}

/// `$REG_TEST_S3_ENDPOINT` (with `_BUCKET`, `_KEY_ID`, `_SECRET`, `_REGION`; scripts/garage
/// prints them): when set, every registry the tests start keeps its blobs in that bucket,
/// under a prefix of its own per data dir, instead of on the local filesystem.
pub fn test_s3() -> Option<[String; 5]> {
    let get = |k: &str| std::env::var(format!("REG_TEST_S3_{k}")).ok();
    Some([
        get("ENDPOINT").filter(|e| !e.is_empty())?,
        get("BUCKET")?,
        get("KEY_ID")?,
        get("SECRET")?,
        get("REGION").unwrap_or_default(),
    ])
}

/// What the blob store of `data` holds under `dir` (`sha256/`, `sha512/`, `_uploads/`): object
/// names relative to it — read straight from the local files or, with `REG_TEST_S3_*`, listed
/// from the bucket with `object_store`'s own S3 client (not through reg).
pub fn stored(data: &Path, dir: &str) -> BTreeSet<String> {
    let Some([endpoint, bucket, key, secret, region]) = test_s3() else {
        let root = if dir.starts_with("_uploads") {
            data.join("registry/uploads")
        } else {
            data.join("registry/blobs").join(dir)
        };
        return walk(&root, &root);
    };
    use object_store::ObjectStore as _;
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_access_key_id(key)
        .with_secret_access_key(secret)
        .with_region(region)
        .build()
        .expect("S3 client");
    let prefix = format!("{}/{dir}", data_dir_key(data));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let listed: Vec<object_store::ObjectMeta> = rt.block_on(async {
        use futures::TryStreamExt as _;
        s3.list(Some(&object_store::path::Path::from(prefix.as_str())))
            .try_collect()
            .await
            .expect("list the test bucket")
    });
    listed
        .into_iter()
        .map(|o| {
            o.location
                .as_ref()
                .strip_prefix(prefix.trim_end_matches('/'))
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string()
        })
        .collect()
}

fn walk(root: &Path, dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(root, &p));
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    out
}

/// The environment that puts the blobs of `data` into the test bucket (empty without one).
pub fn s3_env(data: &Path) -> Vec<(String, String)> {
    let Some([endpoint, bucket, key, secret, region]) = test_s3() else {
        return Vec::new();
    };
    let prefix = format!("{}/", data_dir_key(data));
    [
        ("KIND", "s3".to_string()),
        ("ENDPOINT", endpoint),
        ("BUCKET", bucket),
        ("ACCESS_KEY_ID", key),
        ("SECRET_ACCESS_KEY", secret),
        ("REGION", region),
        ("PATH_STYLE", "true".to_string()),
        ("PREFIX", prefix),
    ]
    .into_iter()
    .map(|(k, v)| (format!("REG_REGISTRY_STORAGE_{k}"), v))
    .collect()
}

/// A running `reg registry serve` on 127.0.0.1 with a private data dir.
pub struct Registry {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// `127.0.0.1:PORT`, as docker and skopeo want it.
    pub host: String,
    data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: Arc<Mutex<String>>,
}

impl Registry {
    /// Starts a registry on a fresh data dir.
    pub fn start() -> Registry {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().to_path_buf();
        let mut r = Registry::start_on(&data, &[]);
        r._tmp = Some(tmp);
        r
    }

    /// Starts a registry on a fresh data dir prepared by `prepare` (e.g. users added).
    pub fn start_fresh(prepare: impl FnOnce(&Path)) -> Registry {
        let tmp = tempfile::tempdir().expect("tempdir");
        prepare(tmp.path());
        let mut r = Registry::start_on(tmp.path(), &[]);
        r._tmp = Some(tmp);
        r
    }

    /// Starts a registry on a fresh data dir with extra environment.
    pub fn start_fresh_with(env: &[(&str, &str)]) -> Registry {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut r = Registry::start_on(tmp.path(), env);
        r._tmp = Some(tmp);
        r
    }

    /// Starts a registry on `data` (kept by the caller) with extra environment.
    pub fn start_on(data: &Path, env: &[(&str, &str)]) -> Registry {
        Registry::spawn(&["registry", "serve"], data, env)
    }

    /// Starts `reg serve` (registry + node agent, whose socket is `<data>/node.sock`).
    pub fn start_all(data: &Path) -> Registry {
        Registry::spawn(&["serve"], data, &[])
    }

    /// [`Registry::start_all`] with extra environment (`REG_NODE_…` settings).
    pub fn start_all_with(data: &Path, env: &[(&str, &str)]) -> Registry {
        Registry::spawn(&["serve"], data, env)
    }

    /// Starts `reg registry serve` on `addr` (a fixed port, for a peer configured with it).
    pub fn start_at(addr: &str, data: &Path, env: &[(&str, &str)]) -> Registry {
        Registry::spawn_at(&["registry", "serve"], addr, data, env)
    }

    fn spawn(verb: &[&str], data: &Path, env: &[(&str, &str)]) -> Registry {
        Registry::spawn_at(verb, "127.0.0.1:0", data, env)
    }

    fn spawn_at(verb: &[&str], addr: &str, data: &Path, env: &[(&str, &str)]) -> Registry {
        let mut cmd = reg_on(data);
        cmd.args(verb)
            .args(["--addr", addr, "--data"])
            .arg(data)
            .env("REG_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn reg");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let found = line
                    .split("registry listening on http://")
                    .nth(1)
                    .or_else(|| line.split("registry listening on https://").nth(1));
                if let Some(rest) = found {
                    if let Some(t) = tx.take() {
                        let _ = t.send(rest.split_whitespace().next().unwrap_or("").to_string());
                    }
                }
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let addr: SocketAddr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "reg did not start; its log:\n{}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
        };
        Registry {
            child: Some(child),
            addr,
            host: addr.to_string(),
            data: data.to_path_buf(),
            _tmp: None,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("registry running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("registry did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill9();
        // A failing test shows what the registry said about it: its warnings and errors (a 500's
        // cause is only in the log).
        if std::thread::panicking() {
            let log = self.log();
            let worth: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                .collect();
            let from = worth.len().saturating_sub(40);
            eprintln!(
                "--- the registry's last {} warnings and errors ---\n{}",
                worth.len() - from,
                worth[from..].join("\n")
            );
        }
        // A data dir this handle made goes with it, and so does its database.
        if let (Some(_), Some(server)) = (&self._tmp, test_postgres()) {
            drop_postgres_for(&server, &self.data);
        }
    }
}

/// reqwest is built with rustls without a default provider (see the workspace): pick ring.
fn builder() -> reqwest::blocking::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
}

pub fn client() -> Client {
    builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .expect("http client")
}

/// A client that sends Basic credentials on every request.
pub fn client_as(user: &str, password: &str) -> Client {
    use base64::Engine as _;
    let mut h = reqwest::header::HeaderMap::new();
    let v = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    h.insert("authorization", v.parse().expect("header value"));
    builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .default_headers(h)
        .build()
        .expect("http client")
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Pushes `data` as one blob by POST + PUT and returns its digest.
pub fn push_blob(c: &Client, reg: &Registry, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let r = c
        .post(reg.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .expect("POST upload");
    assert_eq!(r.status(), 202, "start upload: {:?}", r.text());
    let loc = location(&r);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(reg.url(&format!("{loc}{sep}digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .expect("PUT upload");
    assert_eq!(r.status(), 201, "finish upload: {:?}", r.text());
    digest
}

pub fn location(r: &reqwest::blocking::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location header")
        .to_string()
}

pub fn header(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// An OCI image manifest naming `config` and `layers` (digest, size) pairs.
pub fn image_manifest(config: (&str, usize), layers: &[(&str, usize)]) -> String {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, s)| serde_json::json!({"mediaType": OCI_LAYER, "digest": d, "size": s}))
        .collect();
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0, "size": config.1},
        "layers": layers,
    })
    .to_string()
}

/// Pushes a small image (a config and one layer made of `seed`) and tags it; returns the
/// manifest digest and body.
pub fn push_image(
    c: &Client,
    reg: &Registry,
    repo: &str,
    tag: &str,
    seed: &str,
) -> (String, String) {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}\"}}");
    let layer = format!("layer of {seed}").into_bytes();
    let cd = push_blob(c, reg, repo, config.as_bytes());
    let ld = push_blob(c, reg, repo, &layer);
    let m = image_manifest((&cd, config.len()), &[(&ld, layer.len())]);
    let r = c
        .put(reg.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .expect("PUT manifest");
    assert_eq!(r.status(), 201, "push manifest: {:?}", r.text());
    (sha256(m.as_bytes()), m)
}

/// Records that the calling test does not run, and why: printed as `SKIP: <test>: <reason>`
/// and, when `$REG_TEST_SKIPS` names a file (scripts/test sets it), appended to it as one line
/// `<test>\t<reason>`, so the summary counts the test as skipped, not passed. The caller returns
/// right after.
pub fn skip(reason: impl std::fmt::Display) {
    // `<test binary>::<test>`: the binary's name without cargo's hash.
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            Some((name, _hash)) => name.to_string(),
            None => s,
        })
        .unwrap_or_default();
    let test = format!(
        "{binary}::{}",
        std::thread::current().name().unwrap_or("(unnamed test)")
    );
    eprintln!("SKIP: {test}: {reason}");
    if let Some(path) = std::env::var_os("REG_TEST_SKIPS") {
        use std::io::Write;
        let line = format!("{test}\t{reason}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            panic!(
                "recording the skip of {test} in {}: {e}",
                Path::new(&path).display()
            );
        }
    }
}

/// Reads `child`'s piped stdout and stderr on threads of their own, so that a child blocked on
/// a full pipe still ends: join the handles for the bytes.
pub fn drain_output(
    child: &mut Child,
) -> (
    std::thread::JoinHandle<Vec<u8>>,
    std::thread::JoinHandle<Vec<u8>>,
) {
    fn reader(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            s
        })
    }
    let out = child.stdout.take().expect("stdout piped");
    let err = child.stderr.take().expect("stderr piped");
    (reader(out), reader(err))
}

/// Finds a peer tool. Missing: a failure under `CI=true`, otherwise `None` with a printed reason.
pub fn peer(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is required under CI=true but is not installed (.ci/run installs it)");
        }
        skip(format!(
            "{name} is not installed; install it to run this test"
        ));
    }
    found
}

/// Runs a command, panicking with its output when it fails.
#[track_caller]
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
}

/// A file to put in a test layer: path inside the image, mode, bytes.
pub struct LayerFile<'a> {
    pub path: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
}

/// Builds an uncompressed tar layer holding `files` (parent dirs are added).
pub fn tar_layer(files: &[LayerFile<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for f in files {
        let mut p = Path::new(f.path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            p = d.parent();
        }
    }
    for d in &dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, format!("{}/", d.display()), std::io::empty())
            .expect("tar dir");
    }
    for f in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(f.mode);
        h.set_size(f.data.len() as u64);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, f.path, f.data).expect("tar file");
    }
    b.into_inner().expect("tar finish")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip finish")
}

/// Writes an OCI image layout at `dir` with one image tagged `tag` made of gzip `layers`
/// (uncompressed tars); returns the manifest digest.
pub fn write_oci_layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("layout dirs");
    let put = |data: &[u8]| -> (String, usize) {
        let d = sha256(data);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), data).expect("write blob");
        (d, data.len())
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(sha256(l));
        let (d, s) = put(&gzip(l));
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s}));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let (cd, cs) = put(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": cs},
        "layers": descs,
    })
    .to_string();
    let (md, ms) = put(manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": md, "size": ms,
                        "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).expect("index.json");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    md
}

/// The three layers of the test image: busybox, and two small files.
pub fn busybox_layers() -> Option<Vec<Vec<u8>>> {
    let bb = match std::fs::read("/bin/busybox") {
        Ok(b) => b,
        Err(_) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("/bin/busybox is required under CI=true (Debian busybox-static)");
            }
            skip("/bin/busybox missing; apt-get install busybox-static");
            return None;
        }
    };
    Some(vec![
        tar_layer(&[LayerFile {
            path: "bin/busybox",
            mode: 0o755,
            data: &bb,
        }]),
        tar_layer(&[LayerFile {
            path: "etc/hello.txt",
            mode: 0o644,
            data: b"hello from layer 2\n",
        }]),
        tar_layer(&[LayerFile {
            path: "a.txt",
            mode: 0o644,
            data: b"layer 3\n",
        }]),
    ])
}

/// Runs `reg admin --data DIR ARGS…` with `stdin` and returns its standard output.
pub fn admin(data: &Path, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = reg_on(data)
        .arg("admin")
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reg admin");
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("reg admin");
    assert!(
        out.status.success(),
        "reg admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Gets a bearer token from the registry's token endpoint, as docker does.
/// `creds`: Basic user and password, or `None` for an anonymous token. `None` result: 401.
pub fn bearer(
    c: &Client,
    reg: &Registry,
    creds: Option<(&str, &str)>,
    scopes: &[&str],
) -> Option<String> {
    let mut url = format!("{}?service=reg", reg.url("/auth/token"));
    for s in scopes {
        url.push_str(&format!("&scope={s}"));
    }
    let mut req = c.get(url);
    if let Some((u, p)) = creds {
        req = req.basic_auth(u, Some(p));
    }
    let r = req.send().expect("token endpoint");
    if r.status() == 401 {
        return None;
    }
    assert_eq!(r.status(), 200, "token endpoint");
    let v: serde_json::Value = r.json().expect("token json");
    Some(v["token"].as_str().expect("token field").to_string())
}

/// Pushes an image of gzip `layers` (uncompressed tars) over HTTP with `c`; returns the
/// manifest digest.
pub fn push_layers(
    c: &Client,
    reg: &Registry,
    repo: &str,
    tag: &str,
    layers: &[Vec<u8>],
) -> String {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(sha256(l));
        let gz = gzip(l);
        let d = push_blob(c, reg, repo, &gz);
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": gz.len()}));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let cd = push_blob(c, reg, repo, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": config.len()},
        "layers": descs,
    })
    .to_string();
    let r = c
        .put(reg.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .expect("PUT manifest");
    assert_eq!(r.status(), 201, "push manifest: {:?}", r.text());
    sha256(manifest.as_bytes())
}

/// Removes docker images by reference when dropped, even if the test failed.
pub struct DockerImages(pub Vec<String>);

impl Drop for DockerImages {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", r])
                .output();
        }
    }
}

/// Whether docker and a running dockerd are here (a missing one fails under CI=true).
pub fn docker_ready() -> bool {
    if peer("docker").is_none() {
        return false;
    }
    let ok = std::process::Command::new("docker")
        .arg("info")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("docker is installed but dockerd does not answer (.ci/run starts it)");
        }
        skip("dockerd is not running");
    }
    ok
}

/// A host directory that hostile input tries to reach: a few files and a subdirectory with
/// known content. [`Victim::assert_untouched`] compares a recursive listing (names, kinds,
/// modes, owners, sizes, sha256 of contents, link targets) with the one taken at creation, and
/// that nothing new appeared in it.
pub struct Victim {
    dir: tempfile::TempDir,
    before: Vec<String>,
}

impl Victim {
    pub fn new() -> Victim {
        let dir = tempfile::Builder::new()
            .prefix("reg-victim-")
            .tempdir()
            .expect("victim dir");
        std::fs::write(dir.path().join("keep.txt"), "the host's file\n").expect("victim file");
        std::fs::create_dir(dir.path().join("sub")).expect("victim sub");
        std::fs::write(dir.path().join("sub/data"), vec![7u8; 4096]).expect("victim data");
        let before = listing(dir.path());
        Victim { dir, before }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The victim as a string for Dockerfiles and commands.
    pub fn display(&self) -> String {
        self.dir.path().display().to_string()
    }

    #[track_caller]
    pub fn assert_untouched(&self) {
        let now = listing(self.dir.path());
        assert_eq!(
            self.before,
            now,
            "host directory {} was changed",
            self.dir.path().display()
        );
    }
}

impl Default for Victim {
    fn default() -> Self {
        Victim::new()
    }
}

/// A recursive listing of `dir` (itself included): one line per entry, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(root: &Path, p: &Path, out: &mut Vec<String>) {
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return;
        };
        let rel = p.strip_prefix(root).unwrap_or(p).display().to_string();
        let what = if m.file_type().is_symlink() {
            format!(
                "-> {}",
                std::fs::read_link(p)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            )
        } else if m.is_file() {
            sha256(&std::fs::read(p).unwrap_or_default())
        } else {
            String::new()
        };
        out.push(format!(
            "{rel} mode={:o} uid={} gid={} size={} {what}",
            m.mode(),
            m.uid(),
            m.gid(),
            if m.is_dir() { 0 } else { m.size() }
        ));
        if m.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p)
                .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_default();
            names.sort();
            for n in names {
                walk(root, &n, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// A real Prometheus (Debian's `prometheus`) scraping `targets` every second, on a free loopback
/// port with its data under `dir`; stopped on drop, whatever the test's outcome.
pub struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    pub fn start(binary: PathBuf, dir: &Path, targets: &[&str]) -> Prometheus {
        std::fs::create_dir_all(dir).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                 scrape_configs:\n  - job_name: reg\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )
        .expect("prometheus.yml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Prometheus { child, port }
    }

    /// The first series Prometheus's query API returns for `query`, waiting (up to 60 s) until
    /// it has scraped one.
    pub fn first_series(&self, query: &str) -> serde_json::Value {
        let url = reqwest::Url::parse_with_params(
            &format!("http://127.0.0.1:{}/api/v1/query", self.port),
            &[("query", query)],
        )
        .expect("query url");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer: Option<serde_json::Value> = client()
                .get(url.clone())
                .send()
                .ok()
                .and_then(|r| r.json().ok());
            if let Some(s) = answer
                .as_ref()
                .and_then(|a| a["data"]["result"].as_array())
                .and_then(|r| r.first())
            {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "prometheus returned nothing for {query} within 60 s: {answer:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the series `line_start` (name and labels, as Prometheus's text format writes
/// them) in a `/metrics` answer.
pub fn metric_value(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

/// A browser-like client for the web interface: keeps cookies, follows no redirect.
pub fn browser() -> reqwest::blocking::Client {
    // (`client` installs the TLS provider reqwest needs.)
    drop(client());
    reqwest::blocking::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Logs `c` into `reg`'s web interface as `user`; the session's CSRF token (from the logout
/// form).
pub fn log_in(c: &reqwest::blocking::Client, reg: &Registry, user: &str, password: &str) -> String {
    let page = c.get(reg.url("/ui/login")).send().expect("login page");
    let html = page.text().expect("html");
    let token = field(&html, "csrf");
    let r = c
        .post(reg.url("/ui/login"))
        .form(&[
            ("username", user),
            ("password", password),
            ("csrf", token.as_str()),
        ])
        .send()
        .expect("login");
    assert_eq!(r.status(), 303, "{:?}", r.text());
    let html = c
        .get(reg.url("/ui/"))
        .send()
        .expect("repos")
        .text()
        .expect("html");
    field(&html, "csrf")
}

/// The value of the hidden input `name` in a page's `html`.
pub fn field(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} field in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap_or(0)].to_string()
}
