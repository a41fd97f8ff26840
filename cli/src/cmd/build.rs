//! `reg build`: sends the context (filtered by `.dockerignore`, as docker does on the client)
//! and the Dockerfile to the node agent, shows the steps as they run, then `--push`es.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;
use reg_builder::context::{Entry, Kind};
use reg_builder::ignore::Ignore;
use reg_node::api::{encode_auth, RegistryAuth};
use reg_registry::{client, Reference};

use super::image::{agent_for_names, outcome, query_value, rt};
use super::Target;

#[derive(Args)]
pub struct BuildArgs {
    /// Name and tag of the image (repeatable), e.g. 127.0.0.1:5000/team/app:1.0
    #[arg(short = 't', long = "tag")]
    pub(crate) tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile)
    #[arg(short = 'f', long = "file")]
    pub(crate) file: Option<PathBuf>,
    /// A build argument: KEY=VALUE, or KEY to take it from the environment
    #[arg(long = "build-arg")]
    pub(crate) build_args: Vec<String>,
    /// The stage to build (default: the last)
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// Run every step again, ignoring the cache
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Push each tag to its registry after the build
    #[arg(long)]
    pub(crate) push: bool,
    /// Layer compression: gzip or zstd
    #[arg(long, default_value = "gzip")]
    pub(crate) compression: String,
    /// Print only the image id
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// The build context directory
    pub(crate) context: PathBuf,
}

/// What the agent compares with its copy: every path of the context not excluded by `ignore`,
/// in name order (a directory before what it holds), with its kind, mode, size and mtime — one
/// `lstat` per path. Sockets and devices are left out.
fn context_manifest(root: &Path, ignore: &Ignore) -> anyhow::Result<Vec<Entry>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        let mut subdirs = Vec::new();
        for n in names {
            let path = if rel.is_empty() {
                n
            } else {
                format!("{rel}/{n}")
            };
            if path == ".reg-build" {
                continue;
            }
            let host = root.join(&path);
            let m =
                std::fs::symlink_metadata(&host).with_context(|| format!("{}", host.display()))?;
            let ft = m.file_type();
            if ignore.excluded(&path) {
                // A directory may still hold a re-included file.
                if ft.is_dir() && ignore.has_exceptions() {
                    subdirs.push(path);
                }
                continue;
            }
            let (kind, link) = if ft.is_dir() {
                subdirs.push(path.clone());
                (Kind::Dir, None)
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&host)?;
                (Kind::Symlink, Some(target.to_string_lossy().into_owned()))
            } else if ft.is_file() {
                (Kind::File, None)
            } else {
                continue;
            };
            out.push(Entry {
                path,
                kind,
                mode: m.mode() & 0o7777,
                size: if ft.is_file() { m.len() } else { 0 },
                mtime: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                link,
            });
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

pub fn build(config: Option<&Path>, host: &Target, args: BuildArgs) -> anyhow::Result<()> {
    let (agent, cfg) = agent_for_names(config, host)?;
    // The build and its context sync are reg's extensions of the Engine API.
    let agent = agent.own();
    let ctx = args.context.clone();
    if !ctx.is_dir() {
        bail!(
            "build context {} is not a directory: give the directory your COPY paths are relative to",
            ctx.display()
        );
    }
    let dockerfile = args.file.clone().unwrap_or_else(|| ctx.join("Dockerfile"));
    let text = std::fs::read_to_string(&dockerfile).with_context(|| {
        format!(
            "reading the Dockerfile {}: give its path with -f",
            dockerfile.display()
        )
    })?;
    // Fail on a syntax error before sending anything.
    let name = dockerfile
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    reg_builder::dockerfile::parse(&name, &text)?;
    // `<Dockerfile>.dockerignore` beside it wins over the context's `.dockerignore`.
    let specific = PathBuf::from(format!("{}.dockerignore", dockerfile.display()));
    let ignore_text = std::fs::read_to_string(&specific)
        .or_else(|_| std::fs::read_to_string(ctx.join(".dockerignore")))
        .unwrap_or_default();
    let ignore = Ignore::parse(&ignore_text)?;
    let manifest = context_manifest(&ctx, &ignore)?;
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    let mut tags = Vec::new();
    for t in &args.tags {
        tags.push(Reference::parse(t, &cfg.node.default_registry)?);
    }
    // Credentials for base images: those of the first tag's registry, or the default one.
    let registry = tags
        .first()
        .map(|r| r.registry.clone())
        .unwrap_or_else(|| cfg.node.default_registry.clone());
    let mut headers = Vec::new();
    if let Some((username, password)) = client::lookup(&registry)? {
        headers.push((
            "x-registry-auth",
            encode_auth(&RegistryAuth { username, password }),
        ));
    }
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .parse::<u64>()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v}: expected seconds since 1970"))?,
        Err(_) => 0,
    };
    let path = format!(
        "/build?t={}&dockerfile={}&buildargs={}&target={}&nocache={}&compression={}&epoch={epoch}&registry={}",
        query_value(
            &tags
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        query_value(&name),
        query_value(&serde_json::to_string(&build_args)?),
        query_value(args.target.as_deref().unwrap_or("")),
        args.no_cache,
        query_value(&args.compression),
        query_value(&cfg.node.default_registry),
    );
    // The agent keeps a copy of this context between builds: send the manifest, then only the
    // files it lacks (a warm rebuild moves no file bytes).
    let canonical = std::fs::canonicalize(&ctx).unwrap_or_else(|_| ctx.clone());
    let context_id = reg_registry::Digest::sha256_of(
        format!(
            "{}\n{}\n{}",
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            nix::unistd::getuid(),
            canonical.display()
        )
        .as_bytes(),
    )
    .hex()[..32]
        .to_string();
    let rt = rt()?;
    let answer = rt.block_on(agent.json_body(
        "POST",
        &format!("/build/sync?context={context_id}"),
        &serde_json::to_value(&manifest)?,
    ))?;
    let need: Vec<String> = serde_json::from_value(answer["need"].clone())
        .context("the agent's answer to /build/sync")?;
    let path = format!("{path}&context={context_id}");
    let root = ctx.clone();
    let manifest_json = serde_json::to_vec(&manifest)?;
    let body = reg_node::api::writer_body(move |w| {
        let w = std::io::BufWriter::with_capacity(256 * 1024, w);
        let mut tar = tar::Builder::new(w);
        tar.follow_symlinks(false);
        for (name, data) in [
            (reg_builder::context::DOCKERFILE_ENTRY, text.as_bytes()),
            (reg_builder::context::MANIFEST_ENTRY, &manifest_json[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, name, data)?;
        }
        for rel in need {
            tar.append_path_with_name(root.join(&rel), &rel)?;
        }
        tar.into_inner()?.flush()
    });
    let quiet = args.quiet;
    let mut result: Option<Result<serde_json::Value, String>> = None;
    let status =
        rt.block_on(
            agent.request_streaming("POST", &path, &headers, false, body, |line| {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    return;
                };
                if let Some(o) = outcome(&v, "image") {
                    result = Some(o);
                    return;
                }
                if quiet {
                    return;
                }
                match v["event"].as_str() {
                    Some("step") => println!(
                        "[{} {}/{}] {}",
                        v["stage"].as_str().unwrap_or(""),
                        v["n"],
                        v["total"],
                        v["text"].as_str().unwrap_or("")
                    ),
                    Some("cached") => println!(" ---> CACHED"),
                    Some("done") => println!(
                        " ---> done in {:.2}s",
                        v["ms"].as_u64().unwrap_or(0) as f64 / 1000.0
                    ),
                    Some("output") => println!("{}", v["line"].as_str().unwrap_or("")),
                    Some("note") => println!(" ---> {}", v["message"].as_str().unwrap_or("")),
                    _ => {}
                }
                let _ = std::io::stdout().flush();
            }),
        )?;
    let img = match result {
        Some(Ok(v)) => v["image"].clone(),
        Some(Err(e)) => bail!("{e}"),
        None => bail!("the build ended without a result (HTTP {status}): see the agent's log"),
    };
    let id = img["id"].as_str().unwrap_or("");
    if quiet {
        println!("{id}");
    } else {
        println!(
            "Successfully built {}",
            id.trim_start_matches("sha256:").get(..12).unwrap_or(id)
        );
        for t in &tags {
            println!("Successfully tagged {t}");
        }
    }
    if args.push {
        if tags.is_empty() {
            bail!("--push needs a -t NAME:TAG to push to");
        }
        for t in &tags {
            super::image::push(
                config,
                host,
                super::image::PushArgs {
                    image: t.to_string(),
                },
            )?;
        }
    }
    Ok(())
}
