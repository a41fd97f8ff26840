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
    /// The user (asked for on a terminal when not given).
    #[arg(short, long)]
    username: Option<String>,
    /// The password on the command line (visible to other users of this machine: prefer
    /// --password-stdin, or the prompt).
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password (or an access token) from standard input.
    #[arg(long)]
    password_stdin: bool,
}

/// Asks `prompt` on the terminal (echoed), as docker's login does.
fn ask(prompt: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, Write};
    let mut out = std::io::stderr();
    write!(out, "{prompt}")?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// The username and password of a login: flags, standard input (`--password-stdin`), or
/// prompts when standard input is a terminal (the password without echo).
pub(crate) fn credentials(
    username: Option<String>,
    password: Option<String>,
    password_stdin: bool,
) -> anyhow::Result<(String, String)> {
    use std::io::IsTerminal;
    let tty = std::io::stdin().is_terminal();
    if password_stdin && password.is_some() {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    let username = match username {
        Some(u) => u,
        None if password_stdin => bail!("Must provide --username with --password-stdin"),
        None if tty => ask("Username: ")?,
        None => bail!(
            "Cannot perform an interactive login from a non TTY device: give --username and \
             --password-stdin"
        ),
    };
    if username.is_empty() {
        bail!("Username is required");
    }
    let password = if password_stdin {
        let mut p = String::new();
        std::io::stdin()
            .read_to_string(&mut p)
            .context("reading the password from standard input")?;
        p.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if tty {
        rpassword::prompt_password("Password: ").context("reading the password")?
    } else {
        bail!("Cannot perform an interactive login from a non TTY device: give --password-stdin")
    };
    if password.is_empty() {
        bail!("Password is required");
    }
    Ok((username, password))
}

#[derive(Args)]
pub struct LogoutArgs {
    #[arg(default_value = "127.0.0.1:5000")]
    server: String,
}

pub fn login(args: LoginArgs) -> anyhow::Result<()> {
    let (username, password) = credentials(args.username, args.password, args.password_stdin)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(client::check_login(&args.server, &username, &password))?;
    let path = client::credentials_path();
    let mut cfg = client::read_config(&path)?;
    cfg.auths.insert(
        args.server.clone(),
        client::AuthEntry {
            auth: client::encode_auth(&username, &password),
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
