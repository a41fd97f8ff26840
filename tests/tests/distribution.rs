//! The distribution spec against an open registry (no users: auth off).

use reg_tests::{Client, Registry};

fn start() -> Registry {
    Registry::start()
}

fn client() -> Client {
    reg_tests::client()
}

#[allow(clippy::duplicate_mod)]
#[path = "shared/conformance.rs"]
mod conformance;

/// A blob pushed again (same bytes, another repository, past the size where hashing moves to a
/// thread of its own) keeps the object that was there: one object, both repositories serve it,
/// and the second upload's file is removed (off the request's path, so waited for).
#[test]
fn a_blob_pushed_again_keeps_its_object_and_leaves_no_upload_behind() {
    let reg = start();
    let c = client();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let d = reg_tests::push_blob(&c, &reg, "first/app", &data);
    let hex = d.trim_start_matches("sha256:").to_string();
    let objects = || reg_tests::stored(reg.data_dir(), "sha256/");
    let before = objects();
    assert!(before.iter().any(|o| o.ends_with(&hex)), "{before:?}");
    assert_eq!(reg_tests::push_blob(&c, &reg, "second/app", &data), d);
    assert_eq!(objects(), before);
    for repo in ["first/app", "second/app"] {
        let r = c
            .get(reg.url(&format!("/v2/{repo}/blobs/{d}")))
            .send()
            .expect("GET");
        assert_eq!(r.status(), 200, "{repo}");
        assert!(r.bytes().expect("body").as_ref() == &data[..], "{repo}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !reg_tests::stored(reg.data_dir(), "_uploads/").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "upload files left: {:?}",
            reg_tests::stored(reg.data_dir(), "_uploads/")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
