//! `reg pull`, `reg images`, `reg inspect`: image commands, all through the node agent's API
//! (`--host` / `REG_HOST`, like `DOCKER_HOST`); the cli never touches the store itself.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::bail;
use clap::Args;
use reg_node::api::{encode_auth, AgentClient, RegistryAuth};
use reg_registry::{client, Reference};

#[derive(Args)]
pub struct PullArgs {
    /// Image reference, e.g. 127.0.0.1:5000/team/app:1.0
    pub(crate) image: String,
}

pub(crate) fn agent(
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

/// One request per item (`path` builds it), each answer shown by `show`; an item that fails is
/// reported and the rest still run. The exit code: 1 when any failed.
pub(crate) fn each(
    rt: &tokio::runtime::Runtime,
    agent: &AgentClient,
    items: &[String],
    what: &str,
    method: &str,
    path: impl Fn(&str) -> anyhow::Result<String>,
    show: impl Fn(&str, serde_json::Value),
) -> anyhow::Result<u8> {
    if items.is_empty() {
        bail!("give at least one {what}");
    }
    let mut failed = false;
    for item in items {
        let answer = path(item).and_then(|p| {
            rt.block_on(agent.json_body(method, &p, &serde_json::Value::Null))
                .map_err(Into::into)
        });
        match answer {
            Ok(v) => show(item, v),
            Err(e) => {
                eprintln!("reg: {item}: {e}");
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

/// Percent-encodes a query value (everything but unreserved characters).
pub(crate) fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The outcome carried by one line of a streamed answer (pull, push, build): `{KEY: …}` is the
/// result (returned whole), `{"error": …}` or `{"message": …}` a failure; `None` for progress.
pub(crate) fn outcome(
    v: &serde_json::Value,
    key: &str,
) -> Option<Result<serde_json::Value, String>> {
    if v.get(key).is_some() {
        Some(Ok(v.clone()))
    } else {
        v["error"]
            .as_str()
            .or(v["message"].as_str())
            .map(|e| Err(e.to_string()))
    }
}

pub(crate) fn rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A digest (JSON string) as docker shows layers: 12 hex digits.
fn short(d: &serde_json::Value) -> String {
    d.as_str()
        .unwrap_or("")
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

/// A size as docker prints it (`12.3 MB`).
pub(crate) fn mib(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1_000_000.0)
}

pub fn pull(config: Option<&Path>, host: Option<&str>, args: PullArgs) -> anyhow::Result<()> {
    pull_to(config, host, args, &mut std::io::stdout())
}

/// Pulls, writing progress to `w` (stdout for `reg pull`, stderr inside `reg run`, as docker).
pub(crate) fn pull_to(
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
    let mut result: Option<Result<serde_json::Value, String>> = None;
    let status = rt()?.block_on(agent.request("POST", &path, &headers, |line| {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
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
                if let Some(o) = outcome(&v, "image") {
                    result = Some(o);
                }
            }
        }
    }))?;
    match result {
        Some(Ok(v)) => {
            let _ = writeln!(w, "Digest: {}", v["image"]["digest"].as_str().unwrap_or(""));
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

#[derive(Args)]
pub struct PushArgs {
    /// Image reference in the node's store, e.g. 127.0.0.1:5000/team/app:1.0
    pub(crate) image: String,
}

/// `reg push`: uploads what the registry lacks, with progress; prints the digest.
pub fn push(config: Option<&Path>, host: Option<&str>, args: PushArgs) -> anyhow::Result<()> {
    let (agent, cfg) = agent(config, host)?;
    let r = Reference::parse(&args.image, &cfg.node.default_registry)?;
    let mut headers = Vec::new();
    if let Some((username, password)) = client::lookup(&r.registry)? {
        headers.push((
            "x-registry-auth",
            encode_auth(&RegistryAuth { username, password }),
        ));
    }
    println!("The push refers to repository [{}/{}]", r.registry, r.repo);
    let path = format!("/images/push?reference={}", query_value(&r.to_string()));
    let mut result: Option<Result<serde_json::Value, String>> = None;
    let mut last_draw = std::time::Instant::now();
    let status = rt()?.block_on(agent.request("POST", &path, &headers, |line| {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        match v["status"].as_str() {
            Some("exists") => println!("{}: Layer already exists", short(&v["layer"])),
            Some("pushed") => println!("{}: Pushed", short(&v["layer"])),
            Some("mounted") => println!(
                "{}: Mounted from {}",
                short(&v["layer"]),
                v["from"].as_str().unwrap_or("another repository")
            ),
            Some("uploading") if last_draw.elapsed().as_millis() > 500 => {
                last_draw = std::time::Instant::now();
                print!(
                    "\r{}: uploading {} / {}   ",
                    short(&v["layer"]),
                    mib(v["done"].as_u64().unwrap_or(0)),
                    mib(v["total"].as_u64().unwrap_or(0))
                );
                let _ = std::io::stdout().flush();
            }
            _ => {
                if let Some(o) = outcome(&v, "pushed") {
                    result = Some(o);
                }
            }
        }
    }))?;
    match result {
        Some(Ok(v)) => {
            println!(
                "{}: digest: {} size: {}",
                r.tag
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "latest".into()),
                v["pushed"].as_str().unwrap_or(""),
                v["size"]
            );
            Ok(())
        }
        Some(Err(e)) => bail!("push of {r} failed: {e}"),
        None => bail!("push of {r} failed: the agent answered {status} without a result"),
    }
}

#[derive(Args)]
pub struct TagArgs {
    source: String,
    target: String,
}

pub fn tag(config: Option<&Path>, host: Option<&str>, args: TagArgs) -> anyhow::Result<()> {
    let (agent, cfg) = agent(config, host)?;
    let source = Reference::parse(&args.source, &cfg.node.default_registry)?;
    let target = Reference::parse(&args.target, &cfg.node.default_registry)?;
    rt()?.block_on(agent.json_body(
        "POST",
        &format!(
            "/images/tag?source={}&target={}",
            query_value(&source.to_string()),
            query_value(&target.to_string())
        ),
        &serde_json::Value::Null,
    ))?;
    Ok(())
}

#[derive(Args)]
pub struct RmiArgs {
    /// Remove even when a container uses it (its layers stay until the container goes).
    #[arg(short = 'f', long)]
    force: bool,
    images: Vec<String>,
}

pub fn rmi(config: Option<&Path>, host: Option<&str>, args: RmiArgs) -> anyhow::Result<u8> {
    let (agent, cfg) = agent(config, host)?;
    let path = |i: &str| -> anyhow::Result<String> {
        let r = Reference::parse(i, &cfg.node.default_registry)?;
        Ok(format!(
            "/images?reference={}&force={}",
            query_value(&r.to_string()),
            u8::from(args.force)
        ))
    };
    each(
        &rt()?,
        &agent,
        &args.images,
        "image",
        "DELETE",
        path,
        |_, v| {
            for l in v.as_array().into_iter().flatten() {
                println!("{}", l.as_str().unwrap_or(""));
            }
        },
    )
}
