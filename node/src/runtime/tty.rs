//! A container's terminal: the pty made inside the container, its master passed to the monitor
//! over a socket, sizes, and the relay between the master and the monitor's stdio.

use std::os::fd::{AsFd, AsRawFd};

use super::sys::err;

/// `-t`, inside the container (after pivot_root): a terminal from the container's own devpts
/// (so `tty` names it), made the controlling terminal of a new session and stdio 0-2; its
/// master goes to the monitor over `sock` (as runc's console socket).
pub(super) fn terminal(sock: std::os::fd::RawFd, size: Option<(u16, u16)>) -> Result<(), String> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| err("opening /dev/ptmx", e))?;
    nix::pty::grantpt(&master).map_err(|e| err("grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| err("unlockpt", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| err("ptsname", e))?;
    if let Some((rows, cols)) = size {
        set_terminal_size(master.as_fd(), rows, cols).map_err(|e| err("setting the size", e))?;
    }
    nix::unistd::setsid().map_err(|e| err("setsid", e))?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&name)
        .map_err(|e| err(&format!("opening {name}"), e))?;
    rustix::process::ioctl_tiocsctty(&slave)
        .map_err(|e| err("setting the controlling terminal", e))?;
    for target in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), target).map_err(|e| err("dup2", e))?;
    }
    let fds = [master.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(
        sock,
        &[std::io::IoSlice::new(b"t")],
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(|e| err("sending the terminal to the monitor", e))?;
    Ok(())
}

/// The pair of sockets over which an init (or exec'd process) sends its terminal's master.
pub fn console_socket() -> nix::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
}

/// Receives one fd sent with [`terminal`]; `None` when the init ended without sending one.
pub fn receive_fd(sock: &std::os::fd::OwnedFd) -> Option<std::os::fd::OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC).ok()?;
    let fd = control.drain().find_map(|m| match m {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    fd
}

/// Sets the size of the terminal on `fd` (a pty master: its processes get SIGWINCH).
pub fn set_terminal_size(
    fd: std::os::fd::BorrowedFd<'_>,
    rows: u16,
    cols: u16,
) -> std::io::Result<()> {
    let ws = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(fd, ws).map_err(std::io::Error::from)
}

/// The size (rows, columns) of the terminal on `fd`, if it is one.
pub fn terminal_size(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(fd).ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Copies stdin (when `input`) to the terminal's master and the master to stdout until the
/// terminal closes, and applies the `ROWS COLS` lines read from `resize` to the terminal;
/// single-threaded.
pub(super) fn relay(
    master: &std::os::fd::OwnedFd,
    input: bool,
    resize: Option<&std::os::fd::OwnedFd>,
) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let mut reading = input;
    let mut buf = [0u8; 16 * 1024];
    let mut sizes = Vec::new();
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if let Some(r) = resize {
            fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
        }
        if reading {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let at = usize::from(resize.is_some());
        let (master_ready, resize_ready, stdin_ready) = (
            ready(0),
            resize.is_some() && ready(1),
            reading && ready(1 + at),
        );
        if master_ready {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => return, // EIO: the terminal's last user is gone
                Ok(n) => {
                    use std::io::Write;
                    let mut out = std::io::stdout();
                    let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
                }
            }
        }
        if let (true, Some(r)) = (resize_ready, resize) {
            if let Ok(n) = nix::unistd::read(r.as_raw_fd(), &mut buf) {
                sizes.extend_from_slice(&buf[..n]);
                // Whole lines only; a runaway writer cannot grow this past one buffer.
                while let Some(end) = sizes.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = sizes.drain(..=end).collect();
                    let text = String::from_utf8_lossy(&line);
                    let mut f = text.split_whitespace().map(str::parse::<u16>);
                    if let (Some(Ok(rows)), Some(Ok(cols))) = (f.next(), f.next()) {
                        let _ = set_terminal_size(master.as_fd(), rows, cols);
                    }
                }
                if sizes.len() > buf.len() {
                    sizes.clear();
                }
            }
        }
        if stdin_ready {
            match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    // End of input: an EOF character tells the terminal's reader, as ^D would.
                    let _ = nix::unistd::write(master, &[4]);
                    reading = false;
                }
                Ok(n) => {
                    let _ = nix::unistd::write(master, &buf[..n]);
                }
            }
        }
    }
}
