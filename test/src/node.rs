//! A whole test node in network namespaces, with the real `netclaim` binary running on it.
//!
//! What is real: the `netclaim run` process (its DRA and registration sockets, its NRI
//! plugin, its netlink work, its checkpoint), the network namespaces and interfaces, and —
//! with [`RuntimeKind::Containerd`] — containerd with NRI (1.7 or 2.x, as
//! `NETCLAIM_CONTAINERD_MAJOR` chooses: see [`crate::containerd`]), runc and the CNI plugins.
//! What stands in: the API server ([`crate::apiserver`]), the kubelet
//! ([`crate::kubelet`]), the scheduler (this module writes `status.allocation` the way the
//! scheduler would), and with [`RuntimeKind::StandIn`] the runtime's NRI side
//! ([`crate::runtime`]).
//!
//! With [`RuntimeKind::Containerd`] the node netns is the one containerd runs in
//! ([`ContainerdNode`]): pods are run, stopped and removed through CRI as the kubelet does,
//! containerd creates their netns (files under its private state dir, see
//! [`TestNode::runtime_netns_files`]) and gives them a CNI bridge `eth0` on
//! [`crate::containerd::POD_SUBNET`], and the driver's NRI plugin is connected to
//! containerd's NRI socket; [`TestNode::start_driver`] returns once the driver has logged a
//! new [`NRI_REGISTERED`] line. A refused sandbox surfaces as CRI's error message, which
//! carries the driver's.
//!
//! Layout: a *node* netns holds the NICs (`eth1`, `eth2`, ... veth ends) and an uplink
//! with the default route (which netclaim must never offer); a *lan* netns holds the
//! peers, with `192.0.2.1/24` on the peer of `eth1`, so a pod can ping across.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use kube::api::{Api, ListParams, PostParams};
use kubeletplugin::ClaimRef;

use crate::apiserver::{ApiServer, ApiServerOptions};
use crate::containerd::{ContainerdNode, ContainerdOptions, PodSpec};
use crate::kubelet::{
    DraApiVersion, DraClient, HealthApiVersion, HealthStream, KubeletStandIn, PrepareOutcome,
};
use crate::netns::{TestNetns, run};
use crate::runtime::{HookError, PodSandbox, RuntimeStandIn, pod_sandbox};

/// Which runtime drives the pod sandboxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeKind {
    /// The NRI runtime stand-in; pod netns are made by the harness.
    StandIn,
    /// A real containerd with NRI, runc and CNI.
    Containerd,
}

/// How to build a [`TestNode`].
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The runtime.
    pub runtime: RuntimeKind,
    /// How many NICs (`eth1`..`ethN`) the node gets.
    pub nics: usize,
    /// Extra flags for `netclaim run`.
    pub extra_args: Vec<String>,
    /// The Kubernetes the API server stand-in emulates (1.34 by default: consumable
    /// capacity off, so shared NICs need 1.36 or the gate).
    pub api: ApiServerOptions,
    /// Puts the driver's state directory (checkpoint, CNI cache) on a tmpfs of this many
    /// bytes of its own, mounted before the driver starts: tests fill it (ENOSPC) or remount
    /// it read-only (EROFS) with [`TestNode::state_dir`].
    pub state_tmpfs_bytes: Option<u64>,
    /// The driver's `--sysfs-root` (discovery and RDMA facts); `None`: a sysfs mounted
    /// from inside the node's netns. Tests point it at a fixture tree to give a node NIC
    /// hardware facts (PCI, RDMA) this machine lacks.
    pub sysfs_root: Option<PathBuf>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            runtime: RuntimeKind::StandIn,
            nics: 2,
            extra_args: Vec::new(),
            api: ApiServerOptions::default(),
            state_tmpfs_bytes: None,
            sysfs_root: None,
        }
    }
}

/// A pod sandbox for [`TestNode::run_pods_at_once`].
#[derive(Clone, Debug)]
pub struct PodRun {
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// The sandbox attempt: the kubelet runs a new sandbox of the same pod with the next
    /// attempt (0 for the first).
    pub attempt: u32,
}

impl PodRun {
    /// The first sandbox (attempt 0) of pod `name` with UID `uid`.
    pub fn new(name: &str, uid: &str) -> Self {
        Self {
            name: name.to_owned(),
            uid: uid.to_owned(),
            attempt: 0,
        }
    }
}

/// The runtime of a node.
#[allow(clippy::large_enum_variant)]
enum Runtime {
    StandIn(RuntimeStandIn),
    Containerd(ContainerdNode),
}

/// A pod the harness runs.
#[derive(Debug)]
pub struct TestPod {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID (what claims' `reservedFor` names).
    pub uid: String,
    /// The sandbox id.
    pub sandbox_id: String,
    /// The pod's network namespace path.
    pub netns_path: PathBuf,
    /// With the stand-in runtime, the harness owns the pod's netns.
    own_netns: Option<TestNetns>,
}

/// A claim of one NIC, as an app team would write it.
#[derive(Clone, Debug)]
pub struct NicClaim {
    /// Claim name (namespace `default`).
    pub name: String,
    /// The request name.
    pub request: String,
    /// The host interface the "scheduler" picks (by the published `ifName` attribute).
    pub if_name: String,
    /// The claim's opaque parameters for `netclaim.dev`, if any (`FromClaim`).
    pub config: Option<serde_json::Value>,
    /// The DeviceClass's opaque parameters for `netclaim.dev`, if any: the admin's side,
    /// allocated as the scheduler copies a class config (`FromClass`, for this request).
    /// CNI networks a claim may not bring itself go here.
    pub class_config: Option<serde_json::Value>,
}

/// A node with netclaim running on it. Dropping it stops everything it started.
pub struct TestNode {
    /// The node's name (pool name, spec.nodeName).
    pub name: String,
    node_netns: NodeNetns,
    lan: TestNetns,
    dir: tempfile::TempDir,
    /// The API server stand-in.
    pub api: ApiServer,
    kubelet: KubeletStandIn,
    dra: Option<DraClient>,
    driver: Option<Child>,
    runtime: Runtime,
    options: NodeOptions,
    /// Pod namespaces of sandboxes whose RUN failed, kept until the node is dropped: a
    /// crashed driver's restart must find the interface where it left it.
    failed_pod_netns: Vec<TestNetns>,
    /// Whether the state directory is a tmpfs this node mounted.
    state_mounted: bool,
}

/// The node's namespace: the harness's own, or the one containerd runs in.
enum NodeNetns {
    Own(TestNetns),
    Containerd(String),
}

impl NodeNetns {
    fn name(&self) -> &str {
        match self {
            NodeNetns::Own(ns) => ns.name(),
            NodeNetns::Containerd(name) => name,
        }
    }
}

/// The driver name netclaim registers.
pub const DRIVER: &str = "netclaim.dev";
const WAIT: Duration = Duration::from_secs(20);
/// What the driver logs each time its NRI plugin registers with a runtime.
pub const NRI_REGISTERED: &str = "NRI plugin registered with the runtime";

/// Makes [`netclaim_binary`] build and return the release binary (benchmarks measure
/// what users run). Call it before the first node starts.
pub fn prefer_release_binary() {
    RELEASE_BINARY.store(true, std::sync::atomic::Ordering::SeqCst);
}

static RELEASE_BINARY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The `netclaim` binary of this workspace, built on first use (a no-op when up to date).
pub fn netclaim_binary() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            // Not the variables cargo sets for this test process: build scripts that watch
            // one (ring's watches CARGO_MANIFEST_DIR) would otherwise be rebuilt here, and
            // again by the next top-level cargo, with all their dependents (about a minute).
            for (name, _) in std::env::vars_os() {
                let is_cargo_set = name.to_str().is_some_and(|n| {
                    n.starts_with("CARGO_PKG_")
                        || n.starts_with("CARGO_BIN_EXE_")
                        || matches!(
                            n,
                            "CARGO_MANIFEST_DIR"
                                | "CARGO_MANIFEST_PATH"
                                | "CARGO_CRATE_NAME"
                                | "CARGO_BIN_NAME"
                                | "CARGO_PRIMARY_PACKAGE"
                                | "CARGO_TARGET_TMPDIR"
                                | "OUT_DIR"
                        )
                });
                if is_cargo_set {
                    cargo.env_remove(name);
                }
            }
            let release = RELEASE_BINARY.load(std::sync::atomic::Ordering::SeqCst);
            if release {
                cargo.arg("build").arg("--release");
            } else {
                cargo.arg("build");
            }
            let status = cargo
                .args(["--quiet", "-p", "netclaim", "--bin", "netclaim"])
                .current_dir(&workspace)
                .status()
                .map_err(|e| format!("running cargo build: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build -p netclaim failed: {status}"));
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace.join("target"));
            Ok(target
                .join(if release { "release" } else { "debug" })
                .join("netclaim"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

impl TestNode {
    /// Builds the node, starts the runtime and `netclaim run`, and registers the plugin
    /// with the kubelet stand-in.
    pub async fn start(options: NodeOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("netclaim-node-")
            .tempdir()?;
        let api = ApiServer::start_with(options.api).await?;
        let (node_netns, runtime) = match options.runtime {
            RuntimeKind::StandIn => {
                let ns = TestNetns::new("node")?;
                let rt = RuntimeStandIn::listen(dir.path().join("nri.sock")).await?;
                (NodeNetns::Own(ns), Runtime::StandIn(rt))
            }
            RuntimeKind::Containerd => {
                let node = ContainerdNode::start(ContainerdOptions::default()).await?;
                (
                    NodeNetns::Containerd(node.netns_name().to_owned()),
                    Runtime::Containerd(node),
                )
            }
        };
        let lan = TestNetns::new("lan")?;
        let name = format!("node-{}", std::process::id());
        let kubelet = KubeletStandIn::new(dir.path().join("plugins_registry"));
        let mut node = Self {
            name,
            node_netns,
            lan,
            dir,
            api,
            kubelet,
            dra: None,
            driver: None,
            runtime,
            options,
            failed_pod_netns: Vec::new(),
            state_mounted: false,
        };
        node.build_network()?;
        node.relay_api_server_into_node()?;
        node.create_node_object().await?;
        if let Some(bytes) = node.options.state_tmpfs_bytes {
            node.mount_state_tmpfs(bytes)?;
        }
        node.start_driver().await?;
        Ok(node)
    }

    /// The node's netns name (for `ip -n`).
    pub fn netns(&self) -> &str {
        self.node_netns.name()
    }

    /// Subscribes to the kernel's link notifications in the node's netns.
    pub fn link_events(&self) -> Result<crate::link_events::KernelLinkEvents> {
        crate::link_events::KernelLinkEvents::subscribe(
            &PathBuf::from("/run/netns").join(self.netns()),
        )
    }

    /// Runs `ip -n <node> args`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.netns()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// The lan namespace (the NICs' peers; `192.0.2.1` answers pings on `eth1`'s wire).
    pub fn lan(&self) -> &TestNetns {
        &self.lan
    }

    /// The driver's log so far.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("driver.log")).unwrap_or_default()
    }

    /// The prepared claims as the driver's checkpoint holds them on disk, by claim UID (a
    /// JSON object; empty before the first prepare).
    pub fn prepared_claims(&self) -> Result<serde_json::Value> {
        let claims = netclaim::checkpoint::read_only(&self.state_dir())?;
        let by_uid: serde_json::Map<String, serde_json::Value> = claims
            .into_iter()
            .map(|claim| Ok((claim.uid.clone(), serde_json::to_value(claim)?)))
            .collect::<Result<_>>()?;
        Ok(serde_json::Value::Object(by_uid))
    }

    /// The driver's `--cdi-spec-dir`: a containerd node's CDI directory (the only one it
    /// reads), else a directory of the test node.
    pub fn cdi_spec_dir(&self) -> PathBuf {
        match &self.runtime {
            Runtime::Containerd(node) => node.paths().cdi_dir.clone(),
            Runtime::StandIn(_) => self.dir.path().join("cdi"),
        }
    }

    /// The driver's `--plugins-dir` (its socket and device metadata files are in
    /// `<dir>/netclaim.dev/`).
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// The driver's `--state-dir` (checkpoint, CNI cache under `cni-cache/`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Mounts a tmpfs of `bytes` on the (new, empty) state directory.
    fn mount_state_tmpfs(&mut self, bytes: u64) -> Result<()> {
        let state = self.state_dir();
        std::fs::create_dir_all(&state)?;
        let state = state.display().to_string();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
                &state,
            ],
        )?;
        self.state_mounted = true;
        Ok(())
    }

    /// The runtime's NRI socket the driver connects to.
    pub fn nri_socket(&self) -> PathBuf {
        match &self.runtime {
            Runtime::StandIn(rt) => rt.socket_path().to_owned(),
            Runtime::Containerd(node) => node.nri_socket().to_owned(),
        }
    }

    /// An uplink with the default route, `eth1..ethN` NICs, their peers in the lan netns.
    fn build_network(&self) -> Result<()> {
        let node = self.netns();
        let lan = self.lan.name();
        let veth = |name: &str, peer: &str| {
            run(
                "ip",
                &[
                    "-n", node, "link", "add", name, "type", "veth", "peer", "name", peer, "netns",
                    lan,
                ],
            )
        };
        veth("uplink0", "up-peer")?;
        self.ip(&["addr", "add", "198.51.100.2/24", "dev", "uplink0"])?;
        self.ip(&["link", "set", "uplink0", "up"])?;
        self.ip(&[
            "route",
            "add",
            "default",
            "via",
            "198.51.100.1",
            "dev",
            "uplink0",
        ])?;
        self.lan
            .ip(&["addr", "add", "198.51.100.1/24", "dev", "up-peer"])?;
        self.lan.ip(&["link", "set", "up-peer", "up"])?;
        for i in 1..=self.options.nics {
            let (nic, peer) = (format!("eth{i}"), format!("peer{i}"));
            veth(&nic, &peer)?;
            self.lan.ip(&["link", "set", &peer, "up"])?;
        }
        self.lan
            .ip(&["addr", "add", "192.0.2.1/24", "dev", "peer1"])?;
        Ok(())
    }

    /// The API server stand-in listens on the host's loopback, which the driver (inside the
    /// node's netns) cannot reach. A listener bound in the node's netns on the same port
    /// relays each connection to it, so one kubeconfig serves both sides.
    fn relay_api_server_into_node(&self) -> Result<()> {
        self.ip(&["link", "set", "lo", "up"])?;
        let url = self.api.url();
        let addr: std::net::SocketAddr = url
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("parsing the API server address {url}"))?;
        let netns = PathBuf::from("/run/netns").join(self.netns());
        let listener = std::thread::spawn(move || -> Result<std::net::TcpListener> {
            // A socket belongs to the netns of the thread that creates it; this thread
            // enters the node's netns only to create the listener, then ends.
            let file = std::fs::File::open(&netns)?;
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .map_err(|_| anyhow!("the relay thread panicked"))??;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(addr).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(())
    }

    async fn create_node_object(&self) -> Result<()> {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.api.client());
        let node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name}
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
        Ok(())
    }

    /// Starts `netclaim run` in the node's netns and waits for the kubelet registration.
    pub async fn start_driver(&mut self) -> Result<()> {
        let registrations = self.nri_registrations();
        let sessions = self
            .runtime_stand_in()
            .map_or(0, RuntimeStandIn::session_count);
        let child = self.spawn_driver()?;
        self.driver = Some(child);
        self.registered(registrations, sessions).await
    }

    /// Starts a second `netclaim run` next to the running one, as a DaemonSet rolling
    /// update with `maxSurge: 1` does: same node, same directories, `extra_args` for the
    /// new instance (a new `--pod-uid`). Waits until the kubelet stand-in registered it and
    /// its NRI plugin is connected (it took over), and returns the previous process, which
    /// keeps running until the caller stops it.
    pub async fn start_next_driver(&mut self, extra_args: Vec<String>) -> Result<Option<Child>> {
        let registrations = self.nri_registrations();
        let sessions = self
            .runtime_stand_in()
            .map_or(0, RuntimeStandIn::session_count);
        self.options.extra_args = extra_args;
        let child = self.spawn_driver()?;
        let previous = self.driver.replace(child);
        self.registered(registrations, sessions).await?;
        Ok(previous)
    }

    /// A GET of `path` on the driver's metrics and health endpoint (its default address,
    /// the node netns's loopback); the status code and the body.
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        use std::io::{Read, Write};
        let netns = std::fs::File::open(format!("/run/netns/{}", self.netns()))?;
        let path = path.to_owned();
        // setns affects only the calling thread: a thread of its own enters the node netns.
        let response = std::thread::spawn(move || -> Result<String> {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", 9464))?;
            stream.set_read_timeout(Some(WAIT))?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })
        .join()
        .map_err(|_| anyhow!("the HTTP client thread panicked"))??;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("not an HTTP response: {response:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| anyhow!("no status code in {head:?}"))?;
        Ok((status, body.to_owned()))
    }

    /// Spawns `netclaim run` in the node's netns with the node's paths and the extra args.
    fn spawn_driver(&self) -> Result<Child> {
        let kubeconfig = self.dir.path().join("kubeconfig");
        self.api.write_kubeconfig(&kubeconfig)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("driver.log"))?;
        let binary = netclaim_binary()?;
        let dir = self.dir.path();
        let sysfs = match &self.options.sysfs_root {
            Some(root) => root.clone(),
            None => self.node_sysfs()?,
        };
        let netns_arg = format!("--net=/run/netns/{}", self.netns());
        // `nsenter --net`, not `ip netns exec`: the latter gives the driver a mount
        // namespace of its own, and the pod netns that containerd bind-mounts later would
        // not appear in it. Discovery reads the node's sysfs from `--sysfs-root` instead.
        let mut args: Vec<String> = vec![
            netns_arg,
            binary.display().to_string(),
            "run".into(),
            "--node-name".into(),
            self.name.clone(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--registrar-dir".into(),
            dir.join("plugins_registry").display().to_string(),
            "--plugins-dir".into(),
            dir.join("plugins").display().to_string(),
            "--state-dir".into(),
            self.state_dir().display().to_string(),
            "--nri-socket".into(),
            self.nri_socket().display().to_string(),
            "--sysfs-root".into(),
            sysfs.display().to_string(),
            // Never the machine's /var/run/cdi: the node's own (containerd reads it).
            "--cdi-spec-dir".into(),
            self.cdi_spec_dir().display().to_string(),
            // The test node's NICs are veths.
            "--include-virtual".into(),
        ];
        args.extend(self.options.extra_args.iter().cloned());
        let child = Command::new("nsenter")
            .args(&args)
            .env("RUST_LOG", "info,netclaim=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting netclaim run")?;
        Ok(child)
    }

    /// Waits for a driver just started to register with the kubelet and the runtime.
    async fn registered(&mut self, registrations: usize, sessions: u64) -> Result<()> {
        let dra = self
            .kubelet
            .wait_for_plugin(DRIVER, WAIT)
            .await
            .with_context(|| {
                format!("netclaim did not register; its log:\n{}", self.driver_log())
            })?;
        self.dra = Some(dra);
        self.wait_for_nri_plugin(registrations, sessions).await
    }

    /// Replaces the extra `netclaim run` flags of the next [`TestNode::start_driver`] (say, to
    /// restart a driver without the `--crash-at` it died at).
    pub fn set_driver_args(&mut self, extra_args: Vec<String>) {
        self.options.extra_args = extra_args;
    }

    /// How many times the driver has logged its NRI registration so far (all runs of it).
    pub fn nri_registrations(&self) -> usize {
        self.driver_log().matches(NRI_REGISTERED).count()
    }

    /// The pid of the running `netclaim run` process (`nsenter` execs it in place).
    pub fn driver_pid(&self) -> Option<u32> {
        self.driver.as_ref().map(Child::id)
    }

    /// Waits until the driver has logged more than `before` NRI registrations.
    /// (With the stand-in: until a plugin that joined after `sessions` is in its list; an
    /// older connection of a killed driver may still be listed until the stand-in notices.)
    async fn wait_for_nri_plugin(&self, before: usize, sessions: u64) -> Result<()> {
        match &self.runtime {
            Runtime::StandIn(rt) => {
                rt.wait_for_session(sessions + 1, WAIT)
                    .await
                    .map_err(|e| anyhow!(e))?;
            }
            Runtime::Containerd(_) => {
                // containerd accepts the plugin on its own; the driver logs when it is
                // registered. Wait for a new such line (a restarted driver appends to the
                // same log) rather than for an arbitrary time.
                self.wait_until("the NRI plugin is registered with containerd", || {
                    self.nri_registrations() > before
                })
                .await?;
            }
        }
        Ok(())
    }

    /// A sysfs mounted from inside the node's netns: sysfs shows the network devices of
    /// the namespace that mounted it. Mounted once, unmounted when the node is dropped.
    fn node_sysfs(&self) -> Result<PathBuf> {
        let target = self.dir.path().join("sys");
        if target.join("class/net").exists() {
            return Ok(target);
        }
        std::fs::create_dir_all(&target)?;
        let netns_arg = format!("--net=/run/netns/{}", self.netns());
        let target_arg = target.display().to_string();
        run(
            "nsenter",
            &[&netns_arg, "mount", "-t", "sysfs", "sysfs", &target_arg],
        )?;
        Ok(target)
    }

    /// Kills the driver with SIGKILL (no cleanup of any kind), and waits for it to die.
    pub fn kill_driver(&mut self) -> Result<()> {
        if let Some(mut child) = self.driver.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops the driver with SIGTERM and waits for it to exit.
    pub fn stop_driver(&mut self) -> Result<()> {
        if let Some(mut child) = self.driver.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
            child.wait()?;
        }
        Ok(())
    }

    /// Polls `condition` until it holds or the harness's 20 s wait passes.
    pub async fn wait_until(&self, what: &str, condition: impl Fn() -> bool) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        while !condition() {
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting until {what}; driver log:\n{}",
                    self.driver_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// This node's published slices.
    pub async fn slices(&self) -> Result<Vec<ResourceSlice>> {
        let api: Api<ResourceSlice> = Api::all(self.api.client());
        let selector = format!("spec.nodeName={},spec.driver={DRIVER}", self.name);
        Ok(api
            .list(&ListParams::default().fields(&selector))
            .await?
            .items)
    }

    /// The published device whose `ifName` attribute is `if_name`, once it is published.
    pub async fn device_for(&self, if_name: &str) -> Result<String> {
        Ok(self.published_device(if_name).await?.name)
    }

    /// The device published for host interface `if_name`, as in the slice (waits for it).
    pub async fn published_device(
        &self,
        if_name: &str,
    ) -> Result<k8s_openapi::api::resource::v1::Device> {
        let deadline = Instant::now() + WAIT;
        loop {
            for slice in self.slices().await? {
                for device in slice.spec.devices.unwrap_or_default() {
                    let attrs = device.attributes.as_ref();
                    let published = attrs
                        .and_then(|a| a.get("ifName"))
                        .and_then(|a| a.string.as_deref());
                    if published == Some(if_name) {
                        return Ok(device);
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{if_name} was never published; driver log:\n{}",
                    self.driver_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates a claim and allocates it as the scheduler would: `status.allocation` with
    /// the device published for `nic.if_name` (with a share id and the default consumed
    /// capacity when the device allows multiple allocations), the config, and
    /// `reservedFor` the pod.
    pub async fn allocate(
        &self,
        claims: &[NicClaim],
        pod_name: &str,
        pod_uid: &str,
    ) -> Result<ClaimRef> {
        let name = claims
            .first()
            .map(|c| c.name.clone())
            .ok_or_else(|| anyhow!("no claims"))?;
        let mut requests = Vec::new();
        let mut results = Vec::new();
        let mut configs = Vec::new();
        for nic in claims {
            let published = self.published_device(&nic.if_name).await?;
            let device = &published.name;
            requests.push(serde_json::json!({
                "name": nic.request, "exactly": {"deviceClassName": "netclaim-nic"}
            }));
            let mut result = serde_json::json!({
                "request": nic.request, "driver": DRIVER, "pool": self.name, "device": device
            });
            // As the scheduler does for a device that takes many allocations: a fresh share
            // id per allocation, and what it consumes of each capacity (the default).
            if published.allow_multiple_allocations == Some(true) {
                result["shareID"] = serde_json::Value::String(random_uid());
                let consumed: serde_json::Map<String, serde_json::Value> = published
                    .capacity
                    .iter()
                    .flatten()
                    .filter_map(|(name, capacity)| {
                        let default = capacity.request_policy.as_ref()?.default.as_ref()?;
                        Some((name.clone(), serde_json::Value::String(default.0.clone())))
                    })
                    .collect();
                result["consumedCapacity"] = serde_json::Value::Object(consumed);
            }
            results.push(result);
            if let Some(config) = &nic.class_config {
                configs.push(serde_json::json!({
                    "source": "FromClass", "requests": [nic.request],
                    "opaque": {"driver": DRIVER, "parameters": config}
                }));
            }
            if let Some(config) = &nic.config {
                configs.push(serde_json::json!({
                    "source": "FromClaim", "requests": [nic.request],
                    "opaque": {"driver": DRIVER, "parameters": config}
                }));
            }
        }
        let api: Api<ResourceClaim> = Api::namespaced(self.api.client(), "default");
        let claim: ResourceClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"devices": {"requests": requests}}
        }))?;
        let mut created = api.create(&PostParams::default(), &claim).await?;
        created.status = Some(serde_json::from_value(serde_json::json!({
            "allocation": {
                "devices": {"results": results, "config": configs},
                "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": [self.name]}]}]}
            },
            "reservedFor": [{"resource": "pods", "name": pod_name, "uid": pod_uid}]
        }))?);
        let uid = created
            .metadata
            .uid
            .clone()
            .ok_or_else(|| anyhow!("claim without uid"))?;
        api.replace_status(&name, &PostParams::default(), &created)
            .await?;
        Ok(ClaimRef {
            namespace: "default".into(),
            name,
            uid,
        })
    }

    fn dra(&self) -> Result<&DraClient> {
        self.dra
            .as_ref()
            .ok_or_else(|| anyhow!("the driver is not registered"))
    }

    /// The `DRAResourceHealth` version the kubelet picks from the driver's registration.
    pub fn health_version(&self) -> Result<Option<HealthApiVersion>> {
        Ok(self.dra()?.health_version())
    }

    /// Opens the kubelet's `NodeWatchResources` stream on health service `version`.
    pub async fn watch_health(&self, version: HealthApiVersion) -> Result<HealthStream> {
        self.dra()?.watch_health_version(version).await
    }

    /// `NodePrepareResources` for `claims`, as the kubelet calls it.
    pub async fn prepare(&self, claims: &[ClaimRef]) -> Result<BTreeMap<String, PrepareOutcome>> {
        self.dra()?.prepare(DraApiVersion::V1, claims).await
    }

    /// `NodeUnprepareResources` for `claims`; per claim, the error (empty on success).
    pub async fn unprepare(&self, claims: &[ClaimRef]) -> Result<BTreeMap<String, String>> {
        self.dra()?.unprepare(DraApiVersion::V1, claims).await
    }

    /// Runs a pod sandbox (the runtime calls netclaim's RUN hook on the way).
    /// `Ok(Err(message))` is a sandbox the runtime failed, with the plugin's message.
    pub async fn run_pod(
        &mut self,
        name: &str,
        uid: &str,
    ) -> Result<std::result::Result<TestPod, String>> {
        match &mut self.runtime {
            Runtime::StandIn(rt) => {
                let netns = TestNetns::new("pod")?;
                let sandbox_id = stand_in_sandbox_id(name, 0);
                let path = netns.path();
                let pod = pod_sandbox(
                    &sandbox_id,
                    name,
                    "default",
                    uid,
                    Some(&path.display().to_string()),
                );
                match rt.run_pod_sandbox(pod).await {
                    Ok(_) => Ok(Ok(TestPod {
                        name: name.into(),
                        namespace: "default".into(),
                        uid: uid.into(),
                        sandbox_id,
                        netns_path: path,
                        own_netns: Some(netns),
                    })),
                    Err(e) => {
                        // The stand-in already sent STOP and REMOVE, as containerd does.
                        self.failed_pod_netns.push(netns);
                        Ok(Err(hook_message(&e)))
                    }
                }
            }
            Runtime::Containerd(node) => {
                let mut spec = PodSpec::new(name);
                spec.uid = uid.into();
                run_cri_pod(node, &spec).await
            }
        }
    }

    /// Runs `pods` at the same time, as a kubelet starting several pods does (each through
    /// its own CRI connection on containerd), and returns each outcome in order:
    /// `Ok(Err(message))` for a sandbox the runtime failed, as [`Self::run_pod`].
    /// The runtime hands NRI events to plugins one at a time (containerd and the stand-in
    /// alike), so the hooks themselves do not overlap; the sandboxes' other work does.
    pub async fn run_pods_at_once(
        &mut self,
        pods: &[PodRun],
    ) -> Result<Vec<std::result::Result<TestPod, String>>> {
        match &self.runtime {
            Runtime::StandIn(rt) => {
                let mut sandboxes = Vec::new();
                for pod in pods {
                    let netns = TestNetns::new("pod")?;
                    let id = stand_in_sandbox_id(&pod.name, pod.attempt);
                    sandboxes.push((pod.clone(), id, netns));
                }
                let runs = sandboxes.iter().map(|(pod, id, netns)| {
                    let path = netns.path().display().to_string();
                    rt.run_pod_sandbox(pod_sandbox(id, &pod.name, "default", &pod.uid, Some(&path)))
                });
                let outcomes = futures::future::join_all(runs).await;
                let mut results = Vec::new();
                for ((pod, sandbox_id, netns), outcome) in sandboxes.into_iter().zip(outcomes) {
                    match outcome {
                        Ok(_) => results.push(Ok(TestPod {
                            name: pod.name,
                            namespace: "default".into(),
                            uid: pod.uid,
                            sandbox_id,
                            netns_path: netns.path(),
                            own_netns: Some(netns),
                        })),
                        Err(e) => {
                            self.failed_pod_netns.push(netns);
                            results.push(Err(hook_message(&e)));
                        }
                    }
                }
                Ok(results)
            }
            Runtime::Containerd(node) => {
                let runs = pods.iter().map(|pod| {
                    let mut spec = PodSpec::new(&pod.name);
                    spec.uid = pod.uid.clone();
                    spec.attempt = pod.attempt;
                    async move { run_cri_pod(node, &spec).await }
                });
                futures::future::join_all(runs).await.into_iter().collect()
            }
        }
    }

    /// Stand-in runtime only: the RUN hook alone for a new sandbox of pod `name`, without
    /// the STOP and REMOVE a runtime sends after a failed RUN (see
    /// [`RuntimeStandIn::deliver_run_only`]), so the test sees what the hook itself left
    /// behind. The runtime does not know the pod afterwards. `Ok(Err(message))` as
    /// [`Self::run_pod`].
    ///
    /// # Errors
    /// On a containerd node.
    pub async fn run_hook_only(
        &mut self,
        name: &str,
        uid: &str,
    ) -> Result<std::result::Result<TestPod, String>> {
        let netns = TestNetns::new("pod")?;
        let path = netns.path();
        self.deliver_run_only(name, uid, path, Some(netns)).await
    }

    /// Stand-in runtime only: the RUN hook alone (as [`Self::run_hook_only`]) for a sandbox
    /// whose network namespace is gone by the time the hook runs (the path names a
    /// namespace that was deleted).
    ///
    /// # Errors
    /// On a containerd node, which never hands out a dead namespace on purpose.
    pub async fn run_pod_in_removed_netns(
        &mut self,
        name: &str,
        uid: &str,
    ) -> Result<std::result::Result<TestPod, String>> {
        let netns = TestNetns::new("gone")?;
        let path = netns.path();
        drop(netns);
        if path.exists() {
            bail!("{} survived its deletion", path.display());
        }
        self.deliver_run_only(name, uid, path, None).await
    }

    async fn deliver_run_only(
        &mut self,
        name: &str,
        uid: &str,
        path: PathBuf,
        netns: Option<TestNetns>,
    ) -> Result<std::result::Result<TestPod, String>> {
        let Runtime::StandIn(rt) = &self.runtime else {
            bail!("only the stand-in runtime can send a RUN alone");
        };
        let sandbox_id = stand_in_sandbox_id(name, 0);
        let pod = pod_sandbox(
            &sandbox_id,
            name,
            "default",
            uid,
            Some(&path.display().to_string()),
        );
        match rt.deliver_run_only(pod).await {
            Ok(_) => Ok(Ok(TestPod {
                name: name.into(),
                namespace: "default".into(),
                uid: uid.into(),
                sandbox_id,
                netns_path: path,
                own_netns: netns,
            })),
            Err(e) => {
                self.failed_pod_netns.extend(netns);
                Ok(Err(hook_message(&e)))
            }
        }
    }

    /// Stops the runtime (the stand-in stops listening and closes its plugins' connections;
    /// containerd's process stops): the driver's NRI connection goes down until
    /// [`Self::start_runtime`].
    pub fn stop_runtime(&mut self) -> Result<()> {
        match &mut self.runtime {
            Runtime::StandIn(rt) => rt.stop(),
            Runtime::Containerd(node) => node.stop_daemon()?,
        }
        Ok(())
    }

    /// Starts the runtime again after [`Self::stop_runtime`].
    pub async fn start_runtime(&mut self) -> Result<()> {
        match &mut self.runtime {
            Runtime::StandIn(rt) => rt.start().await?,
            Runtime::Containerd(node) => node.start_daemon().await?,
        }
        Ok(())
    }

    /// Runs a `hostNetwork: true` pod sandbox: it shares the node's netns, so the runtime
    /// hands netclaim's RUN hook no network namespace. `Ok(Err(message))` as [`Self::run_pod`].
    pub async fn run_host_network_pod(
        &mut self,
        name: &str,
        uid: &str,
    ) -> Result<std::result::Result<TestPod, String>> {
        match &mut self.runtime {
            Runtime::StandIn(rt) => {
                let sandbox_id = format!("sandbox-{name}-{}", std::process::id());
                let pod = pod_sandbox(&sandbox_id, name, "default", uid, None);
                match rt.run_pod_sandbox(pod).await {
                    Ok(_) => Ok(Ok(TestPod {
                        name: name.into(),
                        namespace: "default".into(),
                        uid: uid.into(),
                        sandbox_id,
                        netns_path: PathBuf::from("/run/netns").join(self.node_netns.name()),
                        own_netns: None,
                    })),
                    // The stand-in already sent STOP and REMOVE, as containerd does.
                    Err(e) => Ok(Err(hook_message(&e))),
                }
            }
            Runtime::Containerd(node) => {
                let mut spec = PodSpec::new(name);
                spec.uid = uid.into();
                spec.host_network = true;
                run_cri_pod(node, &spec).await
            }
        }
    }

    /// The NRI runtime stand-in of a [`RuntimeKind::StandIn`] node (its plugin list, the
    /// plugins it dropped).
    pub fn runtime_stand_in(&self) -> Option<&RuntimeStandIn> {
        match &self.runtime {
            Runtime::StandIn(rt) => Some(rt),
            Runtime::Containerd(_) => None,
        }
    }

    /// The real containerd of a [`RuntimeKind::Containerd`] node.
    pub fn containerd(&self) -> Option<&ContainerdNode> {
        match &self.runtime {
            Runtime::Containerd(node) => Some(node),
            Runtime::StandIn(_) => None,
        }
    }

    /// The pod sandboxes the runtime knows (containerd: CRI `ListPodSandbox`, stand-in: the
    /// pods it would report in `Synchronize`), by sandbox id.
    pub async fn runtime_pods(&self) -> Result<Vec<String>> {
        match &self.runtime {
            Runtime::StandIn(rt) => Ok(rt.pods().into_iter().map(|p| p.id).collect()),
            Runtime::Containerd(node) => {
                let mut cri = node.cri().await?;
                Ok(cri.list_pods().await?.into_iter().map(|p| p.id).collect())
            }
        }
    }

    /// The pod network namespace files containerd has mounted (its CRI `netns` directory
    /// under the node's private state dir); empty for the stand-in runtime.
    pub fn runtime_netns_files(&self) -> Result<Vec<PathBuf>> {
        let Some(node) = self.containerd() else {
            return Ok(Vec::new());
        };
        let dir = node
            .paths()
            .state
            .join("io.containerd.grpc.v1.cri")
            .join("netns");
        match std::fs::read_dir(&dir) {
            Ok(entries) => Ok(entries.flatten().map(|e| e.path()).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(anyhow!("reading {}: {e}", dir.display())),
        }
    }

    /// The names of the node's interfaces, sorted (`ip -j link show` in the node netns).
    pub fn node_link_names(&self) -> Result<Vec<String>> {
        let links: Vec<serde_json::Value> =
            serde_json::from_str(&self.ip(&["-j", "link", "show"])?)?;
        let mut names: Vec<String> = links
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// How many file descriptors the driver process holds right now.
    pub fn driver_fd_count(&self) -> Result<usize> {
        let pid = self
            .driver_pid()
            .ok_or_else(|| anyhow!("the driver is not running"))?;
        Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
    }

    /// Stops and removes a pod sandbox (netclaim's STOP and REMOVE hooks run on the way).
    pub async fn delete_pod(&mut self, pod: TestPod) -> Result<()> {
        match &mut self.runtime {
            Runtime::StandIn(rt) => {
                let sandbox = stand_in_pod(&pod.sandbox_id, &pod.name, &pod.uid);
                rt.stop_pod_sandbox(sandbox.clone())
                    .await
                    .map_err(|e| anyhow!(hook_message(&e)))?;
                // containerd removes the netns between STOP and REMOVE.
                drop(pod.own_netns);
                rt.remove_pod_sandbox(sandbox)
                    .await
                    .map_err(|e| anyhow!(hook_message(&e)))?;
                forget_pod(rt, &pod.sandbox_id);
            }
            Runtime::Containerd(node) => {
                let mut cri = node.cri().await?;
                cri.stop_pod(&pod.sandbox_id).await?;
                cri.remove_pod(&pod.sandbox_id).await?;
            }
        }
        Ok(())
    }

    /// `StopPodSandbox` alone, as the kubelet sends it when a pod ends; the runtime removes
    /// the pod's netns file after the hooks ran. `Ok(Err(message))` carries a hook error the
    /// runtime reported (the stand-in does; containerd logs NRI errors at stop and goes on).
    pub async fn stop_pod(&mut self, pod: &mut TestPod) -> Result<std::result::Result<(), String>> {
        match &mut self.runtime {
            Runtime::StandIn(rt) => {
                let sandbox = stand_in_pod(&pod.sandbox_id, &pod.name, &pod.uid);
                let outcome = rt.stop_pod_sandbox(sandbox).await;
                // containerd removes the netns at stop, after the plugins' STOP.
                drop(pod.own_netns.take());
                Ok(outcome.map(drop).map_err(|e| hook_message(&e)))
            }
            Runtime::Containerd(node) => {
                node.cri().await?.stop_pod(&pod.sandbox_id).await?;
                Ok(Ok(()))
            }
        }
    }

    /// `RemovePodSandbox` after [`Self::stop_pod`]; `Ok(Err(message))` as there.
    pub async fn remove_pod(&mut self, pod: TestPod) -> Result<std::result::Result<(), String>> {
        match &mut self.runtime {
            Runtime::StandIn(rt) => {
                let sandbox = stand_in_pod(&pod.sandbox_id, &pod.name, &pod.uid);
                drop(pod.own_netns);
                let outcome = rt.remove_pod_sandbox(sandbox).await;
                forget_pod(rt, &pod.sandbox_id);
                Ok(outcome.map(drop).map_err(|e| hook_message(&e)))
            }
            Runtime::Containerd(node) => {
                node.cri().await?.remove_pod(&pod.sandbox_id).await?;
                Ok(Ok(()))
            }
        }
    }

    /// The runtime removes a pod while no driver is connected: its netns goes and the
    /// runtime forgets it, but STOP and REMOVE reach nobody (containerd does the same when
    /// an NRI plugin is away). Stand-in runtime only; a restarted driver learns of it from
    /// Synchronize, which no longer lists the pod.
    ///
    /// # Errors
    /// On a containerd node, where CRI would need the plugin to be connected.
    pub fn remove_pod_while_driver_is_away(&mut self, pod: TestPod) -> Result<()> {
        match &self.runtime {
            Runtime::StandIn(rt) => {
                drop(pod.own_netns);
                forget_pod(rt, &pod.sandbox_id);
                Ok(())
            }
            Runtime::Containerd(_) => bail!("only the stand-in runtime can lose a pod quietly"),
        }
    }

    /// Restarts the runtime (stand-in: drops and re-listens; containerd: a real restart).
    pub async fn restart_runtime(&mut self) -> Result<()> {
        match &mut self.runtime {
            Runtime::StandIn(rt) => rt.restart().await?,
            Runtime::Containerd(node) => node.restart().await?,
        }
        Ok(())
    }

    /// Runs a command in a pod's netns (`nsenter --net`).
    pub fn in_pod(&self, pod: &TestPod, program: &str, args: &[&str]) -> Result<String> {
        let net = format!("--net={}", pod.netns_path.display());
        let mut full = vec![net.as_str(), program];
        full.extend_from_slice(args);
        run("nsenter", &full)
    }

    /// `ip -j -d addr show dev <if_name>` on the node, parsed.
    pub fn node_link(&self, if_name: &str) -> Result<serde_json::Value> {
        let out = self.ip(&["-j", "-d", "addr", "show", "dev", if_name])?;
        let mut links: Vec<serde_json::Value> = serde_json::from_str(&out)?;
        links
            .pop()
            .ok_or_else(|| anyhow!("no {if_name} on the node"))
    }

    /// Waits (bounded) until claim `name`'s first netclaim device has a `Ready` condition
    /// with `reason`, and returns that condition (as the API server holds it).
    pub async fn wait_for_ready_reason(
        &self,
        name: &str,
        reason: &str,
    ) -> Result<serde_json::Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let claim = self.claim(name).await?;
            let status = serde_json::to_value(claim.status)?;
            let condition = status["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|device| device["driver"] == DRIVER)
                .flat_map(|device| device["conditions"].as_array().cloned().unwrap_or_default())
                .find(|condition| condition["type"] == "Ready");
            if let Some(condition) = condition.filter(|c| c["reason"] == reason) {
                return Ok(condition);
            }
            if Instant::now() > deadline {
                bail!(
                    "claim {name} never got Ready reason {reason}; its status: {status}; driver log:\n{}",
                    self.driver_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The Events (`events.k8s.io/v1`) about claim `name`, as `(type, reason, note)`.
    pub async fn claim_events(&self, name: &str) -> Result<Vec<(String, String, String)>> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.api.client(), "default");
        Ok(api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|event| event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|event| {
                (
                    event.type_.unwrap_or_default(),
                    event.reason.unwrap_or_default(),
                    event.note.unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Waits (bounded) for an Event with `reason` about claim `name`, and returns its type
    /// and note.
    pub async fn wait_for_claim_event(&self, name: &str, reason: &str) -> Result<(String, String)> {
        let deadline = Instant::now() + WAIT;
        loop {
            let events = self.claim_events(name).await?;
            if let Some((kind, _, note)) = events.iter().find(|(_, r, _)| r == reason) {
                return Ok((kind.clone(), note.clone()));
            }
            if Instant::now() > deadline {
                bail!(
                    "no {reason} Event about claim {name}; its Events: {events:?}; driver log:\n{}",
                    self.driver_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The claim as the API server stand-in holds it now.
    pub async fn claim(&self, name: &str) -> Result<ResourceClaim> {
        let api: Api<ResourceClaim> = Api::namespaced(self.api.client(), "default");
        Ok(api.get(name).await?)
    }

    /// Creates the Pod object `name` (namespace `default`) in the API server stand-in with
    /// `annotations`, and returns its UID, which the API server assigns as the real one
    /// does. Claims' `reservedFor` and the sandbox must name that UID for netclaim to write
    /// the pod's network-status annotation; pods the harness runs without a Pod object
    /// get none (the driver finds no pod and drops the write).
    pub async fn create_pod_object(
        &self,
        name: &str,
        annotations: serde_json::Value,
    ) -> Result<String> {
        let api: Api<Pod> = Api::namespaced(self.api.client(), "default");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"nodeName": self.name, "containers": [{"name": "app", "image": "app"}]}
        }))?;
        let created = api.create(&PostParams::default(), &pod).await?;
        created
            .metadata
            .uid
            .ok_or_else(|| anyhow!("pod {name} was created without a uid"))
    }

    /// Polls the annotation `key` of pod `name` (namespace `default`) until `condition`
    /// holds for its value (`None`: not set), and returns that value.
    pub async fn wait_for_pod_annotation(
        &self,
        name: &str,
        key: &str,
        what: &str,
        condition: impl Fn(Option<&str>) -> bool,
    ) -> Result<Option<String>> {
        let api: Api<Pod> = Api::namespaced(self.api.client(), "default");
        let deadline = Instant::now() + WAIT;
        loop {
            let pod = api.get(name).await?;
            let value = pod
                .metadata
                .annotations
                .and_then(|mut annotations| annotations.remove(key));
            if condition(value.as_deref()) {
                return Ok(value);
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting until {what}; {key} is {value:?}; driver log:\n{}",
                    self.driver_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs `spec` through CRI as the kubelet would; a refused sandbox is `Ok(Err(message))`
/// with CRI's message (which carries the NRI plugin's).
async fn run_cri_pod(
    node: &ContainerdNode,
    spec: &PodSpec,
) -> Result<std::result::Result<TestPod, String>> {
    let mut cri = node.cri().await?;
    let sandbox_id = match cri.run_pod(spec).await {
        Ok(id) => id,
        Err(e) => return Ok(Err(format!("{e:#}"))),
    };
    let netns_path = match cri.pod_netns_path(&sandbox_id).await? {
        Some(path) => path,
        // A host-network pod: it lives in the node's netns.
        None if spec.host_network => node.netns_path().to_owned(),
        None => bail!("sandbox {sandbox_id} has no netns"),
    };
    Ok(Ok(TestPod {
        name: spec.name.clone(),
        namespace: spec.namespace.clone(),
        uid: spec.uid.clone(),
        sandbox_id,
        netns_path,
        own_netns: None,
    }))
}

/// The sandbox id the stand-in runtime gives attempt `attempt` of pod `name`.
fn stand_in_sandbox_id(name: &str, attempt: u32) -> String {
    match attempt {
        0 => format!("sandbox-{name}-{}", std::process::id()),
        n => format!("sandbox-{name}-{n}-{}", std::process::id()),
    }
}

fn stand_in_pod(sandbox_id: &str, name: &str, uid: &str) -> PodSandbox {
    pod_sandbox(sandbox_id, name, "default", uid, None)
}

fn forget_pod(rt: &RuntimeStandIn, sandbox_id: &str) {
    rt.set_pods(
        rt.pods()
            .into_iter()
            .filter(|p| p.id != sandbox_id)
            .collect(),
    );
}

fn hook_message(error: &HookError) -> String {
    error
        .plugin_message()
        .map(str::to_owned)
        .unwrap_or_else(|| error.to_string())
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Err(e) = self.stop_driver() {
            eprintln!("stopping netclaim: {e:#}");
        }
        if self.state_mounted
            && let Err(e) = run("umount", &[&self.state_dir().display().to_string()])
        {
            eprintln!("unmounting the state tmpfs: {e:#}");
        }
        let sysfs = self.dir.path().join("sys");
        if sysfs.join("class").exists()
            && let Err(e) = run("umount", &[&sysfs.display().to_string()])
        {
            eprintln!("unmounting the node's sysfs: {e:#}");
        }
    }
}

/// Helpers the node-level tests share: building claims and comparing what `ip -j` shows.
pub mod checks {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::{NicClaim, TestNode, TestPod};

    /// A claim `name` of the NIC `if_name`, request `nic`, with optional opaque parameters.
    pub fn nic(name: &str, if_name: &str, config: Option<Value>) -> NicClaim {
        NicClaim {
            name: name.into(),
            request: "nic".into(),
            if_name: if_name.into(),
            config,
            class_config: None,
        }
    }

    /// A claim `name` of `if_name` in CNI mode: the DeviceClass (`class_config`) holds the
    /// network `cni` and lets claims pick the interface name, and the claim names it
    /// `net1`, as `examples/claims/cni-macvlan.yaml` does.
    pub fn cni_nic(name: &str, if_name: &str, mut cni: Value) -> NicClaim {
        cni["claimMayOverride"] = json!(["interfaceName"]);
        NicClaim {
            name: name.into(),
            request: "nic".into(),
            if_name: if_name.into(),
            config: Some(config(json!({"name": "net1"}))),
            class_config: Some(json!({
                "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "cni": cni
            })),
        }
    }

    /// A `NetworkConfig` with the given `interface` section.
    pub fn config(interface: Value) -> Value {
        json!({"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "interface": interface})
    }

    /// What "exactly as before" compares: name, MTU, MAC, up state, addresses.
    pub fn host_view(link: &Value) -> Value {
        let mut addrs: Vec<String> = link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["scope"] != "link")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
            .collect();
        addrs.sort();
        json!({
            "ifname": link["ifname"], "mtu": link["mtu"], "address": link["address"],
            "up": link["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP")),
            "addrs": addrs,
        })
    }

    /// `ip -j -d addr show dev <if_name>` inside the pod, parsed.
    pub fn pod_link(node: &TestNode, pod: &TestPod, if_name: &str) -> Value {
        let out = node
            .in_pod(pod, "ip", &["-j", "-d", "addr", "show", "dev", if_name])
            .unwrap();
        let mut links: Vec<Value> = serde_json::from_str(&out).unwrap();
        links.pop().unwrap()
    }

    /// Every interface in the pod's netns but `lo`, by name: `{"ips": [...], "mac": ...}`
    /// with the addresses (no prefix length; link-local ones left out, as network-status
    /// lists none) sorted, from `ip -j addr`.
    pub fn pod_interfaces(node: &TestNode, pod: &TestPod) -> BTreeMap<String, Value> {
        let out = node.in_pod(pod, "ip", &["-j", "addr"]).unwrap();
        let links: Vec<Value> = serde_json::from_str(&out).unwrap();
        links
            .iter()
            .filter(|link| link["ifname"] != "lo")
            .map(|link| {
                let mut ips: Vec<String> = link["addr_info"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| a["scope"] != "link")
                    .filter_map(|a| a["local"].as_str().map(str::to_owned))
                    .collect();
                ips.sort();
                let mac = link["address"].as_str().unwrap_or("").to_lowercase();
                let name = link["ifname"].as_str().unwrap_or("").to_owned();
                (name, json!({"ips": ips, "mac": mac}))
            })
            .collect()
    }

    /// The entries of a `k8s.v1.cni.cncf.io/network-status` value whose network `name`
    /// satisfies `select`, in the shape of [`pod_interfaces`], by interface name.
    pub fn network_status_interfaces(
        annotation: &str,
        select: impl Fn(&str) -> bool,
    ) -> BTreeMap<String, Value> {
        let entries: Vec<Value> = serde_json::from_str(annotation).unwrap();
        entries
            .iter()
            .filter(|entry| select(entry["name"].as_str().unwrap_or("")))
            .map(|entry| {
                let mut ips: Vec<String> = entry["ips"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|ip| ip.as_str().map(str::to_owned))
                    .collect();
                ips.sort();
                let mac = entry["mac"].as_str().unwrap_or("").to_lowercase();
                let name = entry["interface"].as_str().unwrap_or("").to_owned();
                (name, json!({"ips": ips, "mac": mac}))
            })
            .collect()
    }

    /// Whether `link` (from `ip -j addr`) carries `cidr`.
    pub fn has_addr(link: &Value, cidr: &str) -> bool {
        link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]) == cidr)
    }
}

/// A random RFC 4122 version-4 UID, as the API server and scheduler make them.
fn random_uid() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}
