//! A sidecar's file reads served on the calling thread when the kernel can answer at once.
//!
//! wasmtime-wasi runs every file read on tokio's blocking pool, because a read may wait on a
//! disk, a network filesystem or a FIFO, and a runtime thread must never wait: all of a pod's
//! sidecars share two. The hand-off to the pool and back costs a fifth of a log shipper's CPU
//! (BENCHMARKS.md, "Log shipping"). wasmtime's way out, `allow_blocking_current_thread`, lets any
//! read wait on the runtime thread, which a native container can turn into a stalled pod by
//! putting a FIFO or a hung mount where a sidecar reads.
//!
//! Here the read asks the kernel not to wait (`preadv2` with `RWF_NOWAIT`): the bytes already
//! in the page cache come back at once, copied straight into the buffer the guest gets. When
//! the kernel would have to wait (not cached, a FIFO, a device, a filesystem without the flag),
//! the caller hands the read to wasmtime unchanged, pool and all. So nothing waits on a runtime
//! thread, and the common case of a log being read just after it was written costs one syscall.

use std::os::fd::AsRawFd;

/// The most one read returns: wasmtime's own reads stop at 64 KiB; a log shipper asks for more
/// to spread the call's cost over more lines. The buffer is the host's only for the length of
/// the call (the guest's memory holds the copy), and at most one per runtime thread is live.
pub const MAX_READ: usize = 1 << 20;

/// Up to `len` bytes of `file` at `offset`, if the kernel has them without waiting; `None`
/// when it would wait or refuses the flag (then the read goes the usual way). An empty vector
/// is the end of the file, as for any read.
pub fn read_now(file: &std::fs::File, len: u64, offset: u64) -> Option<Vec<u8>> {
    let want = usize::try_from(len).unwrap_or(usize::MAX).min(MAX_READ);
    let offset = libc::off_t::try_from(offset).ok()?;
    let mut buf: Vec<u8> = Vec::with_capacity(want);
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: want,
    };
    // SAFETY: the one iovec covers `buf`'s allocated capacity, which outlives the call; the
    // kernel writes at most `want` bytes there and says how many.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    // EAGAIN (would wait), EOPNOTSUPP (no RWF_NOWAIT here), ESPIPE (a FIFO), or the file's own
    // error: wasmtime's read answers each as it always has.
    let n = usize::try_from(n).ok()?;
    // SAFETY: the kernel initialised the first `n` bytes, `n <= want <= capacity`.
    unsafe { buf.set_len(n.min(want)) };
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_cached_file_is_read_at_once_up_to_its_end() {
        let dir = std::env::temp_dir().join(format!("wpod-fs-cached-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"one\ntwo\nthree\n").unwrap();
        let f = std::fs::File::open(&path).unwrap();
        // Just written, so in the page cache.
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
    fn bytes_not_in_the_page_cache_are_left_to_wasmtimes_read() {
        // On the build's own disk (ext4, xfs or btrfs: filesystems that honour both the flag
        // and dropping a file's clean pages), not /tmp, which may be a tmpfs.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(format!("wpod-fs-uncached-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cold");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![b'x'; 1 << 16]).unwrap();
        f.sync_all().unwrap();
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: plain syscall on a descriptor we own.
        let dropped =
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(dropped, 0, "posix_fadvise(DONTNEED)");
        let got = read_now(&f, 4096, 0);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            got, None,
            "a read that would wait on the disk is not done here"
        );
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
        let dir = std::env::temp_dir().join(format!("wpod-fs-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big");
        std::fs::write(&path, vec![b'x'; MAX_READ + 4096]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let got = read_now(&f, u64::MAX, 0).expect("cached");
        assert_eq!(got.len(), MAX_READ);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
