//! What a bridge network puts on the host for all its pods, not for one: the bridge, the
//! chains the plugins share (`portmap`'s CNI-HOSTPORT-*, `firewall`'s CNI-FORWARD and
//! CNI-ADMIN), host-local's data directory, and wpod's own rule that keeps pods off the host's
//! 127.0.0.1. The plugins make them on the first ADD and never remove them; wpod removes them
//! when the last pod on the bridge is deleted, so a host without wpod pods holds nothing of
//! wpod's network (a demo once left 13 iptables lines and a bridge behind).
//!
//! ADD, DEL and this release run under one host-wide lock, so a pod's ADD never meets a
//! release of the bridge it is joining. The shared chains go only when nothing but the
//! plugins' own static rules is in them: another runtime's pods (podman's, say) keep them.

use std::path::Path;

use super::{io, ip_json, tool, Conflist, NetworkError};

/// The host-wide lock of wpod's CNI operations (every state root's: they share the bridge).
const LOCK: &str = "/run/wpod/cni.lock";

/// Held while a pod's network is added or deleted (and the node released); dropping it
/// unlocks.
pub struct NodeLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

pub fn lock() -> Result<NodeLock, NetworkError> {
    let path = Path::new(LOCK);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    let file = crate::files::open_lock(path).map_err(io("open", path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map(NodeLock)
        .map_err(|(_, e)| io("lock", path)(e.into()))
}

/// portmap's SNAT turns on `route_localnet` on the bridge, so the host would accept packets to
/// 127.0.0.1 that come from pods (CVE-2020-8558's class: a pod reaching a service the host
/// binds to its loopback). Kubernetes' guard: drop them, unless they belong to a connection the
/// host made (a hostPort connection to 127.0.0.1, DNATed to the pod, answered through it).
fn guard_rule(bridge: &str) -> String {
    format!("INPUT -i {bridge} -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP")
}

/// Adds the guard rule for `bridge` unless it is there.
pub fn guard_localnet(bridge: &str) {
    let rule = guard_rule(bridge);
    let iptables = |op: &str| {
        let args: Vec<&str> = ["-w", op].into_iter().chain(rule.split(' ')).collect();
        tool("iptables", &args, None)
    };
    if iptables("-C").is_err() {
        if let Err(e) = iptables("-I") {
            tracing::warn!(bridge, error = %crate::error::chain(&e), "cannot add the rule that keeps pods off the host's 127.0.0.1");
        }
    }
}

/// After a DEL: when no pod is left on the configuration's bridge, removes the bridge, the
/// guard rule, the plugins' shared chains (when nothing else uses them) and host-local's
/// directory (when it holds no lease). Problems are warnings: the pod's own network is gone.
pub fn release(conflist: &Conflist) {
    let Some(bridge) = conflist.bridge() else {
        return;
    };
    if !ports(&bridge).is_empty() {
        return;
    }
    let saved = tool("iptables-save", &[], None).unwrap_or_default();
    let script = release_script(&saved, &bridge);
    if !script.is_empty() {
        let restored = tool(
            "iptables-restore",
            &["-w", "--noflush"],
            Some(script.as_bytes()),
        );
        if let Err(e) = restored {
            tracing::warn!(error = %crate::error::chain(&e), "cannot remove the pod network's iptables rules");
        }
    }
    if !ip_json(&["link", "show", &bridge]).is_empty() {
        if let Err(e) = tool("ip", &["link", "del", &bridge], None) {
            tracing::warn!(bridge, error = %crate::error::chain(&e), "cannot remove the pods' bridge");
        }
    }
    release_leases(conflist);
}

/// The interfaces attached to `bridge` in this network namespace (none when it does not
/// exist). Asked of the kernel (netlink), not /sys, which shows the namespace it was mounted in.
fn ports(bridge: &str) -> Vec<String> {
    ip_json(&["link", "show", "master", bridge])
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

/// A chain and the rules a plugin puts in it.
type Chain = (&'static str, &'static [&'static str]);

/// The chains the plugins share, by table, with the rules they put in them themselves: a rule
/// matching none of these belongs to some pod (of any runtime), and the table's chains stay.
const SHARED: &[(&str, &[Chain])] = &[
    (
        "filter",
        &[("CNI-FORWARD", &["-j CNI-ADMIN"]), ("CNI-ADMIN", &[])],
    ),
    (
        "nat",
        &[
            ("CNI-HOSTPORT-DNAT", &[]),
            ("CNI-HOSTPORT-MASQ", &["--mark 0x2000/0x2000 -j MASQUERADE"]),
            ("CNI-HOSTPORT-SETMARK", &["--set-xmark 0x2000/0x2000"]),
        ],
    ),
];

/// The `iptables-restore --noflush` input that removes wpod's guard rule for `bridge` and, per
/// table, the shared chains and the rules that jump to them when only the plugins' own rules
/// are in them (`saved`: `iptables-save`'s output).
fn release_script(saved: &str, bridge: &str) -> String {
    let guard = format!("-A {}", guard_rule(bridge));
    let mut out = String::new();
    let mut table = "";
    let mut body: Vec<&str> = Vec::new();
    let flush = |table: &str, body: &[&str], out: &mut String| {
        let mut lines = Vec::new();
        if table == "filter" {
            lines.extend(
                body.iter()
                    .filter(|l| same_rule(l, &guard))
                    .map(|l| format!("-D {}", &l[3..])),
            );
        }
        if let Some((_, chains)) = SHARED.iter().find(|(t, _)| *t == table) {
            let names: Vec<&str> = chains.iter().map(|(c, _)| *c).collect();
            let exists = |c: &str| body.iter().any(|l| l.starts_with(&format!(":{c} ")));
            let unused = chains.iter().all(|(chain, own)| {
                body.iter()
                    .filter(|l| l.starts_with(&format!("-A {chain} ")))
                    .all(|l| own.iter().any(|o| l.contains(o)))
            });
            if unused && names.iter().any(|c| exists(c)) {
                // Jumps into them from elsewhere first, then the chains.
                for l in body.iter().filter(|l| l.starts_with("-A ")) {
                    let chain = l[3..].split(' ').next().unwrap_or_default();
                    let target = l.rsplit(" -j ").next().unwrap_or_default();
                    if !names.contains(&chain) && names.contains(&target) {
                        lines.push(format!("-D {}", &l[3..]));
                    }
                }
                for c in names.iter().filter(|c| exists(c)) {
                    lines.push(format!("-F {c}"));
                }
                for c in names.iter().filter(|c| exists(c)) {
                    lines.push(format!("-X {c}"));
                }
            }
        }
        if !lines.is_empty() {
            out.push_str(&format!("*{table}\n{}\nCOMMIT\n", lines.join("\n")));
        }
    };
    for line in saved.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t;
            body.clear();
        } else if line == "COMMIT" {
            flush(table, &body, &mut out);
        } else if !line.starts_with('#') {
            body.push(line);
        }
    }
    out
}

/// Whether an `iptables-save` line is `rule` (its matches may come back in another order of
/// words, so compared as sets).
fn same_rule(line: &str, rule: &str) -> bool {
    let words = |s: &str| {
        let mut w: Vec<String> = s.split_whitespace().map(str::to_string).collect();
        w.sort();
        w
    };
    words(line) == words(rule)
}

/// host-local keeps a directory per network (`dataDir/NAME`, one file per leased address): it
/// goes when only its lock and its last-reserved markers are left.
fn release_leases(conflist: &Conflist) {
    let Some(ipam) = conflist.plugins.first().map(|p| &p["ipam"]) else {
        return;
    };
    if ipam["type"] != "host-local" {
        return;
    }
    let data = ipam["dataDir"].as_str().unwrap_or("/var/lib/cni/networks");
    let dir = Path::new(data).join(&conflist.name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    if names
        .iter()
        .all(|n| n == "lock" || n.starts_with("last_reserved_ip"))
    {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What this host's iptables-save printed after a demo pod had gone.
    const LEFT: &str = "# Generated by iptables-save
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:CNI-ADMIN - [0:0]
:CNI-FORWARD - [0:0]
-A INPUT -d 127.0.0.0/8 -i wpod0 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD
-A CNI-FORWARD -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:CNI-HOSTPORT-SETMARK - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x2000/0x2000
COMMIT
";

    #[test]
    fn an_idle_node_loses_every_shared_chain_and_the_guard() {
        let script = release_script(LEFT, "wpod0");
        for want in [
            "-D INPUT -d 127.0.0.0/8 -i wpod0 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
            "-D FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD",
            "-X CNI-ADMIN",
            "-X CNI-FORWARD",
            "-D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
            "-D OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
            "-D POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ",
            "-X CNI-HOSTPORT-DNAT",
            "-X CNI-HOSTPORT-MASQ",
            "-X CNI-HOSTPORT-SETMARK",
        ] {
            assert!(script.lines().any(|l| l == want), "no {want:?} in\n{script}");
        }
    }

    #[test]
    fn chains_another_runtimes_pod_uses_stay() {
        // A podman pod's hostPort and firewall rules are still there: only wpod's guard goes.
        let busy = LEFT
            .replace(
                "-A CNI-HOSTPORT-MASQ",
                "-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: podman\" -j CNI-DN-1234\n-A CNI-HOSTPORT-MASQ",
            )
            .replace(
                "-A CNI-FORWARD -m comment",
                "-A CNI-FORWARD -d 10.88.0.2/32 -j ACCEPT\n-A CNI-FORWARD -m comment",
            );
        let script = release_script(&busy, "wpod0");
        assert!(
            script.contains("-D INPUT -d 127.0.0.0/8 -i wpod0"),
            "{script}"
        );
        assert!(!script.contains("-X"), "{script}");
        assert!(release_script(&busy, "other0").is_empty());
    }
}
