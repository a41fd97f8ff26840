//! The embedded DNS server a container on a user-defined network finds at 127.0.0.11 (as with
//! docker): names of containers on its networks are answered here, everything else is passed
//! to the host's resolvers unchanged.
//!
//! The socket is bound inside the container's network namespace (see
//! [`super::netlink::dns_socket_in`]) and served by the agent, so no address translation is needed.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use simple_dns::rdata::{RData, A};
use simple_dns::{Packet, PacketFlag, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};

/// Looks a name up among the asking container's peers.
pub type Resolver = Arc<dyn Fn(&str) -> Vec<Ipv4Addr> + Send + Sync>;

/// Queries one listener (one container) has in flight at once; each forwarded one holds a host
/// socket for up to 3 s.
pub const MAX_IN_FLIGHT_PER_LISTENER: usize = 64;
/// Queries in flight across the whole agent (docker's embedded resolver allows 1024).
pub const MAX_IN_FLIGHT: usize = 1024;

fn agent_slots() -> Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    SLOTS
        .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)))
        .clone()
}

/// Serves queries on `sock`. Bounded: beyond [`MAX_IN_FLIGHT_PER_LISTENER`] queries of this
/// listener or [`MAX_IN_FLIGHT`] of the agent, a query is answered SERVFAIL at once, so a
/// flood from a container holds a bounded number of host sockets and tasks.
pub async fn serve(sock: tokio::net::UdpSocket, resolve: Resolver, upstream: Vec<SocketAddr>) {
    let sock = Arc::new(sock);
    let mine = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT_PER_LISTENER));
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let query = buf[..n].to_vec();
        let slots = mine
            .clone()
            .try_acquire_owned()
            .ok()
            .zip(agent_slots().try_acquire_owned().ok());
        let Some(slots) = slots else {
            if let Some(reply) = server_failure(&query) {
                let _ = sock.send_to(&reply, from).await;
            }
            continue;
        };
        let (sock, resolve, upstream) = (sock.clone(), resolve.clone(), upstream.clone());
        tokio::spawn(async move {
            let _slots = slots;
            if let Some(reply) = answer(&query, &resolve, &upstream).await {
                let _ = sock.send_to(&reply, from).await;
            }
        });
    }
}

/// SERVFAIL for `query` (when it parses at all).
fn server_failure(query: &[u8]) -> Option<Vec<u8>> {
    let packet = Packet::parse(query).ok()?;
    let mut reply = Packet::new_reply(packet.id());
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if let Some(q) = packet.questions.first() {
        reply.questions.push(q.clone());
    }
    *reply.rcode_mut() = RCODE::ServerFailure;
    reply.build_bytes_vec().ok()
}

/// The reply to one query: from the container table, else from upstream.
async fn answer(query: &[u8], resolve: &Resolver, upstream: &[SocketAddr]) -> Option<Vec<u8>> {
    let packet = Packet::parse(query).ok()?;
    let q = packet.questions.first()?;
    let name = q.qname.to_string();
    let ips = resolve(&name);
    if !ips.is_empty() {
        let mut reply = Packet::new_reply(packet.id());
        reply.set_flags(PacketFlag::RECURSION_AVAILABLE | PacketFlag::AUTHORITATIVE_ANSWER);
        if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
            reply.set_flags(PacketFlag::RECURSION_DESIRED);
        }
        reply.questions.push(q.clone());
        // A container has IPv4 addresses only: AAAA and the rest get an empty NOERROR, so the
        // client goes on with the A answer instead of waiting for a resolver.
        if matches!(q.qtype, QTYPE::TYPE(TYPE::A) | QTYPE::ANY) {
            for ip in ips {
                reply.answers.push(ResourceRecord::new(
                    q.qname.clone(),
                    CLASS::IN,
                    600,
                    RData::A(A {
                        address: u32::from(ip),
                    }),
                ));
            }
        }
        return reply.build_bytes_vec().ok();
    }
    for up in upstream {
        if let Some(r) = forward(query, *up).await {
            return Some(r);
        }
    }
    server_failure(query)
}

async fn forward(query: &[u8], to: SocketAddr) -> Option<Vec<u8>> {
    let bind: SocketAddr = if to.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = tokio::net::UdpSocket::bind(bind).await.ok()?;
    s.connect(to).await.ok()?;
    s.send(query).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{Name, Question, QCLASS};

    fn query(name: &str, t: TYPE) -> Vec<u8> {
        let mut p = Packet::new_query(7);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(t),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.build_bytes_vec().expect("query")
    }

    /// Sockets this test process holds (other tests of the process open files, not sockets).
    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
    }

    #[tokio::test]
    async fn a_flood_holds_a_bounded_number_of_sockets() {
        // An upstream that never answers: every forwarded query holds its socket for 3 s.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let upstream = vec![silent.local_addr().expect("addr")];
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let at = server.local_addr().expect("addr");
        let r: Resolver = Arc::new(|_: &str| Vec::new());
        let before = open_fds();
        let task = tokio::spawn(serve(server, r, upstream));
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let flood = 300;
        for i in 0..flood {
            client
                .send_to(&query(&format!("n{i}.example"), TYPE::A), at)
                .await
                .expect("send");
        }
        // Everything beyond the listener's bound is answered SERVFAIL at once.
        let mut failed = 0;
        let mut buf = vec![0u8; 4096];
        while failed < flood - MAX_IN_FLIGHT_PER_LISTENER {
            let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
                .await
                .expect("an immediate SERVFAIL")
                .expect("recv");
            let p = Packet::parse(&buf[..n]).expect("parse");
            assert_eq!(p.rcode(), RCODE::ServerFailure);
            failed += 1;
        }
        let held = open_fds().saturating_sub(before);
        assert!(
            held <= MAX_IN_FLIGHT_PER_LISTENER + 8,
            "{held} descriptors held by {flood} queries"
        );
        task.abort();
    }

    #[tokio::test]
    async fn answers_known_names_and_fails_unknown_without_upstream() {
        let r: Resolver = Arc::new(|n: &str| {
            if n.trim_end_matches('.') == "server" {
                vec![Ipv4Addr::new(172, 18, 0, 2)]
            } else {
                Vec::new()
            }
        });
        let a = answer(&query("server", TYPE::A), &r, &[])
            .await
            .expect("reply");
        let p = Packet::parse(&a).expect("parse");
        assert_eq!(p.id(), 7);
        assert_eq!(p.answers.len(), 1);
        match &p.answers[0].rdata {
            RData::A(a) => assert_eq!(Ipv4Addr::from(a.address), Ipv4Addr::new(172, 18, 0, 2)),
            other => panic!("{other:?}"),
        }
        let aaaa = answer(&query("server", TYPE::AAAA), &r, &[])
            .await
            .expect("reply");
        let p = Packet::parse(&aaaa).expect("parse");
        assert!(p.answers.is_empty());
        assert_eq!(p.rcode(), RCODE::NoError);
        let unknown = answer(&query("elsewhere", TYPE::A), &r, &[])
            .await
            .expect("reply");
        assert_eq!(
            Packet::parse(&unknown).expect("parse").rcode(),
            RCODE::ServerFailure
        );
    }
}
