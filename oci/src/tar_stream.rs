//! The framing of a tar stream, read by wpod itself: each member's header with its GNU and PAX
//! extensions merged, and its data. The `tar` crate decodes header fields only.
//!
//! Why not the crate's `Entries`: it reads a GNU long name or link and a PAX header whole,
//! whatever size the header claims (a 33 KB layer once drove a pull to 2.5 GiB), and applies
//! a link's long name only through calls wpod did not make (link targets were cut at 100
//! bytes). Its raw mode would let us cap the reads but then applies no PAX record at all, not
//! even `size`, which Go writes instead of the header's field for files of 8 GiB and more.
//!
//! So this reader follows Go's `archive/tar`, which wrote most image layers: extension data of
//! at most 1 MiB (Go's `maxSpecialFileSize`), refused from its declared size before anything
//! is read; PAX records parsed by their length (a value may hold a newline: binary xattrs do);
//! GNU long names over PAX `path`/`linkpath` over the ustar fields; a PAX `size`, `uid`, `gid`
//! and `mtime` applied; no data for links, directories, devices and FIFOs; global headers
//! (`g`) read within the cap and ignored, as containerd and moby do. What it does not know
//! (sparse files) is refused rather than misread, and a truncated member is an error, never a
//! short file.

use std::io::{self, Read};

use tar::EntryType;

/// The largest GNU long name or link, or PAX header, read (Go's and libarchive's limit).
pub const MAX_EXTENSION: u64 = 1 << 20;

/// One PAX record: key and value, as bytes.
pub type Record = (Vec<u8>, Vec<u8>);

/// One member of the archive, its extensions applied.
#[derive(Debug)]
pub struct Member {
    pub kind: EntryType,
    /// The full path, as the archive names it.
    pub path: Vec<u8>,
    /// The full link target of a symlink or hard link.
    pub link: Option<Vec<u8>>,
    /// Bytes of data (0 for every type but regular files).
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// The member's PAX records (its `SCHILY.xattr.*` among them).
    pub records: Vec<Record>,
}

/// Reads members one after the other; [`TarStream::data`] reads the current member's data
/// (what is left unread is skipped by the next call to [`TarStream::next`]).
pub struct TarStream<R> {
    r: R,
    left: u64,
    pad: u64,
    /// GNU and PAX extension headers seen, for the entry cap.
    pub extension_headers: u64,
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl<R: Read> TarStream<R> {
    pub fn new(r: R) -> Self {
        TarStream {
            r,
            left: 0,
            pad: 0,
            extension_headers: 0,
        }
    }

    /// The reader past the archive's end (its trailing bytes).
    pub fn into_inner(self) -> R {
        self.r
    }

    /// The current member's data.
    pub fn data(&mut self) -> Data<'_, R> {
        Data(self)
    }

    /// The next member, or `None` at the end-of-archive marker (or at the end of the stream on
    /// a block boundary).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> io::Result<Option<Member>> {
        skip(&mut self.r, self.left + self.pad)?;
        (self.left, self.pad) = (0, 0);
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Vec<Record>> = None;
        loop {
            let mut block = [0u8; 512];
            let got = read_block(&mut self.r, &mut block)?;
            let pending = long_name.is_some() || long_link.is_some() || pax.is_some();
            if !got || block.iter().all(|&b| b == 0) {
                if pending {
                    return Err(bad("extension headers that describe no member"));
                }
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block);
            check_sum(&block, header)?;
            let kind = header.entry_type();
            let declared = blank_or(&block[124..136], header.entry_size())?;
            if matches!(
                kind,
                EntryType::GNULongName
                    | EntryType::GNULongLink
                    | EntryType::XHeader
                    | EntryType::XGlobalHeader
            ) {
                self.extension_headers += 1;
                // Refused from the size it declares, before anything is allocated or read.
                if declared > MAX_EXTENSION {
                    return Err(bad(format!(
                        "a {declared}-byte extension header (at most {MAX_EXTENSION})"
                    )));
                }
                let mut data = vec![0; declared as usize];
                self.r.read_exact(&mut data)?;
                skip(&mut self.r, pad512(declared))?;
                match kind {
                    EntryType::GNULongName => once(&mut long_name, until_nul(data), "long name")?,
                    EntryType::GNULongLink => once(&mut long_link, until_nul(data), "long link")?,
                    EntryType::XHeader => once(&mut pax, parse_pax(&data)?, "PAX header")?,
                    // Global: checked, then ignored (containerd and moby ignore it too).
                    _ => drop(parse_pax(&data)?),
                }
                continue;
            }
            let records = pax.unwrap_or_default();
            // The last non-empty value of a key (an empty one means "no override", as in Go).
            let get = |key: &str| {
                records
                    .iter()
                    .rev()
                    .find(|(k, v)| k == key.as_bytes() && !v.is_empty())
                    .map(|(_, v)| v.as_slice())
            };
            if kind == EntryType::GNUSparse
                || records.iter().any(|(k, _)| k.starts_with(b"GNU.sparse."))
            {
                return Err(bad("sparse files are not supported"));
            }
            let path = long_name
                .filter(|n| !n.is_empty())
                .or_else(|| get("path").map(<[u8]>::to_vec))
                .unwrap_or_else(|| header.path_bytes().into_owned());
            let link = long_link
                .filter(|n| !n.is_empty())
                .or_else(|| get("linkpath").map(<[u8]>::to_vec))
                .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
            // An old-style regular file whose name ends in `/` is a directory (Go, GNU tar).
            let kind = if block[156] == 0 && path.ends_with(b"/") {
                EntryType::Directory
            } else {
                kind
            };
            let mut size = match get("size") {
                Some(v) => decimal(v, "size")?,
                None => declared,
            };
            if matches!(
                kind,
                EntryType::Link
                    | EntryType::Symlink
                    | EntryType::Char
                    | EntryType::Block
                    | EntryType::Directory
                    | EntryType::Fifo
            ) {
                size = 0;
            }
            let id = |key: &str, from_header: u64| -> io::Result<u32> {
                let v = match get(key) {
                    Some(v) => decimal(v, key)?,
                    None => from_header,
                };
                u32::try_from(v).map_err(|_| bad(format!("{key} {v} is out of range")))
            };
            // A blank numeric field is 0, as Go reads it.
            let uid = id("uid", blank_or(&block[108..116], header.uid())?)?;
            let gid = id("gid", blank_or(&block[116..124], header.gid())?)?;
            let mtime = match get("mtime") {
                // "%d[.%d]", possibly negative: seconds, clamped at the epoch.
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.split('.').next()?.parse::<i64>().ok())
                    .ok_or_else(|| bad("a PAX mtime that is not a number"))?
                    .max(0) as u64,
                None => header.mtime().unwrap_or(0),
            };
            let mode = blank_or(&block[100..108], header.mode().map(u64::from))? as u32;
            (self.left, self.pad) = (size, pad512(size));
            return Ok(Some(Member {
                kind,
                path,
                link,
                size,
                mode,
                uid,
                gid,
                mtime,
                records,
            }));
        }
    }
}

/// The current member's data: ends after its size, and fails (never a short file) when the
/// stream ends first.
pub struct Data<'a, R>(&'a mut TarStream<R>);

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf
            .len()
            .min(usize::try_from(self.0.left).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let n = self.0.r.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.0.left -= n as u64;
        Ok(n)
    }
}

/// PAX records, `"%d %s=%s\n"`, parsed by their length: a value may hold `\n` and `=`.
pub fn parse_pax(mut data: &[u8]) -> io::Result<Vec<Record>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let sp = data
            .iter()
            .take(8)
            .position(|&b| b == b' ')
            .filter(|&i| i > 0)
            .ok_or_else(|| bad("a PAX record without a length"))?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("a PAX record length that is not a number"))?;
        if len < sp + 4 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad("a PAX record that overruns its header"));
        }
        let record = &data[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .filter(|&e| e > 0)
            .ok_or_else(|| bad("a PAX record without a key"))?;
        out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// Reads one 512-byte block: `false` at the end of the stream on a block boundary.
fn read_block(r: &mut impl Read, block: &mut [u8; 512]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < block.len() {
        match r.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Skips `n` bytes, which must be there.
fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn pad512(n: u64) -> u64 {
    (512 - n % 512) % 512
}

/// A GNU long name or link ends at its first NUL (as Go reads it).
fn until_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|&b| b == 0) {
        v.truncate(i);
    }
    v
}

/// A header number, or 0 when its field is blank (all NULs and spaces).
fn blank_or(field: &[u8], parsed: io::Result<u64>) -> io::Result<u64> {
    match parsed {
        Err(_) if field.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        other => other,
    }
}

/// One extension of a kind per member.
fn once<T>(slot: &mut Option<T>, value: T, what: &str) -> io::Result<()> {
    if slot.is_some() {
        return Err(bad(format!("a second {what} for one member")));
    }
    *slot = Some(value);
    Ok(())
}

fn decimal(v: &[u8], what: &str) -> io::Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("a PAX {what} that is not a number")))
}

/// The header's checksum, as tar computes it: the unsigned sum of its bytes, the checksum
/// field counted as spaces.
fn check_sum(block: &[u8; 512], header: &tar::Header) -> io::Result<()> {
    let expected = header.cksum()?;
    let sum: u32 = block[..148]
        .iter()
        .chain(&[b' '; 8])
        .chain(&block[156..])
        .map(|&b| b as u32)
        .sum();
    if sum != expected {
        return Err(bad("a tar header whose checksum does not match"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: EntryType, name: &str, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_path(name).unwrap();
        h.set_mode(0o644);
        h.set_size(size);
        h.set_cksum();
        h
    }

    fn pad(out: &mut Vec<u8>) {
        out.resize(out.len() + pad512(out.len() as u64) as usize, 0);
    }

    fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
        let body = [key.as_bytes(), b"=", value, b"\n"].concat();
        let mut len = body.len() + 2;
        while format!("{len} ").len() + body.len() != len {
            len += 1;
        }
        [format!("{len} ").into_bytes(), body].concat()
    }

    #[test]
    fn an_oversized_extension_is_refused_before_it_is_read() {
        // A header claiming a 1 TiB long name, followed by nothing at all.
        let mut out = header(EntryType::GNULongName, "././@LongLink", 1 << 40)
            .as_bytes()
            .to_vec();
        out.extend([0u8; 1024]);
        let e = TarStream::new(&out[..]).next().unwrap_err();
        assert!(e.to_string().contains("extension header"), "{e}");
    }

    #[test]
    fn pax_values_keep_newlines_and_apply_size_and_owner() {
        let records = [
            pax_record("SCHILY.xattr.user.k", b"a\nb"),
            pax_record("size", b"700"),
            pax_record("uid", b"3000000"),
            pax_record("linkpath", b""),
        ]
        .concat();
        let mut out = header(EntryType::XHeader, "pax", records.len() as u64)
            .as_bytes()
            .to_vec();
        out.extend(&records);
        pad(&mut out);
        out.extend(header(EntryType::Regular, "big", 0).as_bytes());
        out.extend([7u8; 700]);
        pad(&mut out);
        out.extend(header(EntryType::Regular, "next", 1).as_bytes());
        out.push(9);
        pad(&mut out);
        out.extend([0u8; 1024]);
        let mut tar = TarStream::new(&out[..]);
        let m = tar.next().unwrap().unwrap();
        assert_eq!((m.size, m.uid), (700, 3_000_000));
        assert!(m
            .records
            .iter()
            .any(|(k, v)| k == b"SCHILY.xattr.user.k" && v == b"a\nb"));
        let mut data = Vec::new();
        tar.data().read_to_end(&mut data).unwrap();
        assert_eq!(data, vec![7u8; 700]);
        let m = tar.next().unwrap().unwrap();
        assert_eq!((m.path.as_slice(), m.size), (&b"next"[..], 1));
        assert!(tar.next().unwrap().is_none());
    }

    #[test]
    fn long_link_targets_are_whole() {
        let target = "t/".repeat(150);
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", &target).unwrap();
        let out = b.into_inner().unwrap();
        let mut tar = TarStream::new(&out[..]);
        let m = tar.next().unwrap().unwrap();
        assert_eq!(m.link.unwrap(), target.as_bytes());
        assert_eq!(tar.extension_headers, 1);
    }

    #[test]
    fn global_headers_are_ignored_and_truncation_is_an_error() {
        let records = pax_record("path", b"ignored");
        let mut out = header(EntryType::XGlobalHeader, "g", records.len() as u64)
            .as_bytes()
            .to_vec();
        out.extend(&records);
        pad(&mut out);
        out.extend(header(EntryType::Regular, "f", 100).as_bytes());
        out.extend([1u8; 10]);
        let mut tar = TarStream::new(&out[..]);
        let m = tar.next().unwrap().unwrap();
        assert_eq!(m.path, b"f");
        let e = tar.data().read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn dangling_extensions_and_bad_checksums_are_refused() {
        let records = pax_record("path", b"x");
        let mut out = header(EntryType::XHeader, "pax", records.len() as u64)
            .as_bytes()
            .to_vec();
        out.extend(&records);
        pad(&mut out);
        out.extend([0u8; 1024]);
        assert!(TarStream::new(&out[..]).next().is_err());
        let mut h = header(EntryType::Regular, "f", 0).as_bytes().to_vec();
        h[0] ^= 1;
        assert!(TarStream::new(&h[..]).next().is_err());
    }
}
