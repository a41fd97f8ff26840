//! One module per command.

pub mod admin;
pub mod build;
pub mod compose;
pub mod compose_publish;
pub mod config;
pub mod container;
pub mod docs;
pub mod format;
pub mod image;
pub mod login;
pub mod manage;
mod node_view;
pub mod serve;
pub mod system;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use reg_node::api::TlsFiles;

/// The global `-H` and TLS flags, named as docker's. A client command talks to one agent
/// through them; `reg node serve` (and `reg serve`) listens on every `-H` with the same flags,
/// as `dockerd` does.
#[derive(clap::Args, Clone, Default)]
pub struct Target {
    /// The node agent: unix:///path/to/node.sock or tcp://HOST:PORT. Commands talk to one
    /// (default: $REG_HOST, else the configured socket); `reg node serve` listens on each.
    #[arg(short = 'H', long = "host", global = true, value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Mutual TLS over TCP: clients verify the agent and show their certificate, the agent
    /// takes only clients whose certificate --tlscacert signed (clients: also
    /// $DOCKER_TLS_VERIFY).
    #[arg(long, global = true)]
    pub tlsverify: bool,
    /// CA certificate that signs the other side's (clients: default ca.pem in
    /// $DOCKER_CERT_PATH, else ~/.docker).
    #[arg(long, global = true, value_name = "PATH")]
    pub tlscacert: Option<PathBuf>,
    /// This side's certificate (clients: default cert.pem beside ca.pem).
    #[arg(long, global = true, value_name = "PATH")]
    pub tlscert: Option<PathBuf>,
    /// This side's private key (clients: default key.pem beside ca.pem).
    #[arg(long, global = true, value_name = "PATH")]
    pub tlskey: Option<PathBuf>,
}

impl Target {
    /// The agent a client command talks to, and its TLS files when it verifies.
    pub fn client(&self, cfg: &reg_config::Config) -> anyhow::Result<(String, Option<TlsFiles>)> {
        self.client_with(cfg, |k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// [`Target::client`] with the environment as `env` (testable without touching the process).
    fn client_with(
        &self,
        cfg: &reg_config::Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<(String, Option<TlsFiles>)> {
        let host = match self.hosts.as_slice() {
            [] => env("REG_HOST").unwrap_or_else(|| cfg.node_client_host()),
            [one] => one.clone(),
            _ => bail!("give one -H to talk to (several are for `reg node serve`)"),
        };
        let flags = [&self.tlscacert, &self.tlscert, &self.tlskey];
        if !(self.tlsverify || env("DOCKER_TLS_VERIFY").is_some()) {
            if flags.iter().any(|f| f.is_some()) {
                bail!(
                    "--tlscacert, --tlscert and --tlskey need --tlsverify (or DOCKER_TLS_VERIFY=1): \
                     the agent speaks mutual TLS only"
                );
            }
            return Ok((host, None));
        }
        let dir = match env("DOCKER_CERT_PATH") {
            Some(d) => PathBuf::from(d),
            None => env("HOME").map(|h| Path::new(&h).join(".docker")).context(
                "no $DOCKER_CERT_PATH nor $HOME to find ca.pem, cert.pem and key.pem in: \
                     pass --tlscacert, --tlscert and --tlskey",
            )?,
        };
        let mut files = TlsFiles::in_dir(&dir);
        if let Some(p) = &self.tlscacert {
            files.ca = p.clone();
        }
        if let Some(p) = &self.tlscert {
            files.cert = p.clone();
        }
        if let Some(p) = &self.tlskey {
            files.key = p.clone();
        }
        Ok((host, Some(files)))
    }

    /// The agent's side: `-H` replaces `node.hosts`, the TLS flags set `node.tls_*`.
    pub fn serve_into(&self, cfg: &mut reg_config::Config) {
        if !self.hosts.is_empty() {
            cfg.node.hosts = self.hosts.clone();
        }
        if self.tlsverify {
            cfg.node.tls_verify = true;
        }
        for (flag, key) in [
            (&self.tlscacert, &mut cfg.node.tls_ca),
            (&self.tlscert, &mut cfg.node.tls_cert),
            (&self.tlskey, &mut cfg.node.tls_key),
        ] {
            if let Some(p) = flag {
                *key = p.display().to_string();
            }
        }
    }
}

/// Where the agent listens, checked (refused here, before anything starts, when a TCP host
/// other than loopback has no TLS).
pub fn listen(cfg: &reg_config::Config) -> anyhow::Result<reg_node::api::Listen> {
    let tls = cfg.node.tls().map(|t| TlsFiles {
        ca: t.ca,
        cert: t.cert,
        key: t.key,
    });
    Ok(reg_node::api::Listen::new(&cfg.node_hosts(), tls.as_ref())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> reg_config::Config {
        reg_config::Config {
            data_dir: PathBuf::from("/srv/reg"),
            ..Default::default()
        }
    }

    #[test]
    fn a_client_finds_its_agent_and_certificates_as_docker_does() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let none = Target::default();
        let (host, tls) = none.client_with(&cfg(), env(&[])).expect("default");
        assert_eq!(host, "unix:///srv/reg/node.sock");
        assert!(tls.is_none());
        let (host, tls) = none
            .client_with(
                &cfg(),
                env(&[
                    ("REG_HOST", "tcp://10.0.0.1:2376"),
                    ("DOCKER_TLS_VERIFY", "1"),
                    ("DOCKER_CERT_PATH", "/certs"),
                ]),
            )
            .expect("from the environment");
        assert_eq!(host, "tcp://10.0.0.1:2376");
        assert_eq!(tls, Some(TlsFiles::in_dir(Path::new("/certs"))));
        let flags = Target {
            hosts: vec!["tcp://127.0.0.1:2376".into()],
            tlsverify: true,
            tlskey: Some("/k.pem".into()),
            ..Target::default()
        };
        let (_, tls) = flags
            .client_with(&cfg(), env(&[("HOME", "/home/u")]))
            .expect("flags");
        let tls = tls.expect("verifying");
        assert_eq!(tls.ca, Path::new("/home/u/.docker/ca.pem"));
        assert_eq!(tls.key, Path::new("/k.pem"));
        let half = Target {
            tlscert: Some("/c.pem".into()),
            ..Target::default()
        };
        assert!(half.client_with(&cfg(), env(&[])).is_err());
    }
}
