//! From files to a [`Project`]: found (`-f`, `COMPOSE_FILE`, or the default names), each parsed,
//! extension keys (`x-…`) dropped, strings interpolated from the environment and `.env`, the
//! files merged in order, then read into the model. A key the model does not know is an error
//! naming its file, line and path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};

use crate::interpolate::{interpolate, InterpolateError};
use crate::model::{ComposeFile, Service};

/// The file names looked for when none is given, in order.
pub const DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// A compose file, or project, that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("no compose file in {0} ({names}): give one with -f", names = DEFAULT_FILES.join(", "))]
    NoFile(PathBuf),
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: {at}: {source}")]
    Interpolate {
        path: PathBuf,
        at: String,
        source: InterpolateError,
    },
    #[error("{}: {at}: {message}", where_(file, *line))]
    Invalid {
        file: PathBuf,
        line: Option<usize>,
        at: String,
        message: String,
    },
    #[error("{path}: `{key}` is not supported by reg compose yet")]
    Unsupported { path: PathBuf, key: String },
    #[error("project name {0:?}: use lowercase letters, digits, - and _, starting with a letter or digit")]
    ProjectName(String),
    #[error("service {service} depends on {missing}, which is not in the project")]
    MissingDependency { service: String, missing: String },
    #[error("services depend on each other in a cycle: {0}")]
    Cycle(String),
    #[error("no such service: {0}")]
    NoService(String),
    #[error("service {0} has neither image nor build")]
    NoImage(String),
}

fn where_(file: &Path, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}:{l}", file.display()),
        None => file.display().to_string(),
    }
}

/// What `-f`, `-p`, `--env-file`, `--profile` and the environment say.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub files: Vec<PathBuf>,
    pub project_name: Option<String>,
    /// Where relative files and `.env` are found (default: the first file's directory).
    pub project_dir: Option<PathBuf>,
    pub env_file: Option<PathBuf>,
    pub profiles: Vec<String>,
    /// The process environment (it wins over `.env`).
    pub environ: BTreeMap<String, String>,
    /// The working directory (where files are looked for when none is given).
    pub cwd: PathBuf,
}

/// A loaded project: its name, directory, files and model (services of inactive profiles left
/// out), and the environment it was interpolated with.
#[derive(Debug, Clone)]
pub struct Project {
    pub name: String,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub model: ComposeFile,
    pub env: BTreeMap<String, String>,
}

/// `.env`'s `KEY=VALUE` lines (`#` comments, `export `, quotes stripped).
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            v[1..v.len() - 1].to_string()
        } else {
            // An unquoted value ends at ` #`.
            v.split(" #").next().unwrap_or("").trim().to_string()
        };
        out.insert(k.trim().to_string(), v);
    }
    out
}

fn read(path: &Path) -> Result<String, ComposeError> {
    std::fs::read_to_string(path).map_err(|source| ComposeError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A project name as compose normalises it (lowercase, other characters dropped).
fn normalise_name(raw: &str) -> Result<String, ComposeError> {
    let name: String = raw
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_')
        .collect();
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(ComposeError::ProjectName(raw.to_string()));
    }
    Ok(name)
}

pub fn load(opts: &LoadOptions) -> Result<Project, ComposeError> {
    let dir_env = opts.project_dir.clone().unwrap_or_else(|| opts.cwd.clone());
    // `.env` (or --env-file) first: it may name COMPOSE_FILE and the rest.
    let dotenv_path = opts
        .env_file
        .clone()
        .unwrap_or_else(|| dir_env.join(".env"));
    let mut env = match std::fs::read_to_string(&dotenv_path) {
        Ok(text) => parse_env_file(&text),
        Err(_) if opts.env_file.is_none() => BTreeMap::new(),
        Err(source) => {
            return Err(ComposeError::Read {
                path: dotenv_path,
                source,
            })
        }
    };
    env.extend(opts.environ.clone());
    let files: Vec<PathBuf> = if !opts.files.is_empty() {
        opts.files.iter().map(|f| opts.cwd.join(f)).collect()
    } else if let Some(list) = env.get("COMPOSE_FILE").filter(|l| !l.is_empty()) {
        let sep = env
            .get("COMPOSE_PATH_SEPARATOR")
            .and_then(|s| s.chars().next())
            .unwrap_or(':');
        list.split(sep).map(|f| opts.cwd.join(f)).collect()
    } else {
        let found = DEFAULT_FILES
            .iter()
            .map(|n| opts.cwd.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| ComposeError::NoFile(opts.cwd.clone()))?;
        vec![found]
    };
    let dir = opts.project_dir.clone().unwrap_or_else(|| {
        files[0]
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| opts.cwd.clone())
    });
    let lookup = |name: &str| env.get(name).cloned();
    let mut merged = Value::Mapping(Mapping::new());
    let mut texts = Vec::new();
    for path in &files {
        let text = read(path)?;
        let mut v: Value = serde_norway::from_str(&text).map_err(|e| ComposeError::Yaml {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if v.is_null() {
            v = Value::Mapping(Mapping::new());
        }
        drop_extensions(&mut v);
        interpolate_value(&mut v, &lookup, &mut Vec::new()).map_err(|(at, source)| {
            ComposeError::Interpolate {
                path: path.clone(),
                at,
                source,
            }
        })?;
        resolve_includes(&mut v, path, &lookup, 0)?;
        resolve_extends(&mut v, path, &lookup)?;
        normalise_for_merge(&mut v);
        merge(&mut merged, v, &mut Vec::new());
        texts.push((path.clone(), text));
    }
    let model: ComposeFile = serde_path_to_error::deserialize(merged).map_err(|e| {
        let keys: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        // The last file that has this path is the one that set it.
        let (file, line) = texts
            .iter()
            .rev()
            .find_map(|(p, t)| locate(t, &keys).map(|l| (p.clone(), Some(l))))
            .unwrap_or_else(|| (files[files.len() - 1].clone(), None));
        ComposeError::Invalid {
            file,
            line,
            at: e.path().to_string(),
            message: e.into_inner().to_string(),
        }
    })?;
    let raw_name = opts
        .project_name
        .clone()
        .or_else(|| {
            env.get("COMPOSE_PROJECT_NAME")
                .cloned()
                .filter(|n| !n.is_empty())
        })
        .or_else(|| model.name.clone())
        .unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    let name = normalise_name(&raw_name)?;
    let mut profiles: BTreeSet<String> = opts.profiles.iter().cloned().collect();
    if let Some(p) = env.get("COMPOSE_PROFILES") {
        profiles.extend(
            p.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        );
    }
    let mut model = model;
    model.services.retain(|_, s| {
        s.profiles.is_empty() || s.profiles.iter().any(|p| profiles.contains(p) || p == "*")
    });
    let project = Project {
        name,
        dir,
        files,
        model,
        env,
    };
    project.check()?;
    Ok(project)
}

/// How deep `include` may nest.
const MAX_INCLUDE: usize = 8;

/// `include`: each listed file (relative to `file`) read as a file of its own — extensions
/// dropped, interpolated, its own includes and extends applied, its relative paths made
/// absolute from its directory — and its services, networks, volumes, secrets and configs added
/// to `doc`'s; one that `doc` (or another include) defines too is an error, as in compose.
fn resolve_includes(
    doc: &mut Value,
    file: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<(), ComposeError> {
    let Some(list) = doc.as_mapping_mut().and_then(|m| m.remove("include")) else {
        return Ok(());
    };
    let invalid = |message: String| ComposeError::Invalid {
        file: file.to_path_buf(),
        line: None,
        at: "include".into(),
        message,
    };
    if depth >= MAX_INCLUDE {
        return Err(invalid(format!(
            "includes nested more than {MAX_INCLUDE} deep"
        )));
    }
    let Value::Sequence(entries) = list else {
        return Err(invalid("include: a list of files".into()));
    };
    let mut paths = Vec::new();
    for e in entries {
        match e {
            Value::String(p) => paths.push(p),
            Value::Mapping(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        (Some("path"), Value::String(p)) => paths.push(p),
                        (Some("path"), Value::Sequence(ps)) => paths.extend(
                            ps.into_iter()
                                .filter_map(|p| p.as_str().map(str::to_string)),
                        ),
                        (key, _) => {
                            return Err(ComposeError::Unsupported {
                                path: file.to_path_buf(),
                                key: format!("include.{}", key.unwrap_or("?")),
                            })
                        }
                    }
                }
            }
            _ => return Err(invalid("include: a file, or {path}".into())),
        }
    }
    let base = file.parent().unwrap_or(Path::new("."));
    for p in paths {
        let other = base.join(&p);
        let text = read(&other)?;
        let mut odoc: Value = serde_norway::from_str(&text).map_err(|e| ComposeError::Yaml {
            path: other.clone(),
            message: e.to_string(),
        })?;
        if odoc.is_null() {
            continue;
        }
        drop_extensions(&mut odoc);
        interpolate_value(&mut odoc, lookup, &mut Vec::new()).map_err(|(at, source)| {
            ComposeError::Interpolate {
                path: other.clone(),
                at,
                source,
            }
        })?;
        resolve_includes(&mut odoc, &other, lookup, depth + 1)?;
        resolve_extends(&mut odoc, &other, lookup)?;
        absolutize(&mut odoc, other.parent().unwrap_or(Path::new(".")));
        for section in ["services", "networks", "volumes", "secrets", "configs"] {
            let Some(Value::Mapping(theirs)) = odoc.get(section).cloned() else {
                continue;
            };
            let Some(top) = doc.as_mapping_mut() else {
                return Err(invalid("the file is not a mapping".into()));
            };
            let ours = top
                .entry(Value::String(section.into()))
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            let Value::Mapping(ours) = ours else {
                return Err(invalid(format!("{section} is not a mapping")));
            };
            for (k, v) in theirs {
                if ours.contains_key(&k) {
                    return Err(invalid(format!(
                        "{} defines {section} {}, which is defined already",
                        other.display(),
                        k.as_str().unwrap_or("?")
                    )));
                }
                ours.insert(k, v);
            }
        }
    }
    Ok(())
}

/// The relative paths of an included file (build contexts, bind mounts, env files, secret and
/// config files) made absolute from its directory `dir`.
fn absolutize(doc: &mut Value, dir: &Path) {
    let abs = |s: &str| -> String {
        if Path::new(s).is_absolute() || s.starts_with('~') {
            s.to_string()
        } else {
            let rel: PathBuf = Path::new(s)
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            dir.join(rel).display().to_string()
        }
    };
    let fix = |v: &mut Value| {
        if let Value::String(s) = v {
            *s = abs(s);
        }
    };
    if let Some(Value::Mapping(services)) = doc.get_mut("services") {
        for (_, s) in services.iter_mut() {
            match s.get_mut("build") {
                Some(b @ Value::String(_)) => fix(b),
                Some(Value::Mapping(b)) => {
                    if let Some(c) = b.get_mut("context") {
                        fix(c);
                    }
                }
                _ => {}
            }
            match s.get_mut("env_file") {
                Some(f @ Value::String(_)) => fix(f),
                Some(Value::Sequence(fs)) => fs.iter_mut().for_each(fix),
                _ => {}
            }
            if let Some(Value::Sequence(vols)) = s.get_mut("volumes") {
                for v in vols.iter_mut() {
                    match v {
                        Value::String(short) if short.starts_with('.') => {
                            if let Some((src, rest)) = short.split_once(':') {
                                *short = format!("{}:{rest}", abs(src));
                            }
                        }
                        Value::Mapping(m) => {
                            let bind = m.get("type").and_then(Value::as_str) == Some("bind");
                            if let (true, Some(src)) = (bind, m.get_mut("source")) {
                                fix(src);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for section in ["secrets", "configs"] {
        if let Some(Value::Mapping(m)) = doc.get_mut(section) {
            for (_, o) in m.iter_mut() {
                if let Some(f) = o.get_mut("file") {
                    fix(f);
                }
            }
        }
    }
}

/// How deep `extends` may chain.
const MAX_EXTENDS: usize = 16;

/// Every service of `doc` (from `file`) with its `extends` applied.
fn resolve_extends(
    doc: &mut Value,
    file: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ComposeError> {
    let names: Vec<String> = match doc.get("services") {
        Some(Value::Mapping(m)) => m
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        _ => return Ok(()),
    };
    for name in names {
        let resolved = extended(doc, file, &name, lookup, &mut Vec::new())?;
        if let Some(Value::Mapping(m)) = doc.get_mut("services") {
            m.insert(Value::String(name), resolved);
        }
    }
    Ok(())
}

/// Service `name` of `doc` with its `extends` applied: the base service (of this file, or of
/// `file:` relative to this one; its own `extends` first), then this one merged over it as an
/// override file is.
fn extended(
    doc: &Value,
    file: &Path,
    name: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    stack: &mut Vec<(PathBuf, String)>,
) -> Result<Value, ComposeError> {
    let invalid = |message: String| ComposeError::Invalid {
        file: file.to_path_buf(),
        line: None,
        at: format!("services.{name}.extends"),
        message,
    };
    if stack.len() >= MAX_EXTENDS || stack.iter().any(|(f, s)| f == file && s == name) {
        let chain: Vec<String> = stack.iter().map(|(_, s)| s.clone()).collect();
        return Err(ComposeError::Cycle(format!(
            "extends: {} -> {name}",
            chain.join(" -> ")
        )));
    }
    let svc = doc
        .get("services")
        .and_then(|s| s.get(name))
        .cloned()
        .ok_or_else(|| invalid(format!("there is no service {name} to extend")))?;
    let Some(ext) = svc.get("extends").cloned() else {
        return Ok(svc);
    };
    let (base_file, base_name) = match &ext {
        Value::String(s) => (None, s.clone()),
        Value::Mapping(_) => (
            ext.get("file").and_then(Value::as_str).map(str::to_string),
            ext.get("service")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| invalid("extends needs a service".into()))?,
        ),
        _ => {
            return Err(invalid(
                "extends: a service's name, or {service, file}".into(),
            ))
        }
    };
    stack.push((file.to_path_buf(), name.to_string()));
    let base = match base_file {
        None => extended(doc, file, &base_name, lookup, stack)?,
        Some(f) => {
            let other = file.parent().unwrap_or(Path::new(".")).join(f);
            let text = read(&other)?;
            let mut odoc: Value =
                serde_norway::from_str(&text).map_err(|e| ComposeError::Yaml {
                    path: other.clone(),
                    message: e.to_string(),
                })?;
            drop_extensions(&mut odoc);
            interpolate_value(&mut odoc, lookup, &mut Vec::new()).map_err(|(at, source)| {
                ComposeError::Interpolate {
                    path: other.clone(),
                    at,
                    source,
                }
            })?;
            extended(&odoc, &other, &base_name, lookup, stack)?
        }
    };
    stack.pop();
    let mut this = svc;
    if let Value::Mapping(m) = &mut this {
        m.remove("extends");
    }
    let wrap = |service: Value| {
        let mut services = Mapping::new();
        services.insert(Value::String(name.to_string()), service);
        let mut top = Mapping::new();
        top.insert(Value::String("services".into()), Value::Mapping(services));
        Value::Mapping(top)
    };
    let (mut merged, mut over) = (wrap(base), wrap(this));
    normalise_for_merge(&mut merged);
    normalise_for_merge(&mut over);
    merge(&mut merged, over, &mut Vec::new());
    Ok(merged
        .get("services")
        .and_then(|s| s.get(name))
        .cloned()
        .unwrap_or(Value::Null))
}

/// `x-…` keys anywhere are the file's own (extensions): not part of the model.
fn drop_extensions(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            m.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with("x-")));
            for (_, v) in m.iter_mut() {
                drop_extensions(v);
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(drop_extensions),
        _ => {}
    }
}

/// Every string value interpolated (keys are not). The error says where.
fn interpolate_value(
    v: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    at: &mut Vec<String>,
) -> Result<(), (String, InterpolateError)> {
    match v {
        Value::String(s) => {
            *s = interpolate(s, lookup).map_err(|e| (at.join("."), e))?;
        }
        Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                at.push(k.as_str().unwrap_or("?").to_string());
                interpolate_value(v, lookup, at)?;
                at.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                at.push(i.to_string());
                interpolate_value(v, lookup, at)?;
                at.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// The list forms that merge as mappings (environment, labels, build args, depends_on,
/// networks of a service) turned into mappings first.
fn normalise_for_merge(v: &mut Value) {
    let Some(Value::Mapping(services)) = v.get_mut("services") else {
        return;
    };
    for (_, s) in services.iter_mut() {
        let Value::Mapping(s) = s else { continue };
        for key in ["environment", "labels"] {
            if let Some(list @ Value::Sequence(_)) = s.get_mut(key) {
                *list = list_to_map(list, true);
            }
        }
        for key in ["depends_on", "networks"] {
            if let Some(list @ Value::Sequence(_)) = s.get_mut(key) {
                *list = list_to_map(list, false);
            }
        }
        if let Some(Value::Mapping(b)) = s.get_mut("build") {
            if let Some(list @ Value::Sequence(_)) = b.get_mut("args") {
                *list = list_to_map(list, true);
            }
        }
    }
}

/// `[K=V, K]` as `{K: V, K: null}`; without `pairs`, `[a, b]` as `{a: null, b: null}`.
fn list_to_map(list: &Value, pairs: bool) -> Value {
    let mut m = Mapping::new();
    if let Value::Sequence(items) = list {
        for i in items {
            let s = match i {
                Value::String(s) => s.clone(),
                other => match serde_norway::to_string(other) {
                    Ok(s) => s.trim().to_string(),
                    Err(_) => continue,
                },
            };
            match s.split_once('=').filter(|_| pairs) {
                Some((k, v)) => m.insert(Value::String(k.into()), Value::String(v.into())),
                None => m.insert(Value::String(s), Value::Null),
            };
        }
    }
    Value::Mapping(m)
}

/// The specification's merge of a later file over an earlier one: mappings merge key by key;
/// a service's `ports`, `expose`, `dns`, `cap_add`, `cap_drop`, `tmpfs`, `env_file`,
/// `profiles`, `extra_hosts`, `secrets`, `configs` and `volumes` append (volumes replace one
/// with the same target later, when read); anything else is replaced.
fn merge(base: &mut Value, over: Value, at: &mut Vec<String>) {
    const APPENDED: [&str; 12] = [
        "ports",
        "expose",
        "dns",
        "cap_add",
        "cap_drop",
        "tmpfs",
        "env_file",
        "profiles",
        "extra_hosts",
        "secrets",
        "configs",
        "volumes",
    ];
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                let key = k.as_str().unwrap_or("").to_string();
                match b.get_mut(&k) {
                    Some(existing) => {
                        at.push(key);
                        merge(existing, v, at);
                        at.pop();
                    }
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Sequence(b), Value::Sequence(o))
            if at.len() == 3 && at[0] == "services" && APPENDED.contains(&at[2].as_str()) =>
        {
            b.extend(o);
        }
        (b, o) => *b = o,
    }
}

/// The 1-based line of the key at `path` in a block-style YAML `text` (`None` when it cannot
/// be found there, e.g. in flow style).
pub fn locate(text: &str, path: &[String]) -> Option<usize> {
    if path.is_empty() {
        return None;
    }
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut content = trimmed;
        // A list item's mapping starts on the dash's line.
        while let Some(rest) = content.strip_prefix("- ") {
            indent += 2;
            content = rest.trim_start();
        }
        let Some(colon) = content.find(':') else {
            continue;
        };
        if !content[colon + 1..].is_empty() && !content[colon + 1..].starts_with([' ', '\t']) {
            continue;
        }
        let key = content[..colon]
            .trim()
            .trim_matches(['"', '\''])
            .to_string();
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        if stack.len() == path.len() && stack.iter().map(|(_, k)| k).eq(path.iter()) {
            return Some(n + 1);
        }
    }
    None
}

impl Project {
    /// Dependencies exist (or are not required) and form no cycle; each service has an image
    /// or a build.
    fn check(&self) -> Result<(), ComposeError> {
        for (name, s) in &self.model.services {
            if s.image.is_none() && s.build.is_none() {
                return Err(ComposeError::NoImage(name.clone()));
            }
            for (dep, d) in &s.depends_on {
                if d.required && !self.model.services.contains_key(dep) {
                    return Err(ComposeError::MissingDependency {
                        service: name.clone(),
                        missing: dep.clone(),
                    });
                }
            }
        }
        let all: Vec<String> = self.model.services.keys().cloned().collect();
        self.in_order(&all)?;
        Ok(())
    }

    pub fn service(&self, name: &str) -> Result<&Service, ComposeError> {
        self.model
            .services
            .get(name)
            .ok_or_else(|| ComposeError::NoService(name.to_string()))
    }

    /// `wanted` and what they depend on, dependencies first (names sorted among equals).
    pub fn in_order(&self, wanted: &[String]) -> Result<Vec<String>, ComposeError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for w in wanted {
            self.service(w)?;
            self.visit(w, &mut done, &mut Vec::new(), &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<(), ComposeError> {
        if done.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            path.push(name.to_string());
            return Err(ComposeError::Cycle(path.join(" -> ")));
        }
        path.push(name.to_string());
        if let Some(s) = self.model.services.get(name) {
            for dep in s.depends_on.keys() {
                if self.model.services.contains_key(dep) {
                    self.visit(dep, done, path, order)?;
                }
            }
        }
        path.pop();
        done.insert(name.to_string());
        order.push(name.to_string());
        Ok(())
    }

    /// A digest of what a service's containers are made from (docker's
    /// `com.docker.compose.config-hash`): `up` recreates them when it changes.
    pub fn config_hash(&self, name: &str) -> Result<String, ComposeError> {
        use sha2::Digest;
        let s = self.service(name)?;
        let mut s = s.clone();
        // How many there are is not what each is made of.
        s.scale = None;
        if let Some(d) = s.deploy.as_mut() {
            d.replicas = None;
        }
        let json = serde_json::to_vec(&s).unwrap_or_default();
        Ok(hex::encode(sha2::Sha256::digest(json)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)], env: &[(&str, &str)]) -> Result<Project, ComposeError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("My_App");
        std::fs::create_dir(&d).expect("dir");
        for (name, text) in files {
            std::fs::write(d.join(name), text).expect("write");
        }
        let opts = LoadOptions {
            files: files
                .iter()
                .filter(|(n, _)| n.ends_with(".yml") || n.ends_with(".yaml"))
                .map(|(n, _)| PathBuf::from(n))
                .collect(),
            environ: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: d.clone(),
            ..LoadOptions::default()
        };
        let p = load(&opts);
        drop(dir);
        p
    }

    #[test]
    fn files_interpolate_merge_and_read_into_the_model() {
        let base = "\
services:
  web:
    image: \"busybox:${TAG:-1}\"
    ports: [\"${PORT}:80\"]
    environment: [A=1, B]
    x-note: ignored
    depends_on: [db]
  db:
    image: busybox
    healthcheck:
      test: pg_isready
x-anchors: {}
";
        let over = "\
services:
  web:
    ports: [\"9090:90\"]
    environment:
      A: \"2\"
    deploy:
      replicas: ${N}
";
        let p = project(
            &[
                ("compose.yaml", base),
                ("override.yml", over),
                (".env", "PORT=8080\nN=3\n"),
            ],
            &[("TAG", "2")],
        )
        .expect("project");
        assert_eq!(p.name, "my_app");
        let web = &p.model.services["web"];
        assert_eq!(web.image.as_deref(), Some("busybox:2"));
        assert_eq!(
            web.ports
                .iter()
                .map(|p| (p.published, p.target))
                .collect::<Vec<_>>(),
            [(Some(8080), 80), (Some(9090), 90)]
        );
        assert_eq!(web.environment["A"].as_deref(), Some("2"));
        assert_eq!(web.environment["B"], None);
        assert_eq!(web.replicas(), 3);
        assert_eq!(
            p.model.services["db"]
                .healthcheck
                .as_ref()
                .and_then(|h| h.test.clone()),
            Some(vec!["CMD-SHELL".to_string(), "pg_isready".to_string()])
        );
        assert_eq!(p.in_order(&["web".into()]).expect("order"), ["db", "web"]);
        assert_ne!(
            p.config_hash("web").expect("hash"),
            p.config_hash("db").expect("hash")
        );
    }

    #[test]
    fn what_cannot_be_used_says_where() {
        // The error of a project of one compose.yaml, which must contain every part of `says`.
        let refused = |text: &str, says: &[&str]| {
            let s = project(&[("compose.yaml", text)], &[])
                .expect_err(text)
                .to_string();
            assert!(says.iter().all(|part| s.contains(part)), "{s}");
        };
        refused(
            "services:\n  web:\n    image: busybox\n    volumes_from_typo: [x]\n",
            &["compose.yaml:4", "volumes_from_typo"],
        );
        refused(
            "services:\n  web:\n    image: busybox\n    deploy:\n      placement: {}\n",
            &["compose.yaml:5", "placement"],
        );
        refused(
            "services:\n  web:\n    image: \"${IMG:?set IMG}\"\n",
            &["set IMG", "services.web.image"],
        );
        refused(
            "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n",
            &["cycle"],
        );
        refused("services:\n  a:\n    extends: b\n", &["no service b"]);
        refused(
            "services:\n  a: {extends: b}\n  b: {extends: a}\n",
            &["cycle"],
        );
        let e = project(&[("notes.txt", "")], &[]).expect_err("no file");
        assert!(matches!(e, ComposeError::NoFile(_)));
    }

    #[test]
    fn extends_takes_the_base_service_then_merges_over_it() {
        let base = "services:\n  common:\n    image: busybox\n    environment: [A=1, B=2]\n    ports: [\"80\"]\n";
        let main = "\
services:
  local:
    extends: {file: base.yml, service: common}
    environment:
      B: \"3\"
  twice:
    extends: local
    command: [echo, hi]
";
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("compose.yaml"), main).expect("write");
        std::fs::write(dir.path().join("base.yml"), base).expect("write");
        let p = load(&LoadOptions {
            cwd: dir.path().to_path_buf(),
            ..LoadOptions::default()
        })
        .expect("project");
        let local = &p.model.services["local"];
        assert_eq!(local.image.as_deref(), Some("busybox"));
        assert_eq!(local.environment["A"].as_deref(), Some("1"));
        assert_eq!(local.environment["B"].as_deref(), Some("3"));
        assert_eq!(local.ports.len(), 1);
        let twice = &p.model.services["twice"];
        assert_eq!(twice.environment["B"].as_deref(), Some("3"));
        assert_eq!(
            twice.command.as_deref(),
            Some(&["echo".to_string(), "hi".to_string()][..])
        );
    }

    #[test]
    fn include_adds_another_files_resources_with_its_paths_from_its_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("db")).expect("dir");
        std::fs::write(
            dir.path().join("compose.yaml"),
            "include:\n  - db/compose.yaml\nservices:\n  web: {image: x, depends_on: [db]}\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("db/compose.yaml"),
            "services:\n  db:\n    image: y\n    volumes: [\"./data:/data\"]\n",
        )
        .expect("write");
        let p = load(&LoadOptions {
            cwd: dir.path().to_path_buf(),
            ..LoadOptions::default()
        })
        .expect("project");
        let db = &p.model.services["db"];
        assert_eq!(
            db.volumes[0].source.as_deref(),
            Some(dir.path().join("db/data").to_str().expect("utf-8"))
        );
        std::fs::write(
            dir.path().join("compose.yaml"),
            "include: [db/compose.yaml]\nservices:\n  db: {image: z}\n",
        )
        .expect("write");
        let e = load(&LoadOptions {
            cwd: dir.path().to_path_buf(),
            ..LoadOptions::default()
        })
        .expect_err("a conflict");
        assert!(e.to_string().contains("defined already"), "{e}");
    }

    #[test]
    fn profiles_leave_services_out_unless_enabled() {
        let f = "services:\n  app: {image: x}\n  debug: {image: x, profiles: [dev]}\n";
        let p = project(&[("compose.yaml", f)], &[]).expect("project");
        assert_eq!(p.model.services.keys().collect::<Vec<_>>(), ["app"]);
        let p = project(&[("compose.yaml", f)], &[("COMPOSE_PROFILES", "dev")]).expect("project");
        assert_eq!(p.model.services.len(), 2);
    }
}
