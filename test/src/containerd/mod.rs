//! A real containerd "node" for end-to-end tests: containerd 1.7 (Debian trixie's 1.7.24) or
//! 2.x (Debian sid's 2.1.9) with NRI, runc and the CNI plugins, running inside a network
//! namespace of its own.
//!
//! [`ContainerdNode::start`] creates the node's netns and a private directory, writes
//! containerd's config and a CNI conflist there, starts containerd under
//! `nsenter --net=<netns>` and imports a locally built pause image as the CRI sandbox image.
//! Tests then drive pods through the CRI ([`CriClient`]) and connect NRI plugins to
//! [`ContainerdNode::nri_socket`].
//!
//! # Which containerd
//! [`ContainerdOptions::major`], else [`MAJOR_ENV`] (`NETCLAIM_CONTAINERD_MAJOR`: `1`, the
//! default, or `2`). Every node prints the version it runs and the binary, so each test's
//! output says which containerd it ran on. `hack/test.sh` runs every test file that starts
//! a node once per major. What differs between the majors, and how the harness deals with
//! it:
//! - the install: `/opt/netclaim-deps/containerd` and `/opt/netclaim-deps/containerd2`, each
//!   with its own shims first on containerd's `PATH`;
//! - the config: version 2 for 1.7, version 3 for 2.x, NRI and CDI set explicitly (their
//!   defaults differ); see the `config` module;
//! - the version string, which CRI `Version` and NRI `Configure` report exactly as
//!   `containerd --version` prints it: `1.7.24~ds1` and `2.1.9+unknown`.
//!
//! The same on 1.7.24 and 2.1.9 (each checked by the tests in
//! `test/tests/containerd_node.rs`): pod events reach plugins as `StateChange` (2.1.9 does
//! not call the dedicated `RunPodSandbox` RPCs); shims listen under [`SHIM_SOCKET_DIR`];
//! after a containerd restart, pods that ran before it get no NRI STOP or REMOVE, while a
//! re-registered plugin finds them in `Synchronize`.
//!
//! # NRI plugins that fail or hang (both majors alike)
//! Checked by `nri_plugin_errors_fail_the_sandbox_and_a_stuck_plugin_is_disconnected`, with
//! `plugin_request_timeout = "2s"`:
//! - A plugin answering RUN (`StateChange` event 1) with an error status fails CRI
//!   RunPodSandbox with the plugin's message inside containerd's:
//!   `NRI RunPodSandbox failed: rpc error: code = Unknown desc = <message>`. Before CRI
//!   answers, containerd sends that plugin STOP and then REMOVE for the sandbox, both
//!   carrying RUN's netns path and both while that netns still exists (unlike an ordinary
//!   STOP, whose pod has no namespaces); then it removes the netns and forgets the sandbox
//!   (CRI lists nothing). The log says, at level error:
//!   `msg="RunPodSandbox for &PodSandboxMetadata{Name:refused,Uid:…,Namespace:default,Attempt:0,} failed, error" error="NRI RunPodSandbox failed: rpc error: code = Unknown desc = netclaim-test refuses refused"`.
//! - A plugin that does not answer RUN within `plugin_request_timeout` is disconnected (its
//!   socket is closed), and the sandbox starts anyway: CRI RunPodSandbox succeeds, after the
//!   2 s timeout, with a Ready sandbox and its netns. No retry or error reaches the kubelet.
//!   On reconnection the plugin gets the pod, netns path included, in `Synchronize`, and
//!   later its STOP and REMOVE. The log says, in this order:
//!   `level=error msg="closing plugin 10-netclaim-failures, failed to handle event 1: context deadline exceeded"`,
//!   `level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:stalled,…} returns sandbox id \"…\""`,
//!   and on reconnection `level=info msg="Synchronizing NRI (plugin) with current runtime state"`.
//! - netclaim's plugin library (`netclaim::nri`) never stays silent: it answers a handler
//!   still running near the deadline with `DeadlineExceeded` (code 4). containerd treats
//!   that as the first case: CRI RunPodSandbox fails (`NRI RunPodSandbox failed: rpc error:
//!   code = DeadlineExceeded ...`), STOP and REMOVE follow, and the plugin stays connected
//!   (`plugin_library_on_a_real_containerd` in `test/tests/nri.rs`).
//!
//! # Guarantees
//! - Nothing is shared with the machine's own containerd (if any): root, state, sockets, opt,
//!   runc's state root, CNI config and IPAM data, CDI specs all live in the node's
//!   directory, and pods' netns files live under its state dir.
//! - [`ContainerdNode::stop`] (or, best effort, `Drop`) stops and removes the pods, kills
//!   containerd, its shims and their containers, unmounts what the node mounted, and deletes
//!   the netns and the directory.
//!
//! # Assumptions
//! - Root, and the parts `hack/install-deps.sh` installs: containerd of the chosen major under
//!   [`DEPS_PREFIX`], runc at [`RUNC`], CNI plugins in [`CNI_BIN_DIR`], `gcc` with a static
//!   libc, `ip` and `nsenter`. [`ContainerdNode::available`] checks them; their absence
//!   fails [`ContainerdNode::start`] with a message naming `hack/install-deps.sh` (tests
//!   never skip).
//! - containerd runs under `nsenter --net`, not `ip netns exec`: the latter remounts `/sys`,
//!   which hides the cgroup mounts from runc.
//!
//! # Errors
//! Start-up failures carry the tail of containerd's log.

mod config;
pub mod cri;
mod image;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

pub use config::NodePaths;
pub use cri::{CriClient, PodSpec};
pub use image::{build_pause_image, oci_layout_tar};

/// Where `hack/install-deps.sh` unpacks its private packages (one directory each).
pub const DEPS_PREFIX: &str = "/opt/netclaim-deps";
/// Chooses the containerd major of every node a test process starts: `1` (1.7, the
/// default) or `2` (2.x). See [`ContainerdMajor::from_env`].
pub const MAJOR_ENV: &str = "NETCLAIM_CONTAINERD_MAJOR";
/// Debian bookworm's runc, which the runc runtime is pointed at (`BinaryName`).
pub const RUNC: &str = "/usr/sbin/runc";
/// Debian's `containernetworking-plugins`.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The name of the locally built pod-sandbox image (the CRI `sandbox_image`).
pub const PAUSE_IMAGE: &str = "netclaim.test/pause:1";
/// The default pod subnet of the node's CNI bridge (a documentation range).
pub const POD_SUBNET: &str = "203.0.113.0/24";
/// The containerd namespace CRI uses.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// containerd (1.7 and 2.x) puts every shim's socket here, not under its configured state
/// dir.
pub const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// The containerd major a node runs; each has its own private install.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerdMajor {
    /// containerd 1.7 (Debian trixie's 1.7.24), in `/opt/netclaim-deps/containerd`.
    V1,
    /// containerd 2.x (Debian sid's 2.1.9), in `/opt/netclaim-deps/containerd2`.
    V2,
}

impl ContainerdMajor {
    /// Both majors, oldest first.
    pub const ALL: [ContainerdMajor; 2] = [ContainerdMajor::V1, ContainerdMajor::V2];

    /// The major [`MAJOR_ENV`] chooses: unset or `1` is [`ContainerdMajor::V1`], `2` is
    /// [`ContainerdMajor::V2`].
    ///
    /// # Errors
    /// Any other value, naming the variable and what it accepts.
    pub fn from_env() -> Result<Self> {
        match std::env::var(MAJOR_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(ContainerdMajor::V1),
            Ok(value) => value.trim().parse(),
            Err(e) => bail!("{MAJOR_ENV}: {e}"),
        }
    }

    /// `1` or `2`.
    pub fn number(self) -> u32 {
        match self {
            ContainerdMajor::V1 => 1,
            ContainerdMajor::V2 => 2,
        }
    }

    /// Where `hack/install-deps.sh` unpacks this major (binaries in `usr/bin`).
    pub fn prefix(self) -> PathBuf {
        Path::new(DEPS_PREFIX).join(match self {
            ContainerdMajor::V1 => "containerd",
            ContainerdMajor::V2 => "containerd2",
        })
    }

    /// The containerd binary of this major.
    pub fn containerd_bin(self) -> PathBuf {
        self.prefix().join("usr/bin/containerd")
    }

    /// The `ctr` binary that comes with it.
    pub fn ctr_bin(self) -> PathBuf {
        self.prefix().join("usr/bin/ctr")
    }

    /// The version the installed binary reports (`containerd --version`'s third field, e.g.
    /// `1.7.24~ds1` or `2.1.9+unknown`: what CRI's Version and NRI's Configure report too).
    ///
    /// # Errors
    /// The binary is missing, does not run, or is of another major; each message names
    /// `hack/install-deps.sh`.
    pub fn installed_version(self) -> Result<String> {
        let bin = self.containerd_bin();
        if !bin.is_file() {
            bail!(
                "containerd {self} is not installed: {} is missing (run hack/install-deps.sh as root)",
                bin.display()
            );
        }
        let out = run(&bin, &["--version"]).with_context(|| {
            format!("containerd {self} does not run (run hack/install-deps.sh as root)")
        })?;
        let version = out
            .split_whitespace()
            .nth(2)
            .ok_or_else(|| anyhow!("unexpected `{} --version` output: {out}", bin.display()))?;
        if !version.starts_with(&format!("{}.", self.number())) {
            bail!(
                "{} is containerd {version}, not {self} (run hack/install-deps.sh as root)",
                bin.display()
            );
        }
        Ok(version.to_string())
    }
}

impl std::fmt::Display for ContainerdMajor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerdMajor::V1 => f.write_str("1.7"),
            ContainerdMajor::V2 => f.write_str("2.x"),
        }
    }
}

impl std::str::FromStr for ContainerdMajor {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "1" => Ok(ContainerdMajor::V1),
            "2" => Ok(ContainerdMajor::V2),
            other => {
                bail!("{MAJOR_ENV}={other:?}: expected 1 (containerd 1.7) or 2 (containerd 2.x)")
            }
        }
    }
}

/// How to start a [`ContainerdNode`].
#[derive(Debug, Clone)]
pub struct ContainerdOptions {
    /// Which containerd; `None` takes [`ContainerdMajor::from_env`].
    pub major: Option<ContainerdMajor>,
    /// The IPv4 subnet host-local hands pod addresses from.
    pub pod_subnet: String,
    /// Whether containerd's NRI plugin is enabled.
    pub nri: bool,
    /// How long to wait for containerd to answer (and CRI to be ready) after a (re)start.
    pub ready_timeout: Duration,
}

impl Default for ContainerdOptions {
    fn default() -> Self {
        Self {
            major: None,
            pod_subnet: POD_SUBNET.to_string(),
            nri: true,
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// A containerd node: its netns, its private directory and its containerd process.
#[derive(Debug)]
pub struct ContainerdNode {
    paths: NodePaths,
    dir: Option<tempfile::TempDir>,
    netns_name: String,
    netns_path: PathBuf,
    options: ContainerdOptions,
    major: ContainerdMajor,
    version: String,
    containerd: Option<Child>,
    torn_down: bool,
}

static NODE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Prefix of the nodes' directories under /tmp.
const DIR_PREFIX: &str = "netclaim-ctrd-";
/// In a node's directory: the owning test process's pid and the node's netns name.
const OWNER_FILE: &str = "owner";
/// In a node's directory: containerd's pid.
const CONTAINERD_PID_FILE: &str = "containerd.pid";

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Runs `program args`, failing with its stderr when it exits non-zero; returns stdout.
fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Result<String> {
    let program = program.as_ref();
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", program.to_string_lossy()))?;
    if !output.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            program.to_string_lossy(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `program args` inside the network namespace at `netns` (`nsenter --net`), returning
/// its stdout. For looking into a pod's netns, e.g. `ip -j addr show dev eth0`.
pub fn run_in_netns(netns: &Path, program: &str, args: &[&str]) -> Result<String> {
    let net = format!("--net={}", netns.display());
    let mut all = vec![net.as_str(), "--", program];
    all.extend_from_slice(args);
    run("nsenter", &all)
}

impl ContainerdNode {
    /// Whether everything a node of `major` needs is here, returning the installed
    /// containerd's version; `Err` says what is missing and names `hack/install-deps.sh`.
    pub fn available(major: ContainerdMajor) -> Result<String> {
        if !nix::unistd::geteuid().is_root() {
            bail!("containerd nodes need root");
        }
        let version = major.installed_version()?;
        let files = [
            major.ctr_bin(),
            PathBuf::from(RUNC),
            Path::new(CNI_BIN_DIR).join("bridge"),
            Path::new(CNI_BIN_DIR).join("host-local"),
            Path::new(CNI_BIN_DIR).join("loopback"),
        ];
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            bail!(
                "{} is missing (run hack/install-deps.sh as root)",
                missing.display()
            );
        }
        if let Some(missing) = ["gcc", "ip", "nsenter"].iter().find(|p| !on_path(p)) {
            bail!("`{missing}` is not on PATH (run hack/install-deps.sh as root)");
        }
        Ok(version)
    }

    /// Starts a node: netns, config, containerd, pause image. Returns once CRI is ready
    /// (runtime and network ready, sandbox image present).
    ///
    /// Prints which containerd the node runs (version and binary): every test on a node
    /// says so in its output.
    ///
    /// # Errors
    /// A missing or wrong containerd (naming `hack/install-deps.sh`), an invalid
    /// [`MAJOR_ENV`], or a failed start (with the tail of containerd's log).
    pub async fn start(options: ContainerdOptions) -> Result<Self> {
        let major = match options.major {
            Some(major) => major,
            None => ContainerdMajor::from_env()?,
        };
        let version = Self::available(major).map_err(|reason| {
            anyhow!(
                "cannot start a containerd {major} node ({MAJOR_ENV}={}): {reason:#}",
                major.number()
            )
        })?;
        for problem in Self::sweep_stale() {
            eprintln!("containerd node: sweeping a stale node: {problem}");
        }
        // Under /tmp so the sockets' paths stay well below sun_path's 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in("/tmp")
            .context("creating the node's directory")?;
        let paths = NodePaths::new(dir.path());
        for d in [
            &paths.cni_conf_dir,
            &paths.ipam_dir,
            &paths.pod_logs,
            &paths.build,
            &paths.cdi_dir,
        ] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        fs::write(
            &paths.config,
            config::containerd_config(&paths, PAUSE_IMAGE, options.nri, major),
        )
        .context("writing config.toml")?;
        fs::write(
            paths.cni_conf_dir.join("10-netclaim-test.conflist"),
            config::cni_conflist(&paths, &options.pod_subnet),
        )
        .context("writing the CNI conflist")?;

        let netns_name = format!(
            "nc-node-{}-{}",
            std::process::id(),
            NODE_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // Written before anything else exists, so `sweep_stale` can find all of it.
        fs::write(
            paths.dir.join(OWNER_FILE),
            format!("{}\n{netns_name}\n{}\n", std::process::id(), major.number()),
        )
        .context("writing the owner file")?;
        run("ip", &["netns", "add", &netns_name])?;
        // From here on, Drop cleans up whatever exists.
        let mut node = Self {
            paths,
            dir: Some(dir),
            netns_path: Path::new("/run/netns").join(&netns_name),
            netns_name,
            options,
            major,
            version,
            containerd: None,
            torn_down: false,
        };
        println!(
            "containerd node {}: containerd {} ({MAJOR_ENV}={}, {})",
            node.netns_name,
            node.version,
            major.number(),
            major.containerd_bin().display()
        );
        // CRI's stream server listens on 127.0.0.1 inside the node.
        run("ip", &["-n", &node.netns_name, "link", "set", "lo", "up"])?;

        let image = build_pause_image(&node.paths.build, PAUSE_IMAGE)?;
        node.spawn_containerd()?;
        node.wait_ready(false).await?;
        let sock = node.paths.grpc_socket.display().to_string();
        let tar = image.display().to_string();
        run(
            major.ctr_bin(),
            &[
                "--address",
                &sock,
                "--namespace",
                CRI_NAMESPACE,
                "images",
                "import",
                &tar,
            ],
        )
        .context("importing the pause image")?;
        // CRI learns of the image from containerd's events, asynchronously.
        node.wait_ready(true).await?;
        Ok(node)
    }

    /// The containerd major this node runs.
    pub fn major(&self) -> ContainerdMajor {
        self.major
    }

    /// The version of this node's containerd, as it reports itself to CRI and NRI clients
    /// (`1.7.24~ds1`, `2.1.9+unknown`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The node's network namespace name (under `/run/netns`).
    pub fn netns_name(&self) -> &str {
        &self.netns_name
    }

    /// The node's network namespace file.
    pub fn netns_path(&self) -> &Path {
        &self.netns_path
    }

    /// The NRI socket plugins connect to.
    pub fn nri_socket(&self) -> &Path {
        &self.paths.nri_socket
    }

    /// containerd's gRPC socket (CRI included).
    pub fn grpc_socket(&self) -> &Path {
        &self.paths.grpc_socket
    }

    /// All of the node's paths.
    pub fn paths(&self) -> &NodePaths {
        &self.paths
    }

    /// containerd's pid, while it runs.
    pub fn containerd_pid(&self) -> Option<u32> {
        self.containerd.as_ref().map(Child::id)
    }

    /// A new CRI client on this node's containerd.
    pub async fn cri(&self) -> Result<CriClient> {
        CriClient::connect(
            &self.paths.grpc_socket,
            &self.paths.pod_logs,
            &self.cgroup_parent(),
        )
        .await
    }

    /// The cgroup parent of this node's pods (in every hierarchy), removed at teardown.
    pub fn cgroup_parent(&self) -> String {
        format!("/netclaim-{}", self.netns_name)
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.paths.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The lines of containerd's log that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        fs::read_to_string(&self.paths.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// The configuration containerd runs with, every default filled in, as it prints it
    /// (`containerd --config <node config> config dump`; 2.x prints version 3).
    pub fn config_dump(&self) -> Result<String> {
        let config = self.paths.config.display().to_string();
        run(
            self.major.containerd_bin(),
            &["--config", &config, "config", "dump"],
        )
    }

    /// Stops containerd and starts it again on the same root and state (pods and their shims
    /// keep running), then waits until CRI is ready again.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop_containerd()?;
        self.spawn_containerd()?;
        self.wait_ready(true).await
    }

    /// Stops the containerd process (SIGTERM), leaving pods, shims and state in place: the
    /// node without a runtime until [`ContainerdNode::start_daemon`].
    ///
    /// # Errors
    /// containerd could not be waited for.
    pub fn stop_daemon(&mut self) -> Result<()> {
        self.stop_containerd()
    }

    /// Starts containerd again after [`ContainerdNode::stop_daemon`] and waits until CRI is
    /// ready.
    ///
    /// # Errors
    /// A failed start, with the tail of containerd's log.
    pub async fn start_daemon(&mut self) -> Result<()> {
        if self.containerd.is_some() {
            bail!("containerd is already running");
        }
        self.spawn_containerd()?;
        self.wait_ready(true).await
    }

    /// Stops and removes every pod, then tears the node down; errors name what was left.
    pub async fn stop(mut self) -> Result<()> {
        let mut problems = Vec::new();
        if self.containerd.is_some() {
            match self.remove_all_pods().await {
                Ok(()) => {}
                Err(e) => problems.push(format!("removing pods: {e:#}")),
            }
        }
        problems.extend(self.teardown());
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("containerd node teardown: {}", problems.join("; "))
        }
    }

    /// Tears down nodes left by test processes that died without cleaning up (killed by a
    /// timeout, say): their directories under /tmp name an owner pid that no longer runs.
    /// Nodes of live processes are left alone. Returns what could not be cleaned.
    pub fn sweep_stale() -> Vec<String> {
        let Ok(entries) = fs::read_dir("/tmp") else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            let is_node = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(DIR_PREFIX));
            let Ok(owner) = fs::read_to_string(dir.join(OWNER_FILE)) else {
                continue;
            };
            let mut lines = owner.lines();
            let (Some(pid), Some(netns_name)) = (lines.next(), lines.next()) else {
                continue;
            };
            // Nodes of older harness versions did not record their major.
            let major = lines
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(ContainerdMajor::V1);
            if !is_node || Path::new("/proc").join(pid).exists() {
                continue;
            }
            let paths = NodePaths::new(&dir);
            // Kill the orphaned containerd, checking the pid is still that containerd.
            if let Ok(pid) = fs::read_to_string(dir.join(CONTAINERD_PID_FILE))
                && let Ok(pid) = pid.trim().parse::<i32>()
                && let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline"))
                && cmdline
                    .split(|b| *b == 0)
                    .any(|arg| arg == paths.config.as_os_str().as_encoded_bytes())
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                let deadline = Instant::now() + Duration::from_secs(5);
                while Path::new("/proc").join(pid.to_string()).exists() && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let mut stale = Self {
                netns_path: Path::new("/run/netns").join(netns_name),
                netns_name: netns_name.to_string(),
                paths,
                dir: None,
                options: ContainerdOptions::default(),
                major,
                version: String::new(),
                containerd: None,
                torn_down: false,
            };
            problems.extend(stale.teardown());
            if let Err(e) = fs::remove_dir_all(&dir) {
                problems.push(format!("removing {}: {e}", dir.display()));
            }
        }
        problems
    }

    async fn remove_all_pods(&self) -> Result<()> {
        let mut cri = self.cri().await?;
        for pod in cri.list_pods().await? {
            cri.stop_pod(&pod.id).await?;
            cri.remove_pod(&pod.id).await?;
        }
        Ok(())
    }

    fn spawn_containerd(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths.log)
            .context("opening containerd's log")?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns_path.display()))
            .arg("--")
            .arg(self.major.containerd_bin())
            .arg("--config")
            .arg(&self.paths.config)
            // containerd finds its shims on PATH: this major's own first.
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.major.prefix().join("usr/bin").display()
                ),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file")?)
            .stderr(log)
            .spawn()
            .context("starting containerd under nsenter")?;
        fs::write(
            self.paths.dir.join(CONTAINERD_PID_FILE),
            child.id().to_string(),
        )
        .context("writing containerd's pid file")?;
        self.containerd = Some(child);
        Ok(())
    }

    /// Polls until containerd answers `Version` on its socket and, with `cri_ready`, until
    /// CRI reports RuntimeReady and NetworkReady and has the sandbox image.
    async fn wait_ready(&mut self, cri_ready: bool) -> Result<()> {
        let deadline = Instant::now() + self.options.ready_timeout;
        let mut last_error = anyhow!("containerd's socket did not appear");
        loop {
            if let Some(child) = self.containerd.as_mut()
                && let Some(status) = child.try_wait().context("checking containerd")?
            {
                self.containerd = None;
                bail!(
                    "containerd exited ({status}) during start; log:\n{}",
                    self.log_tail(20)
                );
            }
            if self.paths.grpc_socket.exists() {
                match tokio::time::timeout(Duration::from_secs(2), self.probe(cri_ready)).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(e)) => last_error = e,
                    Err(_) => last_error = anyhow!("containerd did not answer within 2s"),
                }
            }
            if Instant::now() > deadline {
                return Err(last_error.context(format!(
                    "containerd not ready after {:?}; log:\n{}",
                    self.options.ready_timeout,
                    self.log_tail(20)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn probe(&self, cri_ready: bool) -> Result<()> {
        let mut cri = self.cri().await?;
        cri.version().await?;
        if !cri_ready {
            return Ok(());
        }
        let conditions = cri.conditions().await?;
        for wanted in ["RuntimeReady", "NetworkReady"] {
            let ready = conditions.iter().any(|c| c.r#type == wanted && c.status);
            if !ready {
                bail!("CRI condition {wanted} is not true: {conditions:?}");
            }
        }
        if !cri.has_image(PAUSE_IMAGE).await? {
            bail!("CRI does not see {PAUSE_IMAGE} yet");
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 10 s; waits for the exit.
    fn stop_containerd(&mut self) -> Result<()> {
        let Some(mut child) = self.containerd.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).context("containerd pid")?);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child
                .try_wait()
                .context("waiting for containerd")?
                .is_some()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                child.wait().context("waiting for killed containerd")?;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The IDs of the tasks (pod sandboxes) containerd runs shims for, from their bundles.
    fn shim_ids(&self) -> Vec<String> {
        let bundles = self
            .paths
            .state
            .join("io.containerd.runtime.v2.task")
            .join(CRI_NAMESPACE);
        fs::read_dir(bundles)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Synchronous, best-effort teardown; returns what could not be cleaned.
    fn teardown(&mut self) -> Vec<String> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        let mut problems = Vec::new();
        if let Err(e) = self.stop_containerd() {
            problems.push(format!("stopping containerd: {e:#}"));
        }
        // Containers outlive containerd (their shims keep them): kill them through runc.
        let runc_root = self.paths.runc_root.join(CRI_NAMESPACE);
        if runc_root.is_dir() {
            let root = runc_root.display().to_string();
            match run(RUNC, &["--root", &root, "list", "-q"]) {
                Ok(ids) => {
                    for id in ids.lines().filter(|l| !l.is_empty()) {
                        let _ = run(RUNC, &["--root", &root, "kill", id, "KILL"]);
                        if let Err(e) = run(RUNC, &["--root", &root, "delete", "-f", id]) {
                            problems.push(format!("{e:#}"));
                        }
                    }
                }
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        let shim_ids = self.shim_ids();
        if let Err(e) = kill_shims(&self.paths.grpc_socket) {
            problems.push(format!("killing shims: {e:#}"));
        }
        // A killed shim leaves its socket in containerd 1.7's fixed shim socket dir.
        for id in shim_ids {
            let socket = shim_socket(&self.paths.grpc_socket, &id);
            if socket.exists()
                && let Err(e) = fs::remove_file(&socket)
            {
                problems.push(format!("removing {}: {e}", socket.display()));
            }
        }
        if let Err(e) = remove_cgroups(&self.cgroup_parent()) {
            problems.push(format!("removing cgroups: {e:#}"));
        }
        if let Err(e) = unmount_under(&self.paths.dir) {
            problems.push(format!("unmounting: {e:#}"));
        }
        if self.netns_path.exists()
            && let Err(e) = run("ip", &["netns", "delete", &self.netns_name])
        {
            problems.push(format!("{e:#}"));
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                problems.push(format!("removing {}: {e}", path.display()));
            }
        }
        problems
    }
}

impl Drop for ContainerdNode {
    fn drop(&mut self) {
        for problem in self.teardown() {
            eprintln!("containerd node {}: teardown: {problem}", self.netns_name);
        }
    }
}

/// The pids of containerd shims serving the containerd at `socket` (found by their
/// `-address <socket>` argument).
fn shim_pids(socket: &Path) -> Result<Vec<i32>> {
    let socket = socket.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // Processes may exit while we look: a vanished cmdline is not an error.
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        let is_shim = args
            .next()
            .is_some_and(|argv0| argv0.windows(15).any(|w| w == b"containerd-shim"));
        if is_shim && args.any(|a| a == socket) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// SIGKILLs the shims of the containerd at `socket` and waits (5 s at most) until they are
/// gone.
fn kill_shims(socket: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = shim_pids(socket)?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("shims {pids:?} still alive");
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the cgroup `parent` (and what runc left below it) from every hierarchy mounted
/// under /sys/fs/cgroup (v1 controllers, the named systemd one, v2). The node's processes
/// are gone by now, so the directories are empty.
fn remove_cgroups(parent: &str) -> Result<()> {
    let relative = parent.trim_start_matches('/');
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    for entry in fs::read_dir("/sys/fs/cgroup").context("reading /sys/fs/cgroup")? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            roots.push(entry.path());
        }
    }
    for root in roots {
        let top = root.join(relative);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = vec![top.clone()];
        let mut i = 0;
        while i < dirs.len() {
            for entry in fs::read_dir(&dirs[i])? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    dirs.push(entry.path());
                }
            }
            i += 1;
        }
        // Children before parents; cgroupfs directories go with rmdir, not unlink.
        for dir in dirs.iter().rev() {
            fs::remove_dir(dir).with_context(|| format!("rmdir {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Where a containerd 1.7 shim listens: `/run/containerd/s/<sha256 of
/// "<containerd address>/<namespace>/<id>">`, whatever containerd's own state dir is.
pub fn shim_socket(containerd_socket: &Path, id: &str) -> PathBuf {
    let key = containerd_socket.join(CRI_NAMESPACE).join(id);
    let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
    Path::new(SHIM_SOCKET_DIR).join(hex::encode(digest))
}

/// Mount points under `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    mounts.dedup();
    Ok(mounts)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Some(code) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything mounted under `dir` (pods' netns files, rootfs overlays).
fn unmount_under(dir: &Path) -> Result<()> {
    for mount in mounts_under(dir)? {
        nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("umount {}", mount.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
