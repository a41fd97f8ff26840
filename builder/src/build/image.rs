//! The end of a build: the OCI image config and manifest of the target stage, stored.

#![deny(clippy::disallowed_methods)]

use reg_registry::digest::Digest;
use serde_json::json;

use super::api::{Image, StepRunner, Store};
use super::builder::Builder;
use super::error::BuildError;
use super::state::{rfc3339, State};

pub(super) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(super) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

impl<S: Store, R: StepRunner> Builder<'_, S, R> {
    pub(super) fn finish(&self, st: State) -> Result<Image, BuildError> {
        let mut cfg = st.config.clone();
        cfg.retain(|_, v| !v.is_null());
        let config = json!({
            "architecture": st.arch,
            "os": "linux",
            "created": rfc3339(self.opts.epoch),
            "config": cfg,
            "rootfs": {
                "type": "layers",
                "diff_ids": st.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
            "history": st.history,
        });
        let config = serde_json::to_vec(&config)?;
        let id = Digest::sha256_of(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": id, "size": config.len() },
            "layers": st.layers.iter().map(|l| json!({
                "mediaType": l.media_type,
                "digest": l.digest,
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest)?;
        let image = Image {
            digest: Digest::sha256_of(&manifest),
            manifest,
            config,
            id,
            chain: st.chain.clone(),
            layers: st.layers.clone(),
        };
        self.store
            .save(&self.opts.tags, &image)
            .map_err(|e| BuildError::Save(Box::new(e)))?;
        Ok(image)
    }
}
