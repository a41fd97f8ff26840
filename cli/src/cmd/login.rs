//! `reg login` / `reg logout`: credentials in docker's config.json format, in reg's own config
//! dir (docker's file is read as a fallback, never written).

use std::io::Read;

use anyhow::{bail, Context};
use clap::Args;
use reg_registry::client;

#[derive(Args)]
pub struct LoginArgs {
    /// Registry host[:port] (default 127.0.0.1:5000).
    #[arg(default_value = "127.0.0.1:5000")]
    server: String,
    #[arg(short, long)]
    username: String,
    /// Read the password (or an access token) from standard input.
    #[arg(long, required = true)]
    password_stdin: bool,
}

#[derive(Args)]
pub struct LogoutArgs {
    #[arg(default_value = "127.0.0.1:5000")]
    server: String,
}

pub fn login(args: LoginArgs) -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("empty password on standard input");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(client::check_login(&args.server, &args.username, &password))?;
    let path = client::credentials_path();
    let mut cfg = client::read_config(&path)?;
    cfg.auths.insert(
        args.server.clone(),
        client::AuthEntry {
            auth: client::encode_auth(&args.username, &password),
            identitytoken: String::new(),
        },
    );
    client::write_config(&path, &cfg)?;
    println!("Login Succeeded (credentials saved in {})", path.display());
    Ok(())
}

pub fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let path = client::credentials_path();
    let mut cfg = client::read_config(&path)?;
    if cfg.auths.remove(&args.server).is_none() {
        println!("Not logged in to {}", args.server);
        return Ok(());
    }
    client::write_config(&path, &cfg)?;
    println!("Removed login credentials for {}", args.server);
    Ok(())
}
