//! Network grant: a sidecar's sockets live in the pod's network namespace (they are created on
//! the pod runtime's threads, which all joined it). It may connect over TCP to any port on the
//! pod's loopback and listen only on the ports it declares in its own `ports`; UDP, name
//! lookups and every other address are refused.

use std::net::SocketAddr;

use wasmtime::component::Linker;
use wasmtime_wasi::p2::bindings::sockets;
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSockets, WasiSocketsView};

use super::{Capability, GrantError, GrantHost, Import, ImportRule, InstanceSetup, Sidecar};
use crate::spec::{Diagnostic, Protocol};

pub struct Network;

#[derive(Clone, Debug, Default)]
pub struct NetGrant {
    /// TCP ports the sidecar declared and may listen on.
    pub listen_ports: Vec<u16>,
}

impl Capability for Network {
    type Grant = NetGrant;
    type State = ();

    const IMPORTS: &'static [Import] = &[
        Import { interface: "wasi:sockets/udp", rule: ImportRule::Always { what: "UDP sockets (always refused)" } },
        Import { interface: "wasi:sockets/udp-create-socket", rule: ImportRule::Always { what: "UDP sockets (always refused)" } },
        Import { interface: "wasi:sockets/ip-name-lookup", rule: ImportRule::Always { what: "name lookups (always refused: nothing to resolve)" } },
        Import {
            interface: "wasi:sockets",
            rule: ImportRule::Scoped {
                field: "ports",
                what: "TCP in the pod's network namespace: connect to the pod's loopback; listen only on declared ports",
            },
        },
    ];

    fn resolve(sidecar: &Sidecar<'_>, _diags: &mut Vec<Diagnostic>) -> NetGrant {
        NetGrant {
            listen_ports: sidecar
                .container
                .ports
                .iter()
                .filter(|p| p.protocol == Protocol::Tcp)
                .map(|p| p.container_port)
                .collect(),
        }
    }

    fn add_to_linker<T: GrantHost>(l: &mut Linker<T>) -> wasmtime::Result<()> {
        let options = sockets::network::LinkOptions::default();
        sockets::tcp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
        sockets::tcp_create_socket::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
        sockets::udp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
        sockets::udp_create_socket::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
        sockets::instance_network::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
        sockets::network::add_to_linker::<T, WasiSockets>(l, &options, T::sockets)?;
        sockets::ip_name_lookup::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
        Ok(())
    }

    /// The sockets are created on the pod runtime's threads, which all joined the pod's
    /// network namespace; this decides what they may do there.
    fn prepare(grant: &NetGrant, setup: &mut InstanceSetup<'_>) -> Result<(), GrantError> {
        setup
            .wasi
            .allow_tcp(true)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let grant = grant.clone();
        setup.wasi.socket_addr_check(move |addr, use_| {
            let ok = grant.allows(addr, use_);
            Box::pin(async move { ok })
        });
        Ok(())
    }
}

impl NetGrant {
    /// The whole policy, as one pure function.
    pub fn allows(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        let local = addr.ip().is_loopback() || addr.ip().is_unspecified();
        let declared = self.listen_ports.contains(&addr.port());
        match use_ {
            SocketAddrUse::TcpConnect => addr.ip().is_loopback(),
            // Port 0 is the implicit bind before a connect (and an ephemeral port, which can
            // only be listened on if it happens to be declared: see TcpListen).
            SocketAddrUse::TcpBind => local && (addr.port() == 0 || declared),
            SocketAddrUse::TcpListen => local && declared,
            SocketAddrUse::TcpAccept => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_connects_and_declared_listens_only() {
        let g = NetGrant {
            listen_ports: vec![9121],
        };
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(g.allows(a("127.0.0.1:6379"), SocketAddrUse::TcpConnect));
        assert!(g.allows(a("[::1]:80"), SocketAddrUse::TcpConnect));
        assert!(!g.allows(a("10.0.0.1:80"), SocketAddrUse::TcpConnect));
        assert!(!g.allows(a("0.0.0.0:80"), SocketAddrUse::TcpConnect));
        assert!(g.allows(a("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(g.allows(a("0.0.0.0:9121"), SocketAddrUse::TcpBind));
        assert!(g.allows(a("0.0.0.0:9121"), SocketAddrUse::TcpListen));
        assert!(!g.allows(a("0.0.0.0:8080"), SocketAddrUse::TcpBind));
        assert!(!g.allows(a("127.0.0.1:40000"), SocketAddrUse::TcpListen));
        assert!(!g.allows(a("127.0.0.1:53"), SocketAddrUse::UdpBind));
    }
}
