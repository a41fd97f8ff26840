//! A host where docker has run: iptables' FORWARD chain drops by default (and br_netfilter
//! sends bridged traffic through it). Containers on one network must still reach each other.
//! Its own test binary: it changes the host's FORWARD policy while it runs (and restores it),
//! and cargo runs test binaries one at a time.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

use std::process::Command;

/// Makes `ip filter FORWARD` drop by default while alive, if no such table exists already.
struct ForwardDrop;

impl ForwardDrop {
    fn install() -> Option<ForwardDrop> {
        let nft = |script: &str| {
            Command::new("nft")
                .args(["-f", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    if let Some(mut i) = c.stdin.take() {
                        i.write_all(script.as_bytes())?;
                    }
                    c.wait()
                })
                .is_ok_and(|s| s.success())
        };
        let exists = Command::new("nft")
            .args(["list", "table", "ip", "filter"])
            .output()
            .is_ok_and(|o| o.status.success());
        if exists {
            reg_tests::skip("this host already has an ip filter table (not ours to change)");
            return None;
        }
        if Command::new("nft").arg("--version").output().is_err() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("nft is required under CI=true");
            }
            reg_tests::skip("nft missing");
            return None;
        }
        let ok = nft(
            "table ip filter {\n chain FORWARD {\n  type filter hook forward priority filter; policy drop;\n }\n}\n",
        );
        assert!(ok, "installing a dropping FORWARD chain");
        Some(ForwardDrop)
    }
}

impl Drop for ForwardDrop {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", "filter"])
            .output();
    }
}

#[test]
fn containers_talk_where_the_forward_policy_is_drop() {
    let Some(n) = node() else { return };
    let Some(_fw) = ForwardDrop::install() else {
        return;
    };
    assert_eq!(n.reg(&["network", "create", "fwd"]).0, 0);
    let server = vec![
        B,
        "sh",
        "-c",
        "/bin/busybox mkfifo /in; exec /bin/busybox nc -l -p 111 <>/in",
    ];
    let mut a = vec!["--name", "server", "--network", "fwd", IMG];
    a.extend(&server);
    n.run_d(&a);
    let (_, out, _) = n.reg(&["network", "inspect", "fwd"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("network inspect");
    let id = v[0]["Id"].as_str().expect("network id").to_string();
    let ours = format!("comment \"reg_{}\"", &id[..8]);
    let chain = || {
        Command::new("nft")
            .args(["list", "chain", "ip", "filter", "FORWARD"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    assert!(chain().contains(&ours), "no accepts of ours: {}", chain());
    let client = "echo hi | /bin/busybox nc -w 2 server 111";
    let (code, _, err) = n.run(&["--network", "fwd", IMG, B, "sh", "-c", client]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(n.reg(&["wait", "server"]).1.trim(), "0");
    assert_eq!(n.reg(&["logs", "server"]).1.trim(), "hi");
    // Our accepts (only this network's: other agents on the host may have theirs there too)
    // were in the FORWARD chain while the server ran, and leave with the network.
    assert_eq!(n.reg(&["rm", "server"]).0, 0);
    assert_eq!(n.reg(&["network", "rm", "fwd"]).0, 0);
    assert!(!chain().contains(&ours), "rules left: {}", chain());
}
