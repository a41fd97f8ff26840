//! The per-container monitor (`reg node monitor --spec …`), started by the agent in its own
//! process group so that it outlives agent restarts. It owns the container: its stdout and
//! stderr go through pipes into `<dir>/container.log` (JSON lines, docker's json-file shape),
//! the init's host pid into `<dir>/pid`, and the exit code into `<dir>/exit` — written
//! atomically, so the agent (this one or a restarted one) learns everything from the files.

use std::io::{BufRead, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::spec::Spec;
use super::{process, tty};

pub const LOG: &str = "container.log";
pub const PID: &str = "pid";
pub const EXIT: &str = "exit";
pub const OOM: &str = "oom";
/// The FIFO a `-i` container reads (made by the agent, removed once the container has it).
pub const STDIN: &str = "stdin";
/// With `-t`: a FIFO the monitor reads `ROWS COLS` lines from (the agent's `resize` endpoint
/// writes them) and applies to the container's terminal.
pub const RESIZE: &str = "resize";

/// Writes `content` to `dir/name` atomically (temp + rename).
pub fn write_atomic(dir: &Path, name: &str, content: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, dir.join(name))
}

/// One log record.
pub fn log_line(stream: &str, text: &str) -> String {
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    format!(
        "{}\n",
        serde_json::json!({ "stream": stream, "log": text, "time": time })
    )
}

/// Makes the [`RESIZE`] FIFO and applies what arrives on it to `master` (the kernel then sends
/// SIGWINCH to the container's foreground processes). Held open for reading and writing, so it
/// never reads end-of-file; the thread ends with the monitor.
fn serve_resize(dir: &Path, master: std::fs::File) {
    let path = dir.join(RESIZE);
    let _ = std::fs::remove_file(&path);
    if nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).is_err() {
        return;
    }
    let Ok(fifo) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
    else {
        return;
    };
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(fifo).lines() {
            let Ok(line) = line else { return };
            let mut f = line.split_whitespace().map(str::parse::<u16>);
            if let (Some(Ok(rows)), Some(Ok(cols))) = (f.next(), f.next()) {
                use std::os::fd::AsFd;
                let _ = tty::set_terminal_size(master.as_fd(), rows, cols);
            }
        }
    });
}

/// The container's log file as the monitor writes it: rotated by size, or discarded.
pub(crate) struct LogWriter {
    dir: std::path::PathBuf,
    file: std::fs::File,
    written: u64,
    limits: super::spec::LogLimits,
}

/// How much of a `--log-driver none` container's output is kept for attached clients.
const DISCARD_KEEP: u64 = 1 << 20;

/// The `n`th older log file: `container.log.1` is the newest after the current one.
pub fn rotated(n: u32) -> String {
    format!("{LOG}.{n}")
}

impl LogWriter {
    /// With `discard` the output still passes through a small log, so that an attached client
    /// sees it (as with docker's `none` driver); `logs` refuses to read it.
    fn open(dir: &Path, limits: &super::spec::LogLimits) -> std::io::Result<LogWriter> {
        let mut limits = limits.clone();
        if limits.discard {
            limits.max_size = Some(
                limits
                    .max_size
                    .map_or(DISCARD_KEEP, |m| m.min(DISCARD_KEEP)),
            );
            limits.max_file = 1;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG))?;
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            written: file.metadata()?.len(),
            file,
            limits,
        })
    }

    fn write(&mut self, record: &[u8]) {
        if self.file.write_all(record).is_err() {
            return;
        }
        self.written += record.len() as u64;
        if self.limits.max_size.is_some_and(|m| self.written >= m) {
            self.rotate();
        }
    }

    /// `container.log` becomes `.1`, `.1` becomes `.2`, … the oldest beyond `max_file` goes;
    /// with one file, the log starts over. Readers notice the new file by its inode.
    fn rotate(&mut self) {
        let keep = self.limits.max_file.max(1);
        if keep > 1 {
            for n in (1..keep - 1).rev() {
                let _ = std::fs::rename(self.dir.join(rotated(n)), self.dir.join(rotated(n + 1)));
            }
            let _ = std::fs::rename(self.dir.join(LOG), self.dir.join(rotated(1)));
        } else {
            let _ = std::fs::remove_file(self.dir.join(LOG));
        }
        if let Ok(f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(LOG))
        {
            self.file = f;
            self.written = 0;
        }
    }
}

fn pump(
    from: std::fs::File,
    stream: &'static str,
    log: Arc<Mutex<LogWriter>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // One record per line, like docker's json-file driver (a very long line is cut into
        // records of at most 16 KiB; a last line without newline is written at the end).
        let mut from = std::io::BufReader::with_capacity(16 * 1024, from);
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            buf.clear();
            match (&mut from).take(16 * 1024).read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = log_line(stream, &String::from_utf8_lossy(&buf));
                    if let Ok(mut f) = log.lock() {
                        f.write(line.as_bytes());
                    }
                }
            }
        }
    })
}

/// Copies the container's input into its terminal until either side closes.
fn copy_input(mut from: std::fs::File, mut to: std::fs::File) {
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                // End of input: an EOF character tells the terminal's reader, as ^D would.
                let _ = to.write_all(&[4]);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Whether the kernel OOM-killed a process of the container's cgroup (v1 or v2).
fn oom_killed(id: &str) -> bool {
    let candidates = [
        format!("/sys/fs/cgroup/memory/reg/{id}/memory.oom_control"),
        format!("/sys/fs/cgroup/reg/{id}/memory.events"),
        format!("/sys/fs/cgroup/unified/reg/{id}/memory.events"),
    ];
    candidates.iter().any(|p| {
        std::fs::read_to_string(p).is_ok_and(|s| {
            s.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}

fn redirect(fd: &OwnedFd, target: i32) -> nix::Result<()> {
    nix::unistd::dup2(fd.as_raw_fd(), target).map(|_| ())
}

/// A spare monitor's bundle: the first line on stdin (a pipe from the agent). Stdin is
/// `/dev/null` afterwards, as for a monitor started with its bundle, and the command line reads
/// `node monitor --bundle DIR` (the agent and `ps` tell monitors apart by it; the spare was
/// started with room for it). None when the agent closed the pipe without one.
pub fn bundle_from_stdin() -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            // Paths longer than PATH_MAX are not the agent's.
            Ok(1) if line.len() < SPARE_ROOM => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            _ => return None,
        }
    }
    drop(stdin);
    if line.is_empty() {
        return None;
    }
    let null = std::fs::File::open("/dev/null").ok()?;
    redirect(&OwnedFd::from(null), 0).ok()?;
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let mut cmdline = argv0.as_bytes().to_vec();
    for a in [&b"node"[..], b"monitor", b"--bundle", &line] {
        cmdline.push(0);
        cmdline.extend_from_slice(a);
    }
    let dir: std::path::PathBuf = std::ffi::OsString::from_vec(line).into();
    // Without its name on the command line, the agent would not know the monitor as its
    // container's: better a failed start than a container it cannot follow.
    if !super::process::overwrite_cmdline(&cmdline) {
        fail(
            &dir,
            "the container's monitor could not put the container on its command line",
        );
        return None;
    }
    Some(dir)
}

/// Bytes a spare monitor's command line reserves for its bundle's path (`--spare`'s argument).
pub const SPARE_ROOM: usize = 4096;

/// Records a failure to start (125) the way a run would: a log line and the exit file.
pub fn fail(dir: &Path, why: &str) -> i32 {
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG))
        .and_then(|mut f| f.write_all(log_line("stderr", &format!("reg: {why}\n")).as_bytes()));
    let _ = write_atomic(dir, EXIT, "125");
    125
}

/// Runs the container described by `spec` to its end; returns its exit code.
pub fn monitor(spec: &Spec) -> i32 {
    let dir = spec.dir.clone();
    let fail = |why: String| fail(&dir, &why);
    // Our stdout as the agent gave it (a pipe it reads, or /dev/null): the init's pid goes
    // there once the init runs, so the agent learns it without polling for the `pid` file.
    // Kept above fd 2 and close-on-exec (fds 0-2 become the container's own stdio below).
    // (std duplicates with F_DUPFD_CLOEXEC from 3 up.)
    let mut started_to = {
        use std::os::fd::AsFd;
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(std::fs::File::from)
    };
    let log = match LogWriter::open(&dir, &spec.log) {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => return fail(format!("{}: {e}", dir.join(LOG).display())),
    };
    let pipes = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .and_then(|o| Ok((o, nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)));
    let ((out_r, out_w), (err_r, err_w)) = match pipes {
        Ok(p) => p,
        Err(e) => return fail(format!("pipes: {e}")),
    };
    let devnull = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        Ok(f) => OwnedFd::from(f),
        Err(e) => return fail(format!("/dev/null: {e}")),
    };
    // `-i`: the agent made a FIFO `stdin` and holds its write end; without a writer, reads see
    // end-of-file at once, as with /dev/null.
    let (stdin, has_input) = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(dir.join(STDIN))
    {
        Ok(f) => {
            let fd = OwnedFd::from(f);
            let _ = nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
            );
            (fd, true)
        }
        Err(_) => match devnull.try_clone() {
            Ok(d) => (d, false),
            Err(e) => return fail(format!("/dev/null: {e}")),
        },
    };
    // The init inherits fds 0, 1, 2: its input and the two pipes. With `-t` it replaces them
    // with a terminal it allocates inside the container and sends us the master end.
    let mut stdin = Some(stdin);
    if let Err(e) = stdin
        .as_ref()
        .map_or(Ok(()), |stdin| redirect(stdin, 0))
        .and_then(|()| redirect(&out_w, 1))
        .and_then(|()| redirect(&err_w, 2))
    {
        return fail(format!("redirecting output: {e}"));
    }
    drop((out_w, err_w));
    let console = if spec.tty {
        match tty::console_socket() {
            Ok(pair) => Some(pair),
            Err(e) => return fail(format!("console socket: {e}")),
        }
    } else {
        None
    };
    let started = process::start(spec, console.as_ref().map(|(_, init)| init));
    // Our own copies of the write ends go, so the readers see EOF when the container ends.
    let _ = redirect(&devnull, 0)
        .and_then(|()| redirect(&devnull, 1))
        .and_then(|()| redirect(&devnull, 2));
    let mut readers = vec![
        pump(std::fs::File::from(out_r), "stdout", log.clone()),
        pump(std::fs::File::from(err_r), "stderr", log.clone()),
    ];
    if let Some((ours, theirs)) = console {
        drop(theirs);
        // The master arrives once the init has its terminal (nothing if it failed before).
        if let Some(master) = tty::receive_fd(&ours) {
            let master = std::fs::File::from(master);
            if let Ok(m) = master.try_clone() {
                serve_resize(&dir, m);
            }
            // Without -i nobody types: the terminal stays open and silent, as with docker.
            if has_input {
                if let (Ok(input), Some(from)) = (master.try_clone(), stdin.take()) {
                    let from = std::fs::File::from(from);
                    std::thread::spawn(move || copy_input(from, input));
                }
            }
            readers.push(pump(master, "stdout", log.clone()));
        }
    }
    // The input's read end is the container's (or the terminal copier's) alone: once it is
    // closed, a client attaching to the running container learns the input has ended.
    drop(stdin.take());
    if started.is_err() {
        // Nothing started: the agent reads end-of-file now, and finds the exit file.
        drop(started_to.take());
    }
    let code = match started {
        Ok((pid, cgroup)) => {
            let _ = write_atomic(&dir, PID, &pid.as_raw().to_string());
            if let Some(mut to) = started_to.take() {
                let _ = writeln!(to, "{}", pid.as_raw());
            }
            let code = process::wait(spec, pid);
            if oom_killed(&spec.id) {
                let _ = write_atomic(&dir, OOM, "1");
            }
            drop(cgroup);
            code
        }
        Err(code) => code,
    };
    for r in readers {
        let _ = r.join();
    }
    // This run's input ends with it; the next run's is made for it.
    let _ = std::fs::remove_file(dir.join(STDIN));
    let _ = write_atomic(&dir, EXIT, &code.to_string());
    code
}
