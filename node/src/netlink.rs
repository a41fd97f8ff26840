//! Links, addresses and routes through rtnetlink, and persistent network namespaces (a bind
//! mount of a namespace file, as `ip netns add` makes).
//!
//! Every operation runs on a short-lived thread with its own current-thread runtime: a netlink
//! socket belongs to the network namespace of the thread that opened it, and a thread can
//! `setns` into a container's namespace without touching the agent's other threads.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

type Result<T> = std::result::Result<T, String>;

fn ctx<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Runs `f` with a netlink handle opened in the host's namespace (`netns` None) or inside
/// `netns`, on a thread of its own; blocks until it is done.
pub fn run<T, F, Fut>(netns: Option<PathBuf>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    std::thread::spawn(move || {
        if let Some(p) = &netns {
            enter(p)?;
        }
        block_on(async move {
            let h = connect()?;
            f(h).await
        })
    })
    .join()
    .map_err(|_| "a netlink worker thread panicked".to_string())?
}

fn block_on<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(ctx("starting a netlink runtime"))?
        .block_on(fut)
}

fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(ctx("opening netlink"))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).map_err(ctx(&format!("{}", path.display())))?;
    nix::sched::setns(f.as_fd(), CloneFlags::CLONE_NEWNET).map_err(ctx(&format!(
        "entering network namespace {}",
        path.display()
    )))
}

/// A new network namespace kept alive by a bind mount at `path` (an empty file is created).
pub fn create_netns(path: &Path) -> Result<()> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(ctx("creating a network namespace"))?;
        std::fs::File::create(&path).map_err(ctx(&format!("{}", path.display())))?;
        let none: Option<&str> = None;
        mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            none,
            MsFlags::MS_BIND,
            none,
        )
        .map_err(ctx(&format!(
            "bind-mounting the namespace on {}",
            path.display()
        )))
    })
    .join()
    .map_err(|_| "a netns worker thread panicked".to_string())?
}

/// Unmounts and removes a namespace file made by [`create_netns`] (no error when absent).
pub fn remove_netns(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(format!("unmounting {}: {e}", path.display())),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("removing {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The index of link `name`, if it exists.
pub async fn index(h: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        // No such device.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::ENODEV => Ok(None),
        Err(e) => Err(format!("looking up link {name}: {e}")),
    }
}

async fn set_up(h: &Handle, idx: u32, name: &str) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(ctx(&format!("bringing up {name}")))
}

/// Creates bridge `name` with `gateway/prefix` and brings it up (an existing one is reused).
pub async fn bridge_up(h: &Handle, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<()> {
    let idx = match index(h, name).await? {
        Some(i) => i,
        None => {
            h.link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
                .map_err(ctx(&format!("creating bridge {name}")))?;
            index(h, name)
                .await?
                .ok_or_else(|| format!("bridge {name} vanished after creation"))?
        }
    };
    let has = h
        .address()
        .get()
        .set_link_index_filter(idx)
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(ctx(&format!("listing addresses of {name}")))?
        .iter()
        .any(|a| {
            a.attributes.iter().any(|at| {
                matches!(at, rtnetlink::packet_route::address::AddressAttribute::Address(std::net::IpAddr::V4(ip)) if *ip == gateway)
            })
        });
    if !has {
        h.address()
            .add(idx, gateway.into(), prefix)
            .execute()
            .await
            .map_err(ctx(&format!("adding {gateway}/{prefix} to {name}")))?;
    }
    set_up(h, idx, name).await
}

/// Deletes link `name` (a bridge or a veth: its peer goes with it); absent is fine.
pub async fn delete_link(h: &Handle, name: &str) -> Result<()> {
    if let Some(idx) = index(h, name).await? {
        h.link()
            .del(idx)
            .execute()
            .await
            .map_err(ctx(&format!("deleting link {name}")))?;
    }
    Ok(())
}

/// What one container interface needs.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host side of the veth pair, enslaved to `bridge`.
    pub host_if: String,
    pub bridge: String,
    /// Name inside the container (`eth0`, `eth1`, …).
    pub if_name: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// Default route through this gateway (None on internal networks or extra interfaces).
    pub gateway: Option<Ipv4Addr>,
    pub mac: [u8; 6],
}

/// Plugs a container's namespace at `netns` into a bridge: a veth pair with one end on the
/// bridge and the other inside as `ep.if_name`, addressed and up, `lo` up, default route.
pub fn attach(netns: &Path, ep: Endpoint) -> Result<()> {
    let ns_file = std::fs::File::open(netns).map_err(ctx(&format!("{}", netns.display())))?;
    let e = ep.clone();
    run(None, move |h| async move {
        let bridge = index(&h, &e.bridge)
            .await?
            .ok_or_else(|| format!("bridge {} does not exist", e.bridge))?;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(e.if_name.clone())
            .address(e.mac.to_vec())
            .setns_by_fd(ns_file.as_raw_fd())
            .build();
        let msg = LinkVeth::new(&e.host_if, &e.if_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        h.link()
            .add(msg)
            .execute()
            .await
            .map_err(ctx(&format!("creating veth {}", e.host_if)))?;
        let idx = index(&h, &e.host_if)
            .await?
            .ok_or_else(|| format!("veth {} vanished after creation", e.host_if))?;
        h.link()
            .set(
                LinkUnspec::new_with_index(idx)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(ctx(&format!("attaching {} to {}", e.host_if, e.bridge)))?;
        drop(ns_file);
        Ok(())
    })?;
    run(Some(netns.to_path_buf()), move |h| async move {
        if let Some(lo) = index(&h, "lo").await? {
            set_up(&h, lo, "lo").await?;
        }
        let idx = index(&h, &ep.if_name)
            .await?
            .ok_or_else(|| format!("{} is missing in the container", ep.if_name))?;
        h.address()
            .add(idx, ep.ip.into(), ep.prefix)
            .execute()
            .await
            .map_err(ctx(&format!(
                "adding {}/{} to {}",
                ep.ip, ep.prefix, ep.if_name
            )))?;
        set_up(&h, idx, &ep.if_name).await?;
        if let Some(gw) = ep.gateway {
            let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(idx)
                .build();
            h.route()
                .add(route)
                .execute()
                .await
                .map_err(ctx(&format!("adding the default route via {gw}")))?;
        }
        Ok(())
    })
}

/// A UDP socket bound to `addr` inside the namespace at `netns` (the embedded DNS server's).
pub fn udp_in(netns: &Path, addr: std::net::SocketAddr) -> Result<std::net::UdpSocket> {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        enter(&netns)?;
        let s = std::net::UdpSocket::bind(addr).map_err(ctx(&format!("binding {addr}")))?;
        s.set_nonblocking(true)
            .map_err(ctx("making the DNS socket non-blocking"))?;
        Ok(s)
    })
    .join()
    .map_err(|_| "a netns worker thread panicked".to_string())?
}

/// `lo` up inside `netns` (a namespace with no network endpoint, e.g. `--network none`).
pub fn loopback_up(netns: &Path) -> Result<()> {
    run(Some(netns.to_path_buf()), |h| async move {
        if let Some(lo) = index(&h, "lo").await? {
            set_up(&h, lo, "lo").await?;
        }
        Ok(())
    })
}

/// Whether link `name` is present in the host's namespace.
pub fn exists(name: &str) -> bool {
    let name = name.to_string();
    run(None, move |h| async move { index(&h, &name).await })
        .ok()
        .flatten()
        .is_some()
}
