//! Hardening of the registry server against hostile clients, with the real binary: auth that
//! never fails open, revocation that takes effect at once, bounded password hashing, slow and
//! idle clients cut off, ranges that cannot wrap, capped upload sessions, proxies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reg_tests::*;

const PW: &str = "correct horse battery";

/// A registry whose database has `users` (name, admin) with password [`PW`], started with `env`.
fn registry_with(users: &[(&str, bool)], env: &[(&str, &str)]) -> (Registry, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (u, is_admin) in users {
        let mut a = vec!["user", "add", u, "--password-stdin"];
        if *is_admin {
            a.push("--admin");
        }
        admin(tmp.path(), &a, &format!("{PW}\n"));
    }
    let reg = Registry::start_on(tmp.path(), env);
    (reg, tmp)
}

/// `reg admin` that may fail: (success, stdout + stderr).
fn try_admin(data: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = reg_on(data)
        .arg("admin")
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn reg admin");
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes()).expect("stdin");
    }
    let out = child.wait_with_output().expect("reg admin");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn status(c: &Client, req: reqwest::blocking::RequestBuilder) -> u16 {
    let _ = c;
    req.send().expect("request").status().as_u16()
}

#[test]
fn a_registry_that_had_users_never_serves_open_again() {
    let (mut reg, tmp) = registry_with(&[("root", true), ("bob", false)], &[]);
    let c = client();
    assert_eq!(status(&c, c.get(reg.url("/v2/"))), 401);
    // The last admin cannot go; an ordinary user can.
    let (ok, out) = try_admin(tmp.path(), &["user", "rm", "root"], "");
    assert!(!ok && out.contains("last admin"), "{out}");
    let (ok, out) = try_admin(tmp.path(), &["user", "rm", "bob"], "");
    assert!(ok, "{out}");
    reg.terminate();

    // A registry whose only user (not an admin) was removed: still closed, after a restart too.
    let tmp2 = tempfile::tempdir().expect("tempdir");
    admin(
        tmp2.path(),
        &["user", "add", "solo", "--password-stdin"],
        &format!("{PW}\n"),
    );
    admin(tmp2.path(), &["user", "rm", "solo"], "");
    let reg2 = Registry::start_on(tmp2.path(), &[]);
    assert_eq!(status(&c, c.get(reg2.url("/v2/"))), 401);
    assert_eq!(status(&c, c.get(reg2.url("/v2/_catalog"))), 401);
    assert_eq!(status(&c, c.post(reg2.url("/v2/any/blobs/uploads/"))), 401);
    assert!(
        reg2.log()
            .contains("authentication is required but no user exists"),
        "{}",
        reg2.log()
    );
    // Only the explicit flag opens it, and says so.
    drop(reg2);
    let reg3 = Registry::start_on(tmp2.path(), &[("REG_REGISTRY_INSECURE_NO_AUTH", "true")]);
    assert_eq!(status(&c, c.get(reg3.url("/v2/"))), 200);
    assert!(reg3.log().contains("--insecure-no-auth"), "{}", reg3.log());
    drop(tmp);
}

#[test]
fn revocation_takes_effect_at_once() {
    let (reg, tmp) = registry_with(&[("root", true), ("alice", false)], &[]);
    let d = tmp.path();
    admin(d, &["repo", "visibility", "alice/app", "private"], "");
    let c = client();
    let push = client_as("alice", PW);
    push_blob(&push, &reg, "alice/app", b"some layer");
    // A cached Basic login, a JWT and a refresh token, all from before the change.
    assert_eq!(
        status(&c, c.get(reg.url("/v2/")).basic_auth("alice", Some(PW))),
        200
    );
    let jwt = bearer(
        &c,
        &reg,
        Some(("alice", PW)),
        &["repository:alice/app:pull"],
    )
    .expect("jwt");
    let check = |t: &str| status(&c, c.get(reg.url("/v2/alice/app/tags/list")).bearer_auth(t));
    assert_ne!(check(&jwt), 401);
    let r = c
        .post(reg.url("/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PW),
            ("service", "reg"),
            ("access_type", "offline"),
            ("client_id", "t"),
        ])
        .send()
        .expect("token");
    let refresh = r.json::<serde_json::Value>().expect("json")["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();

    admin(
        d,
        &["user", "passwd", "alice", "--password-stdin"],
        "a new password\n",
    );
    assert_eq!(
        status(&c, c.get(reg.url("/v2/")).basic_auth("alice", Some(PW))),
        401
    );
    let r = c
        .get(reg.url("/v2/alice/app/tags/list"))
        .bearer_auth(&jwt)
        .send()
        .expect("GET");
    assert_eq!(r.status(), 401);
    assert!(
        header(&r, "www-authenticate").is_some_and(|h| h.contains("invalid_token")),
        "{:?}",
        header(&r, "www-authenticate")
    );
    let r = c
        .post(reg.url("/auth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", "reg"),
            ("client_id", "t"),
        ])
        .send()
        .expect("refresh");
    assert_eq!(r.status(), 401, "a password change drops refresh tokens");
    assert_eq!(
        status(
            &c,
            c.get(reg.url("/v2/"))
                .basic_auth("alice", Some("a new password"))
        ),
        200
    );

    // An access token: its JWT and its Basic use end with its revocation.
    let out = admin(
        d,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--scope",
            "repository:alice/*:pull",
        ],
        "",
    );
    let secret = out
        .split_whitespace()
        .find(|w| w.starts_with("reg_"))
        .expect("token secret")
        .to_string();
    let id = secret
        .trim_start_matches("reg_")
        .split('_')
        .next()
        .expect("id")
        .to_string();
    assert_eq!(
        status(
            &c,
            c.get(reg.url("/v2/")).basic_auth("alice", Some(&secret))
        ),
        200
    );
    let tjwt = bearer(
        &c,
        &reg,
        Some(("alice", &secret)),
        &["repository:alice/app:pull"],
    )
    .expect("token jwt");
    assert_ne!(check(&tjwt), 401);
    admin(d, &["token", "revoke", &id], "");
    assert_eq!(check(&tjwt), 401);
    assert_eq!(
        status(
            &c,
            c.get(reg.url("/v2/")).basic_auth("alice", Some(&secret))
        ),
        401
    );
}

/// The peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

#[test]
fn a_flood_of_bogus_logins_is_bounded_and_locks_out_no_one() {
    let (reg, _tmp) = registry_with(&[("root", true)], &[]);
    let url = reg.url("/v2/");
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let c = client();
                c.get(&url)
                    .basic_auth(format!("nobody{i}"), Some("wrong"))
                    .send()
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    let codes: Vec<u16> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    assert!(
        codes.iter().all(|c| *c == 401 || *c == 429),
        "only 401 and 429: {codes:?}"
    );
    assert!(
        codes.contains(&429),
        "the queue bound answered 429: {codes:?}"
    );
    let rss = peak_rss_mib(reg.pid());
    assert!(rss < 300, "peak RSS {rss} MiB after 200 concurrent logins");
    // The same address logs in with the right password without the guesser's penalty.
    let c = client();
    let start = Instant::now();
    assert_eq!(
        status(&c, c.get(reg.url("/v2/")).basic_auth("root", Some(PW))),
        200
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // 429s carry Retry-After.
    let r = (0..50)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                client()
                    .get(&url)
                    .basic_auth("x", Some("y"))
                    .send()
                    .ok()
                    .filter(|r| r.status() == 429)
                    .and_then(|r| header(&r, "retry-after"))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .filter_map(|t| t.join().ok().flatten())
        .next();
    if let Some(after) = r {
        assert_eq!(after, "1");
    }
}

/// Reads until the server closes the connection (or `limit` passes): what it sent.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<String> {
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&all).into_owned()),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&all).into_owned())
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn slow_and_idle_clients_are_cut_off() {
    let (reg, _tmp) = registry_with(
        &[],
        &[
            ("REG_REGISTRY_LIMITS_HEADER_TIMEOUT_SECS", "1"),
            ("REG_REGISTRY_LIMITS_BODY_WINDOW_SECS", "1"),
            ("REG_REGISTRY_LIMITS_MIN_BODY_BYTES_PER_SEC", "1000"),
        ],
    );
    // Half-sent headers.
    let mut s = TcpStream::connect(reg.addr).expect("connect");
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    assert!(
        read_until_closed(&mut s, Duration::from_secs(10)).is_some(),
        "half-sent headers were not cut off"
    );
    // An idle keep-alive connection after one request.
    let mut s = TcpStream::connect(reg.addr).expect("connect");
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let got = read_until_closed(&mut s, Duration::from_secs(10)).expect("idle connection closed");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // An upload announcing 10 GB that sends 3 bytes: cut, and the 3 bytes are kept.
    let c = client();
    let r = c
        .post(reg.url("/v2/slow/blobs/uploads/"))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 202);
    let loc = location(&r);
    let path = loc.trim_start_matches(&format!("http://{}", reg.host));
    let mut s = TcpStream::connect(reg.addr).expect("connect");
    s.write_all(
        format!(
            "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 10000000000\r\n\r\nabc"
        )
        .as_bytes(),
    )
    .expect("write");
    let got = read_until_closed(&mut s, Duration::from_secs(15)).expect("slow body cut off");
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 4"), "{got}");
    let r = c.get(reg.url(path)).send().expect("GET upload");
    assert_eq!(
        header(&r, "range").as_deref(),
        Some("0-2"),
        "the 3 bytes are kept"
    );
    // The open-file limit was raised to the hard limit.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", reg.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("nofile");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[3], f[4], "soft = hard: {line}");
}

#[test]
fn a_content_range_that_would_wrap_appends_nothing() {
    let (reg, _tmp) = registry_with(&[], &[]);
    let c = client();
    let r = c
        .post(reg.url("/v2/r/blobs/uploads/"))
        .send()
        .expect("POST");
    let loc = reg.url(&location(&r));
    let r = c
        .patch(&loc)
        .header("content-range", "0-18446744073709551615")
        .header("content-type", "application/octet-stream")
        .body("abc")
        .send()
        .expect("PATCH");
    assert_eq!(r.status(), 416);
    // Nothing was appended: the first real chunk still starts at 0.
    let r = c
        .patch(&loc)
        .header("content-range", "0-2")
        .header("content-type", "application/octet-stream")
        .body("abc")
        .send()
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-2"));
}

#[test]
fn auth_schemes_are_case_insensitive() {
    let (reg, _tmp) = registry_with(&[("root", true)], &[]);
    let c = client();
    let jwt = bearer(&c, &reg, Some(("root", PW)), &[]).expect("jwt");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = c
            .get(reg.url("/v2/"))
            .header("authorization", format!("{scheme} {jwt}"))
            .send()
            .expect("GET");
        assert_eq!(r.status(), 200, "{scheme}");
    }
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("root:{PW}"));
    let r = c
        .get(reg.url("/v2/"))
        .header("authorization", format!("BASIC {basic}"))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 200);
}

#[test]
fn upload_sessions_are_capped_per_client() {
    let (reg, _tmp) = registry_with(
        &[],
        &[("REG_REGISTRY_LIMITS_UPLOAD_SESSIONS_PER_CLIENT", "3")],
    );
    let c = client();
    let mut locs = Vec::new();
    for _ in 0..3 {
        let r = c
            .post(reg.url("/v2/cap/blobs/uploads/"))
            .send()
            .expect("POST");
        assert_eq!(r.status(), 202);
        locs.push(reg.url(&location(&r)));
    }
    let r = c
        .post(reg.url("/v2/cap/blobs/uploads/"))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 429);
    let body = r.text().unwrap_or_default();
    assert!(body.contains("TOOMANYREQUESTS"), "{body}");
    assert_eq!(c.delete(&locs[0]).send().expect("DELETE").status(), 204);
    let r = c
        .post(reg.url("/v2/cap/blobs/uploads/"))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 202);
}

#[test]
fn clients_behind_a_trusted_proxy_are_told_apart() {
    let (reg, tmp) = registry_with(
        &[("root", true)],
        &[("REG_REGISTRY_TRUSTED_PROXIES", "127.0.0.1/32")],
    );
    let c = client();
    let r = c
        .get(reg.url("/v2/"))
        .header("x-forwarded-for", "198.51.100.7")
        .basic_auth("root", Some("wrong"))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 401);
    let log = admin(tmp.path(), &["audit"], "");
    assert!(log.contains("198.51.100.7"), "{log}");
    // Without the proxy setting the header is ignored.
    let (reg2, tmp2) = registry_with(&[("root", true)], &[]);
    let r = c
        .get(reg2.url("/v2/"))
        .header("x-forwarded-for", "198.51.100.8")
        .basic_auth("root", Some("wrong"))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 401);
    let log = admin(tmp2.path(), &["audit"], "");
    assert!(
        !log.contains("198.51.100.8") && log.contains("127.0.0.1"),
        "{log}"
    );
    drop(reg);
}

#[test]
fn manifests_that_are_not_utf8_or_nest_too_deep_are_refused() {
    let (reg, _tmp) = registry_with(&[], &[]);
    let c = client();
    let put = |body: Vec<u8>| {
        let r = c
            .put(reg.url("/v2/m/manifests/v1"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
            .expect("PUT");
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    let mut bad_utf8 = br#"{"schemaVersion":2,"annotations":{"x":""#.to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe]);
    bad_utf8.extend_from_slice(br#""},"layers":[]}"#);
    let (code, body) = put(bad_utf8);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("MANIFEST_INVALID") && body.contains("UTF-8"),
        "{body}"
    );
    let deep = format!(
        r#"{{"schemaVersion":2,"x":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (code, body) = put(deep.into_bytes());
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("MANIFEST_INVALID") && body.contains("nests deeper"),
        "{body}"
    );
}
