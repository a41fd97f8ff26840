//! `reg volume …` and `reg network …` (with their `prune`), `reg info`, `reg version`: through
//! the node agent.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;

use reg_node::api::wire;

use super::image::{agent, each, query_value, rt};
use super::{manage, Target};

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a named volume (a random name when none is given).
    Create { name: Option<String> },
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls {
        /// Only names.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Filter: name=, label=, dangling=, driver=.
        #[arg(short = 'f', long = "filter")]
        filter: Vec<String>,
        /// A Go template ('table {{.Name}}\t{{.Driver}}', '{{json .}}'), or json.
        #[arg(long)]
        format: Option<String>,
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
    /// Remove unused anonymous volumes (-a: every unused volume).
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
        /// Remove named volumes too, not only anonymous ones.
        #[arg(short = 'a', long)]
        all: bool,
        /// Filter values (e.g. label=KEY=VALUE).
        #[arg(long)]
        filter: Vec<String>,
    },
}

pub fn volume(config: Option<&Path>, host: &Target, cmd: VolumeCommand) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    match cmd {
        VolumeCommand::Create { name } => {
            let v =
                rt.block_on(agent.send("POST", "/volumes/create", &wire::VolumeCreate { name }))?;
            println!("{}", v["Name"].as_str().unwrap_or(""));
        }
        VolumeCommand::Ls {
            quiet,
            filter,
            format,
        } => {
            let path = format!(
                "/volumes?{}",
                super::container::filters_query(&filter)?.trim_start_matches('&')
            );
            let list = rt.block_on(agent.json("GET", &path))?;
            let rows: Vec<serde_json::Value> = list["Volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    serde_json::json!({
                        "Name": v["Name"],
                        "Driver": v["Driver"].as_str().unwrap_or("local"),
                        "Scope": v["Scope"].as_str().unwrap_or("local"),
                        "Mountpoint": v["Mountpoint"],
                        "Labels": super::format::pairs(&v["Labels"], ","),
                        "Links": "N/A",
                        "Size": "N/A",
                    })
                })
                .collect();
            if quiet {
                for r in &rows {
                    println!("{}", r["Name"].as_str().unwrap_or(""));
                }
            } else {
                super::format::print(
                    &rows,
                    format.as_deref(),
                    "table {{.Driver}}\t{{.Name}}",
                    &[
                        ("Name", "VOLUME NAME"),
                        ("Driver", "DRIVER"),
                        ("Mountpoint", "MOUNTPOINT"),
                        ("Scope", "SCOPE"),
                        ("Labels", "LABELS"),
                    ],
                )?;
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in &names {
                out.push(rt.block_on(agent.json("GET", &format!("/volumes/{}", query_value(n))))?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        VolumeCommand::Prune { force, all, filter } => {
            let warning = if all {
                "WARNING! This will remove all local volumes not used by at least one container.\n\
                 Are you sure you want to continue?"
            } else {
                "WARNING! This will remove anonymous local volumes not used by at least one container.\n\
                 Are you sure you want to continue?"
            };
            let extra: &[&str] = if all { &["all=true"] } else { &[] };
            let path = format!("/volumes/prune{}", manage::prune_query(&filter, extra)?);
            if let Some(v) = manage::prune(config, host, force, warning, &path)? {
                manage::volume_prune_report(&v);
            }
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
    #[command(visible_alias = "list")]
    Ls {
        /// Only ids.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Filter: name=, id=, label=, driver=, type=, scope=.
        #[arg(short = 'f', long = "filter")]
        filter: Vec<String>,
        /// Full ids.
        #[arg(long = "no-trunc")]
        no_trunc: bool,
        /// A Go template ('table {{.Name}}\t{{.Driver}}', '{{json .}}'), or json.
        #[arg(long)]
        format: Option<String>,
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
    /// Remove every custom network no container is on.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
        /// Filter values (e.g. label=KEY=VALUE).
        #[arg(long)]
        filter: Vec<String>,
    },
}

pub fn network(config: Option<&Path>, host: &Target, cmd: NetworkCommand) -> anyhow::Result<u8> {
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
                    driver: Some(driver),
                    internal,
                    ipam: subnet.map(|s| wire::Ipam {
                        config: vec![wire::IpamConfig { subnet: Some(s) }],
                    }),
                    labels: Default::default(),
                },
            ))?;
            println!("{}", v["Id"].as_str().unwrap_or(""));
        }
        NetworkCommand::Ls {
            quiet,
            filter,
            no_trunc,
            format,
        } => {
            let path = format!(
                "/networks?{}",
                super::container::filters_query(&filter)?.trim_start_matches('&')
            );
            let list = rt.block_on(agent.json("GET", &path))?;
            let rows: Vec<serde_json::Value> = list
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    let id = n["Id"].as_str().unwrap_or("");
                    serde_json::json!({
                        "ID": if no_trunc { id } else { &id[..id.len().min(12)] },
                        "Name": n["Name"],
                        "Driver": n["Driver"],
                        "Scope": n["Scope"].as_str().unwrap_or("local"),
                        "IPv6": n["EnableIPv6"].as_bool().unwrap_or(false),
                        "Internal": n["Internal"].as_bool().unwrap_or(false),
                        "Labels": super::format::pairs(&n["Labels"], ","),
                        "CreatedAt": n["Created"],
                    })
                })
                .collect();
            if quiet {
                for r in &rows {
                    println!("{}", r["ID"].as_str().unwrap_or(""));
                }
            } else {
                super::format::print(
                    &rows,
                    format.as_deref(),
                    "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
                    &[
                        ("ID", "NETWORK ID"),
                        ("Name", "NAME"),
                        ("Driver", "DRIVER"),
                        ("Scope", "SCOPE"),
                        ("IPv6", "IPV6"),
                        ("Internal", "INTERNAL"),
                        ("Labels", "LABELS"),
                        ("CreatedAt", "CREATED"),
                    ],
                )?;
            }
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in &names {
                out.push(rt.block_on(agent.json("GET", &format!("/networks/{}", query_value(n))))?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCommand::Prune { force, filter } => {
            let warning = "WARNING! This will remove all custom networks not used by at least one \
                           container.\nAre you sure you want to continue?";
            let path = format!("/networks/prune{}", manage::prune_query(&filter, &[])?);
            if let Some(v) = manage::prune(config, host, force, warning, &path)? {
                manage::network_prune_report(&v);
            }
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
                    endpoint_config: wire::EndpointConfig {
                        ipam_config: ip.map(|ip| wire::EndpointIpam {
                            ipv4_address: Some(ip),
                        }),
                        aliases: alias,
                    },
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
pub fn info(config: Option<&Path>, host: &Target) -> anyhow::Result<()> {
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
pub fn version(config: Option<&Path>, host: &Target) -> anyhow::Result<()> {
    println!("Client:");
    println!(" Version:     {}", env!("CARGO_PKG_VERSION"));
    println!(" API version: {}", reg_node::api::ENGINE_API_VERSION);
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
