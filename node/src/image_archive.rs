//! `docker save` and `docker load`: images as docker-archive tars, in docker 25's layout (an
//! OCI image layout — `oci-layout`, `index.json`, `blobs/sha256/…` — with docker's
//! `manifest.json` beside it), which docker's own `load` reads; and loading both that layout
//! and the older one (`<id>/layer.tar`, `<id>.json`) that docker before 25 saves.
//!
//! A loaded archive is untrusted: its entries are spooled into files of our own naming (no
//! entry path is ever used on the host), layers go through the same unpacker as pulls, and each
//! layer's diff id must match the config's `rootfs.diff_ids` before the image is recorded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use reg_registry::digest::{chain_ids, Algorithm, Digest, Hasher};
use reg_registry::{media, Reference};

use crate::image::{ImageRecord, ImageStore, PullError};

/// The largest `manifest.json`, config or `index.json` read into memory.
const MAX_JSON: u64 = 16 << 20;
/// The most entries an archive may have.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("image archive: {0}")]
    Invalid(String),
    #[error("image archive: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] PullError),
}

fn invalid(m: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid(m.into())
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

fn append(tar: &mut tar::Builder<impl Write>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    tar.append_data(&mut h, name, data)
}

/// Writes `images` (references and their records) as one archive to `out`.
pub fn save(
    store: &ImageStore,
    images: &[ImageRecord],
    out: impl Write,
) -> Result<(), ArchiveError> {
    let mut tar = tar::Builder::new(out);
    let mut written: HashSet<String> = HashSet::new();
    let mut manifest_json = Vec::new();
    let mut index = Vec::new();
    // One manifest.json entry per image id, with every name it has here.
    let mut by_id: BTreeMap<String, Vec<&ImageRecord>> = BTreeMap::new();
    for r in images {
        by_id.entry(r.id.clone()).or_default().push(r);
    }
    for recs in by_id.values() {
        let rec = recs[0];
        if rec.manifest.is_empty() || rec.config_raw.is_empty() {
            return Err(invalid(format!(
                "{} was recorded before reg kept manifests: pull it again to save it",
                rec.reference
            )));
        }
        let m: serde_json::Value =
            serde_json::from_str(&rec.manifest).map_err(|e| invalid(e.to_string()))?;
        let config = Digest::sha256_of(rec.config_raw.as_bytes());
        let mut blobs = vec![(blob_name(&config), rec.config_raw.as_bytes().to_vec())];
        let manifest_digest = Digest::sha256_of(rec.manifest.as_bytes());
        blobs.push((
            blob_name(&manifest_digest),
            rec.manifest.as_bytes().to_vec(),
        ));
        for (name, data) in blobs {
            if written.insert(name.clone()) {
                append(&mut tar, &name, &data)?;
            }
        }
        let mut layers = Vec::new();
        for l in m["layers"].as_array().into_iter().flatten() {
            let d = l["digest"]
                .as_str()
                .and_then(|d| Digest::parse(d).ok())
                .ok_or_else(|| invalid(format!("{}: a layer without a digest", rec.reference)))?;
            let name = blob_name(&d);
            if written.insert(name.clone()) {
                let path = store.blob_path(&d);
                let mut f = std::fs::File::open(&path).map_err(|e| {
                    invalid(format!(
                        "{}: layer {d} is not on this node ({e})",
                        rec.reference
                    ))
                })?;
                tar.append_file(&name, &mut f)?;
            }
            layers.push(name);
        }
        let tags: Vec<&str> = recs.iter().map(|r| r.reference.as_str()).collect();
        manifest_json.push(serde_json::json!({
            "Config": blob_name(&config),
            "RepoTags": tags,
            "Layers": layers,
        }));
        for r in recs {
            let tag = Reference::parse(&r.reference, "")
                .ok()
                .and_then(|p| p.tag.map(|t| t.to_string()))
                .unwrap_or_default();
            index.push(serde_json::json!({
                "mediaType": r.media_type,
                "digest": manifest_digest.to_string(),
                "size": r.manifest.len(),
                "annotations": {
                    "io.containerd.image.name": r.reference,
                    "org.opencontainers.image.ref.name": tag,
                },
            }));
        }
    }
    append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": index,
    });
    append(&mut tar, "index.json", index.to_string().as_bytes())?;
    let mj = serde_json::Value::Array(manifest_json).to_string();
    append(&mut tar, "manifest.json", mj.as_bytes())?;
    tar.into_inner()?.flush()?;
    Ok(())
}

/// The archive's entries, spooled into `dir` under names of our own.
struct Spool {
    dir: PathBuf,
    files: HashMap<String, PathBuf>,
    /// Symlinks (docker's older layout links repeated layers), by path → target path.
    links: HashMap<String, String>,
}

impl Spool {
    fn read(input: impl Read, dir: &Path) -> Result<Spool, ArchiveError> {
        std::fs::create_dir_all(dir)?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            files: HashMap::new(),
            links: HashMap::new(),
        };
        let mut ar = tar::Archive::new(input);
        for (n, entry) in ar.entries()?.enumerate() {
            if n >= MAX_ENTRIES {
                return Err(invalid(format!("more than {MAX_ENTRIES} entries")));
            }
            let mut entry = entry?;
            let name = normalize(&entry.path()?.to_string_lossy());
            let kind = entry.header().entry_type();
            if kind.is_file() {
                let file = spool.dir.join(n.to_string());
                let mut f = std::fs::File::create(&file)?;
                std::io::copy(&mut entry, &mut f)?;
                spool.files.insert(name, file);
            } else if kind.is_symlink() {
                let target = entry
                    .link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // Relative to the link's directory, as a path inside the archive.
                let base = name.rsplit_once('/').map_or("", |(d, _)| d);
                let resolved = normalize(&format!("{base}/{target}"));
                spool.links.insert(name, resolved);
            }
        }
        Ok(spool)
    }

    /// The spooled file of archive path `name` (through at most a few links).
    fn file(&self, name: &str) -> Result<&Path, ArchiveError> {
        let mut cur = normalize(name);
        for _ in 0..8 {
            if let Some(f) = self.files.get(&cur) {
                return Ok(f);
            }
            match self.links.get(&cur) {
                Some(t) => cur = t.clone(),
                None => break,
            }
        }
        Err(invalid(format!("{name} is not in the archive")))
    }

    fn json(&self, name: &str) -> Result<(Vec<u8>, serde_json::Value), ArchiveError> {
        let mut bytes = Vec::new();
        std::fs::File::open(self.file(name)?)?
            .take(MAX_JSON + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(invalid(format!("{name} is larger than {MAX_JSON} bytes")));
        }
        let v = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("{name}: {e}")))?;
        Ok((bytes, v))
    }
}

/// An archive path without `./`, `..` resolved lexically (never above the archive's root).
fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

fn sha256_file(path: &Path) -> std::io::Result<Digest> {
    let mut h = Hasher::new(Algorithm::Sha256);
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

/// Loads every image of the archive read from `input`; returns the references recorded.
/// `default_registry` completes names without one.
pub fn load(
    store: &ImageStore,
    input: impl Read,
    default_registry: &str,
) -> Result<Vec<String>, ArchiveError> {
    let dir = store.tmp_path("load");
    let result = load_spooled(store, input, default_registry, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn load_spooled(
    store: &ImageStore,
    input: impl Read,
    default_registry: &str,
    dir: &Path,
) -> Result<Vec<String>, ArchiveError> {
    let spool = Spool::read(input, dir)?;
    let (_, manifest) = spool
        .json("manifest.json")
        .map_err(|_| invalid("no manifest.json: not a docker-archive (docker save) tar"))?;
    let mut loaded = Vec::new();
    for (i, image) in manifest.as_array().into_iter().flatten().enumerate() {
        let config_name = image["Config"]
            .as_str()
            .ok_or_else(|| invalid(format!("manifest.json entry {i} has no Config")))?;
        let (config_raw, config) = spool.json(config_name)?;
        let diff_ids: Vec<Digest> = config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| d.as_str().and_then(|d| Digest::parse(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid(format!("{config_name}: rootfs.diff_ids unreadable")))?;
        let layers: Vec<&str> = image["Layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str())
            .collect();
        if layers.len() != diff_ids.len() {
            return Err(invalid(format!(
                "{config_name}: {} layers for {} diff ids",
                layers.len(),
                diff_ids.len()
            )));
        }
        let chains = chain_ids(&diff_ids);
        let mut descriptors = Vec::new();
        for (n, layer) in layers.iter().enumerate() {
            let file = spool.file(layer)?;
            let digest = sha256_file(file)?;
            let size = std::fs::metadata(file)?.len();
            let mut magic = [0u8; 4];
            let got = std::fs::File::open(file)?.read(&mut magic)?;
            let media_type = match crate::unpack::detect(&magic[..got]) {
                crate::unpack::Compression::Gzip => media::OCI_LAYER_GZIP,
                crate::unpack::Compression::Zstd => media::OCI_LAYER_ZSTD,
                crate::unpack::Compression::None => media::OCI_LAYER_TAR,
            };
            let chain = chains[n].to_string();
            if !store.has_layer(&digest, &chain) {
                let snap = store.tmp_path("load-snap");
                std::fs::create_dir_all(&snap)?;
                let opts = crate::unpack::Options {
                    diff_algorithm: Some(Algorithm::Sha256),
                    ..crate::unpack::Options::default()
                };
                let unpacked =
                    crate::unpack::unpack(std::fs::File::open(file)?, &snap, layer, opts);
                let stats = match unpacked {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&snap);
                        return Err(invalid(format!("layer {layer}: {e}")));
                    }
                };
                if stats.diff_id.as_ref() != Some(&diff_ids[n]) {
                    let _ = std::fs::remove_dir_all(&snap);
                    return Err(invalid(format!(
                        "layer {layer} does not match the config's diff id {}",
                        diff_ids[n]
                    )));
                }
                // The spooled file is ours: it becomes the blob.
                let blob = store.tmp_path("load-blob");
                std::fs::rename(file, &blob)?;
                store.adopt_layer(&blob, &digest, &snap, &chain)?;
                let _ = std::fs::remove_file(&blob);
                let _ = std::fs::remove_dir_all(&snap);
            }
            descriptors.push(serde_json::json!({
                "mediaType": media_type, "digest": digest.to_string(), "size": size,
            }));
        }
        let config_digest = Digest::sha256_of(&config_raw);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {
                "mediaType": media::OCI_CONFIG,
                "digest": config_digest.to_string(),
                "size": config_raw.len(),
            },
            "layers": descriptors,
        })
        .to_string();
        let chain: Vec<String> = chains.iter().map(ToString::to_string).collect();
        let tags: Vec<&str> = image["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .collect();
        if tags.is_empty() {
            return Err(invalid(format!(
                "image {config_digest} has no name in the archive: reg keeps images by name (save it by name)"
            )));
        }
        for t in tags {
            let r = Reference::parse(t, default_registry).map_err(|e| invalid(e.to_string()))?;
            let rec = store.put_built(
                &r.to_string(),
                manifest.as_bytes(),
                &config_raw,
                chain.clone(),
                BTreeMap::new(),
            )?;
            loaded.push(rec.reference);
        }
    }
    if loaded.is_empty() {
        return Err(invalid("manifest.json lists no image"));
    }
    Ok(loaded)
}

/// A new image made on this node (`commit`, `import`): `base`'s layers (none for an import)
/// and the layer tar in `blob` (gzip, zstd or plain; ours, it becomes the stored blob), with
/// `config` as the image config (its `rootfs` and `history` are completed here), stored as
/// `reference`. The layer is unpacked into its snapshot first: a tar that does not unpack is
/// refused and nothing is stored.
pub fn add_layer_image(
    store: &ImageStore,
    base: Option<&ImageRecord>,
    blob: &Path,
    mut config: serde_json::Value,
    history: serde_json::Value,
    reference: Option<&str>,
) -> Result<ImageRecord, ArchiveError> {
    let (mut descriptors, mut diff_ids, sources) = match base {
        Some(b) => {
            let m: serde_json::Value = serde_json::from_str(&b.manifest)
                .map_err(|e| invalid(format!("{}: manifest: {e}", b.reference)))?;
            let ids: Vec<Digest> = b.config["rootfs"]["diff_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| d.as_str().and_then(|d| Digest::parse(d).ok()))
                .collect::<Option<_>>()
                .ok_or_else(|| invalid(format!("{}: rootfs.diff_ids unreadable", b.reference)))?;
            (
                m["layers"].as_array().cloned().unwrap_or_default(),
                ids,
                b.sources.clone(),
            )
        }
        None => (Vec::new(), Vec::new(), BTreeMap::new()),
    };
    let digest = sha256_file(blob)?;
    let size = std::fs::metadata(blob)?.len();
    let mut magic = [0u8; 4];
    let got = std::fs::File::open(blob)?.read(&mut magic)?;
    let media_type = match crate::unpack::detect(&magic[..got]) {
        crate::unpack::Compression::Gzip => media::OCI_LAYER_GZIP,
        crate::unpack::Compression::Zstd => media::OCI_LAYER_ZSTD,
        crate::unpack::Compression::None => media::OCI_LAYER_TAR,
    };
    let snap = store.tmp_path("new-layer");
    std::fs::create_dir_all(&snap)?;
    let opts = crate::unpack::Options {
        diff_algorithm: Some(Algorithm::Sha256),
        ..crate::unpack::Options::default()
    };
    let unpacked = crate::unpack::unpack(std::fs::File::open(blob)?, &snap, "the new layer", opts);
    let diff_id = match unpacked.map(|s| s.diff_id) {
        Ok(Some(d)) => d,
        Ok(None) => {
            let _ = std::fs::remove_dir_all(&snap);
            return Err(invalid("the new layer has no diff id"));
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&snap);
            return Err(invalid(format!("the new layer: {e}")));
        }
    };
    diff_ids.push(diff_id);
    let chains = chain_ids(&diff_ids);
    let chain = chains.last().map(ToString::to_string).unwrap_or_default();
    let adopted = store.adopt_layer(blob, &digest, &snap, &chain);
    let _ = std::fs::remove_dir_all(&snap);
    adopted?;
    descriptors.push(serde_json::json!({
        "mediaType": media_type, "digest": digest.to_string(), "size": size,
    }));
    config["rootfs"] = serde_json::json!({
        "type": "layers",
        "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    if !config["history"].is_array() {
        config["history"] = serde_json::json!([]);
    }
    if let Some(h) = config["history"].as_array_mut() {
        h.push(history);
    }
    let config_raw = serde_json::to_vec(&config).map_err(|e| invalid(e.to_string()))?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {
            "mediaType": media::OCI_CONFIG,
            "digest": Digest::sha256_of(&config_raw).to_string(),
            "size": config_raw.len(),
        },
        "layers": descriptors,
    })
    .to_string();
    // Without a name, the image is kept under its id (docker's `<none>:<none>`).
    let reference = reference
        .map(str::to_string)
        .unwrap_or_else(|| Digest::sha256_of(&config_raw).to_string());
    Ok(store.put_built(
        &reference,
        manifest.as_bytes(),
        &config_raw,
        chains.iter().map(ToString::to_string).collect(),
        sources,
    )?)
}

/// Applies `docker commit --change` / `docker import --change` instructions to an image
/// config: `CMD`, `ENTRYPOINT` (JSON or shell form), `ENV`, `LABEL`, `EXPOSE`, `USER`,
/// `WORKDIR`, `STOPSIGNAL`, `VOLUME`. Anything else is refused, naming it.
pub fn apply_changes(config: &mut serde_json::Value, changes: &[String]) -> Result<(), String> {
    use serde_json::{json, Value};
    if !config["config"].is_object() {
        config["config"] = json!({});
    }
    let c = &mut config["config"];
    for change in changes.iter().flat_map(|c| c.lines()).map(str::trim) {
        if change.is_empty() {
            continue;
        }
        let (word, rest) = change
            .split_once(char::is_whitespace)
            .map(|(w, r)| (w, r.trim()))
            .unwrap_or((change, ""));
        let exec_form = || -> Value {
            match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) => json!(v),
                Err(_) => json!(["/bin/sh", "-c", rest]),
            }
        };
        // `K=V K2="V 2"` or the old `K V` form.
        let pairs = || -> Vec<(String, String)> {
            if !rest.contains('=') {
                return rest
                    .split_once(char::is_whitespace)
                    .map(|(k, v)| vec![(k.to_string(), v.trim().to_string())])
                    .unwrap_or_default();
            }
            let mut out = Vec::new();
            let mut chars = rest.chars().peekable();
            while chars.peek().is_some() {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                let mut val = String::new();
                let mut quote = None;
                while let Some(&ch) = chars.peek() {
                    chars.next();
                    match (quote, ch) {
                        (None, '"' | '\'') => quote = Some(ch),
                        (Some(q), ch) if ch == q => quote = None,
                        (None, ch) if ch.is_whitespace() => break,
                        (_, ch) => val.push(ch),
                    }
                }
                if !key.is_empty() {
                    out.push((key, val));
                }
            }
            out
        };
        match word.to_ascii_uppercase().as_str() {
            "CMD" => c["Cmd"] = exec_form(),
            "ENTRYPOINT" => c["Entrypoint"] = exec_form(),
            "USER" => c["User"] = json!(rest),
            "WORKDIR" => c["WorkingDir"] = json!(rest),
            "STOPSIGNAL" => c["StopSignal"] = json!(rest),
            "ENV" => {
                let mut env: Vec<String> = c["Env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect();
                for (k, v) in pairs() {
                    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
                    env.push(format!("{k}={v}"));
                }
                c["Env"] = json!(env);
            }
            "LABEL" => {
                if !c["Labels"].is_object() {
                    c["Labels"] = json!({});
                }
                for (k, v) in pairs() {
                    c["Labels"][k] = json!(v);
                }
            }
            "EXPOSE" => {
                if !c["ExposedPorts"].is_object() {
                    c["ExposedPorts"] = json!({});
                }
                for p in rest.split_whitespace() {
                    let key = if p.contains('/') { p.to_string() } else { format!("{p}/tcp") };
                    c["ExposedPorts"][key] = json!({});
                }
            }
            "VOLUME" => {
                if !c["Volumes"].is_object() {
                    c["Volumes"] = json!({});
                }
                let list: Vec<String> = serde_json::from_str(rest)
                    .unwrap_or_else(|_| rest.split_whitespace().map(str::to_string).collect());
                for v in list {
                    c["Volumes"][v] = json!({});
                }
            }
            other => {
                return Err(format!(
                    "--change {change:?}: {other} is not one of CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL"
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_normalize_inside_the_archive() {
        assert_eq!(normalize("./blobs/sha256/ab"), "blobs/sha256/ab");
        assert_eq!(normalize("abc/../def/layer.tar"), "def/layer.tar");
        assert_eq!(normalize("../../etc/passwd"), "etc/passwd");
        assert_eq!(normalize("/abs//x"), "abs/x");
    }
}
