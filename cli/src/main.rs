//! `reg`: one binary for the registry, the node and the builder, with docker-like verbs.
//! This crate only parses arguments, wires the library crates together and prints; the logic
//! lives in the libraries. Nothing depends on it.

// Doc comments here are clap's help text, where `[:ro]` and `[HOSTIP:]` are option syntax, not
// links (escaping them would show the backslashes in `--help`).
#![allow(rustdoc::broken_intra_doc_links)]

mod build;
mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "reg",
    version,
    about = "A container platform in one binary: registry, builder, node"
)]
struct Cli {
    /// Configuration file (TOML). REG_* environment variables override it.
    #[arg(long, global = true, env = "REG_CONFIG")]
    config: Option<PathBuf>,
    /// Node agent to talk to: unix:///path/to/node.sock (default: the configured socket).
    #[arg(long, global = true, env = "REG_HOST")]
    host: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything this machine offers: the registry on 127.0.0.1:5000 (embedded defaults).
    Serve(cmd::serve::ServeArgs),
    /// Registry commands.
    Registry {
        #[command(subcommand)]
        command: cmd::serve::RegistryCommand,
    },
    /// Manage users, organisations, visibility, tokens; read the audit log.
    Admin(cmd::admin::AdminArgs),
    /// Node agent commands.
    Node {
        #[command(subcommand)]
        command: cmd::serve::NodeCommand,
    },
    /// Build an image from a Dockerfile (like docker build)
    Build(cmd::build::BuildArgs),
    /// Pull an image into the node's store (through the agent).
    Pull(cmd::image::PullArgs),
    /// Run a command in a new container (pulls the image if missing).
    Run(Box<cmd::container::RunArgs>),
    /// Start stopped containers.
    Start(cmd::container::StartArgs),
    /// List containers.
    Ps(cmd::container::PsArgs),
    /// Show a container's output.
    Logs(cmd::container::LogsArgs),
    /// Stop containers: their stop signal, then SIGKILL after a grace period.
    Stop(cmd::container::StopArgs),
    /// Send a signal to containers (default SIGKILL).
    Kill(cmd::container::KillArgs),
    /// Remove containers.
    Rm(cmd::container::RmArgs),
    /// Wait for containers to stop and print their exit codes.
    Wait(cmd::container::WaitArgs),
    /// Run a command in a running container.
    Exec(cmd::container::ExecArgs),
    /// Manage volumes.
    Volume {
        #[command(subcommand)]
        command: cmd::system::VolumeCommand,
    },
    /// Manage bridge networks.
    Network {
        #[command(subcommand)]
        command: cmd::system::NetworkCommand,
    },
    /// List a container's published ports.
    Port(cmd::container::PortArgs),
    /// What the node has and runs: containers, images, storage, cgroups, kernel.
    Info,
    /// Client and node agent versions.
    Version,
    /// List the node's images.
    Images,
    /// Push an image from the node's store to its registry (only missing layers travel).
    Push(cmd::image::PushArgs),
    /// Give an image another name (SOURCE TARGET).
    Tag(cmd::image::TagArgs),
    /// Remove images (and the layers nothing else uses).
    Rmi(cmd::image::RmiArgs),
    /// Show containers or images as JSON (docker-style: an array of objects with Id).
    Inspect(cmd::container::InspectArgs),
    /// Log in to a registry (credentials kept in docker's config.json format).
    Login(cmd::login::LoginArgs),
    /// Forget the credentials of a registry.
    Logout(cmd::login::LogoutArgs),
    /// Show configuration.
    Config {
        #[command(subcommand)]
        command: cmd::config::ConfigCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, host) = (cli.config.as_deref(), cli.host.as_deref());
    // Commands whose exit code is a container's (125 when reg itself fails, as docker).
    let coded = match cli.command {
        Command::Node {
            command: cmd::serve::NodeCommand::Monitor { ref bundle },
        } => Some(cmd::serve::monitor(bundle)),
        Command::Node {
            command: cmd::serve::NodeCommand::Enter { ref spec },
        } => Some(cmd::serve::enter(spec)),
        _ => None,
    };
    if let Some(r) = coded {
        return exit(r, 125);
    }
    let result = match cli.command {
        Command::Run(args) => return exit(cmd::container::run(config, host, *args), 125),
        Command::Exec(args) => return exit(cmd::container::exec(config, host, args), 125),
        Command::Start(args) => return exit(cmd::container::start(config, host, args), 1),
        Command::Stop(args) => return exit(cmd::container::stop(config, host, args), 1),
        Command::Kill(args) => return exit(cmd::container::kill(config, host, args), 1),
        Command::Rm(args) => return exit(cmd::container::rm(config, host, args), 1),
        Command::Wait(args) => return exit(cmd::container::wait(config, host, args), 1),
        Command::Volume { command } => return exit(cmd::system::volume(config, host, command), 1),
        Command::Network { command } => {
            return exit(cmd::system::network(config, host, command), 1)
        }
        Command::Port(args) => cmd::container::port(config, host, args),
        Command::Rmi(args) => return exit(cmd::image::rmi(config, host, args), 1),
        Command::Push(args) => cmd::image::push(config, host, args),
        Command::Tag(args) => cmd::image::tag(config, host, args),
        Command::Info => cmd::system::info(config, host),
        Command::Version => cmd::system::version(config, host),
        Command::Ps(args) => cmd::container::ps(config, host, args),
        Command::Logs(args) => cmd::container::logs(config, host, args),
        Command::Inspect(args) => cmd::container::inspect(config, host, args),
        Command::Serve(args) => cmd::serve::run(config, args),
        Command::Registry { command } => cmd::serve::run_registry(config, command),
        Command::Config { command } => cmd::config::run(config, command),
        Command::Admin(args) => cmd::admin::run(config, args),
        Command::Login(args) => cmd::login::login(args),
        Command::Node { command } => cmd::serve::run_node(config, command),
        Command::Pull(args) => cmd::image::pull(config, host, args),
        Command::Build(args) => cmd::build::build(config, host, args),
        Command::Images => cmd::image::images(config, host),
        Command::Logout(args) => cmd::login::logout(args),
    };
    exit(result.map(|()| 0), 1)
}

/// The process's exit code: the command's own, or `on_error` after printing the error.
fn exit(r: anyhow::Result<u8>, on_error: u8) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("reg: {e:#}");
            ExitCode::from(on_error)
        }
    }
}
