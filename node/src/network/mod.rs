//! Bridge networks: records and address allocation in the node's database, subnets claimed
//! host-wide, and the plumbing of a running container's network (namespace, veth, firewall,
//! embedded DNS, published ports).
//!
//! Lifecycle: a network's record and subnet live from `network create` (the default `bridge`
//! network: from the agent's first start) to `network rm`. A container's address is allocated
//! when it is created and released when it is removed. Its namespace file
//! (`<container>/netns`), veth pair, DNS listener and port proxies exist while it runs. A
//! network's Linux bridge and its nftables table exist while at least one container on it runs,
//! so once its containers are gone nothing of a network is left in the kernel.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub mod dns;
mod error;
pub mod netlink;
pub mod nft;
pub mod ports;

use error::failed;
pub use error::NetworkError;

use crate::db::Db;
use ports::PortBinding;

/// The network every container joins unless told otherwise (docker's name).
pub const DEFAULT: &str = "bridge";

/// Where subnets are claimed across every agent on this host (one file per subnet).
const CLAIMS: &str = "/run/reg/subnets";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    /// `a.b.c.d/len`.
    pub subnet: String,
    pub gateway: String,
    /// The Linux bridge's name.
    pub bridge: String,
    #[serde(default)]
    pub internal: bool,
    pub created: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A container's place on a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub container: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub aliases: Vec<String>,
    /// Order of attachment: `eth{idx}` inside the container.
    pub idx: u32,
}

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn parse(s: &str) -> Result<Subnet, NetworkError> {
        let (ip, len) = s.split_once('/').ok_or_else(|| {
            NetworkError::Invalid(format!("invalid subnet {s:?}: expected a.b.c.d/len"))
        })?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| {
            NetworkError::Invalid(format!("invalid subnet {s:?}: {ip} is not an IPv4 address"))
        })?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| {
                NetworkError::Invalid(format!(
                    "invalid subnet {s:?}: the prefix length must be 8 to 30"
                ))
            })?;
        let base = Ipv4Addr::from(u32::from(ip) & Self::mask(prefix));
        Ok(Subnet { base, prefix })
    }

    fn mask(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.prefix) == u32::from(self.base)
    }

    pub fn overlaps(&self, o: &Subnet) -> bool {
        let p = self.prefix.min(o.prefix);
        u32::from(self.base) & Self::mask(p) == u32::from(o.base) & Self::mask(p)
    }

    /// The n-th address (1 = the gateway).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + n)
    }

    pub fn size(&self) -> u32 {
        1u32 << (32 - self.prefix as u32)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// Subnets tried in order for a network created without `--subnet` (docker's pools).
fn pool() -> impl Iterator<Item = Subnet> {
    (17..=31u8)
        .map(|b| Subnet {
            base: Ipv4Addr::new(172, b, 0, 0),
            prefix: 16,
        })
        .chain((0..16u8).map(|i| Subnet {
            base: Ipv4Addr::new(192, 168, i * 16, 0),
            prefix: 20,
        }))
}

/// The host's IPv4 routes from /proc/net/route: (device, destination).
fn proc_routes() -> Vec<(String, Subnet)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let net = Subnet {
                base: Ipv4Addr::from(u32::from_be(dst)),
                prefix: u32::from_be(mask).count_ones() as u8,
            };
            Some((f.first()?.to_string(), net))
        })
        .collect()
}

/// The host's routes to subnets (not the default route).
fn host_routes() -> Vec<Subnet> {
    proc_routes()
        .into_iter()
        .filter(|(_, s)| s.prefix > 0)
        .map(|(_, s)| s)
        .collect()
}

/// The MTU of the interface that carries the host's default route (1500 when unknown).
fn uplink_mtu() -> u32 {
    proc_routes()
        .into_iter()
        .find(|(_, s)| s.prefix == 0)
        .and_then(|(dev, _)| std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu")).ok())
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(1500)
}

fn claim_path(s: &Subnet) -> PathBuf {
    Path::new(CLAIMS).join(format!("{}_{}", s.base, s.prefix))
}

/// Every subnet claimed on this host, with the node root that claimed it.
fn claims() -> Vec<(Subnet, String)> {
    std::fs::read_dir(CLAIMS)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().replace('_', "/");
            let s = Subnet::parse(&n).ok()?;
            let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
            Some((s, owner))
        })
        .collect()
}

/// Claims `s` for the node at `root`, host-wide: refused when a live claim of another node or
/// a host route overlaps it. A claim whose node directory is gone is stale and taken over.
fn claim(s: &Subnet, root: &Path) -> Result<(), String> {
    let me = root.display().to_string();
    if let Some(r) = host_routes().iter().find(|r| r.overlaps(s)) {
        return Err(format!(
            "subnet {s} overlaps the host's route to {r}: choose another with --subnet"
        ));
    }
    for (c, owner) in claims() {
        if !c.overlaps(s) || (owner == me && c == *s) {
            continue;
        }
        if owner.is_empty() || Path::new(&owner).exists() {
            return Err(format!(
                "subnet {s} overlaps {c}, in use by a network of the node at {owner}"
            ));
        }
        let _ = std::fs::remove_file(claim_path(&c));
    }
    std::fs::create_dir_all(CLAIMS).map_err(|e| format!("{CLAIMS}: {e}"))?;
    let p = claim_path(s);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
    {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(me.as_bytes())
                .map_err(|e| format!("{}: {e}", p.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let owner = std::fs::read_to_string(&p).unwrap_or_default();
            if owner == me {
                Ok(())
            } else {
                Err(format!(
                    "subnet {s} was just claimed by the node at {owner}"
                ))
            }
        }
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

fn unclaim(s: &Subnet, root: &Path) {
    let p = claim_path(s);
    if std::fs::read_to_string(&p).is_ok_and(|o| o == root.display().to_string()) {
        let _ = std::fs::remove_file(p);
    }
}

/// docker's MAC scheme: 02:42 and the four bytes of the address.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn mac_string(ip: Ipv4Addr) -> String {
    mac_for(ip)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn bad(e: impl std::fmt::Display) -> NetworkError {
    NetworkError::Invalid(e.to_string())
}

pub struct Networks {
    root: PathBuf,
    db: Arc<Db>,
    /// Serializes bridge/firewall changes and endpoint activation.
    op: tokio::sync::Mutex<()>,
    /// What each running container holds: its DNS server and port proxies.
    live: Mutex<HashMap<String, Vec<tokio::task::AbortHandle>>>,
    /// Networks whose bridge and rules this agent has made sure of.
    up: Mutex<std::collections::HashSet<String>>,
    /// Background veth deletions.
    pending: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    uplink_mtu: u32,
}

impl Networks {
    /// The networks of the node at `node_root`, kept in `db` (the node database).
    pub(crate) fn open(node_root: &Path, db: Arc<Db>) -> Result<Arc<Networks>, NetworkError> {
        db.with(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS networks (
                 id TEXT PRIMARY KEY,
                 name TEXT NOT NULL UNIQUE,
                 record TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS endpoints (
                 network TEXT NOT NULL,
                 container TEXT NOT NULL,
                 ip TEXT NOT NULL,
                 record TEXT NOT NULL,
                 active INTEGER NOT NULL DEFAULT 0,
                 PRIMARY KEY (network, container),
                 UNIQUE (network, ip)
             );",
            )
        })
        .map_err(|e| failed(format!("creating the network tables: {e}")))?;
        let n = Arc::new(Networks {
            root: node_root.to_path_buf(),
            db,
            op: tokio::sync::Mutex::new(()),
            live: Mutex::new(HashMap::new()),
            up: Mutex::new(std::collections::HashSet::new()),
            pending: Mutex::new(Vec::new()),
            uplink_mtu: uplink_mtu(),
        });
        Ok(n)
    }

    pub fn list(&self) -> Result<Vec<Network>, NetworkError> {
        self.db
            .with(|db| records(db, "SELECT record FROM networks ORDER BY name", []))
    }

    /// A network by name, full id or unique id prefix.
    pub fn get(&self, key: &str) -> Result<Network, NetworkError> {
        self.find(key)?
            .ok_or_else(|| NetworkError::NotFound(format!("network {key} not found")))
    }

    /// A network by name, full id or unique id prefix, if there is one.
    pub fn find(&self, key: &str) -> Result<Option<Network>, NetworkError> {
        let mut found: Vec<Network> = self.db.with(|db| -> Result<_, NetworkError> {
            let mut found: Vec<Network> = records(
                db,
                "SELECT record FROM networks WHERE name = ?1 OR id = ?1",
                [key],
            )?;
            if found.is_empty() && !key.is_empty() {
                found = records(
                    db,
                    "SELECT record FROM networks WHERE substr(id, 1, length(?1)) = ?1 LIMIT 2",
                    [key],
                )?;
            }
            Ok(found)
        })?;
        match found.len() {
            0 | 1 => Ok(found.pop()),
            _ => Err(bad(format!(
                "{key:?} matches several networks: give more of the id"
            ))),
        }
    }

    /// The default network, made on first use.
    pub fn ensure_default(&self) -> Result<Network, NetworkError> {
        match self.find(DEFAULT)? {
            Some(n) => Ok(n),
            None => self.create(DEFAULT, None, false, Default::default()),
        }
    }

    /// `network create NAME [--subnet] [--internal] [--label]`.
    pub fn create(
        &self,
        name: &str,
        subnet: Option<&str>,
        internal_only: bool,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<Network, NetworkError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err(bad(format!(
                "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        if matches!(name, "none" | "host") || name.starts_with("container:") {
            return Err(bad(format!(
                "{name} is a pre-defined network mode and cannot be created"
            )));
        }
        if self.get(name).is_ok() {
            return Err(NetworkError::Conflict(format!(
                "network with name {name} already exists"
            )));
        }
        // This node's own networks: host-wide claims let a node claim again what it holds (its
        // networks' bridges come and go), so a new network must not reuse a sibling's subnet.
        let mine: Vec<(String, Subnet)> = self
            .list()?
            .into_iter()
            .filter_map(|n| Some((n.name.clone(), Subnet::parse(&n.subnet).ok()?)))
            .collect();
        let sibling = |s: &Subnet| mine.iter().find(|(_, m)| m.overlaps(s)).map(|(n, _)| n);
        let subnet = match subnet {
            Some(s) => {
                let s = Subnet::parse(s)?;
                if let Some(other) = sibling(&s) {
                    return Err(NetworkError::Conflict(format!(
                        "subnet {s} overlaps the subnet of network {other}: choose another"
                    )));
                }
                claim(&s, &self.root).map_err(bad)?;
                s
            }
            None => {
                let mut last = String::new();
                let mut found = None;
                for s in pool().filter(|s| sibling(s).is_none()) {
                    match claim(&s, &self.root) {
                        Ok(()) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                found.ok_or_else(|| {
                    NetworkError::Conflict(format!(
                        "no free subnet left in the address pools ({last}): give one with --subnet"
                    ))
                })?
            }
        };
        let id = crate::db::random_hex().map_err(failed)?;
        let n = Network {
            bridge: format!("reg{}", &id[..8]),
            id,
            name: name.to_string(),
            subnet: subnet.to_string(),
            gateway: subnet.host(1).to_string(),
            internal: internal_only,
            created: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            labels,
        };
        let json = serde_json::to_string(&n).map_err(failed)?;
        let put = self.db.with(|db| {
            db.execute(
                "INSERT INTO networks (id, name, record) VALUES (?1, ?2, ?3)",
                rusqlite::params![n.id, n.name, json],
            )
        });
        if let Err(e) = put {
            unclaim(&subnet, &self.root);
            return Err(failed(e));
        }
        Ok(n)
    }

    /// `network rm`: refused while containers are attached.
    pub fn remove(&self, key: &str) -> Result<Network, NetworkError> {
        let n = self.get(key)?;
        if n.name == DEFAULT {
            return Err(NetworkError::Forbidden(format!(
                "{DEFAULT} is a pre-defined network and cannot be removed"
            )));
        }
        let users: Vec<String> = self
            .endpoints_of_network(&n.id)?
            .into_iter()
            .map(|e| e.name)
            .collect();
        if !users.is_empty() {
            return Err(NetworkError::Conflict(format!(
                "network {} has active endpoints ({}): remove or disconnect them first",
                n.name,
                users.join(", ")
            )));
        }
        self.db
            .with(|db| db.execute("DELETE FROM networks WHERE id = ?1", [&n.id]))
            .map_err(failed)?;
        if let Ok(s) = Subnet::parse(&n.subnet) {
            unclaim(&s, &self.root);
        }
        Ok(n)
    }

    fn endpoints_where(&self, clause: &str, key: &str) -> Result<Vec<Endpoint>, NetworkError> {
        let sql = format!("SELECT record FROM endpoints WHERE {clause}");
        let mut v: Vec<Endpoint> = self.db.with(|db| records(db, &sql, [key]))?;
        v.sort_by_key(|e| e.idx);
        Ok(v)
    }

    pub fn endpoints_of_network(&self, network_id: &str) -> Result<Vec<Endpoint>, NetworkError> {
        self.endpoints_where("network = ?1", network_id)
    }

    pub fn endpoints_of(&self, container: &str) -> Result<Vec<Endpoint>, NetworkError> {
        self.endpoints_where("container = ?1", container)
    }

    fn active_on(&self, network_id: &str) -> Result<usize, NetworkError> {
        let n: i64 = self
            .db
            .with(|db| {
                db.query_row(
                    "SELECT count(*) FROM endpoints WHERE network = ?1 AND active = 1",
                    [network_id],
                    |r| r.get(0),
                )
            })
            .map_err(failed)?;
        Ok(n as usize)
    }

    /// Gives container `id` (named `name`) an address on network `net`: `ip` if asked and
    /// free, else the lowest free one.
    pub fn allocate(
        &self,
        net: &Network,
        id: &str,
        name: &str,
        ip: Option<Ipv4Addr>,
        aliases: Vec<String>,
    ) -> Result<Endpoint, NetworkError> {
        let subnet = Subnet::parse(&net.subnet).map_err(failed)?;
        self.db.with(|db| {
            let taken: std::collections::HashSet<Ipv4Addr> = {
                let mut st = db
                    .prepare("SELECT ip FROM endpoints WHERE network = ?1")
                    .map_err(failed)?;
                let rows = st
                    .query_map([&net.id], |r| r.get::<_, String>(0))
                    .map_err(failed)?;
                rows.filter_map(Result::ok)
                    .filter_map(|s| s.parse().ok())
                    .collect()
            };
            let idx: u32 = db
                .query_row(
                    "SELECT count(*) FROM endpoints WHERE container = ?1",
                    [id],
                    |r| r.get(0),
                )
                .map_err(failed)?;
            let gateway = subnet.host(1);
            let broadcast = subnet.host(subnet.size() - 1);
            let ip = match ip {
                Some(ip) => {
                    if !subnet.contains(ip) || ip == subnet.base || ip == broadcast || ip == gateway
                    {
                        return Err(bad(format!(
                            "--ip {ip} is not a usable address of network {} ({})",
                            net.name, net.subnet
                        )));
                    }
                    if taken.contains(&ip) {
                        return Err(NetworkError::Conflict(format!(
                            "address {ip} is already in use on network {}",
                            net.name
                        )));
                    }
                    ip
                }
                None => (2..subnet.size() - 1)
                    .map(|n| subnet.host(n))
                    .find(|a| !taken.contains(a))
                    .ok_or_else(|| {
                        NetworkError::Conflict(format!(
                            "no address left on network {} ({})",
                            net.name, net.subnet
                        ))
                    })?,
            };
            let ep = Endpoint {
                network: net.id.clone(),
                container: id.to_string(),
                name: name.to_string(),
                ip,
                aliases,
                idx,
            };
            let json = serde_json::to_string(&ep).map_err(failed)?;
            db.execute(
                "INSERT INTO endpoints (network, container, ip, record) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![net.id, id, ip.to_string(), json],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    NetworkError::Conflict(format!(
                        "container is already connected to network {}",
                        net.name
                    ))
                }
                e => failed(e),
            })?;
            Ok(ep)
        })
    }

    /// Releases the addresses of a removed container (or one endpoint of it).
    pub fn release(&self, id: &str, network_id: Option<&str>) -> Result<(), NetworkError> {
        self.db
            .with(|db| release_in(db, id, network_id))
            .map(|_| ())
            .map_err(failed)
    }

    fn set_active(&self, ep: &Endpoint, active: bool) -> Result<(), NetworkError> {
        self.db
            .with(|db| {
                db.execute(
                    "UPDATE endpoints SET active = ?1 WHERE network = ?2 AND container = ?3",
                    rusqlite::params![active as i64, ep.network, ep.container],
                )
            })
            .map_err(failed)?;
        Ok(())
    }

    fn network_by_id(&self, id: &str) -> Result<Network, NetworkError> {
        self.db
            .with(|db| records(db, "SELECT record FROM networks WHERE id = ?1", [id]))?
            .pop()
            .ok_or_else(|| failed(format!("network {id} vanished")))
    }

    /// The addresses that `name` resolves to for container `asker`: containers (by name or
    /// alias — the short id is one, see `containers::connect`) running on a user-defined
    /// network they share.
    pub fn resolve(&self, asker: &str, name: &str) -> Vec<Ipv4Addr> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Ok(mine) = self.endpoints_of(asker) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for my in mine {
            let Ok(net) = self.network_by_id(&my.network) else {
                continue;
            };
            if net.name == DEFAULT {
                continue;
            }
            let Ok(peers) = self.endpoints_where("network = ?1 AND active = 1", &my.network) else {
                continue;
            };
            for p in peers {
                let hit = p.name.eq_ignore_ascii_case(&name)
                    || p.aliases.iter().any(|a| a.eq_ignore_ascii_case(&name));
                if hit && !out.contains(&p.ip) {
                    out.push(p.ip);
                }
            }
        }
        out
    }

    /// Brings up the network of a container about to start: a namespace at `netns` with a veth
    /// on each of its networks (a network's bridge and rules are made on its first use), DNS on
    /// user-defined networks, published ports. On error everything made so far is undone.
    pub async fn attach(
        self: &Arc<Self>,
        id: &str,
        netns: &Path,
        ports: &[ports::PortSpec],
        upstream: Vec<SocketAddr>,
    ) -> Result<Vec<PortBinding>, NetworkError> {
        let r = self.attach_inner(id, netns, ports, upstream).await;
        if r.is_err() {
            let _ = self.detach(id, netns, &[]).await;
        }
        r
    }

    /// The bridge and rules of `net`, made once per agent (an existing bridge is reused).
    /// Call with `op` held.
    async fn ensure_up(&self, net: &Network) -> Result<(), NetworkError> {
        if self.up.lock().map(|u| u.contains(&net.id)).unwrap_or(false) {
            return Ok(());
        }
        let n = net.clone();
        blocking(move || network_up(&n)).await?;
        if let Ok(mut u) = self.up.lock() {
            u.insert(net.id.clone());
        }
        Ok(())
    }

    fn link_for(
        &self,
        net: &Network,
        ep: &Endpoint,
        i: usize,
    ) -> Result<netlink::Endpoint, NetworkError> {
        let subnet = Subnet::parse(&net.subnet).map_err(failed)?;
        Ok(netlink::Endpoint {
            host_if: host_if(&ep.container, &ep.network),
            bridge: net.bridge.clone(),
            if_name: format!("eth{i}"),
            ip: ep.ip,
            prefix: subnet.prefix,
            gateway: (i == 0 && !net.internal).then(|| subnet.host(1)),
            route_mtu: self.uplink_mtu,
            mac: mac_for(ep.ip),
        })
    }

    async fn attach_inner(
        self: &Arc<Self>,
        id: &str,
        netns: &Path,
        ports: &[ports::PortSpec],
        upstream: Vec<SocketAddr>,
    ) -> Result<Vec<PortBinding>, NetworkError> {
        let eps = self.endpoints_of(id)?;
        let _guard = self.op.lock().await;
        let mut links = Vec::new();
        let mut user_network = false;
        for (i, ep) in eps.iter().enumerate() {
            let net = self.network_by_id(&ep.network)?;
            user_network |= net.name != DEFAULT;
            self.ensure_up(&net).await?;
            links.push(self.link_for(&net, ep, i)?);
            self.set_active(ep, true)?;
        }
        let ns = netns.to_path_buf();
        let setup = netlink::Setup {
            netns: netns.to_path_buf(),
            create: true,
            endpoints: links,
            dns: user_network,
        };
        let dns = blocking(move || {
            netlink::remove_netns(&ns)?;
            netlink::setup(setup)
        })
        .await?;
        let mut live = Vec::new();
        if let Some(sock) = dns {
            live.push(self.serve_dns(id, sock, upstream)?);
        }
        let mut bound = Vec::new();
        let target = eps.first().map(|e| e.ip);
        for p in ports {
            let Some(target) = target else {
                return Err(bad(
                    "published ports need a network with an address (not none or host)",
                ));
            };
            match ports::publish(p, target).await {
                Ok((b, task)) => {
                    bound.push(b);
                    live.push(task);
                }
                Err(e) => {
                    live.iter().for_each(|t| t.abort());
                    return Err(e);
                }
            }
        }
        if let (Some(ep), false) = (eps.first(), bound.is_empty()) {
            if let Err(e) = self.dnat_up(ep, &bound).await {
                live.iter().for_each(|t| t.abort());
                return Err(e);
            }
        }
        if let Ok(mut l) = self.live.lock() {
            if let Some(old) = l.insert(id.to_string(), live) {
                old.iter().for_each(|t| t.abort());
            }
        }
        Ok(bound)
    }

    /// A container's published ports into the DNAT maps of its first network `ep`. They stay
    /// there (across agent restarts too: `network_up` keeps the maps) until `detach`.
    async fn dnat_up(&self, ep: &Endpoint, bound: &[PortBinding]) -> Result<(), NetworkError> {
        let t = table(&self.network_by_id(&ep.network)?);
        let (b, ip) = (bound.to_vec(), ep.ip);
        blocking(move || ports::dnat_add(&t, &b, ip)).await
    }

    /// `network connect` of a running container (its namespace at `netns`): endpoint `ep`
    /// becomes its next interface now.
    pub async fn hot_plug(
        &self,
        net: &Network,
        ep: &Endpoint,
        netns: &Path,
    ) -> Result<(), NetworkError> {
        let _guard = self.op.lock().await;
        self.ensure_up(net).await?;
        let link = self.link_for(net, ep, ep.idx as usize)?;
        self.set_active(ep, true)?;
        let setup = netlink::Setup {
            netns: netns.to_path_buf(),
            create: false,
            endpoints: vec![link],
            dns: false,
        };
        if let Err(e) = blocking(move || netlink::setup(setup)).await {
            let _ = self.set_active(ep, false);
            let _ = blocking(netlink::delete_links(vec![host_if(
                &ep.container,
                &ep.network,
            )]))
            .await;
            return Err(e);
        }
        Ok(())
    }

    /// `network disconnect` of a running container: its veth on that network goes.
    pub async fn hot_unplug(&self, ep: &Endpoint) -> Result<(), NetworkError> {
        let _guard = self.op.lock().await;
        blocking(netlink::delete_links(vec![host_if(
            &ep.container,
            &ep.network,
        )]))
        .await?;
        self.set_active(ep, false)
    }

    /// Undoes [`Networks::attach`] once the container is gone: stops DNS and proxies and
    /// unmounts the namespace. Its veths die with the namespace; they are also deleted in the
    /// background (deleting a veth waits for the kernel's RCU grace periods, ~20 ms, which a
    /// `run --rm` need not wait for).
    /// Its published ports (`ports`, as bound at start) stop being forwarded first, once: only
    /// while its namespace is still there.
    pub async fn detach(
        self: &Arc<Self>,
        id: &str,
        netns: &Path,
        ports: &[PortBinding],
    ) -> Result<(), NetworkError> {
        if let Some(l) = self.live.lock().ok().and_then(|mut l| l.remove(id)) {
            l.iter().for_each(|t| t.abort());
        }
        let eps = self.endpoints_of(id)?;
        let dnat = eps
            .first()
            .filter(|_| !ports.is_empty() && netns.exists())
            .and_then(|ep| self.network_by_id(&ep.network).ok())
            .map(|n| (table(&n), ports.to_vec()));
        if let Some((t, bound)) = dnat {
            if let Err(e) = blocking(move || ports::dnat_remove(&t, &bound)).await {
                tracing::debug!(container = %id, error = %e, "removing published ports");
            }
        }
        for ep in &eps {
            self.set_active(ep, false)?;
        }
        let ns = netns.to_path_buf();
        blocking(move || netlink::remove_netns(&ns)).await?;
        if !eps.is_empty() {
            let me = self.clone();
            let ifs: Vec<String> = eps.iter().map(|e| host_if(id, &e.network)).collect();
            let pending = tokio::spawn(async move {
                let _guard = me.op.lock().await;
                if let Err(e) = blocking(netlink::delete_links(ifs)).await {
                    tracing::warn!(error = %e, "deleting a container's veths");
                }
            });
            if let Ok(mut p) = self.pending.lock() {
                p.retain(|t| !t.is_finished());
                p.push(pending);
            }
        }
        Ok(())
    }

    /// Waits for background veth deletions (before a network's bridge goes, and at shutdown).
    pub async fn settle(&self) {
        let all: Vec<_> = self
            .pending
            .lock()
            .map(|mut p| p.drain(..).collect())
            .unwrap_or_default();
        for t in all {
            let _ = t.await;
        }
    }

    /// After `network rm`: its bridge and rules go.
    pub async fn take_down(&self, net: &Network) -> Result<(), NetworkError> {
        self.settle().await;
        let _guard = self.op.lock().await;
        let n = net.clone();
        blocking(move || network_down(&n)).await?;
        if let Ok(mut u) = self.up.lock() {
            u.remove(&net.id);
        }
        Ok(())
    }

    /// At agent shutdown: the bridges and rules of networks no running container uses go.
    pub async fn shutdown(&self) {
        self.settle().await;
        let _guard = self.op.lock().await;
        let Ok(all) = self.list() else { return };
        for n in all {
            if self.active_on(&n.id).unwrap_or(1) == 0 {
                let n2 = n.clone();
                if let Err(e) = blocking(move || network_down(&n2)).await {
                    tracing::warn!(network = %n.name, error = %e, "taking a network down");
                }
            }
        }
    }

    /// Serves container `id`'s embedded DNS on `sock` (bound inside its namespace).
    fn serve_dns(
        self: &Arc<Self>,
        id: &str,
        sock: std::net::UdpSocket,
        upstream: Vec<SocketAddr>,
    ) -> Result<tokio::task::AbortHandle, NetworkError> {
        let sock = tokio::net::UdpSocket::from_std(sock).map_err(failed)?;
        let (me, asker) = (self.clone(), id.to_string());
        let resolve: dns::Resolver = Arc::new(move |name: &str| me.resolve(&asker, name));
        Ok(tokio::spawn(dns::serve(sock, resolve, upstream)).abort_handle())
    }

    /// After an agent restart: DNS and port sockets of containers still running come back (their
    /// DNAT map elements never left).
    pub async fn reattach(
        self: &Arc<Self>,
        id: &str,
        netns: &Path,
        ports: &[PortBinding],
        upstream: Vec<SocketAddr>,
    ) -> Result<(), NetworkError> {
        let eps = self.endpoints_of(id)?;
        let mut live = Vec::new();
        let user_network = eps.iter().any(|e| {
            self.network_by_id(&e.network)
                .is_ok_and(|n| n.name != DEFAULT)
        });
        if user_network && netns.exists() {
            let ns = netns.to_path_buf();
            let sock = blocking(move || netlink::dns_socket_in(&ns)).await?;
            live.push(self.serve_dns(id, sock, upstream)?);
        }
        if let Some(target) = eps.first().map(|e| e.ip) {
            for b in ports {
                let spec = ports::PortSpec {
                    host_ip: b.host_ip.parse().ok(),
                    host_port: b.host_port,
                    container_port: b.container_port,
                    proto: b.proto.clone(),
                };
                match ports::publish(&spec, target).await {
                    Ok((_, t)) => live.push(t),
                    Err(e) => tracing::warn!(container = %id, error = %e, "re-publishing a port"),
                }
            }
        }
        if let Ok(mut l) = self.live.lock() {
            l.insert(id.to_string(), live);
        }
        Ok(())
    }
}

/// The host side of a container's veth on a network (≤ 15 bytes, as Linux requires).
pub fn host_if(container: &str, network: &str) -> String {
    format!(
        "veth{}{}",
        &container[..container.len().min(7)],
        &network[..network.len().min(4)]
    )
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
) -> Result<T, NetworkError> {
    tokio::task::spawn_blocking(f).await.map_err(failed)?
}

/// The nftables table that holds a network's rules (one per network, owned by reg alone).
pub fn table(n: &Network) -> String {
    format!("reg_{}", &n.id[..8])
}

fn nft_output(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("nft").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rules of network `n`: traffic between its containers passes, replies come back, new
/// connections from anywhere else into it are dropped (so other networks cannot reach it),
/// outbound traffic is masqueraded — or, for `--internal`, dropped.
fn rules(n: &Network) -> String {
    let (t, br) = (table(n), &n.bridge);
    let out = if n.internal {
        format!("iifname \"{br}\" drop")
    } else {
        format!("iifname \"{br}\" accept")
    };
    let outbound_nat = if n.internal {
        String::new()
    } else {
        format!("ip saddr {} oifname != \"{br}\" masquerade", n.subnet)
    };
    // Published ports (ports.rs): host address and port -> container address and port.
    let mut maps = String::new();
    let mut dnat = String::new();
    for proto in ["tcp", "udp"] {
        maps.push_str(&format!(
            "  map ports_{proto} {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}
  map ports_{proto}_any {{ type inet_service : ipv4_addr . inet_service; }}
"
        ));
        dnat.push_str(&format!(
            "    fib daddr type local {proto} dport @ports_{proto}_any counter dnat ip to {proto} dport map @ports_{proto}_any
    ip daddr . {proto} dport @ports_{proto} counter dnat ip to ip daddr . {proto} dport map @ports_{proto}
"
        ));
    }
    format!(
        "table ip {t} {{
{maps}  chain ports_prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
{dnat}  }}
  chain ports_output {{
    type nat hook output priority -100; policy accept;
{dnat}  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname \"{br}\" oifname \"{br}\" accept
    oifname \"{br}\" ct state established,related accept
    oifname \"{br}\" ct status dnat accept
    oifname \"{br}\" drop
    {out}
  }}
  chain prerouting {{
    type filter hook prerouting priority raw; policy accept;
    iifname \"{br}\" ip daddr 127.0.0.0/8 drop
    iifname \"{br}\" ip saddr 127.0.0.0/8 drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    {outbound_nat}
    oifname \"{br}\" ip saddr 127.0.0.0/8 masquerade
    iifname \"{br}\" oifname \"{br}\" ct status dnat masquerade
  }}
}}
"
    )
}

/// Creates the bridge and the firewall rules of `n`.
fn network_up(n: &Network) -> Result<(), NetworkError> {
    let subnet = Subnet::parse(&n.subnet)?;
    let (br, gw) = (n.bridge.clone(), subnet.host(1));
    netlink::run(None, move |h| async move {
        netlink::bridge_up(&h, &br, gw, subnet.prefix).await
    })?;
    // The rules of a table left by an earlier agent are replaced, not added to; the published
    // ports in its maps stay (their containers may still run: the new agent re-attaches them).
    let t = table(n);
    nft::apply(&format!(
        "table ip {t} {{}}\nflush table ip {t}\n{}",
        rules(n)
    ))?;
    // Where another tool's FORWARD chain drops by default (docker's iptables), our accepts
    // must also be there: every base chain on the hook has to let a packet pass.
    remove_forward_accepts(n);
    if nft_output(&["list", "chain", "ip", "filter", "FORWARD"])
        .is_some_and(|c| c.contains("policy drop"))
    {
        let c = table(n);
        nft::apply(&format!(
            "insert rule ip filter FORWARD oifname \"{br}\" accept comment \"{c}\"\ninsert rule ip filter FORWARD iifname \"{br}\" accept comment \"{c}\"\n",
            br = n.bridge
        ))?;
    }
    // Published ports DNAT the host's own connections to 127.0.0.1:HOSTPORT onto this bridge.
    std::fs::write(
        format!("/proc/sys/net/ipv4/conf/{br}/route_localnet", br = n.bridge),
        "1",
    )
    .map_err(|e| failed(format!("enabling route_localnet on {}: {e}", n.bridge)))?;
    if !n.internal {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| failed(format!("enabling ip_forward: {e}")))?;
    }
    Ok(())
}

/// Removes what [`network_up`] made.
fn network_down(n: &Network) -> Result<(), NetworkError> {
    netlink::delete_links(vec![n.bridge.clone()])()?;
    if nft_output(&["list", "table", "ip", &table(n)]).is_some() {
        nft::apply(&format!("delete table ip {}\n", table(n)))?;
    }
    remove_forward_accepts(n);
    Ok(())
}

/// Removes the accepts [`network_up`] put into another tool's FORWARD chain.
fn remove_forward_accepts(n: &Network) {
    if let Some(chain) = nft_output(&["-a", "list", "chain", "ip", "filter", "FORWARD"]) {
        let tag = format!("comment \"{}\"", table(n));
        for l in chain.lines().filter(|l| l.contains(&tag)) {
            if let Some(h) = l.rsplit("# handle ").next().map(str::trim) {
                let _ = nft::apply(&format!("delete rule ip filter FORWARD handle {h}\n"));
            }
        }
    }
}

/// The host's resolvers, for names the embedded DNS does not know.
pub fn upstream_resolvers(dns: &[String]) -> Vec<SocketAddr> {
    let from_host;
    let list: Vec<&str> = if dns.is_empty() {
        from_host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        from_host
            .lines()
            .filter_map(|l| l.strip_prefix("nameserver"))
            .map(str::trim)
            .collect()
    } else {
        dns.iter().map(String::as_str).collect()
    };
    list.iter()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Deletes the endpoints of container `id` (on `network_id`, or all) with `db`, which may be
/// a transaction of the caller's.
pub(crate) fn release_in(
    db: &rusqlite::Connection,
    id: &str,
    network_id: Option<&str>,
) -> Result<usize, rusqlite::Error> {
    match network_id {
        Some(n) => db.execute(
            "DELETE FROM endpoints WHERE container = ?1 AND network = ?2",
            [id, n],
        ),
        None => db.execute("DELETE FROM endpoints WHERE container = ?1", [id]),
    }
}

/// [`crate::db::records`], failing as a `NetworkError`.
fn records<T: serde::de::DeserializeOwned>(
    db: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>, NetworkError> {
    Ok(crate::db::records(db, sql, params)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let s = Subnet::parse("10.1.2.3/16").expect("parse");
        assert_eq!(s.to_string(), "10.1.0.0/16");
        assert!(s.contains(Ipv4Addr::new(10, 1, 200, 1)));
        assert!(!s.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert_eq!(s.host(1), Ipv4Addr::new(10, 1, 0, 1));
        assert!(s.overlaps(&Subnet::parse("10.0.0.0/8").expect("parse")));
        assert!(!s.overlaps(&Subnet::parse("10.2.0.0/16").expect("parse")));
        assert!(Subnet::parse("10.0.0.0/31").is_err());
        assert!(Subnet::parse("10.0.0/16").is_err());
        assert_eq!(
            mac_string(Ipv4Addr::new(172, 17, 0, 2)),
            "02:42:ac:11:00:02"
        );
        assert_eq!(host_if(&"a".repeat(64), &"b".repeat(64)).len(), 15);
    }

    #[test]
    fn rules_isolate_and_nat() {
        let n = Network {
            id: "0123456789abcdef".into(),
            name: "demo".into(),
            subnet: "172.20.0.0/16".into(),
            gateway: "172.20.0.1".into(),
            bridge: "reg01234567".into(),
            internal: false,
            created: String::new(),
            labels: Default::default(),
        };
        let r = rules(&n);
        assert!(r.contains("table ip reg_01234567"));
        assert!(r.contains("oifname \"reg01234567\" drop"));
        assert!(r.contains("oifname != \"reg01234567\" masquerade"));
        // Published ports: DNAT-ed traffic may enter, loopback sources are masqueraded, and
        // nothing to or from 127/8 comes in from the containers.
        assert!(r.contains("oifname \"reg01234567\" ct status dnat accept"));
        assert!(r.contains("oifname \"reg01234567\" ip saddr 127.0.0.0/8 masquerade"));
        assert!(r.contains("iifname \"reg01234567\" ip daddr 127.0.0.0/8 drop"));
        let r = rules(&Network {
            internal: true,
            ..n
        });
        assert!(!r.contains("oifname != \"reg01234567\" masquerade"), "{r}");
        assert!(r.contains("iifname \"reg01234567\" drop"));
    }
}
