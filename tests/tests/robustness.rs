//! Nothing is lost or corrupted: interrupted uploads, crashes (`kill -9`) mid-push, concurrent
//! pushes of the same blob and tag, restarts with uploads in flight, graceful shutdown.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reg_tests::*;

fn range_of(c: &Client, reg: &Registry, loc: &str) -> Option<String> {
    let r = c.get(reg.url(loc)).send().ok()?;
    assert_eq!(r.status(), 204, "upload status");
    header(&r, "range")
}

#[test]
fn interrupted_patch_keeps_what_arrived_and_resumes() {
    let reg = Registry::start();
    let c = client();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let loc = location(
        &c.post(reg.url("/v2/app/blobs/uploads/"))
            .send()
            .expect("POST"),
    );

    // A client that dies after sending 40 000 of the 100 000 bytes it announced.
    let mut s = TcpStream::connect(reg.addr).expect("connect");
    write!(s, "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000\r\nContent-Type: application/octet-stream\r\n\r\n", reg.host)
        .expect("headers");
    s.write_all(&data[..40_000]).expect("partial body");
    s.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(200));
    drop(s);

    let deadline = Instant::now() + Duration::from_secs(10);
    while range_of(&c, &reg, &loc).as_deref() != Some("0-39999") {
        assert!(
            Instant::now() < deadline,
            "upload never settled at 40000 bytes: {:?}",
            range_of(&c, &reg, &loc)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = c
        .patch(reg.url(&loc))
        .header("content-range", "40000-99999")
        .body(data[40_000..].to_vec())
        .send()
        .expect("resume");
    assert_eq!(r.status(), 202);
    let d = sha256(&data);
    let r = c
        .put(reg.url(&format!("{}?digest={d}", location(&r))))
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 201);
    let got = c
        .get(reg.url(&format!("/v2/app/blobs/{d}")))
        .send()
        .expect("GET")
        .bytes()
        .expect("body");
    assert_eq!(sha256(&got), d);
}

#[test]
fn upload_session_survives_a_crash_and_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 241) as u8).collect();
    let c = client();
    let mut reg = Registry::start_on(tmp.path(), &[]);
    let loc = location(
        &c.post(reg.url("/v2/app/blobs/uploads/"))
            .send()
            .expect("POST"),
    );
    let r = c
        .patch(reg.url(&loc))
        .header("content-range", "0-24999")
        .body(data[..25_000].to_vec())
        .send()
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    reg.kill9();

    let reg = Registry::start_on(tmp.path(), &[]);
    assert_eq!(range_of(&c, &reg, &loc).as_deref(), Some("0-24999"));
    let r = c
        .patch(reg.url(&loc))
        .header("content-range", "25000-49999")
        .body(data[25_000..].to_vec())
        .send()
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    let d = sha256(&data);
    let r = c
        .put(reg.url(&format!("{loc}?digest={d}")))
        .send()
        .expect("PUT");
    assert_eq!(
        r.status(),
        201,
        "the digest is recomputed from disk after a restart"
    );
}

#[test]
fn expired_upload_sessions_are_removed_with_their_data() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = client();
    let mut reg = Registry::start_on(tmp.path(), &[]);
    let loc = location(
        &c.post(reg.url("/v2/app/blobs/uploads/"))
            .send()
            .expect("POST"),
    );
    c.patch(reg.url(&loc))
        .body(vec![1u8; 1000])
        .send()
        .expect("PATCH");
    reg.kill9();
    std::thread::sleep(Duration::from_millis(1100));
    let reg = Registry::start_on(tmp.path(), &[("REG_REGISTRY_UPLOAD_EXPIRY_SECS", "0")]);
    let r = c.get(reg.url(&loc)).send().expect("GET");
    assert_eq!(r.status(), 404);
    let left = reg_tests::stored(tmp.path(), "_uploads/");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn concurrent_pushes_of_one_blob_and_one_tag() {
    let reg = Arc::new(Registry::start());
    let data = vec![42u8; 2 * 1024 * 1024];
    let d = sha256(&data);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (reg, data) = (reg.clone(), data.clone());
            std::thread::spawn(move || {
                let c = client();
                push_blob(&c, &reg, "app", &data);
                push_image(&c, &reg, "app", "latest", &format!("writer {i}")).0
            })
        })
        .collect();
    let pushed: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().expect("pusher"))
        .collect();
    let c = client();
    let got = c
        .get(reg.url(&format!("/v2/app/blobs/{d}")))
        .send()
        .expect("GET")
        .bytes()
        .expect("body");
    assert_eq!(sha256(&got), d);
    let r = c
        .get(reg.url("/v2/app/manifests/latest"))
        .send()
        .expect("GET");
    let tag_digest = header(&r, "docker-content-digest").expect("digest");
    assert!(
        pushed.contains(&tag_digest),
        "the tag points at one of the pushed manifests"
    );
    assert_eq!(sha256(&r.bytes().expect("body")), tag_digest);
    // Every manifest is still there by digest, whichever won the tag.
    for m in pushed {
        assert_eq!(
            c.head(reg.url(&format!("/v2/app/manifests/{m}")))
                .send()
                .expect("HEAD")
                .status(),
            200
        );
    }
}

#[test]
fn kill_9_during_pushes_loses_no_completed_push_and_serves_no_partial_blob() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let completed: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let attempted: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    for round in 0..3u32 {
        let reg = Arc::new(Mutex::new(Registry::start_on(tmp.path(), &[])));
        let url = reg.lock().expect("reg").url("");
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..4u32)
            .map(|w| {
                let (url, stop, completed, attempted) = (
                    url.clone(),
                    stop.clone(),
                    completed.clone(),
                    attempted.clone(),
                );
                std::thread::spawn(move || {
                    let c = client();
                    let mut n = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let data: Vec<u8> = (0..(1 << 20) as u32)
                            .map(|i| (i ^ (w * 131 + n * 7 + round * 1009)) as u8)
                            .collect();
                        let d = sha256(&data);
                        attempted.lock().expect("lock").push(d.clone());
                        let Ok(r) = c.post(format!("{url}/v2/crash/app/blobs/uploads/")).send()
                        else {
                            break;
                        };
                        let Some(loc) = r
                            .headers()
                            .get("location")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                        else {
                            break;
                        };
                        let mut ok = true;
                        for (i, chunk) in data.chunks(256 * 1024).enumerate() {
                            let a = i * 256 * 1024;
                            let r = c
                                .patch(format!("{url}{loc}"))
                                .header("content-range", format!("{a}-{}", a + chunk.len() - 1))
                                .body(chunk.to_vec())
                                .send();
                            if !matches!(r, Ok(ref r) if r.status() == 202) {
                                ok = false;
                                break;
                            }
                        }
                        if !ok {
                            break;
                        }
                        match c.put(format!("{url}{loc}?digest={d}")).send() {
                            Ok(r) if r.status() == 201 => {
                                completed.lock().expect("lock").push(("blob".into(), d));
                            }
                            _ => break,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700 + 300 * u64::from(round)));
        reg.lock().expect("reg").kill9();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().expect("worker");
        }
    }
    let reg = Registry::start_on(tmp.path(), &[]);
    let c = client();
    let done = completed.lock().expect("lock").clone();
    assert!(!done.is_empty(), "some pushes completed before the crashes");
    for (_, d) in &done {
        let r = c
            .get(reg.url(&format!("/v2/crash/app/blobs/{d}")))
            .send()
            .expect("GET");
        assert_eq!(r.status(), 200, "completed push {d} survived");
        assert_eq!(&sha256(&r.bytes().expect("body")), d);
    }
    for d in attempted.lock().expect("lock").iter() {
        let r = c
            .get(reg.url(&format!("/v2/crash/app/blobs/{d}")))
            .send()
            .expect("GET");
        if r.status() == 200 {
            assert_eq!(
                &sha256(&r.bytes().expect("body")),
                d,
                "a served blob is always whole"
            );
        } else {
            assert_eq!(r.status(), 404);
        }
    }
}

#[test]
fn sigterm_stops_gracefully_with_exit_zero() {
    let mut reg = Registry::start();
    let c = client();
    push_image(&c, &reg, "app", "v1", "x");
    let status = reg.terminate();
    assert!(status.success(), "exit status {status:?}");
}
