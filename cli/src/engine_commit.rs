//! docker's `POST /commit` on a reg node: a container's changes (its overlay upper directory)
//! written as one layer by the builder's layer writer — the same one `reg build` commits its
//! steps with (whiteouts and opaque directories as OCI has them, only regular files opened,
//! read through a strict tree) — on top of its image's layers, with the container's own config
//! (environment, command, working directory, user, labels) and `--change`s. A running
//! container is frozen while its layer is written (`pause=false` skips that, as docker's).

use std::sync::Arc;

use axum::extract::{Query, RawQuery, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use reg_node::api::{AgentState, ApiError};
use reg_node::containers::ContainerError;
use reg_registry::Reference;

#[derive(Deserialize)]
pub struct CommitQuery {
    container: String,
    #[serde(default)]
    repo: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    pause: Option<String>,
}

/// `POST /commit?container=C&repo=R&tag=T&comment=…&author=…&changes=…` (body: a config whose
/// set fields replace the container's, optional): the new image's id.
pub async fn commit(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<CommitQuery>,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let rec = st.containers.resolve(&q.container)?;
    let reference = match q.repo.as_deref().filter(|r| !r.is_empty()) {
        Some(repo) => {
            let name = match q.tag.as_deref().filter(|t| !t.is_empty()) {
                Some(t) => format!("{repo}:{t}"),
                None => repo.to_string(),
            };
            Some(
                Reference::parse(&name, &st.default_registry)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?
                    .to_string(),
            )
        }
        None => None,
    };
    let base = {
        let (store, image) = (st.store.clone(), rec.image.clone());
        tokio::task::spawn_blocking(move || store.get(&image))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::from(ContainerError::Conflict(format!(
                    "the image {} of container {} is gone: commit needs its layers (pull it again)",
                    rec.image, rec.name
                )))
            })?
    };
    let mut config = base.config.clone();
    let c = &mut config["config"];
    c["Env"] = json!(rec.spec.env);
    if !rec.request.cmd.is_empty() {
        c["Cmd"] = json!(rec.request.cmd);
    }
    if let Some(e) = &rec.request.entrypoint {
        c["Entrypoint"] = json!(e);
    }
    c["WorkingDir"] = json!(rec.spec.cwd);
    if let Some(u) = &rec.request.user {
        c["User"] = json!(u);
    }
    c["Labels"] = json!(rec.request.labels);
    if let Some(h) = &rec.request.healthcheck {
        c["Healthcheck"] = h.to_docker();
    }
    // The body's set fields (docker's `Config` shape) replace the container's.
    if let Ok(Value::Object(over)) = serde_json::from_slice::<Value>(&body) {
        for (k, v) in over {
            if !(v.is_null() || v.as_str() == Some("")) {
                c[k] = v;
            }
        }
    }
    let changes = reg_node::api::changes_of(raw.as_deref());
    reg_node::image_archive::apply_changes(&mut config, &changes).map_err(ApiError::bad_request)?;
    let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    config["created"] = json!(now);
    if let Some(a) = q.author.as_deref().filter(|a| !a.is_empty()) {
        config["author"] = json!(a);
    }
    config["container"] = json!(rec.id);
    let history = json!({
        "created": now,
        "created_by": rec.spec.args.join(" "),
        "comment": q.comment.clone().unwrap_or_default(),
    });
    let freeze = rec.state.status.is_running()
        && !rec.state.paused
        && !matches!(q.pause.as_deref(), Some("0" | "false"));
    let (store, upper, id) = (st.store.clone(), rec.spec.dir.join("upper"), rec.id.clone());
    // A user namespace's files are written with its own ids, as an image has them.
    let ids = rec.spec.userns.map(|m| reg_builder::layer::IdShift {
        uid: m.uid,
        gid: m.gid,
        size: m.size,
    });
    let made = tokio::task::spawn_blocking(move || {
        let blob = store.tmp_path("commit");
        if freeze {
            reg_node::runtime::cgroup::freeze(&id, true).map_err(|e| e.to_string())?;
        }
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let written = reg_builder::layer::write_shifted(
            &upper,
            &blob,
            reg_builder::layer::Compression::Gzip,
            epoch,
            ids,
        );
        if freeze {
            let _ = reg_node::runtime::cgroup::freeze(&id, false);
        }
        let result = written
            .map_err(|e| format!("writing the container's changes: {e}"))
            .and_then(|_| {
                reg_node::image_archive::add_layer_image(
                    &store,
                    Some(&base),
                    &blob,
                    config,
                    history,
                    reference.as_deref(),
                )
                .map_err(|e| e.to_string())
            });
        let _ = std::fs::remove_file(&blob);
        result
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::internal(std::io::Error::other(e)))?;
    st.containers.events.emit(
        reg_node::events::Event::new(reg_node::events::Kind::Container, "commit", &rec.id)
            .with("name", &rec.name)
            .with("image", &made.reference),
    );
    Ok(Json(json!({ "Id": made.id })))
}
