//! `StartUp` on a process's main thread, as the supervisor and the shim use it (libtest runs
//! tests on threads of its own, so this test is its own `main`: `harness = false`).

use std::hint::black_box;

use wpod_spec::memory::StartUp;

/// The main thread's `[stack]` mapping.
fn main_stack() -> std::ops::Range<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    let line = maps
        .lines()
        .find(|l| l.ends_with(" [stack]"))
        .expect("a [stack] line");
    let (start, end) = line.split_once(' ').unwrap().0.split_once('-').unwrap();
    usize::from_str_radix(start, 16).unwrap()..usize::from_str_radix(end, 16).unwrap()
}

/// Pages of `range` in memory, per mincore(2).
fn resident(range: std::ops::Range<usize>) -> usize {
    let mut pages = vec![0u8; range.len().div_ceil(4096)];
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
fn give_back(start_up: StartUp) -> wpod_spec::memory::GivenBack {
    start_up.done()
}

fn main() {
    // Start-up goes deep first (the stack grows to hold it), then is noted and given back.
    black_box(touch_deep());
    let start_up = StartUp::begin();
    // Live data of a frame above the one that gives back: kept.
    let canary = black_box([0x5au8; 8192]);
    let stack = main_stack();
    let before = resident(stack.clone());
    let given = give_back(start_up);
    let after = resident(stack);
    assert!(given.stack >= 200 * 1024, "{given:?}");
    assert!(
        after + 48 <= before,
        "{before} pages of the main stack resident before, {after} after"
    );
    assert!(
        black_box(&canary).iter().all(|b| *b == 0x5a),
        "the canary changed"
    );
    // The thread goes on using its stack as deep as before.
    black_box(touch_deep());
    println!("main thread: {before} -> {after} resident stack pages, {given:?}");
}
