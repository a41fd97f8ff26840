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
