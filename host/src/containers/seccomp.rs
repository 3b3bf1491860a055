//! Seccomp profiles compiled to BPF for the native ABI of this host.
//!
//! A profile is data (`plan::seccomp`: moby's format, which Docker, podman and the kubelet's
//! `Localhost` profiles use); `RuntimeDefault` is moby's default profile itself, the filter
//! Docker, containerd, CRI-O and podman confine every container with: an allow-list of the
//! calls ordinary programs need (some 310 on x86_64), every other call failing with `EPERM`,
//! calls that need a capability allowed only when the container's bounding set holds it
//! (`mount` with `CAP_SYS_ADMIN`), `clone` without `CAP_SYS_ADMIN` only without namespace
//! flags and `clone3` then failing with `ENOSYS` (so libc falls back to `clone`, whose flags
//! the filter sees).
//!
//! The plan resolves a profile for the container (its capabilities, this architecture, this
//! kernel: `plan::seccomp`) into the OCI runtime spec's `linux.seccomp`; [`program`] compiles
//! that with `seccompiler`, one filter per action, chained: the more restrictive actions
//! first, `ALLOW` last, the default action at the end. In front of it, the calls allowed
//! whatever their arguments (and named by no stricter rule) are found by a binary search over
//! their ranges of numbers (`fast_allow`), as libseccomp's binary tree does since 2.5: the
//! default profile is then 141 instructions instead of 1,603, and its install at a container's
//! start (the kernel translates and compiles the program, and runs it for every call number to
//! fill its cache of calls always allowed) takes 0.04 ms instead of 0.5.
//!
//! Differences from libseccomp, forced by the target or by `seccompiler`:
//! - Only the native ABI is filtered. A call made through another ABI (x86 on x86_64, arm on
//!   aarch64) kills the process (the architecture check `seccompiler` puts in front of every
//!   program); an x32 call (x86_64's number with bit 30) gets the default action, or EPERM when
//!   the default allows (`x32_guard`: under a deny list it would otherwise escape every rule).
//! - Names are numbered from the kernel's whole table (libc's, `syscall_table.rs`). Names this
//!   architecture lacks are skipped (`ABSENT` lists those of the default profile, which a test
//!   keeps exact); any other unknown name in a rule stricter than the default refuses the
//!   profile, rather than dropping the rule.
//! - Argument checks on `socket` and `personality` compare the low 32 bits, because the kernel
//!   reads those arguments as `int`/`unsigned int`. (A 64-bit compare, as libseccomp does,
//!   would let `socket(AF_ALG | 1 << 32, ..)` through the `> AF_VSOCK` rule.)
//! - `SCMP_ACT_NOTIFY`, `listenerPath` and filter flags are refused when the profile is read.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator};

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
    /// A rule the kernel's filters cannot express.
    #[error("seccomp profile: {0}")]
    Profile(String),
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

/// Builds the BPF program of a container's resolved profile (`linux.seccomp` of its launch
/// config), for this architecture.
pub fn program(seccomp: &LinuxSeccomp) -> Result<seccompiler::BpfProgram, SeccompError> {
    let arch = arch::TARGET.ok_or(SeccompError::UnsupportedArch(std::env::consts::ARCH))?;
    if seccomp.listener_path().is_some() || seccomp.flags().as_ref().is_some_and(|f| !f.is_empty())
    {
        return Err(SeccompError::Profile(
            "seccomp listeners and filter flags are not supported".into(),
        ));
    }
    let program = compile_resolved(seccomp, arch)?;
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
/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
const BPF_MAX_LEN: usize = libc::BPF_MAXINSNS as usize;

// ---------------------------------------------------------------------------------------------
// From a resolved profile to BPF.
// ---------------------------------------------------------------------------------------------

/// Arguments the kernel reads as 32-bit integers: compared on their low 32 bits.
const INT_ARGS: &[(&str, u8)] = &[
    ("socket", 0),
    ("socket", 1),
    ("socket", 2),
    ("socketpair", 0),
    ("socketpair", 1),
    ("socketpair", 2),
    ("personality", 0),
    ("ioctl", 1),
    ("prctl", 0),
    ("fcntl", 1),
    ("setns", 1),
    ("setsockopt", 1),
    ("setsockopt", 2),
    ("getsockopt", 1),
    ("getsockopt", 2),
];

/// The filter action of a profile's action.
fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction, SeccompError> {
    let errno = match errno {
        Some(e) if e > 0xffff => {
            return Err(SeccompError::Profile(format!(
                "errnoRet {e} is over 65535 (the kernel keeps 16 bits)"
            )))
        }
        Some(e) => e,
        None => EPERM,
    };
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno),
        // libseccomp's KILL is the thread's, as runc maps it.
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Profile(
                "SCMP_ACT_NOTIFY needs a seccomp agent".into(),
            ))
        }
    })
}

/// The order filters are chained in: the most restrictive action first (libseccomp's
/// precedence), `ALLOW` last.
fn rank(a: &SeccompAction) -> (u8, u32) {
    match a {
        SeccompAction::KillProcess => (0, 0),
        SeccompAction::KillThread => (1, 0),
        SeccompAction::Trap => (2, 0),
        SeccompAction::Errno(e) => (3, *e),
        SeccompAction::Trace(e) => (4, *e),
        SeccompAction::Log => (5, 0),
        SeccompAction::Allow => (6, 0),
    }
}

/// A rule's arguments as seccompiler rules: one rule of all of them (they must all hold), or,
/// when two compare the same argument, one rule each (any may hold), as runc does.
fn rules_of(name: &str, args: &[LinuxSeccompArg]) -> Result<Vec<SeccompRule>, SeccompError> {
    let condition_of = |a: &LinuxSeccompArg| -> Result<SeccompCondition, SeccompError> {
        let mask = a.value();
        let (op, value) = match a.op() {
            LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
            LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
            LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
            LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
            LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
            LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
            LinuxSeccompOperator::ScmpCmpMaskedEq => {
                let compared = a.value_two().unwrap_or(0);
                if compared & !mask != 0 {
                    return Err(SeccompError::Profile(format!(
                        "{name}: SCMP_CMP_MASKED_EQ compares {compared:#x} with bits of mask {mask:#x}: it can never match"
                    )));
                }
                (SeccompCmpOp::MaskedEq(mask), compared)
            }
        };
        let masked = a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq;
        let fits = value <= u64::from(u32::MAX) && (!masked || mask <= u64::from(u32::MAX));
        // A system call has six arguments.
        let index = u8::try_from(a.index())
            .ok()
            .filter(|&i| i < 6)
            .ok_or_else(|| {
                SeccompError::Profile(format!(
                    "{name}: argument index {} (a system call has arguments 0 to 5)",
                    a.index()
                ))
            })?;
        let len = match INT_ARGS.contains(&(name, index)) && fits {
            true => SeccompCmpArgLen::Dword,
            false => SeccompCmpArgLen::Qword,
        };
        condition(index, len, op, value)
    };
    if args.is_empty() {
        return Ok(Vec::new());
    }
    let mut indices: Vec<usize> = args.iter().map(|a| a.index()).collect();
    indices.sort_unstable();
    indices.dedup();
    let groups: Vec<Vec<&LinuxSeccompArg>> = match indices.len() == args.len() {
        true => vec![args.iter().collect()],
        false => args.iter().map(|a| vec![a]).collect(),
    };
    groups
        .into_iter()
        .map(|g| {
            let conditions = g.into_iter().map(condition_of).collect::<Result<_, _>>()?;
            SeccompRule::new(conditions).map_err(SeccompError::Compile)
        })
        .collect()
}

/// The program of a resolved profile: one filter per action, the most restrictive first, each
/// falling through to the next where it does not match; `ALLOW`'s last, then the default.
fn compile_resolved(
    profile: &LinuxSeccomp,
    arch: seccompiler::TargetArch,
) -> Result<BpfProgram, SeccompError> {
    compile_with(profile, arch, true)
}

/// [`compile_resolved`], with or without the [`fast_allow`] search (the tests compare both).
fn compile_with(
    profile: &LinuxSeccomp,
    arch: seccompiler::TargetArch,
    fast_path: bool,
) -> Result<BpfProgram, SeccompError> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut groups: BTreeMap<(u8, u32), (SeccompAction, Allowed)> = BTreeMap::new();
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        // As runc: a rule that does what the default does adds nothing.
        if act == default {
            continue;
        }
        for name in rule.names() {
            let Some(nr) = arch::number(name) else {
                // A rule that denies more than the default must not be dropped for a name
                // wpod cannot number: the call would get the default. Names this ABI lacks
                // (32-bit calls, other architectures') are safe to skip; an Allow rule under
                // a denying default too.
                if rank(&act) < rank(&default) && !arch::ABSENT.contains(&name.as_str()) {
                    return Err(SeccompError::Profile(format!(
                        "a rule that is stricter than the default names \"{name}\", which wpod \
                         does not know as a call of {}: remove the name or correct it",
                        std::env::consts::ARCH
                    )));
                }
                tracing::debug!(syscall = %name, "seccomp: not a call of this architecture");
                continue;
            };
            let rules = rules_of(name, rule.args().as_deref().unwrap_or_default())?;
            let (_, allowed) = groups
                .entry(rank(&act))
                .or_insert_with(|| (act.clone(), Allowed::default()));
            allowed.add(nr, rules);
        }
    }
    let mut allow = groups.remove(&rank(&SeccompAction::Allow));
    // The calls allowed whatever their arguments, that no stricter rule names, are tested
    // first, by ranges of numbers ([`fast_allow`]); seccompiler's program keeps the rest.
    let fast = match &mut allow {
        Some((_, allowed)) if fast_path => {
            let named_elsewhere =
                |nr: &i64| groups.values().any(|(_, other)| other.0.contains_key(nr));
            let candidates = allowed.unconditional(|nr| !named_elsewhere(nr));
            let prefix = fast_allow(&candidates, arch::AUDIT);
            if prefix.is_some() {
                allowed.remove(&candidates);
            }
            prefix
        }
        _ => None,
    };
    let mut program = match allow {
        Some((_, allowed)) => compile(
            allowed.into_rules(),
            default.clone(),
            SeccompAction::Allow,
            arch,
        )?,
        // Nothing is allowed but by default: the default action, whatever the call.
        None => vec![stmt(
            libc::BPF_RET | libc::BPF_K,
            u32::from(default.clone()),
        )],
    };
    for (_, (act, allowed)) in groups.into_iter().rev() {
        // `ALLOW` stands for "not this one": rewritten as a jump to what follows.
        let segment = compile(allowed.into_rules(), SeccompAction::Allow, act, arch)?;
        program = then_on_allow(segment, program);
    }
    let program = x32_guard(program, &default, arch);
    Ok(match fast {
        Some(mut prefix) => {
            prefix.extend(program);
            prefix
        }
        None => program,
    })
}

/// Where a jump of [`fast_allow`]'s search goes.
#[derive(Clone, Copy)]
enum Target {
    Insn(usize),
    /// `RET ALLOW`, just after the search.
    Allow,
    /// The rest of the program, after `RET ALLOW`.
    Miss,
}

/// A first test of the call, before the rest of the program: ALLOW when its number is one of
/// `nrs` (calls allowed whatever their arguments, which no stricter rule names) and the call is
/// of this ABI (`audit`); otherwise on to the rest. A binary search over the numbers' ranges:
/// the default profile's ~300 such calls are some 40 ranges, which take a call a dozen
/// instructions. seccompiler tests numbers one after another, in a program of some 1,600
/// instructions that the kernel translated, compiled and ran for every call number (its cache
/// of calls always allowed) at every container's start: 0.5 ms, now 0.04. `None` when there is
/// nothing to test, or when the search would be too long for classic BPF's 8-bit jumps (the
/// rest then tests every call).
fn fast_allow(nrs: &BTreeSet<i64>, audit: u32) -> Option<BpfProgram> {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &nr in nrs {
        let nr = u32::try_from(nr).ok()?;
        match ranges.last_mut() {
            Some((_, end)) if nr == *end + 1 => *end = nr,
            _ => ranges.push((nr, nr)),
        }
    }
    if ranges.is_empty() {
        return None;
    }
    // Each range is a node: nr >= start, else its left (lower) ranges; nr > end, its right
    // ones; otherwise ALLOW. Classic BPF jumps only forward: a node, then its right subtree,
    // then its left one.
    fn node(ranges: &[(u32, u32)], out: &mut Vec<(u32, u32, Target, Target)>) -> Target {
        if ranges.is_empty() {
            return Target::Miss;
        }
        let mid = ranges.len() / 2;
        let (start, end) = ranges[mid];
        let at = out.len();
        out.push((libc::BPF_JGE, start, Target::Insn(at + 1), Target::Miss));
        out.push((libc::BPF_JGT, end, Target::Miss, Target::Allow));
        let right = node(&ranges[mid + 1..], out);
        let left = node(&ranges[..mid], out);
        out[at].3 = left;
        out[at + 1].2 = right;
        Target::Insn(at)
    }
    let mut search = Vec::new();
    node(&ranges, &mut search);
    // seccomp_data: the call's number at offset 0, its ABI at 4.
    const HEAD: usize = 3;
    let allow_at = HEAD + search.len();
    let miss_at = allow_at + 1;
    let offset = |from: usize, to: Target| -> Option<u8> {
        let to = match to {
            Target::Insn(i) => HEAD + i,
            Target::Allow => allow_at,
            Target::Miss => miss_at,
        };
        u8::try_from(to.checked_sub(from + 1)?).ok()
    };
    let mut out = vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
        jump(libc::BPF_JEQ, audit, 0, offset(1, Target::Miss)?),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
    ];
    for (i, (op, k, jt, jf)) in search.into_iter().enumerate() {
        out.push(jump(op, k, offset(HEAD + i, jt)?, offset(HEAD + i, jf)?));
    }
    out.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    Some(out)
}

/// A classic BPF instruction that does not jump (`code` is `BPF_*` classes and modes, ORed).
fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A conditional jump of classic BPF comparing A with `k` (`op`: `BPF_JEQ`, `BPF_JGE`, ...):
/// `jt` or `jf` instructions forward from the next one.
fn jump(op: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// On x86_64, x32 calls carry the x86_64 architecture (`seccompiler`'s check lets them
/// through) and their number with bit 30 set, which matches no rule: under a profile that
/// allows by default they would escape every deny rule. They get the default action, or EPERM
/// when the default lets calls through, before anything else. (Any process can make them:
/// the ABI is chosen per call.)
fn x32_guard(
    program: BpfProgram,
    default: &SeccompAction,
    arch: seccompiler::TargetArch,
) -> BpfProgram {
    if !matches!(arch, seccompiler::TargetArch::x86_64) {
        return program;
    }
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let action = match rank(default) >= rank(&SeccompAction::Trace(0)) {
        true => SeccompAction::Errno(EPERM),
        false => default.clone(),
    };
    let mut out = vec![
        // A = seccomp_data.nr
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        // nr >= X32_SYSCALL_BIT: the next instruction, else past it.
        jump(libc::BPF_JGE, X32_SYSCALL_BIT, 0, 1),
        stmt(libc::BPF_RET | libc::BPF_K, u32::from(action)),
    ];
    out.extend(program);
    out
}

fn condition(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, len, op, value).map_err(SeccompError::Compile)
}

/// Syscall numbers with their rules: `None` matches the call whatever its arguments, `Some`
/// when any of the rules matches.
#[derive(Default)]
struct Allowed(BTreeMap<i64, Option<Vec<SeccompRule>>>);

impl Allowed {
    /// Adds `rules` for `nr` (none: unconditionally, which absorbs any conditional ones).
    fn add(&mut self, nr: i64, rules: Vec<SeccompRule>) {
        if rules.is_empty() {
            self.0.insert(nr, None);
        } else if let Some(existing) = self.0.entry(nr).or_insert_with(|| Some(Vec::new())) {
            existing.extend(rules);
        }
    }

    /// The numbers allowed whatever the arguments, of those `keep` picks.
    fn unconditional(&self, keep: impl Fn(&i64) -> bool) -> BTreeSet<i64> {
        self.0
            .iter()
            .filter(|(nr, rules)| rules.is_none() && keep(nr))
            .map(|(nr, _)| *nr)
            .collect()
    }

    fn remove(&mut self, nrs: &BTreeSet<i64>) {
        self.0.retain(|nr, _| !nrs.contains(nr));
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
/// (A `seccompiler` filter has a single match action; this chains one filter per action.) Classic BPF only jumps forward, by offsets
/// relative to the next instruction, so both programs' own jumps stay valid.
fn then_on_allow(first: BpfProgram, then: BpfProgram) -> BpfProgram {
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let len = first.len();
    let mut out = Vec::with_capacity(len + then.len());
    for (i, insn) in first.into_iter().enumerate() {
        if insn.code == RET_K && insn.k == libc::SECCOMP_RET_ALLOW {
            // Jump to the start of `then`, at index `len`.
            let k = u32::try_from(len - i - 1).unwrap_or(u32::MAX);
            out.push(stmt(libc::BPF_JMP | libc::BPF_JA, k));
        } else {
            out.push(insn);
        }
    }
    out.extend(then);
    out
}

// ---------------------------------------------------------------------------------------------
// Syscall numbers per architecture.
// ---------------------------------------------------------------------------------------------

/// `("SYS_name", number)` pairs from libc's constants.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! from_libc {
    ($($sys:ident)*) => { &[$((stringify!($sys), libc::$sys)),*] };
}

/// Every call's number by name: libc's names first, then the table of numbers, then the
/// kernel's whole table (the first to name a call wins). Built once per process and looked up
/// by hash: a profile names some 350 calls, and searching the tables for each took a container's
/// shim about 0.1 ms at every start.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn lookup(
    name: &str,
    from_libc: &[(&'static str, i64)],
    by_number: &[(&'static str, i64)],
) -> Option<i64> {
    // One map: a build has one target architecture, whose tables its `arch::number` passes.
    static NUMBERS: std::sync::OnceLock<std::collections::HashMap<&str, i64>> =
        std::sync::OnceLock::new();
    let numbers = NUMBERS.get_or_init(|| numbers(from_libc, by_number));
    numbers.get(name).copied()
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn numbers(
    from_libc: &[(&'static str, i64)],
    by_number: &[(&'static str, i64)],
) -> std::collections::HashMap<&'static str, i64> {
    let libc_names = from_libc
        .iter()
        .filter_map(|&(sys, nr)| Some((sys.strip_prefix("SYS_")?, nr)));
    let mut numbers = std::collections::HashMap::new();
    for (name, nr) in libc_names
        .chain(by_number.iter().copied())
        .chain(super::syscall_table::KERNEL.iter().copied())
    {
        numbers.entry(name).or_insert(nr);
    }
    numbers
}

#[cfg(target_arch = "x86_64")]
mod arch {
    use seccompiler::TargetArch;

    pub(super) const TARGET: Option<TargetArch> = Some(TargetArch::x86_64);
    /// `AUDIT_ARCH_X86_64` (linux/audit.h): `seccomp_data.arch` of this ABI's calls.
    pub(super) const AUDIT: u32 = 62 | 0x8000_0000 | 0x4000_0000;

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
    #[rustfmt::skip]
    pub(super) const ABSENT: &[&str] = &[
        "_llseek", "_newselect", "riscv_hwprobe", "chown32", "clock_adjtime64", "clock_getres_time64",
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
    /// `AUDIT_ARCH_AARCH64` (linux/audit.h): `seccomp_data.arch` of this ABI's calls.
    pub(super) const AUDIT: u32 = 183 | 0x8000_0000 | 0x4000_0000;

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
    #[rustfmt::skip]
    pub(super) const ABSENT: &[&str] = &[
        "_llseek", "_newselect", "riscv_hwprobe", "access", "alarm", "arm_fadvise64_64", "arm_sync_file_range",
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
    pub(super) const AUDIT: u32 = 0;
    pub(super) const ABSENT: &[&str] = &[];

    pub(super) fn number(_name: &str) -> Option<i64> {
        None
    }
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;
    use crate::plan::seccomp::{kernel_release, Profile, NATIVE_ARCH};
    use std::ffi::{c_void, CString};
    use std::ptr;

    /// `profile` resolved for a container with `caps` on this machine, compiled.
    fn program(profile: &Profile, caps: &[String]) -> Result<BpfProgram, SeccompError> {
        super::program(&profile.resolve_here(caps))
    }

    /// The RuntimeDefault program for a container with `caps`.
    fn runtime_default(caps: &[String]) -> Result<BpfProgram, SeccompError> {
        program(&Profile::runtime_default(), caps)
    }

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

    /// Every capability the default profile names.
    fn profile_caps() -> Vec<String> {
        let p = Profile::runtime_default();
        let mut caps: Vec<String> = p
            .syscalls
            .iter()
            .flatten()
            .flat_map(|r| [&r.includes, &r.excludes])
            .flatten()
            .flat_map(|f| f.caps.clone().unwrap_or_default())
            .collect();
        caps.sort_unstable();
        caps.dedup();
        caps
    }

    /// Every name the default profile mentions for this architecture (with or without
    /// capabilities, on any kernel).
    fn profile_names() -> Vec<String> {
        let p = Profile::runtime_default();
        let mut v: Vec<String> = [vec![], profile_caps()]
            .iter()
            .flat_map(|caps| {
                p.resolve(NATIVE_ARCH, caps, Some((99, 0)))
                    .syscalls()
                    .clone()
                    .unwrap_or_default()
            })
            .flat_map(|r| r.names().clone())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The calls the default profile allows for `caps` on this kernel: by number, `true` when
    /// only under conditions on their arguments.
    fn allowed(caps: &[String]) -> BTreeMap<i64, bool> {
        let resolved = Profile::runtime_default().resolve(NATIVE_ARCH, caps, kernel_release());
        let mut out = BTreeMap::new();
        let rules = resolved.syscalls().clone().unwrap_or_default();
        for rule in rules
            .iter()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
        {
            for nr in rule.names().iter().filter_map(|n| arch::number(n)) {
                let conditional = rule.args().as_ref().is_some_and(|a| !a.is_empty());
                let was = out.entry(nr).or_insert(conditional);
                *was = *was && conditional;
            }
        }
        out
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
        let all = runtime_default(&profile_caps()).expect("profile with every capability");
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
        let names = profile_names();
        for name in &names {
            let name = name.as_str();
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
        for name in arch::ABSENT {
            assert!(
                names.iter().any(|n| n == name),
                "{name} is listed absent but not in the profile"
            );
        }
    }

    #[test]
    fn allows_what_container_setup_needs_after_install() {
        let allowed = allowed(&caps(DEFAULT_CAPS));
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
            assert_eq!(
                allowed.get(&nr),
                Some(&false),
                "{name} is not allowed unconditionally"
            );
        }
    }

    #[test]
    fn clone_is_conditional_without_cap_sys_admin() {
        let clone = arch::number("clone").expect("clone");
        let clone3 = arch::number("clone3").expect("clone3");
        let unshare = arch::number("unshare").expect("unshare");
        let plain = allowed(&caps(DEFAULT_CAPS));
        assert_eq!(plain.get(&clone), Some(&true));
        assert!(!plain.contains_key(&clone3) && !plain.contains_key(&unshare));
        let admin = allowed(&caps(&["CAP_SYS_ADMIN"]));
        for nr in [clone, clone3, unshare] {
            assert_eq!(admin.get(&nr), Some(&false));
        }
    }

    /// What a classic BPF seccomp program returns for a call: the instructions seccompiler and
    /// [`fast_allow`] emit, read as the kernel reads them.
    fn run_bpf(program: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend(nr.to_ne_bytes());
        data.extend(arch.to_ne_bytes());
        data.extend(0u64.to_ne_bytes());
        for a in args {
            data.extend(a.to_ne_bytes());
        }
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let insn = &program[pc];
            let code = u32::from(insn.code);
            pc += 1;
            let jump = |taken: bool| usize::from(if taken { insn.jt } else { insn.jf });
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    let k = insn.k as usize;
                    a = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                }
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => a &= insn.k,
                c if c == libc::BPF_JMP | libc::BPF_JA => pc += insn.k as usize,
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => pc += jump(a == insn.k),
                c if c == libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K => pc += jump(a > insn.k),
                c if c == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K => pc += jump(a >= insn.k),
                c if c == libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K => {
                    pc += jump(a & insn.k != 0)
                }
                c if c == libc::BPF_RET | libc::BPF_K => return insn.k,
                other => panic!("instruction {other:#x} at {}", pc - 1),
            }
        }
    }

    /// Argument patterns the default profile's conditions tell apart (clone's namespace flags,
    /// socket's families, personality's values), and none.
    const ARGS: &[[u64; 6]] = &[
        [0; 6],
        [0x1000_0000, 0, 0, 0, 0, 0],
        [0x7e02_0000, 0, 0, 0, 0, 0],
        [38, 5, 0, 0, 0, 0],
        [40, 1, 0, 0, 0, 0],
        [16, 3, 9, 0, 0, 0],
        [0x0040_0000, 0, 0, 0, 0, 0],
        [0xffff_ffff, 0, 0, 0, 0, 0],
        [u64::MAX, u64::MAX, u64::MAX, 0, 0, 0],
    ];

    /// For every call number (and x32's, and another ABI's), the program with the search
    /// returns what the program without it does.
    fn same_decisions(profile: &LinuxSeccomp) -> (usize, usize) {
        let arch = arch::TARGET.expect("a target");
        let full = compile_with(profile, arch, false).expect("without the search");
        let fast = compile_with(profile, arch, true).expect("with the search");
        for nr in (0..1100u32).chain((0..600).map(|n| n | 0x4000_0000)) {
            for abi in [arch::AUDIT, 0x4000_0003, 0] {
                for args in ARGS {
                    assert_eq!(
                        run_bpf(&fast, nr, abi, *args),
                        run_bpf(&full, nr, abi, *args),
                        "call {nr:#x}, ABI {abi:#x}, arguments {args:x?}"
                    );
                }
            }
        }
        (full.len(), fast.len())
    }

    #[test]
    fn the_range_search_decides_as_the_full_program() {
        for caps in [
            vec![],
            caps(DEFAULT_CAPS),
            caps(&["CAP_SYS_ADMIN"]),
            profile_caps(),
        ] {
            let resolved = Profile::runtime_default().resolve(NATIVE_ARCH, &caps, kernel_release());
            let (full, fast) = same_decisions(&resolved);
            // The search is what the container's calls go through: it must have taken the
            // unconditional calls out of seccompiler's part.
            assert!(
                fast < full / 2,
                "{fast} instructions with the search, {full} without"
            );
        }
        // A call both allowed and denied (the stricter rule wins) stays out of the search.
        let profile: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write", "getpid", "getppid"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            ]
        }))
        .expect("profile");
        same_decisions(&profile);
        let program = compile_resolved(&profile, arch::TARGET.expect("a target")).expect("program");
        let getpid = arch::number("getpid").expect("getpid") as u32;
        let read = arch::number("read").expect("read") as u32;
        assert_eq!(
            run_bpf(&program, getpid, arch::AUDIT, [0; 6]),
            libc::SECCOMP_RET_ERRNO | 38
        );
        assert_eq!(
            run_bpf(&program, read, arch::AUDIT, [0; 6]),
            libc::SECCOMP_RET_ALLOW
        );
        // Another ABI's call of the same number is not this one's.
        assert_eq!(
            run_bpf(&program, read, 0x4000_0003, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[test]
    fn counts_allowed_syscalls() {
        let plain = allowed(&[]).len();
        let default = allowed(&caps(DEFAULT_CAPS)).len();
        let admin = allowed(&caps(&["CAP_SYS_ADMIN"])).len();
        let all = allowed(&profile_caps()).len();
        let len = runtime_default(&caps(DEFAULT_CAPS)).expect("program").len();
        eprintln!(
            "{}: {plain} syscalls allowed with no capability, {default} with the default set \
             ({len} BPF instructions), {admin} with CAP_SYS_ADMIN, {all} with all",
            std::env::consts::ARCH
        );
        assert!(plain > 300 && default == plain + 1 && admin > default && all > admin);
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

    /// A Localhost-style deny list (everything allowed but a few calls): its rules hold,
    /// calls wpod knows only from the kernel's table included, and an x32 call (the same
    /// number with bit 30) does not slip past them.
    #[test]
    fn a_deny_list_holds_for_every_call_it_names_and_through_x32() {
        let profile = Profile::parse(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir", "mkdirat", "io_uring_setup"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ]}"#,
        )
        .expect("profile");
        let program = program(&profile, &caps(DEFAULT_CAPS)).expect("program");
        let code = in_child(|| unsafe {
            // SAFETY (whole block): raw system calls with valid arguments.
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return 10;
            }
            if install(&program).is_err() {
                return 11;
            }
            let dir = c"/nonexistent-wpod-seccomp-test";
            if libc::mkdir(dir.as_ptr(), 0o755) != -1 || errno() != libc::EACCES {
                return 12;
            }
            if libc::syscall(libc::SYS_io_uring_setup, 1u32, ptr::null_mut::<u8>()) != -1
                || errno() != libc::EACCES
            {
                return 13;
            }
            if libc::syscall(libc::SYS_getpid) != libc::c_long::from(libc::getpid()) {
                return 14;
            }
            #[cfg(target_arch = "x86_64")]
            {
                let x32_mkdir = 0x4000_0000 | libc::SYS_mkdir;
                if libc::syscall(x32_mkdir, dir.as_ptr(), 0o755) != -1 || errno() != libc::EPERM {
                    return 15;
                }
            }
            0
        });
        assert_eq!(code, 0, "check {code} failed in the filtered child");
    }

    /// A rule stricter than the default that names a call wpod cannot number is refused, not
    /// dropped; an Allow rule's unknown name (under a denying default) is skipped.
    #[test]
    fn an_unknown_name_in_a_deny_rule_is_refused() {
        let deny = Profile::parse(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir", "no_such_call_2099"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
            ]}"#,
        )
        .expect("profile");
        let e = program(&deny, &[]).unwrap_err().to_string();
        assert!(e.contains("\"no_such_call_2099\""), "{e}");
        let allow = Profile::parse(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["read", "no_such_call_2099"], "action": "SCMP_ACT_ALLOW"}
            ]}"#,
        )
        .expect("profile");
        assert!(program(&allow, &[]).is_ok());
    }

    /// The kernel's table and the profile's agree wherever both number a call.
    #[test]
    fn the_kernel_table_agrees_with_libc() {
        for name in profile_names() {
            if let (Some(nr), Some((_, kernel))) = (
                arch::number(&name),
                super::super::syscall_table::KERNEL
                    .iter()
                    .find(|(n, _)| *n == name),
            ) {
                assert_eq!(nr, *kernel, "{name}");
            }
        }
    }
}
