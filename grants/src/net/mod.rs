//! Network grant: a sidecar's sockets live in the pod's network namespace (they are created on
//! the pod runtime's threads, which all joined it). By default it may connect over TCP to any
//! port on the pod's loopback (and the pod's own IP, which is the same pod) and listen only on
//! the ports it declares in its own `ports`. Its outbound rules
//! (`wpod.dev/allowed-outbound.<container>`, see `rules.rs`) add remote hosts and narrow the
//! loopback; name lookups are answered by wpod (`lookup.rs`, `dns.rs`) for the names the rules
//! allow, and a connect to what a lookup returned is allowed on that rule's ports. UDP is
//! refused. Every refusal is reported (`grants::report`) with the field that would allow it.

pub mod dns;
pub mod lookup;
pub mod nodelay;
pub mod rules;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime_wasi::p2::bindings::sockets;
use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSockets, WasiSocketsView};

use super::report::{Action, Denial, Reporter, Use};
use super::{Capability, GrantError, GrantHost, Import, ImportRule, InstanceSetup, Sidecar};
use crate::spec::{Diagnostic, Protocol, OUTBOUND_PREFIX};
pub use rules::Outbound;

pub struct Network;

#[derive(Clone, Debug, Default)]
pub struct NetGrant {
    /// TCP ports the sidecar declared and may listen on.
    pub listen_ports: Vec<u16>,
    /// `spec.containers[i].ports`, for messages.
    pub ports_field: String,
    /// `metadata.annotations[wpod.dev/allowed-outbound.<container>]`, for messages.
    pub outbound_field: String,
    /// Its outbound rules; `None`: the annotation is absent (the pod's loopback only).
    pub outbound: Option<Outbound>,
}

/// What the network capability needs of the pod once its sandbox exists.
#[derive(Clone, Debug, Default)]
pub struct PodNet {
    /// The pod's own addresses: reaching them is reaching the pod, as its loopback is.
    pub ips: Vec<IpAddr>,
    /// The pod's resolv.conf.
    pub resolv: dns::Resolv,
    /// `spec.hostAliases`, as the pod's /etc/hosts has them.
    pub aliases: Vec<(IpAddr, Vec<String>)>,
    /// The pod's hostname, which its /etc/hosts gives its address (its loopback without one).
    pub hostname: String,
}

/// Lookups one instance runs at once; more wait.
const LOOKUPS_AT_ONCE: usize = 8;
/// The longest a lookup takes, all candidates and servers together.
const LOOKUP_DEADLINE: Duration = Duration::from_secs(30);
/// Addresses a lookup bound to rules, remembered per instance (the oldest go first).
const MAX_BOUND: usize = 4096;

impl Capability for Network {
    type Grant = NetGrant;
    type State = NetState;

    const IMPORTS: &'static [Import] = &[
        Import { interface: "wasi:sockets/udp", rule: ImportRule::Always { what: "UDP sockets (always refused)" } },
        Import { interface: "wasi:sockets/udp-create-socket", rule: ImportRule::Always { what: "UDP sockets (always refused)" } },
        Import {
            interface: "wasi:sockets/ip-name-lookup",
            rule: ImportRule::Scoped {
                field: "metadata.annotations[wpod.dev/allowed-outbound.<container>]",
                what: "name lookups, of the names the outbound rules allow, through the pod's hostAliases and resolvers",
            },
        },
        Import {
            interface: "wasi:sockets",
            rule: ImportRule::Scoped {
                field: "ports, metadata.annotations[wpod.dev/allowed-outbound.<container>]",
                what: "TCP in the pod's network: connect to the pod's loopback and where the outbound rules allow; listen only on declared ports",
            },
        },
    ];

    fn resolve(sidecar: &Sidecar<'_>, diags: &mut Vec<Diagnostic>) -> NetGrant {
        let key = format!("{OUTBOUND_PREFIX}{}", sidecar.name());
        let outbound_field = format!("metadata.annotations[{key}]");
        let outbound =
            sidecar
                .pod
                .metadata
                .annotations
                .get(&key)
                .and_then(|text| match rules::parse(text) {
                    Ok(rules) => Some(Outbound {
                        field: outbound_field.clone(),
                        rules,
                    }),
                    Err(e) => {
                        diags.push(
                            sidecar
                                .pod
                                .source
                                .diag(format!("metadata.annotations.{key}"), e.to_string()),
                        );
                        None
                    }
                });
        NetGrant {
            listen_ports: sidecar
                .container
                .ports
                .iter()
                .filter(|p| p.protocol == Protocol::Tcp)
                .map(|p| p.container_port)
                .collect(),
            ports_field: format!("{}.ports", sidecar.path),
            outbound_field,
            outbound,
        }
    }

    fn add_to_linker<T: GrantHost>(l: &mut Linker<T>) -> wasmtime::Result<()> {
        let options = sockets::network::LinkOptions::default();
        // wasmtime-wasi's TCP, with TCP_NODELAY on what a sidecar listens on and connects.
        fn no_delay<T: GrantHost>(t: &mut T) -> nodelay::NoDelay<'_> {
            let (inner, states) = t.sockets_parts();
            nodelay::NoDelay {
                inner,
                done: &mut states.net.nodelay,
            }
        }
        sockets::tcp::add_to_linker::<T, nodelay::HasNoDelay>(l, no_delay)?;
        sockets::tcp_create_socket::add_to_linker::<T, nodelay::HasNoDelay>(l, no_delay)?;
        sockets::udp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
        sockets::udp_create_socket::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
        sockets::instance_network::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
        sockets::network::add_to_linker::<T, WasiSockets>(l, &options, T::sockets)?;
        // wpod's resolver in place of wasmtime-wasi's (which reads wpod's host files).
        lookup::add_to_linker(l)
    }

    /// The sockets are created on the pod runtime's threads, which all joined the pod's
    /// network namespace; this decides what they may do there.
    fn prepare(grant: &NetGrant, setup: &mut InstanceSetup<'_>) -> Result<NetState, GrantError> {
        setup
            .wasi
            .allow_tcp(true)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let policy = Arc::new(Policy {
            container: setup.name.to_string(),
            grant: grant.clone(),
            pod: setup.network.clone(),
            reports: setup.reports.clone(),
            bound: Mutex::new(Bound::default()),
        });
        let check = policy.clone();
        setup.wasi.socket_addr_check(move |addr, use_| {
            let ok = check.check(addr, use_);
            Box::pin(async move { ok })
        });
        Ok(NetState {
            policy,
            lookups: Arc::new(Semaphore::new(LOOKUPS_AT_ONCE)),
            nodelay: Default::default(),
        })
    }
}

/// The network capability's state in one instance.
pub struct NetState {
    policy: Arc<Policy>,
    lookups: Arc<Semaphore>,
    /// The TCP sockets (by rep) that got `TCP_NODELAY` when they were made (`nodelay`).
    nodelay: std::collections::HashSet<u32>,
}

/// What one instance may do on the network, and what its lookups bound.
pub struct Policy {
    container: String,
    grant: NetGrant,
    pod: Arc<PodNet>,
    reports: Arc<Reporter>,
    bound: Mutex<Bound>,
}

/// Addresses lookups returned, each with the name and the rules that allowed it.
#[derive(Default)]
struct Bound {
    by_ip: HashMap<IpAddr, (Arc<str>, Vec<usize>)>,
    order: VecDeque<IpAddr>,
}

/// Why an address use is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// The pod's loopback or own IP (no narrowing rule).
    Local,
    /// An outbound rule, by index.
    Rule(usize),
    /// An address a lookup of this name returned.
    Via(Arc<str>),
    /// Listening on a declared port.
    Listen,
    /// The implicit bind before a connect, or an accepted connection.
    Quiet,
}

/// What a lookup does: answer at once, or resolve these names in order.
pub enum LookupPlan {
    Answer(Vec<IpAddr>),
    Resolve(Vec<String>),
}

impl Policy {
    /// Decides, reports, answers.
    fn check(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        match self.decide(addr, use_) {
            Ok(allowed) => {
                if self.reports.auditing() {
                    self.audit(addr, use_, &allowed);
                }
                true
            }
            Err(Some(denial)) => {
                self.reports.deny(&self.container, denial);
                false
            }
            Err(None) => false,
        }
    }

    fn audit(&self, addr: SocketAddr, use_: SocketAddrUse, allowed: &Allowed) {
        let use_ = match (use_, allowed) {
            (_, Allowed::Quiet) => return,
            (SocketAddrUse::TcpConnect, _) => Use {
                class: "connect".into(),
                target: addr.to_string(),
                via: match allowed {
                    Allowed::Via(name) => Some(name.to_string()),
                    // The pod itself: `localhost` in a rule.
                    Allowed::Local => Some("localhost".into()),
                    Allowed::Rule(i) => self
                        .grant
                        .outbound
                        .as_ref()
                        .filter(|o| o.rules[*i].host.is_loopback())
                        .map(|_| "localhost".into()),
                    _ => None,
                },
            },
            (SocketAddrUse::TcpListen, _) => Use {
                class: "listen".into(),
                target: addr.port().to_string(),
                via: None,
            },
            _ => return,
        };
        self.reports.used(&self.container, use_);
    }

    /// The whole policy for an address, as a pure function of the grant, the pod's addresses
    /// and the bound lookups. `Err(None)`: refused without a report (UDP, never granted).
    pub fn decide(&self, addr: SocketAddr, use_: SocketAddrUse) -> Result<Allowed, Option<Denial>> {
        let ip = addr.ip().to_canonical();
        let port = addr.port();
        let local = ip.is_loopback() || self.pod.ips.contains(&ip);
        let declared = self.grant.listen_ports.contains(&port);
        let listen_denial = || Denial {
            action: Action::Listen,
            target: addr.to_string(),
            field: self.grant.ports_field.clone(),
            reason: None,
        };
        match use_ {
            SocketAddrUse::TcpConnect if local => self.connect_local(ip, port),
            SocketAddrUse::TcpConnect => self.connect_remote(ip, port),
            // Port 0 is the implicit bind before a connect (and an ephemeral port, which can
            // only be listened on if it happens to be declared: see TcpListen).
            SocketAddrUse::TcpBind if port == 0 && (local || ip.is_unspecified()) => {
                Ok(Allowed::Quiet)
            }
            SocketAddrUse::TcpBind | SocketAddrUse::TcpListen
                if (local || ip.is_unspecified()) && declared =>
            {
                Ok(match use_ {
                    SocketAddrUse::TcpListen => Allowed::Listen,
                    _ => Allowed::Quiet,
                })
            }
            SocketAddrUse::TcpBind | SocketAddrUse::TcpListen => Err(Some(listen_denial())),
            SocketAddrUse::TcpAccept => Ok(Allowed::Quiet),
            _ => Err(None),
        }
    }

    fn connect_denial(&self, ip: IpAddr, port: u16) -> Denial {
        Denial {
            action: Action::Connect,
            target: SocketAddr::new(ip, port).to_string(),
            field: self.grant.outbound_field.clone(),
            reason: None,
        }
    }

    /// The loopback or the pod's own IP: open, unless a loopback entry narrows it (then only
    /// loopback entries count, as if the pod's IP were 127.0.0.1).
    fn connect_local(&self, ip: IpAddr, port: u16) -> Result<Allowed, Option<Denial>> {
        let Some(outbound) = self
            .grant
            .outbound
            .as_ref()
            .filter(|o| o.narrows_loopback())
        else {
            return Ok(Allowed::Local);
        };
        let as_loopback = match (ip.is_loopback(), ip) {
            (true, _) => ip,
            (false, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            (false, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        outbound
            .rules
            .iter()
            .position(|r| {
                r.host.is_loopback() && r.host.contains_ip(as_loopback) && r.ports.contains(port)
            })
            .map(Allowed::Rule)
            .ok_or_else(|| Some(self.connect_denial(ip, port)))
    }

    fn connect_remote(&self, ip: IpAddr, port: u16) -> Result<Allowed, Option<Denial>> {
        let denial = || Some(self.connect_denial(ip, port));
        let outbound = self.grant.outbound.as_ref().ok_or_else(denial)?;
        if let Some(i) = outbound.rule_for_addr(ip, port) {
            return Ok(Allowed::Rule(i));
        }
        let bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        match bound.by_ip.get(&ip) {
            Some((name, rules))
                if rules
                    .iter()
                    .any(|&i| outbound.rules[i].ports.contains(port)) =>
            {
                Ok(Allowed::Via(name.clone()))
            }
            _ => Err(denial()),
        }
    }

    /// What a lookup of `name` may do: an address is its own answer, the pod's own names
    /// (localhost, its hostname) are answered from what wpod wrote, and any other name must
    /// be one a rule allows (after the search list), or nothing is sent anywhere.
    pub fn lookup(&self, name: &str) -> Result<LookupPlan, ErrorCode> {
        let absolute = name.ends_with('.');
        let host = match url::Host::parse(name.strip_suffix('.').unwrap_or(name)) {
            Ok(h) => h,
            Err(_) => match name.parse::<Ipv6Addr>() {
                Ok(v6) => return Ok(LookupPlan::Answer(vec![IpAddr::V6(v6)])),
                Err(_) => return Err(ErrorCode::InvalidArgument),
            },
        };
        let name = match host {
            url::Host::Ipv4(ip) => return Ok(LookupPlan::Answer(vec![IpAddr::V4(ip)])),
            url::Host::Ipv6(ip) => return Ok(LookupPlan::Answer(vec![IpAddr::V6(ip)])),
            url::Host::Domain(d) => d,
        };
        if name == "localhost" {
            return Ok(LookupPlan::Answer(vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]));
        }
        if name.eq_ignore_ascii_case(&self.pod.hostname) {
            let own = match self.pod.ips.is_empty() {
                true => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
                false => self.pod.ips.clone(),
            };
            return Ok(LookupPlan::Answer(own));
        }
        let allowed: Vec<String> = match &self.grant.outbound {
            Some(o) => self
                .pod
                .resolv
                .candidates(&match absolute {
                    true => format!("{name}."),
                    false => name.clone(),
                })
                .into_iter()
                .filter(|c| !o.rules_for_name(c).is_empty())
                .collect(),
            None => Vec::new(),
        };
        if allowed.is_empty() {
            self.reports.deny(
                &self.container,
                Denial {
                    action: Action::Lookup,
                    target: name,
                    field: self.grant.outbound_field.clone(),
                    reason: None,
                },
            );
            return Err(ErrorCode::AccessDenied);
        }
        Ok(LookupPlan::Resolve(allowed))
    }

    /// Resolves the allowed candidates in order (the pod's hostAliases, then DNS); the first
    /// with addresses wins, and they are bound to the rules that allowed it.
    pub async fn resolve(&self, candidates: Vec<String>) -> Result<Vec<IpAddr>, ErrorCode> {
        match tokio::time::timeout(LOOKUP_DEADLINE, self.resolve_in_order(&candidates)).await {
            Ok(result) => result,
            Err(_) => Err(ErrorCode::TemporaryResolverFailure),
        }
    }

    async fn resolve_in_order(&self, candidates: &[String]) -> Result<Vec<IpAddr>, ErrorCode> {
        let mut failure = ErrorCode::NameUnresolvable;
        for name in candidates {
            let aliased: Vec<IpAddr> = self
                .pod
                .aliases
                .iter()
                .filter(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
                .map(|(ip, _)| *ip)
                .collect();
            // The operator wrote hostAliases: bound as given. DNS answers are not trusted to
            // point at the pod's own loopback or link-local addresses (cloud metadata).
            let ips = match aliased.is_empty() {
                false => aliased,
                true => match dns::query(&self.pod.resolv, name).await {
                    Ok(ips) => {
                        let (kept, refused): (Vec<IpAddr>, Vec<IpAddr>) =
                            ips.into_iter().partition(|ip| routable(*ip));
                        if kept.is_empty() && !refused.is_empty() {
                            self.reports.deny(
                                &self.container,
                                Denial {
                                    action: Action::Lookup,
                                    target: name.clone(),
                                    field: self.grant.outbound_field.clone(),
                                    reason: Some(format!(
                                        "DNS answered only {}, which a name may not lead to (write the address in the rules, or a hostAlias)",
                                        refused.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
                                    )),
                                },
                            );
                        }
                        kept
                    }
                    Err(dns::LookupError::NotFound) => continue,
                    Err(dns::LookupError::Temporary(e)) => {
                        tracing::debug!(container = %self.container, name, error = %e, "lookup failed");
                        failure = ErrorCode::TemporaryResolverFailure;
                        continue;
                    }
                },
            };
            if ips.is_empty() {
                continue;
            }
            self.bind(name, &ips);
            self.reports.used(
                &self.container,
                Use {
                    class: "lookup".into(),
                    target: name.clone(),
                    via: None,
                },
            );
            return Ok(ips);
        }
        Err(failure)
    }

    fn bind(&self, name: &str, ips: &[IpAddr]) {
        let Some(outbound) = &self.grant.outbound else {
            return;
        };
        let rules = outbound.rules_for_name(name);
        let name: Arc<str> = Arc::from(name);
        let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        for ip in ips {
            let ip = ip.to_canonical();
            // Names that share an address (a CDN's) add their rules' ports to it.
            match bound.by_ip.get_mut(&ip) {
                Some((last, had)) => {
                    *last = name.clone();
                    for r in &rules {
                        if !had.contains(r) {
                            had.push(*r);
                        }
                    }
                }
                None => {
                    bound.by_ip.insert(ip, (name.clone(), rules.clone()));
                    bound.order.push_back(ip);
                }
            }
            while bound.order.len() > MAX_BOUND {
                if let Some(old) = bound.order.pop_front() {
                    bound.by_ip.remove(&old);
                }
            }
        }
    }
}

/// Whether DNS may bind an address: not the pod's loopback, unspecified, link-local
/// (169.254.169.254 is a cloud's metadata service) or multicast.
fn routable(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || link_local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ReportSink;

    #[derive(Default)]
    struct Sink(Mutex<Vec<String>>);
    impl ReportSink for Sink {
        fn denied(&self, _: &str, d: &Denial, _: u64, _: u64) {
            self.0.lock().unwrap().push(d.message());
        }
        fn used(&self, _: &str, u: &Use) {
            self.0
                .lock()
                .unwrap()
                .push(format!("used {} {}", u.class, u.target));
        }
    }

    fn policy(outbound: Option<&str>, pod_ip: Option<&str>) -> (Policy, Arc<Sink>) {
        let sink = Arc::new(Sink::default());
        let grant = NetGrant {
            listen_ports: vec![9121],
            ports_field: "spec.containers[1].ports".into(),
            outbound_field: "metadata.annotations[wpod.dev/allowed-outbound.x]".into(),
            outbound: outbound.map(|t| Outbound {
                field: "f".into(),
                rules: rules::parse(t).unwrap(),
            }),
        };
        let pod = PodNet {
            ips: pod_ip.iter().map(|i| i.parse().unwrap()).collect(),
            resolv: dns::parse_resolv("nameserver 198.51.100.53\nsearch svc.example\n"),
            aliases: vec![(
                "198.51.100.7".parse().unwrap(),
                vec!["collector.example.test".into()],
            )],
            hostname: "web".into(),
        };
        let p = Policy {
            container: "x".into(),
            grant,
            pod: Arc::new(pod),
            reports: Reporter::new(sink.clone(), true),
            bound: Mutex::new(Bound::default()),
        };
        (p, sink)
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_rules_loopback_connects_and_declared_listens_only() {
        let (g, sink) = policy(None, Some("10.87.0.5"));
        let ok = |addr: &str, u| g.decide(a(addr), u).is_ok();
        assert!(ok("127.0.0.1:6379", SocketAddrUse::TcpConnect));
        assert!(ok("[::1]:80", SocketAddrUse::TcpConnect));
        assert!(ok("10.87.0.5:80", SocketAddrUse::TcpConnect));
        assert!(!ok("10.0.0.1:80", SocketAddrUse::TcpConnect));
        assert!(ok("0.0.0.0:0", SocketAddrUse::TcpBind));
        assert!(ok("0.0.0.0:9121", SocketAddrUse::TcpBind));
        assert!(ok("10.87.0.5:9121", SocketAddrUse::TcpListen));
        assert!(!ok("0.0.0.0:8080", SocketAddrUse::TcpBind));
        assert!(!ok("127.0.0.1:40000", SocketAddrUse::TcpListen));
        assert!(!ok("198.51.100.7:9121", SocketAddrUse::TcpBind));
        assert_eq!(
            g.decide(a("127.0.0.1:53"), SocketAddrUse::UdpBind),
            Err(None)
        );
        // Refusals are reported with the field that allows them.
        assert!(!g.check(a("10.0.0.1:80"), SocketAddrUse::TcpConnect));
        assert!(!g.check(a("0.0.0.0:8080"), SocketAddrUse::TcpListen));
        assert_eq!(
            sink.0.lock().unwrap().clone(),
            [
                "denied connect to 10.0.0.1:80: not in metadata.annotations[wpod.dev/allowed-outbound.x]",
                "denied listen on 0.0.0.0:8080: not in spec.containers[1].ports"
            ]
        );
    }

    #[test]
    fn rules_add_remote_hosts_and_loopback_entries_narrow_the_loopback() {
        let (g, _) = policy(
            Some("198.51.100.0/30:9000-9001 127.0.0.1:6379"),
            Some("10.87.0.5"),
        );
        let connect = |addr: &str| g.decide(a(addr), SocketAddrUse::TcpConnect);
        assert_eq!(connect("198.51.100.2:9000"), Ok(Allowed::Rule(0)));
        assert!(connect("198.51.100.2:9002").is_err());
        assert!(connect("198.51.100.6:9000").is_err());
        assert_eq!(connect("127.0.0.1:6379"), Ok(Allowed::Rule(1)));
        assert!(connect("127.0.0.1:6380").is_err());
        // The pod's own IP is its loopback: narrowed the same way.
        assert_eq!(connect("10.87.0.5:6379"), Ok(Allowed::Rule(1)));
        assert!(connect("10.87.0.5:22").is_err());
        // Without a loopback entry, the loopback stays open.
        let (open, _) = policy(Some("198.51.100.2:9000"), None);
        assert_eq!(
            open.decide(a("127.0.0.1:22"), SocketAddrUse::TcpConnect),
            Ok(Allowed::Local)
        );
    }

    #[test]
    fn lookups_are_allowed_by_name_and_bind_their_answers_to_the_rules_ports() {
        let (g, sink) = policy(Some("collector.example.test:9000 *.svc.example:443"), None);
        // Not allowed: refused before anything is sent, and reported.
        assert!(matches!(
            g.lookup("evil.example.net."),
            Err(ErrorCode::AccessDenied)
        ));
        assert!(sink.0.lock().unwrap()[0].starts_with("denied lookup of evil.example.net"));
        // Only the candidates a rule allows are ever asked for (here, through the search list).
        match g.lookup("evil.example.net") {
            Ok(LookupPlan::Resolve(c)) => assert_eq!(c, ["evil.example.net.svc.example"]),
            _ => panic!("the search list's candidate is allowed"),
        }
        // The pod's own names and addresses need no rule.
        assert!(matches!(g.lookup("localhost"), Ok(LookupPlan::Answer(_))));
        assert!(matches!(g.lookup("web"), Ok(LookupPlan::Answer(_))));
        assert!(matches!(g.lookup("10.0.0.7"), Ok(LookupPlan::Answer(_))));
        // A short name is tried with the search list, and only the allowed candidates.
        match g.lookup("db") {
            Ok(LookupPlan::Resolve(c)) => assert_eq!(c, ["db.svc.example"]),
            _ => panic!("db.svc.example is allowed"),
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let LookupPlan::Resolve(c) = g.lookup("collector.example.test").unwrap() else {
            panic!("a name")
        };
        let ips = rt.block_on(g.resolve(c)).unwrap();
        assert_eq!(ips, ["198.51.100.7".parse::<IpAddr>().unwrap()]);
        let connect = |addr: &str| g.decide(a(addr), SocketAddrUse::TcpConnect);
        assert_eq!(
            connect("198.51.100.7:9000"),
            Ok(Allowed::Via(Arc::from("collector.example.test")))
        );
        assert!(connect("198.51.100.7:9001").is_err());
    }

    #[test]
    fn dns_may_not_lead_a_name_to_the_pods_loopback_or_link_local() {
        for ip in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "224.0.0.1",
        ] {
            assert!(!routable(ip.parse().unwrap()), "{ip}");
        }
        assert!(routable("198.51.100.7".parse().unwrap()));
    }
}
