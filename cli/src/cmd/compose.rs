//! `reg compose`: a Compose project (read by `reg-compose`) brought up, listed, followed and
//! taken down through the node's Engine API, with docker's labels
//! (`com.docker.compose.project`, `.service`, `.container-number`, `.config-hash`, …) on its
//! containers, networks and volumes, so tools that read them see a Compose project.
//!
//! `up` is idempotent: a service whose configuration is unchanged keeps its containers, a
//! changed one is recreated, replicas are added or removed by number; services start in
//! dependency order, each after its dependencies meet their `depends_on` condition.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reg_compose::{Condition, Mount, Project, Service};
use reg_node::api::AgentClient;
use serde_json::{json, Value};

use super::container::{image_missing, ps_row};
use super::format;
use super::image::{agent_for_names, pull_to, query_value, rt, PullArgs};
use super::Target;

// The labels the node reads too (to keep the start order) are its constants.
use reg_node::containers::order::{DEPENDS_ON, ONEOFF, PROJECT, SERVICE};
const NUMBER: &str = "com.docker.compose.container-number";
const HASH: &str = "com.docker.compose.config-hash";
const NETWORK: &str = "com.docker.compose.network";
const VOLUME: &str = "com.docker.compose.volume";
const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
const CONFIG_FILES: &str = "com.docker.compose.project.config_files";

#[derive(Args)]
pub struct ComposeArgs {
    /// Compose file(s), merged in order (default: compose.yaml, compose.yml,
    /// docker-compose.yml or docker-compose.yaml here; or $COMPOSE_FILE).
    #[arg(short = 'f', long = "file")]
    file: Vec<PathBuf>,
    /// Project name (default: $COMPOSE_PROJECT_NAME, the file's `name`, or the directory's).
    #[arg(short = 'p', long = "project-name")]
    project_name: Option<String>,
    /// Enable services of this profile (also $COMPOSE_PROFILES).
    #[arg(long)]
    profile: Vec<String>,
    /// Variables for interpolation instead of the project directory's `.env`.
    #[arg(long = "env-file")]
    env_file: Option<PathBuf>,
    /// Where relative paths and `.env` are found (default: the first file's directory).
    #[arg(long = "project-directory")]
    project_directory: Option<PathBuf>,
    #[command(subcommand)]
    command: ComposeCommand,
}

#[derive(Subcommand)]
enum ComposeCommand {
    /// Create and start the project's containers (networks and volumes first).
    Up(UpArgs),
    /// Stop and remove the project's containers and networks (volumes too with -v).
    Down(DownArgs),
    /// List the project's containers.
    Ps(PsArgs),
    /// Show the project's output, each line prefixed with its container's name.
    Logs(LogsArgs),
    /// Print the project's model: files merged, variables interpolated, short forms expanded.
    Config(ConfigArgs),
    /// Pull the services' images.
    Pull(ServicesArg),
    /// Start the project's existing containers.
    Start(ServicesArg),
    /// Stop the project's running containers.
    Stop(ServicesArg),
    /// Restart the project's containers.
    Restart(ServicesArg),
    /// List the projects on the node.
    Ls,
    /// Build the services' images (those with `build`).
    Build(BuildArgs),
    /// Push the services' images (those with `image`) to their registries.
    Push(ServicesArg),
    /// Run a command in a service's running container.
    Exec(ExecArgs),
    /// Run a one-off command in a new container of a service.
    Run(RunArgs),
    /// Send a signal to the project's containers.
    Kill(KillArgs),
    /// Remove the project's stopped containers.
    Rm(RmArgs),
    /// The processes of the project's containers.
    Top(ServicesArg),
    /// The host address of a service's published port.
    Port(PortArgs),
    /// The images the project's containers use.
    Images(ServicesArg),
    /// Push the project to a registry as an OCI artifact (images pinned by digest); deploy it
    /// elsewhere with `reg compose -f oci://REF up`.
    Publish(PublishArgs),
}

#[derive(Args)]
struct PublishArgs {
    /// Where: REGISTRY/REPO:TAG.
    reference: String,
}

#[derive(Args)]
struct BuildArgs {
    /// Run every step again.
    #[arg(long = "no-cache")]
    no_cache: bool,
    /// Only the image ids.
    #[arg(short = 'q', long)]
    quiet: bool,
    services: Vec<String>,
}

#[derive(Args)]
struct ExecArgs {
    /// Detached: the command runs in the background.
    #[arg(short = 'd', long)]
    detach: bool,
    /// No pseudo-terminal (by default one when this is a terminal).
    #[arg(short = 'T', long = "no-TTY")]
    no_tty: bool,
    #[arg(short = 'u', long)]
    user: Option<String>,
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Which container of the service (its number).
    #[arg(long, default_value_t = 1)]
    index: u64,
    service: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

#[derive(Args)]
struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// In the background: print the container's id.
    #[arg(short = 'd', long)]
    detach: bool,
    /// No pseudo-terminal (by default one when this is a terminal).
    #[arg(short = 'T', long = "no-TTY")]
    no_tty: bool,
    /// Leave the service's dependencies alone.
    #[arg(long = "no-deps")]
    no_deps: bool,
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    #[arg(short = 'u', long)]
    user: Option<String>,
    #[arg(long)]
    entrypoint: Option<String>,
    service: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Args)]
struct KillArgs {
    #[arg(short = 's', long, default_value = "SIGKILL")]
    signal: String,
    services: Vec<String>,
}

#[derive(Args)]
struct RmArgs {
    /// Do not ask.
    #[arg(short = 'f', long)]
    force: bool,
    /// Stop running containers first.
    #[arg(short = 's', long)]
    stop: bool,
    /// Their anonymous volumes too.
    #[arg(short = 'v', long)]
    volumes: bool,
    services: Vec<String>,
}

#[derive(Args)]
struct PortArgs {
    #[arg(long, default_value = "tcp")]
    protocol: String,
    #[arg(long, default_value_t = 1)]
    index: u64,
    service: String,
    private_port: u16,
}

#[derive(Args)]
struct UpArgs {
    /// Build the images of services with `build` first.
    #[arg(long)]
    build: bool,
    /// Start in the background and return.
    #[arg(short = 'd', long)]
    detach: bool,
    /// With -d, wait until the containers run (and are healthy, where they have a check).
    #[arg(long)]
    wait: bool,
    /// Recreate containers even when their configuration did not change.
    #[arg(long = "force-recreate")]
    force_recreate: bool,
    /// Leave the services' dependencies alone.
    #[arg(long = "no-deps")]
    no_deps: bool,
    /// Remove containers of services no longer in the project.
    #[arg(long = "remove-orphans")]
    remove_orphans: bool,
    /// SERVICE=N: how many containers of the service.
    #[arg(long)]
    scale: Vec<String>,
    services: Vec<String>,
}

#[derive(Args)]
struct DownArgs {
    /// Remove the project's named volumes and its containers' anonymous ones too.
    #[arg(short = 'v', long)]
    volumes: bool,
    /// Remove images too: `all` the services use, or `local` ones (built without an `image`).
    #[arg(long)]
    rmi: Option<String>,
    /// Remove containers of services no longer in the project too.
    #[arg(long = "remove-orphans")]
    remove_orphans: bool,
}

#[derive(Args)]
struct PsArgs {
    /// Stopped containers too.
    #[arg(short = 'a', long)]
    all: bool,
    /// Only the ids.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Only the services' names.
    #[arg(long)]
    services: bool,
    services_filter: Vec<String>,
}

#[derive(Args)]
struct LogsArgs {
    /// Keep following.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines of each container.
    #[arg(short = 'n', long)]
    tail: Option<String>,
    /// No `NAME  | ` prefix.
    #[arg(long = "no-log-prefix")]
    no_log_prefix: bool,
    services: Vec<String>,
}

#[derive(Args)]
struct ConfigArgs {
    /// Only the services' names.
    #[arg(long)]
    services: bool,
    /// Only the volumes' names.
    #[arg(long)]
    volumes: bool,
    /// Only check the files.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Args)]
struct ServicesArg {
    services: Vec<String>,
}

/// The project and a connection to the node.
struct Ctx {
    project: Project,
    agent: AgentClient,
    rt: tokio::runtime::Runtime,
    config: Option<PathBuf>,
    host: Target,
}

/// The project; files given as `oci://REF` are first read from their registry into `tmp`.
fn load(
    args: &ComposeArgs,
    rt: &tokio::runtime::Runtime,
    default_registry: &str,
    tmp: &Path,
) -> anyhow::Result<Project> {
    let mut files = Vec::new();
    for (i, f) in args.file.iter().enumerate() {
        match f.to_str().and_then(|f| f.strip_prefix("oci://")) {
            Some(reference) => {
                let dir = tmp.join(i.to_string());
                std::fs::create_dir_all(&dir)?;
                files.push(rt.block_on(super::compose_publish::fetch(
                    reference,
                    default_registry,
                    &dir,
                ))?);
            }
            None => files.push(f.clone()),
        }
    }
    let opts = reg_compose::LoadOptions {
        files,
        project_name: args.project_name.clone(),
        project_dir: args.project_directory.clone(),
        env_file: args.env_file.clone(),
        profiles: args.profile.clone(),
        environ: std::env::vars().collect(),
        cwd: std::env::current_dir().context("the working directory")?,
    };
    Ok(reg_compose::load(&opts)?)
}

pub fn compose(config: Option<&Path>, host: &Target, args: ComposeArgs) -> anyhow::Result<u8> {
    let rt = rt()?;
    let remote = args
        .file
        .iter()
        .any(|f| f.to_str().is_some_and(|f| f.starts_with("oci://")));
    // `config` of local files needs no node.
    if let (ComposeCommand::Config(c), false) = (&args.command, remote) {
        let tmp = tempfile::tempdir()?;
        return config_cmd(&load(&args, &rt, "", tmp.path())?, c);
    }
    let (agent, cfg) = agent_for_names(config, host)?;
    let tmp = tempfile::tempdir()?;
    let project = load(&args, &rt, &cfg.node.default_registry, tmp.path())?;
    if let ComposeCommand::Config(c) = &args.command {
        return config_cmd(&project, c);
    }
    if let ComposeCommand::Publish(p) = &args.command {
        let digest = rt.block_on(super::compose_publish::publish(
            &project,
            &agent,
            &cfg.node.default_registry,
            &p.reference,
        ))?;
        println!("{digest}");
        return Ok(0);
    }
    let ctx = Ctx {
        project,
        agent,
        rt,
        config: config.map(Path::to_path_buf),
        host: host.clone(),
    };
    match args.command {
        ComposeCommand::Up(a) => up(&ctx, a),
        ComposeCommand::Down(a) => down(&ctx, a).map(|()| 0),
        ComposeCommand::Ps(a) => ps(&ctx, a).map(|()| 0),
        ComposeCommand::Logs(a) => logs(&ctx, a).map(|()| 0),
        ComposeCommand::Pull(a) => pull(&ctx, &a.services).map(|()| 0),
        ComposeCommand::Start(a) => each_container(&ctx, &a.services, "start", "Started"),
        ComposeCommand::Stop(a) => each_container(&ctx, &a.services, "stop", "Stopped"),
        ComposeCommand::Restart(a) => each_container(&ctx, &a.services, "restart", "Restarted"),
        ComposeCommand::Ls => ls(&ctx).map(|()| 0),
        ComposeCommand::Build(a) => {
            for s in services_or_all(&ctx, &a.services)? {
                if ctx.project.service(&s)?.build.is_some() {
                    build(&ctx, &s, a.no_cache, a.quiet)?;
                }
            }
            Ok(0)
        }
        ComposeCommand::Push(a) => push(&ctx, &a.services).map(|()| 0),
        ComposeCommand::Exec(a) => exec(&ctx, a),
        ComposeCommand::Run(a) => run(&ctx, a),
        ComposeCommand::Kill(a) => kill(&ctx, a),
        ComposeCommand::Rm(a) => rm(&ctx, a),
        ComposeCommand::Top(a) => top(&ctx, &a.services).map(|()| 0),
        ComposeCommand::Port(a) => port(&ctx, a),
        ComposeCommand::Images(a) => images(&ctx, &a.services).map(|()| 0),
        ComposeCommand::Config(_) | ComposeCommand::Publish(_) => Ok(0),
    }
}

fn config_cmd(project: &Project, c: &ConfigArgs) -> anyhow::Result<u8> {
    if c.quiet {
        return Ok(0);
    }
    if c.services {
        for s in project.model.services.keys() {
            println!("{s}");
        }
        return Ok(0);
    }
    if c.volumes {
        for v in project.model.volumes.keys() {
            println!("{v}");
        }
        return Ok(0);
    }
    let mut model = project.model.clone();
    model.name = Some(project.name.clone());
    print!("{}", model.to_yaml()?);
    Ok(0)
}

/// A progress line as compose prints it (` Container app-web-1  Started`), on stderr.
fn say(kind: &str, name: &str, what: &str) {
    eprintln!(" {kind} {name}  {what}");
}

impl Ctx {
    fn name(&self) -> &str {
        &self.project.name
    }

    /// The project's containers (all, or those of `services`), oldest first.
    fn containers(&self, services: &[String], all: bool) -> anyhow::Result<Vec<Value>> {
        let filters = json!({ "label": [format!("{PROJECT}={}", self.name())] });
        let path = format!(
            "/containers/json?all={}&filters={}",
            u8::from(all),
            query_value(&filters.to_string())
        );
        let list = self.rt.block_on(self.agent.json("GET", &path))?;
        let mut out: Vec<Value> = list
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["Labels"][ONEOFF].as_str() != Some("True"))
            .filter(|c| {
                services.is_empty()
                    || c["Labels"][SERVICE]
                        .as_str()
                        .is_some_and(|s| services.iter().any(|w| w == s))
            })
            .collect();
        out.sort_by_key(|c| c["Created"].as_i64().unwrap_or(0));
        Ok(out)
    }

    /// The node's name of a project network (`name:`, else `PROJECT_KEY`).
    fn network_name(&self, key: &str) -> String {
        match self
            .project
            .model
            .networks
            .get(key)
            .and_then(|n| n.name.clone())
        {
            Some(n) => n,
            None => format!("{}_{key}", self.name()),
        }
    }

    fn volume_name(&self, key: &str) -> String {
        match self
            .project
            .model
            .volumes
            .get(key)
            .and_then(|v| v.name.clone())
        {
            Some(n) => n,
            None => format!("{}_{key}", self.name()),
        }
    }

    /// The networks `service` joins, by project key, in order (`default` when it names none).
    fn service_networks(&self, service: &Service) -> Vec<(String, reg_compose::ServiceNetwork)> {
        if service.network_mode.is_some() {
            return Vec::new();
        }
        match &service.networks {
            Some(n) => n.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            None => vec![("default".to_string(), Default::default())],
        }
    }
}

fn services_or_all(ctx: &Ctx, given: &[String]) -> anyhow::Result<Vec<String>> {
    for s in given {
        ctx.project.service(s)?;
    }
    if given.is_empty() {
        Ok(ctx.project.model.services.keys().cloned().collect())
    } else {
        Ok(given.to_vec())
    }
}

fn exists(ctx: &Ctx, path: &str) -> anyhow::Result<bool> {
    Ok(super::container::exists(&ctx.rt, &ctx.agent, path)?)
}

/// The project's networks and volumes that `services` use, made unless external or there.
fn ensure_networks_and_volumes(ctx: &Ctx, services: &[String]) -> anyhow::Result<()> {
    let mut networks = std::collections::BTreeSet::new();
    let mut volumes = std::collections::BTreeSet::new();
    for s in services {
        let svc = ctx.project.service(s)?;
        for (key, _) in ctx.service_networks(svc) {
            if key != "default" && !ctx.project.model.networks.contains_key(&key) {
                bail!("service {s} refers to undefined network {key}");
            }
            networks.insert(key);
        }
        for m in &svc.volumes {
            if let (true, Some(src)) = (m.kind == "volume", &m.source) {
                if !ctx.project.model.volumes.contains_key(src) {
                    bail!("service {s} refers to undefined volume {src}: declare it under the top-level volumes");
                }
                volumes.insert(src.clone());
            }
        }
    }
    for key in networks {
        let name = ctx.network_name(&key);
        let decl = ctx
            .project
            .model
            .networks
            .get(&key)
            .cloned()
            .unwrap_or_default();
        if let Some(d) = decl.driver.as_deref().filter(|d| *d != "bridge") {
            bail!("network {key}: driver {d} is not supported by reg (bridge)");
        }
        let mut body = json!({
            "Name": name, "Driver": "bridge", "Internal": decl.internal,
            "Labels": labels_of(ctx, &decl.labels, NETWORK, &key), "CheckDuplicate": true,
        });
        let subnets: Vec<Value> = decl
            .ipam
            .iter()
            .flat_map(|i| i.config.iter())
            .filter_map(|c| c.subnet.clone())
            .map(|s| json!({ "Subnet": s }))
            .collect();
        if !subnets.is_empty() {
            body["IPAM"] = json!({ "Config": subnets });
        }
        ensure(ctx, "network", &name, decl.external, &body)?;
    }
    for key in volumes {
        let name = ctx.volume_name(&key);
        let decl = ctx
            .project
            .model
            .volumes
            .get(&key)
            .cloned()
            .unwrap_or_default();
        if let Some(d) = decl.driver.as_deref().filter(|d| *d != "local") {
            bail!("volume {key}: driver {d} is not supported by reg (local)");
        }
        let body = json!({ "Name": name, "Labels": labels_of(ctx, &decl.labels, VOLUME, &key) });
        ensure(ctx, "volume", &name, decl.external, &body)?;
    }
    Ok(())
}

/// A project network's or volume's labels: its own, and compose's (`kind_label`: which key).
fn labels_of(
    ctx: &Ctx,
    own: &BTreeMap<String, String>,
    kind_label: &str,
    key: &str,
) -> BTreeMap<String, String> {
    let mut labels = own.clone();
    labels.insert(PROJECT.into(), ctx.name().into());
    labels.insert(kind_label.into(), key.into());
    labels
}

/// Network or volume `name` as the project needs it: there already, or (unless external, which
/// must be there) created from `body`.
fn ensure(ctx: &Ctx, kind: &str, name: &str, external: bool, body: &Value) -> anyhow::Result<()> {
    let (get, create, shown) = match kind {
        "network" => ("/networks/", "/networks/create", "Network"),
        _ => ("/volumes/", "/volumes/create", "Volume"),
    };
    if exists(ctx, &format!("{get}{}", query_value(name)))? {
        return Ok(());
    }
    if external {
        bail!(
            "{kind} {name} declared as external, but could not be found: create it with \
             `reg {kind} create {name}`"
        );
    }
    ctx.rt
        .block_on(ctx.agent.json_body("POST", create, body))
        .with_context(|| format!("creating {kind} {name}"))?;
    say(shown, name, "Created");
    Ok(())
}

/// A Go duration as nanoseconds (`1m30s`, `500ms`, `10s`).
fn nanos(what: &str, d: &Option<String>) -> anyhow::Result<Option<i64>> {
    d.as_deref()
        .filter(|d| !d.is_empty())
        .map(|d| super::container::duration_nanos(what, d))
        .transpose()
}

/// `KEY=VALUE` lines of an env file of the project's (relative to its directory).
fn env_file(project: &Project, file: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let path = project.dir.join(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("env_file {}", path.display()))?;
    Ok(reg_compose::load::parse_env_file(&text))
}

/// A bind mount's host path: relative ones from the project's directory, `~` from $HOME.
fn host_path(project: &Project, source: &str) -> String {
    if let Some(rest) = source.strip_prefix("~") {
        let home = std::env::var("HOME").unwrap_or_default();
        return format!("{home}{rest}");
    }
    let p = Path::new(source);
    if p.is_absolute() {
        source.to_string()
    } else {
        project.dir.join(p).display().to_string()
    }
}

/// The Engine API's `Mounts` entry of a service's volume.
fn mount_json(ctx: &Ctx, m: &Mount) -> anyhow::Result<Value> {
    let mut out = json!({ "Target": m.target, "ReadOnly": m.read_only });
    match m.kind.as_str() {
        "volume" => {
            out["Type"] = json!("volume");
            if let Some(src) = &m.source {
                out["Source"] = json!(ctx.volume_name(src));
            }
            if m.volume.as_ref().is_some_and(|v| v.nocopy) {
                out["VolumeOptions"] = json!({ "NoCopy": true });
            }
        }
        "bind" => {
            let src = m
                .source
                .as_deref()
                .with_context(|| format!("bind mount at {}: it needs a source", m.target))?;
            out["Type"] = json!("bind");
            out["Source"] = json!(host_path(&ctx.project, src));
        }
        "tmpfs" => {
            out["Type"] = json!("tmpfs");
            if let Some(size) = m.tmpfs.as_ref().and_then(|t| t.size.as_deref()) {
                let bytes = reg_node::containers::parse_size(size)
                    .with_context(|| format!("tmpfs size {size:?}"))?;
                out["TmpfsOptions"] = json!({ "SizeBytes": bytes });
            }
        }
        other => bail!("volume type {other} is not supported by reg compose (volume, bind, tmpfs)"),
    }
    Ok(out)
}

/// The Engine API create body of container `number` of `service`.
fn create_body(ctx: &Ctx, name: &str, number: u64, hash: &str) -> anyhow::Result<Value> {
    let p = &ctx.project;
    let s = p.service(name)?;
    let image = image_of(ctx, name)?;
    // Environment: env files first, then `environment` (a bare KEY takes the shell's value).
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for f in &s.env_file {
        env.extend(env_file(p, f)?);
    }
    for (k, v) in &s.environment {
        match v {
            Some(v) => {
                env.insert(k.clone(), v.clone());
            }
            None => {
                if let Some(v) = p.env.get(k) {
                    env.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let mut labels = s.labels.clone();
    labels.insert(PROJECT.into(), p.name.clone());
    labels.insert(SERVICE.into(), name.into());
    labels.insert(NUMBER.into(), number.to_string());
    labels.insert(ONEOFF.into(), "False".into());
    labels.insert(HASH.into(), hash.into());
    labels.insert(WORKING_DIR.into(), p.dir.display().to_string());
    labels.insert(
        CONFIG_FILES.into(),
        p.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    let deps: Vec<String> = s
        .depends_on
        .iter()
        .map(|(d, dep)| {
            let c = match dep.condition {
                Condition::Started => "service_started",
                Condition::Healthy => "service_healthy",
                Condition::CompletedSuccessfully => "service_completed_successfully",
            };
            format!("{d}:{c}:{}", dep.restart)
        })
        .collect();
    labels.insert(DEPENDS_ON.into(), deps.join(","));
    let mut exposed = serde_json::Map::new();
    let mut bindings = serde_json::Map::new();
    for e in &s.expose {
        let key = if e.contains('/') {
            e.clone()
        } else {
            format!("{e}/tcp")
        };
        exposed.insert(key, json!({}));
    }
    for port in &s.ports {
        let key = format!("{}/{}", port.target, port.protocol);
        exposed.insert(key.clone(), json!({}));
        let entry = json!({
            "HostIp": port.host_ip.clone().unwrap_or_default(),
            "HostPort": port.published.map(|p| p.to_string()).unwrap_or_default(),
        });
        match bindings.get_mut(&key) {
            Some(Value::Array(list)) => list.push(entry),
            _ => {
                bindings.insert(key, json!([entry]));
            }
        }
    }
    let mut mounts = Vec::new();
    for m in &s.volumes {
        mounts.push(mount_json(ctx, m)?);
    }
    for (refs, decls, under) in [
        (&s.secrets, &p.model.secrets, Some("/run/secrets/")),
        (&s.configs, &p.model.configs, None),
    ] {
        for r in refs {
            let decl = decls.get(&r.source).with_context(|| {
                format!(
                    "service {name} refers to undefined secret or config {}",
                    r.source
                )
            })?;
            let target = match (&r.target, under) {
                (Some(t), Some(dir)) if !t.starts_with('/') => format!("{dir}{t}"),
                (Some(t), _) => t.clone(),
                (None, Some(dir)) => format!("{dir}{}", r.source),
                (None, None) => format!("/{}", r.source),
            };
            mounts.push(json!({
                "Type": "bind", "Source": host_path(p, &decl.file), "Target": target, "ReadOnly": true,
            }));
        }
    }
    let networks = ctx.service_networks(s);
    let network_mode = match &s.network_mode {
        Some(m) => match m.strip_prefix("service:") {
            // Another service's first container's network.
            Some(other) => format!("container:{}", container_name(ctx, other, 1)),
            None => m.clone(),
        },
        None => networks
            .first()
            .map(|(k, _)| ctx.network_name(k))
            .unwrap_or_else(|| "none".into()),
    };
    let mut host = json!({
        "NetworkMode": network_mode,
        "PortBindings": bindings,
        "Mounts": mounts,
        "CapAdd": s.cap_add,
        "CapDrop": s.cap_drop,
        "ExtraHosts": s.extra_hosts,
        "Dns": s.dns,
        "ReadonlyRootfs": s.read_only.unwrap_or(false),
        "Privileged": s.privileged.unwrap_or(false),
        "Ulimits": s.ulimits.iter().map(|(n, u)| json!({"Name": n, "Soft": u.soft, "Hard": u.hard})).collect::<Vec<_>>(),
    });
    if let Some(r) = &s.restart {
        let (name, count) = match r.split_once(':') {
            Some((n, c)) => (n, c.parse::<u64>().unwrap_or(0)),
            None => (r.as_str(), 0),
        };
        host["RestartPolicy"] = json!({ "Name": name, "MaximumRetryCount": count });
    }
    if s.init == Some(true) {
        host["Init"] = json!(true);
    }
    if !s.tmpfs.is_empty() {
        let t: serde_json::Map<String, Value> = s
            .tmpfs
            .iter()
            .map(|t| match t.split_once(':') {
                Some((path, opts)) => (path.to_string(), json!(opts)),
                None => (t.clone(), json!("")),
            })
            .collect();
        host["Tmpfs"] = Value::Object(t);
    }
    if let Some(l) = s
        .deploy
        .as_ref()
        .and_then(|d| d.resources.as_ref())
        .and_then(|r| r.limits.as_ref())
    {
        if let Some(m) = &l.memory {
            let bytes = reg_node::containers::parse_size(m)
                .with_context(|| format!("memory limit {m:?}"))?;
            host["Memory"] = json!(bytes);
        }
        if let Some(c) = l.cpus {
            host["NanoCpus"] = json!((c * 1e9) as i64);
        }
        if let Some(n) = l.pids {
            host["PidsLimit"] = json!(n);
        }
    }
    let mut body = json!({
        "Image": image,
        "Env": env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "Labels": labels,
        "ExposedPorts": exposed,
        "Tty": s.tty.unwrap_or(false),
        "OpenStdin": s.stdin_open.unwrap_or(false),
        "HostConfig": host,
    });
    if let Some(c) = &s.command {
        body["Cmd"] = json!(c);
    }
    if let Some(e) = &s.entrypoint {
        body["Entrypoint"] = json!(e);
    }
    for (key, v) in [
        ("User", &s.user),
        ("WorkingDir", &s.working_dir),
        ("Hostname", &s.hostname),
        ("StopSignal", &s.stop_signal),
    ] {
        if let Some(v) = v {
            body[key] = json!(v);
        }
    }
    if let Some(g) = nanos("stop_grace_period", &s.stop_grace_period)? {
        body["StopTimeout"] = json!(g / 1_000_000_000);
    }
    if let Some(h) = &s.healthcheck {
        let test = if h.disable {
            Some(vec!["NONE".to_string()])
        } else {
            h.test.clone()
        };
        let mut hc = json!({});
        if let Some(t) = test {
            hc["Test"] = json!(t);
        }
        for (key, d) in [
            ("Interval", &h.interval),
            ("Timeout", &h.timeout),
            ("StartPeriod", &h.start_period),
            ("StartInterval", &h.start_interval),
        ] {
            if let Some(n) = nanos(&format!("healthcheck {}", key.to_lowercase()), d)? {
                hc[key] = json!(n);
            }
        }
        if let Some(r) = h.retries {
            hc["Retries"] = json!(r);
        }
        body["Healthcheck"] = hc;
    }
    if let Some((key, n)) = networks.first() {
        let mut aliases = vec![name.to_string()];
        aliases.extend(n.aliases.iter().cloned());
        let mut ep = json!({ "Aliases": aliases });
        if let Some(ip) = &n.ipv4_address {
            ep["IPAMConfig"] = json!({ "IPv4Address": ip });
        }
        body["NetworkingConfig"] = json!({ "EndpointsConfig": { ctx.network_name(key): ep } });
    }
    Ok(body)
}

/// The image of a service: `image`, else the name compose gives a built one.
fn image_of(ctx: &Ctx, name: &str) -> anyhow::Result<String> {
    let s = ctx.project.service(name)?;
    match &s.image {
        Some(i) => Ok(i.clone()),
        None => Ok(format!("{}-{name}", ctx.name())),
    }
}

/// Container `number` of `service`: `container_name`, or `PROJECT-SERVICE-N`.
fn container_name(ctx: &Ctx, service: &str, number: u64) -> String {
    match ctx
        .project
        .model
        .services
        .get(service)
        .and_then(|s| s.container_name.clone())
    {
        Some(n) => n,
        None => format!("{}-{service}-{number}", ctx.name()),
    }
}

fn name_of(c: &Value) -> String {
    c["Names"][0]
        .as_str()
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string()
}

/// Makes sure the image of `service` is on the node (pulled when missing, or always with
/// `pull_policy: always`); a service that must be built is refused for now.
fn ensure_image(ctx: &Ctx, service: &str, rebuild: bool) -> anyhow::Result<()> {
    let s = ctx.project.service(service)?;
    let image = image_of(ctx, service)?;
    let policy = s.pull_policy.as_deref().unwrap_or("missing");
    let missing = image_missing(&ctx.rt, &ctx.agent, &image);
    // A service with `build`: built when asked to, or when its image is not there.
    if s.build.is_some() && (rebuild || missing || policy == "build") {
        return build(ctx, service, false, false);
    }
    if policy == "always" || (missing && policy != "never") {
        pull_image(ctx, service, &image)?;
    } else if missing {
        bail!("service {service}: image {image} is not on the node and pull_policy is never");
    }
    Ok(())
}

/// Pulls `image` of `service`, with the pull's progress on stderr.
fn pull_image(ctx: &Ctx, service: &str, image: &str) -> anyhow::Result<()> {
    eprintln!(" {service} Pulling");
    pull_to(
        ctx.config.as_deref(),
        &ctx.host,
        PullArgs {
            image: image.to_string(),
        },
        &mut std::io::stderr(),
    )?;
    eprintln!(" {service} Pulled");
    Ok(())
}

/// Waits until `dep`'s containers meet `condition` (polling their state).
fn wait_for(ctx: &Ctx, dep: &str, condition: Condition) -> anyhow::Result<()> {
    let containers = ctx.containers(&[dep.to_string()], true)?;
    for c in containers {
        let id = c["Id"].as_str().unwrap_or("").to_string();
        let name = name_of(&c);
        match condition {
            Condition::Started => {}
            Condition::CompletedSuccessfully => {
                let v = ctx.rt.block_on(ctx.agent.json(
                    "POST",
                    &format!("/containers/{id}/wait?condition=not-running"),
                ))?;
                let code = v["StatusCode"].as_i64().unwrap_or(-1);
                if code != 0 {
                    bail!("service {dep} didn't complete successfully: container {name} exited with {code}");
                }
                say("Container", &name, "Exited");
            }
            Condition::Healthy => {
                say("Container", &name, "Waiting");
                loop {
                    let v = ctx
                        .rt
                        .block_on(ctx.agent.json("GET", &format!("/containers/{id}/json")))?;
                    let health = &v["State"]["Health"]["Status"];
                    if v["State"]["Health"].is_null() {
                        bail!("container {name} has no healthcheck configured: service {dep} cannot be waited for as healthy");
                    }
                    match health.as_str() {
                        Some("healthy") => {
                            say("Container", &name, "Healthy");
                            break;
                        }
                        Some("unhealthy") => {
                            bail!("dependency failed to start: container {name} is unhealthy")
                        }
                        _ => {}
                    }
                    if v["State"]["Running"] != true {
                        bail!("dependency failed to start: container {name} exited");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
            }
        }
    }
    Ok(())
}

fn remove(ctx: &Ctx, c: &Value, volumes: bool) -> anyhow::Result<()> {
    ctx.rt.block_on(remove_async(&ctx.agent, c, volumes))
}

/// Stops (gracefully, by its stop signal and timeout) and removes container `c`.
async fn remove_async(agent: &AgentClient, c: &Value, volumes: bool) -> anyhow::Result<()> {
    let id = c["Id"].as_str().unwrap_or("");
    let name = name_of(c);
    if c["State"] == "running" || c["State"] == "paused" {
        say("Container", &name, "Stopping");
        agent
            .json("POST", &format!("/containers/{id}/stop"))
            .await?;
        say("Container", &name, "Stopped");
    }
    say("Container", &name, "Removing");
    agent
        .json(
            "DELETE",
            &format!("/containers/{id}?force=1&v={}", u8::from(volumes)),
        )
        .await?;
    say("Container", &name, "Removed");
    Ok(())
}

fn up(ctx: &Ctx, args: UpArgs) -> anyhow::Result<u8> {
    let mut scale: BTreeMap<String, u64> = BTreeMap::new();
    for s in &args.scale {
        let (name, n) = s
            .split_once('=')
            .with_context(|| format!("--scale {s:?}: use SERVICE=N"))?;
        ctx.project.service(name)?;
        scale.insert(
            name.to_string(),
            n.parse()
                .with_context(|| format!("--scale {s:?}: N is a number"))?,
        );
    }
    let wanted = services_or_all(ctx, &args.services)?;
    let order = if args.no_deps {
        wanted.clone()
    } else {
        ctx.project.in_order(&wanted)?
    };
    if args.remove_orphans {
        for c in ctx.containers(&[], true)? {
            let svc = c["Labels"][SERVICE].as_str().unwrap_or("");
            if !ctx.project.model.services.contains_key(svc) {
                remove(ctx, &c, false)?;
            }
        }
    }
    ensure_networks_and_volumes(ctx, &order)?;
    for name in &order {
        let s = ctx.project.service(name)?;
        for (dep, d) in &s.depends_on {
            if ctx.project.model.services.contains_key(dep) {
                wait_for(ctx, dep, d.condition)?;
            }
        }
        ensure_image(ctx, name, args.build)?;
        let hash = ctx.project.config_hash(name)?;
        let want = scale.get(name).copied().unwrap_or_else(|| s.replicas());
        if want > 1 && s.container_name.is_some() {
            bail!("service {name} has container_name set: it cannot have {want} containers");
        }
        let mut have: BTreeMap<u64, Value> = BTreeMap::new();
        for c in ctx.containers(std::slice::from_ref(name), true)? {
            let n = c["Labels"][NUMBER]
                .as_str()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let stale = c["Labels"][HASH].as_str() != Some(hash.as_str()) || args.force_recreate;
            if n == 0 || n > want || stale || have.contains_key(&n) {
                remove(ctx, &c, false)?;
                continue;
            }
            have.insert(n, c);
        }
        for n in 1..=want {
            let cname = container_name(ctx, name, n);
            let id = match have.get(&n) {
                Some(c) if c["State"] == "running" => {
                    say("Container", &cname, "Running");
                    continue;
                }
                Some(c) => c["Id"].as_str().unwrap_or("").to_string(),
                None => {
                    say("Container", &cname, "Creating");
                    let body = create_body(ctx, name, n, &hash)?;
                    let created = ctx
                        .rt
                        .block_on(ctx.agent.json_body(
                            "POST",
                            &format!("/containers/create?name={}", query_value(&cname)),
                            &body,
                        ))
                        .with_context(|| format!("creating container {cname}"))?;
                    let id = created["Id"].as_str().unwrap_or("").to_string();
                    // More networks than the first: connected before the start.
                    for (key, net) in ctx.service_networks(s).into_iter().skip(1) {
                        let mut aliases = vec![name.clone()];
                        aliases.extend(net.aliases.iter().cloned());
                        let mut ep = json!({ "Aliases": aliases });
                        if let Some(ip) = &net.ipv4_address {
                            ep["IPAMConfig"] = json!({ "IPv4Address": ip });
                        }
                        let path =
                            format!("/networks/{}/connect", query_value(&ctx.network_name(&key)));
                        ctx.rt.block_on(ctx.agent.json_body(
                            "POST",
                            &path,
                            &json!({ "Container": id, "EndpointConfig": ep }),
                        ))?;
                    }
                    say("Container", &cname, "Created");
                    id
                }
            };
            say("Container", &cname, "Starting");
            ctx.rt
                .block_on(ctx.agent.json("POST", &format!("/containers/{id}/start")))
                .with_context(|| format!("starting container {cname}"))?;
            say("Container", &cname, "Started");
        }
    }
    if args.detach {
        if args.wait {
            for name in &order {
                let s = ctx.project.service(name)?;
                let condition = if s.healthcheck.as_ref().is_some_and(|h| !h.disable) {
                    Condition::Healthy
                } else {
                    Condition::Started
                };
                wait_for(ctx, name, condition)?;
            }
        }
        return Ok(0);
    }
    // In the foreground: everyone's output, until they all end or ^C stops them.
    let names: Vec<(String, String)> = ctx
        .containers(&order, true)?
        .iter()
        .map(|c| (c["Id"].as_str().unwrap_or("").to_string(), name_of(c)))
        .collect();
    let width = names.iter().map(|(_, n)| n.len()).max().unwrap_or(0);
    let follow = ctx.rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (id, name) in &names {
            set.spawn(follow_logs(
                ctx.agent.clone(),
                id.clone(),
                format!("{name:width$} | "),
                true,
                None,
            ));
        }
        tokio::select! {
            _ = async { while set.join_next().await.is_some() {} } => false,
            _ = tokio::signal::ctrl_c() => true,
        }
    });
    if follow {
        eprintln!("Gracefully stopping... (press Ctrl+C again to force)");
        for (id, name) in &names {
            say("Container", name, "Stopping");
            let _ = ctx
                .rt
                .block_on(ctx.agent.json("POST", &format!("/containers/{id}/stop")));
            say("Container", name, "Stopped");
        }
    }
    Ok(0)
}

/// Streams a container's log to stdout, each line prefixed.
async fn follow_logs(
    agent: AgentClient,
    id: String,
    prefix: String,
    follow: bool,
    tail: Option<String>,
) {
    let tty = agent
        .json("GET", &format!("/containers/{id}/json"))
        .await
        .map(|v| v["Config"]["Tty"] == true)
        .unwrap_or(false);
    let mut path = format!(
        "/containers/{id}/logs?stdout=1&stderr=1&follow={}",
        u8::from(follow)
    );
    if let Some(t) = tail {
        path.push_str(&format!("&tail={}", query_value(&t)));
    }
    let mut demux = reg_node::api::Demux::default();
    let mut pending = Vec::new();
    let emit = |bytes: &[u8], pending: &mut Vec<u8>| {
        pending.extend_from_slice(bytes);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(prefix.as_bytes());
            let _ = out.write_all(&line);
            let _ = out.flush();
        }
    };
    let _ = agent
        .request_bytes("GET", &path, |data| {
            if tty {
                emit(data, &mut pending);
            } else {
                let mut chunks = Vec::new();
                demux.push(data, |_, payload| chunks.push(payload.to_vec()));
                for c in chunks {
                    emit(&c, &mut pending);
                }
            }
        })
        .await;
    if !pending.is_empty() {
        pending.push(b'\n');
        emit(&[], &mut pending);
    }
}

fn down(ctx: &Ctx, args: DownArgs) -> anyhow::Result<()> {
    // Dependents first: the reverse of the start order.
    let order = ctx.project.in_order(
        &ctx.project
            .model
            .services
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
    )?;
    // By level: a service's level is one above its dependencies'; the highest goes first,
    // each level's containers together.
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    for name in &order {
        let s = ctx.project.service(name)?;
        let l = s
            .depends_on
            .keys()
            .filter_map(|d| level.get(d.as_str()))
            .map(|l| l + 1)
            .max()
            .unwrap_or(0);
        level.insert(name, l);
    }
    let containers = ctx.containers(&[], true)?;
    let mut by_level: BTreeMap<std::cmp::Reverse<usize>, Vec<&Value>> = BTreeMap::new();
    for c in &containers {
        let service = c["Labels"][SERVICE].as_str().unwrap_or("");
        let l = match level.get(service) {
            Some(l) => *l,
            // An orphan (its service is gone from the file): first, when asked for.
            None if args.remove_orphans => usize::MAX,
            None => continue,
        };
        by_level.entry(std::cmp::Reverse(l)).or_default().push(c);
    }
    for group in by_level.values() {
        ctx.rt.block_on(async {
            let done = futures::future::join_all(
                group
                    .iter()
                    .map(|c| remove_async(&ctx.agent, c, args.volumes)),
            )
            .await;
            done.into_iter().collect::<anyhow::Result<Vec<()>>>()
        })?;
    }
    // The project's networks (not external ones), found by label.
    let filters = json!({ "label": [format!("{PROJECT}={}", ctx.name())] });
    let nets = ctx.rt.block_on(ctx.agent.json(
        "GET",
        &format!("/networks?filters={}", query_value(&filters.to_string())),
    ))?;
    for n in nets.as_array().into_iter().flatten() {
        let name = n["Name"].as_str().unwrap_or("");
        say("Network", name, "Removing");
        ctx.rt.block_on(
            ctx.agent
                .json("DELETE", &format!("/networks/{}", query_value(name))),
        )?;
        say("Network", name, "Removed");
    }
    if let Some(rmi) = args.rmi.as_deref() {
        if !matches!(rmi, "all" | "local") {
            bail!("--rmi {rmi}: all or local");
        }
        for (name, s) in &ctx.project.model.services {
            if rmi == "local" && s.image.is_some() {
                continue;
            }
            let image = image_of(ctx, name)?;
            let path = format!("/images/{}", super::image::image_path(&image));
            match ctx.rt.block_on(ctx.agent.json("DELETE", &path)) {
                Ok(_) => say("Image", &image, "Removed"),
                Err(reg_node::api::AgentError::Api { status: 404, .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if args.volumes {
        let vols = ctx.rt.block_on(ctx.agent.json(
            "GET",
            &format!("/volumes?filters={}", query_value(&filters.to_string())),
        ))?;
        for v in vols["Volumes"].as_array().into_iter().flatten() {
            let name = v["Name"].as_str().unwrap_or("");
            say("Volume", name, "Removing");
            ctx.rt.block_on(
                ctx.agent
                    .json("DELETE", &format!("/volumes/{}", query_value(name))),
            )?;
            say("Volume", name, "Removed");
        }
    }
    Ok(())
}

const PS_TABLE: &str =
    "table {{.Name}}\t{{.Image}}\t{{.Command}}\t{{.Service}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}";
const PS_HEADERS: format::Headers = &[
    ("Name", "NAME"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("Service", "SERVICE"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("Ports", "PORTS"),
];

fn ps(ctx: &Ctx, args: PsArgs) -> anyhow::Result<()> {
    let list = ctx.containers(&args.services_filter, args.all)?;
    if args.services {
        let mut seen: Vec<String> = list
            .iter()
            .filter_map(|c| c["Labels"][SERVICE].as_str().map(str::to_string))
            .collect();
        seen.sort();
        seen.dedup();
        for s in seen {
            println!("{s}");
        }
        return Ok(());
    }
    if args.quiet {
        for c in &list {
            println!("{}", c["Id"].as_str().unwrap_or(""));
        }
        return Ok(());
    }
    let rows: Vec<Value> = list
        .iter()
        .map(|c| {
            let mut r = ps_row(c, false);
            r["Name"] = json!(name_of(c));
            r["Service"] = c["Labels"][SERVICE].clone();
            r
        })
        .collect();
    format::print(&rows, None, PS_TABLE, PS_HEADERS)
}

fn logs(ctx: &Ctx, args: LogsArgs) -> anyhow::Result<()> {
    let services = services_or_all(ctx, &args.services)?;
    let list = ctx.containers(&services, true)?;
    let width = list.iter().map(|c| name_of(c).len()).max().unwrap_or(0);
    ctx.rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for c in &list {
            let prefix = if args.no_log_prefix {
                String::new()
            } else {
                format!("{:width$} | ", name_of(c))
            };
            set.spawn(follow_logs(
                ctx.agent.clone(),
                c["Id"].as_str().unwrap_or("").to_string(),
                prefix,
                args.follow,
                args.tail.clone(),
            ));
        }
        while set.join_next().await.is_some() {}
    });
    Ok(())
}

fn pull(ctx: &Ctx, services: &[String]) -> anyhow::Result<()> {
    for s in services_or_all(ctx, services)? {
        let svc = ctx.project.service(&s)?;
        let Some(image) = &svc.image else { continue };
        pull_image(ctx, &s, image)?;
    }
    Ok(())
}

/// `start`, `stop` or `restart` of the project's containers (dependencies first to start,
/// dependents first to stop).
fn each_container(ctx: &Ctx, services: &[String], verb: &str, done: &str) -> anyhow::Result<u8> {
    let wanted = services_or_all(ctx, services)?;
    let mut order = ctx.project.in_order(&wanted)?;
    order.retain(|s| wanted.contains(s));
    if verb == "stop" {
        order.reverse();
    }
    for s in order {
        for c in ctx.containers(std::slice::from_ref(&s), true)? {
            let name = name_of(&c);
            let id = c["Id"].as_str().unwrap_or("");
            ctx.rt
                .block_on(ctx.agent.json("POST", &format!("/containers/{id}/{verb}")))
                .with_context(|| format!("{verb} {name}"))?;
            say("Container", &name, done);
        }
    }
    Ok(0)
}

/// The node's projects: NAME, STATUS (`running(N)`, `exited(N)`), CONFIG FILES.
fn ls(ctx: &Ctx) -> anyhow::Result<()> {
    let filters = json!({ "label": [PROJECT] });
    let list = ctx.rt.block_on(ctx.agent.json(
        "GET",
        &format!(
            "/containers/json?all=1&filters={}",
            query_value(&filters.to_string())
        ),
    ))?;
    let mut projects: BTreeMap<String, (BTreeMap<String, u64>, String)> = BTreeMap::new();
    for c in list.as_array().into_iter().flatten() {
        let name = c["Labels"][PROJECT].as_str().unwrap_or("").to_string();
        let entry = projects.entry(name).or_default();
        *entry
            .0
            .entry(c["State"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
        entry.1 = c["Labels"][CONFIG_FILES].as_str().unwrap_or("").to_string();
    }
    let rows: Vec<Value> = projects
        .into_iter()
        .map(|(name, (states, files))| {
            let status: Vec<String> = states.iter().map(|(s, n)| format!("{s}({n})")).collect();
            json!({ "Name": name, "Status": status.join(", "), "ConfigFiles": files })
        })
        .collect();
    format::print(
        &rows,
        None,
        "table {{.Name}}\t{{.Status}}\t{{.ConfigFiles}}",
        &[
            ("Name", "NAME"),
            ("Status", "STATUS"),
            ("ConfigFiles", "CONFIG FILES"),
        ],
    )
}

/// Builds the image of `service` on the node with `reg build` (its context relative to the
/// project; `build.args` with a bare KEY from the environment), tagged as the service's image.
fn build(ctx: &Ctx, service: &str, no_cache: bool, quiet: bool) -> anyhow::Result<()> {
    let s = ctx.project.service(service)?;
    let Some(b) = &s.build else {
        return Ok(());
    };
    if !b.labels.is_empty() {
        bail!("service {service}: build.labels is not supported by reg yet (use LABEL in the Dockerfile)");
    }
    let context = ctx.project.dir.join(b.context.as_deref().unwrap_or("."));
    let build_args = b
        .args
        .iter()
        .filter_map(|(k, v)| match v {
            Some(v) => Some(format!("{k}={v}")),
            None => ctx.project.env.get(k).map(|v| format!("{k}={v}")),
        })
        .collect();
    eprintln!(" {service} Building");
    super::build::build(
        ctx.config.as_deref(),
        &ctx.host,
        super::build::BuildArgs {
            tags: vec![image_of(ctx, service)?],
            file: b.dockerfile.as_ref().map(|f| context.join(f)),
            build_args,
            target: b.target.clone(),
            no_cache,
            push: false,
            compression: "gzip".into(),
            quiet,
            context,
        },
    )
    .with_context(|| format!("building service {service}"))?;
    eprintln!(" {service} Built");
    Ok(())
}

fn push(ctx: &Ctx, services: &[String]) -> anyhow::Result<()> {
    for s in services_or_all(ctx, services)? {
        let Some(image) = ctx.project.service(&s)?.image.clone() else {
            continue;
        };
        eprintln!(" {s} Pushing");
        super::image::push(
            ctx.config.as_deref(),
            &ctx.host,
            super::image::PushArgs { image },
        )?;
        eprintln!(" {s} Pushed");
    }
    Ok(())
}

/// Container `index` of `service` (running or not).
fn container_of(ctx: &Ctx, service: &str, index: u64) -> anyhow::Result<Value> {
    ctx.project.service(service)?;
    ctx.containers(&[service.to_string()], true)?
        .into_iter()
        .find(|c| c["Labels"][NUMBER].as_str() == Some(index.to_string().as_str()))
        .with_context(|| {
            format!("service {service} has no container {index}: run `reg compose up` first")
        })
}

fn stdin_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdin())
}

fn exec(ctx: &Ctx, a: ExecArgs) -> anyhow::Result<u8> {
    let c = container_of(ctx, &a.service, a.index)?;
    let tty = !a.no_tty && !a.detach && stdin_is_terminal();
    if a.detach {
        let body = json!({
            "Cmd": a.command, "Env": a.env, "User": a.user.unwrap_or_default(),
            "WorkingDir": a.workdir.unwrap_or_default(),
        });
        let id = c["Id"].as_str().unwrap_or("");
        let e = ctx.rt.block_on(ctx.agent.json_body(
            "POST",
            &format!("/containers/{id}/exec"),
            &body,
        ))?;
        let eid = e["Id"].as_str().unwrap_or("");
        ctx.rt.block_on(ctx.agent.json_body(
            "POST",
            &format!("/exec/{eid}/start"),
            &json!({ "Detach": true }),
        ))?;
        return Ok(0);
    }
    super::container::exec(
        ctx.config.as_deref(),
        &ctx.host,
        super::container::ExecArgs {
            interactive: true,
            tty,
            env: a.env,
            workdir: a.workdir,
            user: a.user,
            container: name_of(&c),
            cmd: a.command,
        },
    )
}

/// A one-off container of `service` (compose's `run`): the service's settings, its command
/// replaced when given, no published ports, labelled `oneoff`.
fn run(ctx: &Ctx, a: RunArgs) -> anyhow::Result<u8> {
    let s = ctx.project.service(&a.service)?;
    let order = if a.no_deps {
        Vec::new()
    } else {
        let mut o = ctx.project.in_order(std::slice::from_ref(&a.service))?;
        o.retain(|x| x != &a.service);
        o
    };
    if !order.is_empty() {
        up(
            ctx,
            UpArgs {
                build: false,
                detach: true,
                wait: false,
                force_recreate: false,
                no_deps: false,
                remove_orphans: false,
                scale: Vec::new(),
                services: order,
            },
        )?;
    }
    for (dep, d) in &s.depends_on {
        if ctx.project.model.services.contains_key(dep) && !a.no_deps {
            wait_for(ctx, dep, d.condition)?;
        }
    }
    ensure_networks_and_volumes(ctx, std::slice::from_ref(&a.service))?;
    ensure_image(ctx, &a.service, false)?;
    let tty = !a.no_tty && !a.detach && stdin_is_terminal();
    let hash = ctx.project.config_hash(&a.service)?;
    let mut body = create_body(ctx, &a.service, 1, &hash)?;
    body["Labels"][ONEOFF] = json!("True");
    body["HostConfig"]["PortBindings"] = json!({});
    body["HostConfig"]["AutoRemove"] = json!(a.rm);
    body["Tty"] = json!(tty);
    body["OpenStdin"] = json!(!a.detach);
    body["AttachStdin"] = json!(!a.detach);
    if !a.command.is_empty() {
        body["Cmd"] = json!(a.command);
    }
    if let Some(e) = &a.entrypoint {
        body["Entrypoint"] = json!(shell_words(e)?);
    }
    if let Some(u) = &a.user {
        body["User"] = json!(u);
    }
    if let Some(env) = body["Env"].as_array_mut() {
        env.extend(a.env.iter().map(|e| json!(e)));
    }
    let suffix = format!("{:08x}", std::process::id() ^ (now_nanos() as u32));
    let name = format!("{}-{}-run-{suffix}", ctx.name(), a.service);
    let created = ctx.rt.block_on(ctx.agent.json_body(
        "POST",
        &format!("/containers/create?name={}", query_value(&name)),
        &body,
    ))?;
    let id = created["Id"].as_str().unwrap_or("").to_string();
    if a.detach {
        ctx.rt
            .block_on(ctx.agent.json("POST", &format!("/containers/{id}/start")))?;
        println!("{name}");
        return Ok(0);
    }
    let _raw = if tty {
        super::container::RawMode::enter()
    } else {
        None
    };
    super::container::attached(&ctx.rt, &ctx.agent, &id, tty, true, a.rm, None)
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn shell_words(s: &str) -> anyhow::Result<Vec<String>> {
    shlex::split(s).with_context(|| format!("{s:?}: unbalanced quotes"))
}

fn kill(ctx: &Ctx, a: KillArgs) -> anyhow::Result<u8> {
    for c in ctx.containers(&services_or_all(ctx, &a.services)?, false)? {
        let id = c["Id"].as_str().unwrap_or("");
        ctx.rt.block_on(ctx.agent.json(
            "POST",
            &format!("/containers/{id}/kill?signal={}", query_value(&a.signal)),
        ))?;
        say("Container", &name_of(&c), "Killed");
    }
    Ok(0)
}

fn rm(ctx: &Ctx, a: RmArgs) -> anyhow::Result<u8> {
    let list = ctx.containers(&services_or_all(ctx, &a.services)?, true)?;
    let doomed: Vec<&Value> = list
        .iter()
        .filter(|c| a.stop || c["State"] != "running")
        .collect();
    if doomed.is_empty() {
        eprintln!("No stopped containers");
        return Ok(0);
    }
    if !a.force {
        let names: Vec<String> = doomed.iter().map(|c| name_of(c)).collect();
        eprint!(
            "Going to remove {}\n? Are you sure? [yN] ",
            names.join(", ")
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    for c in doomed {
        remove(ctx, c, a.volumes)?;
    }
    Ok(0)
}

fn top(ctx: &Ctx, services: &[String]) -> anyhow::Result<()> {
    for c in ctx.containers(&services_or_all(ctx, services)?, false)? {
        let id = c["Id"].as_str().unwrap_or("");
        let t = ctx
            .rt
            .block_on(ctx.agent.json("GET", &format!("/containers/{id}/top")))?;
        println!("{}", name_of(&c));
        println!("{}", super::manage::top_table(&t)?);
    }
    Ok(())
}

fn port(ctx: &Ctx, a: PortArgs) -> anyhow::Result<u8> {
    let c = container_of(ctx, &a.service, a.index)?;
    let id = c["Id"].as_str().unwrap_or("");
    let v = ctx
        .rt
        .block_on(ctx.agent.json("GET", &format!("/containers/{id}/json")))?;
    let key = format!("{}/{}", a.private_port, a.protocol);
    let b = &v["NetworkSettings"]["Ports"][&key][0];
    match b["HostPort"].as_str().filter(|p| !p.is_empty()) {
        Some(p) => {
            let ip = b["HostIp"]
                .as_str()
                .filter(|i| !i.is_empty())
                .unwrap_or("0.0.0.0");
            println!("{ip}:{p}");
            Ok(0)
        }
        None => bail!("no port {key} for container {}", name_of(&c)),
    }
}

fn images(ctx: &Ctx, services: &[String]) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for c in ctx.containers(&services_or_all(ctx, services)?, true)? {
        let image = c["Image"].as_str().unwrap_or("");
        let v = ctx.rt.block_on(ctx.agent.json(
            "GET",
            &format!("/images/{}/json", super::image::image_path(image)),
        ))?;
        let (repo, tag) = match image
            .rsplit_once(':')
            .filter(|(r, t)| !t.contains('/') && !r.is_empty())
        {
            Some((r, t)) => (r.to_string(), t.to_string()),
            None => (image.to_string(), "latest".into()),
        };
        let id = v["Id"].as_str().unwrap_or("").trim_start_matches("sha256:");
        rows.push(json!({
            "Container": name_of(&c), "Repository": repo, "Tag": tag,
            "ID": id.chars().take(12).collect::<String>(),
            "Size": format::human_size(v["Size"].as_u64().unwrap_or(0)),
        }));
    }
    format::print(
        &rows,
        None,
        "table {{.Container}}\t{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.Size}}",
        &[
            ("Container", "CONTAINER"),
            ("Repository", "REPOSITORY"),
            ("Tag", "TAG"),
            ("ID", "IMAGE ID"),
            ("Size", "SIZE"),
        ],
    )
}
