//! Two registry replicas on one PostgreSQL database and one S3 bucket behave as one registry:
//! docker pushes through one and pulls through the other; a chunked upload hops between them;
//! tags, deletes and tokens are seen by both. Runs when scripts/test provides PostgreSQL and
//! Garage (`REG_TEST_POSTGRES`, `REG_TEST_S3_*`); skipped with a reason otherwise.

use std::process::Command;

use reg_tests::{
    admin, busybox_layers, client, docker_ready, push_blob, run, sha256, shared_storage_env,
    test_postgres, test_s3, DockerImages, Registry,
};

/// Replica A on a fresh data dir, and replica B on another data dir sharing A's database and
/// bucket. `None` (after saying why) when the shared backends are not configured.
fn replicas() -> Option<(tempfile::TempDir, Registry, Registry)> {
    replicas_with(&[])
}

/// [`replicas`], with more environment for B.
fn replicas_with(b_env: &[(&str, &str)]) -> Option<(tempfile::TempDir, Registry, Registry)> {
    if test_postgres().is_none() || test_s3().is_none() {
        reg_tests::skip(
            "replicas need REG_TEST_POSTGRES and REG_TEST_S3_* (scripts/test sets them)",
        );
        return None;
    }
    let a = Registry::start();
    let data_b = tempfile::tempdir().expect("tempdir");
    let shared = shared_storage_env(a.data_dir());
    let env: Vec<(&str, &str)> = shared
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(b_env.iter().copied())
        .collect();
    let b = Registry::start_on(data_b.path(), &env);
    Some((data_b, a, b))
}

fn location(r: &reqwest::blocking::Response) -> String {
    reg_tests::location(r)
}

#[test]
fn a_chunked_upload_hops_between_replicas_and_multipart_parts_survive() {
    let Some((_b_data, a, b)) = replicas() else {
        return;
    };
    let c = client();
    // 10 MiB + 3 MiB + 1 KiB: a full part written by A, the tail continued by B, then A, and
    // the upload finished by B, which never saw the first bytes (it re-hashes the object).
    let chunks: Vec<Vec<u8>> = [10 << 20, 3 << 20, 1024]
        .iter()
        .enumerate()
        .map(|(i, n)| (0..*n).map(|j| ((j * 7 + i * 13) % 251) as u8).collect())
        .collect();
    let all: Vec<u8> = chunks.concat();
    let digest = sha256(&all);

    let r = c
        .post(a.url("/v2/team/big/blobs/uploads/"))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 202);
    let mut loc = location(&r);
    let mut offset = 0usize;
    for (i, chunk) in chunks.iter().enumerate() {
        let via = if i % 2 == 0 { &a } else { &b };
        let r = c
            .patch(via.url(&loc))
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{offset}-{}", offset + chunk.len() - 1),
            )
            .body(chunk.clone())
            .send()
            .expect("PATCH");
        assert_eq!(
            r.status(),
            202,
            "chunk {i} via replica {}",
            if i % 2 == 0 { "A" } else { "B" }
        );
        offset += chunk.len();
        assert_eq!(
            reg_tests::header(&r, "range").as_deref(),
            Some(format!("0-{}", offset - 1).as_str())
        );
        loc = location(&r);
    }
    // Status through the other replica agrees.
    let r = c.get(a.url(&loc)).send().expect("GET status");
    assert_eq!(r.status(), 204);
    assert_eq!(
        reg_tests::header(&r, "range").as_deref(),
        Some(format!("0-{}", all.len() - 1).as_str())
    );
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(b.url(&format!("{loc}{sep}digest={digest}")))
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());

    for via in [&a, &b] {
        let r = c
            .get(via.url(&format!("/v2/team/big/blobs/{digest}")))
            .send()
            .expect("GET blob");
        assert_eq!(r.status(), 200);
        let body = r.bytes().expect("body");
        assert_eq!(body.len(), all.len());
        assert_eq!(sha256(&body), digest, "the blob verifies");
    }
    // A range read through B.
    let r = c
        .get(b.url(&format!("/v2/team/big/blobs/{digest}")))
        .header("range", "bytes=10485760-10485769")
        .send()
        .expect("GET range");
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.bytes().expect("body").as_ref(),
        &all[10 << 20..(10 << 20) + 10]
    );

    // A wrong digest on the other replica: refused, nothing stored, no leftovers.
    let r = c
        .post(b.url("/v2/team/big/blobs/uploads/"))
        .send()
        .expect("POST");
    let loc = location(&r);
    let r = c
        .patch(b.url(&loc))
        .body(chunks[0].clone())
        .send()
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    let loc = location(&r);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(a.url(&format!("{loc}{sep}digest={digest}")))
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 400);
    let uploads = reg_tests::stored(a.data_dir(), "_uploads/");
    assert!(
        uploads.is_empty(),
        "no upload left in the bucket: {uploads:?}"
    );
}

#[test]
fn tags_deletes_and_tokens_are_shared() {
    let Some((_b_data, a, b)) = replicas() else {
        return;
    };
    let c = client();
    let layer = push_blob(&c, &a, "team/app", b"layer bytes");
    let config = push_blob(&c, &a, "team/app", b"{}");
    let manifest = reg_tests::image_manifest((&config, 2), &[(&layer, 11)]);
    let r = c
        .put(a.url("/v2/team/app/manifests/v1"))
        .header("content-type", reg_tests::OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .expect("PUT manifest");
    assert_eq!(r.status(), 201);
    let r = c.get(b.url("/v2/team/app/tags/list")).send().expect("tags");
    assert_eq!(r.status(), 200);
    let tags: serde_json::Value = r.json().expect("json");
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    let r = c
        .delete(b.url("/v2/team/app/manifests/v1"))
        .send()
        .expect("DELETE tag");
    assert_eq!(r.status(), 202);
    let r = c
        .get(a.url("/v2/team/app/manifests/v1"))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 404, "deleted through B, gone on A");

    // A user added once; a token issued by A is accepted by B (one signing key, in the database).
    admin(
        a.data_dir(),
        &["user", "add", "alice", "--admin", "--password-stdin"],
        "correct horse battery\n",
    );
    std::thread::sleep(std::time::Duration::from_millis(1100)); // auth turns on within a second
    let token: serde_json::Value = c
        .get(a.url("/auth/token?service=reg&scope=repository:team/app:pull"))
        .basic_auth("alice", Some("correct horse battery"))
        .send()
        .expect("token")
        .json()
        .expect("token json");
    let token = token["token"].as_str().expect("token").to_string();
    let r = c
        .get(b.url("/v2/team/app/tags/list"))
        .bearer_auth(&token)
        .send()
        .expect("tags with A's token");
    assert_eq!(r.status(), 200, "B accepts a token A signed");
    let r = c
        .get(b.url("/v2/team/app/tags/list"))
        .send()
        .expect("anonymous");
    assert_eq!(r.status(), 401, "and B has auth on too: the user is shared");

    // Revocation is immediate on both: a password change (through A's database) ends the
    // token A signed, on B as on A, and the old password on either.
    let basic_b = |pw: &str| {
        c.get(b.url("/v2/"))
            .basic_auth("alice", Some(pw))
            .send()
            .expect("GET")
            .status()
    };
    assert_eq!(basic_b("correct horse battery"), 200);
    admin(
        a.data_dir(),
        &["user", "passwd", "alice", "--password-stdin"],
        "a new password\n",
    );
    for via in [&b, &a] {
        let r = c
            .get(via.url("/v2/team/app/tags/list"))
            .bearer_auth(&token)
            .send()
            .expect("tags with the old token");
        assert_eq!(r.status(), 401, "the token is revoked on {}", via.host);
    }
    assert_eq!(basic_b("correct horse battery"), 401);
    assert_eq!(basic_b("a new password"), 200);
}

/// B answers blob GETs with redirects to presigned bucket URLs (`registry.storage.redirect`).
const REDIRECT: (&str, &str) = ("REG_REGISTRY_STORAGE_REDIRECT", "true");

#[test]
fn with_redirect_a_blob_get_sends_the_client_to_the_bucket() {
    let Some((_b_data, a, b)) = replicas_with(&[REDIRECT]) else {
        return;
    };
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let c = client();
    let digest = push_blob(&c, &a, "team/redir", &blob);
    let path = format!("/v2/team/redir/blobs/{digest}");
    // A streams it itself; B redirects, and the presigned URL serves the same bytes and ranges.
    let r = c.get(a.url(&path)).send().expect("GET via A");
    assert_eq!(r.status(), 200);
    let r = c.get(b.url(&path)).send().expect("GET via B");
    assert_eq!(r.status(), 307);
    let url = location(&r);
    let endpoint = test_s3().map(|s| s[0].clone()).unwrap_or_default();
    assert!(url.starts_with(&endpoint), "{url} is not in the bucket");
    assert!(url.contains("X-Amz-Signature="), "{url} is not presigned");
    let got = c.get(&url).send().expect("GET presigned");
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().expect("body").as_ref(), &blob[..]);
    let part = c
        .get(&url)
        .header("range", "bytes=1000-1999")
        .send()
        .expect("range");
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().expect("body").as_ref(), &blob[1000..2000]);
    // HEAD still answers from the registry, and a blob it does not have is still a 404.
    let r = c.head(b.url(&path)).send().expect("HEAD via B");
    assert_eq!(r.status(), 200);
    assert_eq!(
        reg_tests::header(&r, "content-length").as_deref(),
        Some(blob.len().to_string().as_str())
    );
    let missing = sha256(b"not pushed");
    let r = c
        .get(b.url(&format!("/v2/team/redir/blobs/{missing}")))
        .send()
        .expect("GET missing");
    assert_eq!(r.status(), 404);
}

#[test]
fn docker_pushes_through_one_replica_and_pulls_through_the_other() {
    if !docker_ready() {
        return;
    }
    let Some(_) = busybox_layers() else { return };
    // docker follows B's redirects to the bucket.
    let Some((_b_data, a, b)) = replicas_with(&[REDIRECT]) else {
        return;
    };
    let ctx = tempfile::tempdir().expect("tempdir");
    std::fs::copy("/bin/busybox", ctx.path().join("busybox")).expect("copy busybox");
    std::fs::write(ctx.path().join("big"), vec![7u8; 12 << 20]).expect("big file");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY big /big\nCMD [\"/bin/busybox\", \"true\"]\n",
    )
    .expect("Dockerfile");
    let pushed_name = format!("{}/replicas/app:v1", a.host);
    let pulled_name = format!("{}/replicas/app:v1", b.host);
    let _cleanup = DockerImages(vec![pushed_name.clone(), pulled_name.clone()]);
    run(Command::new("docker")
        .args(["build", "-q", "-t", &pushed_name])
        .arg(ctx.path())
        .env("DOCKER_BUILDKIT", "0"));
    let out = run(Command::new("docker").args(["push", &pushed_name]));
    let pushed = out
        .split("digest: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("digest in push output")
        .to_string();
    let out = run(Command::new("docker").args(["pull", &pulled_name]));
    assert!(
        out.contains(&pushed),
        "pulled through B with the pushed digest: {out}"
    );
    let out = run(Command::new("docker").args(["inspect", "--format", "{{.Size}}", &pulled_name]));
    assert!(out.trim().parse::<u64>().unwrap_or(0) >= 12 << 20, "{out}");
}

/// A web interface session made on one replica works on the other, and a logout on either
/// ends it on both (cookies are per host, not per port: one browser reaches both here).
#[test]
fn a_web_session_is_shared_by_the_replicas() {
    let Some((_b_data, a, b)) = replicas() else {
        return;
    };
    admin(
        a.data_dir(),
        &["user", "add", "alice", "--admin", "--password-stdin"],
        "alice-pass-1\n",
    );
    // (Each replica reads whether users exist at most once a second.)
    for r in [&a, &b] {
        for _ in 0..100 {
            if client()
                .get(r.url("/v2/"))
                .send()
                .is_ok_and(|x| x.status() == 401)
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let browser = reg_tests::browser();
    let csrf = reg_tests::log_in(&browser, &a, "alice", "alice-pass-1");
    let tokens = |r: &Registry| {
        browser
            .get(r.url("/ui/tokens"))
            .send()
            .expect("GET")
            .status()
    };
    assert_eq!(tokens(&b), 200, "the session made on A works on B");
    let r = browser
        .post(b.url("/ui/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .expect("logout");
    assert_eq!(r.status(), 303);
    assert_eq!(tokens(&a), 303, "logged out on B, gone on A");
}
