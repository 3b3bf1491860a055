//! Just enough of RESP2 (the Redis protocol) for a pipeline of commands and their replies.

use std::io::BufRead;

/// One reply.
#[derive(Debug)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Int(i64),
    /// `$N` then N bytes; `$-1` is `None`.
    Bulk(Option<Vec<u8>>),
    /// `*N` then N replies; `*-1` is `None`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a bulk or simple string reply.
    pub fn text(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b)),
            Reply::Simple(s) => Some(s.as_str().into()),
            _ => None,
        }
    }

    /// An integer reply (or a string holding one).
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            other => other.text()?.trim().parse().ok(),
        }
    }

    /// The elements of an array reply.
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(v)) => v,
            _ => &[],
        }
    }
}

/// Appends a command as a RESP array of bulk strings.
pub fn encode(out: &mut Vec<u8>, args: &[&str]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn bad(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// Reads one reply (nested arrays at most 4 deep: SLOWLOG GET's entries are 2).
pub fn read(r: &mut impl BufRead) -> std::io::Result<Reply> {
    read_depth(r, 0)
}

fn read_depth(r: &mut impl BufRead, depth: u32) -> std::io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "Redis closed the connection"));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    let number = || rest.parse::<i64>().map_err(|_| bad(format!("unexpected reply: {line:.80}")));
    Ok(match kind {
        "+" => Reply::Simple(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(number()?),
        "$" => {
            let n = number()?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut body = vec![0u8; n as usize + 2];
                r.read_exact(&mut body)?;
                body.truncate(n as usize);
                Reply::Bulk(Some(body))
            }
        }
        "*" => {
            let n = number()?;
            if n < 0 {
                Reply::Array(None)
            } else if depth >= 4 {
                return Err(bad("reply nested too deep".into()));
            } else {
                let mut items = Vec::with_capacity((n as usize).min(1024));
                for _ in 0..n {
                    items.push(read_depth(r, depth + 1)?);
                }
                Reply::Array(Some(items))
            }
        }
        _ => return Err(bad(format!("unexpected reply: {line:.80}"))),
    })
}
