//! `wasi:sockets/tcp` as wasmtime-wasi implements it, with `TCP_NODELAY` on the sockets a
//! sidecar listens on, accepts and connects.
//!
//! WASI 0.2 has no `TCP_NODELAY` (it was taken out before Preview 2, WASI issue 717), so every
//! guest socket runs Nagle's algorithm: a response written in pieces (a proxy's headers, then
//! its body) waits for the peer's delayed ACK, 40 ms on Linux, once per response. Servers and
//! proxies (nginx, envoy, Go's net package) all turn it off; so does wpod, for its sidecars.
//!
//! wasmtime-wasi keeps its sockets' descriptors private, so the descriptor is found another way:
//! - **When the socket is made** (almost always): the kernel gives a new descriptor the lowest
//!   free number, so the number an `open` gets just before is the one the socket gets, unless
//!   another thread takes it in between. The socket there is checked to be a fresh TCP socket
//!   (a stream, unbound, without the option) and gets the option, which it keeps through bind,
//!   listen and connect; accepted sockets inherit it from their listener (Linux copies
//!   `nonagle` into each one). An `open`, a `close` and a few `getsockopt`s.
//! - **Else, by its addresses**, which the guest's resource answers: a listener by its local
//!   address just before it listens (after, a connection could complete its handshake, and be
//!   copied from the listener, before the option is set: CI caught one), a connected socket by
//!   its local and remote addresses once the connect is done: a scan of this process's descriptors (25 µs at 200, growing with their
//!   number). A socket is found before the guest can use it (the guest is inside this call),
//!   and no other socket of this process has the same addresses.
//!
//! Were the check at creation to pass on another thread's fresh socket instead, that one gets
//! the option (any TCP socket of wpod may have it: the guests', the TLS client's, the probes'),
//! and the guest's runs with Nagle's algorithm: latency lost, nothing else.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    getpeername, getsockname, getsockopt, setsockopt, sockopt, SockType, SockaddrStorage,
};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::bindings::sockets::network::{
    self, ErrorCode, IpAddressFamily, IpSocketAddress, Network,
};
use wasmtime_wasi::p2::bindings::sockets::tcp::{self, HostTcpSocket, ShutdownType};
use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, SocketError, SocketResult};
use wasmtime_wasi::sockets::WasiSocketsCtxView;

type TcpSocket = wasmtime_wasi::p2::TcpSocket;

/// wasmtime-wasi's TCP host, setting `TCP_NODELAY` on what it listens on and connects.
pub struct NoDelay<'a> {
    pub inner: WasiSocketsCtxView<'a>,
    /// The sockets (by rep) that got the option when they were made.
    pub done: &'a mut HashSet<u32>,
}

pub struct HasNoDelay;

impl wasmtime::component::HasData for HasNoDelay {
    type Data<'a> = NoDelay<'a>;
}

type Inner<'a> = WasiSocketsCtxView<'a>;

impl tcp::Host for NoDelay<'_> {}

impl tcp_create_socket::Host for NoDelay<'_> {
    fn create_tcp_socket(
        &mut self,
        address_family: IpAddressFamily,
    ) -> SocketResult<Resource<TcpSocket>> {
        let next = lowest_free_fd();
        let socket = <Inner<'_> as tcp_create_socket::Host>::create_tcp_socket(
            &mut self.inner,
            address_family,
        )?;
        if next.is_some_and(set_on_fresh) {
            self.done.insert(socket.rep());
        }
        Ok(socket)
    }
}

/// The error conversion `tcp`'s functions need, as wasmtime's.
impl network::Host for NoDelay<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        <Inner<'_> as network::Host>::convert_error_code(&mut self.inner, error)
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        <Inner<'_> as network::Host>::network_error_code(&mut self.inner, err)
    }
}

impl network::HostNetwork for NoDelay<'_> {
    fn drop(&mut self, this: Resource<Network>) -> wasmtime::Result<()> {
        <Inner<'_> as network::HostNetwork>::drop(&mut self.inner, this)
    }
}

/// Forwards a socket method to wasmtime's host unchanged.
macro_rules! forward {
    ($(fn $name:ident(&mut self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(
            fn $name(&mut self $(, $arg: $ty)*) -> $ret {
                <Inner<'_> as HostTcpSocket>::$name(&mut self.inner $(, $arg)*)
            }
        )*
    };
}

impl HostTcpSocket for NoDelay<'_> {
    async fn start_bind(
        &mut self,
        this: Resource<TcpSocket>,
        network: Resource<Network>,
        local_address: IpSocketAddress,
    ) -> SocketResult<()> {
        <Inner<'_> as HostTcpSocket>::start_bind(&mut self.inner, this, network, local_address)
            .await
    }

    async fn start_listen(&mut self, this: Resource<TcpSocket>) -> SocketResult<()> {
        let rep = this.rep();
        // Before it listens, bound: each connection it accepts is a copy made when the
        // connection's handshake completes, with the options it has then.
        if !self.done.contains(&rep) {
            if let Ok(local) = self.local_address(Resource::new_borrow(rep)) {
                set_nodelay_on(&SocketAddr::from(local), None);
            }
        }
        <Inner<'_> as HostTcpSocket>::start_listen(&mut self.inner, this).await
    }

    fn finish_connect(
        &mut self,
        this: Resource<TcpSocket>,
    ) -> SocketResult<(Resource<DynInputStream>, Resource<DynOutputStream>)> {
        let rep = this.rep();
        let streams = <Inner<'_> as HostTcpSocket>::finish_connect(&mut self.inner, this)?;
        if self.done.contains(&rep) {
            return Ok(streams);
        }
        let local = self.local_address(Resource::new_borrow(rep));
        let remote = self.remote_address(Resource::new_borrow(rep));
        if let (Ok(local), Ok(remote)) = (local, remote) {
            set_nodelay_on(&local.into(), Some(&remote.into()));
        }
        Ok(streams)
    }

    forward! {
        fn finish_bind(&mut self, this: Resource<TcpSocket>) -> SocketResult<()>;
        fn start_connect(&mut self, this: Resource<TcpSocket>, network: Resource<Network>, remote_address: IpSocketAddress) -> SocketResult<()>;
        fn finish_listen(&mut self, this: Resource<TcpSocket>) -> SocketResult<()>;
        fn accept(&mut self, this: Resource<TcpSocket>) -> SocketResult<(Resource<TcpSocket>, Resource<DynInputStream>, Resource<DynOutputStream>)>;
        fn local_address(&mut self, this: Resource<TcpSocket>) -> SocketResult<IpSocketAddress>;
        fn remote_address(&mut self, this: Resource<TcpSocket>) -> SocketResult<IpSocketAddress>;
        fn is_listening(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<bool>;
        fn address_family(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<IpAddressFamily>;
        fn set_listen_backlog_size(&mut self, this: Resource<TcpSocket>, value: u64) -> SocketResult<()>;
        fn keep_alive_enabled(&mut self, this: Resource<TcpSocket>) -> SocketResult<bool>;
        fn set_keep_alive_enabled(&mut self, this: Resource<TcpSocket>, value: bool) -> SocketResult<()>;
        fn keep_alive_idle_time(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64>;
        fn set_keep_alive_idle_time(&mut self, this: Resource<TcpSocket>, value: u64) -> SocketResult<()>;
        fn keep_alive_interval(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64>;
        fn set_keep_alive_interval(&mut self, this: Resource<TcpSocket>, value: u64) -> SocketResult<()>;
        fn keep_alive_count(&mut self, this: Resource<TcpSocket>) -> SocketResult<u32>;
        fn set_keep_alive_count(&mut self, this: Resource<TcpSocket>, value: u32) -> SocketResult<()>;
        fn hop_limit(&mut self, this: Resource<TcpSocket>) -> SocketResult<u8>;
        fn set_hop_limit(&mut self, this: Resource<TcpSocket>, value: u8) -> SocketResult<()>;
        fn receive_buffer_size(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64>;
        fn set_receive_buffer_size(&mut self, this: Resource<TcpSocket>, value: u64) -> SocketResult<()>;
        fn send_buffer_size(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64>;
        fn set_send_buffer_size(&mut self, this: Resource<TcpSocket>, value: u64) -> SocketResult<()>;
        fn subscribe(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<Resource<DynPollable>>;
        fn shutdown(&mut self, this: Resource<TcpSocket>, shutdown_type: ShutdownType) -> SocketResult<()>;
    }

    fn drop(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<()> {
        // Reps are reused: the next resource under this one is another socket.
        self.done.remove(&this.rep());
        <Inner<'_> as HostTcpSocket>::drop(&mut self.inner, this)
    }
}

/// The number the next descriptor this process makes gets, if no other thread makes one first.
fn lowest_free_fd() -> Option<RawFd> {
    use nix::fcntl::{open, OFlag};
    use std::os::fd::AsRawFd;
    let fd = open(
        "/",
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    Some(fd.as_raw_fd())
}

/// Sets `TCP_NODELAY` on `fd` if it is a fresh TCP socket: a stream of the internet families,
/// not bound yet, without the option (so not one a scan or another creation already set).
/// Returns whether it did.
fn set_on_fresh(fd: RawFd) -> bool {
    // SAFETY: see `find_socket`; only a socket that checks out as a fresh TCP socket is changed.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    let unbound =
        |a: Option<SocketAddr>| a.is_some_and(|a| a.port() == 0 && a.ip().is_unspecified());
    let fresh = getsockopt(&b, sockopt::SockType).is_ok_and(|t| t == SockType::Stream)
        && addr(getsockname(fd)).is_ok_and(unbound)
        && getsockopt(&b, sockopt::TcpNoDelay).is_ok_and(|on| !on);
    fresh && setsockopt(&b, sockopt::TcpNoDelay, &true).is_ok()
}

/// Sets `TCP_NODELAY` on this process's TCP socket bound to `local`: the one connected to
/// `remote`, or with `None`, the one connected to nothing (bound, or listening: the kernel
/// lets only one socket hold an address so). Returns whether it found the socket.
///
/// Failing to find it costs only the latency the option saves, so it is logged, not an error.
pub fn set_nodelay_on(local: &SocketAddr, remote: Option<&SocketAddr>) -> bool {
    let is_it = |fd: RawFd| -> Result<bool, Errno> {
        if addr(getsockname(fd))? != Some(*local) {
            return Ok(false);
        }
        // SAFETY: see `find_socket`.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        Ok(match remote {
            Some(remote) => addr(getpeername(fd))? == Some(*remote),
            None => {
                getsockopt(&borrowed, sockopt::AcceptConn).unwrap_or(false)
                    || getpeername::<SockaddrStorage>(fd) == Err(Errno::ENOTCONN)
            }
        })
    };
    let set = find_socket(is_it).is_some_and(|fd| {
        // SAFETY: see `find_socket`; the socket found is the guest's, which only the guest
        // closes, and the guest waits for this call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        setsockopt(&fd, sockopt::TcpNoDelay, &true).is_ok()
    });
    if !set {
        tracing::debug!(%local, ?remote, "TCP_NODELAY not set: socket not found");
    }
    set
}

/// A socket address as std has it; `Ok(None)` for one of another family (or no socket),
/// `Err(EBADF)` for a number that is no descriptor.
fn addr(a: nix::Result<SockaddrStorage>) -> Result<Option<SocketAddr>, Errno> {
    let a = match a {
        Ok(a) => a,
        Err(Errno::EBADF) => return Err(Errno::EBADF),
        Err(_) => return Ok(None),
    };
    if let Some(v4) = a.as_sockaddr_in() {
        return Ok(Some(SocketAddr::V4((*v4).into())));
    }
    Ok(a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
}

/// How many numbers in a row that are no descriptor end the quick scan.
const GAP: u32 = 64;

/// The first of this process's descriptors that `is_it` (which answers `Err(EBADF)` for a
/// number that is no descriptor), by number.
///
/// Descriptors are numbered from 0 with few holes (the kernel hands out the lowest free
/// number), so numbers are tried in order until [`GAP`] in a row are free: a few hundred
/// `getsockname` calls, 20 µs. Past a larger hole the listing of `/proc/self/fd` finds the rest
/// (that listing alone costs 50 µs at 200 descriptors).
///
/// SAFETY (of the borrows here and in `is_it`): another thread may close a descriptor
/// meanwhile, and open another under its number: the calls then fail (EBADF, ENOTSOCK) or
/// describe that other file, whose addresses are not the ones sought. Nothing is changed
/// through a descriptor before it matched.
fn find_socket(is_it: impl Fn(RawFd) -> Result<bool, Errno>) -> Option<RawFd> {
    let (mut fd, mut free) = (0, 0);
    while free < GAP {
        match is_it(fd) {
            Ok(true) => return Some(fd),
            Ok(false) => free = 0,
            Err(_) => free += 1,
        }
        fd += 1;
    }
    let past = fd;
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    dir.flatten().find_map(|entry| {
        let n: RawFd = entry.file_name().to_str()?.parse().ok()?;
        (n >= past && is_it(n) == Ok(true)).then_some(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{fcntl, FcntlArg};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    fn nodelay(fd: &impl AsFd) -> bool {
        getsockopt(fd, sockopt::TcpNoDelay).expect("getsockopt TCP_NODELAY")
    }

    fn tcp_socket() -> OwnedFd {
        use nix::sys::socket::{socket, AddressFamily, SockFlag};
        socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket")
    }

    #[test]
    fn a_socket_gets_the_option_when_it_is_made_and_only_a_fresh_one() {
        use std::os::fd::AsRawFd;
        // Another test's thread may take the number in between; the next try will do.
        let made = (0..100).find_map(|_| {
            let next = lowest_free_fd().expect("a free number");
            let s = tcp_socket();
            (s.as_raw_fd() == next).then_some((next, s))
        });
        let (fd, s) = made.expect("a socket under the number predicted, in 100 tries");
        assert!(!nodelay(&s));
        assert!(set_on_fresh(fd));
        assert!(nodelay(&s));
        assert!(!set_on_fresh(fd), "one that has the option is not fresh");
        // Bound, listening or connected: not fresh; a file: not a socket.
        let bound = tcp_socket();
        let at = nix::sys::socket::SockaddrIn::new(127, 0, 0, 1, 0);
        nix::sys::socket::bind(bound.as_raw_fd(), &at).expect("bind");
        assert!(!set_on_fresh(bound.as_raw_fd()) && !nodelay(&bound));
        let file = std::fs::File::open("/proc/self/stat").expect("a file");
        assert!(!set_on_fresh(file.as_raw_fd()));
    }

    #[test]
    fn the_listener_and_the_connected_socket_are_found_by_their_addresses() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let at = listener.local_addr().expect("local_addr");
        let client = TcpStream::connect(at).expect("connect");
        let (served, _) = listener.accept().expect("accept");
        assert!(!nodelay(&listener) && !nodelay(&client) && !nodelay(&served));

        // The listener, by its address alone (the accepted socket shares it, not the state).
        assert!(set_nodelay_on(&at, None));
        assert!(nodelay(&listener) && !nodelay(&served));
        // Accepted after the option was set: inherited.
        let client2 = TcpStream::connect(at).expect("connect");
        let (served2, _) = listener.accept().expect("accept");
        assert!(nodelay(&served2) && !nodelay(&client2));

        // The client end, by its pair of addresses (the server end has them swapped).
        let (local, remote) = (
            client.local_addr().expect("a"),
            client.peer_addr().expect("b"),
        );
        assert!(set_nodelay_on(&local, Some(&remote)));
        assert!(nodelay(&client) && !nodelay(&served) && !nodelay(&client2));

        // Nothing with these addresses: nothing changed, and said so.
        let gone: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert!(!set_nodelay_on(&gone, Some(&remote)));
        assert!(
            !set_nodelay_on(&local, None),
            "a connected socket is not connected to nothing"
        );

        // Bound, before it listens (a scan's case): what it accepts later has the option.
        let bound = tcp_socket();
        let any = nix::sys::socket::SockaddrIn::new(127, 0, 0, 1, 0);
        nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&bound), &any).expect("bind");
        let bound_at: SocketAddr = addr(getsockname(std::os::fd::AsRawFd::as_raw_fd(&bound)))
            .expect("a socket")
            .expect("an address");
        assert!(set_nodelay_on(&bound_at, None) && nodelay(&bound));
        nix::sys::socket::listen(&bound, nix::sys::socket::Backlog::new(8).expect("backlog"))
            .expect("listen");
        let _client3 = TcpStream::connect(bound_at).expect("connect");
        let accepted =
            nix::sys::socket::accept(std::os::fd::AsRawFd::as_raw_fd(&bound)).expect("accept");
        // SAFETY: accept just returned it, owned here alone.
        let accepted = unsafe { OwnedFd::from_raw_fd(accepted) };
        assert!(nodelay(&accepted));

        // Past a hole of more free numbers than the quick scan tries: found by the listing.
        let far = TcpStream::connect(at).expect("connect");
        let (_served3, _) = listener.accept().expect("accept");
        let (local, remote) = (far.local_addr().expect("a"), far.peer_addr().expect("b"));
        let high = fcntl(&far, FcntlArg::F_DUPFD_CLOEXEC(900)).expect("F_DUPFD");
        // SAFETY: `high` was just made by F_DUPFD and is owned here alone.
        let high = unsafe { OwnedFd::from_raw_fd(high) };
        drop(far);
        assert!(set_nodelay_on(&local, Some(&remote)));
        assert!(nodelay(&high));
    }
}
