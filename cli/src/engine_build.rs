//! docker's `POST /build` (the classic builder's contract) on reg's builder: the body is the
//! whole context as a tar (gzip-compressed or not), the query names the tags, the Dockerfile,
//! build args, target, labels and `nocache`; the answer streams docker's JSON messages
//! (`{"stream": "Step 1/3 : …"}`, `{"aux": {"ID": …}}`, `{"error": …}`). Query parameters reg
//! cannot honour are refused with 400 when set to anything but their zero value.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::TryStreamExt;
use reg_builder::build::{Event, Log};
use reg_node::api::{decode_auth, AgentState, ApiError};
use reg_registry::Reference;

use crate::build::{NodeRunner, NodeStore};

/// Parameters the docker CLI sends with zero values when unused, and reg does not implement.
const UNSUPPORTED: &[&str] = &[
    "remote",
    "extrahosts",
    "cpusetcpus",
    "cpusetmems",
    "cpushares",
    "cpuquota",
    "cpuperiod",
    "memory",
    "memswap",
    "cgroupparent",
    "shmsize",
    "squash",
    "cachefrom",
    "networkmode",
    "isolation",
    "ulimits",
    "outputs",
    "session",
    "buildid",
    "pull",
];

/// Parameters accepted and ignored because they ask for what reg always does (`rm`: the
/// intermediate containers go; `forcerm`: even after a failure) or only change the output.
const HARMLESS: &[&str] = &[
    "rm",
    "forcerm",
    "q",
    "version",
    "platform",
    "dockerfile",
    "t",
    "buildargs",
    "labels",
    "target",
    "nocache",
];

fn is_zero(v: &str) -> bool {
    matches!(
        v,
        "" | "0" | "false" | "[]" | "{}" | "null" | "default" | "-1"
    )
}

fn message(v: serde_json::Value) -> Bytes {
    Bytes::from(format!("{v}\n"))
}

/// What a build asks for, from its query.
struct Params {
    tags: Vec<String>,
    dockerfile: String,
    build_args: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    target: Option<String>,
    no_cache: bool,
    quiet: bool,
}

fn params(st: &AgentState, raw: Option<&str>) -> Result<Params, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("the build query: {e}")))?;
    let mut p = Params {
        tags: Vec::new(),
        dockerfile: "Dockerfile".into(),
        build_args: BTreeMap::new(),
        labels: BTreeMap::new(),
        target: None,
        no_cache: false,
        quiet: false,
    };
    let json_map = |k: &str, v: &str| -> Result<BTreeMap<String, String>, ApiError> {
        if is_zero(v) {
            return Ok(BTreeMap::new());
        }
        // Build args may be null (declared without a value): those are left out.
        let m: BTreeMap<String, Option<String>> =
            serde_json::from_str(v).map_err(|e| ApiError::bad_request(format!("{k}: {e}")))?;
        Ok(m.into_iter().filter_map(|(k, v)| Some((k, v?))).collect())
    };
    for (k, v) in &pairs {
        match k.as_str() {
            "t" => {
                let r = Reference::parse(v, &st.default_registry)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                p.tags.push(r.to_string());
            }
            "dockerfile" if !v.is_empty() => p.dockerfile = v.clone(),
            "buildargs" => p.build_args = json_map(k, v)?,
            "labels" => p.labels = json_map(k, v)?,
            "target" if !v.is_empty() => p.target = Some(v.clone()),
            "nocache" => p.no_cache = matches!(v.as_str(), "1" | "true" | "True"),
            "q" => p.quiet = matches!(v.as_str(), "1" | "true" | "True"),
            "version" if !matches!(v.as_str(), "" | "1") => {
                return Err(ApiError::bad_request(
                    "BuildKit (version=2) is not served by reg: build with the classic builder \
                     (DOCKER_BUILDKIT=0) or with `reg build`",
                ))
            }
            "platform" if !v.is_empty() => {
                let (os, arch) = reg_node::image::node_platform();
                if *v != format!("{os}/{arch}") {
                    return Err(ApiError::bad_request(format!(
                        "platform {v} is not this node's ({os}/{arch})"
                    )));
                }
            }
            k if UNSUPPORTED.contains(&k) && !is_zero(v) => {
                return Err(ApiError::bad_request(format!(
                    "build option {k}={v} is not supported by reg yet (leave it unset)"
                )))
            }
            k if UNSUPPORTED.contains(&k) || HARMLESS.contains(&k) => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "build option {other} is not known to reg"
                )))
            }
        }
    }
    if !p.labels.is_empty() {
        return Err(ApiError::bad_request(
            "build --label is not supported by reg yet: use LABEL in the Dockerfile",
        ));
    }
    Ok(p)
}

/// `POST /build`.
pub async fn build(
    State(st): State<Arc<AgentState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let p = params(&st, raw.as_deref())?;
    // One copy per build, gone after it: a classic build sends its whole context every time.
    let id = {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(ApiError::internal)?;
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    };
    let ctx_root = st
        .store
        .root()
        .join("build-contexts")
        .join(format!("engine-{id}"));
    let opts = reg_builder::build::Options {
        file: p.dockerfile.clone(),
        build_args: p.build_args,
        target: p.target,
        no_cache: p.no_cache,
        compression: reg_builder::layer::Compression::Gzip,
        epoch: 0,
        tags: p.tags.clone(),
        cache_dir: st.store.build_cache_dir(),
    };
    let store = NodeStore::new(
        st.clone(),
        decode_auth(&headers),
        st.default_registry.clone(),
    );
    let runner = NodeRunner { st: st.clone() };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let send = tx.clone();
    let quiet = p.quiet;
    let log: Log = Arc::new(move |ev: Event| {
        if quiet {
            return;
        }
        let text = match ev {
            Event::Step { n, total, text, .. } => format!("Step {n}/{total} : {text}\n"),
            Event::Cached => " ---> Using cache\n".to_string(),
            Event::Done { .. } => return,
            Event::Output { line } => format!("{line}\n"),
            Event::Note { message } => format!("{message}\n"),
        };
        let _ = send.send(message(serde_json::json!({ "stream": text })));
    });
    let log = crate::build::metered(&st, log);
    let dockerfile = p.dockerfile;
    let cache_st = st.clone();
    tokio::spawn(async move {
        let result = async {
            let stream = body
                .into_data_stream()
                .map_err(|e| std::io::Error::other(e.to_string()));
            let reader =
                tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
            let dir = ctx_root.clone();
            let context = tokio::task::spawn_blocking(move || {
                reg_builder::context::apply_archive(reader, &dir, &dockerfile)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            let text = context.dockerfile.clone().unwrap_or_default();
            let df =
                reg_builder::dockerfile::parse(&opts.file, &text).map_err(|e| e.to_string())?;
            reg_builder::build::build(&store, &runner, &df, &context, &opts, log)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if result.is_err() {
            cache_st.containers.metrics.build_failed();
        }
        let dir = ctx_root.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        crate::build::limit_build_cache(&cache_st).await;
        match result {
            Ok(img) => {
                let id = img.id.to_string();
                let short = id
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect::<String>();
                let _ = tx.send(message(serde_json::json!({ "aux": { "ID": id } })));
                if !quiet {
                    let _ = tx.send(message(
                        serde_json::json!({ "stream": format!("Successfully built {short}\n") }),
                    ));
                    for t in &opts.tags {
                        let _ = tx.send(message(
                            serde_json::json!({ "stream": format!("Successfully tagged {t}\n") }),
                        ));
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(message(
                    serde_json::json!({ "errorDetail": { "message": e }, "error": e }),
                ));
            }
        }
    });
    Ok(reg_node::api::stream_response(rx).into_response())
}
