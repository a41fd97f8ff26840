//! Bridge networks, as root: containers that reach each other by name on a user-defined network
//! (embedded DNS) or through `--link` on the default bridge, isolation between networks,
//! `--internal`, `-p` to `127.0.0.1:HOSTPORT`, an agent restart, and nothing left behind.
//! Traffic goes only to the containers and networks each test made itself.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

use std::io::{Read, Write};

/// Host links whose name starts with `prefix`.
fn links(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-br", "link"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn nft_tables() -> String {
    std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A network's bridge and nftables table names, from inspect.
fn bridge_of(n: &Node, net: &str) -> (String, String) {
    let (code, out, err) = n.reg(&["network", "inspect", net]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let br = v[0]["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .expect("bridge name")
        .to_string();
    let id = v[0]["Id"].as_str().expect("id").to_string();
    (br, format!("reg_{}", &id[..8]))
}

/// The host port of container `name`'s (one) published port, and `reg port`'s line.
fn host_port(n: &Node, name: &str) -> (u16, String) {
    let (code, out, err) = n.reg(&["port", name]);
    assert_eq!(code, 0, "{err}");
    let port = out
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("port line: {out}"));
    (port, out)
}

/// The body of `GET /index.html` from 127.0.0.1:`port`, retried for 5 s while the container's
/// server starts ("" if it never answers).
fn http_get(port: u16) -> String {
    let mut body = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
            body.clear();
            let _ = s.read_to_string(&mut body);
            if body.contains("200 OK") {
                return body;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    body
}

/// `nc -l -p 111` in container `name` on `net`: what it receives goes to its log. Its stdin is
/// a FIFO it holds open itself: at EOF on stdin busybox nc would half-close the connection.
fn server(n: &Node, name: &str, net: &str) -> String {
    let script = sh(&format!("{B} mkfifo /in; exec {B} nc -l -p 111 <>/in"));
    n.run_d(&args(&["--name", name, "--network", net, IMG], &script))
}

fn ip_of(n: &Node, name: &str) -> String {
    n.inspect(name)["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_name_and_nothing_else_does() {
    let Some(n) = node() else { return };
    let (code, _, err) = n.reg(&["network", "create", "demo"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = n.reg(&["network", "create", "other"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = n.reg(&["network", "create", "demo"]);
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    let (br, table) = bridge_of(&n, "demo");

    server(&n, "server", "demo");
    let sip = ip_of(&n, "server");
    assert!(
        sip.starts_with("172.") || sip.starts_with("192.168."),
        "{sip}"
    );
    assert!(
        links(&br).contains(&br),
        "bridge {br} is up while a container runs"
    );
    assert!(nft_tables().contains(&table), "{}", nft_tables());

    // A container on another network cannot connect, even by address.
    let probe = sh(&format!("echo nope | {B} nc -w 2 {sip} 111; echo rc=$?"));
    let (code, out, err) = n.run(&args(&["--network", "other", IMG], &probe));
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("rc=0"), "crossed networks: {out}");
    // Its DNS does not answer names of other networks (upstream: a closed loopback port).
    let look = sh(&format!("{B} nslookup server 127.0.0.11; echo rc=$?"));
    let (_, out, _) = n.run(&args(
        &["--network", "other", "--dns", "127.0.0.1", IMG],
        &look,
    ));
    assert!(!out.contains(&sip), "other network resolved server: {out}");

    // The seeds' scenario: the client finds the server by name and sends "hi".
    let client = sh(&format!(
        "cat /etc/resolv.conf; echo hi | {B} nc -w 2 server 111; echo rc=$?"
    ));
    let (code, out, err) = n.run(&args(&["--network", "demo", IMG], &client));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nameserver 127.0.0.11"), "{out}");
    let (_, code, _) = n.reg(&["wait", "server"]);
    assert_eq!(code.trim(), "0");
    let (_, logs, _) = n.reg(&["logs", "server"]);
    assert_eq!(logs.trim(), "hi", "server log");

    // Aliases and a container started later, found by one started earlier.
    let script = sh(&format!(
        "i=0; while [ $i -lt 100 ]; do {B} nslookup late 127.0.0.11 >/dev/null && echo found-late && break; {B} sleep 0.1; i=$((i+1)); done; {B} sleep 30"
    ));
    n.run_d(&args(
        &["--name", "early", "--network", "demo", IMG],
        &script,
    ));
    let late = sh(&format!("{B} sleep 30"));
    n.run_d(&args(
        &[
            "--name",
            "late-one",
            "--network-alias",
            "late",
            "--network",
            "demo",
            IMG,
        ],
        &late,
    ));
    wait_until("early finds late", || {
        n.reg(&["logs", "early"]).1.contains("found-late")
    });

    // Everything is undone when the containers and networks go.
    let (code, _, err) = n.reg(&["rm", "-f", "server", "early", "late-one"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = n.reg(&["network", "rm", "demo", "other"]);
    assert_eq!(code, 0, "{err}");
    assert!(links(&br).is_empty(), "bridge left: {:?}", links(&br));
    assert!(links("veth").iter().all(|l| !l.contains(&br[3..7])));
    assert!(!nft_tables().contains(&table), "{}", nft_tables());
    assert_eq!(n.mounts_under_data(), 0, "netns mounts left");
}

#[test]
fn link_on_the_default_bridge_publish_and_port_conflicts() {
    let Some(n) = node() else { return };
    server(&n, "srv", "bridge");
    let (br, table) = bridge_of(&n, "bridge");
    let client = sh(&format!(
        "cat /etc/hosts; echo hi | {B} nc -w 2 db 111; echo rc=$?"
    ));
    let (code, out, err) = n.run(&args(&["--link", "srv:db", IMG], &client));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("db srv"), "{out}");
    let (_, code, _) = n.reg(&["wait", "srv"]);
    assert_eq!(code.trim(), "0");
    assert_eq!(n.reg(&["logs", "srv"]).1.trim(), "hi");

    // -p: busybox httpd answers on 127.0.0.1:HOSTPORT.
    let web = sh(&format!(
        "{B} mkdir -p /www && echo hello-web > /www/index.html && exec {B} httpd -f -p 80 -h /www"
    ));
    n.run_d(&args(&["--name", "web", "-p", "127.0.0.1::80", IMG], &web));
    let (port, port_out) = host_port(&n, "web");
    assert!(port_out.starts_with("80/tcp -> 127.0.0.1:"), "{port_out}");
    let mut body = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
            body.clear();
            let _ = s.read_to_string(&mut body);
            if body.contains("hello-web") {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(body.contains("hello-web"), "{body}");
    // The kernel carried it: the network's DNAT rules counted the connection, and the port is
    // an element of its map.
    let nft_table = || {
        std::process::Command::new("nft")
            .args(["list", "table", "ip", &table])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let rules = nft_table();
    let counted: u64 = rules
        .lines()
        .filter(|l| l.contains("dnat ip to"))
        .filter_map(|l| l.split("counter packets ").nth(1))
        .filter_map(|c| c.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    let web_ip = ip_of(&n, "web");
    assert!(
        rules.contains(&format!("127.0.0.1 . {port} : {web_ip} . 80")),
        "{rules}"
    );
    assert!(
        counted > 0,
        "no packet went through the DNAT rules: {rules}"
    );

    // Bulk data both ways through the published port: 6 MiB sent to an echo server come back
    // intact, and the half-close of the sending side reaches the container.
    let echo = sh(&format!("exec {B} nc -l -p 81 -e {B} cat"));
    n.run_d(&args(
        &["--name", "echo", "-p", "127.0.0.1::81", IMG],
        &echo,
    ));
    let (echo_port, _) = host_port(&n, "echo");
    let sent: Vec<u8> = (0..6u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut back = Vec::new();
    for _ in 0..100 {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", echo_port)) else {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        };
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        let mut reader = s.try_clone().expect("clone");
        let data = sent.clone();
        let writer = std::thread::spawn(move || {
            let _ = s.write_all(&data);
            let _ = s.shutdown(std::net::Shutdown::Write);
        });
        back.clear();
        let _ = reader.read_to_end(&mut back);
        let _ = writer.join();
        if !back.is_empty() {
            break;
        }
        // A container not listening yet resets the connection: try again.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(back.len(), sent.len(), "echoed bytes");
    assert!(back == sent, "the echo differs from what was sent");

    // A taken port: a clear error, and the container does not run.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let p = taken.local_addr().expect("addr").port();
    let spec = format!("127.0.0.1:{p}:80");
    let (code, _, err) = n.reg(&args(
        &["run", "-d", "--name", "clash", "-p", &spec, IMG],
        &web,
    ));
    assert_ne!(code, 0);
    assert!(err.contains("already allocated"), "{err}");
    assert_eq!(n.inspect("clash")["State"]["Running"], false);

    // This test's veths: the host ends are named `veth<first 7 of the container id>…`.
    let mine: Vec<String> = ["web", "clash", "srv", "echo"]
        .iter()
        .filter_map(|c| {
            n.inspect(c)["Id"]
                .as_str()
                .map(|id| format!("veth{}", &id[..7]))
        })
        .collect();
    let before: Vec<String> = links("veth")
        .into_iter()
        .filter(|l| mine.iter().any(|m| l.starts_with(m)))
        .collect();
    assert!(
        !before.is_empty(),
        "the running containers' veths: {:?}",
        links("veth")
    );
    let (code, _, err) = n.reg(&["rm", "-f", "web", "clash", "srv", "echo"]);
    assert_eq!(code, 0, "{err}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(
        !nft_table().contains(&format!(". {port} :")),
        "published port left in the map: {}",
        nft_table()
    );
    assert_eq!(n.mounts_under_data(), 0, "netns mounts left");
    wait_until("veths gone", || {
        links("veth").iter().all(|l| !before.contains(l))
    });
    // The default bridge stays while the agent runs (like docker0) and goes with it.
    assert!(links(&br).contains(&br));
    let mut n = n;
    n.server.terminate();
    assert!(links(&br).is_empty(), "bridge left: {:?}", links(&br));
    assert!(!nft_tables().contains(&table), "{}", nft_tables());
}

#[test]
fn internal_networks_fixed_ips_and_an_agent_restart() {
    let Some(mut n) = node() else { return };
    let (code, _, err) = n.reg(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.123.0.0/24",
        "priv",
    ]);
    assert_eq!(code, 0, "{err}");
    let script = sh(&format!("{B} ip route; {B} sleep 60"));
    n.run_d(&args(
        &[
            "--name",
            "fixed",
            "--network",
            "priv",
            "--ip",
            "10.123.0.50",
            IMG,
        ],
        &script,
    ));
    assert_eq!(ip_of(&n, "fixed"), "10.123.0.50");
    wait_until("routes", || {
        n.reg(&["logs", "fixed"]).1.contains("10.123.0.0/24")
    });
    assert!(
        !n.reg(&["logs", "fixed"]).1.contains("default"),
        "internal: no default route"
    );
    // The same address twice: refused.
    let (code, _, err) = n.reg(&args(
        &["run", "-d", "--network", "priv", "--ip", "10.123.0.50", IMG],
        &script,
    ));
    assert_ne!(code, 0);
    assert!(err.contains("already in use"), "{err}");

    // A published port on the default bridge, to follow through the restart.
    let web = sh(&format!(
        "{B} mkdir -p /www && echo still-here > /www/index.html && exec {B} httpd -f -p 80 -h /www"
    ));
    n.run_d(&args(&["--name", "web2", "-p", "127.0.0.1::80", IMG], &web));
    let (port, _) = host_port(&n, "web2");
    assert!(http_get(port).contains("still-here"));

    // The agent dies: the kernel still forwards the port. It restarts: the container's DNS
    // answers again and the port still works.
    n.server.kill9();
    assert!(
        http_get(port).contains("still-here"),
        "while the agent is down"
    );
    n.server = reg_tests::Registry::start_all(n.tmp.path());
    n.wait_for_agent();
    assert!(http_get(port).contains("still-here"), "after the restart");
    assert_eq!(n.reg(&["rm", "-f", "web2"]).0, 0);
    let look = sh(&format!("{B} nslookup fixed 127.0.0.11"));
    let (code, out, err) = n.reg(&args(&["exec", "fixed"], &look));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("10.123.0.50"), "{out}");

    let (code, _, err) = n.reg(&["network", "rm", "priv"]);
    assert_ne!(code, 0, "in use");
    assert!(err.contains("active endpoints"), "{err}");
    assert_eq!(n.reg(&["rm", "-f", "fixed"]).0, 0);
    // The address is free again.
    let (code, out, err) = n.run(&args(
        &["--network", "priv", "--ip", "10.123.0.50", IMG],
        &sh(&format!("{B} ip -4 addr show eth0")),
    ));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("10.123.0.50/24"), "{out}");
    assert_eq!(n.reg(&["network", "rm", "priv"]).0, 0);
    assert_eq!(n.mounts_under_data(), 0, "netns mounts left");
}

#[test]
fn connect_disconnect_shared_namespaces_and_host_entries() {
    let Some(n) = node() else { return };
    assert_eq!(
        n.reg(&["network", "create", "--subnet", "10.124.0.0/24", "side"])
            .0,
        0
    );
    let (br, table) = bridge_of(&n, "side");
    n.run_d(&["--name", "a", IMG, B, "sleep", "60"]);
    let aip = ip_of(&n, "a");

    // Hot connect: a second interface with the new network's address; disconnect takes it away.
    let (code, _, err) = n.reg(&["network", "connect", "side", "a"]);
    assert_eq!(code, 0, "{err}");
    let v = n.inspect("a");
    let side_ip = v["NetworkSettings"]["Networks"]["side"]["IPAddress"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(side_ip.starts_with("10.124.0."), "{v}");
    let (code, out, err) = n.reg(&["exec", "a", B, "ip", "-4", "addr"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("{side_ip}/24")) && out.contains(&aip),
        "{out}"
    );
    let (code, _, err) = n.reg(&["network", "disconnect", "side", "a"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = n.reg(&["exec", "a", B, "ip", "-4", "addr"]);
    assert!(!out.contains(&side_ip), "{out}");

    // --network container:a shares a's namespace (and address).
    let (code, out, err) = n.run(&["--network", "container:a", IMG, B, "ip", "-4", "addr"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&aip), "{out}");

    // --add-host and --dns end up in the container's files.
    let (code, out, err) = n.run(&[
        "--add-host",
        "foo:10.1.2.3",
        "--dns",
        "10.9.9.9",
        IMG,
        B,
        "cat",
        "/etc/hosts",
        "/etc/resolv.conf",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("10.1.2.3\tfoo"), "{out}");
    assert!(out.contains("nameserver 10.9.9.9"), "{out}");
    let (code, _, err) = n.run(&["--add-host", "nocolon", IMG, B, "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("expected NAME:IP"), "{err}");

    assert_eq!(n.reg(&["rm", "-f", "a"]).0, 0);
    assert_eq!(n.reg(&["network", "rm", "side"]).0, 0);
    assert!(links(&br).is_empty(), "side's bridge goes with the network");
    assert!(!nft_tables().contains(&table));
    assert_eq!(n.mounts_under_data(), 0, "netns mounts left");
}
