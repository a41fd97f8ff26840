//! `reg serve` and `reg registry serve`: load the configuration, start the registry, stop on
//! SIGTERM/SIGINT.

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
}

pub fn run(file: Option<&Path>, args: ServeArgs) -> anyhow::Result<()> {
    serve_registry(file, args)
}

pub fn run_registry(file: Option<&Path>, command: RegistryCommand) -> anyhow::Result<()> {
    match command {
        RegistryCommand::Serve(args) => serve_registry(file, args),
    }
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
    // Short blocking jobs only (SQLite, renames): transfers run on threads of their own.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(32)
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let data = cfg.data_dir.clone();
        let scheme = if cfg.registry.tls().is_some() {
            "https"
        } else {
            "http"
        };
        reg_registry::server::serve(&cfg, shutdown_signal(), |addr| {
            tracing::info!(
                data_dir = %data.display(),
                metadata = "sqlite",
                blobs = "local filesystem",
                "registry listening on {scheme}://{addr}"
            );
        })
        .await
    })
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
