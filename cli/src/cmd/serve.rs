//! `reg serve`, `reg registry serve` and `reg node serve`: load the configuration, start the
//! registry and/or the node agent (on every `-H`), stop on SIGTERM/SIGINT.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use reg_config::Config;

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:5000; port 0 picks a free port).
    #[arg(long)]
    addr: Option<String>,
    /// Data directory (default /var/lib/reg for root, ~/.local/share/reg otherwise).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Allow serving a non-loopback address while no user exists (everything open).
    #[arg(long)]
    insecure_no_auth: bool,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Serve the registry.
    Serve(ServeArgs),
    /// Collect garbage now, while the registry keeps serving the same data dir.
    Gc(GcArgs),
}

#[derive(Args, Clone)]
pub struct GcArgs {
    /// Data directory (default: the configured one).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print what would be removed and how many bytes would come back; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Spare everything uploaded, mounted or linked within this window (default
    /// registry.gc.grace, 1h).
    #[arg(long, value_name = "DURATION")]
    grace: Option<String>,
    /// Also remove untagged manifests that no tag reaches and that are older than this
    /// (default registry.gc.untagged: never).
    #[arg(long, value_name = "DURATION")]
    untagged: Option<String>,
    /// The report as JSON.
    #[arg(long)]
    json: bool,
    /// Judge ages as if the clock said this (seconds since the Unix epoch): tests collect
    /// "later" instead of sleeping through a grace window.
    #[arg(long, hide = true, value_name = "UNIX_SECONDS")]
    now: Option<i64>,
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Serve the node agent's API: on its unix socket, or on each -H (unix:///path,
    /// tcp://IP:PORT; TCP other than loopback needs --tlsverify --tlscacert --tlscert --tlskey).
    Serve(NodeServeArgs),
    /// (internal) The per-container monitor the agent starts: runs one container.
    #[command(hide = true)]
    Monitor {
        /// The container's OCI bundle directory (config.json + rootfs).
        #[arg(long, required_unless_present = "spare")]
        bundle: Option<PathBuf>,
        /// A spare, started before a container needs it: the bundle's path is the first line
        /// on stdin. The argument is room in the command line for that path.
        #[arg(long, conflicts_with = "bundle")]
        spare: Option<String>,
    },
    /// (internal) The `exec` helper: joins a running container and runs a command in it.
    #[command(hide = true)]
    Enter {
        #[arg(long)]
        spec: String,
    },
}

#[derive(Args, Clone)]
pub struct NodeServeArgs {
    /// Socket path (default: <data>/node.sock, unless -H is given); one more -H unix://PATH.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    data: Option<PathBuf>,
}

/// `reg serve`: the registry, and (as root) the node agent beside it.
pub fn run(file: Option<&Path>, args: ServeArgs, target: &super::Target) -> anyhow::Result<()> {
    let mut cfg = load(file, &args)?;
    target.serve_into(&mut cfg);
    cfg.validate()?;
    init_logging(&cfg);
    // Checked before anything starts: a refused host stops the registry from starting too.
    let listen = if nix_is_root() {
        Some(super::listen(&cfg)?)
    } else {
        None
    };
    let rt = runtime()?;
    rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = std::sync::Arc::new(stop_tx);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let on_signal = stop_tx.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = on_signal.send(true);
        });
        // The registry first: the node's registry for short names is this one, as bound
        // (its port may be chosen by the kernel), unless `node.default_registry` says otherwise.
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let registry = {
            let (cfg, stop) = (cfg.clone(), stopped(stop_rx.clone()));
            // The web interface shows the node agent started below (as root only).
            let node = if listen.is_some() {
                super::node_view::AgentView::of(&cfg)
                    .map(|v| std::sync::Arc::new(v) as std::sync::Arc<dyn reg_registry::server::nodes::NodeView>)
            } else {
                None
            };
            tokio::spawn(async move { registry_future(&cfg, node, stop, Some(bound_tx)).await })
        };
        let agent = if let Some(listen) = listen {
            let (data, mut settings) = (cfg.layout().node_root(), node_settings(&cfg)?);
            if cfg.node.default_registry == reg_config::NodeConfig::default().default_registry {
                if let Ok(addr) = bound_rx.await {
                    settings.default_registry = local_registry(addr);
                }
            }
            let stop = stopped(stop_rx.clone());
            Some(tokio::spawn(async move { reg_node::api::serve(listen, &data, settings, crate::build::routes, stop).await }))
        } else {
            tracing::warn!("node agent not started: it needs root (namespaces, cgroups, mounts); the registry runs alone");
            None
        };
        let registry = match registry.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("registry task failed: {e}")),
        };
        // A registry that ended (failed to start, or stopped) takes the agent along.
        let _ = stop_tx.send(true);
        if let Some(a) = agent {
            match a.await {
                Ok(Err(e)) => tracing::error!(error = %e, "node agent failed"),
                Err(e) => tracing::error!(error = %e, "node agent task failed"),
                Ok(Ok(())) => {}
            }
        }
        registry
    })
}

/// How the local node names the registry bound at `addr`: over loopback when it listens on
/// every address.
fn local_registry(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

fn nix_is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Raises this process's open-file soft limit to its hard limit, as containerd and dockerd do:
/// a server facing many clients (and the node, many containers) needs more than the usual
/// 1024, and no privilege is needed to go up to the hard limit.
fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
                Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    raise_nofile_limit();
    // Short blocking jobs only (SQLite, renames): transfers run on threads of their own.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(32)
        .build()
        .context("starting the async runtime")
}

/// The monitor: single-threaded on purpose (no runtime is started), then exits with the
/// container's code.
pub fn monitor(bundle: Option<&Path>) -> anyhow::Result<u8> {
    let from_stdin;
    let bundle = match bundle {
        Some(b) => b,
        None => match reg_node::runtime::monitor::bundle_from_stdin() {
            Some(b) => {
                from_stdin = b;
                from_stdin.as_path()
            }
            // The agent went away before it needed this spare (or the bundle's start failed,
            // recorded as for any monitor).
            None => return Ok(0),
        },
    };
    // A panic is recorded as the container's failure (its log and exit code 125), not lost
    // with the monitor's own stderr.
    let dir = bundle.to_path_buf();
    std::panic::set_hook(Box::new(move |info| {
        reg_node::runtime::monitor::fail(&dir, &format!("the container's monitor failed: {info}"));
    }));
    let code = match reg_node::runtime::bundle::read(bundle) {
        Ok(spec) => reg_node::runtime::monitor::monitor(&spec),
        Err(e) => reg_node::runtime::monitor::fail(bundle, &e),
    };
    Ok(u8::try_from(code).unwrap_or(125))
}

/// The exec helper: single-threaded too (setns into a mount namespace needs it).
pub fn enter(spec: &str) -> anyhow::Result<u8> {
    let spec: reg_node::runtime::ExecSpec =
        serde_json::from_str(spec).context("parsing the exec spec")?;
    Ok(u8::try_from(reg_node::runtime::enter(&spec)).unwrap_or(125))
}

pub fn run_node(
    file: Option<&Path>,
    command: NodeCommand,
    target: &super::Target,
) -> anyhow::Result<()> {
    let args = match command {
        NodeCommand::Serve(a) => a,
        NodeCommand::Monitor { .. } | NodeCommand::Enter { .. } => {
            anyhow::bail!("internal: the monitor is dispatched before this point")
        }
    };
    let mut cfg = Config::load(file)?;
    if let Some(d) = &args.data {
        cfg.data_dir = d.clone();
    }
    if let Some(s) = &args.socket {
        let s = s.display().to_string();
        // A path, as its name says: `--socket tcp://…` once made a socket file named `tcp:`.
        if s.contains("://") && !s.starts_with("unix://") {
            anyhow::bail!(
                "--socket takes a unix socket path, not {s:?}: to listen on TCP, pass -H {s} \
                 (with --tlsverify --tlscacert --tlscert --tlskey unless it is loopback)"
            );
        }
        cfg.node.socket = s;
    }
    target.serve_into(&mut cfg);
    cfg.validate()?;
    let listen = super::listen(&cfg)?;
    init_logging(&cfg);
    let rt = runtime()?;
    rt.block_on(reg_node::api::serve(
        listen,
        &cfg.layout().node_root(),
        node_settings(&cfg)?,
        crate::build::routes,
        shutdown_signal(),
    ))?;
    Ok(())
}

pub fn run_registry(file: Option<&Path>, command: RegistryCommand) -> anyhow::Result<()> {
    match command {
        RegistryCommand::Serve(args) => serve_registry(file, args),
        RegistryCommand::Gc(args) => gc(file, args),
    }
}

/// `reg registry gc`: one collection, reported line by line (or as JSON).
fn gc(file: Option<&Path>, args: GcArgs) -> anyhow::Result<()> {
    let mut cfg = Config::load(file)?;
    if let Some(d) = &args.data {
        cfg.data_dir = d.clone();
    }
    if let Some(g) = &args.grace {
        cfg.registry.gc.grace = g.clone();
    }
    if let Some(u) = &args.untagged {
        cfg.registry.gc.untagged = u.clone();
    }
    cfg.validate()?;
    if cfg.registry.metadata.url.is_empty() && !cfg.layout().registry_db().exists() {
        anyhow::bail!(
            "no registry data under {} (give the data dir with --data)",
            cfg.data_dir.display()
        );
    }
    let mut opts = reg_registry::server::gc_options(&cfg.registry)?;
    opts.dry_run = args.dry_run;
    opts.now = args.now;
    let r = reg_registry::server::gc_once(&cfg, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for t in &r.tags {
        println!("{verb} tag {t}");
    }
    for m in &r.manifests {
        println!("{verb} manifest {m}");
    }
    for (d, size) in &r.blobs {
        println!("{verb} blob {d} ({size} bytes)");
    }
    println!(
        "{verb} {} tags, {} manifests, {} links, {} blobs: {} back ({:.2} s)",
        r.tags.len(),
        r.manifests.len(),
        r.links,
        r.blobs.len(),
        super::image::mib(r.bytes),
        r.seconds
    );
    Ok(())
}

fn load(file: Option<&Path>, args: &ServeArgs) -> anyhow::Result<Config> {
    let mut cfg = Config::load(file)?;
    if let Some(a) = &args.addr {
        cfg.registry.addr = a.clone();
    }
    if let Some(d) = &args.data {
        cfg.data_dir = d.clone();
    }
    if args.insecure_no_auth {
        cfg.registry.insecure_no_auth = true;
    }
    if let (Some(c), Some(k)) = (&args.tls_cert, &args.tls_key) {
        cfg.registry.tls_cert = c.display().to_string();
        cfg.registry.tls_key = k.display().to_string();
    }
    cfg.validate()?;
    Ok(cfg)
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    // libcgroups reports, for every container, which controllers this host lacks: noise.
    let filter = match "libcgroups=error".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if cfg.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn serve_registry(file: Option<&Path>, args: ServeArgs) -> anyhow::Result<()> {
    let cfg = load(file, &args)?;
    init_logging(&cfg);
    let rt = runtime()?;
    rt.block_on(registry_future(&cfg, None, shutdown_signal(), None))
}

async fn registry_future(
    cfg: &Config,
    node: Option<std::sync::Arc<dyn reg_registry::server::nodes::NodeView>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    let data = cfg.data_dir.clone();
    let metadata = match cfg.registry.metadata.url.as_str() {
        "" => "sqlite".to_string(),
        url if reg_registry::server::db::is_postgres(url) => {
            format!("postgres ({})", reg_registry::server::db::redact(url))
        }
        path => format!("sqlite ({path})"),
    };
    let blobs = cfg
        .registry
        .storage
        .describe()
        .unwrap_or_else(|| "local filesystem".to_string());
    let scheme = if cfg.registry.tls().is_some() {
        "https"
    } else {
        "http"
    };
    reg_registry::server::serve(cfg, node, shutdown, |addr| {
        tracing::info!(
            data_dir = %data.display(),
            metadata = %metadata,
            blobs = %blobs,
            "registry listening on {scheme}://{addr}"
        );
        if let Some(tx) = bound {
            let _ = tx.send(addr);
        }
    })
    .await
    .with_context(|| {
        format!(
            "registry on {} with data under {}",
            cfg.registry.addr,
            cfg.data_dir.display()
        )
    })?;
    tracing::info!("registry stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// The agent's settings from the `[node]` configuration.
fn node_settings(cfg: &reg_config::Config) -> anyhow::Result<reg_node::api::Settings> {
    Ok(reg_node::api::Settings {
        default_registry: cfg.node.default_registry.clone(),
        log: reg_node::api::LogDefaults {
            max_size: Some(cfg.node.log_max_size).filter(|s| *s > 0),
            max_file: cfg.node.log_max_file,
        },
        build_cache_max: Some(cfg.node.build_cache_max_bytes).filter(|m| *m > 0),
        userns_pool: reg_node::runtime::userns::node_range(&cfg.node.userns_remap)?,
        metrics_addr: cfg.node.metrics_addr.clone(),
    })
}
