//! `StartUp` on a process's main thread, as the supervisor and the shim use it, and on a thread
//! of its own (libtest runs tests on threads of its own, so this test is its own `main`:
//! `harness = false`).

use std::hint::black_box;
use std::ops::Range;

use wpod_spec::memory::{GivenBack, StartUp};

const PAGE: usize = 4096;

/// Pages of `range` in memory, per mincore(2).
fn resident(range: Range<usize>) -> usize {
    let mut pages = vec![0u8; range.len().div_ceil(PAGE)];
    // SAFETY: `pages` has one byte per page of the range.
    let r = unsafe {
        libc::mincore(
            range.start as *mut libc::c_void,
            range.len(),
            pages.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    pages.iter().filter(|p| **p & 1 == 1).count()
}

#[inline(never)]
fn touch_deep() -> u8 {
    let mut deep = [0u8; 256 * 1024];
    for i in (0..deep.len()).step_by(512) {
        deep[i] = i as u8;
    }
    black_box(&mut deep);
    deep[1000]
}

#[inline(never)]
fn give_back(start_up: StartUp) -> GivenBack {
    start_up.done()
}

/// Goes 256 KiB deep, notes the start-up, gives it back: the pages well below this frame go,
/// live data in this frame stays, and the thread can go as deep again.
fn goes_deep_then_gives_back(thread: &str) {
    black_box(touch_deep());
    let start_up = StartUp::begin();
    let canary = black_box([0x5au8; 8192]);
    let frame = black_box(&canary) as *const _ as usize;
    // The part of what `touch_deep` touched that is more than 32 KiB below this frame.
    let below = (frame - 240 * 1024) / PAGE * PAGE..(frame - 32 * 1024) / PAGE * PAGE;
    let before = resident(below.clone());
    let given = give_back(start_up);
    let after = resident(below);
    assert!(given.stack >= 200 * 1024, "{thread}: {given:?}");
    assert!(
        before >= 48 && after <= 2,
        "{thread}: {before} pages below the frame resident before, {after} after"
    );
    assert!(
        black_box(&canary).iter().all(|b| *b == 0x5a),
        "{thread}: the canary changed"
    );
    black_box(touch_deep());
    println!("{thread}: {before} -> {after} resident pages below the frame, {given:?}");
}

fn main() {
    goes_deep_then_gives_back("main thread");
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| goes_deep_then_gives_back("a thread of its own"))
        .expect("a thread")
        .join()
        .expect("the thread's checks");
}
