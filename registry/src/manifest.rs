//! Just enough understanding of manifests to validate a push and index its references.
//!
//! The registry stores manifests byte-for-byte; this module only reads what it must check:
//! the descriptors a manifest points at (config, layers, child manifests, subject) and the
//! fields the referrers API reports. Parsing is deliberately lenient about fields it does not
//! need, so artifacts and future fields pass through untouched.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media;

/// A descriptor as it appears inside manifests and indexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// What the registry needs to know about a pushed manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The media type it is stored and served with.
    pub media_type: String,
    /// Blobs that must already be in the repository (config and distributable layers).
    pub blobs: Vec<Digest>,
    /// Manifests that must already be in the repository (an index's children).
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    /// `artifactType`, or for an image manifest without one, its config's media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest schemaVersion must be 2 (Docker schema 1 is not supported)")]
    SchemaVersion,
    #[error("manifest media type {0:?} is not supported (expected an OCI or Docker v2 manifest or index)")]
    UnsupportedType(String),
    #[error("Content-Type {header:?} does not match the manifest's mediaType {field:?}")]
    TypeMismatch { header: String, field: String },
    #[error("image manifest has no config descriptor")]
    NoConfig,
    #[error("index has no manifests list")]
    NoManifests,
    #[error("descriptor digest {0:?} is invalid")]
    BadDescriptor(String),
}

/// The largest manifest accepted, in bytes (distribution's limit).
pub const MAX_MANIFEST_LEN: usize = 4 << 20;

/// How deep a manifest's JSON may nest. Real manifests nest four or five levels; serde_json
/// stops at 128 and Go's encoding/json at 10,000, so a registry that stored anything deeper
/// would serve bytes some clients cannot read.
pub const MAX_JSON_DEPTH: usize = 64;

/// Why a pushed body is refused before it is even parsed: every manifest the registry stores
/// must be something any client can read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestLimitError {
    #[error("manifest is {size} bytes: the limit is {} MiB", MAX_MANIFEST_LEN >> 20)]
    TooLarge { size: usize },
    #[error("manifest is not valid UTF-8 (at byte {0})")]
    NotUtf8(usize),
    #[error("manifest JSON nests deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    #[error("manifest is not a JSON object")]
    NotObject,
}

/// Checks the limits of a pushed manifest without parsing it: at most [`MAX_MANIFEST_LEN`]
/// bytes, UTF-8, a JSON object, nested at most [`MAX_JSON_DEPTH`] levels. One pass, no
/// recursion; whether it is valid JSON is left to [`parse`], which a push calls next.
pub fn check_limits(bytes: &[u8]) -> Result<(), ManifestLimitError> {
    if bytes.len() > MAX_MANIFEST_LEN {
        return Err(ManifestLimitError::TooLarge { size: bytes.len() });
    }
    let text =
        std::str::from_utf8(bytes).map_err(|e| ManifestLimitError::NotUtf8(e.valid_up_to()))?;
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(ManifestLimitError::NotObject);
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(ManifestLimitError::TooDeep);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses `body` pushed with `content_type` (the request's Content-Type, possibly empty).
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Parsed, ManifestError> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| media::MANIFEST_TYPES.contains(c));
    let media_type = match (header, raw.media_type.as_deref()) {
        (Some(h), Some(f)) if h != f => {
            return Err(ManifestError::TypeMismatch {
                header: h.to_string(),
                field: f.to_string(),
            })
        }
        (Some(h), _) => h.to_string(),
        (None, Some(f)) if media::MANIFEST_TYPES.contains(&f) => f.to_string(),
        (None, Some(f)) => return Err(ManifestError::UnsupportedType(f.to_string())),
        (None, None) if raw.manifests.is_some() => media::OCI_INDEX.to_string(),
        (None, None) => media::OCI_MANIFEST.to_string(),
    };
    let digest = |d: &Descriptor| {
        Digest::parse(&d.digest).map_err(|_| ManifestError::BadDescriptor(d.digest.clone()))
    };
    let is_index = media_type == media::OCI_INDEX || media_type == media::DOCKER_LIST;
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    let mut artifact_type = raw.artifact_type.clone();
    if is_index {
        for m in raw.manifests.as_ref().ok_or(ManifestError::NoManifests)? {
            children.push(digest(m)?);
        }
    } else {
        let config = raw.config.as_ref().ok_or(ManifestError::NoConfig)?;
        blobs.push(digest(config)?);
        for l in raw.layers.iter().flatten() {
            let d = digest(l)?;
            if !media::is_foreign_layer(&l.media_type) {
                blobs.push(d);
            }
        }
        if artifact_type.is_none() {
            artifact_type = Some(config.media_type.clone());
        }
    }
    let subject = raw.subject.as_ref().map(digest).transpose()?;
    Ok(Parsed {
        media_type,
        blobs,
        children,
        subject,
        artifact_type,
        annotations: raw.annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_manifest_lists_config_and_layers() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":1}},
            "layers":[{{"mediaType":"{}","digest":"{}","size":2}}]}}"#,
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            d('a'),
            media::OCI_LAYER_GZIP,
            d('b')
        );
        let p = parse(body.as_bytes(), Some(media::OCI_MANIFEST)).expect("valid");
        assert_eq!(p.blobs.len(), 2);
        assert_eq!(p.artifact_type.as_deref(), Some(media::OCI_CONFIG));
    }

    #[test]
    fn mismatched_content_type_is_refused() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#,
            media::OCI_INDEX
        );
        assert!(matches!(
            parse(body.as_bytes(), Some(media::OCI_MANIFEST)),
            Err(ManifestError::TypeMismatch { .. })
        ));
    }

    #[test]
    fn schema1_and_garbage_are_refused() {
        assert_eq!(
            parse(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::SchemaVersion)
        );
        assert!(matches!(
            parse(b"not json", None),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn limits_refuse_what_clients_could_not_read_back() {
        let ok = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{}","size":1}}}}"#,
            media::OCI_CONFIG,
            d('a')
        );
        assert_eq!(check_limits(ok.as_bytes()), Ok(()));
        assert!(parse(ok.as_bytes(), None).is_ok());

        // 100,000 nested arrays: parse's lenient reading skipped them, and they were stored.
        let deep = format!(
            r#"{{"schemaVersion":2,"x":{}{},"config":{{"mediaType":"{}","digest":"{}","size":1}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000),
            media::OCI_CONFIG,
            d('a')
        );
        assert_eq!(
            check_limits(deep.as_bytes()),
            Err(ManifestLimitError::TooDeep)
        );
        let at = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert_eq!(check_limits(at(MAX_JSON_DEPTH - 1).as_bytes()), Ok(()));
        assert_eq!(
            check_limits(at(MAX_JSON_DEPTH).as_bytes()),
            Err(ManifestLimitError::TooDeep)
        );
        // Brackets inside strings (escaped quotes too) are text, not nesting.
        let quoted = format!("{{\"a\":\"\\\"{}\"}}", "[".repeat(MAX_JSON_DEPTH * 2));
        assert_eq!(check_limits(quoted.as_bytes()), Ok(()));

        // Invalid UTF-8 inside an ignored field: stored as is before.
        let mut bad = ok.clone().into_bytes();
        bad.splice(1..1, *b"\"x\":\"\xff\xfe\",");
        assert_eq!(check_limits(&bad), Err(ManifestLimitError::NotUtf8(6)));
        assert_eq!(
            ManifestLimitError::NotUtf8(6).to_string(),
            "manifest is not valid UTF-8 (at byte 6)"
        );

        for not_object in ["[]", "\"x\"", "1", "", "  "] {
            assert_eq!(
                check_limits(not_object.as_bytes()),
                Err(ManifestLimitError::NotObject),
                "{not_object:?}"
            );
        }
        let huge = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_MANIFEST_LEN));
        assert_eq!(
            check_limits(huge.as_bytes()),
            Err(ManifestLimitError::TooLarge { size: huge.len() })
        );
        assert_eq!(
            ManifestLimitError::TooDeep.to_string(),
            "manifest JSON nests deeper than 64 levels"
        );
    }

    #[test]
    fn index_children_and_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":3}}],
            "subject":{{"mediaType":"{}","digest":"{}","size":4}}}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST,
            d('c'),
            media::OCI_MANIFEST,
            d('e')
        );
        let p = parse(body.as_bytes(), None).expect("valid");
        assert_eq!(p.children.len(), 1);
        assert_eq!(p.subject.map(|s| s.to_string()), Some(d('e')));
    }
}
