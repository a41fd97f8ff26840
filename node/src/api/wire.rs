//! The agent's request and answer bodies as types, shared by the handlers and by clients
//! (the cli, the fuzz targets): a client serialises these, never hand-built JSON.

use serde::{Deserialize, Serialize};

pub use crate::containers::streams::ExecRequest;
pub use crate::containers::RunRequest;

/// `POST /networks/create`: docker's `NetworkCreateRequest`, the fields reg's cli sets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkCreate {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(default, rename = "Driver", skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, rename = "Internal")]
    pub internal: bool,
    #[serde(default, rename = "IPAM", skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
    #[serde(default, rename = "Labels")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// docker's `IPAM` of a network: its subnets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ipam {
    #[serde(default, rename = "Config")]
    pub config: Vec<IpamConfig>,
}

/// One subnet of an [`Ipam`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IpamConfig {
    #[serde(default, rename = "Subnet", skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

/// `POST /networks/{id}/connect`: docker's `NetworkConnectRequest`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkConnect {
    #[serde(rename = "Container")]
    pub container: String,
    #[serde(default, rename = "EndpointConfig")]
    pub endpoint_config: EndpointConfig,
}

/// docker's `EndpointSettings` as a connect request carries it: a fixed address, aliases.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointConfig {
    #[serde(
        default,
        rename = "IPAMConfig",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_config: Option<EndpointIpam>,
    #[serde(default, rename = "Aliases")]
    pub aliases: Vec<String>,
}

/// The fixed address of an [`EndpointConfig`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointIpam {
    #[serde(
        default,
        rename = "IPv4Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<String>,
}

/// `POST /networks/{id}/disconnect`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkDisconnect {
    #[serde(rename = "Container")]
    pub container: String,
}

/// `POST /volumes/create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VolumeCreate {
    #[serde(default, rename = "Name")]
    pub name: Option<String>,
}
