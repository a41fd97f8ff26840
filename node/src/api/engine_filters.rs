//! docker's list filters (`?filters={"label":{"a=b":true},"status":{"running":true}}`, or the
//! older `{"label":["a=b"]}`): parsed once, each list naming the keys it supports. A key a list
//! does not support is refused with 400, never ignored. As docker: different keys must all
//! match; several values of one key match if any does, except `label`, where all must.

use std::collections::BTreeMap;

use super::error::ApiError;

#[derive(Debug, Default)]
pub(super) struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses `raw`, refusing keys outside `supported`.
    pub(super) fn parse(raw: Option<&str>, supported: &[&str]) -> Result<Self, ApiError> {
        let Some(raw) = raw.filter(|f| !f.trim().is_empty()) else {
            return Ok(Filters::default());
        };
        let v: BTreeMap<String, serde_json::Value> = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid filters {raw:?}: {e}")))?;
        let mut out = BTreeMap::new();
        for (k, v) in v {
            if !supported.contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "invalid filter '{k}': reg supports {} here",
                    supported.join(", ")
                )));
            }
            let values: Vec<String> = match v {
                serde_json::Value::Object(m) => m
                    .into_iter()
                    .filter(|(_, on)| on.as_bool() != Some(false))
                    .map(|(k, _)| k)
                    .collect(),
                serde_json::Value::Array(a) => a
                    .into_iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect(),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "invalid filter '{k}': {other} is not a list of values"
                    )))
                }
            };
            out.insert(k, values);
        }
        Ok(Filters(out))
    }

    pub(super) fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether `key` is unset, or one of its values satisfies `f`.
    pub(super) fn any(&self, key: &str, f: impl Fn(&str) -> bool) -> bool {
        match self.0.get(key) {
            None => true,
            Some(vs) => vs.iter().any(|v| f(v)),
        }
    }

    /// Whether `labels` has every `label` filter: `key` present, or `key=value` equal.
    pub(super) fn labels_match<'a>(
        &self,
        key: &str,
        labels: impl Fn(&str) -> Option<&'a str>,
    ) -> bool {
        self.values(key)
            .iter()
            .all(|want| match want.split_once('=') {
                Some((k, v)) => labels(k) == Some(v),
                None => labels(want).is_some(),
            })
    }
}

/// docker's `name` filter is a regular expression; reg matches the common forms: a substring,
/// anchored with `^` and/or `$`.
pub(super) fn name_matches(pattern: &str, name: &str) -> bool {
    let name = name.trim_start_matches('/');
    let (start, p) = match pattern.strip_prefix('^') {
        Some(rest) => (true, rest.trim_start_matches('/')),
        None => (false, pattern),
    };
    let (end, p) = match p.strip_suffix('$') {
        Some(rest) => (true, rest),
        None => (false, p),
    };
    match (start, end) {
        (true, true) => name == p,
        (true, false) => name.starts_with(p),
        (false, true) => name.ends_with(p),
        (false, false) => name.contains(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_of_dockers_filter_shapes_parse_and_unknown_keys_are_refused() {
        let f = Filters::parse(
            Some(r#"{"label":{"a=b":true,"c":true},"status":["running"]}"#),
            &["label", "status"],
        )
        .expect("parse");
        assert_eq!(f.values("label"), ["a=b", "c"]);
        assert_eq!(f.values("status"), ["running"]);
        let labels = |k: &str| match k {
            "a" => Some("b"),
            "c" => Some(""),
            _ => None,
        };
        assert!(f.labels_match("label", labels));
        assert!(!f.labels_match("label", |k| (k == "a").then_some("b")));
        assert!(Filters::parse(Some(r#"{"health":["healthy"]}"#), &["label"]).is_err());
        assert!(Filters::parse(Some("{}"), &[]).is_ok());
        assert!(Filters::parse(Some("nope"), &["label"]).is_err());
    }

    #[test]
    fn names_match_as_substrings_with_anchors() {
        assert!(name_matches("web", "/my-web-1"));
        assert!(name_matches("^my", "/my-web-1"));
        assert!(name_matches("^/my-web-1$", "/my-web-1"));
        assert!(!name_matches("^web", "/my-web-1"));
        assert!(name_matches("1$", "my-web-1"));
    }
}
