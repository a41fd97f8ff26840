//! The embedded DNS server a container on a user-defined network finds at 127.0.0.11 (as with
//! docker): names of containers on its networks are answered here, everything else is passed
//! to the host's resolvers unchanged.
//!
//! The socket is bound inside the container's network namespace (see
//! [`crate::netlink::udp_in`]) and served by the agent, so no address translation is needed.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use simple_dns::rdata::{RData, A};
use simple_dns::{Packet, PacketFlag, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};

/// Looks a name up among the asking container's peers.
pub type Resolver = Arc<dyn Fn(&str) -> Vec<Ipv4Addr> + Send + Sync>;

pub async fn serve(sock: tokio::net::UdpSocket, resolve: Resolver, upstream: Vec<SocketAddr>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let query = buf[..n].to_vec();
        let (sock, resolve, upstream) = (sock.clone(), resolve.clone(), upstream.clone());
        tokio::spawn(async move {
            if let Some(reply) = answer(&query, &resolve, &upstream).await {
                let _ = sock.send_to(&reply, from).await;
            }
        });
    }
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
    let mut reply = Packet::new_reply(packet.id());
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    reply.questions.push(q.clone());
    *reply.rcode_mut() = RCODE::ServerFailure;
    reply.build_bytes_vec().ok()
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
