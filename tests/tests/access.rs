//! Access control against the real binary: who may do what on public and private repositories,
//! with the exact 401-vs-403 answer, over Docker's token flow, Basic auth and access tokens; and
//! real docker/skopeo logging in.

use std::path::Path;
use std::process::Command;

use reg_tests::*;

const PW: &str = "correct horse battery";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Anonymous,
    Outsider,
    Reader,
    Writer,
    OrgAdmin,
    ScopedToken,
    ExpiredToken,
    RevokedToken,
    TamperedToken,
}

const ALL: [Who; 9] = [
    Who::Anonymous,
    Who::Outsider,
    Who::Reader,
    Who::Writer,
    Who::OrgAdmin,
    Who::ScopedToken,
    Who::ExpiredToken,
    Who::RevokedToken,
    Who::TamperedToken,
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    GetManifest,
    HeadManifest,
    GetBlob,
    ListTags,
    Referrers,
    PushBlob,
    MountFrom,
    PushManifest,
    DeleteTag,
    DeleteManifest,
}

const ACTIONS: [Action; 10] = [
    Action::GetManifest,
    Action::HeadManifest,
    Action::GetBlob,
    Action::ListTags,
    Action::Referrers,
    Action::PushBlob,
    Action::MountFrom,
    Action::PushManifest,
    Action::DeleteTag,
    Action::DeleteManifest,
];

struct Fixture {
    reg: Registry,
    _tmp: tempfile::TempDir,
    tokens: std::collections::HashMap<&'static str, String>,
    /// (config digest, layer digest, manifest digest) per repository.
    content: std::collections::HashMap<&'static str, (String, String, String)>,
}

fn setup() -> Fixture {
    setup_with(true)
}

fn setup_with(fast: bool) -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let pw = format!("{PW}\n");
    admin(
        d,
        &["user", "add", "root", "--admin", "--password-stdin"],
        &pw,
    );
    for u in ["outsider", "reader", "writer", "orgadmin"] {
        admin(d, &["user", "add", u, "--password-stdin"], &pw);
    }
    admin(d, &["org", "add", "team"], "");
    admin(
        d,
        &["org", "member", "team", "reader", "--role", "read"],
        "",
    );
    admin(
        d,
        &["org", "member", "team", "writer", "--role", "write"],
        "",
    );
    admin(
        d,
        &["org", "member", "team", "orgadmin", "--role", "admin"],
        "",
    );
    admin(d, &["repo", "visibility", "team/public", "public"], "");
    let mut tokens = std::collections::HashMap::new();
    let scoped = admin(
        d,
        &[
            "token",
            "create",
            "--user",
            "writer",
            "--scope",
            "repository:team/private:pull",
        ],
        "",
    );
    tokens.insert("scoped", scoped.trim().to_string());
    let expired = admin(
        d,
        &[
            "token",
            "create",
            "--user",
            "writer",
            "--scope",
            "repository:team/*:pull,push",
            "--expires",
            "1s",
        ],
        "",
    );
    tokens.insert("expired", expired.trim().to_string());
    let revoked = admin(
        d,
        &[
            "token",
            "create",
            "--user",
            "writer",
            "--scope",
            "repository:team/*:pull,push",
        ],
        "",
    );
    tokens.insert("revoked", revoked.trim().to_string());
    let id = revoked
        .trim()
        .trim_start_matches("reg_")
        .split('_')
        .next()
        .expect("token id")
        .to_string();
    admin(d, &["token", "revoke", &id], "");

    // Failed logins are part of the matrix: keep their penalty short here (its own test uses the default).
    let reg = Registry::start_on(
        d,
        &[(
            "REG_REGISTRY_LOGIN_FAILURE_DELAY_MS",
            if fast { "1" } else { "100" },
        )],
    );
    let c = client();
    let mut content = std::collections::HashMap::new();
    for repo in ["team/public", "team/private"] {
        let s = As::basic("root");
        let cfg = format!("{{\"repo\":\"{repo}\"}}");
        let layer = format!("layer of {repo}");
        let cd = s.push_blob(&c, &reg, repo, cfg.as_bytes());
        let ld = s.push_blob(&c, &reg, repo, layer.as_bytes());
        let m = image_manifest((&cd, cfg.len()), &[(&ld, layer.len())]);
        let r = s.send(
            &c,
            &reg,
            "PUT",
            &format!("/v2/{repo}/manifests/v1"),
            Some(m.clone()),
            &[&format!("repository:{repo}:push")],
        );
        assert_eq!(r.0, 201, "seed {repo}");
        content.insert(repo, (cd, ld, sha256(m.as_bytes())));
    }
    // Let the 1-second token expire.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    Fixture {
        reg,
        _tmp: tmp,
        tokens,
        content,
    }
}

/// How a caller authenticates.
#[derive(Clone)]
enum Cred {
    None,
    /// Docker's flow: Basic credentials at the token endpoint, then a bearer token.
    TokenFlow(String, String),
    /// Basic credentials on every request.
    Basic(String, String),
    /// A fixed bearer token (e.g. a tampered one).
    RawBearer(String),
}

struct As {
    cred: Cred,
}

impl As {
    fn token_flow(user: &str, password: &str) -> As {
        As {
            cred: Cred::TokenFlow(user.into(), password.into()),
        }
    }
    fn basic(user: &str) -> As {
        As {
            cred: Cred::Basic(user.into(), PW.into()),
        }
    }

    /// Sends one request; for the token flow first gets a token for `scopes`.
    fn send(
        &self,
        c: &Client,
        reg: &Registry,
        method: &str,
        path: &str,
        body: Option<String>,
        scopes: &[&str],
    ) -> (u16, String, Option<String>) {
        let mut req = c.request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            reg.url(path),
        );
        match &self.cred {
            Cred::None => {
                if let Some(t) = bearer(c, reg, None, scopes) {
                    req = req.bearer_auth(t);
                }
            }
            Cred::TokenFlow(u, p) => match bearer(c, reg, Some((u, p)), scopes) {
                Some(t) => req = req.bearer_auth(t),
                None => {
                    return (
                        401,
                        "token endpoint refused the credentials".into(),
                        Some("Basic realm=\"reg\"".into()),
                    )
                }
            },
            Cred::Basic(u, p) => req = req.basic_auth(u, Some(p)),
            Cred::RawBearer(t) => req = req.bearer_auth(t),
        }
        if let Some(b) = body {
            req = req.header("content-type", OCI_MANIFEST).body(b);
        }
        let r = req.send().expect("request");
        let status = r.status().as_u16();
        let challenge = header(&r, "www-authenticate");
        (status, r.text().unwrap_or_default(), challenge)
    }

    fn push_blob(&self, c: &Client, reg: &Registry, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let scope = format!("repository:{repo}:pull,push");
        let mut req = c
            .post(reg.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
            .body(data.to_vec());
        match &self.cred {
            Cred::Basic(u, p) => req = req.basic_auth(u, Some(p)),
            Cred::TokenFlow(u, p) => {
                req = req.bearer_auth(bearer(c, reg, Some((u, p)), &[&scope]).expect("token"))
            }
            _ => {}
        }
        let r = req.send().expect("push blob");
        assert_eq!(r.status(), 201, "push blob to {repo}");
        d
    }
}

fn caller(f: &Fixture, who: Who) -> As {
    match who {
        Who::Anonymous => As { cred: Cred::None },
        Who::Outsider => As::token_flow("outsider", PW),
        Who::Reader => As::token_flow("reader", PW),
        Who::Writer => As::token_flow("writer", PW),
        Who::OrgAdmin => As::token_flow("orgadmin", PW),
        Who::ScopedToken => As::token_flow("writer", &f.tokens["scoped"]),
        Who::ExpiredToken => As::token_flow("writer", &f.tokens["expired"]),
        Who::RevokedToken => As::token_flow("writer", &f.tokens["revoked"]),
        Who::TamperedToken => {
            // A real token of the writer whose payload was edited to claim more: the signature no longer matches.
            let c = client();
            let t = bearer(
                &c,
                &f.reg,
                Some(("writer", PW)),
                &["repository:team/private:pull"],
            )
            .expect("token");
            let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
            parts[1] = parts[1].replacen('A', "B", 1);
            As {
                cred: Cred::RawBearer(parts.join(".")),
            }
        }
    }
}

/// The namespace a caller owns (for mount targets).
fn own(who: Who) -> &'static str {
    match who {
        Who::Outsider => "outsider",
        Who::Reader => "reader",
        Who::OrgAdmin => "orgadmin",
        Who::Anonymous => "anon",
        _ => "writer",
    }
}

/// (pull, push, delete, authenticated) of `who` on a repository of the `team` organisation.
fn rights(who: Who, public: bool) -> (bool, bool, bool, bool) {
    match who {
        Who::Anonymous => (public, false, false, false),
        Who::Outsider => (public, false, false, true),
        Who::Reader => (true, false, false, true),
        Who::Writer => (true, true, false, true),
        Who::OrgAdmin => (true, true, true, true),
        Who::ScopedToken => (true, false, false, true),
        Who::ExpiredToken | Who::RevokedToken | Who::TamperedToken => (false, false, false, false),
    }
}

fn expected(who: Who, public: bool, action: Action) -> u16 {
    let (pull, push, delete, authed) = rights(who, public);
    let deny = if authed { 403 } else { 401 };
    let (allowed, ok) = match action {
        Action::GetManifest
        | Action::HeadManifest
        | Action::GetBlob
        | Action::ListTags
        | Action::Referrers => (pull, 200),
        Action::PushBlob => (push, 202),
        Action::PushManifest => (push, 201),
        Action::DeleteTag | Action::DeleteManifest => (delete, 202),
        Action::MountFrom => {
            // Pushing into one's own namespace: every real user may; a scoped token only within its scopes.
            let can_push_own = authed && who != Who::ScopedToken;
            if !can_push_own {
                return deny;
            }
            return if pull { 201 } else { 202 };
        }
    };
    if allowed {
        ok
    } else {
        deny
    }
}

fn attempt(
    f: &Fixture,
    who: Who,
    repo: &'static str,
    action: Action,
) -> (u16, String, Option<String>) {
    let c = client();
    let s = caller(f, who);
    let root = As::basic("root");
    let (cd, ld, md) = f.content[repo].clone();
    let pull = format!("repository:{repo}:pull");
    let push = format!("repository:{repo}:pull,push");
    let del = format!("repository:{repo}:delete");
    match action {
        Action::GetManifest => s.send(
            &c,
            &f.reg,
            "GET",
            &format!("/v2/{repo}/manifests/v1"),
            None,
            &[&pull],
        ),
        Action::HeadManifest => s.send(
            &c,
            &f.reg,
            "HEAD",
            &format!("/v2/{repo}/manifests/{md}"),
            None,
            &[&pull],
        ),
        Action::GetBlob => s.send(
            &c,
            &f.reg,
            "GET",
            &format!("/v2/{repo}/blobs/{ld}"),
            None,
            &[&pull],
        ),
        Action::ListTags => s.send(
            &c,
            &f.reg,
            "GET",
            &format!("/v2/{repo}/tags/list"),
            None,
            &[&pull],
        ),
        Action::Referrers => s.send(
            &c,
            &f.reg,
            "GET",
            &format!("/v2/{repo}/referrers/{md}"),
            None,
            &[&pull],
        ),
        Action::PushBlob => s.send(
            &c,
            &f.reg,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            None,
            &[&push],
        ),
        Action::MountFrom => {
            let target = format!("{}/mnt", own(who));
            let tscope = format!("repository:{target}:pull,push");
            s.send(
                &c,
                &f.reg,
                "POST",
                &format!("/v2/{target}/blobs/uploads/?mount={ld}&from={repo}"),
                None,
                &[&tscope, &pull],
            )
        }
        Action::PushManifest => {
            let m = image_manifest(
                (&cd, format!("{{\"repo\":\"{repo}\"}}").len()),
                &[(&ld, format!("layer of {repo}").len())],
            );
            s.send(
                &c,
                &f.reg,
                "PUT",
                &format!("/v2/{repo}/manifests/by-{who:?}").to_lowercase(),
                Some(m),
                &[&push],
            )
        }
        Action::DeleteTag => {
            let tag = format!("del-{who:?}").to_lowercase();
            let m = image_manifest(
                (&cd, format!("{{\"repo\":\"{repo}\"}}").len()),
                &[(&ld, format!("layer of {repo}").len())],
            );
            assert_eq!(
                root.send(
                    &c,
                    &f.reg,
                    "PUT",
                    &format!("/v2/{repo}/manifests/{tag}"),
                    Some(m),
                    &[]
                )
                .0,
                201
            );
            s.send(
                &c,
                &f.reg,
                "DELETE",
                &format!("/v2/{repo}/manifests/{tag}"),
                None,
                &[&del],
            )
        }
        Action::DeleteManifest => {
            // A manifest of its own (an annotation makes the digest unique to this cell).
            let m = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{cd}","size":{}}},"layers":[],"annotations":{{"cell":"{who:?}"}}}}"#,
                format!("{{\"repo\":\"{repo}\"}}").len()
            );
            let d = sha256(m.as_bytes());
            assert_eq!(
                root.send(
                    &c,
                    &f.reg,
                    "PUT",
                    &format!("/v2/{repo}/manifests/{d}"),
                    Some(m),
                    &[]
                )
                .0,
                201
            );
            s.send(
                &c,
                &f.reg,
                "DELETE",
                &format!("/v2/{repo}/manifests/{d}"),
                None,
                &[&del],
            )
        }
    }
}

#[test]
fn permission_matrix_answers_exactly_and_leaks_nothing() {
    let f = setup();
    let mut failures = Vec::new();
    for who in ALL {
        for (repo, public) in [("team/public", true), ("team/private", false)] {
            for action in ACTIONS {
                let want = expected(who, public, action);
                let (got, body, challenge) = attempt(&f, who, repo, action);
                if got != want {
                    failures.push(format!(
                        "{who:?} {action:?} on {repo}: want {want}, got {got}: {body}"
                    ));
                    continue;
                }
                let challenged = challenge.as_deref().is_some_and(|c| {
                    c.starts_with("Bearer realm=") || c.starts_with("Basic realm=")
                });
                if got == 401 && !challenged {
                    failures.push(format!(
                        "{who:?} {action:?} on {repo}: 401 without a Bearer challenge"
                    ));
                }
                if got >= 400 && !public {
                    let (cd, ld, md) = &f.content[repo];
                    for secret in [cd, ld, md] {
                        let hex = secret.trim_start_matches("sha256:");
                        if body.contains(hex) {
                            failures.push(format!(
                                "{who:?} {action:?} on {repo}: denial leaks {secret}"
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn existence_of_private_repositories_does_not_leak() {
    let f = setup();
    let c = client();
    for who in [Who::Anonymous, Who::Outsider] {
        let s = caller(&f, who);
        let real = s.send(
            &c,
            &f.reg,
            "GET",
            "/v2/team/private/manifests/v1",
            None,
            &["repository:team/private:pull"],
        );
        let fake = s.send(
            &c,
            &f.reg,
            "GET",
            "/v2/team/nothing/manifests/v1",
            None,
            &["repository:team/nothing:pull"],
        );
        assert_eq!(
            real.0, fake.0,
            "{who:?}: same answer for a private and a missing repository"
        );
        assert_eq!(real.1, fake.1, "{who:?}: same body");
    }
}

#[test]
fn catalog_and_base_follow_the_caller() {
    let f = setup();
    let c = client();
    let r = c.get(f.reg.url("/v2/")).send().expect("GET /v2/");
    assert_eq!(
        r.status(),
        401,
        "docker only sends credentials after a 401 on /v2/"
    );
    let challenge = header(&r, "www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"http://") && challenge.contains("service=\"reg\""),
        "{challenge}"
    );
    let anon = As { cred: Cred::None }.send(
        &c,
        &f.reg,
        "GET",
        "/v2/_catalog",
        None,
        &["registry:catalog:*"],
    );
    assert_eq!(anon.0, 401);
    let repos = |who: Who| {
        let (status, body, _) = caller(&f, who).send(
            &c,
            &f.reg,
            "GET",
            "/v2/_catalog",
            None,
            &["registry:catalog:*"],
        );
        assert_eq!(status, 200, "{who:?}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["repositories"].as_array().cloned().unwrap_or_default()
    };
    assert_eq!(repos(Who::Outsider), vec![serde_json::json!("team/public")]);
    assert!(repos(Who::Reader).contains(&serde_json::json!("team/private")));
    assert!(repos(Who::OrgAdmin).contains(&serde_json::json!("team/private")));
    // Basic credentials work on every endpoint too.
    let (status, _, _) =
        As::basic("reader").send(&c, &f.reg, "GET", "/v2/team/private/tags/list", None, &[]);
    assert_eq!(status, 200);
    let (status, _, _) =
        As::basic("outsider").send(&c, &f.reg, "GET", "/v2/team/private/tags/list", None, &[]);
    assert_eq!(status, 403);
}

#[test]
fn oauth_post_and_refresh_tokens() {
    let f = setup();
    let c = client();
    let r = c
        .post(f.reg.url("/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "reader"),
            ("password", PW),
            ("service", "reg"),
            ("scope", "repository:team/private:pull"),
            ("access_type", "offline"),
            ("client_id", "test"),
        ])
        .send()
        .expect("POST token");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().expect("json");
    let refresh = v["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_string();
    let r = c
        .post(f.reg.url("/auth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", "reg"),
            ("scope", "repository:team/private:pull"),
            ("client_id", "test"),
        ])
        .send()
        .expect("POST refresh");
    assert_eq!(r.status(), 200);
    let t = r.json::<serde_json::Value>().expect("json")["access_token"]
        .as_str()
        .expect("access token")
        .to_string();
    let r = c
        .get(f.reg.url("/v2/team/private/manifests/v1"))
        .bearer_auth(t)
        .send()
        .expect("GET");
    assert_eq!(r.status(), 200);
    let r = c
        .post(f.reg.url("/auth/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "forged")])
        .send()
        .expect("POST");
    assert_eq!(r.status(), 401);
}

#[test]
fn repeated_failed_logins_are_slowed_down_and_audited() {
    let f = setup_with(false);
    let c = client();
    let start = std::time::Instant::now();
    for _ in 0..6 {
        assert!(bearer(&c, &f.reg, Some(("reader", "wrong password")), &[]).is_none());
    }
    // Penalties after the third failure: 100 + 200 + 400 ms at least.
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(700),
        "took {:?}",
        start.elapsed()
    );
    let log = admin(f.reg.data_dir(), &["audit"], "");
    assert!(log.contains("login.failed"), "{log}");
    assert!(log.contains("user.add"), "{log}");
    assert!(log.contains("push"), "{log}");
}

#[test]
fn open_registry_refuses_a_non_loopback_address() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(reg_bin())
        .args(["registry", "serve", "--addr", "0.0.0.0:0", "--data"])
        .arg(tmp.path())
        .output()
        .expect("run reg");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without authentication") && err.contains("--insecure-no-auth"),
        "{err}"
    );
}

fn docker_ready() -> bool {
    peer("docker").is_some()
        && Command::new("docker")
            .arg("info")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
}

#[test]
fn docker_login_push_pull_and_anonymous_pulls() {
    if !docker_ready() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("dockerd must be running under CI=true");
        }
        skip("dockerd not running");
        return;
    }
    let f = setup();
    let host = f.reg.host.clone();
    // A private docker config so the host's credentials are neither used nor changed.
    let cfg = tempfile::tempdir().expect("tempdir");
    let docker = |args: &[&str]| {
        let mut c = Command::new("docker");
        c.arg("--config").arg(cfg.path()).args(args);
        c
    };
    let ctx = tempfile::tempdir().expect("tempdir");
    std::fs::write(ctx.path().join("f.txt"), "auth test\n").expect("file");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY f.txt /f.txt\n",
    )
    .expect("Dockerfile");
    let private = format!("{host}/team/private:docker");
    let public = format!("{host}/team/public:docker");
    struct Cleanup(Vec<String>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for i in &self.0 {
                let _ = Command::new("docker").args(["rmi", "-f", i]).output();
            }
        }
    }
    let _c = Cleanup(vec![private.clone(), public.clone()]);
    run(docker(&["build", "-q", "-t", &private])
        .arg(ctx.path())
        .env("DOCKER_BUILDKIT", "0"));
    run(&mut docker(&["tag", &private, &public]));

    // Without login, push is refused.
    let out = docker(&["push", &private]).output().expect("docker push");
    assert!(!out.status.success(), "anonymous push must fail");

    let mut login = docker(&["login", &host, "-u", "writer", "--password-stdin"]);
    login
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = login.spawn().expect("docker login");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(PW.as_bytes())
            .expect("password");
    }
    let out = child.wait_with_output().expect("docker login");
    assert!(
        out.status.success(),
        "docker login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    run(&mut docker(&["push", &private]));
    run(&mut docker(&["push", &public]));
    run(&mut docker(&["logout", &host]));
    run(&mut docker(&["rmi", &private, &public]));

    // Anonymous: the public repository pulls, the private one does not.
    run(&mut docker(&["pull", &public]));
    let out = docker(&["pull", &private]).output().expect("docker pull");
    assert!(
        !out.status.success(),
        "anonymous pull of a private repository must fail"
    );
}

#[test]
fn skopeo_with_credentials_and_with_an_access_token() {
    if peer("skopeo").is_none() {
        return;
    }
    let Some(layers) = busybox_layers() else {
        return;
    };
    let f = setup();
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = tmp.path().join("src");
    write_oci_layout(&layout, "v1", &layers[..1]);
    let src = format!("oci:{}:v1", layout.display());
    let dest = format!("docker://{}/team/private:skopeo", f.reg.host);
    let creds = format!("writer:{PW}");
    let auth = tmp.path().join("auth.json");
    let skopeo = |args: &[&str]| {
        let mut c = Command::new("skopeo");
        c.args(args).env("REGISTRY_AUTH_FILE", &auth);
        c
    };
    run(&mut skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &src,
        &dest,
    ]));
    let out = skopeo(&["inspect", "--tls-verify=false", "--raw", &dest])
        .output()
        .expect("skopeo");
    assert!(
        !out.status.success(),
        "anonymous inspect of a private image must fail"
    );

    // A robot token limited to pull works as a password for pulling, not for pushing.
    let token = admin(
        f.reg.data_dir(),
        &[
            "token",
            "create",
            "--user",
            "writer",
            "--scope",
            "repository:team/private:pull",
            "--expires",
            "1h",
        ],
        "",
    );
    let robot = format!("robot:{}", token.trim());
    let back = format!("oci:{}:v1", tmp.path().join("back").display());
    run(&mut skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &robot,
        &dest,
        &back,
    ]));
    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &robot,
        &src,
        &format!("docker://{}/team/private:robot", f.reg.host),
    ])
    .output()
    .expect("skopeo");
    assert!(!out.status.success(), "a pull-only token cannot push");
    let _ = Path::new(&auth);
}

#[test]
fn tls_serves_https_and_skopeo_logs_in_over_it() {
    if peer("openssl").is_none() || peer("skopeo").is_none() || peer("curl").is_none() {
        return;
    }
    let Some(layers) = busybox_layers() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let (cert, key) = (certs.join("ca.crt"), tmp.path().join("key.pem"));
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let data = tmp.path().join("data");
    admin(
        &data,
        &["user", "add", "alice", "--password-stdin"],
        &format!("{PW}\n"),
    );
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let reg = Registry::start_on(
        &data,
        &[("REG_REGISTRY_TLS_CERT", &c), ("REG_REGISTRY_TLS_KEY", &k)],
    );

    let out = run(Command::new("curl")
        .args(["-s", "-i", "--cacert", &c])
        .arg(format!("https://{}/v2/", reg.host)));
    assert!(
        out.starts_with("HTTP/1.1 401") || out.starts_with("HTTP/2 401"),
        "{out}"
    );
    assert!(
        out.contains(&format!("realm=\"https://{}/auth/token\"", reg.host)),
        "{out}"
    );
    let plain = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{}/v2/", reg.host))
        .output()
        .expect("curl");
    assert_ne!(
        String::from_utf8_lossy(&plain.stdout),
        "401",
        "no plain HTTP on a TLS port"
    );

    let layout = tmp.path().join("src");
    write_oci_layout(&layout, "v1", &layers[..1]);
    let dest = format!("docker://{}/alice/app:v1", reg.host);
    let creds = format!("alice:{PW}");
    let certdir = certs.display().to_string();
    run(Command::new("skopeo")
        .args(["copy", "--dest-cert-dir", &certdir, "--dest-creds", &creds])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(&dest)
        .env("REGISTRY_AUTH_FILE", tmp.path().join("auth.json")));
    let raw = run(Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--cert-dir",
            &certdir,
            "--creds",
            &creds,
            &dest,
        ])
        .env("REGISTRY_AUTH_FILE", tmp.path().join("auth.json")));
    assert!(raw.contains("schemaVersion"), "{raw}");
}

#[test]
fn reg_login_saves_docker_format_credentials_and_refuses_bad_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    admin(
        &data,
        &["user", "add", "alice", "--password-stdin"],
        &format!("{PW}\n"),
    );
    let reg = Registry::start_on(&data, &[]);
    let cfg_dir = tmp.path().join("cfg");
    let login = |password: &str| {
        use std::io::Write;
        let mut child = Command::new(reg_bin())
            .args(["login", &reg.host, "-u", "alice", "--password-stdin"])
            .env("REG_CONFIG_DIR", &cfg_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("reg login");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(password.as_bytes())
            .expect("password");
        child.wait_with_output().expect("reg login")
    };
    let bad = login("wrong password\n");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("refused the credentials"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(
        !cfg_dir.join("config.json").exists(),
        "nothing saved for a failed login"
    );

    let ok = login(&format!("{PW}\n"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cfg_dir.join("config.json")).expect("config.json"))
            .expect("json");
    assert!(
        saved["auths"][reg.host.as_str()]["auth"].is_string(),
        "{saved}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cfg_dir.join("config.json"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = Command::new(reg_bin())
        .args(["logout", &reg.host])
        .env("REG_CONFIG_DIR", &cfg_dir)
        .output()
        .expect("logout");
    assert!(out.status.success());
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cfg_dir.join("config.json")).expect("config.json"))
            .expect("json");
    assert!(saved["auths"].get(reg.host.as_str()).is_none());
}
