//! The node's image store pulling from the real registry: layers verified and unpacked into
//! shared snapshots, cached on a second pull, a tampered layer refused without leftovers, and
//! private images pulled with credentials.

use std::sync::{Arc, Mutex};

use reg_node::image::{ImageStore, Progress, PullError};
use reg_registry::client::RegistryClient;
use reg_registry::Reference;
use reg_tests::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn pull(
    store: &Arc<ImageStore>,
    reg: &Registry,
    reference: &str,
    creds: Option<(&str, &str)>,
) -> (
    Result<reg_node::image::ImageRecord, PullError>,
    Vec<Progress>,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let client = RegistryClient::with_credentials(
        &reg.host,
        creds.map(|(u, p)| (u.to_string(), p.to_string())),
    );
    let r = Reference::parse(reference, &reg.host).expect("reference");
    let result =
        rt().block_on(store.pull(&client, &r, move |p| sink.lock().expect("lock").push(p)));
    let ev = events.lock().expect("lock").clone();
    (result, ev)
}

fn leftovers(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn pull_unpacks_verified_layers_and_caches_them() {
    let Some(layers) = busybox_layers() else {
        return;
    };
    let reg = Registry::start();
    push_layers(&client(), &reg, "node/busybox", "v1", &layers);
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(ImageStore::open(tmp.path()).expect("store"));

    let (rec, events) = pull(&store, &reg, "node/busybox:v1", None);
    let rec = rec.expect("pull");
    assert_eq!(rec.chain.len(), 3);
    let bottom = store.snapshot_dir(&rec.chain[0]);
    assert_eq!(
        std::fs::read(bottom.join("bin/busybox")).expect("busybox"),
        std::fs::read("/bin/busybox").expect("host busybox")
    );
    assert_eq!(
        std::fs::read_to_string(store.snapshot_dir(&rec.chain[1]).join("etc/hello.txt"))
            .expect("hello"),
        "hello from layer 2\n"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Progress::LayerDone { .. }))
            .count(),
        3
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Progress::LayerBytes { .. })),
        "progress is reported"
    );
    assert_eq!(
        store
            .get(&format!("{}/node/busybox:v1", reg.host))
            .expect("index")
            .map(|r| r.id),
        Some(rec.id.clone())
    );

    let (again, events) = pull(&store, &reg, "node/busybox:v1", None);
    assert_eq!(again.expect("second pull").digest, rec.digest);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Progress::LayerCached { .. }))
            .count(),
        3,
        "nothing downloaded twice"
    );
    assert_eq!(leftovers(tmp.path()), 0);
}

#[test]
fn tampered_layer_is_refused_and_nothing_is_kept() {
    let Some(layers) = busybox_layers() else {
        return;
    };
    let reg = Registry::start();
    let c = client();
    push_layers(&c, &reg, "node/tampered", "v1", &layers);
    // Corrupt the stored bytes of the second layer behind the registry's back.
    let gz = gzip(&layers[1]);
    let d = sha256(&gz);
    let hex = d.trim_start_matches("sha256:");
    let path = reg
        .data_dir()
        .join(format!("registry/blobs/sha256/{}/{hex}", &hex[..2]));
    let mut bytes = std::fs::read(&path).expect("stored blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).expect("corrupt");

    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(ImageStore::open(tmp.path()).expect("store"));
    let (result, _) = pull(&store, &reg, "node/tampered:v1", None);
    let err = result.expect_err("a corrupt layer must not pull");
    let msg = err.to_string();
    assert!(msg.contains(&d) || msg.contains("layer"), "{msg}");
    assert_eq!(leftovers(tmp.path()), 0, "no temporary data left");
    let snapshots: Vec<_> = std::fs::read_dir(tmp.path().join("snapshots"))
        .expect("snapshots")
        .flatten()
        .collect();
    assert!(snapshots.len() < 3, "the corrupt layer has no snapshot");
    assert!(store
        .get(&format!("{}/node/tampered:v1", reg.host))
        .expect("index")
        .is_none());
}

#[test]
fn private_images_pull_with_credentials_only() {
    let Some(layers) = busybox_layers() else {
        return;
    };
    let pw = "node-pull-password";
    let reg = Registry::start_fresh(|d| {
        admin(d, &["user", "add", "alice", "--password-stdin"], pw);
    });
    push_layers(
        &client_as("alice", pw),
        &reg,
        "alice/app",
        "v1",
        &layers[..1],
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(ImageStore::open(tmp.path()).expect("store"));
    let (anon, _) = pull(&store, &reg, "alice/app:v1", None);
    let msg = anon
        .expect_err("anonymous pull of a private image")
        .to_string();
    assert!(msg.contains("log") || msg.contains("401"), "{msg}");
    let (ok, _) = pull(&store, &reg, "alice/app:v1", Some(("alice", pw)));
    ok.expect("pull with credentials");
}

/// A config whose JSON holds bytes that are not UTF-8: the store must never keep a "repaired"
/// copy (U+FFFD; a later push would have another config digest). The pull refuses it and keeps
/// nothing. (A manifest like it cannot be served by reg's registry, which refuses it at push;
/// the store refuses one from another registry the same way.)
#[test]
fn a_config_that_is_not_utf8_is_refused_not_repaired() {
    let Some(layers) = busybox_layers() else {
        return;
    };
    let reg = Registry::start();
    let c = client();
    let layer = gzip(&layers[0]);
    let ld = push_blob(&c, &reg, "node/bad-config", &layer);
    let mut config = format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{}\"]}},\"x-comment\":\"",
        sha256(&layers[0])
    )
    .into_bytes();
    config.extend_from_slice(b"\xff\xfe\"}");
    let cd = push_blob(&c, &reg, "node/bad-config", &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": layer.len()}],
    })
    .to_string();
    let r = c
        .put(reg.url("/v2/node/bad-config/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest)
        .send()
        .expect("PUT manifest");
    assert_eq!(r.status(), 201, "{:?}", r.text());

    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(ImageStore::open(tmp.path()).expect("store"));
    let (rec, _) = pull(&store, &reg, "node/bad-config:v1", None);
    let err = rec
        .expect_err("a config that is not UTF-8 is refused")
        .to_string();
    assert!(
        err.contains("not UTF-8") || err.contains("invalid unicode"),
        "{err}"
    );
    let key = Reference::parse("node/bad-config:v1", &reg.host)
        .expect("reference")
        .to_string();
    assert!(store.get(&key).expect("store").is_none());
}
