//! Taking over a listening socket from the parent process (`--listen-fd`).
//!
//! A parent that binds the socket itself and keeps it open for as long as the node may run (a
//! test harness, the playground) gives every restart of the node the same port, with no moment
//! in which the port is free and another program's connection could take it.

use std::io;
use std::os::fd::{FromRawFd, RawFd};
use tokio::net::TcpListener;

/// The inherited socket `fd`, checked to be an open, listening TCP socket.
pub fn inherited(fd: RawFd) -> Result<TcpListener, String> {
    let bad = |why: String| format!("--listen-fd {fd}: {why}");
    let os_error = || io::Error::last_os_error();
    if fd < 0 {
        return Err(bad("not a file descriptor".into()));
    }
    // SAFETY: fcntl(F_GETFD) reads the descriptor's flags; on a closed one it reports EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(bad(format!("not an open descriptor: {}", os_error())));
    }
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: both out-pointers are valid for the sizes passed.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut listening).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(bad(format!("not a socket: {}", os_error())));
    }
    if listening == 0 {
        return Err(bad("the socket is not listening".into()));
    }
    // Close-on-exec again: nothing this process might start should hold the port open.
    // SAFETY: plain flag change on a descriptor checked to be open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(bad(format!("cannot set close-on-exec: {}", os_error())));
    }
    // SAFETY: `fd` is an open listening socket that nothing else in this process uses; the
    // listener owns it from here on.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    listener
        .local_addr()
        .map_err(|e| bad(format!("not a TCP socket: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| bad(e.to_string()))?;
    TcpListener::from_std(listener).map_err(|e| bad(e.to_string()))
}
