//! Image commands through the agent: `reg tag`, `reg push` (only missing blobs travel, the
//! manifest arrives byte for byte), `reg rmi` (refused while a container uses the image;
//! layers nothing needs are deleted).

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

#[test]
fn tag_push_and_rmi() {
    let Some(n) = node() else { return };
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    assert!(n.inspect(IMG)["Id"]
        .as_str()
        .unwrap_or("")
        .starts_with("sha256:"));
    let (code, _, err) = n.reg(&["tag", IMG, "copies/run:v2"]);
    assert_eq!(code, 0, "{err}");
    let (_, images, _) = n.reg(&["images"]);
    assert!(
        images.contains("copies/run") && images.contains("node/run"),
        "{images}"
    );

    let (code, out, err) = n.reg(&["push", "copies/run:v2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.matches(": Mounted from node/run").count(),
        3,
        "three layers mounted from the repository they were pulled from, none uploaded: {out}"
    );
    assert!(out.contains("v2: digest: sha256:"), "{out}");
    let (code, out, err) = n.reg(&["push", "copies/run:v2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.matches("Layer already exists").count(),
        3,
        "nothing travels twice: {out}"
    );

    // Same manifest bytes under the new name: the same digest.
    let c = reg_tests::client();
    let get = |path: &str| {
        let r = c
            .get(n.server.url(path))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .expect("GET");
        assert_eq!(r.status(), 200, "{path}");
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(
        get("/v2/copies/run/manifests/v2"),
        get("/v2/node/run/manifests/v1")
    );

    // rmi: refused while a container uses the image; then layers go with the last name.
    let id = n.run_d(&[IMG, "/bin/busybox", "sleep", "600"]);
    let (code, _, err) = n.reg(&["rmi", IMG]);
    assert_ne!(code, 0);
    assert!(err.contains("uses it"), "{err}");
    assert_eq!(n.reg(&["rm", "-f", &id]).0, 0);
    let (code, out, err) = n.reg(&["rmi", "copies/run:v2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Untagged") && !out.contains("Deleted"),
        "still tagged elsewhere: {out}"
    );
    let (code, out, err) = n.reg(&["rmi", IMG]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("Deleted").count(), 3, "{out}");
    let left = |d: &str| walk(&n.tmp.path().join("node").join(d));
    assert_eq!(left("snapshots"), 0, "no snapshot left");
    assert_eq!(left("blobs"), 0, "no blob left");
    let (code, _, err) = n.reg(&["rmi", IMG]);
    assert_ne!(code, 0);
    assert!(err.contains("no such image"), "{err}");
}

/// Regular files under `dir`.
fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                walk(&e.path())
            } else {
                1
            }
        })
        .sum()
}
