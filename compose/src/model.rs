//! The Compose file model: what reg honours, each field typed. Every struct denies unknown
//! fields, so a key reg does not support is an error naming it (never silently ignored). Short
//! and long syntaxes are read into one normal form. Scalars are read permissively (a number
//! where a string is meant, `"3"` where a number is), as interpolation yields strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::de;

/// One compose file, or several merged.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ComposeFile {
    /// Obsolete (the specification ignores it); accepted.
    #[serde(deserialize_with = "de::opt_string", skip_serializing)]
    pub version: Option<String>,
    #[serde(deserialize_with = "de::opt_string")]
    pub name: Option<String>,
    pub services: BTreeMap<String, Service>,
    #[serde(deserialize_with = "de::map_of_opt")]
    pub networks: BTreeMap<String, Network>,
    #[serde(deserialize_with = "de::map_of_opt")]
    pub volumes: BTreeMap<String, Volume>,
    pub secrets: BTreeMap<String, FileObject>,
    pub configs: BTreeMap<String, FileObject>,
}

/// A service: how to make its containers.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Service {
    #[serde(deserialize_with = "de::opt_string")]
    pub image: Option<String>,
    #[serde(deserialize_with = "de::opt_build")]
    pub build: Option<Build>,
    #[serde(deserialize_with = "de::opt_command")]
    pub command: Option<Vec<String>>,
    #[serde(deserialize_with = "de::opt_command")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(deserialize_with = "de::map_or_list")]
    pub environment: BTreeMap<String, Option<String>>,
    #[serde(deserialize_with = "de::string_list")]
    pub env_file: Vec<String>,
    #[serde(deserialize_with = "de::ports")]
    pub ports: Vec<Port>,
    #[serde(deserialize_with = "de::string_list")]
    pub expose: Vec<String>,
    #[serde(deserialize_with = "de::mounts")]
    pub volumes: Vec<Mount>,
    #[serde(deserialize_with = "de::service_networks")]
    pub networks: Option<BTreeMap<String, ServiceNetwork>>,
    #[serde(deserialize_with = "de::opt_string")]
    pub network_mode: Option<String>,
    #[serde(deserialize_with = "de::depends_on")]
    pub depends_on: BTreeMap<String, Dependency>,
    pub healthcheck: Option<Healthcheck>,
    #[serde(deserialize_with = "de::opt_string")]
    pub restart: Option<String>,
    pub deploy: Option<Deploy>,
    #[serde(deserialize_with = "de::opt_u64")]
    pub scale: Option<u64>,
    #[serde(deserialize_with = "de::labels")]
    pub labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "de::opt_string")]
    pub container_name: Option<String>,
    #[serde(deserialize_with = "de::opt_string")]
    pub user: Option<String>,
    #[serde(deserialize_with = "de::opt_string")]
    pub working_dir: Option<String>,
    #[serde(deserialize_with = "de::opt_string")]
    pub hostname: Option<String>,
    #[serde(deserialize_with = "de::string_list")]
    pub cap_add: Vec<String>,
    #[serde(deserialize_with = "de::string_list")]
    pub cap_drop: Vec<String>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub read_only: Option<bool>,
    #[serde(deserialize_with = "de::string_list")]
    pub tmpfs: Vec<String>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub init: Option<bool>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub privileged: Option<bool>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub stdin_open: Option<bool>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub tty: Option<bool>,
    #[serde(deserialize_with = "de::opt_string")]
    pub stop_signal: Option<String>,
    #[serde(deserialize_with = "de::opt_string")]
    pub stop_grace_period: Option<String>,
    #[serde(deserialize_with = "de::ulimits")]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(deserialize_with = "de::extra_hosts")]
    pub extra_hosts: Vec<String>,
    #[serde(deserialize_with = "de::string_list")]
    pub dns: Vec<String>,
    #[serde(deserialize_with = "de::string_list")]
    pub profiles: Vec<String>,
    #[serde(deserialize_with = "de::file_refs")]
    pub secrets: Vec<FileRef>,
    #[serde(deserialize_with = "de::file_refs")]
    pub configs: Vec<FileRef>,
    #[serde(deserialize_with = "de::opt_string")]
    pub pull_policy: Option<String>,
}

/// `build`: a context directory, or the long form.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Build {
    #[serde(deserialize_with = "de::opt_string")]
    pub context: Option<String>,
    #[serde(deserialize_with = "de::opt_string")]
    pub dockerfile: Option<String>,
    #[serde(deserialize_with = "de::map_or_list")]
    pub args: BTreeMap<String, Option<String>>,
    #[serde(deserialize_with = "de::opt_string")]
    pub target: Option<String>,
    #[serde(deserialize_with = "de::labels")]
    pub labels: BTreeMap<String, String>,
}

/// A published port, one per port (short-syntax ranges are expanded).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Port {
    #[serde(deserialize_with = "de::u16_value")]
    pub target: u16,
    /// The host's port; none: one the node picks.
    #[serde(default, deserialize_with = "de::opt_u16")]
    pub published: Option<u16>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub host_ip: Option<String>,
    #[serde(default = "tcp", deserialize_with = "de::string")]
    pub protocol: String,
    /// Accepted: `ingress` and `host` mean the same on one node.
    #[serde(default, deserialize_with = "de::opt_string", skip_serializing)]
    pub mode: Option<String>,
}

fn tcp() -> String {
    "tcp".into()
}

/// What a service mounts.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// `volume`, `bind` or `tmpfs`.
    #[serde(rename = "type", deserialize_with = "de::string")]
    pub kind: String,
    /// A volume's name (none: anonymous), or a host path (resolved from the project directory).
    #[serde(default, deserialize_with = "de::opt_string")]
    pub source: Option<String>,
    #[serde(deserialize_with = "de::string")]
    pub target: String,
    #[serde(default, deserialize_with = "de::bool_value")]
    pub read_only: bool,
    #[serde(default)]
    pub volume: Option<VolumeOptions>,
    #[serde(default)]
    pub tmpfs: Option<TmpfsOptions>,
    #[serde(default)]
    pub bind: Option<BindOptions>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeOptions {
    #[serde(deserialize_with = "de::bool_value")]
    pub nocopy: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TmpfsOptions {
    #[serde(deserialize_with = "de::opt_string")]
    pub size: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BindOptions {
    #[serde(deserialize_with = "de::opt_bool")]
    pub create_host_path: Option<bool>,
}

/// A service's attachment to a network.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceNetwork {
    #[serde(deserialize_with = "de::string_list")]
    pub aliases: Vec<String>,
    #[serde(deserialize_with = "de::opt_string")]
    pub ipv4_address: Option<String>,
}

/// `depends_on` of a service, in the long form.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    #[serde(default = "started", deserialize_with = "de::condition")]
    pub condition: Condition,
    /// Restart this service when the dependency is updated (accepted; `up` recreates
    /// dependents of a recreated service either way).
    #[serde(default, deserialize_with = "de::bool_value")]
    pub restart: bool,
    /// Unless false, a dependency that is not in the project is an error.
    #[serde(default = "yes", deserialize_with = "de::bool_value")]
    pub required: bool,
}

fn started() -> Condition {
    Condition::Started
}

fn yes() -> bool {
    true
}

/// What a dependent waits for.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum Condition {
    #[serde(rename = "service_started")]
    Started,
    #[serde(rename = "service_healthy")]
    Healthy,
    #[serde(rename = "service_completed_successfully")]
    CompletedSuccessfully,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Healthcheck {
    /// `["CMD", …]`, `["CMD-SHELL", "…"]` or `["NONE"]` (a string is `CMD-SHELL`).
    #[serde(deserialize_with = "de::health_test")]
    pub test: Option<Vec<String>>,
    #[serde(deserialize_with = "de::opt_string")]
    pub interval: Option<String>,
    #[serde(deserialize_with = "de::opt_string")]
    pub timeout: Option<String>,
    #[serde(deserialize_with = "de::opt_u64")]
    pub retries: Option<u64>,
    #[serde(deserialize_with = "de::opt_string")]
    pub start_period: Option<String>,
    #[serde(deserialize_with = "de::opt_string")]
    pub start_interval: Option<String>,
    #[serde(deserialize_with = "de::bool_value")]
    pub disable: bool,
}

/// `deploy`: replicas and resource limits (other keys are swarm's: refused).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Deploy {
    #[serde(deserialize_with = "de::opt_u64")]
    pub replicas: Option<u64>,
    pub resources: Option<Resources>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Resources {
    pub limits: Option<Limits>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    #[serde(deserialize_with = "de::opt_f64")]
    pub cpus: Option<f64>,
    #[serde(deserialize_with = "de::opt_string")]
    pub memory: Option<String>,
    #[serde(deserialize_with = "de::opt_u64")]
    pub pids: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

/// A secret or config a service mounts.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    #[serde(deserialize_with = "de::string")]
    pub source: String,
    /// Where it is mounted (secrets: under `/run/secrets/`; configs: `/<source>`).
    #[serde(default, deserialize_with = "de::opt_string")]
    pub target: Option<String>,
}

/// A top-level secret or config: a file of the project's.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileObject {
    #[serde(deserialize_with = "de::string")]
    pub file: String,
}

/// A top-level network.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    #[serde(deserialize_with = "de::opt_string")]
    pub driver: Option<String>,
    #[serde(deserialize_with = "de::bool_value")]
    pub internal: bool,
    #[serde(deserialize_with = "de::bool_value")]
    pub external: bool,
    /// Accepted: every network of a node is attachable.
    #[serde(deserialize_with = "de::bool_value", skip_serializing)]
    pub attachable: bool,
    #[serde(deserialize_with = "de::opt_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "de::labels")]
    pub labels: BTreeMap<String, String>,
    pub ipam: Option<Ipam>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Ipam {
    pub config: Vec<IpamConfig>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct IpamConfig {
    #[serde(deserialize_with = "de::opt_string")]
    pub subnet: Option<String>,
}

/// A top-level volume.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Volume {
    #[serde(deserialize_with = "de::opt_string")]
    pub driver: Option<String>,
    #[serde(deserialize_with = "de::bool_value")]
    pub external: bool,
    #[serde(deserialize_with = "de::opt_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "de::labels")]
    pub labels: BTreeMap<String, String>,
}

impl Service {
    /// How many containers `up` keeps: `--scale`, else `scale`, else `deploy.replicas`, else 1.
    pub fn replicas(&self) -> u64 {
        self.scale
            .or_else(|| self.deploy.as_ref().and_then(|d| d.replicas))
            .unwrap_or(1)
    }
}

impl ComposeFile {
    /// The model as YAML (`reg compose config`): what is unset, empty or false left out.
    pub fn to_yaml(&self) -> Result<String, serde_norway::Error> {
        fn prune(v: &mut serde_norway::Value) -> bool {
            use serde_norway::Value;
            match v {
                Value::Null | Value::Bool(false) => false,
                Value::Mapping(m) => {
                    m.retain(|_, v| prune(v));
                    !m.is_empty()
                }
                Value::Sequence(items) => {
                    items.iter_mut().for_each(|i| {
                        prune(i);
                    });
                    !items.is_empty()
                }
                _ => true,
            }
        }
        let mut v = serde_norway::to_value(self)?;
        prune(&mut v);
        serde_norway::to_string(&v)
    }
}
