//! `wpod-helper`: the pod's namespace holder, the container shims and `__exec`, started by
//! `wpod run` (never by hand). A binary of its own so that each of these processes maps and
//! relocates only the helper code, not the whole of wpod.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    wpod::helper_main::run(&args)
}
