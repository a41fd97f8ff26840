//! The distribution spec with auth on, every request made as an admin user with Basic
//! credentials: access control must not change any behaviour for a caller with full rights.

use reg_tests::{Client, Registry};

const PASSWORD: &str = "conformance-admin-password";

fn start() -> Registry {
    let reg = Registry::start_fresh(|data| {
        reg_tests::admin(
            data,
            &["user", "add", "root", "--admin", "--password-stdin"],
            PASSWORD,
        );
    });
    // Auth really is on: anonymous is turned away.
    let anon = reg_tests::client()
        .get(reg.url("/v2/"))
        .send()
        .expect("GET /v2/");
    assert_eq!(anon.status(), 401);
    reg
}

fn client() -> Client {
    reg_tests::client_as("root", PASSWORD)
}

#[allow(clippy::duplicate_mod)]
#[path = "shared/conformance.rs"]
mod conformance;
