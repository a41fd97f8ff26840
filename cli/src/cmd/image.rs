//! `reg pull`, `reg images`, `reg inspect`: image commands, all through the node agent's API
//! (`--host` / `REG_HOST`, like `DOCKER_HOST`); the cli never touches the store itself.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use clap::Args;
use reg_node::agent::{encode_auth, AgentClient, RegistryAuth};
use reg_registry::{client, Reference};

#[derive(Args)]
pub struct PullArgs {
    /// Image reference, e.g. 127.0.0.1:5000/team/app:1.0
    image: String,
}

#[derive(Args)]
pub struct InspectArgs {
    image: String,
}

fn agent(
    config: Option<&Path>,
    host: Option<&str>,
) -> anyhow::Result<(AgentClient, reg_config::Config)> {
    let cfg = reg_config::Config::load(config)?;
    let host = match host {
        Some(h) => h.to_string(),
        None => format!("unix://{}", cfg.node_socket().display()),
    };
    Ok((AgentClient::new(&host)?, cfg))
}

/// Percent-encodes a query value (everything but unreserved characters).
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn mib(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1_000_000.0)
}

pub fn pull(config: Option<&Path>, host: Option<&str>, args: PullArgs) -> anyhow::Result<()> {
    pull_to(config, host, args, &mut std::io::stdout())
}

/// Pulls, writing progress to `w` (stdout for `reg pull`, stderr inside `reg run`, as docker).
fn pull_to(
    config: Option<&Path>,
    host: Option<&str>,
    args: PullArgs,
    w: &mut dyn Write,
) -> anyhow::Result<()> {
    let (agent, cfg) = agent(config, host)?;
    let r = Reference::parse(&args.image, &cfg.node.default_registry)?;
    let mut headers = Vec::new();
    if let Some((username, password)) = client::lookup(&r.registry)? {
        headers.push((
            "x-registry-auth",
            encode_auth(&RegistryAuth { username, password }),
        ));
    }
    let path = format!("/images/pull?reference={}", query_value(&r.to_string()));
    let _ = writeln!(w, "Pulling {r}");
    let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
    let mut last_draw = std::time::Instant::now();
    let mut outcome: Option<Result<serde_json::Value, String>> = None;
    let status = rt()?.block_on(agent.request("POST", &path, &headers, |line| {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        let short = |d: &serde_json::Value| {
            d.as_str()
                .unwrap_or("")
                .trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>()
        };
        match v["status"].as_str() {
            Some("resolved") => {
                let _ = writeln!(
                    w,
                    "{}: resolved, {} layers",
                    short(&v["digest"]),
                    v["layers"]
                );
            }
            Some("exists") => {
                let _ = writeln!(w, "{}: already exists", short(&v["layer"]));
            }
            Some("done") => {
                let _ = writeln!(w, "{}: pull complete", short(&v["layer"]));
            }
            Some("downloading") => {
                layers.insert(
                    short(&v["layer"]),
                    (
                        v["done"].as_u64().unwrap_or(0),
                        v["total"].as_u64().unwrap_or(0),
                    ),
                );
                if last_draw.elapsed().as_millis() > 500 {
                    last_draw = std::time::Instant::now();
                    let (done, total) =
                        layers.values().fold((0, 0), |a, (d, t)| (a.0 + d, a.1 + t));
                    let _ = write!(w, "\rdownloading {} / {}   ", mib(done), mib(total));
                    let _ = w.flush();
                }
            }
            _ => {
                if let Some(img) = v.get("image") {
                    outcome = Some(Ok(img.clone()));
                } else if let Some(e) = v["error"].as_str().or(v["message"].as_str()) {
                    outcome = Some(Err(e.to_string()));
                }
            }
        }
    }))?;
    match outcome {
        Some(Ok(img)) => {
            let _ = writeln!(w, "Digest: {}", img["digest"].as_str().unwrap_or(""));
            let _ = writeln!(w, "Status: image is up to date for {r}");
            Ok(())
        }
        Some(Err(e)) => bail!("pull of {r} failed: {e}"),
        None => bail!("pull of {r} failed: the agent answered {status} without a result"),
    }
}

pub fn images(config: Option<&Path>, host: Option<&str>) -> anyhow::Result<()> {
    let (agent, _) = agent(config, host)?;
    let list = rt()?.block_on(agent.json("GET", "/images"))?;
    println!("{:<50} {:<16} {:<14} SIZE", "REPOSITORY", "TAG", "IMAGE ID");
    for img in list.as_array().into_iter().flatten() {
        let reference = img["reference"].as_str().unwrap_or("");
        let (repo, tag) = match reference.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => (reference, "<none>"),
        };
        let id: String = img["id"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect();
        println!(
            "{repo:<50} {tag:<16} {id:<14} {}",
            mib(img["size"].as_u64().unwrap_or(0))
        );
    }
    Ok(())
}

pub fn inspect(config: Option<&Path>, host: Option<&str>, args: InspectArgs) -> anyhow::Result<()> {
    let (agent, _) = agent(config, host)?;
    let q = query_value(&args.image);
    let v = rt()?
        .block_on(agent.json("GET", &format!("/images/inspect?reference={q}")))
        .with_context(|| format!("inspect {}", args.image))?;
    let out = serde_json::json!([{
        "Id": v["id"],
        "RepoTags": [v["reference"]],
        "RepoDigests": [v["digest"]],
        "Size": v["size"],
        "Config": v["config"]["config"],
        "RootFS": v["config"]["rootfs"],
        "Architecture": v["config"]["architecture"],
        "Os": v["config"]["os"],
    }]);
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

#[derive(Args)]
pub struct RunArgs {
    /// Remove the container when it exits (the only mode so far: containers run in the foreground).
    #[arg(long)]
    rm: bool,
    /// Set an environment variable (KEY=VALUE).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
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
    /// Network mode; only `none` exists so far (bridge networks come with the networking issue).
    #[arg(long, default_value = "none")]
    network: String,
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

/// `reg run`: pull if missing, run in the foreground, exit with the container's code.
pub fn run(config: Option<&Path>, host: Option<&str>, args: RunArgs) -> anyhow::Result<u8> {
    if args.network != "none" {
        bail!(
            "--network {}: only `none` is implemented so far",
            args.network
        );
    }
    let (agent, cfg) = agent(config, host)?;
    let r = Reference::parse(&args.image, &cfg.node.default_registry)?;
    let rt = rt()?;
    let present = rt.block_on(agent.json(
        "GET",
        &format!("/images/inspect?reference={}", query_value(&r.to_string())),
    ));
    if present.is_err() {
        eprintln!("Unable to find image '{r}' locally");
        pull_to(
            config,
            host,
            PullArgs {
                image: r.to_string(),
            },
            &mut std::io::stderr(),
        )?;
    }
    let body = serde_json::json!({
        "image": r.to_string(),
        "cmd": args.cmd,
        "entrypoint": args.entrypoint.map(|e| vec![e]),
        "env": args.env,
        "workdir": args.workdir,
        "hostname": args.hostname,
        "rm": args.rm,
        "limits": {
            "memory": args.memory.as_deref().map(parse_size).transpose()?,
            "pids": args.pids_limit,
            "cpus": args.cpus,
        },
    });
    let mut exit: Option<i64> = None;
    let mut failure: Option<String> = None;
    let status = rt.block_on(agent.request_with_body(
        "POST",
        "/containers/run",
        &[],
        serde_json::to_vec(&body)?.into(),
        |line| {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                return;
            };
            if let Some(s) = v["stdout"].as_str() {
                print!("{s}");
                let _ = std::io::stdout().flush();
            } else if let Some(s) = v["stderr"].as_str() {
                eprint!("{s}");
            } else if let Some(c) = v["exit"].as_i64() {
                exit = Some(c);
            } else if let Some(m) = v["message"].as_str() {
                failure = Some(m.to_string());
            }
        },
    ))?;
    match (exit, failure) {
        (Some(c), _) => Ok(u8::try_from(c).unwrap_or(125)),
        (None, Some(m)) => {
            eprintln!("reg: {m}");
            Ok(125)
        }
        (None, None) => {
            eprintln!("reg: the agent answered {status} without an exit code");
            Ok(125)
        }
    }
}
