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
use rtnetlink::packet_route::route::{RouteAttribute, RouteMetric};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

use super::error::{failed, NetworkError};

type Result<T> = std::result::Result<T, NetworkError>;

fn ctx<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> NetworkError + '_ {
    move |e| failed(format!("{what}: {e}"))
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
    .map_err(|_| failed("a netlink worker thread panicked"))?
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

/// Unmounts and removes a namespace file made by [`setup`] (no error when absent).
pub fn remove_netns(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(failed(format!("unmounting {}: {e}", path.display()))),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(failed(format!("removing {}: {e}", path.display())))
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
        Err(e) => Err(failed(format!("looking up link {name}: {e}"))),
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
                .add(LinkBridge::new(name).mtu(MTU).build())
                .execute()
                .await
                .map_err(ctx(&format!("creating bridge {name}")))?;
            index(h, name)
                .await?
                .ok_or_else(|| failed(format!("bridge {name} vanished after creation")))?
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

/// The MTU of bridges and veths: traffic between containers of one host never leaves it, so it
/// gets loopback-sized frames; the default route carries the uplink's MTU instead (see
/// [`Endpoint::route_mtu`]).
pub const MTU: u32 = 65000;

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
    /// The MTU of the default route: the host's uplink's, so traffic that leaves the host is
    /// never sent in frames the uplink cannot carry.
    pub route_mtu: u32,
    pub mac: [u8; 6],
}

/// A container's network, made in one pass on one thread.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The namespace file.
    pub netns: PathBuf,
    /// Make a new namespace there (else join the one it holds).
    pub create: bool,
    pub endpoints: Vec<Endpoint>,
    /// Bind the embedded DNS server's socket (127.0.0.11:53) inside.
    pub dns: bool,
}

/// Makes (or joins) the namespace, plugs a veth per endpoint into its bridge, addresses and
/// routes them inside, brings `lo` up; returns the DNS socket when asked for one.
pub fn setup(s: Setup) -> Result<Option<std::net::UdpSocket>> {
    std::thread::spawn(move || {
        block_on(async move {
            // Opened before the thread leaves the host's namespace: it stays there.
            let host = connect()?;
            if s.create {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(ctx("creating a network namespace"))?;
                std::fs::File::create(&s.netns).map_err(ctx(&format!("{}", s.netns.display())))?;
                let none: Option<&str> = None;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &s.netns,
                    none,
                    MsFlags::MS_BIND,
                    none,
                )
                .map_err(ctx(&format!(
                    "bind-mounting the namespace on {}",
                    s.netns.display()
                )))?;
            } else {
                enter(&s.netns)?;
            }
            let ns = connect()?;
            let ns_file = std::fs::File::open("/proc/thread-self/ns/net")
                .map_err(ctx("opening the new network namespace"))?;
            for e in &s.endpoints {
                // A veth of an earlier run still being torn down in the background.
                delete_link(&host, &e.host_if).await?;
                let bridge = index(&host, &e.bridge)
                    .await?
                    .ok_or_else(|| failed(format!("bridge {} does not exist", e.bridge)))?;
                let peer = LinkMessageBuilder::<LinkUnspec>::new()
                    .name(e.if_name.clone())
                    .address(e.mac.to_vec())
                    .mtu(MTU)
                    .setns_by_fd(ns_file.as_raw_fd())
                    .build();
                let msg = LinkVeth::new(&e.host_if, &e.if_name)
                    .mtu(MTU)
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                    .build();
                host.link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(ctx(&format!("creating veth {}", e.host_if)))?;
                let idx = index(&host, &e.host_if)
                    .await?
                    .ok_or_else(|| failed(format!("veth {} vanished after creation", e.host_if)))?;
                host.link()
                    .set(
                        LinkUnspec::new_with_index(idx)
                            .controller(bridge)
                            .up()
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(ctx(&format!("attaching {} to {}", e.host_if, e.bridge)))?;
                let inner = index(&ns, &e.if_name)
                    .await?
                    .ok_or_else(|| failed(format!("{} is missing in the container", e.if_name)))?;
                ns.address()
                    .add(inner, e.ip.into(), e.prefix)
                    .execute()
                    .await
                    .map_err(ctx(&format!(
                        "adding {}/{} to {}",
                        e.ip, e.prefix, e.if_name
                    )))?;
                set_up(&ns, inner, &e.if_name).await?;
                if let Some(gw) = e.gateway {
                    let mut route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                        .gateway(gw)
                        .output_interface(inner)
                        .build();
                    route
                        .attributes
                        .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(e.route_mtu)]));
                    ns.route()
                        .add(route)
                        .execute()
                        .await
                        .map_err(ctx(&format!("adding the default route via {gw}")))?;
                }
            }
            if let Some(lo) = index(&ns, "lo").await? {
                set_up(&ns, lo, "lo").await?;
            }
            s.dns.then(bind_dns).transpose()
        })
    })
    .join()
    .map_err(|_| failed("a netns worker thread panicked"))?
}

/// Deletes links by name in the host's namespace (absent ones are fine): a closure for
/// `spawn_blocking`.
pub fn delete_links(names: Vec<String>) -> impl FnOnce() -> Result<()> + Send + 'static {
    move || {
        run(None, move |h| async move {
            for n in names {
                delete_link(&h, &n).await?;
            }
            Ok(())
        })
    }
}

/// Where a container finds its embedded DNS server.
const DNS_ADDR: ([u8; 4], u16) = ([127, 0, 0, 11], 53);

/// The DNS server's socket, bound in the calling thread's network namespace.
fn bind_dns() -> Result<std::net::UdpSocket> {
    let addr = std::net::SocketAddr::from(DNS_ADDR);
    let s = std::net::UdpSocket::bind(addr).map_err(ctx(&format!("binding {addr}")))?;
    s.set_nonblocking(true)
        .map_err(ctx("making the DNS socket non-blocking"))?;
    Ok(s)
}

/// The DNS server's socket inside the namespace at `netns` (after an agent restart).
pub fn dns_socket_in(netns: &Path) -> Result<std::net::UdpSocket> {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        enter(&netns)?;
        bind_dns()
    })
    .join()
    .map_err(|_| failed("a netns worker thread panicked"))?
}
