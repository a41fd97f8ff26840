//! `reg volume …`, `reg info`, `reg version`: through the node agent.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;

use reg_node::api::wire;

use super::image::{agent, each, query_value, rt};

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a named volume (a random name when none is given).
    Create { name: Option<String> },
    /// List volumes.
    Ls {
        /// Only names.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Show volumes as JSON.
    Inspect { names: Vec<String> },
    /// Remove volumes no container uses.
    Rm {
        /// No error when a volume does not exist.
        #[arg(short = 'f', long)]
        force: bool,
        names: Vec<String>,
    },
}

pub fn volume(config: Option<&Path>, host: Option<&str>, cmd: VolumeCommand) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    match cmd {
        VolumeCommand::Create { name } => {
            let v =
                rt.block_on(agent.send("POST", "/volumes/create", &wire::VolumeCreate { name }))?;
            println!("{}", v["Name"].as_str().unwrap_or(""));
        }
        VolumeCommand::Ls { quiet } => {
            let list = rt.block_on(agent.json("GET", "/volumes"))?;
            if !quiet {
                println!("{:<10} VOLUME NAME", "DRIVER");
            }
            for v in list.as_array().into_iter().flatten() {
                let name = v["Name"].as_str().unwrap_or("");
                if quiet {
                    println!("{name}");
                } else {
                    println!("{:<10} {name}", v["Driver"].as_str().unwrap_or("local"));
                }
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in &names {
                out.push(rt.block_on(agent.json("GET", &format!("/volumes/{}", query_value(n))))?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        VolumeCommand::Rm { force, names } => {
            let path = |n: &str| {
                Ok(format!(
                    "/volumes/{}?force={}",
                    query_value(n),
                    u8::from(force)
                ))
            };
            return each(&rt, &agent, &names, "volume", "DELETE", path, |n, _| {
                println!("{n}")
            });
        }
    }
    Ok(0)
}

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network.
    Create {
        /// Its subnet (default: a free one from 172.17-31.0.0/16, 192.168.0-240.0/20).
        #[arg(long)]
        subnet: Option<String>,
        /// No route out: its containers reach only each other.
        #[arg(long)]
        internal: bool,
        /// Accepted for docker compatibility: bridge is the only driver.
        #[arg(short = 'd', long, default_value = "bridge")]
        driver: String,
        name: String,
    },
    /// List networks.
    Ls {
        /// Only ids.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Show networks as JSON.
    Inspect { names: Vec<String> },
    /// Remove networks no container is on.
    Rm { names: Vec<String> },
    /// Connect a container to a network.
    Connect {
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        alias: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect { network: String, container: String },
}

pub fn network(
    config: Option<&Path>,
    host: Option<&str>,
    cmd: NetworkCommand,
) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    match cmd {
        NetworkCommand::Create {
            subnet,
            internal,
            driver,
            name,
        } => {
            if driver != "bridge" {
                bail!("network driver {driver:?} is not supported: bridge is the only one");
            }
            let v = rt.block_on(agent.send(
                "POST",
                "/networks/create",
                &wire::NetworkCreate {
                    name,
                    subnet,
                    internal,
                },
            ))?;
            println!("{}", v["Id"].as_str().unwrap_or(""));
        }
        NetworkCommand::Ls { quiet } => {
            let list = rt.block_on(agent.json("GET", "/networks"))?;
            if !quiet {
                println!("{:<14}{:<20}{:<10}SCOPE", "NETWORK ID", "NAME", "DRIVER");
            }
            for n in list.as_array().into_iter().flatten() {
                let id = n["Id"].as_str().unwrap_or("");
                let short = &id[..id.len().min(12)];
                if quiet {
                    println!("{short}");
                } else {
                    println!(
                        "{short:<14}{:<20}{:<10}{}",
                        n["Name"].as_str().unwrap_or(""),
                        n["Driver"].as_str().unwrap_or(""),
                        n["Scope"].as_str().unwrap_or("local")
                    );
                }
            }
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in &names {
                out.push(rt.block_on(agent.json("GET", &format!("/networks/{}", query_value(n))))?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCommand::Rm { names } => {
            let path = |n: &str| Ok(format!("/networks/{}", query_value(n)));
            return each(&rt, &agent, &names, "network", "DELETE", path, |n, _| {
                println!("{n}")
            });
        }
        NetworkCommand::Connect {
            ip,
            alias,
            network,
            container,
        } => {
            rt.block_on(agent.send(
                "POST",
                &format!("/networks/{}/connect", query_value(&network)),
                &wire::NetworkConnect {
                    container,
                    ip,
                    aliases: alias,
                },
            ))?;
        }
        NetworkCommand::Disconnect { network, container } => {
            rt.block_on(agent.send(
                "POST",
                &format!("/networks/{}/disconnect", query_value(&network)),
                &wire::NetworkDisconnect { container },
            ))?;
        }
    }
    Ok(0)
}

/// What `docker info` shows, from the agent.
pub fn info(config: Option<&Path>, host: Option<&str>) -> anyhow::Result<()> {
    let (agent, _) = agent(config, host)?;
    let v = rt()?.block_on(agent.json("GET", "/info"))?;
    println!("Server:");
    println!(" Containers: {}", v["Containers"]);
    println!("  Running: {}", v["ContainersRunning"]);
    println!("  Stopped: {}", v["ContainersStopped"]);
    println!(" Images: {}", v["Images"]);
    println!(
        " Server Version: {}",
        v["ServerVersion"].as_str().unwrap_or("")
    );
    println!(" Storage Driver: {}", v["Driver"].as_str().unwrap_or(""));
    println!(
        " Cgroup Driver: {}",
        v["CgroupDriver"].as_str().unwrap_or("")
    );
    println!(
        " Cgroup Version: {}",
        v["CgroupVersion"].as_str().unwrap_or("")
    );
    println!(
        " Security Options: {}",
        v["SecurityOptions"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    println!(
        " Kernel Version: {}",
        v["KernelVersion"].as_str().unwrap_or("")
    );
    println!(
        " Operating System: {}",
        v["OperatingSystem"].as_str().unwrap_or("")
    );
    println!(
        " Architecture: {}",
        v["Architecture"].as_str().unwrap_or("")
    );
    println!(" CPUs: {}", v["NCPU"]);
    println!(
        " Total Memory: {:.2} GiB",
        v["MemTotal"].as_f64().unwrap_or(0.0) / (1u64 << 30) as f64
    );
    println!(
        " Docker Root Dir: {}",
        v["DockerRootDir"].as_str().unwrap_or("")
    );
    println!(
        " Default Registry: {}",
        v["DefaultRegistry"].as_str().unwrap_or("")
    );
    Ok(())
}

/// Client and agent versions (the agent part fails softly when it is not running).
pub fn version(config: Option<&Path>, host: Option<&str>) -> anyhow::Result<()> {
    println!("Client:");
    println!(" Version:     {}", env!("CARGO_PKG_VERSION"));
    println!(" API version: {}", reg_node::api::API_VERSION);
    println!(" OS/Arch:     linux/{}", reg_node::image::node_platform().1);
    let (agent, _) = agent(config, host)?;
    match rt()?.block_on(agent.json("GET", "/version")) {
        Ok(v) => {
            println!("\nServer (node agent):");
            println!(" Version:     {}", v["Version"].as_str().unwrap_or(""));
            println!(" API version: {}", v["ApiVersion"].as_str().unwrap_or(""));
            println!(
                " OS/Arch:     {}/{}",
                v["Os"].as_str().unwrap_or(""),
                v["Arch"].as_str().unwrap_or("")
            );
            println!(
                " Kernel:      {}",
                v["KernelVersion"].as_str().unwrap_or("")
            );
            Ok(())
        }
        Err(e) => bail!("{e}"),
    }
}
