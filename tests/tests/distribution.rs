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
