//! A command on a terminal of the test's own: a pseudo-terminal whose master the test holds,
//! so what it types reaches the command byte for byte and everything the command shows is
//! read as it comes (no `script` in between, whose forwarding of piped input is its own).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The running command; killed (and its terminal hung up) when dropped.
pub struct OnTerminal {
    child: Child,
    master: std::fs::File,
    shown: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl OnTerminal {
    /// Starts `program args…` as the leader of a new session whose controlling terminal is a
    /// fresh 24×80 pseudo-terminal (util-linux `setsid --ctty` makes it so), with `envs` set.
    pub fn spawn(program: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> OnTerminal {
        let size = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the terminal"));
        let mut cmd = Command::new("setsid");
        cmd.args(["--wait", "--ctty"])
            .arg(program)
            .args(args)
            .stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("setsid");
        // Only the command holds the terminal now: its end reads as the master's end.
        drop(pty.slave);
        let master = std::fs::File::from(pty.master);
        let shown = Arc::new(Mutex::new(Vec::new()));
        let (mut rd, sink) = (master.try_clone().expect("dup the master"), shown.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last holder of the terminal has closed it.
            while let Ok(n) = rd.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.extend_from_slice(&buf[..n]);
                }
            }
        });
        OnTerminal {
            child,
            master,
            shown,
            reader: Some(reader),
        }
    }

    /// Types `bytes` on the terminal.
    pub fn type_bytes(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("type on the terminal");
    }

    /// Everything the terminal has shown so far.
    pub fn shown(&self) -> String {
        let s = self.shown.lock().map(|s| s.clone()).unwrap_or_default();
        String::from_utf8_lossy(&s).into_owned()
    }

    /// Waits until the terminal has shown `text` after byte `from` of what it shows; the end
    /// of that occurrence, or a panic naming what it showed after `timeout`.
    pub fn wait_for(&self, text: &str, from: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let shown = self.shown();
            if let Some(at) = shown.get(from..).and_then(|s| s.find(text)) {
                return from + at + text.len();
            }
            assert!(
                Instant::now() < deadline,
                "the terminal did not show {text:?}: {shown}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the command to end: its status, or `None` after `timeout` (it is still running).
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("the command's status") {
                // What it showed last is read before the caller looks (the terminal ends with
                // its last holder, which is the command unless it left a process behind).
                let drained = Instant::now() + Duration::from_secs(5);
                while self.reader.as_ref().is_some_and(|r| !r.is_finished())
                    && Instant::now() < drained
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
