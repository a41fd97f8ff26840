//! Container commands (`run`, `ps`, `logs`, `stop`, `kill`, `rm`, `wait`, `exec`, `start`,
//! `inspect`), all through the node agent's API, printed the way docker prints them.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{bail, Context};
use clap::Args;
use reg_node::api::wire::{ExecRequest, RunRequest};
use reg_node::api::AgentClient;
use reg_registry::Reference;

use super::image::{agent, each, pull_to, query_value, rt, PullArgs};

#[derive(Args)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Keep stdin open: this terminal's (or pipe's) input goes to the container.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-terminal (with -i, this terminal goes raw and talks to it).
    #[arg(short = 't', long)]
    tty: bool,
    /// Name the container (default: a generated adjective_animal).
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass this shell's value).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments).
    #[arg(long = "env-file")]
    env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// User to run as: USER[:GROUP], names or numeric ids.
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    /// Overwrite the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Memory limit, e.g. 64m, 1g (over it, the container is OOM-killed: exit 137).
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Maximum number of processes in the container.
    #[arg(long)]
    pids_limit: Option<i64>,
    /// CPUs, e.g. 0.5 (a CFS quota).
    #[arg(long)]
    cpus: Option<f64>,
    /// Network: bridge (the default network), a network's name, none (own namespace with lo
    /// only), host, or container:NAME (share another container's).
    #[arg(long = "network", alias = "net")]
    network: Option<String>,
    /// A fixed IPv4 address on the (user-defined) network.
    #[arg(long)]
    ip: Option<String>,
    /// Another name the container answers to on its network.
    #[arg(long = "network-alias", alias = "net-alias")]
    network_alias: Vec<String>,
    /// Add a link to another container: NAME[:ALIAS] (in /etc/hosts).
    #[arg(long)]
    link: Vec<String>,
    /// Publish a port: [HOSTIP:][HOSTPORT:]CONTAINERPORT[/udp].
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish every port the image exposes on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// A DNS server for the container.
    #[arg(long)]
    dns: Vec<String>,
    /// An /etc/hosts entry: NAME:IP (IP may be host-gateway).
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// Bind mount a host path or a named volume: /host:/ctr[:ro], NAME:/ctr[:ro], or /ctr.
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long)]
    restart: Option<String>,
    /// Add a Linux capability (e.g. NET_ADMIN, or ALL).
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop a Linux capability (e.g. CHOWN, or ALL).
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Every capability and device, no seccomp filter, no masked paths, writable /sys.
    #[arg(long)]
    privileged: bool,
    /// Give the container a host device: /dev/HOST[:/dev/CONTAINER[:rwm]].
    #[arg(long = "device")]
    device: Vec<String>,
    /// seccomp=unconfined or seccomp=PROFILE.json (docker's profile format).
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    /// A resource limit: NAME=SOFT[:HARD], e.g. nofile=1024:2048, nproc=512.
    #[arg(long = "ulimit")]
    ulimit: Vec<String>,
    image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

/// `64m`, `1g`, `512k`, `1048576` → bytes.
fn parse_size(s: &str) -> anyhow::Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("--memory {s:?}: use e.g. 64m or 1g"))?;
    if n <= 0.0 {
        bail!("--memory {s:?} must be positive");
    }
    Ok((n * mult as f64) as i64)
}

/// `-e K=V` as given; `-e K` takes this shell's value (dropped when unset), like docker.
fn env_entries(args: &RunArgs) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut add = |e: &str| {
        if e.contains('=') {
            out.push(e.to_string());
        } else if let Ok(v) = std::env::var(e) {
            out.push(format!("{e}={v}"));
        }
    };
    for f in &args.env_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("--env-file {}", f.display()))?;
        for line in text.lines() {
            let l = line.trim_start();
            if !l.is_empty() && !l.starts_with('#') {
                add(l);
            }
        }
    }
    for e in &args.env {
        add(e);
    }
    Ok(out)
}

fn security(args: &RunArgs) -> anyhow::Result<reg_node::runtime::Security> {
    let mut seccomp = None;
    for o in &args.security_opt {
        let (k, v) = o.split_once(['=', ':']).with_context(|| {
            format!("--security-opt {o:?}: use seccomp=unconfined or seccomp=PROFILE.json")
        })?;
        match k {
            "seccomp" if v == "unconfined" => seccomp = Some(v.to_string()),
            "seccomp" => {
                seccomp = Some(
                    std::fs::read_to_string(v)
                        .with_context(|| format!("reading seccomp profile {v}"))?,
                )
            }
            "no-new-privileges" => {}
            _ => bail!("--security-opt {o:?}: only seccomp=… is supported"),
        }
    }
    Ok(reg_node::runtime::Security {
        privileged: args.privileged,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        seccomp,
        ulimits: args.ulimit.clone(),
        devices: args.device.clone(),
    })
}

/// Prints one streamed line of container output; returns the exit code when it is the end.
fn print_stream(line: &str, failure: &mut Option<String>) -> Option<i64> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return None;
    };
    if let Some(s) = v["stdout"].as_str() {
        print!("{s}");
        let _ = std::io::stdout().flush();
    } else if let Some(s) = v["stderr"].as_str() {
        eprint!("{s}");
    } else if let Some(c) = v["exit"].as_i64() {
        return Some(c);
    } else if let Some(m) = v["message"].as_str() {
        *failure = Some(m.to_string());
    }
    None
}

/// Follows a streaming request to its exit code (125 with the reason when there is none).
fn stream_to_exit(
    agent: &AgentClient,
    rt: &tokio::runtime::Runtime,
    method: &str,
    path: &str,
    body: bytes::Bytes,
) -> anyhow::Result<u8> {
    let mut exit = None;
    let mut failure = None;
    let status = rt.block_on(agent.request_with_body(method, path, &[], body, |line| {
        if let Some(c) = print_stream(line, &mut failure) {
            exit = Some(c);
        }
    }))?;
    Ok(finish(exit, failure, status))
}

/// Sends this terminal's size to container `id` whenever it changes (SIGWINCH), while `rt` runs.
fn follow_resize(rt: &tokio::runtime::Runtime, agent: &AgentClient, id: &str) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut changed) = rt.block_on(async { signal(SignalKind::window_change()) }) else {
        return;
    };
    let (agent, id) = (agent.clone(), id.to_string());
    rt.spawn(async move {
        while changed.recv().await.is_some() {
            if let Some((h, w)) = reg_node::runtime::terminal_size(std::io::stdout().as_fd()) {
                let path = format!("/containers/{}/resize?h={h}&w={w}", query_value(&id));
                let _ = agent
                    .json_body("POST", &path, &serde_json::Value::Null)
                    .await;
            }
        }
    });
}

/// This process's terminal in raw mode while it lives (when stdin is a terminal).
struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        if !std::io::IsTerminal::is_terminal(&stdin) {
            return None;
        }
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin().as_fd(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}

/// Like [`stream_to_exit`], sending this process's stdin as the request body (`-i`).
fn stdin_to_exit(
    agent: &AgentClient,
    rt: &tokio::runtime::Runtime,
    path: &str,
    headers: &[(&str, String)],
) -> anyhow::Result<u8> {
    let mut exit = None;
    let mut failure = None;
    let status = rt.block_on(agent.request_streaming(
        "POST",
        path,
        headers,
        false,
        reg_node::api::stdin_body(),
        |line| {
            if let Some(c) = print_stream(line, &mut failure) {
                exit = Some(c);
            }
        },
    ))?;
    Ok(finish(exit, failure, status))
}

/// The exit code of a followed container: its own, or 125 with the reason.
fn finish(exit: Option<i64>, failure: Option<String>, status: u16) -> u8 {
    match (exit, failure) {
        (Some(c), _) => u8::try_from(c).unwrap_or(125),
        (None, Some(m)) => {
            eprintln!("reg: {m}");
            125
        }
        (None, None) => {
            eprintln!("reg: the agent answered {status} without an exit code");
            125
        }
    }
}

/// `reg run`: pull if missing, create, start; in the foreground follow the output to the exit
/// code, with `-d` print the id.
pub fn run(config: Option<&Path>, host: Option<&str>, args: RunArgs) -> anyhow::Result<u8> {
    if args.detach && args.rm && args.restart.is_some() {
        bail!("conflicting options: --restart and --rm");
    }
    let (agent, cfg) = agent(config, host)?;
    let r = Reference::parse(&args.image, &cfg.node.default_registry)?;
    let rt = rt()?;
    let body = RunRequest {
        image: r.to_string(),
        name: args.name.clone(),
        cmd: args.cmd.clone(),
        entrypoint: args.entrypoint.as_ref().map(|e| vec![e.clone()]),
        env: env_entries(&args)?,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        hostname: args.hostname.clone(),
        rm: args.rm,
        restart: args.restart.clone(),
        limits: reg_node::runtime::Limits {
            memory: args.memory.as_deref().map(parse_size).transpose()?,
            pids: args.pids_limit,
            cpus: args.cpus,
        },
        security: security(&args)?,
        volumes: args.volume.clone(),
        network: args.network.clone(),
        ip: args.ip.clone(),
        aliases: args.network_alias.clone(),
        links: args.link.clone(),
        publish: args.publish.clone(),
        publish_all: args.publish_all,
        dns: args.dns.clone(),
        add_hosts: args.add_host.clone(),
        tty: args.tty,
        tty_size: if args.tty {
            reg_node::runtime::terminal_size(std::io::stdout().as_fd())
        } else {
            None
        },
    };
    let body = serde_json::to_value(&body)?;
    // Create at once; only a missing image costs a pull (and a second try).
    let created = match rt.block_on(agent.json_body("POST", "/containers/create", &body)) {
        // A 404 is a missing image, container or network: only a missing image is pulled.
        Err(reg_node::api::AgentError::Api { status: 404, .. })
            if image_missing(&rt, &agent, &r.to_string()) =>
        {
            eprintln!("Unable to find image '{r}' locally");
            pull_to(
                config,
                host,
                PullArgs {
                    image: r.to_string(),
                },
                &mut std::io::stderr(),
            )?;
            rt.block_on(agent.json_body("POST", "/containers/create", &body))?
        }
        other => other?,
    };
    let id = created["Id"].as_str().unwrap_or_default().to_string();
    if args.detach {
        rt.block_on(agent.json_body(
            "POST",
            &format!("/containers/{id}/start"),
            &serde_json::Value::Null,
        ))?;
        println!("{id}");
        return Ok(0);
    }
    // With -t the container's terminal follows this one's size (docker's resize on SIGWINCH).
    if args.tty {
        follow_resize(&rt, &agent, &id);
    }
    if args.interactive {
        // Keystrokes go to the container's terminal as they are typed (restored on return).
        let _raw = if args.tty { RawMode::enter() } else { None };
        return stdin_to_exit(
            &agent,
            &rt,
            &format!("/containers/{id}/start?attach=1&stdin=1"),
            &[],
        );
    }
    stream_to_exit(
        &agent,
        &rt,
        "POST",
        &format!("/containers/{id}/start?attach=1"),
        bytes::Bytes::new(),
    )
}

#[derive(Args)]
pub struct StartArgs {
    /// Follow the output and exit with the container's code.
    #[arg(short = 'a', long)]
    attach: bool,
    containers: Vec<String>,
}

pub fn start(config: Option<&Path>, host: Option<&str>, args: StartArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    if args.attach {
        let [one] = args.containers.as_slice() else {
            bail!("start -a takes exactly one container");
        };
        return stream_to_exit(
            &agent,
            &rt,
            "POST",
            &format!("/containers/{}/start?attach=1", query_value(one)),
            bytes::Bytes::new(),
        );
    }
    each_container(&rt, &agent, &args.containers, "POST", |c| {
        format!("/containers/{}/start", query_value(c))
    })
}

/// One request per container, each name printed as docker does.
fn each_container(
    rt: &tokio::runtime::Runtime,
    agent: &AgentClient,
    containers: &[String],
    method: &str,
    path: impl Fn(&str) -> String,
) -> anyhow::Result<u8> {
    let path = |c: &str| Ok(path(c));
    each(
        rt,
        agent,
        containers,
        "container (name or id)",
        method,
        path,
        |c, _| println!("{c}"),
    )
}

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short = 'a', long)]
    all: bool,
    /// Only ids.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Full ids and commands.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
}

fn ago(rfc3339: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339_weak(
        rfc3339
            .trim_end_matches('Z')
            .split('.')
            .next()
            .unwrap_or(""),
    ) else {
        return String::new();
    };
    let secs = std::time::SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..=1 => "Less than a second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=3599 => format!("{} minutes", secs / 60),
        3600..=86_399 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

pub fn ps(config: Option<&Path>, host: Option<&str>, args: PsArgs) -> anyhow::Result<()> {
    let (agent, _) = agent(config, host)?;
    let path = if args.all {
        "/containers?all=1"
    } else {
        "/containers"
    };
    let list = rt()?.block_on(agent.json("GET", path))?;
    let rows = list.as_array().cloned().unwrap_or_default();
    if args.quiet {
        for c in rows {
            let id = c["Id"].as_str().unwrap_or("");
            println!(
                "{}",
                if args.no_trunc {
                    id
                } else {
                    &id[..id.len().min(12)]
                }
            );
        }
        return Ok(());
    }
    println!(
        "{:<12}   {:<28} {:<24} {:<16} {:<26} NAMES",
        "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS"
    );
    for c in rows {
        let id = c["Id"].as_str().unwrap_or("");
        let mut command: Vec<String> = vec![c["Path"].as_str().unwrap_or("").to_string()];
        command.extend(
            c["Args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string)),
        );
        let mut command = format!("\"{}\"", command.join(" "));
        if !args.no_trunc && command.len() > 22 {
            command = format!("{}…\"", &command[..command.floor_char_boundary(20)]);
        }
        let st = &c["State"];
        let status = match st["Status"].as_str().unwrap_or("") {
            "running" => format!("Up {}", ago(st["StartedAt"].as_str().unwrap_or(""))),
            "exited" => format!(
                "Exited ({}) {} ago",
                st["ExitCode"],
                ago(st["FinishedAt"].as_str().unwrap_or(""))
            ),
            other => {
                let mut s = other.to_string();
                if let Some(f) = s.get_mut(..1) {
                    f.make_ascii_uppercase();
                }
                s
            }
        };
        println!(
            "{:<12}   {:<28} {:<24} {:<16} {:<26} {}",
            if args.no_trunc {
                id
            } else {
                &id[..id.len().min(12)]
            },
            c["Config"]["Image"].as_str().unwrap_or(""),
            command,
            format!("{} ago", ago(c["Created"].as_str().unwrap_or(""))),
            status,
            c["Name"].as_str().unwrap_or("").trim_start_matches('/'),
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct LogsArgs {
    /// Keep following the output until the container stops.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines ("all" by default).
    #[arg(short = 'n', long)]
    tail: Option<String>,
    /// Prefix each line with its timestamp.
    #[arg(short = 't', long)]
    timestamps: bool,
    container: String,
}

pub fn logs(config: Option<&Path>, host: Option<&str>, args: LogsArgs) -> anyhow::Result<()> {
    let (agent, _) = agent(config, host)?;
    let mut path = format!(
        "/containers/{}/logs?follow={}",
        query_value(&args.container),
        u8::from(args.follow)
    );
    if let Some(t) = &args.tail {
        path.push_str(&format!("&tail={}", query_value(t)));
    }
    let mut failure = None;
    let status = rt()?.block_on(agent.request("GET", &path, &[], |line| {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        let ts = if args.timestamps {
            format!("{} ", v["time"].as_str().unwrap_or(""))
        } else {
            String::new()
        };
        if let Some(s) = v["stdout"].as_str() {
            print!("{ts}{s}");
            let _ = std::io::stdout().flush();
        } else if let Some(s) = v["stderr"].as_str() {
            eprint!("{ts}{s}");
        } else if let Some(m) = v["message"].as_str() {
            failure = Some(m.to_string());
        }
    }))?;
    if let Some(m) = failure {
        bail!("{m}");
    }
    if !(200..300).contains(&status) {
        bail!("the agent answered {status}");
    }
    Ok(())
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait for the stop signal to work before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    time: u64,
    containers: Vec<String>,
}

pub fn stop(config: Option<&Path>, host: Option<&str>, args: StopArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    each_container(&rt()?, &agent, &args.containers, "POST", |c| {
        format!("/containers/{}/stop?t={}", query_value(c), args.time)
    })
}

#[derive(Args)]
pub struct KillArgs {
    /// Signal to send (name or number).
    #[arg(short = 's', long = "signal", default_value = "KILL")]
    signal: String,
    containers: Vec<String>,
}

pub fn kill(config: Option<&Path>, host: Option<&str>, args: KillArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    each_container(&rt()?, &agent, &args.containers, "POST", |c| {
        format!(
            "/containers/{}/kill?signal={}",
            query_value(c),
            query_value(&args.signal)
        )
    })
}

#[derive(Args)]
pub struct RmArgs {
    /// Kill and remove a running container.
    #[arg(short = 'f', long)]
    force: bool,
    containers: Vec<String>,
}

pub fn rm(config: Option<&Path>, host: Option<&str>, args: RmArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    each_container(&rt()?, &agent, &args.containers, "DELETE", |c| {
        format!(
            "/containers/{}?force={}",
            query_value(c),
            u8::from(args.force)
        )
    })
}

#[derive(Args)]
pub struct WaitArgs {
    containers: Vec<String>,
}

/// Prints each container's exit code once it has stopped.
pub fn wait(config: Option<&Path>, host: Option<&str>, args: WaitArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let path = |c: &str| Ok(format!("/containers/{}/wait", query_value(c)));
    each(
        &rt()?,
        &agent,
        &args.containers,
        "container (name or id)",
        "POST",
        path,
        |_, v| println!("{}", v["StatusCode"]),
    )
}

#[derive(Args)]
pub struct ExecArgs {
    /// Keep stdin open: this terminal's (or pipe's) input goes to the process.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Set an environment variable (KEY=VALUE).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// User to run as: USER[:GROUP].
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    cmd: Vec<String>,
}

pub fn exec(config: Option<&Path>, host: Option<&str>, args: ExecArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let body = ExecRequest {
        cmd: args.cmd.clone(),
        env: args.env.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        tty: args.tty,
        tty_size: if args.tty {
            reg_node::runtime::terminal_size(std::io::stdout().as_fd())
        } else {
            None
        },
    };
    let rt = rt()?;
    let path = format!("/containers/{}/exec", query_value(&args.container));
    if args.interactive {
        use base64::Engine as _;
        let header = base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&body)?);
        let _raw = if args.tty { RawMode::enter() } else { None };
        return stdin_to_exit(
            &agent,
            &rt,
            &format!("{path}?stdin=1"),
            &[("x-reg-exec", header)],
        );
    }
    stream_to_exit(
        &agent,
        &rt,
        "POST",
        &path,
        serde_json::to_vec(&body)?.into(),
    )
}

#[derive(Args)]
pub struct PortArgs {
    container: String,
}

/// `reg port CTR`: `80/tcp -> 0.0.0.0:8080`, one line per binding.
pub fn port(config: Option<&Path>, host: Option<&str>, args: PortArgs) -> anyhow::Result<()> {
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    let c = rt.block_on(agent.json(
        "GET",
        &format!("/containers/{}/json", query_value(&args.container)),
    ))?;
    if let Some(ports) = c["NetworkSettings"]["Ports"].as_object() {
        for (k, v) in ports {
            for b in v.as_array().into_iter().flatten() {
                println!(
                    "{k} -> {}:{}",
                    b["HostIp"].as_str().unwrap_or(""),
                    b["HostPort"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct InspectArgs {
    /// Containers or images (containers first, as docker).
    names: Vec<String>,
}

pub fn inspect(config: Option<&Path>, host: Option<&str>, args: InspectArgs) -> anyhow::Result<()> {
    let (agent, cfg) = agent(config, host)?;
    let rt = rt()?;
    let mut out = Vec::new();
    for name in &args.names {
        let q = query_value(name);
        if let Ok(c) = rt.block_on(agent.json("GET", &format!("/containers/{q}/json"))) {
            out.push(c);
            continue;
        }
        let image = Reference::parse(name, &cfg.node.default_registry)
            .map(|r| query_value(&r.to_string()))
            .unwrap_or(q);
        let v = rt
            .block_on(agent.json("GET", &format!("/images/inspect?reference={image}")))
            .map_err(|_| anyhow::anyhow!("no such container or image: {name}"))?;
        out.push(serde_json::json!({
            "Id": v["id"],
            "RepoTags": [v["reference"]],
            "RepoDigests": [v["digest"]],
            "Size": v["size"],
            "Config": v["config"]["config"],
            "RootFS": v["config"]["rootfs"],
            "Architecture": v["config"]["architecture"],
            "Os": v["config"]["os"],
        }));
    }
    if out.is_empty() {
        bail!("give at least one container or image");
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Whether the agent answers 404 for image `reference` (as opposed to having it).
fn image_missing(rt: &tokio::runtime::Runtime, agent: &AgentClient, reference: &str) -> bool {
    let path = format!("/images/inspect?reference={}", query_value(reference));
    matches!(
        rt.block_on(agent.json("GET", &path)),
        Err(reg_node::api::AgentError::Api { status: 404, .. })
    )
}
