//! Name lookups for sidecars, answered by wpod as the pod's own resolver would answer its
//! containers: the names the pod's /etc/hosts holds (hostAliases, its hostname), then DNS to
//! the pod's nameservers with its resolv.conf's search list, `ndots`, `timeout` and `attempts`.
//!
//! wpod cannot use the C library's resolver for this: it reads wpod's own files, not the
//! pod's. The messages are hickory-proto's; the transport is here (UDP, TCP when the answer is
//! truncated), run on the pod's runtime so that its sockets are in the pod's network. Answers
//! are checked against the question (id, server, name, type) before they count.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a resolv.conf says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolv {
    pub nameservers: Vec<IpAddr>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Parses a resolv.conf as glibc reads it: every `nameserver`, the last `search` (or
/// `domain`), the last `options` line's words.
pub fn parse_resolv(text: &str) -> Resolv {
    let mut out = Resolv::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                    out.nameservers.push(ip);
                }
            }
            Some("search") | Some("domain") => {
                out.searches = words.map(|w| w.trim_end_matches('.').to_string()).collect();
            }
            Some("options") => out.options = words.map(str::to_string).collect(),
            _ => {}
        }
    }
    out
}

impl Resolv {
    /// The file's text.
    pub fn render(&self) -> String {
        let mut text = String::from("# Written by wpod for the pod (dnsPolicy, dnsConfig).\n");
        for n in &self.nameservers {
            text.push_str(&format!("nameserver {n}\n"));
        }
        if !self.searches.is_empty() {
            text.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            text.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        text
    }

    /// An option's number (`ndots:2`), within glibc's bounds.
    fn option(&self, name: &str, default: u32, max: u32) -> u32 {
        self.options
            .iter()
            .rev()
            .find_map(|o| o.strip_prefix(name)?.strip_prefix(':')?.parse().ok())
            .unwrap_or(default)
            .min(max)
    }

    pub fn ndots(&self) -> u32 {
        self.option("ndots", 1, 15)
    }

    /// Per query and server (glibc: 5 s, at most 30).
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.option("timeout", 5, 30).max(1)))
    }

    /// Rounds through the servers (glibc: 2, at most 5).
    pub fn attempts(&self) -> u32 {
        self.option("attempts", 2, 5).max(1)
    }

    /// The names a lookup of `name` tries, in glibc's order: a name with a trailing dot as it
    /// is; one with at least `ndots` dots first as it is, then with each search domain; a
    /// shorter one with the search domains first.
    pub fn candidates(&self, name: &str) -> Vec<String> {
        if let Some(absolute) = name.strip_suffix('.') {
            return vec![absolute.to_string()];
        }
        let searched = self.searches.iter().map(|s| format!("{name}.{s}"));
        let dots = name.matches('.').count() as u32;
        match dots >= self.ndots() {
            true => std::iter::once(name.to_string()).chain(searched).collect(),
            false => searched.chain(std::iter::once(name.to_string())).collect(),
        }
    }
}

/// Why a lookup found nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    /// The name does not exist (NXDOMAIN, or no address of either family).
    #[error("no such name")]
    NotFound,
    /// No server answered in time, or they failed (SERVFAIL).
    #[error("{0}")]
    Temporary(String),
}

/// Upper bound on a DNS message wpod reads (UDP with EDNS, TCP).
const MAX_MESSAGE: usize = 65_535;
/// Addresses one lookup returns at most.
const MAX_ANSWERS: usize = 64;

/// Looks up the A and AAAA records of the fully qualified `name` at `servers`.
pub async fn query(resolv: &Resolv, name: &str) -> Result<Vec<IpAddr>, LookupError> {
    if resolv.nameservers.is_empty() {
        return Err(LookupError::Temporary(
            "the pod has no nameserver (dnsPolicy, dnsConfig.nameservers)".into(),
        ));
    }
    let mut fqdn = Name::from_ascii(name).map_err(|_| LookupError::NotFound)?;
    fqdn.set_fqdn(true);
    let mut last = LookupError::Temporary("no nameserver answered".into());
    for _ in 0..resolv.attempts() {
        for server in &resolv.nameservers {
            let server = SocketAddr::new(*server, 53);
            let mut found = Vec::new();
            let mut missing = 0;
            let mut failed = None;
            for kind in [RecordType::A, RecordType::AAAA] {
                match exchange(server, &fqdn, kind, resolv.timeout()).await {
                    Ok(Answer::Addresses(a)) => found.extend(a),
                    Ok(Answer::NoSuchName) => return Err(LookupError::NotFound),
                    Ok(Answer::NoData) => missing += 1,
                    Err(e) => failed = Some(e),
                }
            }
            match failed {
                // One family failed: what the other found still counts (as glibc).
                Some(_) if !found.is_empty() => {}
                Some(e) => {
                    last = LookupError::Temporary(format!("{server}: {}", crate::error::chain(&e)));
                    continue;
                }
                None => {}
            }
            if found.is_empty() && missing == 2 {
                return Err(LookupError::NotFound);
            }
            found.truncate(MAX_ANSWERS);
            return Ok(found);
        }
    }
    Err(last)
}

enum Answer {
    Addresses(Vec<IpAddr>),
    NoSuchName,
    NoData,
}

/// Why one question to one server got no answer.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("cannot encode the question")]
    Encode(#[source] hickory_proto::ProtoError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("no answer over TCP within {0:?}")]
    TcpTimeout(Duration),
    #[error("the server answered {0}")]
    Refused(ResponseCode),
    #[error("an answer to another question")]
    OtherQuestion,
    #[error("question too long")]
    TooLong,
    #[error("a malformed answer")]
    Malformed(#[source] hickory_proto::ProtoError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One question to one server: over UDP, again over TCP when the answer is truncated.
async fn exchange(
    server: SocketAddr,
    name: &Name,
    kind: RecordType,
    timeout: Duration,
) -> Result<Answer, ExchangeError> {
    let id: u16 = rand_core::RngCore::next_u32(&mut rand_core::OsRng) as u16;
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name.clone(), kind));
    let bytes = msg.to_vec().map_err(ExchangeError::Encode)?;
    let reply = tokio::time::timeout(timeout, udp(server, &bytes))
        .await
        .map_err(|_| ExchangeError::Timeout(timeout))??;
    let reply = match reply.truncated() {
        true => tokio::time::timeout(timeout, tcp(server, &bytes))
            .await
            .map_err(|_| ExchangeError::TcpTimeout(timeout))??,
        false => reply,
    };
    check(&reply, id, name, kind)?;
    match reply.response_code() {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Ok(Answer::NoSuchName),
        code => return Err(ExchangeError::Refused(code)),
    }
    let addrs: Vec<IpAddr> = reply
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) if kind == RecordType::A => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) if kind == RecordType::AAAA => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    Ok(match addrs.is_empty() {
        true => Answer::NoData,
        false => Answer::Addresses(addrs),
    })
}

/// A reply counts only for the question asked.
fn check(reply: &Message, id: u16, name: &Name, kind: RecordType) -> Result<(), ExchangeError> {
    let asked = reply
        .queries()
        .first()
        .is_some_and(|q| q.name() == name && q.query_type() == kind);
    match reply.id() == id && reply.message_type() == MessageType::Response && asked {
        true => Ok(()),
        false => Err(ExchangeError::OtherQuestion),
    }
}

async fn udp(server: SocketAddr, question: &[u8]) -> Result<Message, ExchangeError> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    // Connected: the kernel drops datagrams from anyone but the server.
    socket.connect(server).await?;
    socket.send(question).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Garbage is skipped: only a well-formed answer ends the wait.
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            return Ok(m);
        }
    }
}

async fn tcp(server: SocketAddr, question: &[u8]) -> Result<Message, ExchangeError> {
    let mut stream = tokio::net::TcpStream::connect(server).await?;
    let len = u16::try_from(question.len()).map_err(|_| ExchangeError::TooLong)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(question);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await? as usize;
    let mut buf = vec![0u8; len.min(MAX_MESSAGE)];
    stream.read_exact(&mut buf).await?;
    Message::from_vec(&buf).map_err(ExchangeError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_ndots_and_the_search_list() {
        let r = parse_resolv("nameserver 198.51.100.53\nsearch svc.example corp.example\noptions ndots:2 timeout:1 attempts:9\n");
        assert_eq!(
            r.candidates("db"),
            ["db.svc.example", "db.corp.example", "db"]
        );
        assert_eq!(
            r.candidates("db.example.com"),
            [
                "db.example.com",
                "db.example.com.svc.example",
                "db.example.com.corp.example"
            ]
        );
        assert_eq!(r.candidates("db.example.com."), ["db.example.com"]);
        assert_eq!(r.timeout(), Duration::from_secs(1));
        assert_eq!(r.attempts(), 5);
        assert_eq!(parse_resolv("").ndots(), 1);
    }

    #[test]
    fn rendering_reads_back() {
        let r = parse_resolv("nameserver 198.51.100.53\nsearch a.example\noptions ndots:2\n");
        assert_eq!(parse_resolv(&r.render()), r);
    }
}
