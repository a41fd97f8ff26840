//! Compose projects in the registry: `reg compose publish REF` pushes the project as an OCI
//! artifact (`artifactType: application/vnd.docker.compose.project`, the model as one
//! `application/vnd.docker.compose.file+yaml` layer, every image pinned by digest, as
//! `docker compose publish --resolve-image-digests` makes it), and `-f oci://REF` reads one back
//! (the manifest's type and the layer's digest checked), so a company's deployment unit lives
//! in its own registry under the same access control as its images.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use reg_compose::Project;
use reg_node::api::AgentClient;
use reg_registry::client::RegistryClient;
use reg_registry::{Digest, Reference};
use serde_json::json;

use super::image::image_path;

pub const ARTIFACT_TYPE: &str = "application/vnd.docker.compose.project";
pub const FILE_TYPE: &str = "application/vnd.docker.compose.file+yaml";
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The most a published compose file may weigh when read back.
const MAX_FILE: u64 = 4 << 20;

/// What cannot travel in a published project (it names files of this machine).
fn local_only(project: &Project) -> anyhow::Result<()> {
    for (name, s) in &project.model.services {
        if s.image.is_none() {
            bail!("service {name} has no image (only build): push it under a name and give that as `image` to publish the project");
        }
        if s.volumes.iter().any(|m| m.kind == "bind") {
            bail!("service {name} mounts a host path: a published project cannot carry it (use a volume)");
        }
        if !s.env_file.is_empty() {
            bail!("service {name} uses env_file: a published project carries its environment in `environment`");
        }
        if !s.secrets.is_empty() || !s.configs.is_empty() {
            bail!("service {name} uses secrets or configs from files: they cannot be published");
        }
    }
    Ok(())
}

/// The image `image` pinned by the digest the node's store has for it (`repo@sha256:…`).
async fn pinned(
    agent: &AgentClient,
    image: &str,
    default_registry: &str,
) -> anyhow::Result<String> {
    let r = Reference::parse(image, default_registry)?;
    if r.digest.is_some() {
        return Ok(image.to_string());
    }
    let v = agent
        .json("GET", &format!("/images/{}/json", image_path(image)))
        .await
        .with_context(|| format!("image {image} is not on the node: pull or push it first"))?;
    let repo = format!("{}/{}", r.registry, r.repo);
    v["RepoDigests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str())
        .find(|d| d.split_once('@').is_some_and(|(name, _)| name == repo))
        .map(str::to_string)
        .with_context(|| {
            format!(
                "image {image} has no digest in {}: push it first (reg compose push)",
                r.registry
            )
        })
}

/// `reg compose publish REF`: the manifest's digest.
pub async fn publish(
    project: &Project,
    agent: &AgentClient,
    default_registry: &str,
    reference: &str,
) -> anyhow::Result<Digest> {
    local_only(project)?;
    let r = Reference::parse(reference, default_registry)?;
    let Some(tag) = r.tag.clone() else {
        bail!("{reference}: publish to a tag (REPO:TAG)");
    };
    let mut model = project.model.clone();
    model.name = Some(project.name.clone());
    for s in model.services.values_mut() {
        if let Some(image) = &s.image {
            s.image = Some(pinned(agent, image, default_registry).await?);
        }
    }
    let yaml = model.to_yaml()?;
    let client = RegistryClient::new(&r.registry)?;
    let empty = bytes::Bytes::from_static(b"{}");
    let empty_digest = Digest::sha256_of(&empty);
    let file = bytes::Bytes::from(yaml.into_bytes());
    let file_digest = Digest::sha256_of(&file);
    for (digest, data) in [(&empty_digest, empty.clone()), (&file_digest, file.clone())] {
        if !client.has_blob(&r.repo, digest).await? {
            client.push_blob_bytes(&r.repo, digest, data).await?;
        }
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": { "mediaType": EMPTY_TYPE, "digest": empty_digest.to_string(), "size": empty.len() },
        "layers": [{
            "mediaType": FILE_TYPE,
            "digest": file_digest.to_string(),
            "size": file.len(),
            "annotations": { "com.docker.compose.file": "compose.yaml" },
        }],
        "annotations": { "com.docker.compose.project": project.name },
    });
    let body = bytes::Bytes::from(serde_json::to_vec(&manifest)?);
    let digest = Digest::sha256_of(&body);
    client
        .put_manifest(&r.repo, tag.as_str(), MANIFEST_TYPE, body)
        .await?;
    Ok(digest)
}

/// Reads the project published at `reference` into `dir` (its file, checked): the file's path.
pub async fn fetch(reference: &str, default_registry: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let r = Reference::parse(reference, default_registry)?;
    let client = RegistryClient::new(&r.registry)?;
    let wanted = match (&r.digest, &r.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.as_str().to_string(),
        (None, None) => "latest".to_string(),
    };
    let (body, _, _) = client.manifest(&r.repo, &wanted).await?;
    let m: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("{reference}: the manifest is not JSON"))?;
    if m["artifactType"] != ARTIFACT_TYPE {
        bail!(
            "{reference} is not a compose project (artifactType {})",
            m["artifactType"]
        );
    }
    let layer = m["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["mediaType"] == FILE_TYPE)
        .with_context(|| format!("{reference} has no compose file"))?;
    let digest = Digest::parse(layer["digest"].as_str().unwrap_or(""))
        .with_context(|| format!("{reference}: its compose file's digest"))?;
    if layer["size"].as_u64().unwrap_or(u64::MAX) > MAX_FILE {
        bail!("{reference}: its compose file is larger than {MAX_FILE} bytes");
    }
    let mut resp = client.blob(&r.repo, &digest, 0).await?;
    // Read up to the limit, whatever the registry says the length is.
    let mut data = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .with_context(|| format!("{reference}: reading its compose file"))?
    {
        data.extend_from_slice(&chunk);
        if data.len() as u64 > MAX_FILE {
            bail!("{reference}: its compose file is larger than {MAX_FILE} bytes");
        }
    }
    if Digest::sha256_of(&data) != digest {
        bail!("{reference}: its compose file does not match its digest");
    }
    let path = dir.join("compose.yaml");
    std::fs::write(&path, &data).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
