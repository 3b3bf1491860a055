//! The pod's network through CNI: wpod is a CNI runtime, as containerd, CRI-O and podman are. It
//! reads a network configuration list (`.conflist`, CNI spec 1.0) from `/etc/wpod/net.d/`
//! (`$WPOD_CNI_CONF_DIR`), runs the plugins from `/usr/lib/cni` and `/opt/cni/bin`
//! (`$WPOD_CNI_PATH`), ADD when the sandbox is made and DEL when it goes.
//!
//! Nothing may be left behind, even by a `wpod run` killed with SIGKILL, so:
//! - the pod's network namespace is **pinned** (a bind mount of it in `$WPOD_ROOT/net/`): the
//!   bridge plugin removes its masquerade rule only while the namespace exists, and the holder
//!   that keeps it alive dies with a killed run;
//! - a **record** is written before ADD and after each plugin (fsync, rename): what DEL needs
//!   (the conflist as it was, the port mappings, the results so far: portmap's DEL needs the
//!   mappings, firewall's the addresses), so the next run of the pod, `wpod rm` or
//!   `wpod pod prune` deletes a network whose run was killed;
//! - DEL runs every plugin in reverse with the final (or last partial) ADD result, and is tried
//!   twice (an nft-backed iptables reports a missing chain as an error once).
//!
//! What the plugins make for every pod of the host (the bridge, their iptables chains) and
//! wpod's own rule go with the last pod that used them (`node.rs`): a host without wpod pods
//! holds nothing of wpod's network.
//!
//! When no configuration exists, wpod writes a documented default on first use (bridge `wpod0`
//! on a /24 of 10.87.0.0/16 no route or address of the host's touches, host-local IPAM,
//! portmap with SNAT so hostPorts answer on 127.0.0.1, firewall).

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::plan::PortMapping;

mod node;

pub use crate::files::{cni_conf_dir as conf_dir, cni_plugin_dirs as plugin_dirs};

/// The default configuration's file name.
pub const DEFAULT_CONFLIST: &str = "10-wpod.conflist";
/// The default network's bridge.
pub const DEFAULT_BRIDGE: &str = "wpod0";
/// The pod's interface.
pub const IFNAME: &str = "eth0";
/// What a plugin may take (ADD and DEL each).
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The plugins exec `iptables` and `ip` through PATH.
const PLUGIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The largest plugin answer read.
const MAX_ANSWER: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: CNI plugin {plugin} ({command}): {message}; fix its entry in that configuration, \
         or keep the pod off the network (metadata.annotations[wpod.dev/network]: none)",
        conf.display()
    )]
    Plugin {
        /// The configuration list the plugin's entry is in.
        conf: PathBuf,
        plugin: String,
        command: &'static str,
        message: String,
    },
    #[error(transparent)]
    Root(#[from] crate::files::StateRootError),
}

fn io(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError {
    let path = path.to_path_buf();
    move |source| NetworkError::Io { step, path, source }
}

/// A network configuration list, as read.
#[derive(Clone, Debug)]
pub struct Conflist {
    pub path: PathBuf,
    /// The file's text: what DEL runs with, whatever the file holds by then.
    pub text: String,
    pub name: String,
    pub version: String,
    pub plugins: Vec<Value>,
}

impl Conflist {
    /// The first `*.conflist` of the configuration directory (in name order, as libcni), or the
    /// default written there when it holds none.
    pub fn load_or_default() -> Result<Self, NetworkError> {
        let dir = conf_dir();
        if let Some(path) = first_conflist(&dir) {
            let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
            return Conflist::parse(&path, &text);
        }
        let text = default_conflist(&pick_subnet()?);
        let path = dir.join(DEFAULT_CONFLIST);
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let tmp = dir.join(format!(".{DEFAULT_CONFLIST}.{}", std::process::id()));
        std::fs::write(&tmp, &text).map_err(io("write", &tmp))?;
        // Another wpod may have written one meanwhile: the first file is everyone's.
        match std::fs::hard_link(&tmp, &path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "wrote the default network configuration");
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(io("write", &path)(e));
            }
        }
        let _ = std::fs::remove_file(&tmp);
        let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
        Conflist::parse(&path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, NetworkError> {
        let bad = |message: String| NetworkError::Config {
            path: path.to_path_buf(),
            message,
        };
        let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let name = v["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("no \"name\"".into()))?
            .to_string();
        let version = v["cniVersion"]
            .as_str()
            .ok_or_else(|| bad("no \"cniVersion\"".into()))?
            .to_string();
        if !matches!(version.as_str(), "1.0.0" | "0.4.0") {
            return Err(bad(format!(
                "cniVersion {version}: wpod runs CNI 1.0.0 (and 0.4.0) configurations"
            )));
        }
        let plugins = v["plugins"]
            .as_array()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad("no \"plugins\" (a .conflist lists its plugins)".into()))?
            .clone();
        for (i, p) in plugins.iter().enumerate() {
            let kind = p["type"].as_str().unwrap_or_default();
            if kind.is_empty() || kind.contains('/') || kind.starts_with('.') {
                return Err(bad(format!(
                    "plugins[{i}].type \"{kind}\" is not a plugin's file name"
                )));
            }
        }
        Ok(Conflist {
            path: path.to_path_buf(),
            text: text.to_string(),
            name,
            version,
            plugins,
        })
    }

    /// The bridge the configuration makes, if its first plugin is `bridge`.
    pub fn bridge(&self) -> Option<String> {
        let first = self.plugins.first()?;
        (first["type"] == "bridge").then(|| first["bridge"].as_str().unwrap_or("cni0").to_string())
    }
}

fn first_conflist(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// The default configuration on `subnet` (`10.87.N.0/24`).
pub fn default_conflist(subnet: &str) -> String {
    let gateway = subnet.replace(".0/24", ".1");
    let v = json!({
        "cniVersion": "1.0.0",
        "name": "wpod",
        "plugins": [
            {
                "type": "bridge",
                "bridge": DEFAULT_BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
            {"type": "firewall"}
        ]
    });
    let mut text = serde_json::to_string_pretty(&v).unwrap_or_default();
    text.push('\n');
    text
}

/// The first `10.87.N.0/24` that no route (of any table) or address of the host's overlaps.
fn pick_subnet() -> Result<String, NetworkError> {
    let taken = host_networks();
    for n in 0..=255u8 {
        let candidate = (u32::from_be_bytes([10, 87, n, 0]), 24u8);
        if !taken.iter().any(|t| overlaps(*t, candidate)) {
            return Ok(format!("10.87.{n}.0/24"));
        }
    }
    Err(NetworkError::Config {
        path: conf_dir().join(DEFAULT_CONFLIST),
        message: "every 10.87.N.0/24 overlaps a route or address of this host: write a \
                  configuration with a subnet of your choice"
            .into(),
    })
}

fn overlaps(a: (u32, u8), b: (u32, u8)) -> bool {
    let bits = a.1.min(b.1);
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    a.0 & mask == b.0 & mask
}

/// IPv4 routes (all tables, the default route aside) and addresses of this host, as
/// (network, prefix length).
fn host_networks() -> Vec<(u32, u8)> {
    let mut out = Vec::new();
    for r in ip_json(&["-4", "route", "show", "table", "all"]) {
        if let Some(dst) = r["dst"].as_str().filter(|d| *d != "default") {
            out.extend(parse_cidr(dst));
        }
    }
    for link in ip_json(&["-4", "addr"]) {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if let (Some(ip), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64()) {
                out.extend(parse_cidr(&format!("{ip}/{len}")));
            }
        }
    }
    out
}

/// Why a network tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{program}")]
    Run {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// It ran and said no (its standard error).
    #[error("{command}: {said}")]
    Failed { command: String, said: String },
}

/// Runs one of the host's network tools (`ip`, `iptables`...) with the plugins' PATH, `stdin`
/// as its input: its output, or why it failed (its own words).
fn tool(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<String, ToolError> {
    let run = |source| ToolError::Run {
        program: program.to_string(),
        source,
    };
    let mut child = Command::new(program)
        .env("PATH", PLUGIN_PATH)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(run)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input);
    }
    let out = child.wait_with_output().map_err(run)?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(ToolError::Failed {
            command: format!("{program} {}", args.join(" ")),
            said: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

/// `ip -j ARGS`'s objects (none when it fails).
fn ip_json(args: &[&str]) -> Vec<Value> {
    let args: Vec<&str> = std::iter::once("-j").chain(args.iter().copied()).collect();
    tool("ip", &args, None)
        .ok()
        .and_then(|out| serde_json::from_str::<Value>(&out).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn parse_cidr(text: &str) -> Option<(u32, u8)> {
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (ip, len.parse().ok()?),
        None => (text, 32),
    };
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    Some((u32::from(ip), len))
}

/// What DEL needs of a pod's network, kept from before its ADD until its DEL succeeded.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    version: u32,
    pod: String,
    container_id: String,
    /// The pinned network namespace.
    netns: PathBuf,
    /// The configuration as ADD ran it.
    conflist: String,
    conflist_path: PathBuf,
    cni_args: String,
    port_mappings: Vec<Value>,
    plugin_dirs: Vec<PathBuf>,
    /// The last result ADD got (the final one once it finished).
    result: Option<Value>,
    finished: bool,
}

const RECORD_VERSION: u32 = 1;

/// A pod attached to its network. Dropping it deletes the network (DEL), unpins the namespace
/// and forgets the record.
pub struct PodNetwork {
    record_path: PathBuf,
    record: Record,
    /// The pod's address on the network.
    pub ip: Option<IpAddr>,
}

/// Where a pod's record and pin live.
fn paths(pod: &str) -> Result<(PathBuf, PathBuf), NetworkError> {
    let dir = crate::files::private_state_dir("net")?;
    Ok((
        dir.join(format!("{pod}.json")),
        dir.join(format!("{pod}.netns")),
    ))
}

impl PodNetwork {
    /// Attaches the pod whose network namespace `netns` is (a `/proc/PID/ns/net`) to the
    /// network: pins the namespace, records, and runs ADD through every plugin, with
    /// `mappings` as the portmap capability. A failure deletes what the ADD made.
    pub fn attach(
        pod: &str,
        namespace: Option<&str>,
        netns: &Path,
        mappings: &[PortMapping],
    ) -> Result<Self, NetworkError> {
        let conflist = Conflist::load_or_default()?;
        let dirs = plugin_dirs();
        for p in &conflist.plugins {
            find_plugin(
                p["type"].as_str().unwrap_or_default(),
                &dirs,
                &conflist.path,
            )?;
        }
        let (record_path, pin) = paths(pod)?;
        // The record of a network a killed run left is what its DEL needs: never written over
        // (starting the sandbox tried that DEL, and it failed).
        if record_path.exists() {
            return Err(NetworkError::Config {
                path: record_path,
                message: format!(
                    "the network a killed run of pod {pod} left could not be deleted (the \
                     warning above says why); `wpod rm {pod}` tries again, or remove this \
                     record once its veth, IPAM lease and iptables rules are gone"
                ),
            });
        }
        pin_netns(netns, &pin)?;
        let container_id = format!(
            "wpod-{}-{pod}-{}",
            super::state_dir::root_id(),
            crate::files::random_hex(4)
        );
        let record = Record {
            version: RECORD_VERSION,
            pod: pod.to_string(),
            cni_args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={container_id}",
                namespace.unwrap_or("default")
            ),
            container_id,
            netns: pin.clone(),
            conflist: conflist.text.clone(),
            conflist_path: conflist.path.clone(),
            port_mappings: mappings
                .iter()
                .map(|m| {
                    let mut v = json!({
                        "hostPort": m.host_port,
                        "containerPort": m.container_port,
                        "protocol": "tcp",
                    });
                    if !m.host_ip.is_unspecified() {
                        v["hostIP"] = m.host_ip.to_string().into();
                    }
                    v
                })
                .collect(),
            plugin_dirs: dirs,
            result: None,
            finished: false,
        };
        let mut network = PodNetwork {
            record_path,
            record,
            ip: None,
        };
        network.save()?;
        // Declared after `network`, so a failed ADD lets go of the lock before the drop of
        // `network` runs DEL (which takes it).
        let _node = node::lock()?;
        let mut previous: Option<Value> = None;
        for plugin in &conflist.plugins {
            match exec_plugin(&network.record, plugin, &conflist, "ADD", previous.as_ref()) {
                Ok(result) => {
                    previous = Some(result);
                    network.record.result = previous.clone();
                    network.save()?;
                }
                // Dropping `network` runs DEL with what was recorded.
                Err(e) => return Err(e),
            }
        }
        network.record.finished = true;
        network.save()?;
        network.ip = previous.as_ref().and_then(|r| pod_ip(r, &pin));
        if let Some(bridge) = conflist.bridge() {
            node::guard_localnet(&bridge);
        }
        Ok(network)
    }

    fn save(&self) -> Result<(), NetworkError> {
        write_record(&self.record_path, &self.record)
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        if let Err(e) = delete(&self.record, &self.record_path) {
            tracing::warn!(pod = %self.record.pod, error = %e, "cannot delete the pod's network; the next run of the pod, wpod rm or wpod pod prune will try again");
        }
    }
}

/// Deletes the network a killed run of `pod` left (its record says what it was). Returns
/// whether there was one.
pub fn recover(pod: &str) -> Result<bool, NetworkError> {
    let (record_path, _) = paths(pod)?;
    let text = match std::fs::read_to_string(&record_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("read", &record_path)(e)),
    };
    let record: Record = serde_json::from_str(&text).map_err(|e| NetworkError::Config {
        path: record_path.clone(),
        message: format!("not a wpod network record ({e}); remove it once the network is gone"),
    })?;
    if record.version != RECORD_VERSION {
        return Err(NetworkError::Config {
            path: record_path,
            message: format!(
                "a network record of version {} (this wpod reads {RECORD_VERSION}): delete the \
                 network with the wpod that wrote it, then remove the record",
                record.version
            ),
        });
    }
    tracing::warn!(pod, "deleting the network a killed run of the pod left");
    delete(&record, &record_path)?;
    Ok(true)
}

/// The pods that have a network record (running, or left by a killed run).
pub fn recorded_pods() -> Vec<String> {
    let dir = crate::files::state_root().join("net");
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    out.sort();
    out
}

/// DEL through every plugin in reverse (twice if it fails once); then the pin and the record
/// go, and, with the last pod on the bridge, what the plugins made for all pods.
fn delete(record: &Record, record_path: &Path) -> Result<(), NetworkError> {
    let conflist = Conflist::parse(&record.conflist_path, &record.conflist)?;
    let _node = node::lock()?;
    let once = || -> Result<(), NetworkError> {
        let mut first_error = None;
        for plugin in conflist.plugins.iter().rev() {
            if let Err(e) = exec_plugin(record, plugin, &conflist, "DEL", record.result.as_ref()) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    };
    once().or_else(|_| once())?;
    unpin(&record.netns);
    let _ = std::fs::remove_file(record_path);
    node::release(&conflist);
    Ok(())
}

fn write_record(path: &Path, record: &Record) -> Result<(), NetworkError> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("write", &tmp))?;
    f.write_all(&bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("write", path))
}

/// Keeps the network namespace `netns` alive at `pin` (a bind mount), whatever happens to the
/// processes in it.
fn pin_netns(netns: &Path, pin: &Path) -> Result<(), NetworkError> {
    // Without a record nothing needs an old pin: a stale one is detached, not stacked on.
    let _ = nix::mount::umount2(pin, nix::mount::MntFlags::MNT_DETACH);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(pin)
        .map_err(io("create", pin))?;
    nix::mount::mount(
        Some(netns),
        pin,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| NetworkError::Io {
        step: "pin the pod's network namespace at",
        path: pin.to_path_buf(),
        source: e.into(),
    })
}

fn unpin(pin: &Path) {
    let _ = nix::mount::umount2(pin, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(pin);
}

/// A plugin binary by its type, from the plugin directories: root's, and writable by root
/// alone (it runs as root with the host's network).
fn find_plugin(kind: &str, dirs: &[PathBuf], conf: &Path) -> Result<PathBuf, NetworkError> {
    for d in dirs {
        let path = d.join(kind);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Err(NetworkError::Config {
                path: path.clone(),
                message: format!(
                    "a CNI plugin must be root's and writable by root alone (it runs as root): \
                     chown root: {0}; chmod go-w {0}",
                    path.display()
                ),
            });
        }
        return Ok(path);
    }
    Err(NetworkError::Config {
        path: conf.to_path_buf(),
        message: format!(
            "no CNI plugin \"{kind}\" in {} (Debian: apt install containernetworking-plugins; \
             or set WPOD_CNI_PATH)",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// Runs one plugin as the CNI spec says: its configuration on stdin (the plugin's object with
/// the list's name and version, `prevResult`, and the capabilities it asks for as
/// `runtimeConfig`), the rest in `CNI_*` variables; its answer on stdout.
fn exec_plugin(
    record: &Record,
    plugin: &Value,
    conflist: &Conflist,
    command: &'static str,
    previous: Option<&Value>,
) -> Result<Value, NetworkError> {
    let kind = plugin["type"].as_str().unwrap_or_default().to_string();
    let fail = |message: String| NetworkError::Plugin {
        conf: record.conflist_path.clone(),
        plugin: kind.clone(),
        command,
        message,
    };
    let binary = find_plugin(&kind, &record.plugin_dirs, &record.conflist_path)?;
    let mut config = plugin.clone();
    let obj = config
        .as_object_mut()
        .ok_or_else(|| fail("its configuration is not an object".into()))?;
    let capabilities = obj.remove("capabilities");
    obj.insert("name".into(), conflist.name.clone().into());
    obj.insert("cniVersion".into(), conflist.version.clone().into());
    if let Some(prev) = previous {
        obj.insert("prevResult".into(), prev.clone());
    }
    if capabilities
        .as_ref()
        .and_then(|c| c["portMappings"].as_bool())
        == Some(true)
    {
        obj.insert(
            "runtimeConfig".into(),
            json!({"portMappings": record.port_mappings}),
        );
    }
    let stdin = serde_json::to_vec(&config).map_err(|e| fail(e.to_string()))?;
    let netns = match (command, record.netns.exists()) {
        // DEL of a namespace that is gone: the plugins then release what needs no namespace.
        ("DEL", false) => String::new(),
        _ => record.netns.display().to_string(),
    };
    let path = std::env::join_paths(&record.plugin_dirs)
        .map(|p| p.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut child = Command::new(&binary)
        .env_clear()
        .env("PATH", PLUGIN_PATH)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &record.container_id)
        .env("CNI_NETNS", &netns)
        .env("CNI_IFNAME", IFNAME)
        .env("CNI_ARGS", &record.cni_args)
        .env("CNI_PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", binary.display())))?;
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(&stdin);
    }
    let out = wait_within(child, PLUGIN_TIMEOUT).map_err(|e| fail(e.to_string()))?;
    let answer: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if out.status.success() {
        return Ok(match (command, answer) {
            ("ADD", Some(result)) => result,
            ("ADD", None) => return Err(fail("no result on stdout".into())),
            // DEL answers nothing; the result passed on is the one it was given.
            (_, _) => previous.cloned().unwrap_or(Value::Null),
        });
    }
    let message = match answer {
        Some(e) => {
            let msg = e["msg"].as_str().unwrap_or("failed");
            match e["details"].as_str() {
                Some(d) if !d.is_empty() => format!("{msg}: {d}"),
                _ => msg.to_string(),
            }
        }
        None => String::from_utf8_lossy(&out.stderr).trim().to_string(),
    };
    Err(fail(crate::logs::escape_controls(&message).into_owned()))
}

/// Waits for `child` at most `limit`, killing it past that; its output, capped. stdout and
/// stderr are read on threads of their own, so a plugin that writes much of one before
/// closing the other never waits on wpod.
fn wait_within(
    mut child: std::process::Child,
    limit: Duration,
) -> std::io::Result<std::process::Output> {
    fn drain(
        pipe: Option<impl std::io::Read + Send + 'static>,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut kept = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.by_ref().take(MAX_ANSWER).read_to_end(&mut kept);
                // Past the cap, read and dropped.
                let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            }
            kept
        })
    }
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!(
                "did not finish within {}s",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (stdout, stderr) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    Ok(std::process::Output {
        status,
        stdout,
        stderr,
    })
}

/// The pod's address in a CNI result: of the interface in the pod's namespace named `eth0`.
fn pod_ip(result: &Value, netns: &Path) -> Option<IpAddr> {
    let netns = netns.display().to_string();
    let interfaces = result["interfaces"].as_array();
    let index = interfaces.and_then(|list| {
        list.iter()
            .position(|i| i["name"] == IFNAME && i["sandbox"].as_str() == Some(netns.as_str()))
    });
    result["ips"]
        .as_array()?
        .iter()
        .find(|ip| match (index, ip["interface"].as_u64()) {
            (Some(want), Some(have)) => have as usize == want,
            // A result without interface indices: its first address.
            _ => true,
        })
        .and_then(|ip| ip["address"].as_str())
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_overlap_by_their_shorter_prefix() {
        let p = |s| parse_cidr(s).unwrap();
        assert!(overlaps(p("10.87.0.0/24"), p("10.0.0.0/8")));
        assert!(overlaps(p("10.87.0.0/24"), p("10.87.0.5/32")));
        assert!(!overlaps(p("10.87.0.0/24"), p("10.87.1.0/24")));
        assert!(!overlaps(p("10.87.0.0/24"), p("192.168.1.0/24")));
    }

    #[test]
    fn the_default_conflist_is_one_wpod_reads() {
        let text = default_conflist("10.87.3.0/24");
        let c = Conflist::parse(Path::new("x.conflist"), &text).unwrap();
        assert_eq!(c.name, "wpod");
        assert_eq!(c.bridge().as_deref(), Some(DEFAULT_BRIDGE));
        assert!(text.contains("10.87.3.1"));
        let types: Vec<&str> = c
            .plugins
            .iter()
            .filter_map(|p| p["type"].as_str())
            .collect();
        assert_eq!(types, ["bridge", "portmap", "firewall"]);
        assert!(Conflist::parse(
            Path::new("x"),
            r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"../x"}]}"#
        )
        .is_err());
        assert!(Conflist::parse(
            Path::new("x"),
            r#"{"name":"n","cniVersion":"9.9.9","plugins":[{"type":"bridge"}]}"#
        )
        .is_err());
    }

    #[test]
    fn the_pod_ip_is_the_sandbox_interfaces() {
        let result = json!({
            "interfaces": [
                {"name": "wpod0"}, {"name": "veth1"},
                {"name": "eth0", "sandbox": "/pin"}
            ],
            "ips": [{"interface": 2, "address": "10.87.0.2/24", "gateway": "10.87.0.1"}]
        });
        assert_eq!(
            pod_ip(&result, Path::new("/pin")),
            Some("10.87.0.2".parse().unwrap())
        );
    }
}
