//! A sidecar's file reads served on the calling thread when the kernel can answer at once.
//!
//! wasmtime-wasi runs every file read on tokio's blocking pool, because a read may wait on a
//! disk, a network filesystem or a FIFO, and a runtime thread must never wait: all of a pod's
//! sidecars share two. The hand-off to the pool and back costs a fifth of a log shipper's CPU
//! (BENCHMARKS.md, "Log shipping"). wasmtime's way out, `allow_blocking_current_thread`, lets any
//! read wait on the runtime thread, which a native container can turn into a stalled pod by
//! putting a FIFO or a hung mount where a sidecar reads.
//!
//! Both ways a guest reads a file come here: `descriptor.read` (`pread`, [`read_now`]) and the
//! file's input stream (`read-via-stream`, [`FileReader`]), which wasi-libc's `read()` uses.
//!
//! Here the read asks the kernel not to wait (`preadv2` with `RWF_NOWAIT`): the bytes already
//! in the page cache come back at once, copied straight into the buffer the guest gets. When
//! the kernel would have to wait (not cached, a FIFO, a device, a filesystem without the flag),
//! the read goes to the blocking pool exactly as wasmtime's would. So nothing waits on a runtime
//! thread for data, and the common case of a log being read just after it was written costs
//! one syscall. (Bytes not cached may come back too: the kernel starts its read-ahead, which does
//! not wait, and a disk that answers within the call, a virtual one whose host has them cached,
//! fills the page before the kernel looks again.) Only regular files take this path: a device
//! that honours the flag (`/dev/zero`,
//! `/dev/urandom` in a hostPath) would otherwise have its work done on the runtime thread.
//!
//! What the flag does not cover: the file's access time, which the kernel updates after the read
//! (with `relatime`, once after each write to the file); on a journalling filesystem that may
//! wait briefly for the journal. A host that cannot afford that wait mounts the filesystem of
//! its volumes `noatime` or `lazytime`.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use wasmtime_wasi::runtime::{spawn_blocking, AbortOnDropJoinHandle};
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{InputStream, StreamError, StreamResult};

/// The most one read returns: wasmtime's own reads stop at 64 KiB; a log shipper asks for 128
/// KiB to spread the call's cost over more lines. The buffer is the host's only for the length
/// of the call (the guest's memory holds the copy), and at most one per runtime thread is live;
/// the copy is done on that thread, so this also bounds how long one call holds it.
pub const MAX_READ: usize = 256 * 1024;

/// Whether `file` may be read with [`read_now`]: a regular file (see the module's comment).
pub fn is_regular(file: &std::fs::File) -> bool {
    file.metadata().is_ok_and(|m| m.file_type().is_file())
}

/// Up to `len` bytes of `file` (a regular file, [`is_regular`]) at `offset`, if the kernel has
/// them without waiting; `None` when it would wait or refuses the flag (then the read goes the
/// usual way). An empty vector is the end of the file, as for any read.
pub fn read_now(file: &std::fs::File, len: u64, offset: u64) -> Option<Vec<u8>> {
    // EAGAIN (would wait), EOPNOTSUPP (no RWF_NOWAIT here), ESPIPE (a FIFO), or the file's own
    // error: wasmtime's read answers each as it always has.
    try_now(file, len, offset).ok()
}

/// [`read_now`], saying why not.
fn try_now(file: &std::fs::File, len: u64, offset: u64) -> std::io::Result<Vec<u8>> {
    let want = usize::try_from(len).unwrap_or(usize::MAX).min(MAX_READ);
    // Past i64::MAX the pool's read fails as wasmtime's does (EINVAL).
    let offset = libc::off_t::try_from(offset)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf: Vec<u8> = Vec::with_capacity(want);
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: want,
    };
    // SAFETY: the one iovec covers `buf`'s allocated capacity, which outlives the call; the
    // kernel writes at most `want` bytes there and says how many.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
    // SAFETY: the kernel initialised the first `n` bytes, `n <= want <= capacity`.
    unsafe { buf.set_len(n.min(want)) };
    Ok(buf)
}

/// The most one read on the blocking pool returns, as wasmtime's own (each allocates it whole).
const POOL_READ: usize = 64 * 1024;
/// What a poll for readiness reads ahead when the guest has not asked for a size yet (as
/// wasmtime's stream does).
const READY_READ: usize = 4096;

/// `read-via-stream` of a file: wasmtime-wasi's file input stream, state for state, except that
/// a read first asks the kernel for cached bytes ([`read_now`]) and goes to the blocking pool
/// only when that would wait. (A copy rather than a wrapper: wasmtime's keeps its state, and so
/// whether it holds bytes already read, to itself.) wasi-libc's `read()` (so Rust's `std::fs`,
/// Python's and C's file reads) comes through here.
pub struct FileReader {
    file: Arc<std::fs::File>,
    /// A regular file whose reads the kernel has not refused the flag for: try [`read_now`].
    fast: bool,
    /// Where the next read starts: bytes held in `Data` are counted once they are handed over.
    position: u64,
    state: ReadState,
}

enum ReadState {
    Idle,
    /// A read the kernel could not answer at once, on the blocking pool.
    Waiting(AbortOnDropJoinHandle<ReadState>),
    Data(Bytes),
    Error(std::io::Error),
    Closed,
}

impl FileReader {
    pub fn new(file: Arc<std::fs::File>, position: u64) -> Self {
        FileReader {
            fast: is_regular(&file),
            file,
            position,
            state: ReadState::Idle,
        }
    }

    /// From `Idle`: the next `size` bytes now if cached, else a read started on the pool.
    fn fetch(&mut self, size: usize) {
        let p = self.position;
        if self.fast {
            match try_now(&self.file, size as u64, p) {
                Ok(bytes) => {
                    self.state = match bytes.is_empty() {
                        true => ReadState::Closed,
                        false => ReadState::Data(Bytes::from(bytes)),
                    };
                    return;
                }
                // A filesystem without the flag (procfs, NFS) says so every time: stop asking.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => self.fast = false,
                Err(_) => {}
            }
        }
        let file = self.file.clone();
        self.state = ReadState::Waiting(spawn_blocking(move || pool_read(&file, p, size)));
    }

    async fn wait_ready(&mut self) {
        if let ReadState::Waiting(task) = &mut self.state {
            self.state = task.await;
        }
    }
}

/// A read on the blocking pool, which may wait.
fn pool_read(file: &std::fs::File, offset: u64, size: usize) -> ReadState {
    let mut buf = BytesMut::zeroed(size.min(POOL_READ));
    loop {
        match file.read_at(&mut buf, offset) {
            Ok(0) => return ReadState::Closed,
            Ok(n) => {
                buf.truncate(n);
                return ReadState::Data(buf.freeze());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return ReadState::Error(e),
        }
    }
}

#[wasmtime_wasi_io::async_trait]
impl InputStream for FileReader {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if let ReadState::Idle = self.state {
            if size == 0 {
                return Ok(Bytes::new());
            }
            self.fetch(size);
        }
        match &mut self.state {
            ReadState::Idle | ReadState::Waiting(_) => Ok(Bytes::new()),
            ReadState::Data(b) => {
                let chunk = b.split_to(b.len().min(size));
                if b.is_empty() {
                    self.state = ReadState::Idle;
                }
                self.position += chunk.len() as u64;
                Ok(chunk)
            }
            ReadState::Error(_) => match std::mem::replace(&mut self.state, ReadState::Closed) {
                ReadState::Error(e) => Err(StreamError::LastOperationFailed(e.into())),
                _ => Err(StreamError::Closed),
            },
            ReadState::Closed => Err(StreamError::Closed),
        }
    }

    async fn blocking_read(&mut self, size: usize) -> StreamResult<Bytes> {
        self.wait_ready().await;
        if let ReadState::Idle = self.state {
            self.fetch(size.max(1));
            self.wait_ready().await;
        }
        self.read(size)
    }

    async fn cancel(&mut self) {
        // A read already running on the pool cannot be stopped; it is waited for (wasmtime's
        // stream does the same), so that no read outlives its stream.
        if let ReadState::Waiting(task) = std::mem::replace(&mut self.state, ReadState::Closed) {
            task.cancel().await;
        }
    }
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for FileReader {
    async fn ready(&mut self) {
        if let ReadState::Idle = self.state {
            self.fetch(READY_READ);
        }
        self.wait_ready().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_cached_file_is_read_at_once_up_to_its_end() {
        // Just written, so in the page cache. (The build's own disk, as below: a filesystem
        // with RWF_NOWAIT for reads, as ext4, xfs and btrfs have.)
        let (dir, f) = disk_file("cached", b"one\ntwo\nthree\n", false);
        assert!(is_regular(&f));
        assert_eq!(read_now(&f, 4, 4).as_deref(), Some(&b"two\n"[..]));
        assert_eq!(read_now(&f, 100, 8).as_deref(), Some(&b"three\n"[..]));
        assert_eq!(
            read_now(&f, 100, 14).as_deref(),
            Some(&b""[..]),
            "end of file"
        );
        assert_eq!(read_now(&f, 0, 0).as_deref(), Some(&b""[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_device_is_never_read_on_the_runtime_thread() {
        let zero = std::fs::File::open("/dev/zero").unwrap();
        assert!(
            !is_regular(&zero),
            "/dev/zero would be read here, up to MAX_READ a call"
        );
        assert!(!FileReader::new(Arc::new(zero), 0).fast);
    }

    #[test]
    fn bytes_not_in_the_page_cache_are_left_to_wasmtimes_read_or_read_ahead_unwaited() {
        // On the build's own disk, not /tmp, which may be a tmpfs (which keeps its pages).
        let (dir, f) = disk_file("uncached", &[b'x'; 1 << 16], true);
        let got = read_now(&f, 4096, 0);
        std::fs::remove_dir_all(&dir).unwrap();
        // Declined (the pool reads it), or the right bytes: `RWF_NOWAIT` starts the kernel's
        // read-ahead, which does not wait, and a disk that answers within the call (this
        // virtual machine's did in 27 of 300 tries) has the page filled before the kernel
        // looks again. Never other bytes, never an error. (That nothing waits is the kernel's
        // promise for the flag; a FIFO's read, which would, is declined: the pipe test.)
        assert!(
            got.as_deref().is_none_or(|b| b == [b'x'; 4096]),
            "{:?}",
            got.map(|b| b.len())
        );
    }

    /// A file on the build's own disk, written and synced; `cold`: its pages dropped from the
    /// page cache (ext4, xfs and btrfs drop a file's clean pages on `POSIX_FADV_DONTNEED`).
    fn disk_file(name: &str, bytes: &[u8], cold: bool) -> (std::path::PathBuf, std::fs::File) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(format!("wpod-fs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        f.sync_all().unwrap();
        let f = std::fs::File::open(&path).unwrap();
        if cold {
            // The kernel skips a page someone holds a reference to at that moment: asked again
            // until `mincore` says the file is out of the page cache.
            let mut tries = 0;
            loop {
                // SAFETY: plain syscall on a descriptor we own.
                let dropped =
                    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
                assert_eq!(dropped, 0, "posix_fadvise(DONTNEED)");
                if resident_pages(&f, bytes.len()) == 0 {
                    break;
                }
                tries += 1;
                assert!(
                    tries < 100,
                    "{}: its pages stay in the page cache",
                    path.display()
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        (dir, f)
    }

    /// How many of the first `len` bytes' pages of `f` are in the page cache (`mincore` of a
    /// mapping nothing touches).
    fn resident_pages(f: &std::fs::File, len: usize) -> usize {
        // SAFETY: a shared read-only mapping of a file we own, never dereferenced; mincore
        // fills one byte per page of it; unmapped before returning.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED, "mmap");
            let page = usize::try_from(libc::sysconf(libc::_SC_PAGESIZE)).unwrap_or(4096);
            let pages = len.div_ceil(page);
            let mut vec = vec![0u8; pages];
            let r = libc::mincore(addr, len, vec.as_mut_ptr());
            libc::munmap(addr, len);
            assert_eq!(r, 0, "mincore");
            vec.iter().filter(|b| **b & 1 == 1).count()
        }
    }

    #[test]
    fn a_stream_of_a_cached_file_answers_at_once_then_closes() {
        let (dir, f) = disk_file("stream-warm", b"0123456789", false);
        // No runtime here: a read that went to the pool would panic.
        let mut r = FileReader::new(Arc::new(f), 2);
        assert_eq!(&r.read(3).unwrap()[..], b"234");
        assert_eq!(&r.read(100).unwrap()[..], b"56789");
        assert!(matches!(r.read(100), Err(StreamError::Closed)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stream_reads_what_is_not_cached_on_the_pool() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (dir, f) = disk_file("stream-cold", &data, true);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let mut r = FileReader::new(Arc::new(f), 0);
            // Not cached: the pool reads it (or, read ahead within the call, it comes at once:
            // see the test above).
            let mut got = r.read(4096).unwrap().to_vec();
            loop {
                match r.blocking_read(100_000).await {
                    Ok(b) => got.extend_from_slice(&b),
                    Err(StreamError::Closed) => break got,
                    Err(e) => panic!("{e:?}"),
                }
            }
        });
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            got, data,
            "every byte once, in order, whichever way it came"
        );
    }

    #[test]
    fn a_stream_of_a_pipe_fails_as_wasmtimes_does() {
        let (r, mut w) = std::io::pipe().unwrap();
        w.write_all(b"data").unwrap();
        let file = std::fs::File::from(std::os::fd::OwnedFd::from(r));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut s = FileReader::new(Arc::new(file), 0);
            // A pipe has no offsets: pread fails (ESPIPE), on the pool as in wasmtime's stream.
            assert!(matches!(
                s.blocking_read(4).await,
                Err(StreamError::LastOperationFailed(_))
            ));
            assert!(matches!(s.read(4), Err(StreamError::Closed)));
        });
    }

    #[test]
    fn a_pipe_is_left_to_wasmtimes_read() {
        let (r, mut w) = std::io::pipe().unwrap();
        w.write_all(b"data").unwrap();
        let r = std::fs::File::from(std::os::fd::OwnedFd::from(r));
        assert_eq!(read_now(&r, 4, 0), None, "a pipe has no offsets (ESPIPE)");
    }

    #[test]
    fn a_read_is_capped() {
        let (dir, f) = disk_file("cap", &vec![b'x'; MAX_READ + 4096], false);
        let got = read_now(&f, u64::MAX, 0).expect("cached");
        assert_eq!(got.len(), MAX_READ);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
