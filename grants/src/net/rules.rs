//! The outbound rules of one sidecar: `wpod.dev/allowed-outbound.<container>`, a list of
//! `HOST:PORT` entries in the manner of Spin's `allowed_outbound_hosts`, adapted to TCP.
//!
//! HOST is an IP (`10.0.0.7`, `[2001:db8::1]`), a CIDR (`10.0.0.0/24`, `[2001:db8::/32]`), a
//! DNS name (`db.example.com`), `*.domain` (every name under it, not the domain itself, as in
//! Spin) or `localhost` (the pod's loopback). PORT is a number, an inclusive range
//! (`8000-8099`, as NetworkPolicy's `endPort`) or `*`. Entries are separated by commas or
//! whitespace; `tcp://` may prefix one. There is no bare `*` host: `0.0.0.0/0:443` says it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// A sidecar's outbound rules and the field they were written in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    /// `metadata.annotations[wpod.dev/allowed-outbound.<container>]`, for messages.
    pub field: String,
    pub rules: Vec<OutboundRule>,
}

/// One `HOST:PORT` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundRule {
    pub host: HostPattern,
    pub ports: PortSpec,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// An address or a network (one address is a /32 or /128).
    Net(IpNet),
    /// `localhost`: the pod's loopback, both families.
    Localhost,
    /// A DNS name, lowercase ASCII (IDNA applied), without a trailing dot.
    Name(String),
    /// `*.example.com`: the names under `.example.com` (stored with the leading dot).
    Subdomains(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortSpec {
    Any,
    /// Inclusive.
    Range(u16, u16),
}

impl PortSpec {
    pub fn contains(self, port: u16) -> bool {
        match self {
            PortSpec::Any => true,
            PortSpec::Range(a, b) => (a..=b).contains(&port),
        }
    }
}

impl HostPattern {
    /// Whether the entry is about the pod's loopback only (it narrows the default).
    pub fn is_loopback(&self) -> bool {
        match self {
            HostPattern::Localhost => true,
            HostPattern::Net(net) => net.network().is_loopback() && net.broadcast().is_loopback(),
            _ => false,
        }
    }

    /// Whether `ip` is one of the addresses the entry names.
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self {
            HostPattern::Net(net) => net.contains(&ip),
            HostPattern::Localhost => ip.is_loopback(),
            _ => false,
        }
    }

    /// Whether the (canonical) DNS name `name` is one the entry names.
    pub fn matches_name(&self, name: &str) -> bool {
        match self {
            HostPattern::Name(n) => n == name,
            HostPattern::Subdomains(suffix) => name.ends_with(suffix.as_str()),
            _ => false,
        }
    }

    pub fn is_name(&self) -> bool {
        matches!(self, HostPattern::Name(_) | HostPattern::Subdomains(_))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Net(net) => {
                let text = match net.prefix_len() == net.max_prefix_len() {
                    true => net.addr().to_string(),
                    false => net.to_string(),
                };
                match net {
                    IpNet::V4(_) => write!(f, "{text}"),
                    IpNet::V6(_) => write!(f, "[{text}]"),
                }
            }
            HostPattern::Localhost => write!(f, "localhost"),
            HostPattern::Name(n) => write!(f, "{n}"),
            HostPattern::Subdomains(s) => write!(f, "*{s}"),
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Any => write!(f, "*"),
            PortSpec::Range(a, b) if a == b => write!(f, "{a}"),
            PortSpec::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

impl fmt::Display for OutboundRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.ports)
    }
}

impl Outbound {
    /// Whether some entry is about the pod's loopback: then the loopback is reachable only as
    /// those entries say (without one, a sidecar may connect to any port there).
    pub fn narrows_loopback(&self) -> bool {
        self.rules.iter().any(|r| r.host.is_loopback())
    }

    /// The first entry (by index) allowing a connection to `ip:port` by address.
    pub fn rule_for_addr(&self, ip: IpAddr, port: u16) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.host.contains_ip(ip) && r.ports.contains(port))
    }

    /// The entries (by index) naming `name`.
    pub fn rules_for_name(&self, name: &str) -> Vec<usize> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.host.matches_name(name))
            .map(|(i, _)| i)
            .collect()
    }

    pub fn has_names(&self) -> bool {
        self.rules.iter().any(|r| r.host.is_name())
    }
}

/// What is wrong with an outbound rule, and how to write it (shown after the annotation's
/// location).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("lists no HOST:PORT entry: write one such as \"db.example.com:5432\", or remove the annotation")]
    Empty,
    #[error("entry \"{entry}\": {why}")]
    Entry { entry: String, why: Box<RuleError> },
    #[error(
        "wpod rules are for TCP connections: write HOST:PORT (or tcp://HOST:PORT), not {0}://"
    )]
    Scheme(String),
    #[error("no port: write HOST:PORT, HOST:8000-8099 or HOST:* (an IPv6 address in brackets: [2001:db8::1]:443)")]
    NoPort,
    #[error("\"{0}\" is not a port: write a number from 1 to 65535")]
    Port(String),
    #[error("write a port range as FIRST-LAST, both included (Spin's FIRST..END leaves END out)")]
    DottedRange,
    #[error("the range {0}-{1} is empty: write the lower port first")]
    EmptyRange(u16, u16),
    #[error("no host before the port")]
    NoHost,
    #[error("a bare * would allow every host: write 0.0.0.0/0:PORT (and [::]/0:PORT) to say so")]
    AnyHost,
    #[error("an IPv6 address opens a bracket it does not close")]
    OpenBracket,
    #[error("put an IPv6 address in brackets: [2001:db8::1]:443")]
    Brackets,
    #[error("a wildcard may only start a name: *.example.com")]
    Wildcard,
    #[error("\"/{0}\" is not a prefix length from 0 to {1}")]
    PrefixLength(String, u8),
    #[error("\"{0}\" is not an IP address")]
    Address(String),
    #[error("{text} has host bits set: the network is {network}")]
    HostBits { text: String, network: IpNet },
    #[error("\"{0}\" is an address, not a name")]
    AddressNotName(String),
    #[error("\"{0}\" is not a DNS name: write one such as db.example.com")]
    Name(String),
}

/// Parses the annotation's value; the error says which entry is wrong and how to write it.
pub fn parse(text: &str) -> Result<Vec<OutboundRule>, RuleError> {
    let entries: Vec<&str> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return Err(RuleError::Empty);
    }
    entries
        .into_iter()
        .map(|e| {
            parse_entry(e).map_err(|why| RuleError::Entry {
                entry: e.to_string(),
                why: Box::new(why),
            })
        })
        .collect()
}

fn parse_entry(entry: &str) -> Result<OutboundRule, RuleError> {
    let rest = match entry.split_once("://") {
        Some(("tcp", rest)) => rest,
        Some((scheme, _)) => return Err(RuleError::Scheme(scheme.to_string())),
        None => entry,
    };
    // The port follows the last colon outside brackets.
    let (host, port) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains(']') => (&rest[..i], &rest[i + 1..]),
        _ => return Err(RuleError::NoPort),
    };
    Ok(OutboundRule {
        host: parse_host(host)?,
        ports: parse_ports(port)?,
    })
}

fn parse_ports(port: &str) -> Result<PortSpec, RuleError> {
    let number = |p: &str| -> Result<u16, RuleError> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(RuleError::Port(p.to_string())),
        }
    };
    if port == "*" {
        return Ok(PortSpec::Any);
    }
    if port.contains("..") {
        return Err(RuleError::DottedRange);
    }
    match port.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(RuleError::EmptyRange(a, b));
            }
            Ok(PortSpec::Range(a, b))
        }
        None => {
            let n = number(port)?;
            Ok(PortSpec::Range(n, n))
        }
    }
}

fn parse_host(host: &str) -> Result<HostPattern, RuleError> {
    if host.is_empty() {
        return Err(RuleError::NoHost);
    }
    if host == "*" {
        return Err(RuleError::AnyHost);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(HostPattern::Localhost);
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(RuleError::OpenBracket)?;
        return net::<Ipv6Addr>(inner, 128).map(HostPattern::Net);
    }
    if host.contains("::") || host.chars().filter(|c| *c == ':').count() > 1 {
        return Err(RuleError::Brackets);
    }
    let first = host.chars().next().unwrap_or_default();
    if first.is_ascii_digit()
        && host
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '/')
    {
        return net::<Ipv4Addr>(host, 32).map(HostPattern::Net);
    }
    if let Some(domain) = host.strip_prefix("*.") {
        return Ok(HostPattern::Subdomains(format!(".{}", dns_name(domain)?)));
    }
    if host.contains('*') {
        return Err(RuleError::Wildcard);
    }
    dns_name(host).map(HostPattern::Name)
}

/// An address or `ADDRESS/LEN` of one family (its host bits must be zero).
fn net<A: std::str::FromStr + Into<IpAddr>>(text: &str, max: u8) -> Result<IpNet, RuleError> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (
            a,
            l.parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| RuleError::PrefixLength(l.to_string(), max))?,
        ),
        None => (text, max),
    };
    let ip: IpAddr = addr
        .parse::<A>()
        .map_err(|_| RuleError::Address(addr.to_string()))?
        .into();
    // The length was checked against the family's.
    let net = IpNet::new(ip, len).map_err(|_| RuleError::PrefixLength(len.to_string(), max))?;
    if net.trunc() != net {
        return Err(RuleError::HostBits {
            text: text.to_string(),
            network: net.trunc(),
        });
    }
    Ok(net)
}

/// A DNS name as resolvers compare it: IDNA applied, lowercase, no trailing dot.
pub fn dns_name(name: &str) -> Result<String, RuleError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let valid = |d: &str| {
        !d.is_empty()
            && d.len() <= 253
            && d.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    match url::Host::parse(trimmed) {
        Ok(url::Host::Domain(d)) if valid(&d) => Ok(d),
        Ok(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {
            Err(RuleError::AddressNotName(name.to_string()))
        }
        _ => Err(RuleError::Name(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> OutboundRule {
        let mut rules = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(rules.len(), 1);
        rules.remove(0)
    }

    #[test]
    fn entries_of_every_form_parse_and_print_back() {
        for text in [
            "10.0.0.7:5432",
            "10.0.0.0/24:*",
            "[2001:db8::1]:443",
            "[2001:db8::/32]:8000-8099",
            "db.example.com:5432",
            "*.example.com:443",
            "localhost:6379",
            "0.0.0.0/0:443",
        ] {
            assert_eq!(one(text).to_string(), text);
        }
        assert_eq!(
            one("tcp://DB.Example.COM.:5432").to_string(),
            "db.example.com:5432"
        );
        assert_eq!(
            one("bücher.example:80").to_string(),
            "xn--bcher-kva.example:80"
        );
        let rules = parse("127.0.0.1:6379, db.example.com:5432\n  *.example.org:443").unwrap();
        assert_eq!(rules.len(), 3);
    }

    #[test]
    fn mistakes_are_named_with_the_fix() {
        for (text, want) in [
            ("", "lists no HOST:PORT"),
            ("db.example.com", "no port"),
            ("*:443", "0.0.0.0/0:PORT"),
            ("2001:db8::1:443", "brackets"),
            ("db.example.com:8000..8100", "FIRST-LAST"),
            ("db.example.com:0", "not a port"),
            ("db.example.com:99999", "not a port"),
            ("db.example.com:90-80", "lower port first"),
            ("10.0.0.1/24:80", "host bits"),
            ("10.0.0.0/33:80", "prefix length"),
            ("http://db.example.com:80", "TCP"),
            ("db*.example.com:80", "wildcard"),
            ("bad!name:80", "not a DNS name"),
            ("300.1.1.1:80", "not an IP address"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.to_string().contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn matching_follows_addresses_names_ports_and_subdomains() {
        let o = Outbound {
            field: String::new(),
            rules: parse(
                "10.0.0.0/24:5432 *.example.com:443 db.example.org:8000-8099 localhost:6379",
            )
            .unwrap(),
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(o.rule_for_addr(ip("10.0.0.7"), 5432), Some(0));
        assert_eq!(o.rule_for_addr(ip("::ffff:10.0.0.7"), 5432), Some(0));
        assert_eq!(o.rule_for_addr(ip("10.0.1.7"), 5432), None);
        assert_eq!(o.rule_for_addr(ip("10.0.0.7"), 5433), None);
        assert_eq!(o.rule_for_addr(ip("127.0.0.1"), 6379), Some(3));
        assert_eq!(o.rule_for_addr(ip("::1"), 6379), Some(3));
        assert_eq!(o.rules_for_name("api.example.com"), vec![1]);
        assert!(o.rules_for_name("example.com").is_empty());
        assert!(o.rules_for_name("evilexample.com").is_empty());
        assert_eq!(o.rules_for_name("db.example.org"), vec![2]);
        assert!(o.rules[2].ports.contains(8099) && !o.rules[2].ports.contains(8100));
        assert!(o.narrows_loopback());
        let wide = Outbound {
            field: String::new(),
            rules: parse("0.0.0.0/0:443").unwrap(),
        };
        assert!(!wide.narrows_loopback());
        assert!(parse("127.0.0.0/8:*").unwrap()[0].host.is_loopback());
    }
}
