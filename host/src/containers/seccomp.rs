//! The default seccomp profile of container runtimes ("RuntimeDefault").
//!
//! Docker, containerd, CRI-O and podman confine every container they start with the same
//! seccomp filter unless told otherwise; Kubernetes calls it `RuntimeDefault`. It is an
//! allow-list: the system calls that ordinary programs need are allowed (some 310 on x86_64),
//! and every other call fails with `EPERM` (the default action). What it denies is the kernel surface that a
//! container has no business touching or that has a history of privilege escalations: new
//! namespaces (`unshare`, `setns`, `clone` with `CLONE_NEW*`), mounting, `bpf`,
//! `perf_event_open`, kernel modules, `kexec`, `reboot`, the clock, keyrings (`add_key`,
//! `keyctl`, `request_key`), `userfaultfd`, `io_uring`, AF_ALG and AF_VSOCK sockets, and
//! exotic `personality` values. A call that needs a capability is allowed only when the
//! container's bounding set holds that capability (`mount` with `CAP_SYS_ADMIN`, `chroot` with
//! `CAP_SYS_CHROOT`, ...), exactly as upstream does.
//!
//! Ported from containerd's `contrib/seccomp/seccomp_default.go`, function `DefaultProfile`, at
//! containerd commit `301026e58c619e63d09c0ec411012e54c0124b03` (file blob `d48983dd6c07`);
//! moby's `profiles/seccomp/default.json` carries the same list. The lists below keep
//! upstream's spelling and order, so a later upstream change can be diffed in by eye.
//!
//! Differences from upstream, all forced by the target or by the `seccompiler` crate (which
//! compiles one architecture per program):
//! - Names of calls that do not exist on the target architecture (32-bit-only calls such as
//!   `_llseek`, `socketcall`, `chown32`, the `*_time64` family, other architectures' calls) are
//!   left out: see `ABSENT` in the `arch` module, which a test keeps exact.
//! - Only the native ABI is allowed. Upstream also allows the compat ABIs (x86 and x32 on
//!   x86_64, arm on aarch64); here a call made through another ABI kills the process (the
//!   architecture check `seccompiler` puts in front of every program) and x32 calls fail with
//!   `EPERM`.
//! - Argument checks on `socket` and `personality` compare the low 32 bits, because the kernel
//!   reads those arguments as `int`/`unsigned int`. (A 64-bit compare, as libseccomp does,
//!   would let `socket(AF_ALG | 1 << 32, ..)` through the `> AF_VSOCK` rule.)

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::io;

use seccompiler::{
    sock_filter, BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp,
    SeccompCondition, SeccompFilter, SeccompRule,
};

/// Errors building or installing the filter; messages name the syscall (seccomp, prctl).
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile has no syscall table for this CPU architecture.
    #[error("no seccomp profile for CPU architecture {0}")]
    UnsupportedArch(&'static str),
    /// `seccompiler` refused a rule or the filter.
    #[error("compile seccomp filter: {0}")]
    Compile(BackendError),
    /// The kernel takes programs of 1 to 4096 instructions.
    #[error("seccomp program of {0} instructions: the kernel takes 1 to 4096")]
    Length(usize),
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed (`EACCES`: neither `no_new_privs` nor
    /// `CAP_SYS_ADMIN`).
    #[error("seccomp(SECCOMP_SET_MODE_FILTER): {0}")]
    Seccomp(io::Error),
    /// `prctl(PR_SET_SECCOMP)`, the fallback for kernels without the seccomp syscall, failed.
    #[error("prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER): {0}")]
    Prctl(io::Error),
}

/// Builds the RuntimeDefault BPF program for a container whose capability bounding set is
/// `capabilities` (kernel spelling, e.g. "CAP_SYS_ADMIN").
pub fn runtime_default(capabilities: &[String]) -> Result<seccompiler::BpfProgram, SeccompError> {
    let arch = arch::TARGET.ok_or(SeccompError::UnsupportedArch(std::env::consts::ARCH))?;
    let allow = allowed(capabilities)?;
    let admin = capabilities.iter().any(|c| c == "CAP_SYS_ADMIN");
    let main = compile(
        allow.into_rules(),
        SeccompAction::Errno(EPERM),
        SeccompAction::Allow,
        arch,
    )?;
    let program = if admin {
        main
    } else {
        // clone3 fails with ENOSYS rather than EPERM, so that glibc (and others) fall back to
        // clone, whose flags the filter can see (clone3 passes them in memory).
        // https://github.com/moby/moby/pull/42681
        let mut clone3 = Allowed::default();
        clone3.names(&["clone3"]);
        let first = compile(
            clone3.into_rules(),
            SeccompAction::Allow,
            SeccompAction::Errno(ENOSYS),
            arch,
        )?;
        then_on_allow(first, main)
    };
    if program.is_empty() || program.len() > BPF_MAX_LEN {
        return Err(SeccompError::Length(program.len()));
    }
    Ok(program)
}

/// Installs a program on the calling thread (needs no_new_privs or CAP_SYS_ADMIN).
///
/// Unlike `seccompiler::apply_filter`, this does not set `no_new_privs` itself: whether the
/// container gets it is the container's setting.
pub fn install(program: &seccompiler::BpfProgram) -> Result<(), SeccompError> {
    let len = u16::try_from(program.len())
        .ok()
        .filter(|&n| n > 0 && usize::from(n) <= BPF_MAX_LEN)
        .ok_or(SeccompError::Length(program.len()))?;
    let prog = libc::sock_fprog {
        len,
        // The kernel only reads the program (copy_from_user); the layouts are the same
        // (checked below).
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    let prog_ptr: *const libc::sock_fprog = &prog;
    // SAFETY: `prog` points at `len` valid instructions and outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            prog_ptr,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(SeccompError::Seccomp(err));
    }
    // Kernels before 3.17 have no seccomp(2); prctl installs the same filter.
    // SAFETY: as above.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            prog_ptr,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SeccompError::Prctl(io::Error::last_os_error()))
    }
}

// seccompiler's instruction type is handed to the kernel as libc's.
const _: () = assert!(
    std::mem::size_of::<sock_filter>() == std::mem::size_of::<libc::sock_filter>()
        && std::mem::align_of::<sock_filter>() == std::mem::align_of::<libc::sock_filter>()
);

const EPERM: u32 = libc::EPERM as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;
/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
const BPF_MAX_LEN: usize = libc::BPF_MAXINSNS as usize;

// ---------------------------------------------------------------------------------------------
// The profile, in upstream's order and spelling.
// ---------------------------------------------------------------------------------------------

/// Allowed unconditionally: what ordinary programs use (files, memory, signals, time,
/// sockets, IPC, process and thread management, credentials within the user's own range).
/// Upstream names the calls of every architecture here; those the target lacks are skipped.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
    "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range", "connect",
    "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
    "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old",
    "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat",
    "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod",
    "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync",
    "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64",
    "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex",
    "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat",
    "getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32", "geteuid",
    "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername",
    "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
    "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage",
    "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday",
    "getuid", "getuid32", "getxattr", "getxattrat", "inotify_add_watch", "inotify_init",
    "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents",
    "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup",
    "io_submit", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen",
    "listmount", "listxattr", "listxattrat", "llistxattr", "_llseek", "lremovexattr", "lseek",
    "lsetxattr", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "lstat",
    "lstat64", "madvise", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir",
    "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "map_shadow_stack", "mmap",
    "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap",
    "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
    "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2",
    "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2",
    "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64", "pwritev",
    "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom",
    "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr",
    "removexattrat", "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq",
    "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
    "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop",
    "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg",
    "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
    "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32",
    "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32",
    "setrlimit", "set_robust_list", "setsid", "setsockopt", "set_thread_area",
    "set_tid_address", "setuid", "setuid32", "setxattr", "setxattrat", "shmat", "shmctl",
    "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask",
    "sigreturn", "socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64",
    "statmount", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
    "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
    "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times",
    "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat",
    "uretprobe", "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice",
    "wait4", "waitid", "waitpid", "write", "writev",
];

/// `socket` is allowed for every address family but AF_ALG (38, the kernel crypto API) and
/// AF_VSOCK (40, host-guest sockets): upstream allows `< AF_ALG`, `== AF_ALG + 1` and
/// `> AF_VSOCK`, three rules so that the two blocked families match none.
const SOCKET_DOMAIN_RULES: [(SeccompCmpOp, u64); 3] = [
    (SeccompCmpOp::Lt, libc::AF_ALG as u64),
    (SeccompCmpOp::Eq, libc::AF_ALG as u64 + 1),
    (SeccompCmpOp::Gt, libc::AF_VSOCK as u64),
];

/// `personality` is allowed only for these values: PER_LINUX (0x0), PER_LINUX32 (0x8),
/// UNAME26 (0x20000), UNAME26 | PER_LINUX32 (0x20008), and 0xffffffff (query the current
/// persona). Other flags (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ...) weaken exploit
/// mitigations.
const PERSONALITY_VALUES: [u64; 5] = [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// Allowed on kernels 4.8 and later, whatever the capabilities: before 4.8, ptrace could be
/// used to bypass seccomp.
const ALLOWED_SINCE_4_8: &[&str] = &["process_vm_readv", "process_vm_writev", "ptrace"];

/// Allowed when the bounding set holds the capability: these calls need it in the kernel
/// anyway, and the filter keeps the rest of the kernel surface closed when it is absent.
#[rustfmt::skip]
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    // Open a file from a handle, bypassing path permission checks (the "shocker" escape).
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    // Namespaces, mounts, BPF, perf, quotas, host and domain names, the kernel log.
    ("CAP_SYS_ADMIN", &[
        "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
        "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open",
        "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
        "umount2", "unshare",
    ]),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    // Inspecting and manipulating other processes.
    ("CAP_SYS_PTRACE", &[
        "kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
        "ptrace",
    ]),
    // Raw I/O port access.
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    // Setting the system clock.
    ("CAP_SYS_TIME", &["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    // NUMA memory policy.
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Without CAP_SYS_ADMIN, `clone` is allowed only when its flags (argument 0 on x86_64 and
/// aarch64; s390 swaps the first two) ask for no new namespace; `clone3` then fails with
/// ENOSYS (see `runtime_default`).
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// The syscalls allowed for `capabilities`, with their argument rules.
fn allowed(capabilities: &[String]) -> Result<Allowed, SeccompError> {
    let has = |cap: &str| capabilities.iter().any(|c| c == cap);
    let mut allow = Allowed::default();
    allow.names(ALLOWED);
    for (op, value) in SOCKET_DOMAIN_RULES {
        allow.when("socket", condition(0, SeccompCmpArgLen::Dword, op, value)?)?;
    }
    for value in PERSONALITY_VALUES {
        let eq = condition(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)?;
        allow.when("personality", eq)?;
    }
    if kernel_at_least(4, 8) {
        allow.names(ALLOWED_SINCE_4_8);
    }
    allow.names(arch::ALLOWED);
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            allow.names(names);
        }
    }
    if !has("CAP_SYS_ADMIN") {
        let no_new_namespace = condition(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(CLONE_NAMESPACE_FLAGS),
            0,
        )?;
        allow.when("clone", no_new_namespace)?;
    }
    Ok(allow)
}

fn condition(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, len, op, value).map_err(SeccompError::Compile)
}

/// Syscall numbers with their rules: `None` allows the call whatever its arguments, `Some`
/// allows it when any of the rules matches.
#[derive(Default)]
struct Allowed(BTreeMap<i64, Option<Vec<SeccompRule>>>);

impl Allowed {
    /// Allows `names` unconditionally; names this architecture lacks are skipped.
    fn names(&mut self, names: &[&str]) {
        for nr in names.iter().filter_map(|name| arch::number(name)) {
            self.0.insert(nr, None);
        }
    }

    /// Allows `name` when `condition` holds (unless it is already allowed unconditionally).
    fn when(&mut self, name: &str, condition: SeccompCondition) -> Result<(), SeccompError> {
        let Some(nr) = arch::number(name) else {
            return Ok(());
        };
        let rule = SeccompRule::new(vec![condition]).map_err(SeccompError::Compile)?;
        if let Some(rules) = self.0.entry(nr).or_insert_with(|| Some(Vec::new())) {
            rules.push(rule);
        }
        Ok(())
    }

    fn into_rules(self) -> BTreeMap<i64, Vec<SeccompRule>> {
        self.0
            .into_iter()
            .map(|(nr, rules)| (nr, rules.unwrap_or_default()))
            .collect()
    }
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: seccompiler::TargetArch,
) -> Result<BpfProgram, SeccompError> {
    let filter =
        SeccompFilter::new(rules, mismatch, matched, arch).map_err(SeccompError::Compile)?;
    BpfProgram::try_from(filter).map_err(SeccompError::Compile)
}

/// One program out of two: runs `first`, and where `first` would return ALLOW, runs `then`.
/// (A `seccompiler` filter has a single match action; this puts the ENOSYS rule for clone3
/// in front of the EPERM-by-default allow-list.) Classic BPF only jumps forward, by offsets
/// relative to the next instruction, so both programs' own jumps stay valid.
fn then_on_allow(first: BpfProgram, then: BpfProgram) -> BpfProgram {
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
    let len = first.len();
    let mut out = Vec::with_capacity(len + then.len());
    for (i, insn) in first.into_iter().enumerate() {
        if insn.code == RET_K && insn.k == libc::SECCOMP_RET_ALLOW {
            // Jump to the start of `then`, at index `len`.
            let k = u32::try_from(len - i - 1).unwrap_or(u32::MAX);
            out.push(sock_filter {
                code: JA,
                jt: 0,
                jf: 0,
                k,
            });
        } else {
            out.push(insn);
        }
    }
    out.extend(then);
    out
}

/// Whether the running kernel is at least `major.minor` (false when uname cannot tell, as
/// upstream).
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: utsname is plain bytes; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return false;
    }
    // SAFETY: uname NUL-terminates the field, which was zeroed besides.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy();
    parse_release(&release).is_some_and(|v| v >= (major, minor))
}

/// `"6.8.0-45-generic"` -> `(6, 8)`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

// ---------------------------------------------------------------------------------------------
// Syscall numbers per architecture.
// ---------------------------------------------------------------------------------------------

/// `("SYS_name", number)` pairs from libc's constants.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! from_libc {
    ($($sys:ident)*) => { &[$((stringify!($sys), libc::$sys)),*] };
}

/// Looks `name` up in a table built by `from_libc!` and in one of numbers.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn lookup(name: &str, from_libc: &[(&str, i64)], by_number: &[(&str, i64)]) -> Option<i64> {
    from_libc
        .iter()
        .find(|(sys, _)| sys.strip_prefix("SYS_") == Some(name))
        .or_else(|| by_number.iter().find(|(n, _)| *n == name))
        .map(|&(_, nr)| nr)
}

#[cfg(target_arch = "x86_64")]
mod arch {
    use seccompiler::TargetArch;

    pub(super) const TARGET: Option<TargetArch> = Some(TargetArch::x86_64);

    /// Upstream's additions for amd64: thread-local storage setup and the LDT, which
    /// 32-bit code and Wine use.
    pub(super) const ALLOWED: &[&str] = &["arch_prctl", "modify_ldt"];

    pub(super) fn number(name: &str) -> Option<i64> {
        super::lookup(name, FROM_LIBC, BY_NUMBER)
    }

    /// Upstream's names that libc (0.2.191) defines for this target.
    #[rustfmt::skip]
    const FROM_LIBC: &[(&str, i64)] = from_libc![
        SYS_accept SYS_accept4 SYS_access SYS_acct SYS_adjtimex SYS_alarm SYS_arch_prctl
        SYS_bind SYS_bpf SYS_brk SYS_capget SYS_capset SYS_chdir SYS_chmod SYS_chown SYS_chroot
        SYS_clock_adjtime SYS_clock_getres SYS_clock_gettime SYS_clock_nanosleep
        SYS_clock_settime SYS_clone SYS_clone3 SYS_close SYS_close_range SYS_connect
        SYS_copy_file_range SYS_creat SYS_delete_module SYS_dup SYS_dup2 SYS_dup3
        SYS_epoll_create SYS_epoll_create1 SYS_epoll_ctl SYS_epoll_ctl_old SYS_epoll_pwait
        SYS_epoll_pwait2 SYS_epoll_wait SYS_epoll_wait_old SYS_eventfd SYS_eventfd2 SYS_execve
        SYS_execveat SYS_exit SYS_exit_group SYS_faccessat SYS_faccessat2 SYS_fadvise64
        SYS_fallocate SYS_fanotify_init SYS_fanotify_mark SYS_fchdir SYS_fchmod SYS_fchmodat
        SYS_fchmodat2 SYS_fchown SYS_fchownat SYS_fcntl SYS_fdatasync SYS_fgetxattr
        SYS_finit_module SYS_flistxattr SYS_flock SYS_fork SYS_fremovexattr SYS_fsconfig
        SYS_fsetxattr SYS_fsmount SYS_fsopen SYS_fspick SYS_fstat SYS_fstatfs SYS_fsync
        SYS_ftruncate SYS_futex SYS_futex_waitv SYS_futimesat SYS_get_mempolicy
        SYS_get_robust_list SYS_get_thread_area SYS_getcpu SYS_getcwd SYS_getdents
        SYS_getdents64 SYS_getegid SYS_geteuid SYS_getgid SYS_getgroups SYS_getitimer
        SYS_getpeername SYS_getpgid SYS_getpgrp SYS_getpid SYS_getppid SYS_getpriority
        SYS_getrandom SYS_getresgid SYS_getresuid SYS_getrlimit SYS_getrusage SYS_getsid
        SYS_getsockname SYS_getsockopt SYS_gettid SYS_gettimeofday SYS_getuid SYS_getxattr
        SYS_init_module SYS_inotify_add_watch SYS_inotify_init SYS_inotify_init1
        SYS_inotify_rm_watch SYS_io_cancel SYS_io_destroy SYS_io_getevents SYS_io_setup
        SYS_io_submit SYS_ioctl SYS_ioperm SYS_iopl SYS_ioprio_get SYS_ioprio_set SYS_kcmp
        SYS_kill SYS_landlock_add_rule SYS_landlock_create_ruleset SYS_landlock_restrict_self
        SYS_lchown SYS_lgetxattr SYS_link SYS_linkat SYS_listen SYS_listxattr SYS_llistxattr
        SYS_lookup_dcookie SYS_lremovexattr SYS_lseek SYS_lsetxattr SYS_lstat SYS_madvise
        SYS_mbind SYS_membarrier SYS_memfd_create SYS_memfd_secret SYS_mincore SYS_mkdir
        SYS_mkdirat SYS_mknod SYS_mknodat SYS_mlock SYS_mlock2 SYS_mlockall SYS_mmap
        SYS_modify_ldt SYS_mount SYS_mount_setattr SYS_move_mount SYS_mprotect SYS_mq_getsetattr
        SYS_mq_notify SYS_mq_open SYS_mq_timedreceive SYS_mq_timedsend SYS_mq_unlink SYS_mremap
        SYS_mseal SYS_msgctl SYS_msgget SYS_msgrcv SYS_msgsnd SYS_msync SYS_munlock
        SYS_munlockall SYS_munmap SYS_name_to_handle_at SYS_nanosleep SYS_newfstatat SYS_open
        SYS_open_by_handle_at SYS_open_tree SYS_openat SYS_openat2 SYS_pause SYS_perf_event_open
        SYS_personality SYS_pidfd_getfd SYS_pidfd_open SYS_pidfd_send_signal SYS_pipe SYS_pipe2
        SYS_pkey_alloc SYS_pkey_free SYS_pkey_mprotect SYS_poll SYS_ppoll SYS_prctl SYS_pread64
        SYS_preadv SYS_preadv2 SYS_prlimit64 SYS_process_madvise SYS_process_mrelease
        SYS_process_vm_readv SYS_process_vm_writev SYS_pselect6 SYS_ptrace SYS_pwrite64
        SYS_pwritev SYS_pwritev2 SYS_quotactl SYS_quotactl_fd SYS_read SYS_readahead
        SYS_readlink SYS_readlinkat SYS_readv SYS_reboot SYS_recvfrom SYS_recvmmsg SYS_recvmsg
        SYS_remap_file_pages SYS_removexattr SYS_rename SYS_renameat SYS_renameat2
        SYS_restart_syscall SYS_rmdir SYS_rseq SYS_rt_sigaction SYS_rt_sigpending
        SYS_rt_sigprocmask SYS_rt_sigqueueinfo SYS_rt_sigreturn SYS_rt_sigsuspend
        SYS_rt_sigtimedwait SYS_rt_tgsigqueueinfo SYS_sched_get_priority_max
        SYS_sched_get_priority_min SYS_sched_getaffinity SYS_sched_getattr SYS_sched_getparam
        SYS_sched_getscheduler SYS_sched_rr_get_interval SYS_sched_setaffinity SYS_sched_setattr
        SYS_sched_setparam SYS_sched_setscheduler SYS_sched_yield SYS_seccomp SYS_select
        SYS_semctl SYS_semget SYS_semop SYS_semtimedop SYS_sendfile SYS_sendmmsg SYS_sendmsg
        SYS_sendto SYS_set_mempolicy SYS_set_mempolicy_home_node SYS_set_robust_list
        SYS_set_thread_area SYS_set_tid_address SYS_setdomainname SYS_setfsgid SYS_setfsuid
        SYS_setgid SYS_setgroups SYS_sethostname SYS_setitimer SYS_setns SYS_setpgid
        SYS_setpriority SYS_setregid SYS_setresgid SYS_setresuid SYS_setreuid SYS_setrlimit
        SYS_setsid SYS_setsockopt SYS_settimeofday SYS_setuid SYS_setxattr SYS_shmat SYS_shmctl
        SYS_shmdt SYS_shmget SYS_shutdown SYS_sigaltstack SYS_signalfd SYS_signalfd4 SYS_socket
        SYS_socketpair SYS_splice SYS_stat SYS_statfs SYS_statx SYS_symlink SYS_symlinkat
        SYS_sync SYS_sync_file_range SYS_syncfs SYS_sysinfo SYS_syslog SYS_tee SYS_tgkill
        SYS_time SYS_timer_create SYS_timer_delete SYS_timer_getoverrun SYS_timer_gettime
        SYS_timer_settime SYS_timerfd_create SYS_timerfd_gettime SYS_timerfd_settime SYS_times
        SYS_tkill SYS_truncate SYS_umask SYS_umount2 SYS_uname SYS_unlink SYS_unlinkat
        SYS_unshare SYS_utime SYS_utimensat SYS_utimes SYS_vfork SYS_vhangup SYS_vmsplice
        SYS_wait4 SYS_waitid SYS_write SYS_writev
    ];

    /// Calls the kernel has on this architecture but libc 0.2.191 has no constant for;
    /// numbers from the kernel's syscall table (as listed in libseccomp's `src/syscalls.csv`).
    #[rustfmt::skip]
    const BY_NUMBER: &[(&str, i64)] = &[
        ("io_pgetevents", 333),
        ("uretprobe", 335), // kernel v6.11
        ("cachestat", 451), // kernel v6.5
        ("map_shadow_stack", 453), // kernel v6.6
        ("futex_wake", 454), // kernel v6.7
        ("futex_wait", 455), // kernel v6.7
        ("futex_requeue", 456), // kernel v6.7
        ("statmount", 457), // kernel v6.8
        ("listmount", 458), // kernel v6.8
        ("lsm_get_self_attr", 459), // kernel v6.8
        ("lsm_set_self_attr", 460), // kernel v6.8
        ("lsm_list_modules", 461), // kernel v6.8
        ("setxattrat", 463), // kernel v6.13
        ("getxattrat", 464), // kernel v6.13
        ("listxattrat", 465), // kernel v6.13
        ("removexattrat", 466), // kernel v6.13
    ];

    /// Upstream's names with no such call on this architecture, left out of the filter:
    /// 32-bit-only calls (`*32`, `*64` on 32-bit ABIs, `*_time64`, `socketcall`, `ipc`, ...),
    /// legacy calls the architecture never had, and other architectures' calls.
    #[cfg_attr(not(test), allow(dead_code))]
    #[rustfmt::skip]
    pub(super) const ABSENT: &[&str] = &[
        "_llseek", "_newselect", "chown32", "clock_adjtime64", "clock_getres_time64",
        "clock_gettime64", "clock_nanosleep_time64", "clock_settime64", "fadvise64_64",
        "fchown32", "fcntl64", "fstat64", "fstatat64", "fstatfs64", "ftruncate64",
        "futex_time64", "getegid32", "geteuid32", "getgid32", "getgroups32", "getresgid32",
        "getresuid32", "getuid32", "io_pgetevents_time64", "ipc", "lchown32", "lstat64",
        "mmap2", "mq_timedreceive_time64", "mq_timedsend_time64", "ppoll_time64",
        "pselect6_time64", "recv", "recvmmsg_time64", "rt_sigtimedwait_time64",
        "sched_rr_get_interval_time64", "semtimedop_time64", "send", "sendfile64", "setfsgid32",
        "setfsuid32", "setgid32", "setgroups32", "setregid32", "setresgid32", "setresuid32",
        "setreuid32", "setuid32", "sigprocmask", "sigreturn", "socketcall", "stat64",
        "statfs64", "stime", "timer_gettime64", "timer_settime64", "timerfd_gettime64",
        "timerfd_settime64", "truncate64", "ugetrlimit", "umount", "utimensat_time64",
        "waitpid",
    ];
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use seccompiler::TargetArch;

    pub(super) const TARGET: Option<TargetArch> = Some(TargetArch::aarch64);

    /// Upstream's additions for arm and arm64. All of them are 32-bit ARM calls, absent from
    /// the arm64 table (they are kept so that the list reads as upstream's).
    pub(super) const ALLOWED: &[&str] = &[
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "sync_file_range2",
        "breakpoint",
        "cacheflush",
        "set_tls",
    ];

    pub(super) fn number(name: &str) -> Option<i64> {
        super::lookup(name, FROM_LIBC, BY_NUMBER)
    }

    /// Upstream's names that libc (0.2.191) defines for this target.
    #[rustfmt::skip]
    const FROM_LIBC: &[(&str, i64)] = from_libc![
        SYS_accept SYS_accept4 SYS_acct SYS_adjtimex SYS_bind SYS_bpf SYS_brk SYS_capget
        SYS_capset SYS_chdir SYS_chroot SYS_clock_adjtime SYS_clock_getres SYS_clock_gettime
        SYS_clock_nanosleep SYS_clock_settime SYS_clone SYS_clone3 SYS_close SYS_close_range
        SYS_connect SYS_copy_file_range SYS_delete_module SYS_dup SYS_dup3 SYS_epoll_create1
        SYS_epoll_ctl SYS_epoll_pwait SYS_epoll_pwait2 SYS_eventfd2 SYS_execve SYS_execveat
        SYS_exit SYS_exit_group SYS_faccessat SYS_faccessat2 SYS_fadvise64 SYS_fallocate
        SYS_fanotify_init SYS_fanotify_mark SYS_fchdir SYS_fchmod SYS_fchmodat SYS_fchown
        SYS_fchownat SYS_fcntl SYS_fdatasync SYS_fgetxattr SYS_finit_module SYS_flistxattr
        SYS_flock SYS_fremovexattr SYS_fsconfig SYS_fsetxattr SYS_fsmount SYS_fsopen SYS_fspick
        SYS_fstat SYS_fstatfs SYS_fsync SYS_ftruncate SYS_futex SYS_futex_waitv
        SYS_get_mempolicy SYS_get_robust_list SYS_getcpu SYS_getcwd SYS_getdents64 SYS_getegid
        SYS_geteuid SYS_getgid SYS_getgroups SYS_getitimer SYS_getpeername SYS_getpgid
        SYS_getpid SYS_getppid SYS_getpriority SYS_getrandom SYS_getresgid SYS_getresuid
        SYS_getrusage SYS_getsid SYS_getsockname SYS_getsockopt SYS_gettid SYS_gettimeofday
        SYS_getuid SYS_getxattr SYS_init_module SYS_inotify_add_watch SYS_inotify_init1
        SYS_inotify_rm_watch SYS_io_cancel SYS_io_destroy SYS_io_getevents SYS_io_setup
        SYS_io_submit SYS_ioctl SYS_ioprio_get SYS_ioprio_set SYS_kcmp SYS_kill
        SYS_landlock_add_rule SYS_landlock_create_ruleset SYS_landlock_restrict_self
        SYS_lgetxattr SYS_linkat SYS_listen SYS_listxattr SYS_llistxattr SYS_lookup_dcookie
        SYS_lremovexattr SYS_lseek SYS_lsetxattr SYS_madvise SYS_mbind SYS_membarrier
        SYS_memfd_create SYS_memfd_secret SYS_mincore SYS_mkdirat SYS_mknodat SYS_mlock
        SYS_mlock2 SYS_mlockall SYS_mmap SYS_mount SYS_mount_setattr SYS_move_mount SYS_mprotect
        SYS_mq_getsetattr SYS_mq_notify SYS_mq_open SYS_mq_timedreceive SYS_mq_timedsend
        SYS_mq_unlink SYS_mremap SYS_mseal SYS_msgctl SYS_msgget SYS_msgrcv SYS_msgsnd SYS_msync
        SYS_munlock SYS_munlockall SYS_munmap SYS_name_to_handle_at SYS_nanosleep SYS_newfstatat
        SYS_open_by_handle_at SYS_open_tree SYS_openat SYS_openat2 SYS_perf_event_open
        SYS_personality SYS_pidfd_getfd SYS_pidfd_open SYS_pidfd_send_signal SYS_pipe2
        SYS_pkey_alloc SYS_pkey_free SYS_pkey_mprotect SYS_ppoll SYS_prctl SYS_pread64
        SYS_preadv SYS_preadv2 SYS_prlimit64 SYS_process_madvise SYS_process_mrelease
        SYS_process_vm_readv SYS_process_vm_writev SYS_pselect6 SYS_ptrace SYS_pwrite64
        SYS_pwritev SYS_pwritev2 SYS_quotactl SYS_quotactl_fd SYS_read SYS_readahead
        SYS_readlinkat SYS_readv SYS_reboot SYS_recvfrom SYS_recvmmsg SYS_recvmsg
        SYS_remap_file_pages SYS_removexattr SYS_renameat2 SYS_restart_syscall SYS_rseq
        SYS_rt_sigaction SYS_rt_sigpending SYS_rt_sigprocmask SYS_rt_sigqueueinfo
        SYS_rt_sigreturn SYS_rt_sigsuspend SYS_rt_sigtimedwait SYS_rt_tgsigqueueinfo
        SYS_sched_get_priority_max SYS_sched_get_priority_min SYS_sched_getaffinity
        SYS_sched_getattr SYS_sched_getparam SYS_sched_getscheduler SYS_sched_rr_get_interval
        SYS_sched_setaffinity SYS_sched_setattr SYS_sched_setparam SYS_sched_setscheduler
        SYS_sched_yield SYS_seccomp SYS_semctl SYS_semget SYS_semop SYS_semtimedop SYS_sendfile
        SYS_sendmmsg SYS_sendmsg SYS_sendto SYS_set_mempolicy SYS_set_mempolicy_home_node
        SYS_set_robust_list SYS_set_tid_address SYS_setdomainname SYS_setfsgid SYS_setfsuid
        SYS_setgid SYS_setgroups SYS_sethostname SYS_setitimer SYS_setns SYS_setpgid
        SYS_setpriority SYS_setregid SYS_setresgid SYS_setresuid SYS_setreuid SYS_setsid
        SYS_setsockopt SYS_settimeofday SYS_setuid SYS_setxattr SYS_shmat SYS_shmctl SYS_shmdt
        SYS_shmget SYS_shutdown SYS_sigaltstack SYS_signalfd4 SYS_socket SYS_socketpair
        SYS_splice SYS_statfs SYS_statx SYS_symlinkat SYS_sync SYS_syncfs SYS_sysinfo SYS_syslog
        SYS_tee SYS_tgkill SYS_timer_create SYS_timer_delete SYS_timer_getoverrun
        SYS_timer_gettime SYS_timer_settime SYS_timerfd_create SYS_timerfd_gettime
        SYS_timerfd_settime SYS_times SYS_tkill SYS_truncate SYS_umask SYS_umount2 SYS_uname
        SYS_unlinkat SYS_unshare SYS_utimensat SYS_vhangup SYS_vmsplice SYS_wait4 SYS_waitid
        SYS_write SYS_writev
    ];

    /// Calls the kernel has on this architecture but libc 0.2.191 has no constant for;
    /// numbers from the kernel's syscall table (as listed in libseccomp's `src/syscalls.csv`).
    #[rustfmt::skip]
    const BY_NUMBER: &[(&str, i64)] = &[
        ("renameat", 38),
        ("sync_file_range", 84),
        ("getrlimit", 163),
        ("setrlimit", 164),
        ("io_pgetevents", 292),
        ("cachestat", 451), // kernel v6.5
        ("fchmodat2", 452), // kernel v6.6
        ("map_shadow_stack", 453), // kernel v6.6
        ("futex_wake", 454), // kernel v6.7
        ("futex_wait", 455), // kernel v6.7
        ("futex_requeue", 456), // kernel v6.7
        ("statmount", 457), // kernel v6.8
        ("listmount", 458), // kernel v6.8
        ("lsm_get_self_attr", 459), // kernel v6.8
        ("lsm_set_self_attr", 460), // kernel v6.8
        ("lsm_list_modules", 461), // kernel v6.8
        ("setxattrat", 463), // kernel v6.13
        ("getxattrat", 464), // kernel v6.13
        ("listxattrat", 465), // kernel v6.13
        ("removexattrat", 466), // kernel v6.13
    ];

    /// Upstream's names with no such call on this architecture, left out of the filter:
    /// 32-bit-only calls (`*32`, `*64` on 32-bit ABIs, `*_time64`, `socketcall`, `ipc`, ...),
    /// legacy calls the architecture never had, and other architectures' calls.
    #[cfg_attr(not(test), allow(dead_code))]
    #[rustfmt::skip]
    pub(super) const ABSENT: &[&str] = &[
        "_llseek", "_newselect", "access", "alarm", "arm_fadvise64_64", "arm_sync_file_range",
        "breakpoint", "cacheflush", "chmod", "chown", "chown32", "clock_adjtime64",
        "clock_getres_time64", "clock_gettime64", "clock_nanosleep_time64", "clock_settime64",
        "creat", "dup2", "epoll_create", "epoll_ctl_old", "epoll_wait", "epoll_wait_old",
        "eventfd", "fadvise64_64", "fchown32", "fcntl64", "fork", "fstat64", "fstatat64",
        "fstatfs64", "ftruncate64", "futex_time64", "futimesat", "get_thread_area", "getdents",
        "getegid32", "geteuid32", "getgid32", "getgroups32", "getpgrp", "getresgid32",
        "getresuid32", "getuid32", "inotify_init", "io_pgetevents_time64", "ioperm", "iopl",
        "ipc", "lchown", "lchown32", "link", "lstat", "lstat64", "mkdir", "mknod", "mmap2",
        "mq_timedreceive_time64", "mq_timedsend_time64", "open", "pause", "pipe", "poll",
        "ppoll_time64", "pselect6_time64", "readlink", "recv", "recvmmsg_time64", "rename",
        "rmdir", "rt_sigtimedwait_time64", "sched_rr_get_interval_time64", "select",
        "semtimedop_time64", "send", "sendfile64", "set_thread_area", "set_tls", "setfsgid32",
        "setfsuid32", "setgid32", "setgroups32", "setregid32", "setresgid32", "setresuid32",
        "setreuid32", "setuid32", "signalfd", "sigprocmask", "sigreturn", "socketcall", "stat",
        "stat64", "statfs64", "stime", "symlink", "sync_file_range2", "time", "timer_gettime64",
        "timer_settime64", "timerfd_gettime64", "timerfd_settime64", "truncate64", "ugetrlimit",
        "umount", "unlink", "uretprobe", "utime", "utimensat_time64", "utimes", "vfork",
        "waitpid",
    ];
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod arch {
    use seccompiler::TargetArch;

    pub(super) const TARGET: Option<TargetArch> = None;
    pub(super) const ALLOWED: &[&str] = &[];
    #[cfg(test)]
    pub(super) const ABSENT: &[&str] = &[];

    pub(super) fn number(_name: &str) -> Option<i64> {
        None
    }
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;
    use std::ffi::{c_void, CString};
    use std::ptr;

    /// The bounding set container runtimes grant by default (security.rs).
    const DEFAULT_CAPS: &[&str] = &[
        "CAP_AUDIT_WRITE",
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_MKNOD",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_SETFCAP",
        "CAP_SETGID",
        "CAP_SETPCAP",
        "CAP_SETUID",
        "CAP_SYS_CHROOT",
    ];

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Every name the profile mentions, for this architecture.
    fn profile_names() -> Vec<&'static str> {
        let mut v: Vec<&'static str> = ALLOWED.to_vec();
        v.extend(["socket", "personality", "clone", "clone3"]);
        v.extend(ALLOWED_SINCE_4_8);
        v.extend(arch::ALLOWED);
        for (_, names) in BY_CAPABILITY {
            v.extend(names.iter());
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    fn errno() -> i32 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Runs `check` in a forked child and returns the child's exit code (0: all passed).
    fn in_child(check: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only makes system calls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or(101);
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        while unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            assert_eq!(errno(), libc::EINTR, "waitpid");
        }
        assert!(
            libc::WIFEXITED(status),
            "child ended by signal: status {status:#x}"
        );
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn builds_without_and_with_cap_sys_admin() {
        let plain = runtime_default(&[]).expect("profile without capabilities");
        let admin = runtime_default(&caps(&["CAP_SYS_ADMIN"])).expect("profile with CAP_SYS_ADMIN");
        let every: Vec<&str> = BY_CAPABILITY.iter().map(|(cap, _)| *cap).collect();
        let all = runtime_default(&caps(&every)).expect("profile with every capability");
        for p in [&plain, &admin, &all] {
            assert!(
                !p.is_empty() && p.len() <= BPF_MAX_LEN,
                "{} instructions",
                p.len()
            );
        }
        assert_ne!(plain, admin);
    }

    #[test]
    fn every_profile_name_is_mapped_or_listed_absent() {
        let mut numbers = BTreeMap::new();
        for name in profile_names() {
            let absent = arch::ABSENT.contains(&name);
            match arch::number(name) {
                Some(nr) => {
                    assert!(!absent, "{name} is mapped and listed absent");
                    if let Some(other) = numbers.insert(nr, name) {
                        panic!("{name} and {other} both map to {nr}");
                    }
                }
                None => assert!(absent, "{name}: no number and not listed absent"),
            }
        }
        let names = profile_names();
        for name in arch::ABSENT {
            assert!(
                names.contains(name),
                "{name} is listed absent but not in the profile"
            );
        }
    }

    #[test]
    fn allows_what_container_setup_needs_after_install() {
        let allowed = allowed(&caps(DEFAULT_CAPS)).expect("rules");
        for name in [
            "setgroups",
            "setgid",
            "setuid",
            "setresuid",
            "setresgid",
            "capget",
            "capset",
            "prctl",
            "chdir",
            "close_range",
            "rt_sigprocmask",
            "rt_sigaction",
            "execve",
            "execveat",
            "exit_group",
            "exit",
            "openat",
            "read",
            "write",
            "close",
            "fcntl",
            "getpid",
            "setsid",
            "uname",
            "chroot",
        ] {
            let nr = arch::number(name).unwrap_or_else(|| panic!("{name}: no number"));
            assert!(
                matches!(allowed.0.get(&nr), Some(None)),
                "{name} is not allowed unconditionally"
            );
        }
    }

    #[test]
    fn clone_is_conditional_without_cap_sys_admin() {
        let clone = arch::number("clone").expect("clone");
        let clone3 = arch::number("clone3").expect("clone3");
        let unshare = arch::number("unshare").expect("unshare");
        let plain = allowed(&caps(DEFAULT_CAPS)).expect("rules");
        assert!(matches!(plain.0.get(&clone), Some(Some(rules)) if rules.len() == 1));
        assert!(!plain.0.contains_key(&clone3) && !plain.0.contains_key(&unshare));
        let admin = allowed(&caps(&["CAP_SYS_ADMIN"])).expect("rules");
        for nr in [clone, clone3, unshare] {
            assert!(matches!(admin.0.get(&nr), Some(None)));
        }
    }

    #[test]
    fn counts_allowed_syscalls() {
        let plain = allowed(&[]).expect("rules").0.len();
        let default = allowed(&caps(DEFAULT_CAPS)).expect("rules").0.len();
        let admin = allowed(&caps(&["CAP_SYS_ADMIN"])).expect("rules").0.len();
        let every: Vec<&str> = BY_CAPABILITY.iter().map(|(cap, _)| *cap).collect();
        let all = allowed(&caps(&every)).expect("rules").0.len();
        let len = runtime_default(&caps(DEFAULT_CAPS)).expect("program").len();
        eprintln!(
            "{}: {plain} syscalls allowed with no capability, {default} with the default set \
             ({len} BPF instructions), {admin} with CAP_SYS_ADMIN, {all} with all",
            std::env::consts::ARCH
        );
        assert!(plain > 300 && default == plain + 1 && admin > default && all > admin);
    }

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.8.0-45-generic"), Some((6, 8)));
        assert_eq!(parse_release("4.19"), Some((4, 19)));
        assert_eq!(parse_release("5"), None);
        assert_eq!(parse_release(""), None);
        assert!(kernel_at_least(3, 0));
    }

    extern "C" fn thread_main(_: *mut c_void) -> *mut c_void {
        42 as *mut c_void
    }

    /// The filter without CAP_SYS_ADMIN, installed in a child with no_new_privs: denies what
    /// it should, with the errno it should, and lets ordinary calls, fork and threads through.
    #[test]
    fn filter_denies_namespaces_and_keeps_the_basics() {
        let program = runtime_default(&caps(DEFAULT_CAPS)).expect("program");
        let code = in_child(|| unsafe {
            // SAFETY (whole block): raw system calls with valid arguments.
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return 10;
            }
            if install(&program).is_err() {
                return 11;
            }
            if libc::unshare(libc::CLONE_NEWNS) != -1 || errno() != libc::EPERM {
                return 12;
            }
            if libc::syscall(libc::SYS_getpid) != libc::c_long::from(libc::getpid()) {
                return 13;
            }
            let none = ptr::null::<u8>();
            if libc::syscall(libc::SYS_clone3, none, 0usize) != -1 || errno() != libc::ENOSYS {
                return 14;
            }
            let flags = (libc::CLONE_NEWUTS | libc::SIGCHLD) as libc::c_ulong;
            match libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) {
                0 => libc::_exit(0), // let through: the stray child leaves at once
                -1 if errno() == libc::EPERM => {}
                _ => return 15,
            }
            let child = libc::fork();
            if child == 0 {
                libc::_exit(7);
            }
            let mut status = 0;
            if child < 0
                || libc::waitpid(child, &mut status, 0) != child
                || !libc::WIFEXITED(status)
                || libc::WEXITSTATUS(status) != 7
            {
                return 16;
            }
            let mut thread: libc::pthread_t = 0;
            if libc::pthread_create(&mut thread, ptr::null(), thread_main, ptr::null_mut()) != 0 {
                return 17;
            }
            let mut ret = ptr::null_mut();
            if libc::pthread_join(thread, &mut ret) != 0 || ret as usize != 42 {
                return 18;
            }
            if libc::syscall(libc::SYS_personality, 0xffff_ffff_u64) == -1 {
                return 19;
            }
            let no_aslr = libc::ADDR_NO_RANDOMIZE as u64;
            if libc::syscall(libc::SYS_personality, no_aslr) != -1 || errno() != libc::EPERM {
                return 20;
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return 21;
            }
            libc::close(fd);
            for domain in [
                libc::AF_ALG as u64,
                libc::AF_VSOCK as u64,
                1 << 32 | libc::AF_ALG as u64,
            ] {
                let ty = libc::SOCK_SEQPACKET as u64;
                if libc::syscall(libc::SYS_socket, domain, ty, 0u64) != -1 || errno() != libc::EPERM
                {
                    return 22;
                }
            }
            let dot = c".".as_ptr();
            if libc::mount(dot, dot, ptr::null(), libc::MS_BIND, ptr::null()) != -1
                || errno() != libc::EPERM
            {
                return 23;
            }
            0
        });
        assert_eq!(
            code, 0,
            "check {code} failed in the filtered child (see this test's source)"
        );
    }

    /// As the shim does it: the filter goes on while the process is still root with
    /// CAP_SYS_ADMIN (no no_new_privs needed), then the setup drops capabilities, changes
    /// user and execs. Needs root (it fails saying so otherwise).
    #[test]
    fn container_setup_runs_under_the_filter() {
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "container_setup_runs_under_the_filter needs root: it changes user and capabilities in a child; run the tests as root");
        let program = runtime_default(&caps(DEFAULT_CAPS)).expect("program");
        let admin = runtime_default(&caps(&["CAP_SYS_ADMIN"])).expect("program");
        let true_bin = CString::new("/bin/true").expect("path");
        let argv = [true_bin.as_ptr(), ptr::null()];
        let envp = [ptr::null::<libc::c_char>()];
        let root = c"/";
        let code = in_child(|| unsafe {
            // SAFETY (whole block): raw system calls with valid arguments.
            if install(&program).is_err() {
                return 10;
            }
            const CAP_SYS_ADMIN: libc::c_ulong = 21;
            if libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0) != 0 {
                return 11;
            }
            // capget/capset with _LINUX_CAPABILITY_VERSION_3: clear the inheritable set.
            let mut header: [u32; 2] = [0x2008_0522, 0];
            let mut data = [0u32; 6];
            if libc::syscall(libc::SYS_capget, header.as_mut_ptr(), data.as_mut_ptr()) != 0 {
                return 12;
            }
            data[2] = 0;
            data[5] = 0;
            if libc::syscall(libc::SYS_capset, header.as_mut_ptr(), data.as_ptr()) != 0 {
                return 13;
            }
            let clear_all = libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong;
            if libc::prctl(libc::PR_CAP_AMBIENT, clear_all, 0, 0, 0) != 0 {
                return 14;
            }
            if libc::setgroups(0, ptr::null()) != 0 {
                return 15;
            }
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return 16;
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return 17;
            }
            if libc::chdir(root.as_ptr()) != 0 {
                return 18;
            }
            let cloexec = libc::CLOSE_RANGE_CLOEXEC;
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, cloexec) != 0 {
                return 19;
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut()) != 0 {
                return 20;
            }
            libc::execve(true_bin.as_ptr(), argv.as_ptr(), envp.as_ptr());
            21
        });
        assert_eq!(
            code, 0,
            "check {code} failed in the filtered child (see this test's source)"
        );

        // With CAP_SYS_ADMIN in the set, namespaces are the kernel's business again.
        let code = in_child(|| unsafe {
            // SAFETY: raw system calls with valid arguments.
            if install(&admin).is_err() {
                return 10;
            }
            if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0 {
                return 11;
            }
            if libc::syscall(libc::SYS_clone3, ptr::null::<u8>(), 0usize) != -1
                || errno() != libc::EINVAL
            {
                return 12;
            }
            0
        });
        assert_eq!(code, 0, "check {code} failed in the CAP_SYS_ADMIN child");
    }
}
