//! Permissive readers of the model's fields: scalars of either kind (interpolation yields
//! strings), and compose's short syntaxes (ports, volumes, lists for maps) into the long form.

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, Error};
use serde::{Deserialize, Deserializer};
use serde_norway::Value;

use crate::model::{
    Build, Condition, Dependency, FileRef, Mount, Port, ServiceNetwork, Ulimit, VolumeOptions,
};

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn want<E: Error>(what: &str, v: &Value) -> E {
    E::custom(format!("expected {what}, found {}", kind(v)))
}

fn from_value<T: DeserializeOwned, E: Error>(v: Value) -> Result<T, E> {
    serde_norway::from_value(v).map_err(E::custom)
}

pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Value::deserialize(d)?;
    scalar(&v).ok_or_else(|| want("a string", &v))
}

pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => scalar(&v).map(Some).ok_or_else(|| want("a string", &v)),
    }
}

fn number<E: Error>(v: &Value) -> Result<u64, E> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| E::custom(format!("{n} is not a whole number ≥ 0"))),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| E::custom(format!("{s:?} is not a whole number ≥ 0"))),
        other => Err(want("a number", other)),
    }
}

pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => number(&v).map(Some),
    }
}

fn port_number<E: Error>(v: &Value) -> Result<u16, E> {
    let n = number::<E>(v)?;
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| E::custom(format!("port {n} is not between 1 and 65535")))
}

pub fn u16_value<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    port_number(&Value::deserialize(d)?)
}

pub fn opt_u16<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        v => port_number(&v).map(Some),
    }
}

pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| D::Error::custom("not a number")),
        Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("{s:?} is not a number"))),
        v => Err(want("a number", &v)),
    }
}

fn boolean<E: Error>(v: &Value) -> Result<bool, E> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" | "" => Ok(false),
            _ => Err(E::custom(format!("{s:?} is not true or false"))),
        },
        other => Err(want("true or false", other)),
    }
}

pub fn bool_value<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(false),
        v => boolean(&v),
    }
}

pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => boolean(&v).map(Some),
    }
}

fn scalars<E: Error>(v: Value) -> Result<Vec<String>, E> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items
            .iter()
            .map(|i| scalar(i).ok_or_else(|| want("a string", i)))
            .collect(),
        other => scalar(&other)
            .map(|s| vec![s])
            .ok_or_else(|| want("a string or a list", &other)),
    }
}

pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    scalars(Value::deserialize(d)?)
}

fn command<E: Error>(v: Value) -> Result<Option<Vec<String>>, E> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => shlex::split(&s)
            .map(Some)
            .ok_or_else(|| E::custom(format!("{s:?}: unbalanced quotes"))),
        other => scalars(other).map(Some),
    }
}

pub fn opt_command<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    command(Value::deserialize(d)?)
}

/// A mapping, or a list of `KEY=VALUE` (a bare `KEY`: no value given).
fn pairs<E: Error>(v: Value, sep: char) -> Result<BTreeMap<String, Option<String>>, E> {
    let mut out = BTreeMap::new();
    match v {
        Value::Null => {}
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = scalar(&k).ok_or_else(|| want("a string key", &k))?;
                let v = match v {
                    Value::Null => None,
                    v => Some(scalar(&v).ok_or_else(|| want("a string", &v))?),
                };
                out.insert(k, v);
            }
        }
        Value::Sequence(items) => {
            for i in items {
                let s = scalar(&i).ok_or_else(|| want("KEY=VALUE", &i))?;
                match s.split_once(sep) {
                    Some((k, v)) => out.insert(k.to_string(), Some(v.to_string())),
                    None => out.insert(s, None),
                };
            }
        }
        other => return Err(want("a mapping or a list of KEY=VALUE", &other)),
    }
    Ok(out)
}

pub fn map_or_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Option<String>>, D::Error> {
    pairs(Value::deserialize(d)?, '=')
}

pub fn labels<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(pairs(Value::deserialize(d)?, '=')?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// `extra_hosts` as `HOST:IP` lines (from a mapping, `HOST:IP` or `HOST=IP`).
pub fn extra_hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Value::deserialize(d)?;
    let mut out = Vec::new();
    match v {
        Value::Mapping(_) => {
            for (k, ip) in pairs::<D::Error>(v, '=')? {
                out.push(format!("{k}:{}", ip.unwrap_or_default()));
            }
        }
        other => {
            for s in scalars::<D::Error>(other)? {
                let (host, ip) = s
                    .split_once('=')
                    .or_else(|| s.split_once(':'))
                    .ok_or_else(|| D::Error::custom(format!("extra host {s:?}: use HOST:IP")))?;
                out.push(format!("{host}:{ip}"));
            }
        }
    }
    Ok(out)
}

/// `A-B` or `A` as a list of ports.
fn port_range<E: Error>(s: &str) -> Result<Vec<u16>, E> {
    let p = |x: &str| port_number::<E>(&Value::String(x.to_string()));
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (p(a)?, p(b)?);
            if b < a {
                return Err(E::custom(format!(
                    "port range {s}: the end is below the start"
                )));
            }
            Ok((a..=b).collect())
        }
        None => Ok(vec![p(s)?]),
    }
}

/// The short syntax `[HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]` (ranges allowed, equal lengths).
pub fn short_port<E: Error>(s: &str) -> Result<Vec<Port>, E> {
    let (spec, protocol) = match s.rsplit_once('/') {
        Some((spec, proto)) => (spec, proto.to_string()),
        None => (s, "tcp".to_string()),
    };
    if !matches!(protocol.as_str(), "tcp" | "udp") {
        return Err(E::custom(format!(
            "port {s:?}: protocol {protocol} (tcp or udp)"
        )));
    }
    // An IPv6 host address is bracketed: `[::1]:8080:80`.
    let (host_ip, rest) = match spec.strip_prefix('[') {
        Some(r) => {
            let (ip, rest) = r
                .split_once("]:")
                .ok_or_else(|| E::custom(format!("port {s:?}: unclosed [")))?;
            (Some(ip.to_string()), rest)
        }
        None => (None, spec),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, published, target) = match (host_ip, parts.as_slice()) {
        (None, [t]) => (None, None, *t),
        (None, [p, t]) => (None, Some(*p), *t),
        (None, [ip, p, t]) => (Some(ip.to_string()), Some(*p), *t),
        (Some(ip), [p, t]) => (Some(ip), Some(*p), *t),
        _ => {
            return Err(E::custom(format!(
                "port {s:?}: use [HOST_IP:][PUBLISHED:]TARGET[/udp]"
            )))
        }
    };
    let targets = port_range::<E>(target)?;
    let published = match published.filter(|p| !p.is_empty()) {
        Some(p) => {
            let ps = port_range::<E>(p)?;
            if ps.len() != targets.len() {
                return Err(E::custom(format!(
                    "port {s:?}: the published and target ranges differ in length"
                )));
            }
            ps.into_iter().map(Some).collect()
        }
        None => vec![None; targets.len()],
    };
    Ok(targets
        .into_iter()
        .zip(published)
        .map(|(target, published)| Port {
            target,
            published,
            host_ip: host_ip.clone().filter(|ip| !ip.is_empty()),
            protocol: protocol.clone(),
            mode: None,
        })
        .collect())
}

pub fn ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Port>, D::Error> {
    let mut out = Vec::new();
    let items = match Value::deserialize(d)? {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items,
        other => return Err(want("a list of ports", &other)),
    };
    for i in items {
        match i {
            Value::Mapping(_) => out.push(from_value(i)?),
            other => {
                let s = scalar(&other).ok_or_else(|| want("a port", &other))?;
                out.extend(short_port::<D::Error>(&s)?);
            }
        }
    }
    Ok(out)
}

/// The short syntax `[SOURCE:]TARGET[:MODE]`: a source starting with `/`, `.` or `~` is a host
/// path, another a named volume; none is an anonymous volume.
pub fn short_mount<E: Error>(s: &str) -> Result<Mount, E> {
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [t] => (None, *t, ""),
        [src, t] => (Some(*src), *t, ""),
        [src, t, m] => (Some(*src), *t, *m),
        _ => return Err(E::custom(format!("volume {s:?}: use [SOURCE:]TARGET[:ro]"))),
    };
    let mut read_only = false;
    let mut nocopy = false;
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        match m {
            "ro" => read_only = true,
            "rw" | "z" | "Z" | "cached" | "delegated" | "consistent" => {}
            "nocopy" => nocopy = true,
            other => return Err(E::custom(format!("volume {s:?}: unknown mode {other}"))),
        }
    }
    let bind = source.is_some_and(|src| src.starts_with(['/', '.', '~']));
    Ok(Mount {
        kind: if bind { "bind" } else { "volume" }.to_string(),
        source: source.map(str::to_string),
        target: target.to_string(),
        read_only,
        volume: nocopy.then_some(VolumeOptions { nocopy }),
        tmpfs: None,
        bind: None,
    })
}

pub fn mounts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Mount>, D::Error> {
    let items = match Value::deserialize(d)? {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items,
        other => return Err(want("a list of volumes", &other)),
    };
    items
        .into_iter()
        .map(|i| match i {
            Value::Mapping(_) => from_value(i),
            other => {
                let s = scalar(&other).ok_or_else(|| want("a volume", &other))?;
                short_mount::<D::Error>(&s)
            }
        })
        .collect()
}

pub fn service_networks<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, ServiceNetwork>>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Sequence(items) => Ok(Some(
            items
                .iter()
                .map(|i| {
                    scalar(i)
                        .map(|n| (n, ServiceNetwork::default()))
                        .ok_or_else(|| want("a network's name", i))
                })
                .collect::<Result<_, _>>()?,
        )),
        Value::Mapping(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let k = scalar(&k).ok_or_else(|| want("a network's name", &k))?;
                let v = match v {
                    Value::Null => ServiceNetwork::default(),
                    v => from_value(v)?,
                };
                out.insert(k, v);
            }
            Ok(Some(out))
        }
        other => Err(want("a list or mapping of networks", &other)),
    }
}

pub fn condition<'de, D: Deserializer<'de>>(d: D) -> Result<Condition, D::Error> {
    let v = Value::deserialize(d)?;
    match scalar(&v).as_deref() {
        Some("service_started") => Ok(Condition::Started),
        Some("service_healthy") => Ok(Condition::Healthy),
        Some("service_completed_successfully") => Ok(Condition::CompletedSuccessfully),
        _ => Err(D::Error::custom(format!(
            "condition {v:?}: service_started, service_healthy or service_completed_successfully"
        ))),
    }
}

pub fn depends_on<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Dependency>, D::Error> {
    let started = || Dependency {
        condition: Condition::Started,
        restart: false,
        required: true,
    };
    match Value::deserialize(d)? {
        Value::Null => Ok(BTreeMap::new()),
        Value::Sequence(items) => items
            .iter()
            .map(|i| {
                scalar(i)
                    .map(|n| (n, started()))
                    .ok_or_else(|| want("a service's name", i))
            })
            .collect(),
        Value::Mapping(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let k = scalar(&k).ok_or_else(|| want("a service's name", &k))?;
                let v = match v {
                    Value::Null => started(),
                    v => from_value(v)?,
                };
                out.insert(k, v);
            }
            Ok(out)
        }
        other => Err(want("a list or mapping of services", &other)),
    }
}

pub fn health_test<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(vec!["CMD-SHELL".into(), s])),
        other => scalars(other).map(Some),
    }
}

pub fn ulimits<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Ulimit>, D::Error> {
    let mut out = BTreeMap::new();
    match Value::deserialize(d)? {
        Value::Null => {}
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = scalar(&k).ok_or_else(|| want("a limit's name", &k))?;
                let u = match v {
                    Value::Mapping(_) => from_value(v)?,
                    v => {
                        let n = i64::try_from(number::<D::Error>(&v)?)
                            .map_err(|_| D::Error::custom("limit too large"))?;
                        Ulimit { soft: n, hard: n }
                    }
                };
                out.insert(k, u);
            }
        }
        other => return Err(want("a mapping of limits", &other)),
    }
    Ok(out)
}

pub fn file_refs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<FileRef>, D::Error> {
    let items = match Value::deserialize(d)? {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items,
        other => return Err(want("a list", &other)),
    };
    items
        .into_iter()
        .map(|i| match i {
            Value::Mapping(_) => from_value(i),
            other => scalar(&other)
                .map(|source| FileRef {
                    source,
                    target: None,
                })
                .ok_or_else(|| want("a name", &other)),
        })
        .collect()
}

pub fn opt_build<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Build>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Mapping(m) => from_value(Value::Mapping(m)).map(Some),
        other => scalar(&other)
            .map(|context| {
                Some(Build {
                    context: Some(context),
                    ..Build::default()
                })
            })
            .ok_or_else(|| want("a directory or a mapping", &other)),
    }
}

/// A mapping whose values may be empty (`networks: {back: }`): those get the defaults.
pub fn map_of_opt<'de, D, T>(d: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let mut out = BTreeMap::new();
    match Value::deserialize(d)? {
        Value::Null => {}
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = scalar(&k).ok_or_else(|| want("a name", &k))?;
                let v = match v {
                    Value::Null => T::default(),
                    v => from_value(v)?,
                };
                out.insert(k, v);
            }
        }
        other => return Err(want("a mapping", &other)),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    type E = serde_norway::Error;

    #[test]
    fn short_ports_and_volumes_become_the_long_form() {
        let p = short_port::<E>("127.0.0.1:8080-8081:80-81/udp").expect("ports");
        assert_eq!(p.len(), 2);
        assert_eq!(
            (
                p[1].target,
                p[1].published,
                p[1].host_ip.as_deref(),
                p[1].protocol.as_str()
            ),
            (81, Some(8081), Some("127.0.0.1"), "udp")
        );
        let p = short_port::<E>("80").expect("port");
        assert_eq!((p[0].target, p[0].published), (80, None));
        let p = short_port::<E>("[::1]:53:53").expect("v6");
        assert_eq!(p[0].host_ip.as_deref(), Some("::1"));
        assert!(short_port::<E>("8080-8082:80").is_err());
        assert!(short_port::<E>("70000").is_err());
        let m = short_mount::<E>("data:/var/lib/db:ro").expect("volume");
        assert_eq!((m.kind.as_str(), m.read_only), ("volume", true));
        let m = short_mount::<E>("./conf:/etc/app").expect("bind");
        assert_eq!(m.kind, "bind");
        let m = short_mount::<E>("/scratch").expect("anonymous");
        assert_eq!((m.source, m.target.as_str()), (None, "/scratch"));
        assert!(short_mount::<E>("a:/b:sideways").is_err());
    }
}
