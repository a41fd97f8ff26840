//! The distribution spec's behaviours, asserted with status codes and headers against the real
//! binary on a loopback port. Included by `distribution.rs` (registry open) and by
//! `distribution_authed.rs` (auth on, every request as an admin), which provide `start` and
//! `client`.

use super::{client, start};
use reg_tests::{header, image_manifest, location, push_blob, push_image, sha256};
use reg_tests::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};

#[track_caller]
fn error_code(r: reqwest::blocking::Response) -> String {
    let v: serde_json::Value = r.json().expect("error body is JSON");
    v["errors"][0]["code"]
        .as_str()
        .expect("errors[0].code")
        .to_string()
}

#[test]
fn base_endpoint_answers_with_api_version() {
    let reg = start();
    let r = client().get(reg.url("/v2/")).send().expect("GET /v2/");
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
    let r = client()
        .get(reg.url("/v2/nope/tags/list"))
        .send()
        .expect("GET");
    assert_eq!(
        header(&r, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
}

#[test]
fn monolithic_push_then_pull_with_ranges() {
    let reg = start();
    let c = client();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let d = push_blob(&c, &reg, "team/sub/app", &data);

    let r = c
        .head(reg.url(&format!("/v2/team/sub/app/blobs/{d}")))
        .send()
        .expect("HEAD");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length").as_deref(), Some("100000"));
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert!(header(&r, "content-type").is_some());

    let r = c
        .get(reg.url(&format!("/v2/team/sub/app/blobs/{d}")))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().expect("body").as_ref(), &data[..]);

    let r = c
        .get(reg.url(&format!("/v2/team/sub/app/blobs/{d}")))
        .header("range", "bytes=10-19")
        .send()
        .expect("GET range");
    assert_eq!(r.status(), 206);
    assert_eq!(
        header(&r, "content-range").as_deref(),
        Some("bytes 10-19/100000")
    );
    assert_eq!(r.bytes().expect("body").as_ref(), &data[10..20]);

    let r = c
        .get(reg.url(&format!("/v2/team/sub/app/blobs/{d}")))
        .header("range", "bytes=200000-")
        .send()
        .expect("GET bad range");
    assert_eq!(r.status(), 416);
    assert_eq!(
        header(&r, "content-range").as_deref(),
        Some("bytes */100000")
    );
}

#[test]
fn single_post_with_digest_creates_blob() {
    let reg = start();
    let c = client();
    let data = b"single post body".to_vec();
    let d = sha256(&data);
    let r = c
        .post(reg.url(&format!("/v2/app/blobs/uploads/?digest={d}")))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .expect("POST");
    assert_eq!(r.status(), 201);
    assert_eq!(location(&r), format!("/v2/app/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), Some(d.clone()));
    let r = c
        .get(reg.url(&format!("/v2/app/blobs/{d}")))
        .send()
        .expect("GET");
    assert_eq!(r.bytes().expect("body").as_ref(), &data[..]);
}

#[test]
fn streamed_patch_without_content_range_like_docker() {
    let reg = start();
    let c = client();
    let data = vec![7u8; 3 * 1024 * 1024 + 17];
    let d = sha256(&data);
    let r = c
        .post(reg.url("/v2/app/blobs/uploads/"))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 202);
    assert!(header(&r, "docker-upload-uuid").is_some());
    let loc = location(&r);
    let r = c
        .patch(reg.url(&loc))
        .body(data.clone())
        .send()
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), Some(format!("0-{}", data.len() - 1)));
    let loc = location(&r);
    let r = c
        .put(reg.url(&format!("{loc}?digest={d}")))
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 201);
    let r = c
        .get(reg.url(&format!("/v2/app/blobs/{d}")))
        .send()
        .expect("GET");
    assert_eq!(r.bytes().expect("body").len(), data.len());
}

#[test]
fn chunked_upload_checks_order_and_reports_progress() {
    let reg = start();
    let c = client();
    let data: Vec<u8> = (0..30_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let d = sha256(&data);
    let loc = location(
        &c.post(reg.url("/v2/app/blobs/uploads/"))
            .send()
            .expect("POST"),
    );
    let patch = |loc: &str, a: usize, b: usize| {
        c.patch(reg.url(loc))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{a}-{}", b - 1))
            .header("content-length", (b - a).to_string())
            .body(data[a..b].to_vec())
            .send()
            .expect("PATCH")
    };
    let r = patch(&loc, 0, 10_000);
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-9999"));
    let loc = location(&r);

    // Out of order (skips ahead) and repeated chunks are refused, and nothing is appended.
    assert_eq!(patch(&loc, 20_000, 30_000).status(), 416);
    assert_eq!(patch(&loc, 0, 10_000).status(), 416);

    // A client that lost track asks where to resume.
    let r = c.get(reg.url(&loc)).send().expect("GET status");
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-9999"));
    assert!(header(&r, "location").is_some());

    let r = patch(&loc, 10_000, 20_000);
    assert_eq!(r.status(), 202);
    let r = c
        .put(reg.url(&format!("{}?digest={d}", location(&r))))
        .header("content-range", "20000-29999")
        .header("content-length", "10000")
        .body(data[20_000..].to_vec())
        .send()
        .expect("PUT last chunk");
    assert_eq!(r.status(), 201);
    let got = c
        .get(reg.url(&format!("/v2/app/blobs/{d}")))
        .send()
        .expect("GET")
        .bytes()
        .expect("body");
    assert_eq!(got.as_ref(), &data[..]);
}

#[test]
fn cancelled_upload_is_gone() {
    let reg = start();
    let c = client();
    let loc = location(
        &c.post(reg.url("/v2/app/blobs/uploads/"))
            .send()
            .expect("POST"),
    );
    assert_eq!(
        c.delete(reg.url(&loc)).send().expect("DELETE").status(),
        204
    );
    let r = c.get(reg.url(&loc)).send().expect("GET");
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r), "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn digest_mismatch_stores_nothing() {
    let reg = start();
    let c = client();
    let wrong = sha256(b"something else");
    let loc = location(
        &c.post(reg.url("/v2/app/blobs/uploads/"))
            .send()
            .expect("POST"),
    );
    let r = c
        .put(reg.url(&format!("{loc}?digest={wrong}")))
        .body("actual bytes")
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r), "DIGEST_INVALID");
    for d in [wrong, sha256(b"actual bytes")] {
        let r = c
            .head(reg.url(&format!("/v2/app/blobs/{d}")))
            .send()
            .expect("HEAD");
        assert_eq!(r.status(), 404, "{d} must not exist");
    }
    let r = c
        .post(reg.url("/v2/app/blobs/uploads/?digest=sha256:abc"))
        .body("x")
        .send()
        .expect("POST");
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r), "DIGEST_INVALID");
    let uploads = reg_tests::stored(reg.data_dir(), "_uploads/");
    assert!(uploads.is_empty(), "no upload is left behind: {uploads:?}");
}

#[test]
fn cross_repository_mount() {
    let reg = start();
    let c = client();
    let d = push_blob(&c, &reg, "src/app", b"shared layer");
    let r = c
        .post(reg.url(&format!(
            "/v2/dst/app/blobs/uploads/?mount={d}&from=src/app"
        )))
        .send()
        .expect("mount");
    assert_eq!(r.status(), 201);
    assert_eq!(location(&r), format!("/v2/dst/app/blobs/{d}"));
    assert_eq!(
        c.head(reg.url(&format!("/v2/dst/app/blobs/{d}")))
            .send()
            .expect("HEAD")
            .status(),
        200
    );

    // Source lacks the blob: an ordinary upload session starts instead.
    let missing = sha256(b"never pushed");
    let r = c
        .post(reg.url(&format!(
            "/v2/dst/app/blobs/uploads/?mount={missing}&from=src/app"
        )))
        .send()
        .expect("mount");
    assert_eq!(r.status(), 202);
    assert!(header(&r, "docker-upload-uuid").is_some());
}

#[test]
fn blobs_are_served_only_from_repositories_that_have_them() {
    let reg = start();
    let c = client();
    let d = push_blob(&c, &reg, "team/private", b"secret bytes");
    let r = c
        .get(reg.url(&format!("/v2/other/blobs/{d}")))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r), "BLOB_UNKNOWN");
}

#[test]
fn manifests_round_trip_byte_for_byte_with_their_content_type() {
    let reg = start();
    let c = client();
    // Odd whitespace proves the bytes are stored, not re-serialised.
    let cfg = push_blob(&c, &reg, "app", b"{}");
    let layer = push_blob(&c, &reg, "app", b"layer");
    let docker = format!(
        "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"application/vnd.docker.distribution.manifest.v2+json\",\n  \
         \"config\": {{\"mediaType\": \"application/vnd.docker.container.image.v1+json\", \"size\": 2, \"digest\": \"{cfg}\"}},\n  \
         \"layers\": [ {{\"mediaType\": \"application/vnd.docker.image.rootfs.diff.tar.gzip\", \"size\": 5, \"digest\": \"{layer}\"}} ]\n}}\n"
    );
    let docker_type = "application/vnd.docker.distribution.manifest.v2+json";
    let r = c
        .put(reg.url("/v2/app/manifests/docker"))
        .header("content-type", docker_type)
        .body(docker.clone())
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 201);
    let md = sha256(docker.as_bytes());
    assert_eq!(header(&r, "docker-content-digest"), Some(md.clone()));
    assert_eq!(location(&r), format!("/v2/app/manifests/{md}"));

    for reference in ["docker", md.as_str()] {
        let r = c
            .get(reg.url(&format!("/v2/app/manifests/{reference}")))
            .send()
            .expect("GET");
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type").as_deref(), Some(docker_type));
        assert_eq!(header(&r, "docker-content-digest"), Some(md.clone()));
        assert_eq!(r.text().expect("body"), docker);
        let r = c
            .head(reg.url(&format!("/v2/app/manifests/{reference}")))
            .send()
            .expect("HEAD");
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-length"), Some(docker.len().to_string()));
        assert_eq!(header(&r, "docker-content-digest"), Some(md.clone()));
    }

    // A Docker manifest list and an OCI index over it.
    for (tag, ty) in [
        (
            "list",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        ),
        ("index", OCI_INDEX),
    ] {
        let child_type = docker_type;
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{ty}","manifests":[{{"mediaType":"{child_type}","digest":"{md}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            docker.len()
        );
        let r = c
            .put(reg.url(&format!("/v2/app/manifests/{tag}")))
            .header("content-type", ty)
            .body(body.clone())
            .send()
            .expect("PUT");
        assert_eq!(r.status(), 201, "{tag}");
        let r = c
            .get(reg.url(&format!("/v2/app/manifests/{tag}")))
            .send()
            .expect("GET");
        assert_eq!(header(&r, "content-type").as_deref(), Some(ty));
        assert_eq!(r.text().expect("body"), body);
    }
}

#[test]
fn manifest_naming_missing_content_is_refused() {
    let reg = start();
    let c = client();
    let cfg = push_blob(&c, &reg, "app", b"{}");
    let missing = sha256(b"not pushed");
    let m = image_manifest((&cfg, 2), &[(&missing, 10)]);
    let r = c
        .put(reg.url("/v2/app/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(m)
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r), "MANIFEST_BLOB_UNKNOWN");

    // A blob of another repository does not count.
    let elsewhere = push_blob(&c, &reg, "other", b"layer elsewhere");
    let m = image_manifest((&cfg, 2), &[(&elsewhere, 15)]);
    let r = c
        .put(reg.url("/v2/app/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(m)
        .send()
        .expect("PUT");
    assert_eq!(error_code(r), "MANIFEST_BLOB_UNKNOWN");

    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{missing}","size":1}}]}}"#
    );
    let r = c
        .put(reg.url("/v2/app/manifests/idx"))
        .header("content-type", OCI_INDEX)
        .body(index)
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r), "MANIFEST_BLOB_UNKNOWN");

    let r = c.get(reg.url("/v2/app/manifests/v1")).send().expect("GET");
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r), "MANIFEST_UNKNOWN");
}

#[test]
fn malformed_manifests_get_clear_errors() {
    let reg = start();
    let c = client();
    let put = |body: &str, ty: &str, reference: &str| {
        c.put(reg.url(&format!("/v2/app/manifests/{reference}")))
            .header("content-type", ty)
            .body(body.to_string())
            .send()
            .expect("PUT")
    };
    for body in [
        "not json",
        r#"{"schemaVersion":1,"name":"x"}"#,
        r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
    ] {
        let r = put(body, OCI_MANIFEST, "bad");
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(error_code(r), "MANIFEST_INVALID", "{body}");
    }
    // Digest in the URL that is not the body's digest.
    let (_, m) = push_image(&c, &reg, "app", "v1", "a");
    let r = put(&m, OCI_MANIFEST, &sha256(b"other"));
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r), "DIGEST_INVALID");
    let r = put(&m, OCI_MANIFEST, "bad/tag");
    assert_eq!(
        r.status(),
        404,
        "a tag with a slash is no manifest endpoint"
    );
    let r = put(&m, OCI_MANIFEST, "-bad");
    assert_eq!(r.status(), 400);
    let r = c
        .get(reg.url("/v2/Bad_Name/tags/list"))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r), "NAME_INVALID");
}

#[test]
fn large_manifests_up_to_the_limit_are_accepted_and_larger_refused() {
    let reg = start();
    let c = client();
    let cfg = push_blob(&c, &reg, "app", b"{}");
    let body = |pad: usize| {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{cfg}","size":2}},"layers":[],"annotations":{{"pad":"{}"}}}}"#,
            "x".repeat(pad)
        );
        m
    };
    let base = body(0).len();
    let exactly_4mib = body(4 * 1024 * 1024 - base);
    assert_eq!(exactly_4mib.len(), 4 * 1024 * 1024);
    let r = c
        .put(reg.url("/v2/app/manifests/big"))
        .header("content-type", OCI_MANIFEST)
        .body(exactly_4mib.clone())
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 201);
    let got = c
        .get(reg.url("/v2/app/manifests/big"))
        .send()
        .expect("GET")
        .text()
        .expect("body");
    assert_eq!(got.len(), exactly_4mib.len());
    let r = c
        .put(reg.url("/v2/app/manifests/huge"))
        .header("content-type", OCI_MANIFEST)
        .body(body(4 * 1024 * 1024 + 1))
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 413);
}

#[test]
fn sha512_blobs_and_manifests() {
    use sha2::Digest as _;
    let reg = start();
    let c = client();
    let data = b"sha512 content".to_vec();
    let d = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&data)));
    let loc = location(
        &c.post(reg.url("/v2/app/blobs/uploads/"))
            .send()
            .expect("POST"),
    );
    let r = c
        .put(reg.url(&format!("{loc}?digest={d}")))
        .body(data.clone())
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 201);
    assert_eq!(
        c.get(reg.url(&format!("/v2/app/blobs/{d}")))
            .send()
            .expect("GET")
            .bytes()
            .expect("body")
            .as_ref(),
        &data[..]
    );

    let m = image_manifest((&d, data.len()), &[]);
    let md = format!("sha512:{}", hex::encode(sha2::Sha512::digest(m.as_bytes())));
    let r = c
        .put(reg.url(&format!("/v2/app/manifests/{md}")))
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "docker-content-digest"), Some(md.clone()));
    assert_eq!(
        c.get(reg.url(&format!("/v2/app/manifests/{md}")))
            .send()
            .expect("GET")
            .text()
            .expect("body"),
        m
    );
}

#[test]
fn tags_and_catalog_paginate_with_link_headers() {
    let reg = start();
    let c = client();
    for t in ["c", "a", "e", "b", "d"] {
        push_image(&c, &reg, "team/app", t, "same");
    }
    push_image(&c, &reg, "zeta", "x", "z");
    push_image(&c, &reg, "alpha", "x", "y");

    let r = c
        .get(reg.url("/v2/team/app/tags/list"))
        .send()
        .expect("GET");
    let v: serde_json::Value = r.json().expect("json");
    assert_eq!(v["name"], "team/app");
    assert_eq!(v["tags"], serde_json::json!(["a", "b", "c", "d", "e"]));

    // (path, list key, expected items, expected Link header)
    let pages: [(&str, &str, &[&str], Option<&str>); 5] = [
        (
            "/v2/team/app/tags/list?n=2",
            "tags",
            &["a", "b"],
            Some("</v2/team/app/tags/list?n=2&last=b>; rel=\"next\""),
        ),
        (
            "/v2/team/app/tags/list?n=2&last=b",
            "tags",
            &["c", "d"],
            Some("</v2/team/app/tags/list?n=2&last=d>; rel=\"next\""),
        ),
        ("/v2/team/app/tags/list?n=2&last=d", "tags", &["e"], None),
        (
            "/v2/_catalog?n=2",
            "repositories",
            &["alpha", "team/app"],
            Some("</v2/_catalog?n=2&last=team/app>; rel=\"next\""),
        ),
        (
            "/v2/_catalog?n=2&last=team/app",
            "repositories",
            &["zeta"],
            None,
        ),
    ];
    for (path, key, items, link) in pages {
        let r = c.get(reg.url(path)).send().expect("GET");
        assert_eq!(header(&r, "link").as_deref(), link, "{path}");
        assert_eq!(
            r.json::<serde_json::Value>().expect("json")[key],
            serde_json::json!(items),
            "{path}"
        );
    }

    let r = c.get(reg.url("/v2/unknown/tags/list")).send().expect("GET");
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r), "NAME_UNKNOWN");
}

#[test]
fn referrers_list_subjects_with_artifact_type_filter() {
    let reg = start();
    let c = client();
    let (subject, m) = push_image(&c, &reg, "app", "v1", "base");
    let empty = push_blob(&c, &reg, "app", b"{}");
    let mut digests = Vec::new();
    for (i, at) in [
        "application/vnd.example.sbom",
        "application/vnd.example.sig",
    ]
    .iter()
    .enumerate()
    {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{at}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{}}},"annotations":{{"n":"{i}"}}}}"#,
            m.len()
        );
        let d = sha256(body.as_bytes());
        let r = c
            .put(reg.url(&format!("/v2/app/manifests/{d}")))
            .header("content-type", OCI_MANIFEST)
            .body(body)
            .send()
            .expect("PUT");
        assert_eq!(r.status(), 201);
        assert_eq!(header(&r, "oci-subject"), Some(subject.clone()));
        digests.push(d);
    }
    let r = c
        .get(reg.url(&format!("/v2/app/referrers/{subject}")))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_INDEX));
    assert!(header(&r, "oci-filters-applied").is_none());
    let v: serde_json::Value = r.json().expect("json");
    assert_eq!(v["manifests"].as_array().map(Vec::len), Some(2));
    let mut seen: Vec<String> = v["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["annotations"]["n"].as_str().unwrap_or("").to_string())
        .collect();
    seen.sort();
    assert_eq!(seen, ["0", "1"], "annotations are reported");

    let r = c
        .get(reg.url(&format!(
            "/v2/app/referrers/{subject}?artifactType=application/vnd.example.sig"
        )))
        .send()
        .expect("GET");
    assert_eq!(
        header(&r, "oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    let v: serde_json::Value = r.json().expect("json");
    assert_eq!(v["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["manifests"][0]["digest"], digests[1].as_str());
    assert_eq!(
        v["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );

    // A subject nobody refers to: an empty index, not an error.
    let r = c
        .get(reg.url(&format!("/v2/app/referrers/{}", sha256(b"none"))))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().expect("json")["manifests"],
        serde_json::json!([])
    );
}

#[test]
fn deletes_of_manifests_tags_and_blobs() {
    let reg = start();
    let c = client();
    let (d1, _) = push_image(&c, &reg, "app", "one", "1");
    push_image(&c, &reg, "app", "keep", "1");
    let (d2, _) = push_image(&c, &reg, "app", "two", "2");

    // Deleting a tag leaves the manifest reachable by digest.
    assert_eq!(
        c.delete(reg.url("/v2/app/manifests/keep"))
            .send()
            .expect("DELETE")
            .status(),
        202
    );
    assert_eq!(
        c.get(reg.url("/v2/app/manifests/keep"))
            .send()
            .expect("GET")
            .status(),
        404
    );
    assert_eq!(
        c.get(reg.url(&format!("/v2/app/manifests/{d1}")))
            .send()
            .expect("GET")
            .status(),
        200
    );

    // Deleting by digest removes the manifest and its tags.
    assert_eq!(
        c.delete(reg.url(&format!("/v2/app/manifests/{d2}")))
            .send()
            .expect("DELETE")
            .status(),
        202
    );
    assert_eq!(
        c.get(reg.url("/v2/app/manifests/two"))
            .send()
            .expect("GET")
            .status(),
        404
    );
    let r = c
        .delete(reg.url(&format!("/v2/app/manifests/{d2}")))
        .send()
        .expect("DELETE");
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r), "MANIFEST_UNKNOWN");

    let b = push_blob(&c, &reg, "app", b"to delete");
    assert_eq!(
        c.delete(reg.url(&format!("/v2/app/blobs/{b}")))
            .send()
            .expect("DELETE")
            .status(),
        202
    );
    let r = c
        .get(reg.url(&format!("/v2/app/blobs/{b}")))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r), "BLOB_UNKNOWN");

    let v: serde_json::Value = c
        .get(reg.url("/v2/app/tags/list"))
        .send()
        .expect("GET")
        .json()
        .expect("json");
    assert_eq!(v["tags"], serde_json::json!(["one"]));
}
