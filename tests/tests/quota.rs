//! Storage quotas (`reg admin quota`): per namespace (an organisation's or user's name) and per
//! repository, each blob counted once per quota, enforced when an upload completes and when a
//! mount links a blob; concurrent pushes never pass the limit, and space freed by garbage
//! collection counts no more.

use std::path::Path;

use reg_tests::{admin, client, push_blob, sha256, Client, Registry};

/// One blob of `len` bytes that no other call makes (`seed`).
fn blob(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// POST + PUT of `data` into `repo`: the final status and body.
fn try_push(c: &Client, reg: &Registry, repo: &str, data: &[u8]) -> (u16, String) {
    let r = c
        .post(reg.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 202);
    let loc = reg_tests::location(&r);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(reg.url(&format!("{loc}{sep}digest={}", sha256(data))))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .expect("PUT");
    let status = r.status().as_u16();
    (status, r.text().unwrap_or_default())
}

fn quota_ls(data: &Path) -> String {
    admin(data, &["quota", "ls"], "")
}

const MB: usize = 1_000_000;

#[test]
fn a_namespace_quota_refuses_what_would_pass_it_and_counts_each_blob_once() {
    let reg = Registry::start();
    let c = client();
    let data = reg.data_dir().to_path_buf();
    admin(&data, &["quota", "set", "team", "2.5MB"], "");
    let (a, b, x) = (blob(1, MB), blob(2, MB), blob(3, MB));
    push_blob(&c, &reg, "team/a", &a);
    push_blob(&c, &reg, "team/b", &b);
    // The same bytes in a third repository of the namespace: counted once.
    push_blob(&c, &reg, "team/c", &a);
    let (status, text) = try_push(&c, &reg, "team/a", &x);
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("DENIED") && text.contains("quota") && text.contains("team"),
        "{text}"
    );
    assert!(text.contains("2.0 MB") && text.contains("2.5 MB"), "{text}");
    // The refused blob is in no repository.
    let r = c
        .head(reg.url(&format!("/v2/team/a/blobs/{}", sha256(&x))))
        .send()
        .expect("HEAD");
    assert_eq!(r.status(), 404);
    // Outside the namespace nothing is limited.
    push_blob(&c, &reg, "other/x", &x);
    let ls = quota_ls(&data);
    let line = ls
        .lines()
        .find(|l| l.starts_with("team "))
        .unwrap_or_else(|| panic!("no team quota in:\n{ls}"));
    assert!(
        line.contains("namespace") && line.contains("2000000") && line.contains("2500000"),
        "{line}"
    );

    // A cross-repository mount is a link too: refused past the quota, with the reason.
    let r = c
        .post(reg.url(&format!(
            "/v2/team/d/blobs/uploads/?mount={}&from=other/x",
            sha256(&x)
        )))
        .send()
        .expect("mount");
    assert_eq!(r.status(), 403);
    assert!(r.text().unwrap_or_default().contains("quota"));

    // A repository quota, beside the namespace's.
    admin(
        &data,
        &["quota", "set", "other/x", "1.5MB", "--repository"],
        "",
    );
    let (status, text) = try_push(&c, &reg, "other/x", &blob(4, MB));
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("other/x"), "{text}");
    push_blob(&c, &reg, "other/y", &blob(4, MB));

    // Raised, it takes the push.
    admin(&data, &["quota", "set", "team", "10MB"], "");
    push_blob(&c, &reg, "team/a", &x);
    admin(&data, &["quota", "rm", "other/x", "--repository"], "");
    push_blob(&c, &reg, "other/x", &blob(4, MB));
}

#[test]
fn concurrent_pushes_around_the_limit_never_pass_it() {
    let reg = Registry::start();
    let data = reg.data_dir().to_path_buf();
    admin(&data, &["quota", "set", "team", "4500000"], "");
    let results: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u32)
            .map(|i| {
                let reg = &reg;
                s.spawn(move || {
                    try_push(&client(), reg, &format!("team/app{i}"), &blob(100 + i, MB)).0
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("pusher"))
            .collect()
    });
    let ok = results.iter().filter(|s| **s == 201).count();
    let denied = results.iter().filter(|s| **s == 403).count();
    assert_eq!((ok, denied), (4, 4), "{results:?}");
    let ls = quota_ls(&data);
    assert!(ls.contains("4000000"), "{ls}");
}

#[test]
fn space_freed_by_garbage_collection_counts_no_more() {
    let reg = Registry::start();
    let c = client();
    let data = reg.data_dir().to_path_buf();
    admin(&data, &["quota", "set", "team", "2.5MB"], "");
    push_blob(&c, &reg, "team/a", &blob(7, MB));
    push_blob(&c, &reg, "team/a", &blob(8, MB));
    let (status, _) = try_push(&c, &reg, "team/a", &blob(9, MB));
    assert_eq!(status, 403);
    // Unreferenced links are collected once past the grace window (judged an hour ahead).
    let later = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3 * 86_400)
        .to_string();
    let out = reg_tests::reg_on(&data)
        .args(["registry", "gc", "--data"])
        .arg(&data)
        .args(["--now", &later])
        .env_remove("REG_CONFIG")
        .output()
        .expect("gc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = quota_ls(&data);
    assert!(ls.contains(" 0 "), "usage after gc:\n{ls}");
    push_blob(&c, &reg, "team/a", &blob(9, MB));
}
