//! `reg`: one binary for the registry, the node and the builder, with docker-like verbs.
//! This crate only parses arguments, wires the library crates together and prints; the logic
//! lives in the libraries. Nothing depends on it.

// Doc comments here are clap's help text, where `[:ro]` and `[HOSTIP:]` are option syntax, not
// links (escaping them would show the backslashes in `--help`).
#![allow(rustdoc::broken_intra_doc_links)]

mod build;
mod cmd;
mod engine_build;
mod engine_commit;

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
    #[command(flatten)]
    target: cmd::Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything this machine offers: the registry on 127.0.0.1:5000 (embedded defaults).
    Serve(cmd::serve::ServeArgs),
    /// Print a shell completion script: `source <(reg completion bash)`, or install it where
    /// the shell looks (see README).
    Completion { shell: clap_complete::Shell },
    /// Write man pages: reg(1) and one per command (reg-run(1), reg-admin-quota(1), …) into
    /// DIR; without DIR, print reg(1).
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
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
    /// Define and run multi-container applications (a Compose file) on the node.
    Compose(cmd::compose::ComposeArgs),
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
    Images(cmd::image::ImagesArgs),
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
    /// Manage containers (every container verb, and prune).
    Container {
        #[command(subcommand)]
        command: cmd::manage::ContainerCommand,
    },
    /// Make an image of a container's changes.
    Commit(cmd::manage::CommitArgs),
    /// Make an image of a root filesystem tarball (FILE or -).
    Import(cmd::manage::ImportArgs),
    /// Manage images (prune).
    Image {
        #[command(subcommand)]
        command: cmd::manage::ImageCommand,
    },
    /// Manage the build cache (prune).
    Builder {
        #[command(subcommand)]
        command: cmd::manage::BuilderCommand,
    },
    /// Disk usage and pruning of everything unused.
    System {
        #[command(subcommand)]
        command: cmd::manage::SystemCommand,
    },
    /// Create a new container without starting it (pulls the image if missing).
    Create(Box<cmd::container::RunArgs>),
    /// Restart containers.
    Restart(cmd::manage::RestartArgs),
    /// Pause all processes of containers.
    Pause(cmd::manage::ContainersArgs),
    /// Unpause all processes of containers.
    Unpause(cmd::manage::ContainersArgs),
    /// Show the running processes of a container.
    Top(cmd::manage::TopArgs),
    /// Resource usage of containers (redrawn every second; --no-stream for one reading).
    Stats(cmd::manage::StatsArgs),
    /// Copy files between a container and the local filesystem (CONTAINER:PATH, `-` a tar).
    Cp(cmd::manage::CpArgs),
    /// Rename a container (OLD NEW).
    Rename(cmd::manage::RenameArgs),
    /// Update the resource limits and restart policy of containers.
    Update(cmd::manage::UpdateArgs),
    /// Changes to a container's filesystem (C changed, A added, D deleted).
    Diff(cmd::manage::DiffArgs),
    /// Export a container's filesystem as a tar archive.
    Export(cmd::manage::ExportArgs),
    /// Save images to a tar archive (docker's format).
    Save(cmd::manage::SaveArgs),
    /// Load images from a tar archive (docker save's format).
    Load(cmd::manage::LoadArgs),
    /// Show the history of an image.
    History(cmd::manage::HistoryArgs),
    /// The node's events as they happen (or between --since and --until).
    Events(cmd::manage::EventsArgs),
    /// Attach this terminal's input and output to a running container.
    Attach(cmd::manage::AttachArgs),
}

/// reg's own verbs, whose usage errors exit 2 (clap's); every docker verb exits 125 on one,
/// as docker's CLI does (scripts tell "reg could not run it" from the container's own codes).
const REG_OWN_VERBS: &[&str] = &[
    "serve",
    "registry",
    "admin",
    "node",
    "config",
    "completion",
    "man",
];

/// The verb on the command line (past the global flags and their values), and the one after
/// it (a group's subcommand).
fn verbs(args: &[String]) -> (Option<&str>, Option<&str>) {
    const WITH_VALUE: &[&str] = &[
        "-H",
        "--host",
        "--config",
        "--tlscacert",
        "--tlscert",
        "--tlskey",
    ];
    let mut words = args.iter().skip(1).map(String::as_str);
    let mut found = Vec::new();
    while let Some(w) = words.next() {
        if WITH_VALUE.contains(&w) {
            words.next();
        } else if !w.starts_with('-') {
            found.push(w);
            if found.len() == 2 {
                break;
            }
        }
    }
    (found.first().copied(), found.get(1).copied())
}

/// Parses the command line; a usage error of a docker verb exits 125 as docker's does.
fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let args: Vec<String> = std::env::args().collect();
            let docker_verb = match verbs(&args) {
                (Some(v), _) => !REG_OWN_VERBS.contains(&v),
                (None, _) => false,
            };
            if docker_verb && e.use_stderr() {
                let _ = e.print();
                std::process::exit(125);
            }
            e.exit()
        }
    }
}

/// `reg container VERB`: the verb's own function, with its exit codes.
fn container_command(
    config: Option<&std::path::Path>,
    host: &cmd::Target,
    command: cmd::manage::ContainerCommand,
) -> ExitCode {
    use cmd::container as c;
    use cmd::manage as m;
    use cmd::manage::ContainerCommand as C;
    let unit = |r: anyhow::Result<()>| r.map(|()| 0);
    match command {
        C::Ls(args) => exit(unit(c::ps(config, host, args)), 1),
        C::Run(args) => exit(c::run(config, host, *args), 125),
        C::Create(args) => exit(m::create(config, host, *args), 125),
        C::Start(args) => exit(c::start(config, host, args), 1),
        C::Stop(args) => exit(c::stop(config, host, args), 1),
        C::Restart(args) => exit(m::restart(config, host, args), 1),
        C::Kill(args) => exit(c::kill(config, host, args), 1),
        C::Rm(args) => exit(c::rm(config, host, args), 1),
        C::Inspect(args) => exit(unit(c::inspect(config, host, args)), 1),
        C::Logs(args) => exit(unit(c::logs(config, host, args)), 1),
        C::Exec(args) => exit(c::exec(config, host, args), 125),
        C::Wait(args) => exit(c::wait(config, host, args), 1),
        C::Port(args) => exit(unit(c::port(config, host, args)), 1),
        C::Pause(args) => exit(m::pause(config, host, args), 1),
        C::Unpause(args) => exit(m::unpause(config, host, args), 1),
        C::Top(args) => exit(m::top(config, host, args), 1),
        C::Stats(args) => exit(m::stats(config, host, args), 1),
        C::Cp(args) => exit(m::cp(config, host, args), 1),
        C::Rename(args) => exit(m::rename(config, host, args), 1),
        C::Update(args) => exit(m::update(config, host, args), 1),
        C::Diff(args) => exit(m::diff(config, host, args), 1),
        C::Export(args) => exit(m::export(config, host, args), 1),
        C::Attach(args) => exit(m::attach(config, host, args), 1),
        C::Prune(args) => exit(m::container_prune(config, host, args), 1),
    }
}

fn main() -> ExitCode {
    let cli = parse();
    let (config, host) = (cli.config.as_deref(), &cli.target);
    // Commands whose exit code is a container's (125 when reg itself fails, as docker).
    let coded = match cli.command {
        Command::Node {
            command: cmd::serve::NodeCommand::Monitor { ref bundle, .. },
        } => Some(cmd::serve::monitor(bundle.as_deref())),
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
        Command::Container { command } => return container_command(config, host, command),
        Command::Create(args) => return exit(cmd::manage::create(config, host, *args), 125),
        Command::Commit(args) => return exit(cmd::manage::commit(config, host, args), 1),
        Command::Compose(args) => return exit(cmd::compose::compose(config, host, args), 1),
        Command::Import(args) => return exit(cmd::manage::import(config, host, args), 1),
        Command::Image { command } => return exit(cmd::manage::image(config, host, command), 1),
        Command::Builder { command } => {
            return exit(cmd::manage::builder(config, host, command), 1)
        }
        Command::System { command } => return exit(cmd::manage::system(config, host, command), 1),
        Command::Restart(args) => return exit(cmd::manage::restart(config, host, args), 1),
        Command::Pause(args) => return exit(cmd::manage::pause(config, host, args), 1),
        Command::Unpause(args) => return exit(cmd::manage::unpause(config, host, args), 1),
        Command::Top(args) => return exit(cmd::manage::top(config, host, args), 1),
        Command::Stats(args) => return exit(cmd::manage::stats(config, host, args), 1),
        Command::Cp(args) => return exit(cmd::manage::cp(config, host, args), 1),
        Command::Rename(args) => return exit(cmd::manage::rename(config, host, args), 1),
        Command::Update(args) => return exit(cmd::manage::update(config, host, args), 1),
        Command::Diff(args) => return exit(cmd::manage::diff(config, host, args), 1),
        Command::Export(args) => return exit(cmd::manage::export(config, host, args), 1),
        Command::Save(args) => return exit(cmd::manage::save(config, host, args), 1),
        Command::Load(args) => return exit(cmd::manage::load(config, host, args), 1),
        Command::History(args) => return exit(cmd::manage::history(config, host, args), 1),
        Command::Events(args) => return exit(cmd::manage::events(config, host, args), 1),
        Command::Attach(args) => return exit(cmd::manage::attach(config, host, args), 1),
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
        Command::Serve(args) => cmd::serve::run(config, args, host),
        Command::Completion { shell } => {
            cmd::docs::completion(shell, &mut <Cli as clap::CommandFactory>::command())
        }
        Command::Man { dir } => {
            cmd::docs::man(<Cli as clap::CommandFactory>::command(), dir.as_deref())
        }
        Command::Registry { command } => cmd::serve::run_registry(config, command),
        Command::Config { command } => cmd::config::run(config, command),
        Command::Admin(args) => cmd::admin::run(config, args),
        Command::Login(args) => cmd::login::login(args),
        Command::Node { command } => cmd::serve::run_node(config, command, host),
        Command::Pull(args) => cmd::image::pull(config, host, args),
        Command::Build(args) => cmd::build::build(config, host, args),
        Command::Images(args) => cmd::image::images(config, host, args),
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
