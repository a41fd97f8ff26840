//! `reg`: one binary for the registry, the node and the builder, with docker-like verbs.
//! This crate only parses arguments, wires the library crates together and prints; the logic
//! lives in the libraries. Nothing depends on it.

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
    /// Pull an image into the node's store (through the agent).
    Pull(cmd::image::PullArgs),
    /// Run a command in a new container (foreground; pulls the image if missing).
    Run(cmd::image::RunArgs),
    /// List the node's images.
    Images,
    /// Show an image as JSON (docker-style: an array of one object with Id).
    Inspect(cmd::image::InspectArgs),
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
    // Commands whose exit code is a container's.
    let coded = match cli.command {
        Command::Node {
            command: cmd::serve::NodeCommand::Monitor { ref spec },
        } => Some(cmd::serve::monitor(spec)),
        Command::Run(ref _args) => None,
        _ => None,
    };
    if let Some(r) = coded {
        return match r {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("reg: {e:#}");
                ExitCode::from(125)
            }
        };
    }
    if let Command::Run(args) = cli.command {
        return match cmd::image::run(cli.config.as_deref(), cli.host.as_deref(), args) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("reg: {e:#}");
                ExitCode::from(125)
            }
        };
    }
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(cli.config.as_deref(), args),
        Command::Registry { command } => cmd::serve::run_registry(cli.config.as_deref(), command),
        Command::Config { command } => cmd::config::run(cli.config.as_deref(), command),
        Command::Admin(args) => cmd::admin::run(cli.config.as_deref(), args),
        Command::Login(args) => cmd::login::login(args),
        Command::Node { command } => cmd::serve::run_node(cli.config.as_deref(), command),
        Command::Pull(args) => cmd::image::pull(cli.config.as_deref(), cli.host.as_deref(), args),
        Command::Images => cmd::image::images(cli.config.as_deref(), cli.host.as_deref()),
        Command::Run(_) => Ok(()),
        Command::Inspect(args) => {
            cmd::image::inspect(cli.config.as_deref(), cli.host.as_deref(), args)
        }
        Command::Logout(args) => cmd::login::logout(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reg: {e:#}");
            ExitCode::from(1)
        }
    }
}
