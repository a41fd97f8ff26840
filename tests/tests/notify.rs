//! Notifications (`[[registry.notify]]`): a webhook receiver in the test counts the envelopes
//! the registry sends — distribution's format, the endpoint's filters, redelivery after the
//! receiver was down (also across a restart of the registry), and failed deliveries listed and
//! sent again through `reg admin notify`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reg_tests::{admin, client, push_image, Registry};

/// One request the receiver got: its headers (lower-case names) and its body as JSON.
#[derive(Clone, Debug)]
struct Got {
    headers: Vec<(String, String)>,
    body: serde_json::Value,
}

/// A webhook receiver on `addr`: answers 200 to every POST and keeps what it got. Dropped, it
/// stops listening (connections made later are refused).
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    addr: String,
}

impl Receiver {
    fn start(addr: &str) -> Receiver {
        let l = TcpListener::bind(addr).expect("bind the receiver");
        l.set_nonblocking(true).expect("nonblocking");
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                match l.accept() {
                    Ok((conn, _)) => {
                        let (g, s) = (g.clone(), s.clone());
                        std::thread::spawn(move || serve(conn, &g, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Receiver {
            got,
            stop,
            addr: addr.to_string(),
        }
    }

    /// Every event received so far, in order.
    fn events(&self) -> Vec<serde_json::Value> {
        self.got
            .lock()
            .map(|g| {
                g.iter()
                    .flat_map(|r| r.body["events"].as_array().cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until `n` events arrived; fails with what did after 30 s.
    fn wait_events(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let e = self.events();
            if e.len() >= n {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} events arrived: {e:#?}",
                e.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wait until the port is free again (the accept loop has dropped the listener).
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpListener::bind(&self.addr).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn serve(conn: TcpStream, got: &Mutex<Vec<Got>>, stop: &std::sync::atomic::AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut r = BufReader::new(conn);
    loop {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        if let Ok(mut g) = got.lock() {
            g.push(Got { headers, body });
        }
        if out
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

fn free_addr() -> String {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string()
}

fn config(dir: &Path, endpoints: &str) -> String {
    let path = dir.join("reg.toml");
    std::fs::write(&path, endpoints).expect("reg.toml");
    path.to_string_lossy().into_owned()
}

fn actions(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["action"].as_str().unwrap_or(""),
                e["target"]["mediaType"].as_str().unwrap_or(""),
                e["target"]["tag"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn pushes_pulls_and_deletes_reach_the_webhook_in_distributions_envelope_and_filters_apply() {
    let all = Receiver::start(&free_addr());
    let pushes = Receiver::start(&free_addr());
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        &format!(
            "[[registry.notify]]\nname = \"all\"\nurl = \"http://{}/events\"\n\
             headers = {{ authorization = \"Bearer s3cret\" }}\n\n\
             [[registry.notify]]\nname = \"pushes\"\nurl = \"http://{}/\"\nactions = [\"push\"]\n\
             repositories = \"team/*\"\nignore_media_types = [\"application/octet-stream\"]\n",
            all.addr, pushes.addr
        ),
    );
    let reg = Registry::start_fresh_with(&[("REG_CONFIG", cfg.as_str())]);
    let c = client();
    let (digest, _) = push_image(&c, &reg, "team/app", "v1", "notify");
    push_image(&c, &reg, "other/app", "v1", "elsewhere");
    let r = c
        .get(reg.url("/v2/team/app/manifests/v1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .header("user-agent", "notify-test/1")
        .send()
        .expect("pull");
    assert_eq!(r.status(), 200);
    let r = c
        .delete(reg.url("/v2/team/app/manifests/v1"))
        .send()
        .expect("delete");
    assert_eq!(r.status(), 202);

    // team/app: 2 blob pushes, a manifest push, a pull, a delete; other/app: 3 pushes.
    let events = all.wait_events(8);
    let team: Vec<_> = events
        .iter()
        .filter(|e| e["target"]["repository"] == "team/app")
        .cloned()
        .collect();
    let m = "application/vnd.oci.image.manifest.v1+json";
    assert_eq!(
        actions(&team),
        vec![
            "push application/octet-stream ".to_string(),
            "push application/octet-stream ".to_string(),
            format!("push {m} v1"),
            format!("pull {m} v1"),
            "delete  v1".to_string(),
        ]
    );
    let push = &team[2];
    assert_eq!(push["target"]["digest"], digest.as_str());
    assert!(push["target"]["size"].as_u64().unwrap_or(0) > 0);
    assert_eq!(push["target"]["length"], push["target"]["size"]);
    let url = push["target"]["url"].as_str().unwrap_or("");
    assert!(
        url.ends_with(&format!("/v2/team/app/manifests/{digest}")),
        "{url}"
    );
    assert_eq!(push["request"]["method"], "PUT");
    assert!(!push["id"].as_str().unwrap_or("").is_empty());
    assert!(push["timestamp"].as_str().unwrap_or("").contains('T'));
    assert!(!push["source"]["instanceID"]
        .as_str()
        .unwrap_or("")
        .is_empty());
    assert_eq!(team[3]["request"]["useragent"], "notify-test/1");
    for blob in &team[..2] {
        assert!(blob["target"]["size"].as_u64().unwrap_or(0) > 0, "{blob}");
        assert!(blob["target"]["digest"]
            .as_str()
            .unwrap_or("")
            .starts_with("sha256:"));
    }
    let headers = all
        .got
        .lock()
        .map(|g| g[0].headers.clone())
        .unwrap_or_default();
    let header = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        header("content-type"),
        "application/vnd.docker.distribution.events.v1+json"
    );
    assert_eq!(header("authorization"), "Bearer s3cret");

    // The filtered endpoint: manifest pushes to team/* only.
    let only = pushes.wait_events(1);
    assert_eq!(actions(&only), vec![format!("push {m} v1")]);
    assert_eq!(only[0]["target"]["repository"], "team/app");
    // Nothing more is on its way to it: once the queue is empty, it still has that one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = admin(reg.data_dir(), &["notify", "pending"], "");
        if pending.lines().count() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "still queued: {pending}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pushes.events().len(), 1);
}

#[test]
fn a_webhook_that_was_down_gets_its_events_later_also_across_a_restart() {
    let addr = free_addr();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("data");
    let cfg = config(
        dir.path(),
        &format!(
            "[[registry.notify]]\nname = \"hook\"\nurl = \"http://{addr}/\"\nbackoff = \"100ms\"\n\
             max_attempts = 100\nactions = [\"push\"]\nignore_media_types = [\"application/octet-stream\"]\n"
        ),
    );
    let env = [("REG_CONFIG", cfg.as_str())];
    let mut reg = Registry::start_on(data.path(), &env);
    let c = client();
    push_image(&c, &reg, "team/a", "v1", "down-1");
    // Wait until a delivery has failed (the receiver is not there).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = admin(data.path(), &["notify", "pending"], "");
        if pending.contains("push team/a:v1") && !pending.contains(" 0  ") {
            break;
        }
        assert!(Instant::now() < deadline, "no failed attempt: {pending}");
        std::thread::sleep(Duration::from_millis(50));
    }
    push_image(&c, &reg, "team/b", "v1", "down-2");
    reg.terminate();
    drop(reg);

    let reg = Registry::start_on(data.path(), &env);
    let hook = Receiver::start(&addr);
    let events = hook.wait_events(2);
    let mut repos: Vec<_> = events
        .iter()
        .map(|e| e["target"]["repository"].as_str().unwrap_or("").to_string())
        .collect();
    repos.sort();
    assert_eq!(repos, vec!["team/a", "team/b"]);
    drop(reg);
}

#[test]
fn failed_deliveries_are_listed_and_can_be_sent_again() {
    let addr = free_addr();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        &format!(
            "[[registry.notify]]\nname = \"once\"\nurl = \"http://{addr}/\"\nmax_attempts = 1\n\
             actions = [\"push\"]\nignore_media_types = [\"application/octet-stream\"]\n"
        ),
    );
    let reg = Registry::start_fresh_with(&[("REG_CONFIG", cfg.as_str())]);
    push_image(&client(), &reg, "team/x", "v1", "fails");
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let failed = admin(reg.data_dir(), &["notify", "failed"], "");
        if failed.contains("push team/x:v1") {
            break failed;
        }
        assert!(Instant::now() < deadline, "not failed yet: {failed}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(failed.contains("once"), "{failed}");
    assert!(
        failed.contains(&addr) || failed.to_lowercase().contains("connect"),
        "{failed}"
    );

    let hook = Receiver::start(&addr);
    let out = admin(
        reg.data_dir(),
        &["notify", "retry", "--endpoint", "once"],
        "",
    );
    assert!(out.starts_with("1 deliveries"), "{out}");
    let events = hook.wait_events(1);
    assert_eq!(events[0]["target"]["repository"], "team/x");
    assert_eq!(
        admin(reg.data_dir(), &["notify", "failed"], "")
            .lines()
            .count(),
        1
    );
}
