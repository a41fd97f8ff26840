//! The web interface (`/ui/`) in a real browser: headless Chromium driven by Selenium
//! (`tests/ui/browse.py`) logs in, browses to a pushed image's layers and history, and logs out;
//! screenshots of each page go to `target/ui-screenshots/`. Sessions, CSRF and visibility are
//! checked over HTTP beside it, and so is the local node's read-only view.

#[path = "shared/node.rs"]
mod shared_node;

use std::path::PathBuf;
use std::process::Command;

use reg_tests::{
    admin, browser, client, client_as, field, log_in, push_blob, sha256, skip, Registry,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Pushes an image whose config has a history; returns the manifest digest.
fn push_with_history(c: &reqwest::blocking::Client, reg: &Registry, repo: &str) -> String {
    let layer = reg_tests::gzip(&reg_tests::tar_layer(&[reg_tests::LayerFile {
        path: "app/hello.txt",
        mode: 0o644,
        data: b"hello\n",
    }]));
    let ld = push_blob(c, reg, repo, &layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(b"x")]},
        "history": [
            {"created": "2026-12-01T10:00:00Z", "created_by": "COPY hello.txt /app/ # buildkit"},
            {"created": "2026-12-01T10:00:01Z", "created_by": "CMD [\"<script>alert(1)</script>\"]", "empty_layer": true}
        ]
    })
    .to_string();
    let cd = push_blob(c, reg, repo, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": layer.len()}],
    })
    .to_string();
    let r = c
        .put(reg.url(&format!("/v2/{repo}/manifests/v1")))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .expect("PUT manifest");
    assert_eq!(r.status(), 201);
    sha256(manifest.as_bytes())
}

/// Adds the administrator alice (password `alice-pass-1`) to the data dir `data`.
fn add_alice(data: &std::path::Path) {
    admin(
        data,
        &["user", "add", "alice", "--admin", "--password-stdin"],
        "alice-pass-1\n",
    );
}

fn registry_with_users() -> Registry {
    Registry::start_fresh(|data| {
        add_alice(data);
        admin(
            data,
            &["user", "add", "bob", "--password-stdin"],
            "bob-pass-1\n",
        );
    })
}

#[test]
fn sessions_csrf_and_visibility_over_http() {
    let reg = registry_with_users();
    push_with_history(&client_as("alice", "alice-pass-1"), &reg, "team/app");
    // Nothing without a session.
    let r = client().get(reg.url("/ui/")).send().expect("GET");
    assert_eq!(r.status(), 303);
    assert_eq!(
        reg_tests::header(&r, "location").as_deref(),
        Some("/ui/login")
    );
    // A login form that did not come from the page (no matching cookie) is refused.
    let r = browser()
        .post(reg.url("/ui/login"))
        .form(&[
            ("username", "alice"),
            ("password", "alice-pass-1"),
            ("csrf", "forged"),
        ])
        .send()
        .expect("POST");
    assert_eq!(r.status(), 403);

    let alice = browser();
    let csrf = log_in(&alice, &reg, "alice", "alice-pass-1");
    let page = alice.get(reg.url("/ui/login")).send().expect("login page");
    let cookie = reg_tests::header(&page, "set-cookie").unwrap_or_default();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let html = alice
        .get(reg.url("/ui/"))
        .send()
        .expect("repos")
        .text()
        .expect("html");
    assert!(html.contains("team/app"), "{html}");
    let html = alice
        .get(reg.url(&format!(
            "/ui/manifest?name=team/app&digest={}",
            push_with_history(&client_as("alice", "alice-pass-1"), &reg, "team/app")
        )))
        .send()
        .expect("manifest")
        .text()
        .expect("html");
    // What an image says is text, never markup.
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");

    // bob may not see alice's private repository: not listed, and its page is 404.
    let bob = browser();
    let bob_csrf = log_in(&bob, &reg, "bob", "bob-pass-1");
    let html = bob
        .get(reg.url("/ui/"))
        .send()
        .expect("repos")
        .text()
        .expect("html");
    assert!(!html.contains("team/app"), "{html}");
    let r = bob
        .get(reg.url("/ui/repo?name=team/app"))
        .send()
        .expect("repo");
    assert_eq!(r.status(), 404);

    // Tags: bob cannot delete alice's (403, even with his own valid token); alice can, and the
    // audit log (administrators only) records it.
    let r = bob
        .post(reg.url("/ui/tag/delete"))
        .form(&[
            ("csrf", bob_csrf.as_str()),
            ("name", "team/app"),
            ("tag", "v1"),
        ])
        .send()
        .expect("POST");
    assert_eq!(r.status(), 403);
    let html = alice
        .get(reg.url("/ui/repo?name=team/app"))
        .send()
        .expect("repo")
        .text()
        .expect("html");
    assert!(html.contains("aria-label=\"Delete tag v1\""), "{html}");
    let r = alice
        .post(reg.url("/ui/tag/delete"))
        .form(&[("csrf", "forged"), ("name", "team/app"), ("tag", "v1")])
        .send()
        .expect("POST");
    assert_eq!(r.status(), 403);
    let r = alice
        .post(reg.url("/ui/tag/delete"))
        .form(&[("csrf", csrf.as_str()), ("name", "team/app"), ("tag", "v1")])
        .send()
        .expect("POST");
    assert_eq!(r.status(), 303);
    let r = client_as("alice", "alice-pass-1")
        .get(reg.url("/v2/team/app/manifests/v1"))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 404, "the tag is gone");
    assert_eq!(
        bob.get(reg.url("/ui/admin/audit"))
            .send()
            .expect("GET")
            .status(),
        403
    );
    let audit = alice
        .get(reg.url("/ui/admin/audit?action=delete"))
        .send()
        .expect("audit")
        .text()
        .expect("html");
    assert!(
        audit.contains("team/app:v1") && !audit.contains("login.ui"),
        "{audit}"
    );

    // Logging out needs the session's CSRF token.
    let r = alice
        .post(reg.url("/ui/logout"))
        .form(&[("csrf", "wrong")])
        .send()
        .expect("logout");
    assert_eq!(r.status(), 403);
    let r = alice
        .post(reg.url("/ui/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .expect("logout");
    assert_eq!(r.status(), 303);
    let r = alice.get(reg.url("/ui/")).send().expect("GET");
    assert_eq!(
        reg_tests::header(&r, "location").as_deref(),
        Some("/ui/login")
    );
}

#[test]
fn a_browser_logs_in_browses_to_an_images_layers_and_logs_out() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromedriver"];
    let selenium = Command::new("python3")
        .args(["-c", "import selenium"])
        .status()
        .is_ok_and(|s| s.success());
    if !selenium || chromium.iter().any(|p| !std::path::Path::new(p).exists()) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium, chromium-driver and selenium are installed by .ci/run");
        }
        skip("headless Chromium with Selenium is not installed (apt-get install chromium chromium-driver; pip install selenium)");
        return;
    }
    let reg = registry_with_users();
    push_with_history(&client_as("alice", "alice-pass-1"), &reg, "team/app");
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ui/browse.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([
            &reg.url(""),
            "alice",
            "alice-pass-1",
            "team/app",
            &shots.display().to_string(),
        ])
        .output()
        .expect("python3 browse.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "ok: anonymous visit goes to the login page",
        "ok: a wrong password is refused",
        "ok: logged in, repositories listed",
        "ok: the manifest's layers and history",
        "ok: a token made, its secret shown once",
        "ok: the users page (administrators)",
        "ok: the storage page with its charts",
        "ok: logged out",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
    for page in [
        "login",
        "repositories",
        "tags",
        "manifest",
        "tokens",
        "users",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "screenshot {page}"
        );
    }
}

/// The secret shown once after a token is made (the `secret` input's value).
fn secret_of(html: &str) -> String {
    let needle = "id=\"secret\" readonly size=\"70\" value=\"";
    let at = html
        .find(needle)
        .unwrap_or_else(|| panic!("no secret in {html}"));
    let rest = &html[at + needle.len()..];
    let secret = rest[..rest.find('"').unwrap_or(0)].to_string();
    assert!(secret.len() > 20, "a secret: {secret:?}");
    secret
}

#[test]
fn tokens_made_in_the_ui_log_docker_in_until_revoked_and_admins_alone_change_visibility() {
    let reg = registry_with_users();
    let alice_api = client_as("alice", "alice-pass-1");
    reg_tests::push_layers(
        &alice_api,
        &reg,
        "team/app",
        "v1",
        &[reg_tests::tar_layer(&[reg_tests::LayerFile {
            path: "hello.txt",
            mode: 0o644,
            data: b"hello\n",
        }])],
    );
    let alice = browser();
    let csrf = log_in(&alice, &reg, "alice", "alice-pass-1");

    // A non-admin sees no admin page, and cannot change visibility even with a valid form.
    let bob = browser();
    let bob_csrf = log_in(&bob, &reg, "bob", "bob-pass-1");
    assert_eq!(
        bob.get(reg.url("/ui/admin/users"))
            .send()
            .expect("GET")
            .status(),
        403
    );
    let r = bob
        .post(reg.url("/ui/visibility"))
        .form(&[
            ("csrf", bob_csrf.as_str()),
            ("name", "team/app"),
            ("public", "true"),
        ])
        .send()
        .expect("POST");
    assert_eq!(r.status(), 403);
    let users = alice.get(reg.url("/ui/admin/users")).send().expect("GET");
    assert_eq!(users.status(), 200);
    assert!(users.text().expect("html").contains("bob"));

    // Visibility: anonymous pulls change with it; the form needs the session's token.
    let anon = client();
    let manifest = reg.url("/v2/team/app/manifests/v1");
    let accept = ("accept", "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        anon.get(&manifest)
            .header(accept.0, accept.1)
            .send()
            .expect("GET")
            .status(),
        401
    );
    let r = alice
        .post(reg.url("/ui/visibility"))
        .form(&[("csrf", "forged"), ("name", "team/app"), ("public", "true")])
        .send()
        .expect("POST");
    assert_eq!(r.status(), 403);
    let r = alice
        .post(reg.url("/ui/visibility"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "team/app"),
            ("public", "true"),
        ])
        .send()
        .expect("POST");
    assert_eq!(r.status(), 303);
    assert_eq!(
        anon.get(&manifest)
            .header(accept.0, accept.1)
            .send()
            .expect("GET")
            .status(),
        200
    );
    alice
        .post(reg.url("/ui/visibility"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "team/app"),
            ("public", "false"),
        ])
        .send()
        .expect("POST");
    assert_eq!(
        anon.get(&manifest)
            .header(accept.0, accept.1)
            .send()
            .expect("GET")
            .status(),
        401
    );

    // Users and organisations: an administrator adds a user and gives them a role in a new
    // organisation, and the new user can then pull from it; a non-admin can do none of it.
    assert_eq!(
        bob.get(reg.url("/ui/admin/orgs"))
            .send()
            .expect("GET")
            .status(),
        403
    );
    let r = bob
        .post(reg.url("/ui/admin/users"))
        .form(&[
            ("csrf", bob_csrf.as_str()),
            ("name", "mallory"),
            ("password", "mallory-pass-1"),
        ])
        .send()
        .expect("POST");
    assert_eq!(r.status(), 403);
    let html = alice
        .post(reg.url("/ui/admin/users"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "carol"),
            ("password", "short"),
        ])
        .send()
        .expect("POST")
        .text()
        .expect("html");
    assert!(html.contains("too short"), "{html}");
    let html = alice
        .post(reg.url("/ui/admin/users"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "carol"),
            ("password", "carol-pass-1"),
        ])
        .send()
        .expect("POST")
        .text()
        .expect("html");
    assert!(html.contains("User <strong>carol</strong> added"), "{html}");
    for (path, form) in [
        ("/ui/admin/orgs", vec![("name", "team")]),
        (
            "/ui/admin/orgs/member",
            vec![("org", "team"), ("user", "carol"), ("role", "read")],
        ),
    ] {
        let mut form = form;
        form.push(("csrf", csrf.as_str()));
        let r = alice.post(reg.url(path)).form(&form).send().expect("POST");
        assert_eq!(r.status(), 200, "{path}");
        let html = r.text().expect("html");
        assert!(!html.contains("role=\"alert\""), "{path}: {html}");
    }
    let orgs = alice
        .get(reg.url("/ui/admin/orgs"))
        .send()
        .expect("GET")
        .text()
        .expect("html");
    assert!(orgs.contains("carol (read)"), "{orgs}");
    let carol = client_as("carol", "carol-pass-1");
    assert_eq!(
        carol
            .get(&manifest)
            .header(accept.0, accept.1)
            .send()
            .expect("GET")
            .status(),
        200,
        "a read member pulls from the organisation"
    );
    let html = alice
        .post(reg.url("/ui/admin/users/remove"))
        .form(&[("csrf", csrf.as_str()), ("name", "carol")])
        .send()
        .expect("POST")
        .text()
        .expect("html");
    assert!(html.contains("carol</strong> removed"), "{html}");
    assert_eq!(
        carol
            .get(&manifest)
            .header(accept.0, accept.1)
            .send()
            .expect("GET")
            .status(),
        401
    );

    // Storage: charts and a dry run for administrators, 403 for others.
    assert_eq!(
        bob.get(reg.url("/ui/admin/storage"))
            .send()
            .expect("GET")
            .status(),
        403
    );
    let r = bob
        .post(reg.url("/ui/admin/storage"))
        .form(&[("csrf", bob_csrf.as_str()), ("run", "dry")])
        .send()
        .expect("POST");
    assert_eq!(r.status(), 403);
    let html = alice
        .get(reg.url("/ui/admin/storage"))
        .send()
        .expect("GET")
        .text()
        .expect("html");
    assert!(
        html.contains("<svg") && html.contains("team/app") && html.contains(">team<"),
        "{html}"
    );
    let html = alice
        .post(reg.url("/ui/admin/storage"))
        .form(&[("csrf", csrf.as_str()), ("run", "dry")])
        .send()
        .expect("POST")
        .text()
        .expect("html");
    assert!(html.contains("A collection now would remove"), "{html}");

    // A token: made in the UI (secret shown once), a working password until revoked.
    let page = alice
        .post(reg.url("/ui/tokens"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("scopes", "repository:team/app:pull"),
            ("expires", "1d"),
        ])
        .send()
        .expect("POST")
        .text()
        .expect("html");
    let secret = secret_of(&page);
    let id = field(&page, "id");
    let again = alice
        .get(reg.url("/ui/tokens"))
        .send()
        .expect("GET")
        .text()
        .expect("html");
    assert!(!again.contains(&secret), "the secret is shown once");
    assert!(again.contains("repository:team/app:pull"), "{again}");
    let token_api = client_as("alice", &secret);
    assert_eq!(
        token_api
            .get(&manifest)
            .header(accept.0, accept.1)
            .send()
            .expect("GET")
            .status(),
        200
    );

    let host = reg.url("").trim_start_matches("http://").to_string();
    let docker_cfg = tempfile::tempdir().expect("docker config");
    let docker = |args: &[&str], input: &str| -> (bool, String) {
        use std::io::Write as _;
        let mut child = Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", docker_cfg.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker");
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(input.as_bytes());
        }
        let out = child.wait_with_output().expect("docker");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let with_docker = reg_tests::docker_ready();
    let image = format!("{host}/team/app:v1");
    let _cleanup = reg_tests::DockerImages(vec![image.clone()]);
    if with_docker {
        let (ok, out) = docker(
            &["login", "-u", "alice", "--password-stdin", &host],
            &secret,
        );
        assert!(ok, "docker login with the token: {out}");
        let (ok, out) = docker(&["pull", &image], "");
        assert!(ok, "docker pull with the token: {out}");
    }

    let r = alice
        .post(reg.url("/ui/tokens/revoke"))
        .form(&[("csrf", csrf.as_str()), ("id", id.as_str())])
        .send()
        .expect("POST");
    assert_eq!(r.status(), 200);
    assert!(r.text().expect("html").contains("revoked"));
    assert_eq!(
        token_api
            .get(&manifest)
            .header(accept.0, accept.1)
            .send()
            .expect("GET")
            .status(),
        401
    );
    // bob cannot revoke alice's tokens.
    let r = bob
        .post(reg.url("/ui/tokens/revoke"))
        .form(&[("csrf", bob_csrf.as_str()), ("id", id.as_str())])
        .send()
        .expect("POST");
    assert_eq!(r.status(), 403);
    if with_docker {
        let (ok, out) = docker(&["pull", &image], "");
        assert!(!ok, "docker pull with a revoked token must fail: {out}");
    }
}

/// `reg serve` as root: administrators see the node's containers, images and a container's
/// log tail (escaped); other users get 403; `reg registry serve` has no node to show.
#[test]
fn administrators_see_the_local_nodes_containers_images_and_log_tail() {
    let Some(n) = shared_node::node() else {
        return;
    };
    let script =
        shared_node::sh("echo '<b>hello from the node view</b>'; exec /bin/busybox sleep 300");
    let id = n.run_d(&shared_node::args(
        &["--name", "ui-web", shared_node::IMG],
        &script,
    ));
    shared_node::wait_until("the container logged its line", || {
        n.reg(&["logs", "ui-web"])
            .1
            .contains("hello from the node view")
    });
    // Users added while it serves: authentication is on from the next request.
    let data = n.tmp.path();
    add_alice(data);
    admin(
        data,
        &["user", "add", "bob", "--password-stdin"],
        "bob-pass-1\n",
    );
    // (The registry reads whether it has users at most once a second.)
    shared_node::wait_until("authentication is on", || {
        client()
            .get(n.server.url("/v2/"))
            .send()
            .is_ok_and(|r| r.status() == 401)
    });

    let c = browser();
    log_in(&c, &n.server, "alice", "alice-pass-1");
    let html = c
        .get(n.server.url("/ui/admin/node"))
        .send()
        .expect("node page")
        .text()
        .expect("html");
    assert!(html.contains(">ui-web</a>"), "{html}");
    assert!(html.contains(&id[..12]), "{html}");
    assert!(html.contains("<td>running</td>"), "{html}");
    assert!(html.contains("<td>Up "), "{html}");
    assert!(html.contains(shared_node::IMG), "{html}");
    assert!(html.contains("Images (1)"), "{html}");
    let html = c
        .get(n.server.url(&format!("/ui/admin/node/logs?id={id}")))
        .send()
        .expect("log page")
        .text()
        .expect("html");
    assert!(
        html.contains("&lt;b&gt;hello from the node view&lt;/b&gt;"),
        "{html}"
    );
    let r = c
        .get(n.server.url("/ui/admin/node/logs?id=no-such-container"))
        .send()
        .expect("log page");
    assert_eq!(r.status(), 404);
    let html = r.text().expect("html");
    assert!(
        html.contains("no such container: no-such-container"),
        "{html}"
    );

    let c = browser();
    log_in(&c, &n.server, "bob", "bob-pass-1");
    for path in ["/ui/admin/node", &format!("/ui/admin/node/logs?id={id}")] {
        let r = c.get(n.server.url(path)).send().expect("node page");
        assert_eq!(r.status(), 403, "{path}");
        assert!(!r.text().expect("html").contains("hello from the node view"));
    }

    let reg = registry_with_users();
    let c = browser();
    log_in(&c, &reg, "alice", "alice-pass-1");
    let html = c
        .get(reg.url("/ui/admin/node"))
        .send()
        .expect("node page")
        .text()
        .expect("html");
    assert!(html.contains("No node runs beside this registry"), "{html}");
}

/// A manifest deleted by digest from its page takes every tag naming it, as the API's DELETE
/// does; not when an immutable tag names it, nor for a user who may not delete, nor without
/// the session's CSRF token.
#[test]
fn a_manifest_is_deleted_by_digest_with_its_tags_unless_an_immutable_tag_names_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    add_alice(&data);
    admin(
        &data,
        &["user", "add", "bob", "--password-stdin"],
        "bob-pass-1\n",
    );
    let cfg = tmp.path().join("reg.toml");
    std::fs::write(
        &cfg,
        "[[registry.retention]]\nrepositories = \"keep/*\"\nimmutable_tags = \"v*\"\n",
    )
    .expect("config");
    let cfg = cfg.display().to_string();
    let reg = Registry::start_on(&data, &[("REG_CONFIG", cfg.as_str())]);
    let api = client_as("alice", "alice-pass-1");
    let mut digests = Vec::new();
    for repo in ["team/app", "keep/app"] {
        let d = push_with_history(&api, &reg, repo);
        let body = api
            .get(reg.url(&format!("/v2/{repo}/manifests/v1")))
            .header("accept", OCI_MANIFEST)
            .send()
            .expect("GET")
            .bytes()
            .expect("body");
        let r = api
            .put(reg.url(&format!("/v2/{repo}/manifests/latest")))
            .header("content-type", OCI_MANIFEST)
            .body(body)
            .send()
            .expect("PUT");
        assert_eq!(r.status(), 201);
        digests.push(d);
    }
    let page = |repo: &str, d: &str| format!("/ui/manifest?name={repo}&digest={d}");
    let form = |csrf: &str, repo: &str, d: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("name", repo.to_string()),
            ("digest", d.to_string()),
        ]
    };

    let bob = browser();
    let bob_csrf = log_in(&bob, &reg, "bob", "bob-pass-1");
    let r = bob
        .post(reg.url("/ui/manifest/delete"))
        .form(&form(&bob_csrf, "team/app", &digests[0]))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 403);

    let alice = browser();
    let csrf = log_in(&alice, &reg, "alice", "alice-pass-1");
    let html = alice
        .get(reg.url(&page("team/app", &digests[0])))
        .send()
        .expect("manifest page")
        .text()
        .expect("html");
    assert!(html.contains("action=\"/ui/manifest/delete\""), "{html}");
    let r = alice
        .post(reg.url("/ui/manifest/delete"))
        .form(&form("forged", "team/app", &digests[0]))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 403);
    let r = alice
        .post(reg.url("/ui/manifest/delete"))
        .form(&form(&csrf, "keep/app", &digests[1]))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 403);
    assert!(r
        .text()
        .expect("html")
        .contains("Tag v1 names this manifest and is immutable"));
    let r = alice
        .post(reg.url("/ui/manifest/delete"))
        .form(&form(&csrf, "team/app", &digests[0]))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 303);

    // Gone by digest and by both tags in team/app; keep/app untouched.
    for (repo, reference, status) in [
        ("team/app", digests[0].as_str(), 404),
        ("team/app", "v1", 404),
        ("team/app", "latest", 404),
        ("keep/app", digests[1].as_str(), 200),
        ("keep/app", "latest", 200),
    ] {
        let r = api
            .get(reg.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .expect("GET");
        assert_eq!(r.status(), status, "{repo}:{reference}");
    }
    let audit = alice
        .get(reg.url("/ui/admin/audit?action=delete"))
        .send()
        .expect("audit")
        .text()
        .expect("html");
    assert!(
        audit.contains(&format!("team/app@{}", digests[0])) && audit.contains("web interface"),
        "{audit}"
    );
}

/// A repository's tags say who pushed each and when its manifest was last pulled; pulls are
/// written in batches, and the ones noted since the last batch at a graceful stop.
#[test]
fn tags_show_who_pushed_them_and_when_they_were_last_pulled() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    add_alice(&data);
    let mut reg = Registry::start_on(&data, &[]);
    let api = client_as("alice", "alice-pass-1");
    push_with_history(&api, &reg, "team/app");
    let tags = |reg: &Registry| {
        let c = browser();
        log_in(&c, reg, "alice", "alice-pass-1");
        c.get(reg.url("/ui/repo?name=team/app"))
            .send()
            .expect("repo")
            .text()
            .expect("html")
    };
    let html = tags(&reg);
    assert!(
        html.contains("<td>alice</td><td>never</td>"),
        "pushed by alice, never pulled: {html}"
    );
    let r = api
        .get(reg.url("/v2/team/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .expect("pull");
    assert_eq!(r.status(), 200);
    assert!(reg.terminate().success());
    let reg = Registry::start_on(&data, &[]);
    let html = tags(&reg);
    assert!(
        html.contains("<td>alice</td><td>20") && !html.contains("<td>never</td>"),
        "the pull was written at the stop: {html}"
    );
}

/// An organisation's admins manage their organisation from the browser (members' roles, its
/// repositories' visibility) and nothing else: not other organisations, not new ones.
#[test]
fn organisation_admins_manage_their_organisation_only() {
    let reg = Registry::start_fresh(|data| {
        add_alice(data);
        for u in ["bob", "carol", "dave"] {
            admin(
                data,
                &["user", "add", u, "--password-stdin"],
                &format!("{u}-pass-1\n"),
            );
        }
        for o in ["team", "other"] {
            admin(data, &["org", "add", o], "");
        }
        admin(
            data,
            &["org", "member", "team", "carol", "--role", "admin"],
            "",
        );
    });
    let api = client_as("alice", "alice-pass-1");
    push_with_history(&api, &reg, "team/app");
    push_with_history(&api, &reg, "other/app");

    let bob = browser();
    log_in(&bob, &reg, "bob", "bob-pass-1");
    let r = bob.get(reg.url("/ui/admin/orgs")).send().expect("orgs");
    assert_eq!(r.status(), 403);

    let carol = browser();
    let csrf = log_in(&carol, &reg, "carol", "carol-pass-1");
    let html = carol
        .get(reg.url("/ui/admin/orgs"))
        .send()
        .expect("orgs")
        .text()
        .expect("html");
    assert!(html.contains("<td>team</td>"), "{html}");
    assert!(!html.contains("<td>other</td>"), "{html}");
    assert!(!html.contains("New organisation"), "{html}");
    let member = |org: &str| {
        carol
            .post(reg.url("/ui/admin/orgs/member"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("org", org),
                ("user", "dave"),
                ("role", "write"),
            ])
            .send()
            .expect("member")
    };
    assert_eq!(member("other").status(), 403);
    assert_eq!(member("team").status(), 200);
    let dave = client_as("dave", "dave-pass-1");
    let pull = |c: &reqwest::blocking::Client, repo: &str| {
        c.get(reg.url(&format!("/v2/{repo}/manifests/v1")))
            .header("accept", OCI_MANIFEST)
            .send()
            .expect("pull")
            .status()
    };
    assert_eq!(pull(&dave, "team/app"), 200, "dave got write in team");
    assert_eq!(pull(&dave, "other/app"), 403);
    let r = carol
        .post(reg.url("/ui/admin/orgs"))
        .form(&[("csrf", csrf.as_str()), ("name", "mine")])
        .send()
        .expect("create");
    assert_eq!(
        r.status(),
        403,
        "creating organisations is for administrators"
    );

    // Visibility: on her organisation's repository page, not on another's.
    let html = carol
        .get(reg.url("/ui/repo?name=team/app"))
        .send()
        .expect("repo")
        .text()
        .expect("html");
    assert!(html.contains("id=\"visibility\""), "{html}");
    let visibility = |repo: &str| {
        carol
            .post(reg.url("/ui/visibility"))
            .form(&[("csrf", csrf.as_str()), ("name", repo), ("public", "true")])
            .send()
            .expect("visibility")
            .status()
    };
    assert_eq!(visibility("other/app"), 403);
    assert_eq!(pull(&client(), "team/app"), 401);
    assert_eq!(visibility("team/app"), 303);
    assert_eq!(
        pull(&client(), "team/app"),
        200,
        "anonymous pull once public"
    );
    assert_eq!(pull(&client(), "other/app"), 401);
    let html = carol
        .get(reg.url("/ui/"))
        .send()
        .expect("repos")
        .text()
        .expect("html");
    assert!(
        html.contains(">team/app</a></td><td>team</td><td>public</td>"),
        "namespace and visibility listed: {html}"
    );

    // The audit log, of her organisation only.
    let audit = carol
        .get(reg.url("/ui/admin/audit"))
        .send()
        .expect("audit")
        .text()
        .expect("html");
    assert!(
        audit.contains("org.member") && audit.contains("team/dave"),
        "{audit}"
    );
    assert!(audit.contains("repo.visibility"), "{audit}");
    assert!(!audit.contains("other/"), "nothing of other: {audit}");
    assert_eq!(
        bob.get(reg.url("/ui/admin/audit"))
            .send()
            .expect("audit")
            .status(),
        403
    );
}

/// Sessions live in the database: they survive a restart, and end at once when the user's
/// password changes or the user is removed.
#[test]
fn sessions_survive_a_restart_and_end_with_a_new_password_or_the_user() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    add_alice(&data);
    admin(
        &data,
        &["user", "add", "bob", "--password-stdin"],
        "bob-pass-1\n",
    );
    let mut reg = Registry::start_on(&data, &[]);
    let (alice, bob) = (browser(), browser());
    log_in(&alice, &reg, "alice", "alice-pass-1");
    log_in(&bob, &reg, "bob", "bob-pass-1");
    let signed_in = |c: &reqwest::blocking::Client, reg: &Registry| {
        c.get(reg.url("/ui/tokens")).send().expect("GET").status() == 200
    };
    assert!(signed_in(&alice, &reg) && signed_in(&bob, &reg));
    assert!(reg.terminate().success());
    let reg = Registry::start_on(&data, &[]);
    assert!(
        signed_in(&alice, &reg) && signed_in(&bob, &reg),
        "kept over a restart"
    );

    admin(
        &data,
        &["user", "passwd", "bob", "--password-stdin"],
        "bob-pass-2\n",
    );
    assert!(!signed_in(&bob, &reg), "a new password ends bob's session");
    assert!(signed_in(&alice, &reg));
    // (Never the last administrator.)
    admin(
        &data,
        &["user", "add", "carol", "--admin", "--password-stdin"],
        "carol-pass-1\n",
    );
    admin(&data, &["user", "rm", "alice"], "");
    assert!(!signed_in(&alice, &reg), "a removed user's session ends");
    admin(
        &data,
        &["user", "add", "alice", "--password-stdin"],
        "alice-pass-9\n",
    );
    assert!(
        !signed_in(&alice, &reg),
        "a new user of the same name does not inherit the old one's session"
    );
}

/// Passwords and administrator rights change from the browser: a user's own password (the
/// current one checked; this browser stays signed in, the user's other sessions end), an
/// administrator's reset of another's, and rights granted and taken (never one's own).
#[test]
fn passwords_and_admin_rights_change_from_the_browser() {
    let reg = registry_with_users();
    let alice = browser();
    let csrf = log_in(&alice, &reg, "alice", "alice-pass-1");
    let (bob, bob_elsewhere) = (browser(), browser());
    let bob_csrf = log_in(&bob, &reg, "bob", "bob-pass-1");
    log_in(&bob_elsewhere, &reg, "bob", "bob-pass-1");
    let status = |c: &reqwest::blocking::Client, path: &str| {
        c.get(reg.url(path)).send().expect("GET").status().as_u16()
    };
    let api_login = |user: &str, password: &str| {
        client_as(user, password)
            .get(reg.url("/v2/"))
            .send()
            .expect("GET /v2/")
            .status()
            .as_u16()
    };

    // Rights: granted, refused on oneself, taken.
    let users = alice
        .get(reg.url("/ui/admin/users"))
        .send()
        .expect("users")
        .text()
        .expect("html");
    assert!(
        users.contains("aria-label=\"Make administrator bob\""),
        "{users}"
    );
    let rights = |who: &str, admin: &str| {
        alice
            .post(reg.url("/ui/admin/users/admin"))
            .form(&[("csrf", csrf.as_str()), ("name", who), ("admin", admin)])
            .send()
            .expect("POST")
            .text()
            .expect("html")
    };
    assert_eq!(status(&bob, "/ui/admin/users"), 403);
    assert!(rights("bob", "true").contains("is an administrator now"));
    assert_eq!(status(&bob, "/ui/admin/users"), 200);
    assert!(rights("alice", "false").contains("You cannot change your own rights"));
    assert!(rights("bob", "false").contains("is a user now"));
    assert_eq!(status(&bob, "/ui/admin/users"), 403);

    // Bob's own password.
    let change = |current: &str, new: &str, confirm: &str| {
        bob.post(reg.url("/ui/account/password"))
            .form(&[
                ("csrf", bob_csrf.as_str()),
                ("current", current),
                ("password", new),
                ("confirm", confirm),
            ])
            .send()
            .expect("POST")
            .status()
            .as_u16()
    };
    assert_eq!(change("wrong-pass", "bob-pass-2", "bob-pass-2"), 401);
    assert_eq!(change("bob-pass-1", "bob-pass-2", "bob-pass-3"), 400);
    assert_eq!(change("bob-pass-1", "short", "short"), 400);
    assert_eq!(change("bob-pass-1", "bob-pass-2", "bob-pass-2"), 200);
    assert_eq!(
        status(&bob, "/ui/account"),
        200,
        "this browser stays signed in"
    );
    assert_eq!(
        status(&bob_elsewhere, "/ui/account"),
        303,
        "bob's other session ended"
    );
    assert_eq!(api_login("bob", "bob-pass-1"), 401);
    assert_eq!(api_login("bob", "bob-pass-2"), 200);

    // An administrator resets it; a user may not.
    let reset = |c: &reqwest::blocking::Client, token: &str, who: &str| {
        c.post(reg.url("/ui/admin/users/password"))
            .form(&[("csrf", token), ("name", who), ("password", "reset-pass-1")])
            .send()
            .expect("POST")
            .status()
            .as_u16()
    };
    let bob_csrf = field(
        &bob.get(reg.url("/ui/account"))
            .send()
            .expect("account")
            .text()
            .expect("html"),
        "csrf",
    );
    assert_eq!(reset(&bob, &bob_csrf, "alice"), 403);
    assert_eq!(reset(&alice, &csrf, "bob"), 200);
    assert_eq!(
        status(&bob, "/ui/account"),
        303,
        "a reset ends bob's sessions"
    );
    assert_eq!(api_login("bob", "bob-pass-2"), 401);
    assert_eq!(api_login("bob", "reset-pass-1"), 200);
    let audit = alice
        .get(reg.url("/ui/admin/audit?action=user."))
        .send()
        .expect("audit")
        .text()
        .expect("html");
    for action in ["user.admin", "user.unadmin", "user.passwd"] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
}

/// Retention rules added in the browser: checked like the configuration's, listed after them,
/// immutable tags refused at once, and the collector (`reg registry gc`, another process)
/// applies them; removed, they stop holding.
#[test]
fn retention_rules_added_in_the_browser_hold_at_once_and_drive_the_collector() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    add_alice(&data);
    let cfg = tmp.path().join("reg.toml");
    std::fs::write(
        &cfg,
        "[[registry.retention]]\nrepositories = \"cfg/*\"\nimmutable_tags = \"rel-*\"\n",
    )
    .expect("config");
    let cfg = cfg.display().to_string();
    let reg = Registry::start_on(&data, &[("REG_CONFIG", cfg.as_str())]);
    let api = client_as("alice", "alice-pass-1");
    push_with_history(&api, &reg, "team/app");
    let manifest = api
        .get(reg.url("/v2/team/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .expect("GET")
        .bytes()
        .expect("body");
    let tag = |t: &str| {
        api.put(reg.url(&format!("/v2/team/app/manifests/{t}")))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .expect("PUT")
            .status()
            .as_u16()
    };
    let alice = browser();
    let csrf = log_in(&alice, &reg, "alice", "alice-pass-1");
    let add = |repositories: &str, keep_last: &str, keep_newer_than: &str, immutable: &str| {
        alice
            .post(reg.url("/ui/admin/retention"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("repositories", repositories),
                ("keep_last", keep_last),
                ("keep_newer_than", keep_newer_than),
                ("immutable_tags", immutable),
            ])
            .send()
            .expect("POST")
            .text()
            .expect("html")
    };
    assert!(add("team/*", "1", "7 parsecs", "").contains("The rule was not added"));
    assert!(add("team/[", "1", "", "").contains("The rule was not added"));
    let html = add("team/*", "1", "", "v*");
    assert!(
        html.contains("Rule 1 for <code>team/*</code> added"),
        "{html}"
    );
    assert!(
        html.contains("<td><code>cfg/*</code></td>"),
        "the configuration's rule: {html}"
    );

    // v1 is immutable from now on; other tags are not.
    assert_eq!(tag("v1"), 201, "the same manifest again is no change");
    let other = push_other(&api, &reg);
    let r = api
        .put(reg.url("/v2/team/app/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(other)
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 403, "immutable at once");
    assert_eq!(tag("t1"), 201);
    assert_eq!(tag("t2"), 201);

    // The collector, another process, keeps v1 (immutable) and one other tag, the newest.
    let out = reg_tests::reg_on(&data)
        .args(["--config", &cfg, "registry", "gc", "--dry-run", "--data"])
        .arg(&data)
        .output()
        .expect("gc");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    // (t1 and t2 may share a second: which of them is newer is not asserted.)
    assert!(
        out.contains("would remove 1 tags") && !out.contains("team/app:v1"),
        "{out}"
    );

    // Removed, the rule stops holding.
    let html = alice
        .post(reg.url("/ui/admin/retention/remove"))
        .form(&[("csrf", csrf.as_str()), ("id", "1")])
        .send()
        .expect("POST")
        .text()
        .expect("html");
    assert!(html.contains("Rule 1 removed"), "{html}");
    let r = api
        .delete(reg.url("/v2/team/app/manifests/v1"))
        .send()
        .expect("DELETE");
    assert_eq!(r.status(), 202);
}

/// Pushes a second, different image to team/app (untagged); its manifest.
fn push_other(c: &reqwest::blocking::Client, reg: &Registry) -> String {
    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
    let cd = push_blob(c, reg, "team/app", config);
    serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [],
    })
    .to_string()
}

/// Forms are read whole, so their bodies are capped: a huge login is refused (413) before
/// it is read, and blob uploads (streamed) are not affected.
#[test]
fn form_bodies_are_capped() {
    let reg = registry_with_users();
    let big = "a".repeat(1 << 20);
    let r = browser()
        .post(reg.url("/ui/login"))
        .form(&[
            ("username", "alice"),
            ("password", big.as_str()),
            ("csrf", "x"),
        ])
        .send()
        .expect("POST");
    assert_eq!(r.status(), 413);
    let d = push_blob(
        &client_as("alice", "alice-pass-1"),
        &reg,
        "team/big",
        &vec![7u8; 1 << 20],
    );
    assert_eq!(d, sha256(&vec![7u8; 1 << 20]));
}
