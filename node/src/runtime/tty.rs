//! A container's terminal: the pty made inside the container, its master passed to the monitor
//! over a socket, sizes, and the relay between the master and the monitor's stdio.

use std::os::fd::AsRawFd;

use super::sys::err;

nix::ioctl_write_int_bad!(set_ctty, nix::libc::TIOCSCTTY);
nix::ioctl_write_ptr_bad!(set_win_size, nix::libc::TIOCSWINSZ, nix::libc::winsize);

/// `-t`, inside the container (after pivot_root): a terminal from the container's own devpts
/// (so `tty` names it), made the controlling terminal of a new session and stdio 0-2; its
/// master goes to the monitor over `sock` (as runc's console socket).
#[allow(unsafe_code)]
pub(super) fn terminal(sock: std::os::fd::RawFd, size: Option<(u16, u16)>) -> Result<(), String> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| err("opening /dev/ptmx", e))?;
    nix::pty::grantpt(&master).map_err(|e| err("grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| err("unlockpt", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| err("ptsname", e))?;
    if let Some((rows, cols)) = size {
        let ws = nix::libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: a valid terminal fd and a valid winsize that outlives the call.
        unsafe { set_win_size(master.as_raw_fd(), &ws) }.map_err(|e| err("setting the size", e))?;
    }
    nix::unistd::setsid().map_err(|e| err("setsid", e))?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&name)
        .map_err(|e| err(&format!("opening {name}"), e))?;
    // SAFETY: the fd is the terminal just opened; TIOCSCTTY takes an int argument.
    unsafe { set_ctty(slave.as_raw_fd(), 0) }
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
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let fd = msg.cmsgs().ok()?.find_map(|c| match c {
        nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
        _ => None,
    })?;
    #[allow(unsafe_code)]
    // SAFETY: the kernel just installed this fd in our table for us; nobody else owns it.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

nix::ioctl_read_bad!(get_win_size, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// Sets the size of the terminal on `fd` (a pty master: its processes get SIGWINCH).
#[allow(unsafe_code)]
pub fn set_terminal_size(fd: std::os::fd::BorrowedFd<'_>, rows: u16, cols: u16) -> nix::Result<()> {
    let ws = nix::libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: a valid fd and a valid winsize that outlives the call.
    unsafe { set_win_size(fd.as_raw_fd(), &ws) }.map(drop)
}

/// The size (rows, columns) of the terminal on `fd`, if it is one.
#[allow(unsafe_code)]
pub fn terminal_size(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain old data; the ioctl fills it or fails.
    let mut ws: nix::libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a valid out-pointer that outlives the call.
    unsafe { get_win_size(fd.as_raw_fd(), &mut ws) }.ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Copies stdin (when `input`) to the terminal's master and the master to stdout until the
/// terminal closes; single-threaded.
pub(super) fn relay(master: &std::os::fd::OwnedFd, input: bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let mut reading = input;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
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
        let (master_ready, stdin_ready) = (ready(0), ready(1));
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
