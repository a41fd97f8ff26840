//! Parses a `/v2/…` path once into a [`Route`], whatever the depth of the repository name.
//!
//! The suffixes are matched from the end (`…/manifests/<ref>`, `…/blobs/uploads/<id>`, …) and
//! what stands before them is the repository name, so `team/sub/app` needs no route of its own.

use crate::name::{NameError, RepoName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, String),
    UploadStart(RepoName),
    Upload(RepoName, String),
    Blob(RepoName, String),
    Referrers(RepoName, String),
}

/// `Ok(None)`: no such endpoint (404). `Err`: the endpoint exists but the name is invalid.
pub fn parse(path: &str) -> Result<Option<Route>, NameError> {
    let Some(rest) = path.strip_prefix("/v2") else {
        return Ok(None);
    };
    if rest.is_empty() || rest == "/" {
        return Ok(Some(Route::Base));
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Ok(None);
    };
    if rest == "_catalog" {
        return Ok(Some(Route::Catalog));
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name =
        |upto: usize| -> Result<RepoName, NameError> { RepoName::parse(&segs[..upto].join("/")) };
    // (index of the first suffix segment, constructor)
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Ok(Some(Route::Tags(name(n - 2)?)));
    }
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Ok(Some(Route::UploadStart(name(n - 2)?)));
    }
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let r = name(n - 3)?;
        return Ok(Some(if segs[n - 1].is_empty() {
            Route::UploadStart(r)
        } else {
            Route::Upload(r, segs[n - 1].to_string())
        }));
    }
    if n >= 3 && !segs[n - 1].is_empty() {
        let last = segs[n - 1].to_string();
        match segs[n - 2] {
            "manifests" => return Ok(Some(Route::Manifest(name(n - 2)?, last))),
            "blobs" => return Ok(Some(Route::Blob(name(n - 2)?, last))),
            "referrers" => return Ok(Some(Route::Referrers(name(n - 2)?, last))),
            _ => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RepoName {
        RepoName::parse(s).expect("valid name")
    }

    #[track_caller]
    fn check(path: &str, want: Option<Route>) {
        assert_eq!(parse(path).ok().flatten(), want, "{path}");
    }

    #[test]
    fn routes_table() {
        check("/v2/", Some(Route::Base));
        check("/v2", Some(Route::Base));
        check("/v2/_catalog", Some(Route::Catalog));
        check("/v2/a/tags/list", Some(Route::Tags(r("a"))));
        check(
            "/v2/team/sub/app/tags/list",
            Some(Route::Tags(r("team/sub/app"))),
        );
        check(
            "/v2/a/b/manifests/latest",
            Some(Route::Manifest(r("a/b"), "latest".into())),
        );
        check("/v2/a/blobs/uploads/", Some(Route::UploadStart(r("a"))));
        check("/v2/a/blobs/uploads", Some(Route::UploadStart(r("a"))));
        check(
            "/v2/a/blobs/uploads/123",
            Some(Route::Upload(r("a"), "123".into())),
        );
        check(
            "/v2/a/blobs/sha256:x",
            Some(Route::Blob(r("a"), "sha256:x".into())),
        );
        check(
            "/v2/blobs/manifests/x",
            Some(Route::Manifest(r("blobs"), "x".into())),
        );
        check(
            "/v2/a/referrers/sha256:x",
            Some(Route::Referrers(r("a"), "sha256:x".into())),
        );
        check("/v2/a/nothing", None);
        check("/v3/a/tags/list", None);
        assert!(parse("/v2/UPPER/tags/list").is_err());
    }
}
