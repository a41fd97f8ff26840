//! The bodies of the fuzz targets in `fuzz/` (one `fn(&[u8])` per target), shared with
//! `tests/tests/fuzz_regressions.rs`, which replays every input a fuzzer ever crashed on. Each
//! runs the same code the agent or the registry runs on untrusted bytes and panics when an
//! invariant breaks; a crash, a hang or a stack overflow is a finding.
//!
//! The fuzz crate compiles this file into each target with `#[path]` (it stays outside the
//! workspace and does not pull the harness's dependencies into an instrumented build), so it may
//! use only crates both depend on: the `reg-*` libraries, `serde_json` and `tempfile`.

use std::collections::BTreeMap;
use std::path::Path;

/// The body of a fuzz target: runs one input, panics when an invariant breaks.
pub type Check = fn(&[u8]);

/// Every target: its name (the directory under `fuzz/regressions/` and `fuzz/corpus/`) and body.
pub const TARGETS: &[(&str, Check)] = &[
    ("dockerfile", dockerfile),
    ("manifest", manifest),
    ("reference", reference),
    ("range", range),
    ("unpack", unpack),
    ("dockerignore", dockerignore),
    ("agent_json", agent_json),
];

/// The Dockerfile parser, then every word a build expands through BuildKit's substitution,
/// with variables set as a build sets them (global ARGs, then each stage's ARG and ENV), and
/// the ONBUILD triggers parsed as a child build parses them.
pub fn dockerfile(data: &[u8]) {
    dockerfile_text(&String::from_utf8_lossy(data), 0);
}

fn dockerfile_text(text: &str, depth: usize) {
    use reg_builder::dockerfile::{parse, Command, Inst, Source};
    use reg_builder::lex::{Lexer, Vars};

    let df = match parse("Dockerfile", text) {
        Ok(df) => df,
        Err(e) => {
            assert!(e.line >= 1 && e.column >= 1, "{e:?}");
            assert!(!e.message.is_empty(), "{e:?}");
            return;
        }
    };
    let lexer = Lexer { escape: df.escape };
    let mut globals: Vars = [("v", "val"), ("e", ""), ("sp", "a b"), ("PATH", "/bin")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for a in &df.global_args {
        if let Some(v) = a.default.as_deref().and_then(|d| word(&lexer, d, &globals)) {
            globals.insert(a.name.clone(), v);
        }
    }
    for stage in &df.stages {
        let mut vars = globals.clone();
        word(&lexer, &stage.base, &vars);
        for step in &stage.steps {
            let flags = |flags: &[(String, Option<String>)], vars: &Vars| {
                for v in flags.iter().filter_map(|(_, v)| v.as_deref()) {
                    word(&lexer, v, vars);
                }
            };
            match &step.inst {
                Inst::Env(pairs) | Inst::Label(pairs) => {
                    let env = matches!(step.inst, Inst::Env(_));
                    for (k, v) in pairs {
                        let (k, v) = (word(&lexer, k, &vars), word(&lexer, v, &vars));
                        if let (true, Some(k), Some(v)) = (env, k, v) {
                            vars.insert(k, v);
                        }
                    }
                }
                Inst::Arg(args) => {
                    for a in args {
                        if let Some(v) = a.default.as_deref().and_then(|d| word(&lexer, d, &vars)) {
                            vars.insert(a.name.clone(), v);
                        }
                    }
                }
                Inst::Workdir(s) | Inst::User(s) | Inst::Stopsignal(s) => {
                    word(&lexer, s, &vars);
                }
                Inst::Expose(ports) => {
                    for p in ports {
                        if let Ok(words) = lexer.words(p, &vars) {
                            assert!(words.len() <= p.len(), "{p:?} -> {words:?}");
                        }
                    }
                }
                Inst::Volume(paths) => {
                    for p in paths {
                        word(&lexer, p, &vars);
                    }
                }
                Inst::Copy {
                    flags: f,
                    sources,
                    dest,
                    ..
                } => {
                    flags(f, &vars);
                    for s in sources {
                        match s {
                            Source::Path(p) => word(&lexer, p, &vars),
                            Source::HereDoc(h) if h.expand => word(&lexer, &h.body, &vars),
                            Source::HereDoc(_) => None,
                        };
                    }
                    word(&lexer, dest, &vars);
                }
                Inst::Run {
                    flags: f,
                    heredocs,
                    command,
                } => {
                    flags(f, &vars);
                    for h in heredocs.iter().filter(|h| h.expand) {
                        word(&lexer, &h.body, &vars);
                    }
                    if let Command::Exec(args) = command {
                        assert!(!args.is_empty());
                    }
                }
                Inst::Onbuild(trigger) if depth == 0 => {
                    dockerfile_text(&format!("FROM scratch\n{trigger}\n"), depth + 1);
                }
                _ => {}
            }
        }
    }
}

/// One expansion, with what must hold of any result: a word without `$`, quotes or the escape
/// character is itself, and the output is at most the input plus the substitution budget.
fn word(lexer: &reg_builder::lex::Lexer, s: &str, vars: &reg_builder::lex::Vars) -> Option<String> {
    match lexer.word(s, vars) {
        Ok(w) => {
            if !s.contains(['$', '\'', '"', lexer.escape]) {
                assert_eq!(w, s);
            }
            assert!(
                w.len() <= s.len() + reg_builder::lex::MAX_EXPANSION,
                "{} bytes from {} bytes",
                w.len(),
                s.len()
            );
            Some(w)
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

/// What the registry does with a pushed manifest: the limits first (the push handler refuses
/// what they refuse), then the lenient reading, under every Content-Type a client may send.
pub fn manifest(data: &[u8]) {
    use reg_registry::manifest::{check_limits, parse, ManifestLimitError, MAX_JSON_DEPTH};
    use reg_registry::{media, Digest};

    let limits = check_limits(data);
    // The one-pass check agrees with a real JSON parser on what it can see.
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if v.is_object() {
            let deep = json_depth(&v) > MAX_JSON_DEPTH;
            assert_eq!(
                limits == Err(ManifestLimitError::TooDeep),
                deep,
                "{limits:?}"
            );
            if !deep {
                assert_eq!(limits, Ok(()));
            }
        } else {
            assert_eq!(limits, Err(ManifestLimitError::NotObject));
        }
    }
    if limits.is_err() {
        return;
    }
    let types = [
        None,
        Some(media::OCI_MANIFEST),
        Some(media::OCI_INDEX),
        Some(media::DOCKER_MANIFEST),
        Some(media::DOCKER_LIST),
        Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
        Some("application/json"),
        Some(""),
    ];
    for ct in types {
        let Ok(p) = parse(data, ct) else { continue };
        assert!(
            media::MANIFEST_TYPES.contains(&p.media_type.as_str()),
            "{p:?}"
        );
        let header = ct.map(|c| c.split(';').next().unwrap_or(c).trim());
        if let Some(h) = header.filter(|h| media::MANIFEST_TYPES.contains(h)) {
            assert_eq!(p.media_type, h);
        }
        let index = p.media_type == media::OCI_INDEX || p.media_type == media::DOCKER_LIST;
        assert!(if index {
            p.blobs.is_empty()
        } else {
            p.children.is_empty() && !p.blobs.is_empty()
        });
        for d in p.blobs.iter().chain(&p.children).chain(&p.subject) {
            assert_eq!(Digest::parse(&d.to_string()).as_ref(), Ok(d));
        }
    }
}

fn json_depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Image references, repository names, tags and digests: what parses is within the spec's
/// limits and prints as something that parses back to the same value.
pub fn reference(data: &[u8]) {
    use reg_registry::name::{MAX_NAME_LEN, MAX_TAG_LEN};
    use reg_registry::{Digest, Reference, RepoName, TagName};

    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for default in ["127.0.0.1:5000", "registry.example.com"] {
        let Ok(r) = Reference::parse(s, default) else {
            continue;
        };
        assert!(
            r.registry.len() + 1 + r.repo.as_str().len() <= MAX_NAME_LEN,
            "{r:?}"
        );
        assert!(r.tag.is_some() || r.digest.is_some(), "{r:?}");
        let shown = r.to_string();
        let again = Reference::parse(&shown, "other.example").expect("a reference prints as one");
        assert_eq!(again, r, "{s:?} -> {shown:?}");
        assert!(!r.reference().is_empty());
    }
    if let Ok(n) = RepoName::parse(s) {
        assert_eq!(n.as_str(), s);
        assert!(s.len() <= MAX_NAME_LEN);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)));
    }
    if let Ok(t) = TagName::parse(s) {
        assert_eq!(t.as_str(), s);
        assert!(!s.is_empty() && s.len() <= MAX_TAG_LEN);
    }
    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.to_string(), s);
        let json = serde_json::to_string(&d).expect("serialises");
        assert_eq!(
            serde_json::from_str::<Digest>(&json).expect("parses back"),
            d
        );
    }
}

/// `Range` and `Content-Range` values against blobs of several sizes: never a panic, and every
/// range returned is one the handlers can use without arithmetic that wraps.
pub fn range(data: &[u8]) {
    use reg_registry::range::{blob_range, chunk_range};

    let Ok(v) = std::str::from_utf8(data) else {
        return;
    };
    let sizes = [
        0,
        1,
        2,
        100,
        data.len() as u64,
        1 << 40,
        u64::MAX - 1,
        u64::MAX,
    ];
    for size in sizes {
        if let Some((start, end)) = blob_range(v, size) {
            assert!(
                start <= end && end < size,
                "{v:?} size {size}: {start}-{end}"
            );
        }
    }
    if let Some((start, end)) = chunk_range(v) {
        assert!(end >= start, "{v:?}: {start}-{end}");
        assert!(
            (end - start).checked_add(1).is_some(),
            "{v:?}: {start}-{end}"
        );
    }
}

/// A layer of arbitrary bytes unpacked into a fresh snapshot directory, as the node unpacks a
/// pulled layer (as root here: whiteouts and device nodes are made). Whatever the archive says,
/// nothing appears or changes beside the snapshot, and a file there keeps its one link.
pub fn unpack(data: &[u8]) {
    use reg_node::unpack::{detect, unpack, Compression, Options};
    use std::os::unix::fs::MetadataExt;

    let outer = tempfile::tempdir().expect("temp dir");
    let snap = outer.path().join("snap");
    let victim = outer.path().join("victim");
    std::fs::create_dir(&snap).expect("snapshot dir");
    std::fs::create_dir(&victim).expect("victim dir");
    std::fs::write(victim.join("file"), b"precious").expect("victim file");
    let before = listing(outer.path());

    let opts = Options {
        diff_algorithm: Some(reg_registry::Algorithm::Sha256),
        ..Options::default()
    };
    if let Ok(stats) = unpack(data, &snap, "sha256:fuzz", opts) {
        if detect(data) == Compression::None {
            assert_eq!(
                stats.diff_id,
                Some(reg_registry::Digest::sha256_of(data)),
                "the diff id of an uncompressed layer is its digest"
            );
        }
        assert!(stats.whiteouts <= stats.entries);
    }
    assert_eq!(listing(outer.path()), before, "beside the snapshot");
    let file = std::fs::symlink_metadata(victim.join("file")).expect("victim file");
    assert_eq!(
        file.nlink(),
        1,
        "a hard link to a file outside the snapshot"
    );
    assert_eq!(
        std::fs::read(victim.join("file")).expect("victim file"),
        b"precious"
    );
}

/// Everything under `root` except the snapshot: names, types, modes, owners, sizes, links.
fn listing(root: &Path) -> BTreeMap<String, (u32, u32, u32, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("readable").flatten() {
            let path = e.path();
            if path == root.join("snap") {
                continue;
            }
            let m = std::fs::symlink_metadata(&path).expect("stat");
            if m.is_dir() {
                stack.push(path.clone());
            }
            let rel = path
                .strip_prefix(root)
                .expect("below root")
                .display()
                .to_string();
            out.insert(rel, (m.mode(), m.uid(), m.gid(), m.size(), m.nlink()));
        }
    }
    let m = std::fs::symlink_metadata(root).expect("stat root");
    out.insert(".".into(), (m.mode(), m.uid(), m.gid(), 0, m.nlink()));
    out
}

/// `.dockerignore` rules (before the first NUL) and paths to match (after it, one a line).
pub fn dockerignore(data: &[u8]) {
    use reg_builder::ignore::{clean, Ignore};

    let text = String::from_utf8_lossy(data);
    let (rules, paths) = text.split_once('\0').unwrap_or((&text, ""));
    let Ok(ig) = Ignore::parse(rules) else { return };
    let fixed = ["a", "a/b/c", "README.md", "../x", "./a/../b", "", "/"];
    for p in paths.lines().chain(fixed).chain(rules.lines().take(64)) {
        let c = clean(p);
        assert_eq!(clean(&c), c, "{p:?}");
        assert!(
            c.is_empty() || c.split('/').all(|e| !matches!(e, "" | "." | "..")),
            "{p:?} -> {c:?}"
        );
        assert_eq!(ig.excluded(p), ig.excluded(&c), "{p:?}");
    }
}

/// The node agent's JSON request bodies, and the pure validation the handlers run on them
/// (`--device` is left out: it looks the host path up).
pub fn agent_json(data: &[u8]) {
    use reg_node::api::wire::{ExecRequest, RunRequest};

    if let Ok(req) = serde_json::from_slice::<RunRequest>(data) {
        run_request(&req);
    }
    if let Ok(req) = serde_json::from_slice::<ExecRequest>(data) {
        for e in &req.env {
            let _ = e.split_once('=');
        }
    }
    let _ = serde_json::from_slice::<reg_node::api::RegistryAuth>(data);
    let _ = serde_json::from_slice::<reg_node::api::wire::NetworkConnect>(data);
    let _ = serde_json::from_slice::<reg_node::api::wire::NetworkDisconnect>(data);
    let _ = serde_json::from_slice::<reg_node::api::wire::VolumeCreate>(data);
    let create = serde_json::from_slice::<reg_node::api::wire::NetworkCreate>(data).ok();
    let subnets = create
        .and_then(|c| c.ipam)
        .map(|i| i.config)
        .unwrap_or_default();
    for s in subnets.iter().filter_map(|c| c.subnet.as_deref()) {
        if let Ok(n) = reg_node::network::Subnet::parse(s) {
            assert!((8..=30).contains(&n.prefix), "{s:?}");
            assert!(n.contains(n.base) && n.contains(n.host(1)), "{s:?}");
            assert!(n.size() >= 4);
        }
    }
}

fn run_request(req: &reg_node::containers::RunRequest) {
    use reg_node::runtime::{parse_ulimit, resolve_security};

    let _ = reg_registry::Reference::parse(&req.image, "127.0.0.1:5000");
    let mut security = req.security.clone();
    security.devices.clear();
    if let Ok(spec) = resolve_security(&security) {
        if req.security.seccomp.is_some() {
            if let Some(profile) = &spec.seccomp {
                let _ = profile.compile(&spec.caps);
            }
        }
    }
    for u in &req.security.ulimits {
        if let Ok(r) = parse_ulimit(u) {
            assert!(r.soft <= r.hard, "{u:?}: {r:?}");
        }
    }
    for p in &req.publish {
        if let Ok(spec) = reg_node::network::ports::PortSpec::parse(p) {
            assert_ne!(spec.container_port, 0, "{p:?}");
            assert!(spec.proto == "tcp" || spec.proto == "udp", "{p:?}");
        }
    }
    // `-v`: named and anonymous volumes are made under a throwaway volumes root; a host path
    // source would be created on the host, so those are not resolved here.
    let volumes: Vec<&String> = req
        .volumes
        .iter()
        .filter(|v| !(v.starts_with('/') && v.contains(':')))
        .collect();
    if !volumes.is_empty() {
        let root = tempfile::tempdir().expect("temp dir");
        for v in volumes {
            if let Ok(m) = reg_node::containers::volumes::resolve(root.path(), v) {
                assert!(m.source.starts_with(root.path()), "{v:?}: {m:?}");
                assert!(m.target.starts_with('/'), "{v:?}: {m:?}");
            }
        }
    }
}
