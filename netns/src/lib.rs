//! Network namespaces for Ambit: a handle to one, running a closure inside it on the
//! current thread, and its cookie (the value eBPF's `bpf_get_netns_cookie` returns).
//!
//! ztunnel opens its listeners and upstream sockets inside each pod's network
//! namespace, the agent computes cookies for enrolment, and the tests build their
//! simulated pods with these same calls.
//!
//! # Layout
//! - [`Netns`]: an open namespace (`/proc/self/ns/net`, `/var/run/netns/NAME`, or a fd
//!   received over a unix socket), with [`Netns::run`] and [`Netns::cookie`];
//! - [`socket_netns_cookie`]: `SO_NETNS_COOKIE` of any socket.
//!
//! Entering a namespace is per thread (`setns(2)`); [`Netns::run`] always switches
//! back before it returns, and aborts the process if it cannot, because a thread left
//! in the wrong namespace would silently send traffic from the wrong place.

use std::{
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
};

/// `SO_NETNS_COOKIE` (include/uapi/asm-generic/socket.h); not yet in every libc crate.
const SO_NETNS_COOKIE: libc::c_int = 71;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("cannot enter network namespace (setns): {0} — is this process root (CAP_SYS_ADMIN)?")]
    Enter(io::Error),
    #[error(
        "cannot read the network-namespace cookie: {0} — the kernel needs SO_NETNS_COOKIE (5.14+)"
    )]
    Cookie(io::Error),
}

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
}

impl Netns {
    /// Opens the namespace at `path` (a `/proc/PID/ns/net` file or a bind mount such as
    /// `/var/run/netns/NAME`).
    ///
    /// # Errors
    /// [`NetnsError::Open`] when the file cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetnsError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self { fd: file.into() })
    }

    /// The namespace the calling thread is in.
    ///
    /// # Errors
    /// [`NetnsError::Open`] when `/proc/thread-self/ns/net` cannot be opened.
    pub fn current() -> Result<Self, NetnsError> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// Takes ownership of a namespace fd (for example one received with `SCM_RIGHTS`).
    #[must_use]
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// Runs `f` on the current thread inside this namespace, then switches back.
    ///
    /// # Errors
    /// [`NetnsError::Enter`] when the thread cannot enter the namespace.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let original = Self::current()?;
        setns(self.fd.as_fd()).map_err(NetnsError::Enter)?;
        let result = f();
        if let Err(error) = setns(original.fd.as_fd()) {
            // Carrying on would run the rest of this thread's work in a pod's namespace.
            eprintln!("fatal: cannot return to the original network namespace: {error}");
            std::process::abort();
        }
        Ok(result)
    }

    /// The namespace's cookie, as `bpf_get_netns_cookie` reports it to eBPF programs.
    ///
    /// # Errors
    /// [`NetnsError::Enter`] or [`NetnsError::Cookie`].
    pub fn cookie(&self) -> Result<u64, NetnsError> {
        self.run(|| {
            let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::DGRAM, None)
                .map_err(NetnsError::Cookie)?;
            socket_netns_cookie(&socket)
        })?
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Netns {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// The cookie of the network namespace `socket` was created in.
///
/// # Errors
/// [`NetnsError::Cookie`] when the kernel does not answer `SO_NETNS_COOKIE`.
pub fn socket_netns_cookie(socket: &impl AsRawFd) -> Result<u64, NetnsError> {
    let mut cookie: u64 = 0;
    let mut len =
        libc::socklen_t::try_from(std::mem::size_of::<u64>()).expect("size of u64 fits socklen_t");
    // SAFETY: `cookie` and `len` are valid for writes of the sizes passed, and the fd
    // is a live socket borrowed for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(NetnsError::Cookie(io::Error::last_os_error()))
    }
}

fn setns(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is a valid open namespace file for the duration of the call.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_of_the_current_namespace_matches_a_socket_made_here() {
        let netns = Netns::current().unwrap();
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        assert_eq!(
            netns.cookie().unwrap(),
            socket_netns_cookie(&socket).unwrap()
        );
    }
}
