//! `nft -f -`: applies an nftables script (reg's own tables only, see [`super::table`]).

use super::error::{failed, NetworkError};

pub fn apply(script: &str) -> Result<(), NetworkError> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            failed(format!("running nft: {e}: bridge networks need nftables (apt-get install nftables), or run with --network none|host"))
        })?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(script.as_bytes())
            .map_err(|e| failed(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(format!("running nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
