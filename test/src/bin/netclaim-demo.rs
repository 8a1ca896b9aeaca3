//! The netclaim demo: a pod gets a NIC, with no cluster.
//!
//! It builds a node in network namespaces (an uplink with the default route, three NICs
//! whose far ends sit in a "lan" namespace), runs the real `netclaim run` binary on it (its
//! kubelet plugin sockets, its NRI plugin), and plays the parts that cannot run here: the
//! API server (a stand-in speaking the real REST protocol), the scheduler (it writes the
//! claim's allocation) and the kubelet (a stand-in calling the real DRA gRPC services). Pods
//! run on a real containerd with NRI when one is installed (`hack/install-deps.sh`), else
//! on the NRI runtime stand-in; the demo says which.
//!
//! Run it as root: `hack/demo.sh`.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use netclaim_test::containerd::{ContainerdMajor, ContainerdNode};
use netclaim_test::node::{NicClaim, NodeOptions, RuntimeKind, TestNode};
use serde_json::json;

fn step(title: &str) {
    println!("\n\x1b[1m==> {title}\x1b[0m");
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn choose_runtime() -> RuntimeKind {
    let found = ContainerdMajor::from_env()
        .and_then(|major| ContainerdNode::available(major).map(|version| (major, version)));
    match found {
        Ok((major, version)) => {
            println!(
                "runtime: containerd {version} with NRI (real, {}), runc, CNI bridge plugin",
                major.containerd_bin().display()
            );
            RuntimeKind::Containerd
        }
        Err(why) => {
            // A demonstration may fall back; it must not do so quietly.
            let banner = "!".repeat(78);
            println!("\x1b[1;31m{banner}");
            println!("!! NO REAL CONTAINERD: {why:#}");
            println!("!! Falling back to the NRI runtime STAND-IN (the real NRI protocol, no real");
            println!(
                "!! containerd, no CNI). Run hack/install-deps.sh as root for the real thing."
            );
            println!("{banner}\x1b[0m");
            eprintln!(
                "netclaim-demo: warning: no real containerd ({why:#}); using the NRI runtime stand-in"
            );
            RuntimeKind::StandIn
        }
    }
}

async fn show_published(node: &TestNode) -> Result<()> {
    node.device_for("eth1").await?;
    println!(
        "    {:<28} {:<8} {:<8} {:<18}",
        "DEVICE", "IFNAME", "TYPE", "MAC"
    );
    for slice in node.slices().await? {
        for device in slice.spec.devices.unwrap_or_default() {
            let attrs = device.attributes.unwrap_or_default();
            let text = |k: &str| {
                attrs
                    .get(k)
                    .and_then(|a| a.string.clone())
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "    {:<28} {:<8} {:<8} {:<18}",
                device.name,
                text("ifName"),
                text("type"),
                text("mac")
            );
        }
    }
    println!("    (uplink0 carries the node's default route: never offered)");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo creates network namespaces: run it as root");
    }
    let started = Instant::now();
    println!("netclaim demo: a pod gets a NIC through DRA and NRI, no cluster needed");
    let runtime = choose_runtime();

    step("Starting a node: namespaces, NICs, the API server stand-in, `netclaim run`");
    let mut node = TestNode::start(NodeOptions {
        runtime,
        nics: 3,
        ..NodeOptions::default()
    })
    .await
    .context("starting the demo node")?;
    println!(
        "    node {} in netns {}; netclaim registered with the kubelet stand-in",
        node.name,
        node.netns()
    );

    step("The node's ResourceSlice, as netclaim published it");
    show_published(&node).await?;

    step("A ResourceClaim for eth1, renamed net1 in the pod, with an address and a route");
    let config = json!({
        "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
        "interface": {
            "name": "net1", "addresses": ["192.0.2.10/24"], "mtu": 1400,
            "routes": [{"destination": "198.51.100.0/24", "gateway": "192.0.2.1"}]
        }
    });
    print!("{}", indent(&serde_yaml::to_string(&config)?));
    let pod_uid = "d3m0d3m0-0000-4000-8000-000000000001";
    let claim = node
        .allocate(
            &[NicClaim {
                name: "demo-nic".into(),
                request: "nic".into(),
                if_name: "eth1".into(),
                config: Some(config),
                class_config: None,
            }],
            "demo",
            pod_uid,
        )
        .await?;
    println!(
        "    allocated (as the scheduler would) to device on eth1; reserved for pod default/demo"
    );

    step("Kubelet: NodePrepareResources over the DRA socket");
    let prepared = node.prepare(std::slice::from_ref(&claim)).await?;
    let outcome = &prepared[&claim.uid];
    if !outcome.error.is_empty() {
        bail!("prepare failed: {}", outcome.error);
    }
    for device in &outcome.devices {
        println!(
            "    prepared {}/{} for request {:?}",
            device.pool_name, device.device_name, device.request_names
        );
    }

    step("Runtime: RunPodSandbox (netclaim's NRI hook moves and configures the NIC)");
    let pod = match node.run_pod("demo", pod_uid).await? {
        Ok(pod) => pod,
        Err(message) => bail!("the pod sandbox failed: {message}"),
    };
    println!(
        "    sandbox {}; netns {}",
        pod.sandbox_id,
        pod.netns_path.display()
    );
    print!("{}", indent(&node.in_pod(&pod, "ip", &["addr"])?));
    print!("{}", indent(&node.in_pod(&pod, "ip", &["route"])?));

    step("Traffic through the claimed NIC: ping 192.0.2.1 (the far end, in the lan netns)");
    print!(
        "{}",
        indent(&node.in_pod(&pod, "ping", &["-c", "2", "-W", "2", "192.0.2.1"])?)
    );

    step("The claim's status.devices (networkData, Ready), as the API server holds it");
    let status = wait_for_status(&node, "demo-nic").await?;
    print!("{}", indent(&serde_yaml::to_string(&status)?));

    step("Runtime: StopPodSandbox + RemovePodSandbox (netclaim gives the NIC back)");
    node.delete_pod(pod).await?;
    print!("{}", indent(&node.ip(&["addr", "show", "eth1"])?));

    step("Kubelet: NodeUnprepareResources");
    let unprepared = node.unprepare(std::slice::from_ref(&claim)).await?;
    if let Some(error) = unprepared.values().find(|e| !e.is_empty()) {
        bail!("unprepare failed: {error}");
    }
    println!("    checkpoint now: {}", node.prepared_claims()?);

    step("Tearing down");
    drop(node);
    println!("    done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn wait_for_status(node: &TestNode, claim: &str) -> Result<serde_json::Value> {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = node.claim(claim).await?.status;
        if let Some(devices) = status.and_then(|s| s.devices).filter(|d| !d.is_empty()) {
            return Ok(serde_json::to_value(devices)?);
        }
        if Instant::now() > deadline {
            bail!("netclaim wrote no status.devices for {claim}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
