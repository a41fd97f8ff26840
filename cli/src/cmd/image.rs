//! `reg pull`, `reg images`, `reg inspect`: image commands, all through the node agent's API
//! (`-H` / `REG_HOST`, like `DOCKER_HOST`); the cli never touches the store itself.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::bail;
use clap::Args;
use reg_node::api::{encode_auth, AgentClient, RegistryAuth};
use reg_registry::{client, Reference};

use super::Target;

#[derive(Args)]
pub struct PullArgs {
    /// Image reference, e.g. 127.0.0.1:5000/team/app:1.0
    pub(crate) image: String,
}

pub(crate) fn agent(
    config: Option<&Path>,
    host: &Target,
) -> anyhow::Result<(AgentClient, reg_config::Config)> {
    let cfg = reg_config::Config::load(config)?;
    let (addr, tls) = host.client(&cfg)?;
    Ok((AgentClient::connect(&addr, tls.as_ref())?, cfg))
}

/// [`agent`], with the configuration's `node.default_registry` replaced by the node's own
/// (what a short name such as `busybox` means is the node's to say, as with dockerd); this
/// client's setting stays when the node does not say.
/// [`agent_for_names`] for commands about one image: a reference that names its registry needs
/// no default, so the agent is not asked for one (a round trip off `reg run`'s path).
pub(crate) fn agent_for_image(
    config: Option<&Path>,
    host: &Target,
    image: &str,
) -> anyhow::Result<(AgentClient, reg_config::Config)> {
    if names_registry(image) {
        agent(config, host)
    } else {
        agent_for_names(config, host)
    }
}

/// Whether `image` starts with a registry host, as docker reads references: a first path
/// component with a `.` or a `:`, or `localhost`.
fn names_registry(image: &str) -> bool {
    match image.split_once('/') {
        Some((first, _)) => first.contains(['.', ':']) || first == "localhost",
        None => false,
    }
}

pub(crate) fn agent_for_names(
    config: Option<&Path>,
    host: &Target,
) -> anyhow::Result<(AgentClient, reg_config::Config)> {
    let (agent, mut cfg) = agent(config, host)?;
    let v = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(agent.json("GET", "/version"));
    if let Some(r) = v
        .ok()
        .and_then(|v| {
            v["Components"][0]["Details"]["DefaultRegistry"]
                .as_str()
                .map(str::to_string)
        })
        .filter(|r| !r.is_empty())
    {
        cfg.node.default_registry = r;
    }
    Ok((agent, cfg))
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

/// Image `reference` (complete) as a path segment of `/images/{name}/…`: its slashes and
/// port colon stay, as docker sends them (the agent tells the routes apart by the last part).
pub(crate) fn image_path(reference: &str) -> String {
    reference
        .split('/')
        .map(query_value)
        .collect::<Vec<_>>()
        .join("/")
}

/// The outcome carried by one line of a streamed answer (a build): `{KEY: …}` is the
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

/// A size as docker prints it (`12.3 MB`).
pub(crate) fn mib(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1_000_000.0)
}

pub fn pull(config: Option<&Path>, host: &Target, args: PullArgs) -> anyhow::Result<()> {
    pull_to(config, host, args, &mut std::io::stdout())
}

/// Pulls, writing progress to `w` (stdout for `reg pull`, stderr inside `reg run`, as docker).
pub(crate) fn pull_to(
    config: Option<&Path>,
    host: &Target,
    args: PullArgs,
    w: &mut dyn Write,
) -> anyhow::Result<()> {
    let (agent, cfg) = agent_for_names(config, host)?;
    let r = Reference::parse(&args.image, &cfg.node.default_registry)?;
    let mut headers = Vec::new();
    if let Some((username, password)) = client::lookup(&r.registry)? {
        headers.push((
            "x-registry-auth",
            encode_auth(&RegistryAuth { username, password }),
        ));
    }
    let path = format!("/images/create?fromImage={}", query_value(&r.to_string()));
    let _ = writeln!(w, "Pulling {r}");
    let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
    let mut last_draw = std::time::Instant::now();
    let mut digest = None;
    let mut failure = None;
    // docker's JSON messages: `status` (with a layer's `id` and `progressDetail`), or `error`.
    let status = rt()?.block_on(agent.request("POST", &path, &headers, |line| {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        if let Some(e) = failure_of(&v) {
            failure = Some(e);
            return;
        }
        let id = v["id"].as_str().unwrap_or("");
        match v["status"].as_str().unwrap_or("") {
            "Already exists" => {
                let _ = writeln!(w, "{id}: already exists");
            }
            "Pull complete" => {
                let _ = writeln!(w, "{id}: pull complete");
            }
            "Downloading" => {
                let p = &v["progressDetail"];
                layers.insert(
                    id.to_string(),
                    (
                        p["current"].as_u64().unwrap_or(0),
                        p["total"].as_u64().unwrap_or(0),
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
            s => {
                if let Some(d) = s.strip_prefix("Digest: ") {
                    digest = Some(d.to_string());
                }
            }
        }
    }))?;
    match (failure, digest) {
        (Some(e), _) => bail!("pull of {r} failed: {e}"),
        (None, Some(d)) => {
            let _ = writeln!(w, "Digest: {d}");
            let _ = writeln!(w, "Status: image is up to date for {r}");
            Ok(())
        }
        (None, None) => bail!("pull of {r} failed: the agent answered {status} without a result"),
    }
}

/// The failure a JSON message (or a refusal's body) carries: docker's `error`, or `message`.
fn failure_of(v: &serde_json::Value) -> Option<String> {
    v["error"]
        .as_str()
        .or(v["message"].as_str())
        .map(str::to_string)
}

#[derive(Args)]
pub struct ImagesArgs {
    /// Only image ids.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Full image ids.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// All images (reg keeps no intermediate images: the same as without).
    #[arg(short = 'a', long)]
    all: bool,
    /// Filter: dangling=true|false, label=KEY[=VALUE], reference=PATTERN, before=, since=.
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// A Go template ('table {{.Repository}}\t{{.ID}}', '{{json .}}'), or json.
    #[arg(long)]
    format: Option<String>,
    /// Only images of this repository (and tag).
    repository: Option<String>,
}

const IMAGES_HEADERS: super::format::Headers = &[
    ("ID", "IMAGE ID"),
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("Digest", "DIGEST"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
    ("Containers", "CONTAINERS"),
];

pub fn images(config: Option<&Path>, host: &Target, args: ImagesArgs) -> anyhow::Result<()> {
    let (agent, _) = agent(config, host)?;
    let _ = args.all;
    let mut filters = args.filter.clone();
    if let Some(r) = &args.repository {
        filters.push(format!("reference={r}"));
    }
    let path = format!(
        "/images/json?digests=1{}",
        super::container::filters_query(&filters)?
    );
    let list = rt()?.block_on(agent.json("GET", &path))?;
    // One row per name (an image with several names shows once for each), docker's order:
    // newest first.
    let mut rows: Vec<serde_json::Value> = Vec::new();
    for img in list.as_array().into_iter().flatten() {
        let id = img["Id"].as_str().unwrap_or("");
        let short = if args.no_trunc {
            id.to_string()
        } else {
            id.trim_start_matches("sha256:").chars().take(12).collect()
        };
        let created = img["Created"].as_i64().unwrap_or(0);
        let digest = img["RepoDigests"][0]
            .as_str()
            .and_then(|d| d.rsplit_once('@'))
            .map(|(_, d)| d.to_string())
            .unwrap_or_else(|| "<none>".into());
        let mut names: Vec<(String, String)> = img["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .filter(|t| *t != "<none>:<none>")
            .map(|t| match t.rsplit_once(':') {
                Some((r, tag)) if !tag.contains('/') => (r.to_string(), tag.to_string()),
                _ => (t.to_string(), "<none>".to_string()),
            })
            .collect();
        if names.is_empty() {
            names.push(("<none>".into(), "<none>".into()));
        }
        for (repo, tag) in names {
            rows.push(serde_json::json!({
                "ID": short,
                "Repository": repo,
                "Tag": tag,
                "Digest": digest,
                "CreatedSince": format!("{} ago", super::format::human_duration(super::format::since_unix(created))),
                "CreatedAt": humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(created).unwrap_or(0)),
                ).to_string(),
                "Size": super::format::human_size(img["Size"].as_u64().unwrap_or(0)),
                "Containers": img["Containers"].as_i64().map(|n| n.to_string()).unwrap_or_else(|| "N/A".into()),
                "_created": created,
            }));
        }
    }
    rows.sort_by(|a, b| {
        b["_created"]
            .as_i64()
            .cmp(&a["_created"].as_i64())
            .then_with(|| a["Repository"].as_str().cmp(&b["Repository"].as_str()))
            .then_with(|| a["Tag"].as_str().cmp(&b["Tag"].as_str()))
    });
    for r in &mut rows {
        if let Some(o) = r.as_object_mut() {
            o.remove("_created");
        }
    }
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            let id = r["ID"].as_str().unwrap_or("");
            if seen.insert(id.to_string()) {
                println!("{id}");
            }
        }
        return Ok(());
    }
    let table = if args.digests {
        "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    super::format::print(&rows, args.format.as_deref(), table, IMAGES_HEADERS)
}

#[derive(Args)]
pub struct PushArgs {
    /// Image reference in the node's store, e.g. 127.0.0.1:5000/team/app:1.0
    pub(crate) image: String,
}

/// `reg push`: uploads what the registry lacks, with progress; prints the digest.
pub fn push(config: Option<&Path>, host: &Target, args: PushArgs) -> anyhow::Result<()> {
    let (agent, cfg) = agent_for_names(config, host)?;
    let r = Reference::parse(&args.image, &cfg.node.default_registry)?;
    let mut headers = Vec::new();
    if let Some((username, password)) = client::lookup(&r.registry)? {
        headers.push((
            "x-registry-auth",
            encode_auth(&RegistryAuth { username, password }),
        ));
    }
    println!("The push refers to repository [{}/{}]", r.registry, r.repo);
    let tag = r
        .tag
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "latest".into());
    let path = format!(
        "/images/{}/push?tag={}",
        image_path(&format!("{}/{}", r.registry, r.repo)),
        query_value(&tag)
    );
    let mut pushed = None;
    let mut failure = None;
    let mut last_draw = std::time::Instant::now();
    let status = rt()?.block_on(agent.request("POST", &path, &headers, |line| {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        if let Some(e) = failure_of(&v) {
            failure = Some(e);
            return;
        }
        let id = v["id"].as_str().unwrap_or("");
        match v["status"].as_str().unwrap_or("") {
            s @ ("Layer already exists" | "Pushed") => println!("{id}: {s}"),
            s if s.starts_with("Mounted from ") => println!("{id}: {s}"),
            "Pushing" if last_draw.elapsed().as_millis() > 500 => {
                last_draw = std::time::Instant::now();
                let p = &v["progressDetail"];
                print!(
                    "\r{id}: uploading {} / {}   ",
                    mib(p["current"].as_u64().unwrap_or(0)),
                    mib(p["total"].as_u64().unwrap_or(0))
                );
                let _ = std::io::stdout().flush();
            }
            _ => {
                // The result: docker's `aux` record of the tag pushed.
                if v["aux"]["Digest"].is_string() {
                    pushed = Some(v["aux"].clone());
                }
            }
        }
    }))?;
    match (failure, pushed) {
        (Some(e), _) => bail!("push of {r} failed: {e}"),
        (None, Some(aux)) => {
            println!(
                "{tag}: digest: {} size: {}",
                aux["Digest"].as_str().unwrap_or(""),
                aux["Size"]
            );
            Ok(())
        }
        (None, None) => bail!("push of {r} failed: the agent answered {status} without a result"),
    }
}

#[derive(Args)]
pub struct TagArgs {
    source: String,
    target: String,
}

pub fn tag(config: Option<&Path>, host: &Target, args: TagArgs) -> anyhow::Result<()> {
    let (agent, cfg) = agent_for_names(config, host)?;
    let source = Reference::parse(&args.source, &cfg.node.default_registry)?;
    let target = Reference::parse(&args.target, &cfg.node.default_registry)?;
    let tag = target
        .tag
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "latest".into());
    rt()?.block_on(agent.json(
        "POST",
        &format!(
            "/images/{}/tag?repo={}&tag={}",
            image_path(&source.to_string()),
            query_value(&format!("{}/{}", target.registry, target.repo)),
            query_value(&tag)
        ),
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

pub fn rmi(config: Option<&Path>, host: &Target, args: RmiArgs) -> anyhow::Result<u8> {
    let (agent, cfg) = agent_for_names(config, host)?;
    let rt = rt()?;
    if args.images.is_empty() {
        bail!("give at least one image");
    }
    let mut failed = false;
    for item in &args.images {
        match rmi_one(&rt, &agent, &cfg, item, args.force) {
            // docker's `[{"Untagged": …}, {"Deleted": …}]`, one line each.
            Ok(v) => {
                for (k, v) in v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|l| l.as_object().into_iter().flatten())
                {
                    println!("{k}: {}", v.as_str().unwrap_or(""));
                }
            }
            Err(e) => {
                eprintln!("reg: {item}: {e}");
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

fn rmi_one(
    rt: &tokio::runtime::Runtime,
    agent: &AgentClient,
    cfg: &reg_config::Config,
    item: &str,
    force: bool,
) -> anyhow::Result<serde_json::Value> {
    let r = Reference::parse(item, &cfg.node.default_registry)?.to_string();
    let path = format!("/images/{}?force={}", image_path(&r), u8::from(force));
    match rt.block_on(agent.json("DELETE", &path)) {
        Err(reg_node::api::AgentError::Api { status: 404, .. }) => bail!("no such image: {r}"),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::names_registry;

    #[test]
    fn a_reference_names_its_registry_as_docker_reads_it() {
        for named in [
            "127.0.0.1:5000/app",
            "reg.example/team/app:1",
            "localhost/app",
            "host:5000/a/b@sha256:00",
        ] {
            assert!(names_registry(named), "{named}");
        }
        for bare in ["busybox", "team/app:1", "library/alpine", "app@sha256:00"] {
            assert!(!names_registry(bare), "{bare}");
        }
    }
}
