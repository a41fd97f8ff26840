//! The rest of docker's container and image verbs (`create`, `restart`, `pause`, `unpause`,
//! `top`, `stats`, `cp`, `rename`, `update`, `diff`, `export`, `save`, `load`, `history`,
//! `events`, `attach`, `container prune`) and the `reg container …` group, all through the node
//! agent's Engine API, printed as docker's CLI prints them.
//!
//! `cp` out of a container writes what an untrusted container made onto this host: the
//! archive is extracted only through [`reg_untrusted::Tree`] (fd-relative, no symlink ever
//! followed on the way), entries naming `..` or an absolute path are refused, and it streams
//! through a bounded channel. Never: `tar`'s own unpack to host paths here.

use std::io::{BufRead, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reg_node::api::{AgentClient, AgentError};
use reg_registry::Reference;

use super::container::{self, RunArgs};
use super::format::{bytes_size, human_size_f as human_size, human_size_prec};
use super::image::{agent, agent_for_names, each, image_path, pull_to, query_value, rt, PullArgs};
use super::Target;

// ---------------------------------------------------------------------------------------------
// docker's ways of printing numbers, sizes, durations and tables.

/// go-units' `HumanDuration`.
fn human_duration(secs: u64) -> String {
    let minutes = secs / 60;
    let hours = (secs as f64 / 3600.0 + 0.5) as u64;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

/// docker's `stringid.TruncateID`: no `sha256:`, 12 characters.
fn short_id(id: &str) -> String {
    let id = id.split_once(':').map(|(_, h)| h).unwrap_or(id);
    id.chars().take(12).collect()
}

/// The formatter's `Ellipsis`: at most `max` characters, the last one `…` when cut.
fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Rows aligned as Go's `tabwriter` does with docker's settings (`minwidth`, padding 3): each
/// cell but a row's last padded to its column's width.
fn table(rows: &[Vec<String>], minwidth: usize) -> anyhow::Result<String> {
    let mut tw = tabwriter::TabWriter::new(Vec::new())
        .minwidth(minwidth)
        .padding(3);
    for r in rows {
        writeln!(tw, "{}", r.join("\t"))?;
    }
    let bytes = tw.into_inner().context("aligning the table")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Writes `text` to stdout; a closed stdout (a pipe whose reader left) is not an error.
fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

/// docker's confirmation prompt: `MESSAGE [y/N] `, then a line of stdin; only `y` goes on.
fn confirm(message: &str) -> anyhow::Result<bool> {
    out(&format!("{message} [y/N] "));
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().eq_ignore_ascii_case("y"))
}

/// docker's `--filter key=value` list as the Engine API's `filters` JSON.
fn filters_json(given: &[String]) -> anyhow::Result<Option<String>> {
    if given.is_empty() {
        return Ok(None);
    }
    let mut m = serde_json::Map::new();
    for f in given {
        let (k, v) = f
            .split_once('=')
            .with_context(|| format!("bad format of filter (expected name=value): {f}"))?;
        let entry = m
            .entry(k.trim().to_ascii_lowercase())
            .or_insert_with(|| serde_json::json!({}));
        entry[v.trim()] = serde_json::json!(true);
    }
    Ok(Some(serde_json::Value::Object(m).to_string()))
}

/// The query string of `filters` (empty when none).
fn filters_query(given: &[String], sep: char) -> anyhow::Result<String> {
    Ok(filters_json(given)?
        .map(|f| format!("{sep}filters={}", query_value(&f)))
        .unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// create

/// `reg create`: like `run` without starting: pulls a missing image, creates, prints the id.
pub fn create(config: Option<&Path>, host: &Target, args: RunArgs) -> anyhow::Result<u8> {
    if args.rm && args.restart.as_deref().is_some_and(|r| r != "no") {
        bail!("conflicting options: cannot specify both --restart and --rm");
    }
    if !matches!(args.pull.as_str(), "always" | "missing" | "never") {
        bail!("--pull {:?}: use always, missing or never", args.pull);
    }
    let (agent, cfg) = agent_for_names(config, host)?;
    let image = Reference::parse(&args.image, &cfg.node.default_registry)?.to_string();
    let rt = rt()?;
    if let Some(f) = &args.cidfile {
        if f.exists() {
            bail!(
                "Container ID file found, make sure the other container isn't running or delete {}",
                f.display()
            );
        }
    }
    let body = container::create_body(&args, &image)?;
    let path = match &args.name {
        Some(n) => format!("/containers/create?name={}", query_value(n)),
        None => "/containers/create".to_string(),
    };
    let pull = || {
        pull_to(
            config,
            host,
            PullArgs {
                image: image.clone(),
            },
            &mut std::io::stderr(),
        )
    };
    if args.pull == "always" {
        pull()?;
    }
    let created = match rt.block_on(agent.json_body("POST", &path, &body)) {
        Err(AgentError::Api { status: 404, .. })
            if args.pull == "missing" && container::image_missing(&rt, &agent, &image) =>
        {
            eprintln!("Unable to find image '{image}' locally");
            pull()?;
            rt.block_on(agent.json_body("POST", &path, &body))?
        }
        other => other?,
    };
    for w in created["Warnings"].as_array().into_iter().flatten() {
        eprintln!("WARNING: {}", w.as_str().unwrap_or(""));
    }
    let id = created["Id"].as_str().unwrap_or_default();
    if let Some(f) = &args.cidfile {
        std::fs::write(f, id).with_context(|| format!("--cidfile {}", f.display()))?;
    }
    println!("{id}");
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// restart, pause, unpause, rename, update

#[derive(Args)]
pub struct RestartArgs {
    /// Seconds to wait for the stop signal before SIGKILL (default: the container's).
    #[arg(
        short = 't',
        long = "time",
        alias = "timeout",
        allow_hyphen_values = true
    )]
    time: Option<i64>,
    /// Signal to stop the container with (default: its stop signal).
    #[arg(short = 's', long)]
    signal: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

/// One POST per container, each name printed as given once done (docker's `pause`, …).
fn each_post(
    config: Option<&Path>,
    host: &Target,
    containers: &[String],
    path: impl Fn(&str) -> String,
) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let path = |c: &str| Ok(path(c));
    each(
        &rt()?,
        &agent,
        containers,
        "container (name or id)",
        "POST",
        path,
        |c, _| println!("{c}"),
    )
}

pub fn restart(config: Option<&Path>, host: &Target, args: RestartArgs) -> anyhow::Result<u8> {
    each_post(config, host, &args.containers, |c| {
        let mut p = format!("/containers/{}/restart", query_value(c));
        let mut sep = '?';
        if let Some(t) = args.time {
            p.push_str(&format!("{sep}t={t}"));
            sep = '&';
        }
        if let Some(s) = &args.signal {
            p.push_str(&format!("{sep}signal={}", query_value(s)));
        }
        p
    })
}

#[derive(Args)]
pub struct ContainersArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn pause(config: Option<&Path>, host: &Target, args: ContainersArgs) -> anyhow::Result<u8> {
    each_post(config, host, &args.containers, |c| {
        format!("/containers/{}/pause", query_value(c))
    })
}

pub fn unpause(config: Option<&Path>, host: &Target, args: ContainersArgs) -> anyhow::Result<u8> {
    each_post(config, host, &args.containers, |c| {
        format!("/containers/{}/unpause", query_value(c))
    })
}

#[derive(Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

pub fn rename(config: Option<&Path>, host: &Target, args: RenameArgs) -> anyhow::Result<u8> {
    let new = args.new_name.trim();
    if new.is_empty() {
        bail!("Error: Neither old nor new names may be empty");
    }
    let (agent, _) = agent(config, host)?;
    rt()?.block_on(agent.json(
        "POST",
        &format!(
            "/containers/{}/rename?name={}",
            query_value(&args.container),
            query_value(new)
        ),
    ))?;
    Ok(0)
}

#[derive(Args)]
pub struct UpdateArgs {
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Memory soft limit.
    #[arg(long = "memory-reservation")]
    memory_reservation: Option<String>,
    /// Memory plus swap; -1 for unlimited swap.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Number of CPUs (a CFS quota).
    #[arg(long)]
    cpus: Option<f64>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long = "cpu-shares")]
    cpu_shares: Option<i64>,
    /// The CFS period in microseconds.
    #[arg(long = "cpu-period")]
    cpu_period: Option<i64>,
    /// The CFS quota in microseconds.
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    /// CPUs the container may run on (0-3, 0,1).
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    /// Memory nodes the container may use (0-3, 0,1).
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    /// Block I/O weight, 10 to 1000.
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    /// Maximum number of processes (-1 for unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long)]
    restart: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

/// docker's update body: only the fields given, by the Engine API's names.
fn update_body(args: &UpdateArgs) -> anyhow::Result<serde_json::Value> {
    use serde_json::json;
    let mut b = serde_json::Map::new();
    let size = |flag: &str, v: &str| -> anyhow::Result<i64> {
        container::parse_size(v).with_context(|| format!("invalid argument {v:?} for {flag}"))
    };
    if let Some(v) = &args.memory {
        b.insert("Memory".into(), json!(size("--memory", v)?));
    }
    if let Some(v) = &args.memory_reservation {
        b.insert(
            "MemoryReservation".into(),
            json!(size("--memory-reservation", v)?),
        );
    }
    if let Some(v) = &args.memory_swap {
        let n = if v == "-1" {
            -1
        } else {
            size("--memory-swap", v)?
        };
        b.insert("MemorySwap".into(), json!(n));
    }
    if let Some(c) = args.cpus {
        b.insert("NanoCpus".into(), json!((c * 1e9).round() as i64));
    }
    for (key, v) in [
        ("CpuShares", args.cpu_shares),
        ("CpuPeriod", args.cpu_period),
        ("CpuQuota", args.cpu_quota),
        ("PidsLimit", args.pids_limit),
    ] {
        if let Some(v) = v {
            b.insert(key.into(), json!(v));
        }
    }
    for (key, v) in [
        ("CpusetCpus", &args.cpuset_cpus),
        ("CpusetMems", &args.cpuset_mems),
    ] {
        if let Some(v) = v {
            b.insert(key.into(), json!(v));
        }
    }
    if let Some(w) = args.blkio_weight {
        b.insert("BlkioWeight".into(), json!(w));
    }
    if let Some(r) = &args.restart {
        let policy = match r.split_once(':') {
            Some((name, max)) => {
                let max: u64 = max
                    .parse()
                    .with_context(|| format!("invalid restart policy {r:?}"))?;
                json!({ "Name": name, "MaximumRetryCount": max })
            }
            None => json!({ "Name": r, "MaximumRetryCount": 0 }),
        };
        b.insert("RestartPolicy".into(), policy);
    }
    Ok(serde_json::Value::Object(b))
}

pub fn update(config: Option<&Path>, host: &Target, args: UpdateArgs) -> anyhow::Result<u8> {
    let body = update_body(&args)?;
    if body.as_object().is_some_and(|o| o.is_empty()) {
        bail!("you must provide one or more flags when using this command");
    }
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    let mut failed = false;
    for c in &args.containers {
        let path = format!("/containers/{}/update", query_value(c));
        match rt.block_on(agent.json_body("POST", &path, &body)) {
            Ok(v) => {
                for w in v["Warnings"].as_array().into_iter().flatten() {
                    eprintln!("{}", w.as_str().unwrap_or(""));
                }
                println!("{c}");
            }
            Err(e) => {
                eprintln!("reg: {c}: {e}");
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

// ---------------------------------------------------------------------------------------------
// top, diff, stats

#[derive(Args)]
pub struct TopArgs {
    container: String,
    /// Options for ps.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_options: Vec<String>,
}

pub fn top(config: Option<&Path>, host: &Target, args: TopArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let mut path = format!("/containers/{}/top", query_value(&args.container));
    if !args.ps_options.is_empty() {
        path.push_str(&format!(
            "?ps_args={}",
            query_value(&args.ps_options.join(" "))
        ));
    }
    let v = rt()?.block_on(agent.json("GET", &path))?;
    out(&top_table(&v)?);
    Ok(0)
}

/// The aligned table of a `GET /containers/{id}/top` answer (`Titles`, then `Processes`).
pub(crate) fn top_table(v: &serde_json::Value) -> anyhow::Result<String> {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap_or("").to_string())
            .collect()
    };
    let mut rows = vec![strings(&v["Titles"])];
    rows.extend(v["Processes"].as_array().into_iter().flatten().map(strings));
    table(&rows, 20)
}

#[derive(Args)]
pub struct DiffArgs {
    container: String,
}

pub fn diff(config: Option<&Path>, host: &Target, args: DiffArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let path = format!("/containers/{}/changes", query_value(&args.container));
    let v = rt()?.block_on(agent.json("GET", &path))?;
    let mut text = String::new();
    for c in v.as_array().into_iter().flatten() {
        let kind = match c["Kind"].as_u64() {
            Some(0) => "C",
            Some(1) => "A",
            Some(2) => "D",
            _ => "?",
        };
        text.push_str(&format!("{kind} {}\n", c["Path"].as_str().unwrap_or("")));
    }
    out(&text);
    Ok(0)
}

#[derive(Args)]
pub struct StatsArgs {
    /// Show all containers (default: running ones).
    #[arg(short = 'a', long)]
    all: bool,
    /// One reading, then exit.
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// Full container ids.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    containers: Vec<String>,
}

/// One row of docker's stats table, computed as docker's CLI does from a `StatsJSON`.
#[derive(Debug, Default, Clone, PartialEq)]
struct StatsRow {
    id: String,
    name: String,
    cpu: f64,
    mem: f64,
    mem_limit: f64,
    mem_percent: f64,
    net: (f64, f64),
    block: (f64, f64),
    pids: u64,
}

impl StatsRow {
    /// docker's `calculateCPUPercentUnix`, `calculateMemUsageUnixNoCache`, network and block
    /// I/O sums, from one reading `v`.
    fn from_stats(v: &serde_json::Value) -> StatsRow {
        let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
        let (cpu, pre) = (&v["cpu_stats"], &v["precpu_stats"]);
        let cpu_delta = f(&cpu["cpu_usage"]["total_usage"]) - f(&pre["cpu_usage"]["total_usage"]);
        let system_delta = f(&cpu["system_cpu_usage"]) - f(&pre["system_cpu_usage"]);
        let mut online = f(&cpu["online_cpus"]);
        if online == 0.0 {
            online = cpu["cpu_usage"]["percpu_usage"]
                .as_array()
                .map_or(0.0, |a| a.len() as f64);
        }
        let cpu_percent = if system_delta > 0.0 && cpu_delta > 0.0 {
            cpu_delta / system_delta * online * 100.0
        } else {
            0.0
        };
        let m = &v["memory_stats"];
        let usage = m["usage"].as_u64().unwrap_or(0);
        let mem = match (
            m["stats"]["total_inactive_file"].as_u64(),
            m["stats"]["inactive_file"].as_u64(),
        ) {
            (Some(i), _) if i < usage => usage - i,
            (None, Some(i)) if i < usage => usage - i,
            _ => usage,
        } as f64;
        let limit = f(&m["limit"]);
        let mut net = (0.0, 0.0);
        for n in v["networks"]
            .as_object()
            .into_iter()
            .flat_map(|o| o.values())
        {
            net.0 += f(&n["rx_bytes"]);
            net.1 += f(&n["tx_bytes"]);
        }
        let mut block = (0.0, 0.0);
        for e in v["blkio_stats"]["io_service_bytes_recursive"]
            .as_array()
            .into_iter()
            .flatten()
        {
            match e["op"].as_str().unwrap_or("").to_ascii_lowercase().as_str() {
                "read" => block.0 += f(&e["value"]),
                "write" => block.1 += f(&e["value"]),
                _ => {}
            }
        }
        StatsRow {
            id: v["id"].as_str().unwrap_or("").to_string(),
            name: v["name"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string(),
            cpu: cpu_percent,
            mem,
            mem_limit: limit,
            mem_percent: if limit != 0.0 {
                mem / limit * 100.0
            } else {
                0.0
            },
            net,
            block,
            pids: v["pids_stats"]["current"].as_u64().unwrap_or(0),
        }
    }

    fn cells(&self, no_trunc: bool) -> Vec<String> {
        let pair =
            |(a, b): (f64, f64)| format!("{} / {}", human_size_prec(a, 3), human_size_prec(b, 3));
        vec![
            if no_trunc {
                self.id.clone()
            } else {
                short_id(&self.id)
            },
            if self.name.is_empty() {
                "--".into()
            } else {
                self.name.clone()
            },
            format!("{:.2}%", self.cpu),
            format!("{} / {}", bytes_size(self.mem), bytes_size(self.mem_limit)),
            format!("{:.2}%", self.mem_percent),
            pair(self.net),
            pair(self.block),
            self.pids.to_string(),
        ]
    }
}

const STATS_HEADER: [&str; 8] = [
    "CONTAINER ID",
    "NAME",
    "CPU %",
    "MEM USAGE / LIMIT",
    "MEM %",
    "NET I/O",
    "BLOCK I/O",
    "PIDS",
];

/// One reading of container `key` (a second apart from the previous, for the cpu %). A
/// container that is not running reads as zeros, as docker shows it.
async fn stats_of(agent: &AgentClient, key: &str) -> Result<StatsRow, AgentError> {
    let q = query_value(key);
    match agent
        .json("GET", &format!("/containers/{q}/stats?stream=0"))
        .await
    {
        Ok(v) => Ok(StatsRow::from_stats(&v)),
        Err(e) => {
            // Gone, or never there: the error. Stopped: a row of zeros.
            let c = agent.json("GET", &format!("/containers/{q}/json")).await?;
            if c["State"]["Running"].as_bool() == Some(true) {
                return Err(e);
            }
            Ok(StatsRow {
                id: c["Id"].as_str().unwrap_or("").to_string(),
                name: c["Name"]
                    .as_str()
                    .unwrap_or("")
                    .trim_start_matches('/')
                    .to_string(),
                ..StatsRow::default()
            })
        }
    }
}

pub fn stats(config: Option<&Path>, host: &Target, args: StatsArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        let keys: Vec<String> = if args.containers.is_empty() {
            let list = rt.block_on(agent.json(
                "GET",
                &format!("/containers/json?all={}", u8::from(args.all)),
            ))?;
            list.as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["Id"].as_str().map(str::to_string))
                .collect()
        } else {
            args.containers.clone()
        };
        let readings = rt.block_on(futures::future::join_all(
            keys.iter().map(|k| stats_of(&agent, k)),
        ));
        let mut rows = vec![STATS_HEADER.iter().map(|h| h.to_string()).collect()];
        let mut failed = false;
        for (k, r) in keys.iter().zip(readings) {
            match r {
                Ok(row) => rows.push(row.cells(args.no_trunc)),
                // A container listed a moment ago and gone since is left out.
                Err(AgentError::Api { status: 404, .. }) if args.containers.is_empty() => {}
                Err(e) => {
                    eprintln!("reg: {k}: {e}");
                    failed = true;
                }
            }
        }
        let text = table(&rows, 10)?;
        if args.no_stream {
            out(&text);
            return Ok(u8::from(failed));
        }
        if failed && !args.containers.is_empty() {
            return Ok(1);
        }
        // Redrawn in place, as docker does (the screen cleared first).
        let clear = if terminal { "\x1b[2J\x1b[H" } else { "" };
        let mut o = std::io::stdout().lock();
        if o.write_all(format!("{clear}{text}").as_bytes()).is_err() || o.flush().is_err() {
            return Ok(0);
        }
        drop(o);
        if keys.is_empty() {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// export, save, load, history

/// Where an archive goes: the file of `-o`, else stdout unless it is a terminal (docker's
/// refusal).
enum Sink {
    Stdout(std::io::StdoutLock<'static>),
    /// Something that is not a regular file (`/dev/null`, a FIFO): written into as it is,
    /// never created, truncated or removed.
    Special(std::fs::File),
    /// A regular file: written beside it under a temporary name and renamed over it once
    /// complete, so a failure leaves what was there (and a half-written archive never shows).
    Replace {
        tmp: tempfile::NamedTempFile,
        target: PathBuf,
    },
}

impl Sink {
    fn open(output: &Option<PathBuf>) -> anyhow::Result<Sink> {
        use std::os::unix::fs::FileTypeExt;
        let Some(p) = output else {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            return Ok(Sink::Stdout(std::io::stdout().lock()));
        };
        let fail = |e: std::io::Error| anyhow::anyhow!("failed to save to {}: {e}", p.display());
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => bail!("failed to save to {}: it is a directory", p.display()),
            Ok(m) if m.file_type().is_char_device() || m.file_type().is_fifo() => {
                Ok(Sink::Special(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(p)
                        .map_err(fail)?,
                ))
            }
            Ok(m) if !m.is_file() => bail!(
                "failed to save to {}: not a regular file, a character device or a FIFO",
                p.display()
            ),
            _ => {
                let dir = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                Ok(Sink::Replace {
                    tmp: tempfile::Builder::new()
                        .prefix(".reg-save-")
                        .tempfile_in(dir)
                        .map_err(fail)?,
                    target: p.clone(),
                })
            }
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stdout(s) => s,
            Sink::Special(f) => f,
            Sink::Replace { tmp, .. } => tmp.as_file_mut(),
        }
    }

    /// Makes a complete archive visible (a temporary file dropped unfinished goes away).
    fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Stdout(mut s) => s.flush().map_err(Into::into),
            Sink::Special(mut f) => f.flush().map_err(Into::into),
            Sink::Replace { tmp, target } => {
                let mode = std::fs::metadata(&target).ok().map(|m| m.permissions());
                let perms = mode.unwrap_or_else(|| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::Permissions::from_mode(0o644)
                });
                std::fs::set_permissions(tmp.path(), perms)?;
                tmp.persist(&target).map_err(|e| {
                    anyhow::anyhow!("failed to save to {}: {}", target.display(), e.error)
                })?;
                Ok(())
            }
        }
    }
}

/// Streams the answer of `GET path` into `output` (or stdout); on a failure nothing of it is
/// left in `output`'s place.
fn download(
    config: Option<&Path>,
    host: &Target,
    path: &str,
    output: &Option<PathBuf>,
) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    let mut sink = Sink::open(output)?;
    let mut write_err = None;
    {
        let mut w = std::io::BufWriter::with_capacity(256 * 1024, sink.writer());
        let r = rt.block_on(agent.request_bytes("GET", path, |data| {
            if write_err.is_none() {
                if let Err(e) = w.write_all(data) {
                    write_err = Some(e);
                }
            }
        }));
        r?;
        if let Some(e) = write_err {
            return Err(e.into());
        }
        w.flush()?;
    }
    sink.finish()?;
    Ok(0)
}

#[derive(Args)]
pub struct ExportArgs {
    /// Write to a file instead of stdout.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    container: String,
}

pub fn export(config: Option<&Path>, host: &Target, args: ExportArgs) -> anyhow::Result<u8> {
    let path = format!("/containers/{}/export", query_value(&args.container));
    download(config, host, &path, &args.output)
}

#[derive(Args)]
pub struct SaveArgs {
    /// Write to a file instead of stdout.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    #[arg(required = true)]
    images: Vec<String>,
}

/// An image as the agent names it: an id (`sha256:…`, or 12+ hex digits) as given, a
/// reference completed with this cli's default registry (as `rmi` and `tag` send them).
fn image_name(cfg: &reg_config::Config, name: &str) -> String {
    let bare = name.strip_prefix("sha256:").unwrap_or(name);
    if name.starts_with("sha256:")
        || (bare.len() >= 12 && bare.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return name.to_string();
    }
    Reference::parse(name, &cfg.node.default_registry)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| name.to_string())
}

pub fn save(config: Option<&Path>, host: &Target, args: SaveArgs) -> anyhow::Result<u8> {
    let cfg = reg_config::Config::load(config)?;
    let names: Vec<String> = args
        .images
        .iter()
        .map(|n| format!("names={}", query_value(&image_name(&cfg, n))))
        .collect();
    download(
        config,
        host,
        &format!("/images/get?{}", names.join("&")),
        &args.output,
    )
}

#[derive(Args)]
pub struct LoadArgs {
    /// Read from a tar archive file instead of stdin.
    #[arg(short = 'i', long)]
    input: Option<PathBuf>,
    /// Suppress the load output.
    #[arg(short = 'q', long)]
    quiet: bool,
}

pub fn load(config: Option<&Path>, host: &Target, args: LoadArgs) -> anyhow::Result<u8> {
    let body = match &args.input {
        Some(p) => {
            let mut f = std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?;
            reg_node::api::writer_body(move |w| std::io::copy(&mut f, w).map(|_| ()))
        }
        None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            bail!("requested load from stdin, but stdin is empty")
        }
        None => reg_node::api::stdin_body(),
    };
    let (agent, _) = agent(config, host)?;
    let path = format!("/images/load?quiet={}", u8::from(args.quiet));
    let headers = [("content-type", "application/x-tar".to_string())];
    let mut failure = None;
    let status =
        rt()?.block_on(
            agent.request_streaming("POST", &path, &headers, false, body, |line| {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    return;
                };
                if let Some(e) = v["error"].as_str().or(v["message"].as_str()) {
                    failure = Some(e.to_string());
                } else if let Some(s) = v["stream"].as_str() {
                    out(s);
                }
            }),
        )?;
    if let Some(e) = failure {
        bail!("{e}");
    }
    if !(200..300).contains(&status) {
        bail!("the agent answered {status}");
    }
    Ok(0)
}

#[derive(Args)]
pub struct HistoryArgs {
    /// Full ids and commands.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only ids.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Sizes and dates in human readable form (docker's `-H` is reg's global `--host`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    human: bool,
    image: String,
}

pub fn history(config: Option<&Path>, host: &Target, args: HistoryArgs) -> anyhow::Result<u8> {
    let (agent, cfg) = agent_for_names(config, host)?;
    let path = format!(
        "/images/{}/history",
        image_path(&image_name(&cfg, &args.image))
    );
    let v = rt()?.block_on(agent.json("GET", &path))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let id = |h: &serde_json::Value| {
        let id = h["Id"].as_str().unwrap_or("");
        if args.no_trunc || id == "<missing>" {
            id.to_string()
        } else {
            short_id(id)
        }
    };
    let steps: Vec<&serde_json::Value> = v.as_array().into_iter().flatten().collect();
    if args.quiet {
        out(&steps.iter().map(|h| id(h) + "\n").collect::<String>());
        return Ok(0);
    }
    let mut rows = vec![vec![
        "IMAGE".to_string(),
        "CREATED".into(),
        "CREATED BY".into(),
        "SIZE".into(),
        "COMMENT".into(),
    ]];
    for h in steps {
        let created = h["Created"].as_i64().unwrap_or(0);
        let created = if args.human {
            format!(
                "{} ago",
                human_duration(u64::try_from(now - created).unwrap_or(0))
            )
        } else {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(created).unwrap_or(0)),
            )
            .to_string()
        };
        let by = h["CreatedBy"].as_str().unwrap_or("").replace('\t', " ");
        let size = h["Size"].as_f64().unwrap_or(0.0);
        rows.push(vec![
            id(h),
            created,
            if args.no_trunc { by } else { ellipsis(&by, 45) },
            if args.human {
                human_size_prec(size, 3)
            } else {
                (size as i64).to_string()
            },
            h["Comment"].as_str().unwrap_or("").to_string(),
        ]);
    }
    out(&table(&rows, 10)?);
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// events

#[derive(Args)]
pub struct EventsArgs {
    /// Events since this time: unix seconds, RFC 3339, or a duration before now (10m).
    #[arg(long)]
    since: Option<String>,
    /// Events until this time (then the stream ends).
    #[arg(long)]
    until: Option<String>,
    /// Filter: type=, event=, container=, image=, label=, network=, volume=.
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
}

/// docker's `timetypes.GetTimestamp`: a duration is before `now`, RFC 3339 a point in time,
/// anything else (unix seconds, with a fraction) goes as it is.
fn timestamp(value: &str, now: std::time::SystemTime) -> String {
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    if value != "0" && !value.contains(['-', ':']) {
        if let Ok(d) = humantime::parse_duration(value) {
            return unix(now.checked_sub(d).unwrap_or(std::time::UNIX_EPOCH)).to_string();
        }
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        return unix(t).to_string();
    }
    value.to_string()
}

/// One event as docker's CLI prints it: `TIME TYPE ACTION ID (k=v, …)`, attributes sorted.
fn event_line(v: &serde_json::Value) -> String {
    let mut line = String::new();
    let nanos = v["timeNano"]
        .as_i64()
        .filter(|n| *n != 0)
        .or_else(|| v["time"].as_i64().map(|s| s * 1_000_000_000));
    if let Some(n) = nanos {
        let t =
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(u64::try_from(n).unwrap_or(0));
        // Go's RFC3339NanoFixed (nine digits of the second), in UTC.
        line.push_str(&humantime::format_rfc3339_nanos(t).to_string());
        line.push(' ');
    }
    let actor = &v["Actor"];
    line.push_str(&format!(
        "{} {} {}",
        v["Type"].as_str().unwrap_or(""),
        v["Action"].as_str().unwrap_or(""),
        actor["ID"].as_str().unwrap_or("")
    ));
    if actor["Attributes"]
        .as_object()
        .is_some_and(|a| !a.is_empty())
    {
        line.push_str(&format!(
            " ({})",
            super::format::pairs(&actor["Attributes"], ", ")
        ));
    }
    line
}

pub fn events(config: Option<&Path>, host: &Target, args: EventsArgs) -> anyhow::Result<u8> {
    let now = std::time::SystemTime::now();
    let mut query = Vec::new();
    if let Some(s) = &args.since {
        query.push(format!("since={}", query_value(&timestamp(s, now))));
    }
    if let Some(u) = &args.until {
        query.push(format!("until={}", query_value(&timestamp(u, now))));
    }
    if let Some(f) = filters_json(&args.filter)? {
        query.push(format!("filters={}", query_value(&f)));
    }
    let path = if query.is_empty() {
        "/events".to_string()
    } else {
        format!("/events?{}", query.join("&"))
    };
    let (agent, _) = agent(config, host)?;
    let mut refusal = String::new();
    let status =
        rt()?.block_on(agent.request("GET", &path, &[], |line| {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) if v.get("Type").is_some() => out(&format!("{}\n", event_line(&v))),
                Ok(v) => refusal = v["message"].as_str().unwrap_or(line).to_string(),
                Err(_) => {}
            }
        }))?;
    if !(200..300).contains(&status) {
        bail!("{refusal}");
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// attach

#[derive(Args)]
pub struct AttachArgs {
    /// Do not attach stdin.
    #[arg(long = "no-stdin")]
    no_stdin: bool,
    /// Proxy the signals this process receives to the container (not with a terminal).
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    sig_proxy: bool,
    /// The keys that detach from the container, leaving it running (default ctrl-p,ctrl-q).
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    container: String,
}

/// Forwards the signals a terminal-less attach receives to container `id` until aborted.
async fn proxy_signals(agent: AgentClient, id: String) {
    use tokio::signal::unix::{signal, SignalKind};
    let kinds = [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::quit(), "SIGQUIT"),
        (SignalKind::user_defined1(), "SIGUSR1"),
        (SignalKind::user_defined2(), "SIGUSR2"),
    ];
    let mut streams = Vec::new();
    for (k, name) in kinds {
        if let Ok(s) = signal(k) {
            streams.push((s, name));
        }
    }
    loop {
        let next = futures::future::select_all(
            streams
                .iter_mut()
                .map(|(s, name)| Box::pin(async move { s.recv().await.map(|()| *name) })),
        );
        let (got, _, _) = next.await;
        let Some(name) = got else { return };
        let path = format!("/containers/{}/kill?signal={name}", query_value(&id));
        let _ = agent.json("POST", &path).await;
    }
}

pub fn attach(config: Option<&Path>, host: &Target, args: AttachArgs) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    let q = query_value(&args.container);
    let c = rt.block_on(agent.json("GET", &format!("/containers/{q}/json")))?;
    let st = &c["State"];
    if st["Running"].as_bool() != Some(true) {
        bail!("You cannot attach to a stopped container, start it first");
    }
    if st["Paused"].as_bool() == Some(true) {
        bail!("You cannot attach to a paused container, unpause it first");
    }
    if st["Restarting"].as_bool() == Some(true) {
        bail!("You cannot attach to a restarting container, wait until it is running");
    }
    let id = c["Id"].as_str().unwrap_or(&args.container).to_string();
    let tty = c["Config"]["Tty"].as_bool().unwrap_or(false);
    let stdin = !args.no_stdin && c["Config"]["OpenStdin"].as_bool().unwrap_or(false);
    let (detach, detach_query) =
        container::detach_settings(args.detach_keys.as_deref(), tty, stdin)?;
    let mut path = format!("/containers/{q}/attach?stream=1&stdout=1&stderr=1{detach_query}");
    if stdin {
        path.push_str("&stdin=1");
    }
    let io = rt.block_on(agent.hijack("POST", &path, &serde_json::Value::Null))?;
    let waiting = rt.block_on(agent.begin(
        "POST",
        &format!("/containers/{q}/wait?condition=not-running"),
    ))?;
    if tty {
        container::follow_resize(&rt, &agent, &id);
    }
    let mut proxy = tokio::task::JoinSet::new();
    if args.sig_proxy && !tty {
        proxy.spawn_on(proxy_signals(agent.clone(), id.clone()), rt.handle());
    }
    let raw = if tty && stdin {
        container::RawMode::enter()
    } else {
        None
    };
    let detached = rt.block_on(container::session(io, tty, stdin, detach));
    drop(raw);
    if detached {
        // As docker attach: said, and exit code 1 (docker run -it detaches with 0).
        eprintln!("read escape sequence");
        return Ok(1);
    }
    proxy.abort_all();
    let v = rt.block_on(waiting.json())?;
    if let Some(m) = v["Error"]["Message"].as_str() {
        bail!("{m}");
    }
    Ok(v["StatusCode"]
        .as_i64()
        .map(|c| u8::try_from(c).unwrap_or(1))
        .unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// container prune

#[derive(Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    force: bool,
    /// Filter values (e.g. label=KEY=VALUE).
    #[arg(long)]
    filter: Vec<String>,
}

/// Prints docker's prune report: `HEADING` and one line per name (then a blank line), and
/// with `space` the total reclaimed.
fn prune_report(heading: &str, names: &serde_json::Value, space: Option<f64>) {
    let names: Vec<&str> = names
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .collect();
    let mut text = String::new();
    if !names.is_empty() {
        text.push_str(heading);
        text.push('\n');
        for n in &names {
            text.push_str(n);
            text.push('\n');
        }
        text.push('\n');
    }
    if let Some(space) = space {
        let space = if names.is_empty() { 0.0 } else { space };
        text.push_str(&format!("Total reclaimed space: {}\n", human_size(space)));
    }
    out(&text);
}

/// Runs a prune after docker's confirmation (none with `-f`); a "no" ends quietly, as docker.
pub(crate) fn prune(
    config: Option<&Path>,
    host: &Target,
    force: bool,
    warning: &str,
    path: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    if !force && !confirm(warning)? {
        return Ok(None);
    }
    let (agent, _) = agent(config, host)?;
    Ok(Some(rt()?.block_on(agent.json("POST", path))?))
}

pub fn container_prune(
    config: Option<&Path>,
    host: &Target,
    args: PruneArgs,
) -> anyhow::Result<u8> {
    let path = format!("/containers/prune{}", filters_query(&args.filter, '?')?);
    let warning =
        "WARNING! This will remove all stopped containers.\nAre you sure you want to continue?";
    if let Some(v) = prune(config, host, args.force, warning, &path)? {
        prune_report(
            "Deleted Containers:",
            &v["ContainersDeleted"],
            Some(v["SpaceReclaimed"].as_f64().unwrap_or(0.0)),
        );
    }
    Ok(0)
}

/// `reg volume prune`'s report.
pub(crate) fn volume_prune_report(v: &serde_json::Value) {
    prune_report(
        "Deleted Volumes:",
        &v["VolumesDeleted"],
        Some(v["SpaceReclaimed"].as_f64().unwrap_or(0.0)),
    );
}

/// `reg network prune`'s report (docker prints no total for networks).
pub(crate) fn network_prune_report(v: &serde_json::Value) {
    prune_report("Deleted Networks:", &v["NetworksDeleted"], None);
}

/// The `filters` query of a prune's `--filter` list (and `extra`, e.g. volume prune's `all`).
pub(crate) fn prune_query(filter: &[String], extra: &[&str]) -> anyhow::Result<String> {
    let mut all: Vec<String> = filter.to_vec();
    all.extend(extra.iter().map(|s| s.to_string()));
    filters_query(&all, '?')
}

// ---------------------------------------------------------------------------------------------
// cp

#[derive(Args)]
pub struct CpArgs {
    /// Always follow symlinks in SRC_PATH.
    #[arg(short = 'L', long = "follow-link")]
    follow_link: bool,
    /// Archive mode (copy all uid/gid information).
    #[arg(short = 'a', long)]
    archive: bool,
    /// Suppress progress output (it is suppressed anyway without a terminal).
    #[arg(short = 'q', long)]
    quiet: bool,
    /// CONTAINER:SRC_PATH or a local SRC_PATH (`-`: a tar on stdin).
    source: String,
    /// CONTAINER:DEST_PATH or a local DEST_PATH (`-`: a tar to stdout).
    destination: String,
}

/// docker's `splitCpArg`: `CONTAINER:PATH`, unless the argument is an absolute path or a
/// relative one starting with `.` (a local `./a:b`).
fn split_cp_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.starts_with('.') => (Some(c), p),
        _ => (None, arg),
    }
}

pub fn cp(config: Option<&Path>, host: &Target, args: CpArgs) -> anyhow::Result<u8> {
    if args.source.is_empty() {
        bail!("source can not be empty");
    }
    if args.destination.is_empty() {
        bail!("destination can not be empty");
    }
    let (agent, _) = agent(config, host)?;
    let rt = rt()?;
    let quiet = args.quiet || !std::io::IsTerminal::is_terminal(&std::io::stdout());
    match (split_cp_arg(&args.source), split_cp_arg(&args.destination)) {
        ((Some(_), _), (Some(_), _)) => bail!("copying between containers is not supported"),
        ((Some(c), src), (None, dst)) => copy_out(&rt, &agent, c, src, dst, &args, quiet),
        ((None, src), (Some(c), dst)) => copy_in(&rt, &agent, c, src, dst, &args, quiet),
        _ => bail!("must specify at least one container source"),
    }
}

/// A local path made absolute, its trailing `/` or `/.` kept (they mean something to cp).
fn local_abs(p: &str) -> anyhow::Result<String> {
    let abs = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{}/{p}", std::env::current_dir()?.display())
    };
    Ok(abs)
}

/// `path` ends in a way that says "a directory" (`/` or `/.`).
fn asserts_dir(path: &str) -> bool {
    path.ends_with('/') || path.ends_with("/.") || path == "."
}

/// `path` split into its parent and last name, lexically (docker's `SplitPathDirEntry`).
fn split_dir_entry(path: &str) -> (String, String) {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let dot = path.ends_with("/.") || path == ".";
    let prefix = if path.starts_with('/') { "/" } else { "" };
    if dot {
        return (format!("{prefix}{}", parts.join("/")), ".".into());
    }
    let base = parts.pop().unwrap_or("/").to_string();
    let dir = format!("{prefix}{}", parts.join("/"));
    (if dir.is_empty() { ".".into() } else { dir }, base)
}

/// docker's `Successfully copied …` line (both sizes when they differ).
fn copy_summary(content: u64, transferred: u64, dest: &str) {
    if content != transferred {
        eprintln!(
            "Successfully copied {} (transferred {}) to {dest}",
            human_size_prec(content as f64, 3),
            human_size_prec(transferred as f64, 3)
        );
    } else {
        eprintln!(
            "Successfully copied {} to {dest}",
            human_size_prec(content as f64, 3)
        );
    }
}

/// What the first entry of a container path's archive says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Dir,
    Symlink,
    Other,
}

/// The kind of the first real entry of the tar whose first bytes are `buf` (past GNU long
/// names and PAX headers), once enough of it is in.
fn first_entry_kind(buf: &[u8]) -> Option<PathKind> {
    let mut at = 0usize;
    loop {
        let block = buf.get(at..at + 512)?;
        let h = tar::Header::from_byte_slice(block);
        let t = h.entry_type();
        if t.is_gnu_longname() || t.is_gnu_longlink() || t.is_pax_local_extensions() {
            let size = usize::try_from(h.entry_size().ok()?).ok()?;
            at = at.checked_add(512 + size.div_ceil(512) * 512)?;
            continue;
        }
        return Some(if t.is_dir() {
            PathKind::Dir
        } else if t.is_symlink() {
            PathKind::Symlink
        } else {
            PathKind::Other
        });
    }
}

/// Whether `path` exists in container `ctr` and what it is, from the first header of its
/// archive (the rest is not read: the answer is dropped once that is known). `None`: missing.
fn stat_in_container(
    rt: &tokio::runtime::Runtime,
    agent: &AgentClient,
    ctr: &str,
    path: &str,
) -> anyhow::Result<Option<PathKind>> {
    const MOST: usize = 1 << 20;
    let found = std::cell::Cell::new(None);
    let buf = std::cell::RefCell::new(Vec::new());
    let known = tokio::sync::Notify::new();
    let req = format!(
        "/containers/{}/archive?path={}",
        query_value(ctr),
        query_value(path)
    );
    let r = rt.block_on(async {
        let fetch = agent.request_bytes("GET", &req, |d| {
            if found.get().is_some() {
                return;
            }
            let mut b = buf.borrow_mut();
            if b.len() < MOST {
                b.extend_from_slice(d);
            }
            let kind = first_entry_kind(&b).or((b.len() >= MOST).then_some(PathKind::Other));
            if kind.is_some() {
                found.set(kind);
                known.notify_one();
            }
        });
        tokio::select! {
            r = fetch => r,
            () = known.notified() => Ok(()),
        }
    });
    match r {
        Ok(()) => Ok(found.get().or(Some(PathKind::Other))),
        Err(AgentError::Api { status: 404, .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `reg cp LOCAL|- CONTAINER:DEST`: a tar of the local path (named as docker's
/// `PrepareArchiveCopy` decides) extracted by the agent into the right directory.
fn copy_in(
    rt: &tokio::runtime::Runtime,
    agent: &AgentClient,
    ctr: &str,
    src: &str,
    dst: &str,
    args: &CpArgs,
    quiet: bool,
) -> anyhow::Result<u8> {
    let dst = if dst.is_empty() { "/" } else { dst };
    let mut dst_path = dst.to_string();
    let mut kind = stat_in_container(rt, agent, ctr, dst)?;
    if kind == Some(PathKind::Symlink) {
        // As docker: a symlink destination is what it points to.
        dst_path = format!("{}/", dst.trim_end_matches('/'));
        kind = stat_in_container(rt, agent, ctr, &dst_path)?;
    }
    let (put_dir, body, content_size, sent) = if src == "-" {
        if kind != Some(PathKind::Dir) {
            bail!("destination \"{ctr}:{dst}\" must be a directory");
        }
        (dst_path.clone(), reg_node::api::stdin_body(), None, None)
    } else {
        let src_abs = local_abs(src)?;
        let meta = if args.follow_link {
            std::fs::metadata(&src_abs)
        } else {
            std::fs::symlink_metadata(&src_abs)
        }
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow::anyhow!("lstat {src_abs}: no such file or directory")
            }
            _ => anyhow::anyhow!("lstat {src_abs}: {e}"),
        })?;
        let (_, src_base) = split_dir_entry(&src_abs);
        let (dst_dir, dst_base) = split_dir_entry(&dst_path);
        let (put_dir, top) = match kind {
            Some(PathKind::Dir) => (dst_path.clone(), src_base),
            Some(_) if meta.is_dir() => bail!("cannot copy directory"),
            Some(_) => (dst_dir, dst_base),
            None if meta.is_dir() => (dst_dir, dst_base),
            None if asserts_dir(&dst_path) => bail!("no such directory"),
            None => (dst_dir, dst_base),
        };
        let size = local_content_size(Path::new(&src_abs));
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        let (path, follow, is_dir) = (PathBuf::from(&src_abs), args.follow_link, meta.is_dir());
        let body = reg_node::api::writer_body(move |w| {
            let w = Counting(w, counter);
            let mut b = tar::Builder::new(w);
            b.follow_symlinks(false);
            if is_dir {
                b.append_dir_all(&top, &path)?;
            } else if follow {
                let mut f = std::fs::File::open(&path)?;
                b.append_file(&top, &mut f)?;
            } else {
                b.append_path_with_name(&path, &top)?;
            }
            b.into_inner()?;
            Ok(())
        });
        (put_dir, body, Some(size), Some(sent))
    };
    let path = format!(
        "/containers/{}/archive?path={}&noOverwriteDirNonDir=true&copyUIDGID={}",
        query_value(ctr),
        query_value(&put_dir),
        u8::from(args.archive)
    );
    let headers = [("content-type", "application/x-tar".to_string())];
    let mut answer = String::new();
    let status =
        rt.block_on(
            agent.request_streaming("PUT", &path, &headers, false, body, |l| answer.push_str(l)),
        )?;
    if !(200..300).contains(&status) {
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        bail!("{}", v["message"].as_str().unwrap_or(answer.trim()));
    }
    if !quiet {
        let sent = sent.map_or(0, |s| s.load(std::sync::atomic::Ordering::Relaxed));
        copy_summary(content_size.unwrap_or(sent), sent, &format!("{ctr}:{dst}"));
    }
    Ok(0)
}

/// A writer that counts what passes through it.
struct Counting<'a>(
    &'a mut dyn Write,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
);

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The bytes of regular files at `path` (docker's `localContentSize`).
fn local_content_size(path: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !m.is_dir() {
        return if m.is_file() { m.len() } else { 0 };
    }
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Bytes arriving from the agent, read by the extracting thread (a bounded channel: the
/// download waits for the disk, never fills memory).
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Where a container's archive lands on this host: the directory it is extracted into, and
/// the name its top entry takes there (`None`: its own).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Landing {
    root: PathBuf,
    rename: Option<String>,
}

/// The local destination as docker's `CopyInfoDestinationPath` sees it.
#[derive(Debug, Clone)]
struct LocalDest {
    path: String,
    exists: bool,
    is_dir: bool,
}

impl LocalDest {
    fn stat(path: &str) -> anyhow::Result<LocalDest> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(LocalDest {
                path: path.to_string(),
                exists: true,
                is_dir: m.is_dir(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (parent, _) = split_dir_entry(path);
                match std::fs::metadata(&parent) {
                    Ok(m) if m.is_dir() => Ok(LocalDest {
                        path: path.to_string(),
                        exists: false,
                        is_dir: false,
                    }),
                    Ok(_) => bail!("not a directory"),
                    Err(_) => bail!("stat {parent}: no such file or directory"),
                }
            }
            Err(e) => bail!("stat {path}: {e}"),
        }
    }

    /// docker's `PrepareArchiveCopy` for a source that is (or is not) a directory.
    fn landing(&self, src_is_dir: bool) -> anyhow::Result<Landing> {
        let (dir, base) = split_dir_entry(&self.path);
        let parent = Landing {
            root: PathBuf::from(dir),
            rename: Some(base),
        };
        match (self.exists, self.is_dir, src_is_dir) {
            (true, true, _) => Ok(Landing {
                root: PathBuf::from(&self.path),
                rename: None,
            }),
            (true, false, true) => bail!("cannot copy directory"),
            (true, false, false) | (false, _, true) => Ok(parent),
            (false, _, false) if asserts_dir(&self.path) => bail!("no such directory"),
            (false, _, false) => Ok(parent),
        }
    }
}

/// The normal components of an archive entry's name; `..`, an absolute name or anything but
/// plain names is refused (`.` is dropped).
fn entry_parts(name: &Path) -> anyhow::Result<Vec<String>> {
    let mut parts = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => parts.push(
                p.to_str()
                    .with_context(|| format!("archive entry {name:?}: not UTF-8"))?
                    .to_string(),
            ),
            Component::CurDir => {}
            _ => bail!(
                "refusing archive entry {}: it leaves the destination",
                name.display()
            ),
        }
    }
    Ok(parts)
}

/// How deep an extracted tree may nest, and how many entries one copy may hold.
const MAX_DEPTH: usize = 256;
const MAX_ENTRIES: u64 = 1_000_000;

/// Extracts the archive of a container path from `reader` at `dest`, through a strict
/// [`reg_untrusted::Tree`]: no symlink is ever followed, whatever the archive or the
/// destination hold; an entry outside the copied path, with `..` or absolute, is refused.
/// Device nodes and FIFOs are skipped (never made on this host from a container's archive).
/// Returns whether the copied path is a directory, and its size if it is a file.
fn extract_from_container(reader: impl Read, dest: &LocalDest) -> anyhow::Result<(bool, u64)> {
    use reg_untrusted::Tree;
    let mut archive = tar::Archive::new(reader);
    let mut plan: Option<(Tree, Landing, Vec<String>)> = None;
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    let mut first = (false, 0);
    let mut count = 0u64;
    for entry in archive
        .entries()
        .context("reading the container's archive")?
    {
        let mut entry = entry.context("reading the container's archive")?;
        count += 1;
        if count > MAX_ENTRIES {
            bail!("the container's archive has more than {MAX_ENTRIES} entries");
        }
        let name = entry.path()?.into_owned();
        let parts = entry_parts(&name)?;
        let kind = entry.header().entry_type();
        if plan.is_none() {
            let landing = dest.landing(kind.is_dir())?;
            let tree = Tree::open_strict(&landing.root)
                .with_context(|| format!("opening {}", landing.root.display()))?;
            first = (kind.is_dir(), entry.header().size().unwrap_or(0));
            plan = Some((tree, landing, parts.clone()));
        }
        let Some((tree, landing, top)) = &plan else {
            unreachable!("invariant: the plan is made at the first entry")
        };
        // The entry's place: below the copied path's top, renamed as the landing says.
        let rebase = |parts: &[String]| -> anyhow::Result<PathBuf> {
            let rest = parts.strip_prefix(top.as_slice()).with_context(|| {
                format!("refusing archive entry {name:?}: outside the copied path")
            })?;
            let mut p = PathBuf::new();
            match &landing.rename {
                Some(n) => p.push(n),
                None => p.extend(top),
            }
            p.extend(rest);
            Ok(p)
        };
        let rel = rebase(&parts)?;
        if rel.components().count() > MAX_DEPTH {
            bail!("refusing archive entry {name:?}: nested deeper than {MAX_DEPTH}");
        }
        let mode = entry.header().mode().unwrap_or(0o644);
        let mtime = entry.header().mtime().unwrap_or(0);
        if rel.as_os_str().is_empty() {
            // The destination directory itself (`DIR/.` into an existing directory).
            continue;
        }
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            tree.mkdir_all(parent, 0o755)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let existing = tree.symlink_metadata(&rel)?;
        let shown = landing.root.join(&rel);
        match existing {
            Some(m) if m.is_dir() && !kind.is_dir() => bail!(
                "cannot overwrite directory {:?} with non-directory {:?}",
                shown.display().to_string(),
                name.display().to_string()
            ),
            Some(m) if !m.is_dir() && kind.is_dir() => bail!(
                "cannot overwrite non-directory {:?} with directory {:?}",
                shown.display().to_string(),
                name.display().to_string()
            ),
            Some(ref m) if !m.is_dir() => tree.remove(&rel)?,
            _ => {}
        }
        let io = |e: std::io::Error| anyhow::anyhow!("{}: {e}", shown.display());
        if kind.is_dir() {
            if existing.is_none() {
                tree.mkdir(&rel, mode & 0o7777).map_err(io)?;
            }
            let h = tree.resolve_nofollow(&rel).map_err(io)?;
            reg_untrusted::set_mode(&h, mode).map_err(io)?;
            dir_times.push((rel, mtime));
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let mut f = tree.create_file(&rel, mode).map_err(io)?;
            std::io::copy(&mut entry, &mut f).map_err(io)?;
            reg_untrusted::set_mtime(&f, mtime as i64, 0).map_err(io)?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name()?
                .with_context(|| format!("symlink {name:?} has no target"))?
                .into_owned();
            // As docker's untar: a relative target may not climb above the destination.
            if target.is_relative() {
                let mut depth = rel.components().count() as i64 - 1;
                for c in target.components() {
                    match c {
                        Component::ParentDir => depth -= 1,
                        Component::Normal(_) => depth += 1,
                        _ => {}
                    }
                    if depth < 0 {
                        bail!(
                            "refusing archive entry {name:?}: invalid symlink {:?} -> {:?}",
                            shown.display().to_string(),
                            target.display().to_string()
                        );
                    }
                }
            }
            tree.symlink(&rel, &target).map_err(io)?;
        } else if kind.is_hard_link() {
            let target = entry
                .link_name()?
                .with_context(|| format!("hard link {name:?} has no target"))?
                .into_owned();
            let target = rebase(&entry_parts(&target)?)?;
            tree.hard_link(&rel, &target).map_err(io)?;
        } else {
            eprintln!(
                "reg: skipped {}: device nodes and FIFOs from a container are not made on this host",
                name.display()
            );
        }
    }
    let Some((tree, _, _)) = &plan else {
        bail!("the container's archive is empty");
    };
    // Directories' times last: their entries' creation changed them.
    for (rel, mtime) in dir_times.iter().rev() {
        if let Ok(h) = tree.resolve_nofollow(rel) {
            let _ = reg_untrusted::set_mtime(&h, *mtime as i64, 0);
        }
    }
    Ok(first)
}

/// `reg cp CONTAINER:SRC LOCAL|-`: the container's archive of SRC, to stdout or extracted
/// (safely) as docker's `CopyTo` lays it out.
fn copy_out(
    rt: &tokio::runtime::Runtime,
    agent: &AgentClient,
    ctr: &str,
    src: &str,
    dst: &str,
    args: &CpArgs,
    quiet: bool,
) -> anyhow::Result<u8> {
    let mut src = if src.is_empty() { "/" } else { src }.to_string();
    if args.follow_link && !src.ends_with('/') {
        // A final symlink followed by the agent, the entry keeping the link's name.
        src.push('/');
    }
    let path = format!(
        "/containers/{}/archive?path={}",
        query_value(ctr),
        query_value(&src)
    );
    if dst == "-" {
        let mut stdout = std::io::stdout().lock();
        let mut failed = None;
        rt.block_on(agent.request_bytes("GET", &path, |d| {
            if failed.is_none() {
                failed = stdout.write_all(d).err();
            }
        }))?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        stdout.flush()?;
        return Ok(0);
    }
    let dst_abs = local_abs(dst)?;
    let dest = LocalDest::stat(&dst_abs)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
    let worker_dest = dest.clone();
    let worker = std::thread::spawn(move || {
        let reader = ChannelReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        };
        extract_from_container(reader, &worker_dest)
    });
    let mut received = 0u64;
    let fetched = rt.block_on(agent.request_bytes("GET", &path, |d| {
        received += d.len() as u64;
        // A worker that stopped (refused an entry) takes no more: the rest is dropped.
        let _ = tx.send(d.to_vec());
    }));
    drop(tx);
    let extracted = worker
        .join()
        .map_err(|_| anyhow::anyhow!("the extracting thread panicked"))?;
    fetched?;
    let (src_is_dir, file_size) = extracted?;
    if !quiet {
        // As docker: a file's own size, a directory's archive.
        let size = if src_is_dir { received } else { file_size };
        copy_summary(size, received, &dst_abs);
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// `reg container …`

/// docker's `container` group: every container verb under one name.
#[derive(Subcommand)]
pub enum ContainerCommand {
    /// List containers.
    #[command(alias = "ps", alias = "list")]
    Ls(container::PsArgs),
    /// Run a command in a new container.
    Run(Box<RunArgs>),
    /// Create a new container.
    Create(Box<RunArgs>),
    /// Start stopped containers.
    Start(container::StartArgs),
    /// Stop containers.
    Stop(container::StopArgs),
    /// Restart containers.
    Restart(RestartArgs),
    /// Send a signal to containers.
    Kill(container::KillArgs),
    /// Remove containers.
    #[command(alias = "remove")]
    Rm(container::RmArgs),
    /// Show containers as JSON.
    Inspect(container::InspectArgs),
    /// Show a container's output.
    Logs(container::LogsArgs),
    /// Run a command in a running container.
    Exec(container::ExecArgs),
    /// Wait for containers to stop and print their exit codes.
    Wait(container::WaitArgs),
    /// List a container's published ports.
    Port(container::PortArgs),
    /// Pause all processes of containers.
    Pause(ContainersArgs),
    /// Unpause all processes of containers.
    Unpause(ContainersArgs),
    /// Show the running processes of a container.
    Top(TopArgs),
    /// Live resource usage of containers.
    Stats(StatsArgs),
    /// Copy files between a container and the local filesystem.
    Cp(CpArgs),
    /// Rename a container.
    Rename(RenameArgs),
    /// Update the resource limits of containers.
    Update(UpdateArgs),
    /// Changes to a container's filesystem.
    Diff(DiffArgs),
    /// Export a container's filesystem as a tar archive.
    Export(ExportArgs),
    /// Attach this terminal to a running container.
    Attach(AttachArgs),
    /// Remove all stopped containers.
    Prune(PruneArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_units() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(45), "45 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 86400), "5 days");
        assert_eq!(human_duration(3 * 7 * 86400), "3 weeks");
    }

    #[test]
    fn stats_compute_cpu_and_memory_as_dockers_cli() {
        let v = serde_json::json!({
            "id": "0123456789abcdef", "name": "/web",
            "cpu_stats": { "cpu_usage": { "total_usage": 300 }, "system_cpu_usage": 2000, "online_cpus": 2 },
            "precpu_stats": { "cpu_usage": { "total_usage": 100 }, "system_cpu_usage": 1000 },
            "memory_stats": { "usage": 3_145_728u64, "limit": 1_073_741_824u64, "stats": { "total_inactive_file": 1_048_576u64 } },
            "networks": { "eth0": { "rx_bytes": 1000, "tx_bytes": 2048 } },
            "blkio_stats": { "io_service_bytes_recursive": [ { "op": "Read", "value": 4096 }, { "op": "Write", "value": 0 } ] },
            "pids_stats": { "current": 3 },
        });
        let row = StatsRow::from_stats(&v);
        assert_eq!(
            row.cells(false),
            [
                "0123456789ab",
                "web",
                "40.00%",
                "2MiB / 1GiB",
                "0.20%",
                "1kB / 2.05kB",
                "4.1kB / 0B",
                "3"
            ]
        );
    }

    #[test]
    fn event_lines_read_as_dockers() {
        let v = serde_json::json!({
            "Type": "container", "Action": "start",
            "Actor": { "ID": "abc", "Attributes": { "name": "web", "image": "busybox" } },
            "timeNano": 1_700_000_000_123_456_789i64,
        });
        assert_eq!(
            event_line(&v),
            "2023-11-14T22:13:20.123456789Z container start abc (image=busybox, name=web)"
        );
    }

    #[test]
    fn cp_arguments_split_as_docker_splits_them() {
        assert_eq!(split_cp_arg("web:/etc"), (Some("web"), "/etc"));
        assert_eq!(split_cp_arg("/tmp/a:b"), (None, "/tmp/a:b"));
        assert_eq!(split_cp_arg("./a:b"), (None, "./a:b"));
        assert_eq!(split_cp_arg("file"), (None, "file"));
        assert_eq!(split_dir_entry("/a/b"), ("/a".into(), "b".into()));
        assert_eq!(split_dir_entry("/a/b/."), ("/a/b".into(), ".".into()));
        assert_eq!(split_dir_entry("/a"), ("/".into(), "a".into()));
    }

    #[test]
    fn archive_entries_that_climb_out_are_refused() {
        assert!(entry_parts(Path::new("../etc/passwd")).is_err());
        assert!(entry_parts(Path::new("/etc/passwd")).is_err());
        assert!(entry_parts(Path::new("a/../../b")).is_err());
        assert_eq!(
            entry_parts(Path::new("./a/b")).expect("plain"),
            ["a".to_string(), "b".to_string()]
        );
    }

    /// A hand-made archive (as a hostile agent could send) never writes outside the
    /// destination, even through a symlink it made itself.
    #[test]
    fn extraction_never_follows_a_symlink_out_of_the_destination() {
        let tmp = std::env::temp_dir().join(format!("reg-cp-test-{}", std::process::id()));
        let (dest, outside) = (tmp.join("dest"), tmp.join("outside"));
        std::fs::create_dir_all(&dest).expect("dest");
        std::fs::create_dir_all(&outside).expect("outside");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, "top", std::io::empty()).expect("dir");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "top/link", &outside).expect("link");
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(4);
        b.append_data(&mut h, "top/link/pwned", &b"evil"[..])
            .expect("file");
        let bytes = b.into_inner().expect("tar");
        let d = LocalDest::stat(dest.to_str().expect("utf-8")).expect("stat");
        assert!(extract_from_container(&bytes[..], &d).is_err());
        assert!(!outside.join("pwned").exists());
        assert!(dest.join("top/link").is_symlink());
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

// ---------------------------------------------------------------------------------------------
// commit, import, image/builder/system prune, system df

#[derive(Args)]
pub struct CommitArgs {
    /// Author of the new image.
    #[arg(short = 'a', long)]
    author: Option<String>,
    /// A Dockerfile instruction to apply (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME,
    /// WORKDIR, STOPSIGNAL).
    #[arg(short = 'c', long = "change")]
    change: Vec<String>,
    /// The commit message (the history entry's comment).
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Pause the container while its changes are written (default true).
    #[arg(short = 'p', long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pause: bool,
    container: String,
    /// REPOSITORY[:TAG] for the new image (untagged without).
    reference: Option<String>,
}

/// `&repo=REGISTRY/REPO&tag=TAG` of the name a new image gets (`commit`, `import`).
fn repo_tag_query(name: &str, default_registry: &str) -> anyhow::Result<String> {
    let r = Reference::parse(name, default_registry)?;
    let tag = r.tag.as_ref().map_or("latest", |t| t.as_str());
    Ok(format!(
        "&repo={}&tag={}",
        query_value(&format!("{}/{}", r.registry, r.repo.as_str())),
        query_value(tag)
    ))
}

/// `reg commit`: the container's changes as a new image; prints its id.
pub fn commit(config: Option<&Path>, host: &Target, args: CommitArgs) -> anyhow::Result<u8> {
    let (agent, cfg) = agent_for_names(config, host)?;
    let mut path = format!(
        "/commit?container={}&pause={}",
        query_value(&args.container),
        args.pause
    );
    if let Some(r) = &args.reference {
        path.push_str(&repo_tag_query(r, &cfg.node.default_registry)?);
    }
    for (k, v) in [("comment", &args.message), ("author", &args.author)] {
        if let Some(v) = v {
            path.push_str(&format!("&{k}={}", query_value(v)));
        }
    }
    for c in &args.change {
        path.push_str(&format!("&changes={}", query_value(c)));
    }
    let v = rt()?.block_on(agent.json("POST", &path))?;
    out(&format!("{}\n", v["Id"].as_str().unwrap_or("")));
    Ok(0)
}

#[derive(Args)]
pub struct ImportArgs {
    /// A Dockerfile instruction to apply (as commit's).
    #[arg(short = 'c', long = "change")]
    change: Vec<String>,
    /// The history entry's comment.
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// The tarball (plain, gzip or zstd), or - for stdin.
    file: String,
    /// REPOSITORY[:TAG] for the new image.
    reference: Option<String>,
}

/// `reg import`: a root filesystem tarball as a one-layer image; prints its id.
pub fn import(config: Option<&Path>, host: &Target, args: ImportArgs) -> anyhow::Result<u8> {
    let (agent, cfg) = agent_for_names(config, host)?;
    let mut path = "/images/create?fromSrc=-".to_string();
    if let Some(r) = &args.reference {
        path.push_str(&repo_tag_query(r, &cfg.node.default_registry)?);
    }
    if let Some(m) = &args.message {
        path.push_str(&format!("&message={}", query_value(m)));
    }
    for c in &args.change {
        path.push_str(&format!("&changes={}", query_value(c)));
    }
    let body = if args.file == "-" {
        reg_node::api::stdin_body()
    } else {
        let f = std::fs::File::open(&args.file).with_context(|| format!("open {}", args.file))?;
        reg_node::api::writer_body(move |w| {
            let mut f = f;
            std::io::copy(&mut f, w).map(|_| ())
        })
    };
    let mut answer = String::new();
    let status = rt()?.block_on(
        agent.request_streaming("POST", &path, &[], false, body, |l| {
            answer.push_str(l);
        }),
    )?;
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    if !(200..300).contains(&status) {
        bail!("{}", v["message"].as_str().unwrap_or(&answer));
    }
    out(&format!("{}\n", v["status"].as_str().unwrap_or("")));
    Ok(0)
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Remove images no container uses: dangling ones, or with -a every unused one.
    Prune(ImagePruneArgs),
}

#[derive(Args)]
pub struct ImagePruneArgs {
    /// Every image no container uses, not only dangling ones.
    #[arg(short = 'a', long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    force: bool,
    /// Filter values (e.g. label=KEY=VALUE).
    #[arg(long)]
    filter: Vec<String>,
}

pub fn image(config: Option<&Path>, host: &Target, cmd: ImageCommand) -> anyhow::Result<u8> {
    match cmd {
        ImageCommand::Prune(a) => image_prune(config, host, a, true),
    }
}

fn image_prune(
    config: Option<&Path>,
    host: &Target,
    args: ImagePruneArgs,
    ask: bool,
) -> anyhow::Result<u8> {
    let mut filter = args.filter.clone();
    if args.all {
        filter.push("dangling=false".into());
    }
    let path = format!("/images/prune{}", filters_query(&filter, '?')?);
    let warning = if args.all {
        "WARNING! This will remove all images without at least one container associated to them.\nAre you sure you want to continue?"
    } else {
        "WARNING! This will remove all dangling images.\nAre you sure you want to continue?"
    };
    if let Some(v) = prune(config, host, args.force || !ask, warning, &path)? {
        let lines: Vec<String> = v["ImagesDeleted"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                d["Untagged"]
                    .as_str()
                    .map(|u| format!("untagged: {u}"))
                    .or_else(|| d["Deleted"].as_str().map(|x| format!("deleted: {x}")))
            })
            .collect();
        prune_report(
            "Deleted Images:",
            &serde_json::json!(lines),
            Some(v["SpaceReclaimed"].as_f64().unwrap_or(0.0)),
        );
    }
    Ok(0)
}

#[derive(Subcommand)]
pub enum BuilderCommand {
    /// Empty the build cache (or keep its newest entries within --keep-storage).
    Prune(BuilderPruneArgs),
}

#[derive(Args)]
pub struct BuilderPruneArgs {
    /// Every entry (reg's cache has no other kind).
    #[arg(short = 'a', long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    force: bool,
    /// Keep the newest entries within this size (e.g. 1g).
    #[arg(long = "keep-storage")]
    keep_storage: Option<String>,
}

pub fn builder(config: Option<&Path>, host: &Target, cmd: BuilderCommand) -> anyhow::Result<u8> {
    match cmd {
        BuilderCommand::Prune(a) => builder_prune(config, host, a, true),
    }
}

fn builder_prune(
    config: Option<&Path>,
    host: &Target,
    args: BuilderPruneArgs,
    ask: bool,
) -> anyhow::Result<u8> {
    let _ = args.all;
    let mut path = "/build/prune".to_string();
    if let Some(k) = &args.keep_storage {
        path.push_str(&format!("?keep-storage={}", container::parse_size(k)?));
    }
    let warning =
        "WARNING! This will remove all dangling build cache.\nAre you sure you want to continue?";
    if let Some(v) = prune(config, host, args.force || !ask, warning, &path)? {
        prune_report(
            "Deleted build cache objects:",
            &v["CachesDeleted"],
            Some(v["SpaceReclaimed"].as_f64().unwrap_or(0.0)),
        );
    }
    Ok(0)
}

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Disk used by images, containers, volumes and the build cache.
    Df,
    /// Remove stopped containers, unused networks, dangling images and the build cache
    /// (and unused volumes with --volumes).
    Prune(SystemPruneArgs),
}

#[derive(Args)]
pub struct SystemPruneArgs {
    /// Every unused image, not only dangling ones.
    #[arg(short = 'a', long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    force: bool,
    /// Anonymous volumes no container uses too.
    #[arg(long)]
    volumes: bool,
}

pub fn system(config: Option<&Path>, host: &Target, cmd: SystemCommand) -> anyhow::Result<u8> {
    match cmd {
        SystemCommand::Df => system_df(config, host),
        SystemCommand::Prune(a) => {
            let mut warning = String::from("WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n");
            if a.volumes {
                warning.push_str("  - all anonymous volumes not used by at least one container\n");
            }
            warning.push_str(if a.all {
                "  - all images without at least one container associated to them\n"
            } else {
                "  - all dangling images\n"
            });
            warning.push_str("  - all build cache\n\nAre you sure you want to continue?");
            if !a.force && !confirm(&warning)? {
                return Ok(0);
            }
            container_prune(
                config,
                host,
                PruneArgs {
                    force: true,
                    filter: Vec::new(),
                },
            )?;
            let (agent, _) = agent(config, host)?;
            let rt = rt()?;
            let nets = rt.block_on(agent.json("POST", "/networks/prune"))?;
            network_prune_report(&nets);
            if a.volumes {
                let vols = rt.block_on(agent.json("POST", "/volumes/prune"))?;
                volume_prune_report(&vols);
            }
            image_prune(
                config,
                host,
                ImagePruneArgs {
                    all: a.all,
                    force: true,
                    filter: Vec::new(),
                },
                false,
            )?;
            builder_prune(
                config,
                host,
                BuilderPruneArgs {
                    all: true,
                    force: true,
                    keep_storage: None,
                },
                false,
            )
        }
    }
}

/// `reg system df`: docker's summary table.
fn system_df(config: Option<&Path>, host: &Target) -> anyhow::Result<u8> {
    let (agent, _) = agent(config, host)?;
    let v = rt()?.block_on(agent.json("GET", "/system/df"))?;
    let images = v["Images"].as_array().cloned().unwrap_or_default();
    let containers = v["Containers"].as_array().cloned().unwrap_or_default();
    let volumes = v["Volumes"].as_array().cloned().unwrap_or_default();
    let cache = v["BuildCache"].as_array().cloned().unwrap_or_default();
    let sum = |list: &[serde_json::Value], key: &str| -> f64 {
        list.iter()
            .filter_map(|i| i[key].as_f64())
            .filter(|s| *s > 0.0)
            .sum()
    };
    let active_images = images
        .iter()
        .filter(|i| i["Containers"].as_i64().unwrap_or(0) > 0)
        .count();
    let running = containers
        .iter()
        .filter(|c| c["State"].as_str() == Some("running"))
        .count();
    let used_volumes = volumes
        .iter()
        .filter(|v| v["UsageData"]["RefCount"].as_i64().unwrap_or(0) > 0)
        .count();
    let rows = [
        ("Images", images.len(), active_images, sum(&images, "Size")),
        (
            "Containers",
            containers.len(),
            running,
            sum(&containers, "SizeRw"),
        ),
        (
            "Local Volumes",
            volumes.len(),
            used_volumes,
            volumes
                .iter()
                .filter_map(|v| v["UsageData"]["Size"].as_f64())
                .filter(|s| *s > 0.0)
                .sum(),
        ),
        ("Build Cache", cache.len(), 0, sum(&cache, "Size")),
    ];
    let mut text = String::from("TYPE\tTOTAL\tACTIVE\tSIZE\n");
    for (name, total, active, size) in rows {
        text.push_str(&format!(
            "{name}\t{total}\t{active}\t{}\n",
            human_size(size)
        ));
    }
    let mut tw = tabwriter::TabWriter::new(Vec::new()).minwidth(7).padding(3);
    tw.write_all(text.as_bytes())?;
    out(&String::from_utf8_lossy(&tw.into_inner()?));
    Ok(0)
}
