//! The registry web interface's view of the local node (`reg serve` as root): the registry
//! defines what it shows ([`NodeView`]), this asks the agent through its own client, over its
//! unix socket, the way `reg ps`, `reg images` and `reg logs` do.

use reg_node::api::{AgentClient, AgentError};
use reg_registry::server::nodes::{
    NodeContainer, NodeImage, NodeView, NodeViewError, ViewFuture, MAX_LOG_BYTES,
};

pub struct AgentView {
    agent: AgentClient,
}

impl AgentView {
    /// The view of the agent at `host` (`unix:///…/node.sock`); `None` when no unix socket
    /// is configured (a TCP agent wants a client certificate the registry does not have).
    pub fn of(cfg: &reg_config::Config) -> Option<AgentView> {
        let host = cfg
            .node_hosts()
            .into_iter()
            .find(|h| h.starts_with("unix://"))?;
        match AgentClient::new(&host) {
            Ok(agent) => Some(AgentView { agent }),
            Err(e) => {
                tracing::warn!(error = %e, "the web interface will not show the local node");
                None
            }
        }
    }

    /// An Engine API list (`/containers/json`, `/images/json`), each entry read by `item`.
    async fn list<T>(
        &self,
        path: &str,
        item: impl Fn(&serde_json::Value) -> T,
    ) -> Result<Vec<T>, NodeViewError> {
        let list = self.agent.json("GET", path).await.map_err(failed)?;
        Ok(list
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(item)
            .collect())
    }
}

fn failed(e: AgentError) -> NodeViewError {
    match e {
        AgentError::Api { status: 404, .. } => NodeViewError::NotFound(Box::new(e)),
        AgentError::Api { .. } => NodeViewError::Refused(Box::new(e)),
        e => NodeViewError::Unreachable(Box::new(e)),
    }
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// docker's `Ports` of a listed container, published ones only, as `docker ps` shows them.
fn ports(c: &serde_json::Value) -> Vec<String> {
    let Some(list) = c["Ports"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|p| {
            let public = p["PublicPort"].as_u64()?;
            let ip = p["IP"].as_str().unwrap_or("0.0.0.0");
            Some(format!(
                "{ip}:{public}->{}/{}",
                p["PrivatePort"].as_u64().unwrap_or(0),
                p["Type"].as_str().unwrap_or("tcp")
            ))
        })
        .collect()
}

impl NodeView for AgentView {
    fn containers(&self) -> ViewFuture<'_, Vec<NodeContainer>> {
        Box::pin(async move {
            self.list("/containers/json?all=1", |c| NodeContainer {
                id: text(&c["Id"]),
                name: c["Names"][0]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                image: text(&c["Image"]),
                state: text(&c["State"]),
                status: text(&c["Status"]),
                ports: ports(c),
                created: c["Created"].as_i64().unwrap_or(0),
            })
            .await
        })
    }

    fn images(&self) -> ViewFuture<'_, Vec<NodeImage>> {
        Box::pin(async move {
            self.list("/images/json", |i| NodeImage {
                id: text(&i["Id"]),
                tags: i["RepoTags"]
                    .as_array()
                    .map(|t| t.iter().map(text).collect())
                    .unwrap_or_default(),
                size: i["Size"].as_u64().unwrap_or(0),
                created: i["Created"].as_i64().unwrap_or(0),
            })
            .await
        })
    }

    fn logs<'a>(&'a self, container: &'a str, lines: usize) -> ViewFuture<'a, String> {
        Box::pin(async move {
            let q = super::image::query_value(container);
            let c = self
                .agent
                .json("GET", &format!("/containers/{q}/json"))
                .await
                .map_err(failed)?;
            // With a terminal the log is one raw stream, else docker's multiplexed frames.
            let tty = c["Config"]["Tty"].as_bool().unwrap_or(false);
            let mut out = Vec::new();
            let mut demux = reg_node::api::Demux::default();
            let mut keep = |data: &[u8]| {
                out.extend_from_slice(data);
                if out.len() > 2 * MAX_LOG_BYTES {
                    out.drain(..out.len() - MAX_LOG_BYTES);
                }
            };
            let path = format!("/containers/{q}/logs?stdout=1&stderr=1&tail={lines}");
            self.agent
                .request_bytes("GET", &path, |data| {
                    if tty {
                        keep(data);
                    } else {
                        demux.push(data, |_, payload| keep(payload));
                    }
                })
                .await
                .map_err(failed)?;
            if out.len() > MAX_LOG_BYTES {
                out.drain(..out.len() - MAX_LOG_BYTES);
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports_read_as_docker_ps_shows_them() {
        let c = serde_json::json!({"Ports": [
            {"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"PrivatePort": 53, "Type": "udp"},
        ]});
        assert_eq!(ports(&c), vec!["127.0.0.1:8080->80/tcp"]);
        assert!(ports(&serde_json::json!({})).is_empty());
    }
}
