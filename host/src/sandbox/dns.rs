//! The pod's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, as the kubelet writes them
//! for every container with an image of its own (a host container sees the host's files).
//!
//! resolv.conf follows the kubelet without cluster DNS: `dnsPolicy: Default` (and ClusterFirst,
//! Kubernetes' default, which falls back to it on a host without a cluster DNS) takes the
//! host's resolvers, then adds `dnsConfig`; `None` is `dnsConfig` alone. A loopback resolver
//! (systemd-resolved's 127.0.0.53, a local dnsmasq) cannot answer from the pod's own loopback:
//! systemd's list of real upstreams is used when there is one, and loopback resolvers are left
//! out otherwise, with a warning (never replaced by a public resolver).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::SandboxError;
use crate::grants::net::dns::{parse_resolv, Resolv};
use crate::grants::net::PodNet;
use crate::plan::{DnsPlan, Network, PodPlan};

/// The host's resolver configuration, and systemd-resolved's list of upstreams.
const HOST_RESOLV: &str = "/etc/resolv.conf";
const SYSTEMD_RESOLV: &str = "/run/systemd/resolve/resolv.conf";

/// The pod's files, written into its state directory, each with the path it is mounted at
/// in a container; what the sidecars' resolver needs; warnings.
pub struct EtcFiles {
    pub files: Vec<(PathBuf, &'static str)>,
    pub net: PodNet,
    pub warnings: Vec<String>,
}

/// Writes the files into the pod's state directory.
pub fn write_etc_files(
    state: &Path,
    plan: &PodPlan,
    ip: Option<IpAddr>,
) -> Result<EtcFiles, SandboxError> {
    let hostname = plan.hostname.as_str();
    let mut warnings = Vec::new();
    let hosts = match plan.network {
        // On the host's network: the host's own file, with the aliases (as the kubelet).
        Network::Host => {
            let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            if !text.ends_with('\n') && !text.is_empty() {
                text.push('\n');
            }
            text + &aliases(&plan.host_aliases)
        }
        _ => hosts_file(hostname, ip, &plan.host_aliases),
    };
    let (resolv, mut dns_warnings) = resolv_conf(
        &plan.dns,
        std::fs::read_to_string(HOST_RESOLV).ok().as_deref(),
        std::fs::read_to_string(SYSTEMD_RESOLV).ok().as_deref(),
        plan.network == Network::Host,
    );
    warnings.append(&mut dns_warnings);
    let mut out = Vec::new();
    for (name, target, content) in [
        ("etc-hosts", "/etc/hosts", hosts),
        ("etc-hostname", "/etc/hostname", format!("{hostname}\n")),
        ("etc-resolv.conf", "/etc/resolv.conf", resolv.render()),
    ] {
        let path = state.join(name);
        std::fs::write(&path, content).map_err(|e| SandboxError::io("write", &path, e))?;
        out.push((path, target));
    }
    let net = PodNet {
        ips: ip.into_iter().collect(),
        resolv,
        aliases: plan.host_aliases.clone(),
        hostname: hostname.to_string(),
    };
    Ok(EtcFiles {
        files: out,
        net,
        warnings,
    })
}

/// The kubelet's hosts file: localhost, the pod's name at its address (its loopback without
/// one), then `hostAliases`.
pub fn hosts_file(
    hostname: &str,
    ip: Option<IpAddr>,
    host_aliases: &[(IpAddr, Vec<String>)],
) -> String {
    let own = ip.map_or_else(|| "127.0.0.1".to_string(), |ip| ip.to_string());
    format!(
        "# Kubernetes-managed hosts file (written by wpod).\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n\
         {own}\t{hostname}\n{}",
        aliases(host_aliases)
    )
}

fn aliases(host_aliases: &[(IpAddr, Vec<String>)]) -> String {
    if host_aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for (ip, names) in host_aliases {
        out.push_str(&format!("{ip}\t{}\n", names.join("\t")));
    }
    out
}

/// The pod's resolv.conf from the plan and the host's files (`host`: /etc/resolv.conf,
/// `systemd`: systemd-resolved's upstream list); with warnings. A pod on the host's network
/// (`host_network`) shares the host's loopback, so its resolvers there stay.
pub fn resolv_conf(
    dns: &DnsPlan,
    host: Option<&str>,
    systemd: Option<&str>,
    host_network: bool,
) -> (Resolv, Vec<String>) {
    let mut warnings = Vec::new();
    let mut merged = Resolv::default();
    if dns.from_host && host_network {
        merged = parse_resolv(host.unwrap_or_default());
    } else if dns.from_host {
        let mut from = parse_resolv(host.unwrap_or_default());
        let all_loopback =
            !from.nameservers.is_empty() && from.nameservers.iter().all(|n| n.is_loopback());
        if all_loopback {
            if let Some(upstreams) = systemd {
                let upstreams = parse_resolv(upstreams);
                from.nameservers = upstreams.nameservers;
            }
        }
        let dropped: Vec<String> = from
            .nameservers
            .iter()
            .filter(|n| n.is_loopback())
            .map(|n| n.to_string())
            .collect();
        if !dropped.is_empty() {
            warnings.push(format!(
                "the host's resolver {} answers on the host's loopback, which a pod cannot \
                 reach: left out of the pod's resolv.conf (set dnsPolicy: None with \
                 dnsConfig.nameservers to choose the pod's)",
                dropped.join(", ")
            ));
        }
        from.nameservers.retain(|n| !n.is_loopback());
        merged = from;
    }
    for n in &dns.nameservers {
        if !merged.nameservers.contains(n) {
            merged.nameservers.push(*n);
        }
    }
    if merged.nameservers.len() > 3 {
        warnings.push(format!(
            "the pod gets 3 of its {} resolvers (the resolver reads no more)",
            merged.nameservers.len()
        ));
        merged.nameservers.truncate(3);
    }
    for s in &dns.searches {
        let s = s.trim_end_matches('.').to_string();
        if !merged.searches.contains(&s) {
            merged.searches.push(s);
        }
    }
    // Options by name: dnsConfig's override the host's.
    for o in &dns.options {
        let name = o.split(':').next().unwrap_or_default();
        merged
            .options
            .retain(|existing| existing.split(':').next() != Some(name));
        merged.options.push(o.clone());
    }
    (merged, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(from_host: bool, nameservers: &[&str], searches: &[&str], options: &[&str]) -> DnsPlan {
        DnsPlan {
            from_host,
            nameservers: nameservers.iter().map(|n| n.parse().unwrap()).collect(),
            searches: searches.iter().map(|s| s.to_string()).collect(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn default_takes_the_hosts_then_dns_config() {
        let host = "nameserver 10.255.255.53\nsearch corp.example.\noptions ndots:2 edns0\n";
        let (resolv, warnings) = resolv_conf(
            &plan(true, &["198.51.100.53"], &["svc.example"], &["ndots:5"]),
            Some(host),
            None,
            false,
        );
        let text = resolv.render();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            text.lines().skip(1).collect::<Vec<_>>(),
            [
                "nameserver 10.255.255.53",
                "nameserver 198.51.100.53",
                "search corp.example svc.example",
                "options edns0 ndots:5",
            ]
        );
    }

    #[test]
    fn none_is_dns_config_alone_and_loopback_resolvers_never_reach_a_pod() {
        let text = resolv_conf(
            &plan(false, &["198.51.100.53"], &[], &[]),
            Some("nameserver 10.0.0.1\n"),
            None,
            false,
        )
        .0
        .render();
        assert!(
            !text.contains("10.0.0.1") && text.contains("198.51.100.53"),
            "{text}"
        );
        // systemd-resolved's stub: its upstreams instead.
        let (resolv, warnings) = resolv_conf(
            &plan(true, &[], &[], &[]),
            Some("nameserver 127.0.0.53\n"),
            Some("nameserver 192.0.2.53\n"),
            false,
        );
        let text = resolv.render();
        assert!(
            text.contains("192.0.2.53") && !text.contains("127.0.0.53"),
            "{text}"
        );
        assert!(warnings.is_empty());
        // A loopback resolver and no upstream list: left out, said.
        let (resolv, warnings) = resolv_conf(
            &plan(true, &[], &[], &[]),
            Some("nameserver 127.0.0.1\n"),
            None,
            false,
        );
        let text = resolv.render();
        assert!(!text.contains("127.0.0.1"), "{text}");
        assert_eq!(warnings.len(), 1);
        // On the host's network the host's loopback is the pod's: kept, nothing to say.
        let (resolv, warnings) = resolv_conf(
            &plan(true, &[], &[], &[]),
            Some("nameserver 127.0.0.1\n"),
            None,
            true,
        );
        assert!(resolv.render().contains("nameserver 127.0.0.1"));
        assert!(warnings.is_empty());
    }

    #[test]
    fn hosts_name_the_pod_at_its_address_and_add_aliases() {
        let text = hosts_file(
            "web",
            Some("10.87.0.2".parse().unwrap()),
            &[(
                "198.51.100.7".parse().unwrap(),
                vec!["db.example".into(), "db".into()],
            )],
        );
        assert!(text.contains("10.87.0.2\tweb\n"), "{text}");
        assert!(text.contains("# Entries added by HostAliases.\n198.51.100.7\tdb.example\tdb\n"));
        assert!(hosts_file("web", None, &[]).contains("127.0.0.1\tweb\n"));
    }
}
