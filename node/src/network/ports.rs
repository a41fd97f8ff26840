//! Published ports (`-p [HOSTIP:][HOSTPORT:]CTRPORT[/udp]`): the kernel forwards them. Each is
//! an element of a DNAT map in the table of the container's (first) network, looked up in the
//! nat prerouting and output hooks (`network::rules`), which sends `HOSTIP:HOSTPORT` to the
//! container's address — also from the host itself to `127.0.0.1:HOSTPORT`, which works because
//! the network's bridge has `route_localnet` and masquerades loopback sources (what docker does
//! with `--userland-proxy=false`). The network's table drops anything addressed to or from 127/8
//! that arrives from its containers, so `route_localnet` does not open the host's loopback
//! services to them.
//!
//! The agent also binds each host port and relays what reaches it (TCP with splice(2)): the
//! socket holds the port, so a taken port is a clear error and no other program can take it
//! later, and the relay serves whatever the DNAT rules do not see.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::NetworkError;
use super::nft;

/// A published port once bound: `HOSTIP:HOSTPORT -> CTRPORT/PROTO`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortSpec {
    /// None: every address of the host.
    pub host_ip: Option<Ipv4Addr>,
    /// 0: any free port.
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub proto: String,
}

impl PortSpec {
    /// docker's `-p` syntax.
    pub fn parse(s: &str) -> Result<PortSpec, NetworkError> {
        let (addr, proto) = match s.rsplit_once('/') {
            Some((a, p)) if p == "tcp" || p == "udp" => (a, p),
            Some((_, p)) => {
                return Err(NetworkError::Invalid(format!(
                    "-p {s}: unknown protocol {p:?} (tcp or udp)"
                )))
            }
            None => (s, "tcp"),
        };
        let port = |p: &str, what: &str| -> Result<u16, NetworkError> {
            p.parse::<u16>()
                .map_err(|_| NetworkError::Invalid(format!("-p {s}: invalid {what} port {p:?}")))
        };
        let parts: Vec<&str> = addr.split(':').collect();
        let (ip, host, ctr) = match parts.as_slice() {
            [c] => (None, 0, port(c, "container")?),
            [h, c] => (None, port(h, "host")?, port(c, "container")?),
            [ip, h, c] => {
                let ip: Ipv4Addr = ip.parse().map_err(|_| {
                    NetworkError::Invalid(format!("-p {s}: invalid host address {ip:?}"))
                })?;
                let h = if h.is_empty() { 0 } else { port(h, "host")? };
                (Some(ip), h, port(c, "container")?)
            }
            _ => {
                return Err(NetworkError::Invalid(format!(
                    "-p {s}: expected [HOSTIP:][HOSTPORT:]CONTAINERPORT[/udp]"
                )))
            }
        };
        if ctr == 0 {
            return Err(NetworkError::Invalid(format!(
                "-p {s}: the container port cannot be 0"
            )));
        }
        Ok(PortSpec {
            host_ip: ip.filter(|i| !i.is_unspecified()),
            host_port: host,
            container_port: ctr,
            proto: proto.to_string(),
        })
    }
}

/// Binds the host side of `p` and relays it to `target`. Fails when the port is taken.
pub async fn publish(
    p: &PortSpec,
    target: Ipv4Addr,
) -> Result<(PortBinding, tokio::task::AbortHandle), NetworkError> {
    let ip = p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let listen = SocketAddr::from((ip, p.host_port));
    let dest = SocketAddr::from((target, p.container_port));
    let taken = |e: std::io::Error| {
        NetworkError::Conflict(format!(
            "cannot publish {}:{} -> {}/{}: {e}{}",
            ip,
            p.host_port,
            p.container_port,
            p.proto,
            if e.kind() == std::io::ErrorKind::AddrInUse {
                " (the port is already allocated: choose another host port)"
            } else {
                ""
            }
        ))
    };
    let (port, task) = if p.proto == "udp" {
        let s = tokio::net::UdpSocket::bind(listen).await.map_err(taken)?;
        let port = s.local_addr().map_err(taken)?.port();
        (port, tokio::spawn(relay_udp(s, dest)).abort_handle())
    } else {
        let l = tokio::net::TcpListener::bind(listen).await.map_err(taken)?;
        let port = l.local_addr().map_err(taken)?.port();
        (port, tokio::spawn(relay_tcp(l, dest)).abort_handle())
    };
    Ok((
        PortBinding {
            host_ip: ip.to_string(),
            host_port: port,
            container_port: p.container_port,
            proto: p.proto.clone(),
        },
        task,
    ))
}

/// The nftables maps of published ports in a network's table (see `network::rules`): keyed by
/// host address and port, or by port alone for every local address (`-p PORT:PORT`).
pub const MAPS: [&str; 4] = ["ports_tcp", "ports_tcp_any", "ports_udp", "ports_udp_any"];

/// The map element of each binding: `(map, key, value)`.
fn elements(bound: &[PortBinding], target: Ipv4Addr) -> Vec<(String, String, String)> {
    bound
        .iter()
        .map(|b| {
            let proto = if b.proto == "udp" { "udp" } else { "tcp" };
            let (map, key) = match b.host_ip.parse::<Ipv4Addr>() {
                Ok(ip) if !ip.is_unspecified() => {
                    (format!("ports_{proto}"), format!("{ip} . {}", b.host_port))
                }
                _ => (format!("ports_{proto}_any"), b.host_port.to_string()),
            };
            (map, key, format!("{target} . {}", b.container_port))
        })
        .collect()
}

/// Makes the kernel forward `bound` to `target` (elements of the maps in network table `table`).
/// An element left by an agent that died is replaced.
pub fn dnat_add(table: &str, bound: &[PortBinding], target: Ipv4Addr) -> Result<(), NetworkError> {
    let els = elements(bound, target);
    let add: String = els
        .iter()
        .map(|(m, k, v)| format!("add element ip {table} {m} {{ {k} : {v} }}\n"))
        .collect();
    if nft::apply(&add).is_ok() {
        return Ok(());
    }
    for (m, k, _) in &els {
        let _ = nft::apply(&format!("delete element ip {table} {m} {{ {k} }}\n"));
    }
    nft::apply(&add)
}

/// Stops forwarding `bound`.
pub fn dnat_remove(table: &str, bound: &[PortBinding]) -> Result<(), NetworkError> {
    let del: String = elements(bound, Ipv4Addr::UNSPECIFIED)
        .iter()
        .map(|(m, k, _)| format!("delete element ip {table} {m} {{ {k} }}\n"))
        .collect();
    nft::apply(&del)
}

async fn relay_tcp(l: tokio::net::TcpListener, dest: SocketAddr) {
    // The relays die with the listener: aborting this task drops the JoinSet.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            a = l.accept() => {
                let Ok((client, _)) = a else { continue };
                conns.spawn(async move {
                    let _ = client.set_nodelay(true);
                    let Ok(up) = tokio::net::TcpStream::connect(dest).await else { return };
                    let _ = up.set_nodelay(true);
                    // Each direction ends at its EOF; an error ends both.
                    let _ = tokio::try_join!(splice_one_way(&client, &up), splice_one_way(&up, &client));
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Size of the pipe between the two sockets of a relayed connection.
const PIPE_BYTES: usize = 1 << 20;

/// Relays `from` → `to` with splice(2) through a pipe: the kernel moves the socket buffers'
/// pages across, nothing is copied through this process (docker's proxy copies every byte
/// through user space). At `from`'s EOF, `to`'s write side is shut down.
async fn splice_one_way(
    from: &tokio::net::TcpStream,
    to: &tokio::net::TcpStream,
) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
    use std::os::fd::{AsFd, AsRawFd};
    use tokio::io::Interest;
    let (pipe_r, pipe_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    // A larger pipe means fewer wake-ups; the default (64 KiB) is kept if the host refuses.
    let cap = fcntl(
        pipe_w.as_raw_fd(),
        FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32),
    )
    .map(|n| n as usize)
    .unwrap_or(64 * 1024);
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        // The pipe is empty here, so a would-block can only come from the socket.
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice(from.as_fd(), None, pipe_w.as_fd(), None, cap, flags).map_err(Into::into)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            let _ = nix::sys::socket::shutdown(to.as_raw_fd(), nix::sys::socket::Shutdown::Write);
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe_r.as_fd(), None, to.as_fd(), None, left, flags).map_err(Into::into)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// UDP: one upstream socket per client address, forgotten after two idle minutes.
async fn relay_udp(s: tokio::net::UdpSocket, dest: SocketAddr) {
    let s = Arc::new(s);
    let mut peers: HashMap<SocketAddr, Arc<tokio::net::UdpSocket>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            r = s.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { return };
                let up = match peers.get(&from) {
                    Some(u) => u.clone(),
                    None => {
                        let Ok(u) = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await else { continue };
                        if u.connect(dest).await.is_err() { continue }
                        let u = Arc::new(u);
                        peers.insert(from, u.clone());
                        let (back, u2) = (s.clone(), u.clone());
                        tasks.spawn(async move {
                            let mut b = vec![0u8; 65536];
                            while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(120), u2.recv(&mut b)).await {
                                let _ = back.send_to(&b[..n], from).await;
                            }
                            from
                        });
                        u
                    }
                };
                let _ = up.send(&buf[..n]).await;
            }
            Some(Ok(gone)) = tasks.join_next(), if !tasks.is_empty() => { peers.remove(&gone); }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_map_element_per_binding() {
        let b = |ip: &str, port, proto: &str| PortBinding {
            host_ip: ip.to_string(),
            host_port: port,
            container_port: 80,
            proto: proto.to_string(),
        };
        let els = elements(
            &[b("0.0.0.0", 8080, "tcp"), b("127.0.0.1", 5353, "udp")],
            Ipv4Addr::new(10, 88, 0, 2),
        );
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            els,
            vec![
                s("ports_tcp_any", "8080", "10.88.0.2 . 80"),
                s("ports_udp", "127.0.0.1 . 5353", "10.88.0.2 . 80"),
            ]
        );
        assert!(els.iter().all(|(m, _, _)| MAPS.contains(&m.as_str())));
    }

    #[test]
    fn parses_docker_syntax() {
        let p = PortSpec::parse("8080:80").expect("parse");
        assert_eq!((p.host_ip, p.host_port, p.container_port), (None, 8080, 80));
        assert_eq!(p.proto, "tcp");
        let p = PortSpec::parse("127.0.0.1:9000:90/udp").expect("parse");
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!((p.host_port, p.proto.as_str()), (9000, "udp"));
        let p = PortSpec::parse("127.0.0.1::53").expect("parse");
        assert_eq!(p.host_port, 0);
        assert_eq!(PortSpec::parse("80").expect("parse").host_port, 0);
        for bad in ["x:80", "80:0", "1:2:3:4", "80/sctp", "300.0.0.1:1:2"] {
            assert!(PortSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
