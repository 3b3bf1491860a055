//! Whether the pod fits this host, as the Kubernetes scheduler decides it for a node: the pod's
//! effective requests against the node's capacity. A pod that does not fit stays `Pending` on
//! Kubernetes; here it is refused before anything of it exists, with the arithmetic.
//!
//! The effective request of a resource is the scheduler's (KEP-753, with native sidecars): the
//! larger of the sum over the regular containers and native sidecars, and, for each init
//! container, its own request plus the native sidecars declared before it. A container's
//! request is its `resources.requests`, or its `limits` where the request is unset (Kubernetes
//! copies the limit). Wasm sidecars count as the containers they are.

use crate::spec::quantity::{show_bytes, show_cpu};
use crate::spec::{Diagnostic, Pod, ResourceList};

use super::{ContainerPlan, Role};

/// What this host offers: its memory and its CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub memory_bytes: u64,
    pub cpu_millis: u64,
}

impl Capacity {
    /// This machine: `MemTotal` of `/proc/meminfo`, and the CPUs this process may run on.
    /// `None` when the memory cannot be read (then nothing is refused).
    pub fn here() -> Option<Capacity> {
        // Read once per process, as the kubelet reads its node's capacity when it starts: a
        // pod's supervisor plans each `wpod apply` again, and finding the CPUs a cgroup quota
        // leaves (`available_parallelism`) reads four files.
        static HERE: std::sync::OnceLock<Option<Capacity>> = std::sync::OnceLock::new();
        *HERE.get_or_init(Self::read)
    }

    fn read() -> Option<Capacity> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        Some(Capacity {
            memory_bytes: kib.saturating_mul(1024),
            cpu_millis: cpus.saturating_mul(1000),
        })
    }
}

/// One resource: how it is named, read from a list, printed, and what the host has.
struct Resource {
    name: &'static str,
    of: fn(&ResourceList) -> Option<u64>,
    show: fn(u64) -> String,
    capacity: u64,
    source: &'static str,
}

/// Refuses a pod whose effective requests exceed `host`, located at the largest contributor.
pub fn check(pod: &Pod, containers: &[ContainerPlan], host: Capacity, diags: &mut Vec<Diagnostic>) {
    let resources = [
        Resource {
            name: "memory",
            of: |l| l.memory_bytes,
            show: show_bytes,
            capacity: host.memory_bytes,
            source: "MemTotal of /proc/meminfo",
        },
        Resource {
            name: "cpu",
            of: |l| l.cpu_millis,
            show: show_cpu,
            capacity: host.cpu_millis,
            source: "the CPUs wpod may run on",
        },
    ];
    for r in resources {
        // A container's request, and the field it comes from.
        let request = |c: &ContainerPlan| -> Option<(u64, &'static str)> {
            let res = &c.spec.resources;
            match ((r.of)(&res.requests), (r.of)(&res.limits)) {
                (Some(n), _) => Some((n, "requests")),
                (None, Some(n)) => Some((n, "limits")),
                (None, None) => None,
            }
        };
        // The sets of containers that run together: each init container with the native
        // sidecars before it, then the regular containers with every native sidecar.
        let mut moments: Vec<Vec<&ContainerPlan>> = Vec::new();
        let mut sidecars_so_far: Vec<&ContainerPlan> = Vec::new();
        let mut running: Vec<&ContainerPlan> = Vec::new();
        for c in containers {
            match c.role {
                Role::Init => {
                    let mut set = sidecars_so_far.clone();
                    set.push(c);
                    moments.push(set);
                }
                Role::NativeSidecar => {
                    sidecars_so_far.push(c);
                    running.push(c);
                }
                Role::Regular => running.push(c),
            }
        }
        moments.push(running);
        let sum = |set: &[&ContainerPlan]| {
            set.iter()
                .filter_map(|c| request(c))
                .fold(0u64, |sum, (n, _)| sum.saturating_add(n))
        };
        let Some(worst) = moments.into_iter().max_by_key(|set| sum(set)) else {
            continue;
        };
        let (total, set) = (sum(&worst), worst);
        let parts = || -> String {
            set.iter()
                .filter_map(|c| request(c).map(|(n, _)| format!("{} {}", c.name(), (r.show)(n))))
                .collect::<Vec<_>>()
                .join(" + ")
        };
        // Pod-level resources (KEP-2837): the pod's request is what the scheduler weighs, and
        // the containers' must fit in it. Unset, it defaults as the API server defaults it: to
        // the containers' requests when any container has one (then they stand, as below),
        // else to the pod's limit.
        let pod_level = &pod.spec.resources;
        let containers_request = containers.iter().any(|c| request(c).is_some());
        let pod_request = match ((r.of)(&pod_level.requests), (r.of)(&pod_level.limits)) {
            (Some(n), _) => Some((n, "requests")),
            (None, Some(n)) if !containers_request => Some((n, "limits")),
            _ => None,
        };
        if let Some((request, field)) = pod_request {
            let path = format!("spec.resources.{field}.{}", r.name);
            if total > request {
                diags.push(pod.source.diag(
                    &path,
                    format!(
                        "the containers request {} of {} at once ({}), more than the pod's {}: \
                         Kubernetes refuses this; raise the pod's {field} or lower the \
                         containers' requests",
                        (r.show)(total),
                        r.name,
                        parts(),
                        (r.show)(request),
                    ),
                ));
            } else if request > r.capacity {
                diags.push(pod.source.diag(
                    &path,
                    format!(
                        "the pod requests {} of {}, and this host has {} ({}): the Kubernetes \
                         scheduler would leave it Pending on such a node; lower the request",
                        (r.show)(request),
                        r.name,
                        (r.show)(r.capacity),
                        r.source,
                    ),
                ));
            }
            continue;
        }
        // Requests default to the containers' then, and a request is at most its limit.
        if let Some(limit) = (r.of)(&pod_level.limits).filter(|l| total > *l) {
            diags.push(pod.source.diag(
                format!("spec.resources.limits.{}", r.name),
                format!(
                    "the containers request {} of {} at once ({}), more than the pod's limit of \
                     {}: Kubernetes refuses this; raise the pod's limit or lower the containers' \
                     requests",
                    (r.show)(total),
                    r.name,
                    parts(),
                    (r.show)(limit),
                ),
            ));
            continue;
        }
        if total <= r.capacity {
            continue;
        }
        let Some((largest, field)) = set
            .iter()
            .filter_map(|c| request(c).map(|(n, f)| (n, c, f)))
            .max_by_key(|(n, _, _)| *n)
            .map(|(_, c, f)| (c, f))
        else {
            continue;
        };
        diags.push(pod.source.diag(
            format!("{}.resources.{field}.{}", largest.path, r.name),
            format!(
                "the pod requests {} of {} at once ({}), and this host has {} ({}): the \
                 Kubernetes scheduler would leave it Pending on such a node; lower the requests \
                 (a limit stands for an unset request)",
                (r.show)(total),
                r.name,
                parts(),
                (r.show)(r.capacity),
                r.source,
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const HOST: Capacity = Capacity {
        memory_bytes: 24 << 30,
        cpu_millis: 2000,
    };

    fn refused(containers_yaml: &str) -> Vec<String> {
        let yaml =
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n{containers_yaml}");
        let pods = crate::spec::parse(Path::new("pod.yaml"), &yaml).expect("a valid pod");
        // The containers as the plan lists them (the plan itself checks against this machine).
        let pod = &pods[0];
        let containers: Vec<ContainerPlan> = pod
            .containers_in_order()
            .map(|(path, role, c)| {
                ContainerPlan::new(
                    path,
                    role,
                    pod.spec.restart_policy,
                    super::super::Image::Host,
                    c,
                    None,
                )
            })
            .collect();
        let mut out = Vec::new();
        check(pod, &containers, HOST, &mut out);
        out.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn a_pod_larger_than_the_host_is_refused_with_the_arithmetic() {
        let e = refused(
            "  containers:\n  - {name: main, image: /, command: [id], resources: {requests: {memory: 1000Gi}}}\n  - {name: tail, image: /, command: [id], resources: {limits: {memory: 64Mi}}}\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("spec.containers[0].resources.requests.memory")
                && e[0].contains("the pod requests 1000Gi of memory at once (main 1000Gi + tail 64Mi), and this host has 24Gi"),
            "{e:?}"
        );
    }

    #[test]
    fn a_pod_level_request_is_what_the_host_must_hold() {
        // The pod's limit stands for its unset request when no container requests any.
        let e = refused(
            "  resources: {limits: {memory: 1000Gi, cpu: 1}}\n  containers:\n  - {name: main, image: /, command: [id]}\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("spec.resources.limits.memory")
                && e[0].contains("the pod requests 1000Gi of memory, and this host has 24Gi"),
            "{e:?}"
        );
        // When one does, the containers' requests are the pod's (the API server's default):
        // a large pod limit over a small request fits, as Kubernetes schedules it.
        assert!(refused(
            "  resources: {limits: {memory: 1000Gi}}\n  containers:\n  - {name: main, image: /, command: [id], resources: {requests: {memory: 1Gi}}}\n",
        )
        .is_empty());
        // ... and they must be within the pod's limit.
        let e = refused(
            "  resources: {limits: {memory: 1Gi}}\n  containers:\n  - {name: a, image: /, command: [id], resources: {requests: {memory: 768Mi}}}\n  - {name: b, image: /, command: [id], resources: {requests: {memory: 512Mi}}}\n",
        );
        assert!(
            e.len() == 1
                && e[0].contains("spec.resources.limits.memory")
                && e[0].contains(
                    "1.2Gi of memory at once (a 768Mi + b 512Mi), more than the pod's limit of 1Gi"
                ),
            "{e:?}"
        );
        // Containers whose requests together would not fit the host alone are judged by the
        // pod's request when there is one, and that request holds theirs.
        let e = refused(
            "  resources: {requests: {cpu: 1500m}}\n  containers:\n  - {name: a, image: /, command: [id], resources: {requests: {cpu: 1}}}\n  - {name: b, image: /, command: [id], resources: {requests: {cpu: 700m}}}\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("spec.resources.requests.cpu")
                && e[0].contains("the containers request 1700m of cpu at once (a 1 + b 700m), more than the pod's 1500m"),
            "{e:?}"
        );
        assert!(refused(
            "  resources: {requests: {cpu: 1800m}}\n  containers:\n  - {name: a, image: /, command: [id], resources: {requests: {cpu: 1}}}\n  - {name: b, image: /, command: [id], resources: {requests: {cpu: 700m}}}\n",
        )
        .is_empty());
    }

    #[test]
    fn limits_stand_for_unset_requests_and_cpu_is_counted_too() {
        let e = refused(
            "  containers:\n  - {name: main, image: /, command: [id], resources: {limits: {cpu: 1500m}}}\n  - {name: side, image: /, command: [id], resources: {limits: {cpu: \"1\"}}}\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("spec.containers[0].resources.limits.cpu")
                && e[0].contains("2500m of cpu at once (main 1500m + side 1), and this host has 2"),
            "{e:?}"
        );
        // Exa quantities add up without overflow.
        let e = refused(
            "  containers:\n  - {name: a, image: /, command: [id], resources: {requests: {memory: 8Ei}}}\n  - {name: b, image: /, command: [id], resources: {requests: {memory: 8Ei}}}\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
    }

    /// Init containers run one at a time, beside the native sidecars declared before them;
    /// what fits at each moment fits.
    #[test]
    fn init_containers_count_one_at_a_time_with_the_sidecars_before_them() {
        let fits = refused(
            "  initContainers:\n  - {name: migrate, image: /, command: [id], resources: {requests: {memory: 20Gi}}}\n  - {name: proxy, image: /, command: [id], restartPolicy: Always, resources: {requests: {memory: 2Gi}}}\n  containers:\n  - {name: main, image: /, command: [id], resources: {requests: {memory: 20Gi}}}\n",
        );
        assert!(fits.is_empty(), "{fits:?}");
        let e = refused(
            "  initContainers:\n  - {name: proxy, image: /, command: [id], restartPolicy: Always, resources: {requests: {memory: 6Gi}}}\n  - {name: migrate, image: /, command: [id], resources: {requests: {memory: 20Gi}}}\n  containers:\n  - {name: main, image: /, command: [id], resources: {requests: {memory: 1Gi}}}\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("spec.initContainers[1].resources.requests.memory")
                && e[0].contains("(proxy 6Gi + migrate 20Gi)"),
            "{e:?}"
        );
    }

    #[test]
    fn sizes_print_as_kubernetes_writes_them() {
        assert_eq!(show_bytes(1000 << 30), "1000Gi");
        assert_eq!(show_bytes((23 << 30) + (1 << 29)), "23.5Gi");
        assert_eq!(show_bytes(64 << 20), "64Mi");
        assert_eq!(show_bytes(512), "512 bytes");
        assert_eq!(show_cpu(2000), "2");
        assert_eq!(show_cpu(700), "700m");
    }
}
