//! The agent's request and answer bodies as types, shared by the handlers and by clients
//! (the cli, the fuzz targets): a client serialises these, never hand-built JSON.

use serde::{Deserialize, Serialize};

pub use crate::containers::streams::ExecRequest;
pub use crate::containers::RunRequest;

/// `POST /networks/create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkCreate {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(default, rename = "Subnet")]
    pub subnet: Option<String>,
    #[serde(default, rename = "Internal")]
    pub internal: bool,
}

/// `POST /networks/{id}/connect`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkConnect {
    #[serde(rename = "Container")]
    pub container: String,
    #[serde(default, rename = "IPAddress")]
    pub ip: Option<String>,
    #[serde(default, rename = "Aliases")]
    pub aliases: Vec<String>,
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
