//! Attach / detach cost against its two peers, measured in the same run:
//!
//! - **bare move**: the kernel's cost of moving a link to another netns — one
//!   `RTM_NEWLINK` with `IFLA_NET_NS_FD`, nothing else — the floor any attach pays;
//! - **netclaim**: `attach` (rename, one address, MTU, one route, up) and `detach`;
//! - **host-device**: the CNI plugin (`/usr/lib/cni/host-device`, Debian's
//!   containernetworking-plugins) doing the same job, ADD with static IPAM (one address,
//!   one route) and DEL, exec'd as a runtime would: CNI env vars, netconf on stdin.
//!
//! Run: `cargo bench -p netclaim-test --bench attach` (iterations: `NETCLAIM_BENCH_ITERS`,
//! default 50). The process enters a "node" netns it creates, so the CNI plugin, which
//! looks its `device` up in its own netns, sees the node's NIC as netclaim does. All three
//! run in every iteration, in rotating order, so drift and deferred kernel work hit them
//! alike; after netclaim's detach and after the bare move the NIC must be back (up, with
//! its address) or the bench fails; after host-device's DEL, which does not restore them,
//! they are put back untimed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use netclaim::attach::{attach, detach};
use netclaim::netlink::{LinkChange, NetHandle};
use netclaim_api::{InterfaceConfig, RouteConfig};
use netclaim_test::netns::TestNetns;

const HOST_DEVICE: &str = "/usr/lib/cni/host-device";
const NIC: &str = "nic0";
const TAG: &str = "netclaim/bench/nic0";

fn main() -> Result<()> {
    let iterations: usize = std::env::var("NETCLAIM_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    ensure!(
        Path::new(HOST_DEVICE).exists(),
        "{HOST_DEVICE} missing: apt-get install -y containernetworking-plugins"
    );

    let node = TestNetns::new("bench-node")?;
    let pod = TestNetns::new("bench-pod")?;
    node.add_veth(NIC, "nic0p")?;
    node.ip(&["link", "set", "nic0p", "up"])?;
    node.ip(&["addr", "add", HOME_ADDRESS, "dev", NIC])?;
    node.ip(&["link", "set", NIC, "up"])?;

    // Enter the node before the runtime starts: its threads and the CNI plugin's process
    // inherit this thread's netns.
    let ns = std::fs::File::open(node.path())?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .context("entering the node netns")?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if std::env::var_os("NETCLAIM_BENCH_BREAKDOWN").is_some() {
        return runtime.block_on(breakdown(&pod, iterations));
    }
    let samples = runtime.block_on(run(&pod, iterations))?;
    print_table(&samples, iterations);
    Ok(())
}

/// Where an attach's time goes: its steps one by one, with the public `NetHandle` API,
/// next to the bare move.
async fn breakdown(pod: &TestNetns, iterations: usize) -> Result<()> {
    let host = NetHandle::current()?;
    let pod_path = pod.path();
    let names = [
        "bare move",
        "open pod handle",
        "pod alias dump",
        "host link get",
        "host addr dump",
        "pod name check",
        "set alias",
        "move+name+mtu+up",
        "pod link get",
        "add address",
        "add route",
        "detach",
        "move+name",
        "move+mtu",
        "move+up",
    ];
    let mut t: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    let config = config();
    for _ in 0..iterations {
        t[0].push(bare_move(&host, &pod_path).await?);
        let mut lap = Instant::now();
        let mut mark = |i: usize, t: &mut Vec<Vec<Duration>>| {
            t[i].push(lap.elapsed());
            lap = Instant::now();
        };
        let p = NetHandle::in_netns(&pod_path).await?;
        mark(1, &mut t);
        p.link_by_alias(TAG).await?;
        mark(2, &mut t);
        let link = host.link_by_name(NIC).await?.context("nic0")?;
        mark(3, &mut t);
        let addresses = host.addresses(link.index).await?;
        mark(4, &mut t);
        p.link_by_name("eth1").await?;
        mark(5, &mut t);
        host.set_alias(link.index, Some(TAG)).await?;
        mark(6, &mut t);
        let change = LinkChange {
            name: Some("eth1".into()),
            mtu: Some(1400),
            up: Some(true),
            ..Default::default()
        };
        host.move_to_netns(link.index, &p, &change).await?;
        mark(7, &mut t);
        let moved = p.link_by_name("eth1").await?.context("eth1")?;
        mark(8, &mut t);
        p.add_address(moved.index, config.addresses[0]).await?;
        mark(9, &mut t);
        p.add_route(moved.index, &config.routes[0]).await?;
        mark(10, &mut t);
        let snapshot = netclaim::netlink::snapshot_of(&link, addresses);
        detach(&host, &pod_path, TAG, &snapshot).await?;
        mark(11, &mut t);
        expect_home(&host, "netclaim detach").await?;
        let variants = [
            LinkChange {
                name: Some("eth1".into()),
                ..Default::default()
            },
            LinkChange {
                mtu: Some(1400),
                ..Default::default()
            },
            LinkChange {
                up: Some(true),
                ..Default::default()
            },
        ];
        for (i, change) in variants.iter().enumerate() {
            let link = host.link_by_name(NIC).await?.context("nic0")?;
            let start = Instant::now();
            host.move_to_netns(link.index, &p, change).await?;
            t[12 + i].push(start.elapsed());
            let moved = p.link_by_index(link.index).await?.context("moved")?;
            let back = LinkChange {
                name: Some(NIC.into()),
                mtu: Some(1500),
                up: Some(true),
                ..Default::default()
            };
            p.move_to_netns(moved.index, &host, &back).await?;
        }
    }
    println!(
        "\nattach breakdown: {iterations} iterations, steps in a fixed order (their move figures \
         carry positional bias; the interleaved main table is the reference)"
    );
    println!("\n| step | p50 ms | p90 ms |\n|---|---:|---:|");
    for (name, v) in names.iter().zip(&t) {
        println!(
            "| {name} | {:.3} | {:.3} |",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 90.0))
        );
    }
    Ok(())
}

#[derive(Default)]
struct Samples {
    bare_move: Vec<Duration>,
    attach: Vec<Duration>,
    detach: Vec<Duration>,
    cni_add: Vec<Duration>,
    cni_del: Vec<Duration>,
}

fn config() -> InterfaceConfig {
    InterfaceConfig {
        name: Some("eth1".into()),
        addresses: vec!["192.0.2.10/24".parse().unwrap()],
        mtu: Some(1400),
        routes: vec![RouteConfig {
            destination: "203.0.113.0/24".parse().unwrap(),
            gateway: Some("192.0.2.1".parse().unwrap()),
            source: None,
            table: None,
            scope: None,
        }],
        ..Default::default()
    }
}

const NETCONF: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "bench",
  "type": "host-device",
  "device": "nic0",
  "ipam": {
    "type": "static",
    "addresses": [{"address": "192.0.2.10/24"}],
    "routes": [{"dst": "203.0.113.0/24", "gw": "192.0.2.1"}]
  }
}"#;

async fn run(pod: &TestNetns, iterations: usize) -> Result<Samples> {
    let host = NetHandle::current()?;
    let config = config();
    let pod_path = pod.path();
    let mut s = Samples::default();
    for i in 0..iterations {
        // Rotate which of the three goes first: the first one after a round of set-up work
        // pays for the kernel's deferred work (RCU callbacks, link events) more than the
        // others, and this spreads that evenly.
        for k in 0..3 {
            match (i + k) % 3 {
                0 => {
                    s.bare_move.push(bare_move(&host, &pod_path).await?);
                    expect_home(&host, "the bare move").await?;
                }
                1 => {
                    let start = Instant::now();
                    let out = attach(&host, NIC, &pod_path, TAG, &config).await?;
                    s.attach.push(start.elapsed());
                    ensure!(
                        pod.has_link("eth1"),
                        "netclaim attach left no eth1 in the pod"
                    );
                    let start = Instant::now();
                    detach(&host, &pod_path, TAG, &out.host).await?;
                    s.detach.push(start.elapsed());
                    // netclaim gives the NIC back as it found it: checked, never repaired.
                    expect_home(&host, "netclaim detach").await?;
                }
                _ => {
                    s.cni_add.push(host_device("ADD", &pod_path)?);
                    ensure!(
                        pod.has_link("eth1"),
                        "host-device ADD left no eth1 in the pod"
                    );
                    s.cni_del.push(host_device("DEL", &pod_path)?);
                    // A netns move drops a link's addresses and takes it down, and
                    // host-device's DEL does not restore them: put them back, untimed.
                    restore_home(&host).await?;
                }
            }
        }
    }
    Ok(s)
}

/// Times one `RTM_NEWLINK {ifindex, IFLA_NET_NS_FD}` into the pod; puts the NIC back (up,
/// with its address) untimed.
async fn bare_move(host: &NetHandle, pod_path: &Path) -> Result<Duration> {
    let pod = NetHandle::in_netns(pod_path).await?;
    let link = host.link_by_name(NIC).await?.context("nic0 on the node")?;
    let start = Instant::now();
    host.move_to_netns(link.index, &pod, &LinkChange::default())
        .await?;
    let elapsed = start.elapsed();
    let moved = pod.link_by_name(NIC).await?.context("nic0 in the pod")?;
    pod.move_to_netns(
        moved.index,
        host,
        &LinkChange {
            up: Some(true),
            ..Default::default()
        },
    )
    .await?;
    let back = host
        .link_by_name(NIC)
        .await?
        .context("nic0 back on the node")?;
    host.add_address(back.index, HOME_ADDRESS.parse()?).await?;
    Ok(elapsed)
}

fn host_device(command: &str, pod_path: &Path) -> Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new(HOST_DEVICE)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "bench")
        .env("CNI_NETNS", pod_path)
        .env("CNI_IFNAME", "eth1")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(NETCONF.as_bytes())?;
    let out = child.wait_with_output()?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        bail!(
            "host-device {command} failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(elapsed)
}

/// The address nic0 carries on the node between rounds.
const HOME_ADDRESS: &str = "198.51.100.5/24";

/// Fails unless nic0 is home, up, with its address: every round starts from that state.
async fn expect_home(host: &NetHandle, after: &str) -> Result<()> {
    let link = host
        .link_by_name(NIC)
        .await?
        .with_context(|| format!("nic0 did not come back to the node after {after}"))?;
    ensure!(link.up, "nic0 came back down after {after}");
    let addresses = host.addresses(link.index).await?;
    let home: ipnet::IpNet = HOME_ADDRESS.parse()?;
    ensure!(
        addresses.contains(&home),
        "nic0 came back without {HOME_ADDRESS} after {after}: {addresses:?}"
    );
    Ok(())
}

/// Brings nic0 back up with its address after a peer that does not restore them.
async fn restore_home(host: &NetHandle) -> Result<()> {
    let link = host
        .link_by_name(NIC)
        .await?
        .context("nic0 did not come back to the node after host-device DEL")?;
    if !link.up {
        host.set_up(link.index).await?;
    }
    let home: ipnet::IpNet = HOME_ADDRESS.parse()?;
    if !host.addresses(link.index).await?.contains(&home) {
        host.add_address(link.index, home).await?;
    }
    expect_home(host, "restoring it").await
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_table(s: &Samples, iterations: usize) {
    println!("\nattach benchmark: {iterations} iterations, interleaved (times in ms)\n");
    println!("| operation | p50 | p90 |");
    println!("|---|---:|---:|");
    let rows = [
        (
            "bare netns move (1 RTM_NEWLINK + IFLA_NET_NS_FD)",
            &s.bare_move,
        ),
        (
            "netclaim attach (rename, 1 address, MTU, 1 route, up)",
            &s.attach,
        ),
        ("netclaim detach", &s.detach),
        (
            "host-device CNI ADD (static IPAM: 1 address, 1 route)",
            &s.cni_add,
        ),
        ("host-device CNI DEL", &s.cni_del),
    ];
    for (name, v) in rows {
        println!(
            "| {name} | {:.2} | {:.2} |",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 90.0))
        );
    }
    let ratio = |a: &[Duration], b: &[Duration], p| ms(percentile(a, p)) / ms(percentile(b, p));
    println!("\n| ratio | p50 | p90 | target |");
    println!("|---|---:|---:|---|");
    println!(
        "| attach / bare move | {:.2}x | {:.2}x | <= 1.15x |",
        ratio(&s.attach, &s.bare_move, 50.0),
        ratio(&s.attach, &s.bare_move, 90.0)
    );
    println!(
        "| host-device ADD / attach | {:.2}x | {:.2}x | >= 2x |",
        ratio(&s.cni_add, &s.attach, 50.0),
        ratio(&s.cni_add, &s.attach, 90.0)
    );
    println!(
        "| detach / bare move | {:.2}x | {:.2}x | (info) |",
        ratio(&s.detach, &s.bare_move, 50.0),
        ratio(&s.detach, &s.bare_move, 90.0)
    );
    println!(
        "| host-device DEL / detach | {:.2}x | {:.2}x | >= 2x |",
        ratio(&s.cni_del, &s.detach, 50.0),
        ratio(&s.cni_del, &s.detach, 90.0)
    );
}
