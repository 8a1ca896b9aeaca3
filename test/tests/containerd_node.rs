//! A real containerd node (containerd 1.7.24 + NRI, runc, CNI) driven through the CRI, with a
//! hand-written NRI plugin connection: the groundwork of netclaim's node e2e.
//!
//! One node serves the whole scenario (starting one costs about a second). Fails, saying
//! what to install (`hack/install-deps.sh`), when containerd or another part of the node
//! is missing.
//!
//! Run: `cargo test -p netclaim-test --test containerd_node -- --nocapture` (as root); the
//! CRI call times are printed (`NETCLAIM_CRI_CYCLES=20` for more samples).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use netclaim_test::containerd::cri::proto::PodSandboxState;
use netclaim_test::containerd::{
    ContainerdNode, ContainerdOptions, CriClient, PodSpec, mounts_under, run_in_netns, shim_socket,
};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

const NRI_TIMEOUT: Duration = Duration::from_secs(10);

// ---- A minimal NRI plugin, by hand: mux frames, ttrpc frames, the few messages needed ----

#[derive(Clone, PartialEq, Message)]
struct TtrpcRequest {
    #[prost(string, tag = "1")]
    service: String,
    #[prost(string, tag = "2")]
    method: String,
    #[prost(bytes = "vec", tag = "3")]
    payload: Vec<u8>,
    #[prost(int64, tag = "4")]
    timeout_nano: i64,
}

#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Clone, PartialEq, Message)]
struct TtrpcResponse {
    #[prost(message, optional, tag = "1")]
    status: Option<RpcStatus>,
    #[prost(bytes = "vec", tag = "2")]
    payload: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct RegisterPluginRequest {
    #[prost(string, tag = "1")]
    plugin_name: String,
    #[prost(string, tag = "2")]
    plugin_idx: String,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigureRequest {
    #[prost(string, tag = "2")]
    runtime_name: String,
    #[prost(string, tag = "3")]
    runtime_version: String,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigureResponse {
    #[prost(int32, tag = "2")]
    events: i32,
}

#[derive(Clone, PartialEq, Message)]
struct NriNamespace {
    #[prost(string, tag = "1")]
    r#type: String,
    #[prost(string, tag = "2")]
    path: String,
}

#[derive(Clone, PartialEq, Message)]
struct NriLinuxPod {
    #[prost(message, repeated, tag = "5")]
    namespaces: Vec<NriNamespace>,
}

#[derive(Clone, PartialEq, Message)]
struct NriPod {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "3")]
    uid: String,
    #[prost(string, tag = "4")]
    namespace: String,
    #[prost(message, optional, tag = "8")]
    linux: Option<NriLinuxPod>,
}

impl NriPod {
    fn netns(&self) -> Option<PathBuf> {
        self.linux
            .as_ref()?
            .namespaces
            .iter()
            .find(|ns| ns.r#type == "network" && !ns.path.is_empty())
            .map(|ns| PathBuf::from(&ns.path))
    }
}

#[derive(Clone, PartialEq, Message)]
struct SynchronizeRequest {
    #[prost(message, repeated, tag = "1")]
    pods: Vec<NriPod>,
    #[prost(bool, tag = "3")]
    more: bool,
}

#[derive(Clone, PartialEq, Message)]
struct StateChangeEvent {
    #[prost(int32, tag = "1")]
    event: i32,
    #[prost(message, optional, tag = "2")]
    pod: Option<NriPod>,
}

const RUN_POD_SANDBOX: i32 = 1;
const STOP_POD_SANDBOX: i32 = 2;
const REMOVE_POD_SANDBOX: i32 = 3;

/// What the hand-written plugin saw.
#[derive(Debug)]
enum NriSeen {
    Registered(Option<RpcStatus>),
    Configured { runtime: String, version: String },
    Synchronized(Vec<NriPod>),
    StateChange(i32, NriPod),
    Other(String),
    Closed,
}

/// Mux conns (node-facts): 1 = runtime calls plugin, 2 = plugin calls runtime.
const CONN_PLUGIN: u32 = 1;
const CONN_RUNTIME: u32 = 2;

async fn send_mux(writer: &mut OwnedWriteHalf, conn: u32, data: &[u8]) -> Result<()> {
    // The Go side reads whole mux frames into 4 KiB buffers.
    for chunk in data.chunks(4096 - 8) {
        let len = u32::try_from(chunk.len())?;
        let mut frame = Vec::with_capacity(8 + chunk.len());
        frame.extend_from_slice(&conn.to_be_bytes());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(chunk);
        writer.write_all(&frame).await?;
    }
    Ok(())
}

fn ttrpc_frame(stream_id: u32, kind: u8, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(10 + data.len());
    frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
    frame.extend_from_slice(&stream_id.to_be_bytes());
    frame.push(kind);
    frame.push(0);
    frame.extend_from_slice(data);
    frame
}

/// Takes one whole ttrpc frame (stream id, type, data) off the front of `buf`.
fn take_ttrpc(buf: &mut Vec<u8>) -> Option<(u32, u8, Vec<u8>)> {
    if buf.len() < 10 {
        return None;
    }
    let len = u32::from_be_bytes(buf[0..4].try_into().ok()?) as usize;
    if buf.len() < 10 + len {
        return None;
    }
    let stream = u32::from_be_bytes(buf[4..8].try_into().ok()?);
    let kind = buf[8];
    let data = buf[10..10 + len].to_vec();
    buf.drain(..10 + len);
    Some((stream, kind, data))
}

/// Connects to the NRI socket, registers as `plugin_name` (index `10`), answers Configure
/// (subscribing to the three pod-sandbox events), Synchronize and StateChange, and reports
/// everything it sees on the returned channel.
async fn connect_plugin(
    socket: &Path,
    plugin_name: &str,
) -> Result<mpsc::UnboundedReceiver<NriSeen>> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (mut reader, mut writer) = stream.into_split();
    let register = TtrpcRequest {
        service: "nri.pkg.api.v1alpha1.Runtime".into(),
        method: "RegisterPlugin".into(),
        payload: RegisterPluginRequest {
            plugin_name: plugin_name.into(),
            plugin_idx: "10".into(),
        }
        .encode_to_vec(),
        timeout_nano: 2_000_000_000,
    };
    send_mux(
        &mut writer,
        CONN_RUNTIME,
        &ttrpc_frame(1, 1, &register.encode_to_vec()),
    )
    .await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buffers: HashMap<u32, Vec<u8>> = HashMap::new();
        loop {
            let mut header = [0u8; 8];
            if reader.read_exact(&mut header).await.is_err() {
                let _ = tx.send(NriSeen::Closed);
                return;
            }
            let conn = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
            let mut payload = vec![0u8; len];
            if reader.read_exact(&mut payload).await.is_err() {
                let _ = tx.send(NriSeen::Closed);
                return;
            }
            let buf = buffers.entry(conn).or_default();
            buf.extend_from_slice(&payload);
            while let Some((stream_id, kind, data)) = take_ttrpc(buf) {
                match (conn, kind) {
                    (CONN_RUNTIME, 2) => {
                        let status = TtrpcResponse::decode(data.as_slice())
                            .ok()
                            .and_then(|r| r.status);
                        let _ = tx.send(NriSeen::Registered(status));
                    }
                    (CONN_PLUGIN, 1) => {
                        let Ok(request) = TtrpcRequest::decode(data.as_slice()) else {
                            let _ = tx.send(NriSeen::Other("undecodable request".into()));
                            continue;
                        };
                        let reply = match request.method.as_str() {
                            "Configure" => {
                                let c = ConfigureRequest::decode(request.payload.as_slice())
                                    .unwrap_or_default();
                                let _ = tx.send(NriSeen::Configured {
                                    runtime: c.runtime_name,
                                    version: c.runtime_version,
                                });
                                // Bit (event - 1) per subscribed event: RUN, STOP, REMOVE.
                                ConfigureResponse { events: 0x7 }.encode_to_vec()
                            }
                            "Synchronize" => {
                                let s = SynchronizeRequest::decode(request.payload.as_slice())
                                    .unwrap_or_default();
                                let _ = tx.send(NriSeen::Synchronized(s.pods));
                                Vec::new() // SynchronizeResponse: no container updates.
                            }
                            "StateChange" => {
                                let e = StateChangeEvent::decode(request.payload.as_slice())
                                    .unwrap_or_default();
                                let _ = tx
                                    .send(NriSeen::StateChange(e.event, e.pod.unwrap_or_default()));
                                Vec::new() // Empty
                            }
                            other => {
                                let _ = tx.send(NriSeen::Other(other.to_string()));
                                Vec::new()
                            }
                        };
                        let response = TtrpcResponse {
                            status: Some(RpcStatus::default()),
                            payload: reply,
                        };
                        let frame = ttrpc_frame(stream_id, 2, &response.encode_to_vec());
                        if send_mux(&mut writer, CONN_PLUGIN, &frame).await.is_err() {
                            let _ = tx.send(NriSeen::Closed);
                            return;
                        }
                    }
                    (conn, kind) => {
                        let _ = tx.send(NriSeen::Other(format!("conn {conn} frame type {kind}")));
                    }
                }
            }
        }
    });
    Ok(rx)
}

/// Waits (bounded) for the first message `pick` accepts, skipping others.
async fn expect<T>(
    rx: &mut mpsc::UnboundedReceiver<NriSeen>,
    what: &str,
    mut pick: impl FnMut(NriSeen) -> Option<T>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + NRI_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(seen)) => {
                if let NriSeen::Other(what) = &seen {
                    eprintln!("NRI plugin: unexpected {what}");
                }
                if let Some(found) = pick(seen) {
                    return Ok(found);
                }
            }
            Ok(None) => bail!("NRI plugin task ended while waiting for {what}"),
            Err(_) => bail!("no {what} within {NRI_TIMEOUT:?}"),
        }
    }
}

async fn register_and_configure(
    node: &ContainerdNode,
    name: &str,
) -> Result<(mpsc::UnboundedReceiver<NriSeen>, Vec<NriPod>)> {
    let mut rx = connect_plugin(node.nri_socket(), name).await?;
    // The RegisterPlugin reply, Configure and Synchronize come in no fixed order.
    let (mut registered, mut configured, mut synced) = (None, None, None);
    while registered.is_none() || configured.is_none() || synced.is_none() {
        let seen = expect(&mut rx, "registration", |s| match s {
            NriSeen::Registered(_) | NriSeen::Configured { .. } | NriSeen::Synchronized(_) => {
                Some(s)
            }
            _ => None,
        })
        .await?;
        match seen {
            NriSeen::Registered(status) => registered = Some(status),
            NriSeen::Configured { runtime, version } => configured = Some((runtime, version)),
            NriSeen::Synchronized(pods) => synced = Some(pods),
            _ => unreachable!("filtered above"),
        }
    }
    let status = registered.flatten();
    assert_eq!(
        status.map(|s| s.code).unwrap_or(0),
        0,
        "RegisterPlugin failed"
    );
    let (runtime, version) = configured.unwrap_or_default();
    assert_eq!(runtime, "containerd");
    assert!(version.starts_with("1.7.24"), "runtime version {version}");
    Ok((rx, synced.unwrap_or_default()))
}

async fn state_change(
    rx: &mut mpsc::UnboundedReceiver<NriSeen>,
    event: i32,
    pod_uid: &str,
) -> Result<NriPod> {
    expect(
        rx,
        &format!("StateChange {event} for {pod_uid}"),
        |s| match s {
            NriSeen::StateChange(e, pod) if e == event && pod.uid == pod_uid => Some(pod),
            _ => None,
        },
    )
    .await
}

// ---- Helpers on pods ----

/// The IPv4 addresses (CIDR) on `eth0` inside the netns at `netns`.
fn eth0_ipv4(netns: &Path) -> Result<Vec<String>> {
    let json = run_in_netns(netns, "ip", &["-j", "-4", "addr", "show", "dev", "eth0"])?;
    let links: serde_json::Value = serde_json::from_str(&json)?;
    let mut out = Vec::new();
    for link in links.as_array().into_iter().flatten() {
        for addr in link["addr_info"].as_array().into_iter().flatten() {
            out.push(format!(
                "{}/{}",
                addr["local"].as_str().unwrap_or(""),
                addr["prefixlen"]
            ));
        }
    }
    Ok(out)
}

struct Timings {
    run: Vec<Duration>,
    stop: Vec<Duration>,
    remove: Vec<Duration>,
}

fn summary(samples: &[Duration]) -> String {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    format!(
        "min {:.1} ms, median {:.1} ms, max {:.1} ms (n={})",
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        ms.len()
    )
}

/// Runs a pod, checks its network, stops and removes it, timing each CRI call; returns the
/// pod's UID.
async fn pod_cycle(cri: &mut CriClient, name: &str, t: &mut Timings) -> Result<String> {
    let spec = PodSpec::new(name);
    let start = Instant::now();
    let id = cri.run_pod(&spec).await?;
    t.run.push(start.elapsed());
    let netns = cri.pod_netns_path(&id).await?.context("pod has no netns")?;
    assert!(netns.exists());
    assert!(
        eth0_ipv4(&netns)?
            .iter()
            .any(|a| a.starts_with("203.0.113."))
    );
    let start = Instant::now();
    cri.stop_pod(&id).await?;
    t.stop.push(start.elapsed());
    assert!(
        !netns.exists(),
        "netns {} survived StopPodSandbox",
        netns.display()
    );
    let start = Instant::now();
    cri.remove_pod(&id).await?;
    t.remove.push(start.elapsed());
    Ok(spec.uid)
}

// ---- The scenario ----

#[tokio::test]
async fn containerd_node_runs_pods_restarts_and_accepts_nri_plugins() -> Result<()> {
    let started = Instant::now();
    let node = ContainerdNode::start(ContainerdOptions::default()).await?;
    println!(
        "node {} ready in {:?}",
        node.netns_name(),
        started.elapsed()
    );
    let leftovers = Leftovers::of(&node);
    let result = scenario(node).await;
    // Whatever happened, nothing of the node may remain.
    leftovers.assert_none()?;
    result
}

/// What a node leaves on the machine if its teardown fails.
struct Leftovers {
    dir: PathBuf,
    netns: PathBuf,
    cgroup: PathBuf,
}

impl Leftovers {
    fn of(node: &ContainerdNode) -> Self {
        Self {
            dir: node.paths().dir.clone(),
            netns: node.netns_path().to_path_buf(),
            cgroup: Path::new("/sys/fs/cgroup/memory")
                .join(node.cgroup_parent().trim_start_matches('/')),
        }
    }

    fn assert_none(&self) -> Result<()> {
        for path in [&self.dir, &self.netns, &self.cgroup] {
            assert!(!path.exists(), "{} left behind", path.display());
        }
        let mounts = mounts_under(&self.dir)?;
        assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
        Ok(())
    }
}

/// Dropping a node with a running pod (no graceful shutdown, as when a test panics) still
/// kills the pod through runc and removes everything.
#[tokio::test]
async fn dropped_node_with_a_running_pod_leaves_nothing_behind() -> Result<()> {
    let node = ContainerdNode::start(ContainerdOptions::default()).await?;
    let leftovers = Leftovers::of(&node);
    let mut cri = node.cri().await?;
    let id = cri.run_pod(&PodSpec::new("abandoned")).await?;
    let netns = cri.pod_netns_path(&id).await?.context("no netns")?;
    assert!(netns.exists());
    assert!(
        leftovers.cgroup.exists(),
        "pods' cgroups live under the node's parent"
    );
    let shim = shim_socket(node.grpc_socket(), &id);
    assert!(
        shim.exists(),
        "shim socket {} not where expected",
        shim.display()
    );
    drop(cri);
    drop(node);
    leftovers.assert_none()?;
    assert!(!netns.exists(), "pod netns {} left behind", netns.display());
    assert!(!shim.exists(), "shim socket {} left behind", shim.display());
    Ok(())
}

async fn scenario(mut node: ContainerdNode) -> Result<()> {
    let mut cri = node.cri().await?;
    let version = cri.version().await?;
    assert_eq!(version.runtime_name, "containerd");
    println!(
        "runtime {} {}",
        version.runtime_name, version.runtime_version
    );

    // 1. Pod lifecycle without any NRI plugin, timed.
    let mut plain = Timings {
        run: vec![],
        stop: vec![],
        remove: vec![],
    };
    // NETCLAIM_CRI_CYCLES=n measures more cycles (the default keeps the test short).
    let cycles: usize = std::env::var("NETCLAIM_CRI_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    for i in 0..cycles.max(1) {
        pod_cycle(&mut cri, &format!("plain-{i}"), &mut plain).await?;
    }

    // 2. A hand-written NRI plugin registers and is configured; it sees the pod's events,
    //    RUN with the same netns path CRI reports.
    let (mut nri, pods) = register_and_configure(&node, "netclaim-test").await?;
    assert!(pods.is_empty(), "no pods should be live: {pods:?}");
    let spec = PodSpec {
        annotations: HashMap::from([("netclaim.dev/test".to_string(), "yes".to_string())]),
        ..PodSpec::new("with-nri")
    };
    let mut with_nri = Timings {
        run: vec![],
        stop: vec![],
        remove: vec![],
    };
    let start = Instant::now();
    let id = cri.run_pod(&spec).await?;
    with_nri.run.push(start.elapsed());
    let run = state_change(&mut nri, RUN_POD_SANDBOX, &spec.uid).await?;
    let netns = cri.pod_netns_path(&id).await?.context("pod has no netns")?;
    assert_eq!(run.id, id);
    assert_eq!(
        (run.name.as_str(), run.namespace.as_str()),
        ("with-nri", "default")
    );
    assert_eq!(
        run.netns().as_deref(),
        Some(netns.as_path()),
        "RUN carries the netns path"
    );
    assert!(
        netns.starts_with(&node.paths().state),
        "netns under the node's state dir"
    );
    let status = cri.pod_status(&id).await?.status.context("no status")?;
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    let pod_ip = status.network.map(|n| n.ip).unwrap_or_default();
    let addrs = eth0_ipv4(&netns)?;
    assert!(
        addrs
            .iter()
            .any(|a| a == &format!("{pod_ip}/24") && a.starts_with("203.0.113.")),
        "eth0 {addrs:?}, CRI pod IP {pod_ip}"
    );
    let start = Instant::now();
    cri.stop_pod(&id).await?;
    with_nri.stop.push(start.elapsed());
    let stop = state_change(&mut nri, STOP_POD_SANDBOX, &spec.uid).await?;
    assert_eq!(stop.id, id);
    assert!(!netns.exists(), "netns survived StopPodSandbox");
    let start = Instant::now();
    cri.remove_pod(&id).await?;
    with_nri.remove.push(start.elapsed());
    state_change(&mut nri, REMOVE_POD_SANDBOX, &spec.uid).await?;
    assert!(cri.list_pods().await?.is_empty());

    // 3. A host-network pod has no netns of its own.
    let host = PodSpec {
        host_network: true,
        ..PodSpec::new("host-net")
    };
    let host_id = cri.run_pod(&host).await?;
    assert_eq!(cri.pod_netns_path(&host_id).await?, None);
    cri.stop_pod(&host_id).await?;
    cri.remove_pod(&host_id).await?;

    // 4. containerd restarts: the plugin is disconnected, a running pod survives with its
    //    netns, a re-registered plugin gets it in Synchronize, and new pods still run.
    let survivor = PodSpec::new("survivor");
    let survivor_id = cri.run_pod(&survivor).await?;
    state_change(&mut nri, RUN_POD_SANDBOX, &survivor.uid).await?;
    let survivor_netns = cri
        .pod_netns_path(&survivor_id)
        .await?
        .context("no netns")?;
    let old_pid = node.containerd_pid();
    let start = Instant::now();
    node.restart().await?;
    println!(
        "containerd restart (to CRI ready) took {:?}",
        start.elapsed()
    );
    assert_ne!(node.containerd_pid(), old_pid);
    expect(&mut nri, "plugin disconnect on restart", |s| {
        matches!(s, NriSeen::Closed).then_some(())
    })
    .await?;
    let mut cri = node.cri().await?;
    let status = cri
        .pod_status(&survivor_id)
        .await?
        .status
        .context("no status")?;
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    assert!(survivor_netns.exists());
    assert!(
        eth0_ipv4(&survivor_netns)?
            .iter()
            .any(|a| a.starts_with("203.0.113."))
    );
    let (mut nri, pods) = register_and_configure(&node, "netclaim-test").await?;
    let synced = pods
        .iter()
        .find(|p| p.uid == survivor.uid)
        .context("survivor not in Synchronize")?;
    assert_eq!(synced.netns().as_deref(), Some(survivor_netns.as_path()));
    let after = pod_cycle(&mut cri, "after-restart", &mut with_nri).await?;
    for event in [RUN_POD_SANDBOX, STOP_POD_SANDBOX, REMOVE_POD_SANDBOX] {
        state_change(&mut nri, event, &after).await?;
    }
    cri.stop_pod(&survivor_id).await?;
    assert!(!survivor_netns.exists());
    cri.remove_pod(&survivor_id).await?;
    // Surprise (containerd 1.7.24): NRI tracks pod states in memory only, so a pod that was
    // running before the restart gets neither STOP nor REMOVE. Events arrive in order on the
    // connection, so the next one must be the marker pod's RUN.
    let marker = PodSpec::new("marker");
    let marker_id = cri.run_pod(&marker).await?;
    let next = expect(&mut nri, "the marker's RUN", |s| match s {
        NriSeen::StateChange(event, pod) => Some((event, pod)),
        _ => None,
    })
    .await?;
    assert_eq!(
        (next.0, next.1.uid.as_str()),
        (RUN_POD_SANDBOX, marker.uid.as_str()),
        "a recovered pod's STOP/REMOVE reached the plugin: containerd's behaviour changed"
    );
    cri.stop_pod(&marker_id).await?;
    state_change(&mut nri, STOP_POD_SANDBOX, &marker.uid).await?;
    cri.remove_pod(&marker_id).await?;
    state_change(&mut nri, REMOVE_POD_SANDBOX, &marker.uid).await?;

    println!("without NRI plugin: RunPodSandbox {}", summary(&plain.run));
    println!(
        "without NRI plugin: StopPodSandbox {}",
        summary(&plain.stop)
    );
    println!(
        "without NRI plugin: RemovePodSandbox {}",
        summary(&plain.remove)
    );
    println!("with NRI plugin: RunPodSandbox {}", summary(&with_nri.run));
    println!(
        "with NRI plugin: StopPodSandbox {}",
        summary(&with_nri.stop)
    );
    println!(
        "with NRI plugin: RemovePodSandbox {}",
        summary(&with_nri.remove)
    );

    // 5. Leave a pod running: stop must stop and remove it and clean everything.
    let leftover = cri.run_pod(&PodSpec::new("leftover")).await?;
    let leftover_netns = cri.pod_netns_path(&leftover).await?.context("no netns")?;
    drop(cri);
    node.stop().await?;
    assert!(!leftover_netns.exists());
    Ok(())
}
