//! Memory a long-lived wpod process gives back once it has started.
//!
//! A pod's supervisor and each native container's shim live as long as the pod and spend that
//! life waiting. Their start-up (reading the manifest or the launch config, planning, building
//! the root filesystem) left heap and stack pages touched that the process no longer uses but
//! still holds: with hundreds of pods on a host, each page of it is held hundreds of times.
//! [`StartUp::done`] returns them to the kernel: the allocator's free pages (`malloc_trim`),
//! and the thread's stack pages below its current frame.

use std::ops::Range;

/// Stack kept below the caller's frame: room for the calls still to come (the `madvise` itself,
/// a signal handler) without faulting a page back in at once.
const STACK_MARGIN: usize = 8 * 1024;

/// What [`StartUp::done`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GivenBack {
    /// The allocator returned some memory to the kernel.
    pub heap: bool,
    /// Bytes of the thread's stack below its frame that were dropped.
    pub stack: usize,
}

/// A thread's start-up, from [`StartUp::begin`] (where its stack is read, while `/proc` is the
/// host's) to [`StartUp::done`].
#[derive(Debug)]
pub struct StartUp {
    thread: libc::pthread_t,
    stack: Option<Range<usize>>,
}

impl StartUp {
    /// Notes the calling thread and its stack: call it first thing, before anything can change
    /// what `/proc` is.
    pub fn begin() -> StartUp {
        StartUp {
            // SAFETY: pthread_self cannot fail.
            thread: unsafe { libc::pthread_self() },
            stack: thread_stack(),
        }
    }

    /// Returns what start-up touched and no longer uses: the allocator's free pages, and the
    /// pages of the thread's stack below the caller's frame (they come back zeroed if the thread
    /// ever reaches that deep again). Call it once the process has started what it waits on,
    /// from the thread that began, as high on its stack as it gets.
    #[inline(never)]
    pub fn done(self) -> GivenBack {
        // SAFETY: malloc_trim only works on the allocator's own free chunks.
        let heap = unsafe { libc::malloc_trim(0) } == 1;
        let marker = 0u8;
        let frame = std::hint::black_box(&marker) as *const u8 as usize;
        // SAFETY: pthread_self cannot fail, pthread_equal compares.
        let same_thread = unsafe { libc::pthread_equal(self.thread, libc::pthread_self()) } != 0;
        // The stack as it was at the beginning, never read again: by now the shim's `/proc` may
        // be one its container mounted. A stack mapping only grows, so that range is still in
        // it (pages it grew into since are kept).
        let dead = match (same_thread, self.stack) {
            (true, Some(stack)) => below_frame(stack, frame, page_size()),
            _ => None,
        };
        // SAFETY: every byte of `dead` is in this thread's stack mapping and below this frame
        // by more than STACK_MARGIN: no live frame, local or red zone is there. The mapping
        // stays; its pages fault back in zeroed.
        let madvise = |d: &Range<usize>| unsafe {
            libc::madvise(d.start as *mut libc::c_void, d.len(), libc::MADV_DONTNEED) == 0
        };
        let stack = dead.filter(madvise).map_or(0, |d| d.len());
        tracing::debug!(heap, stack, "gave back start-up memory");
        GivenBack { heap, stack }
    }
}

/// The calling thread's stack mapping, lowest address first. The main thread's is its
/// `[stack]` mapping as it is now (it grows on demand, so no other mapping can ever be in that
/// range); another thread's is the mapping it was created with, without its guard.
fn thread_stack() -> Option<Range<usize>> {
    // SAFETY: getpid and gettid cannot fail.
    if unsafe { libc::getpid() == libc::gettid() } {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        return main_stack(&maps);
    }
    // SAFETY: the attribute is initialised by pthread_getattr_np before it is read, and
    // destroyed once.
    unsafe {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return None;
        }
        let mut attr = attr.assume_init();
        let mut addr = std::ptr::null_mut();
        let mut size = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (got == 0).then(|| addr as usize..addr as usize + size)
    }
}

/// The `[stack]` line of `/proc/PID/maps`.
fn main_stack(maps: &str) -> Option<Range<usize>> {
    let line = maps.lines().find(|l| l.ends_with(" [stack]"))?;
    let (start, end) = line.split_once(' ')?.0.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    (start < end).then_some(start..end)
}

fn page_size() -> usize {
    // SAFETY: sysconf with a constant name.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// The whole pages of `stack` more than [`STACK_MARGIN`] below `frame`: none if `frame` is not
/// in `stack` or nothing is that far below it.
fn below_frame(stack: Range<usize>, frame: usize, page: usize) -> Option<Range<usize>> {
    if !stack.contains(&frame) {
        return None;
    }
    let start = stack.start.next_multiple_of(page);
    let end = frame.checked_sub(STACK_MARGIN)? / page * page;
    (end > start).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_pages_well_below_the_frame() {
        let page = 4096;
        let stack = 0x10_000..0x40_000;
        // 8 KiB of margin below the frame, rounded down to a page.
        assert_eq!(
            below_frame(stack.clone(), 0x30_123, page),
            Some(0x10_000..0x2e_000)
        );
        // A stack that does not start on a page boundary: from its first whole page.
        assert_eq!(
            below_frame(0x10_010..0x40_000, 0x30_000, page),
            Some(0x11_000..0x2e_000)
        );
        // Nothing that far below, or a frame elsewhere (another thread's stack).
        assert_eq!(below_frame(stack.clone(), 0x12_000, page), None);
        assert_eq!(below_frame(stack.clone(), 0x50_000, page), None);
        assert_eq!(below_frame(stack, 0x1000, page), None);
    }

    #[test]
    fn the_main_threads_stack_is_its_stack_line() {
        let maps = "5586556a2000-558657231000 r-xp 00000000 fe:00 1 /usr/bin/wpod\n\
                    7fff5c23d000-7fff5c25e000 rw-p 00000000 00:00 0                          [stack]\n\
                    7fff5c2f0000-7fff5c2f4000 r--p 00000000 00:00 0                          [vvar]\n";
        assert_eq!(main_stack(maps), Some(0x7fff5c23d000..0x7fff5c25e000));
        assert_eq!(
            main_stack("55e6-55e7 r-xp 0 fe:00 1 /usr/bin/[stack]x\n"),
            None
        );
    }

    /// A start-up given back on another thread than the one that began leaves the stack.
    #[test]
    fn another_threads_stack_is_left_alone() {
        let start_up = StartUp::begin();
        let given = std::thread::spawn(move || start_up.done())
            .join()
            .expect("joined");
        assert_eq!(given.stack, 0);
    }
}
