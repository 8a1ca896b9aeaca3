//! Discovery benchmarks, on a bench node in its own netns holding 1,000 veth ends.
//!
//! Run: `cargo bench -p netclaim-test --bench discovery` (optional argument: the number of
//! veth ends, default 1000). Needs root (it creates network namespaces). The `netclaim run`
//! RSS figures build and use the release binary (`cargo build --release -p netclaim`, run
//! by the bench itself into the bench's own target directory); the bench fails rather
//! than measure anything else, and fails when a scenario cannot be measured.
//!
//! Scenarios (medians, with the number of samples printed; where two or more are compared
//! they run interleaved, one of each per round in a rotating order, so machine noise and
//! the kernel's deferred work hit them alike; the same-run references make the ratios
//! comparable across machines):
//! 1. `build x1000`: device building, filtering and slicing from 1,000 synthetic
//!    netlink/sysfs records (no I/O), CEL filter on; reference: the same build without
//!    a filter.
//! 2. `netlink link dump`: the raw RTM_GETLINK dump of the 1,000 links, against
//!    `ip -j link show` in the same netns (reference; it includes a process spawn).
//! 3. `discovery pass`: a full pass (links, addresses and routes dumped, devices built and
//!    filtered) as the watcher runs it, with sysfs read only for interfaces the sysfs cache
//!    cannot answer; a cold pass (cache emptied first: sysfs read for every interface, as
//!    on start-up and on each periodic resync); reference: the pass's netlink snapshot
//!    alone, then its uncached sysfs reads.
//! 4. `event -> devices`: `ip link set <veth> mtu N` to the watcher's new device list
//!    (includes the debounce window and the `ip` process; `ip link set` alone is timed as
//!    the reference).
//! 5. `event -> slices`: the same, up to the ResourceSlice publisher reporting the write to
//!    the API server stand-in done; reference: the same event's time to the device list.
//! 6. `netclaim run` idle RSS (VmRSS) after its first publication, with the 1,000 veths
//!    and, in a second netns, with 4 (the common case: a handful of NICs; the reference).
//!    The daemon gets private kubelet, plugin, state and NRI paths in a temporary
//!    directory: it never registers with the host's kubelet or containerd.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::{Device, ResourceSlice};
use kube::Api;
use kube::api::{ListParams, PostParams};
use kubeletplugin::{PublisherConfig, ResourceSlicePublisher};
use netclaim::daemon::driver_resources;
use netclaim::discovery::{
    DeviceFilter, Discovery, DiscoveryConfig, LinkRecord, NicRecord, RouteSocket, SysfsNic,
    build_report, candidate_nics, slices,
};
use netclaim_test::apiserver::ApiServer;
use netclaim_test::netns::TestNetns;
use tokio_util::sync::CancellationToken;

const NODE: &str = "bench-node";

fn main() -> Result<()> {
    let ends: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(ends))
}

async fn run(ends: usize) -> Result<()> {
    println!("discovery bench: {ends} veth ends");
    bench_synthetic_build(ends);

    let netns = TestNetns::new("bench-disc")?;
    let started = Instant::now();
    create_veths(&netns, ends)?;
    println!(
        "  (setup: {ends} veth ends created in {:?})",
        started.elapsed()
    );
    let sysfs = netns.mount_sysfs()?;
    let config = DiscoveryConfig {
        sysfs_root: sysfs.path().to_path_buf(),
        filter: Some(Arc::new(DeviceFilter::new(
            r#"device.attributes["netclaim.dev"].type == "veth""#,
        )?)),
        include_virtual: true,
        ..DiscoveryConfig::default()
    };

    // NETCLAIM_BENCH_ONLY_RSS=1 skips the timed scenarios (e.g. for a heap profile of the
    // daemon with NETCLAIM_BENCH_DAEMON_WRAPPER="heaptrack -o /tmp/netclaim").
    if std::env::var_os("NETCLAIM_BENCH_ONLY_RSS").is_none() {
        bench_dump(&netns).await?;
        bench_pass(&netns, &config).await?;
        bench_event_to_devices(&netns, &config).await?;
        bench_event_to_slices(&netns, &config).await?;
    }
    let (large, large_devices) =
        idle_rss(&netns, ends).context("netclaim run idle VmRSS, bench node")?;
    drop(sysfs);
    let small = TestNetns::new("bench-disc-small")?;
    create_veths(&small, 4)?;
    let (small, small_devices) = idle_rss(&small, 4).context("netclaim run idle VmRSS, 4 veths")?;
    println!(
        "netclaim run idle VmRSS ({large_devices} devices published): {:.1} MiB; \
         ({small_devices} devices published, reference): {:.1} MiB; ratio {:.2}",
        large.total as f64 / 1024.0,
        small.total as f64 / 1024.0,
        large.total as f64 / small.total as f64
    );
    println!(
        "  of which anonymous (heap, stacks: what netclaim allocates): {:.1} MiB with \
         {large_devices} devices, {:.1} MiB with {small_devices}; file-backed (the \
         binary's pages in the page cache, shared and reclaimable): {:.1} MiB, {:.1} MiB",
        large.anon as f64 / 1024.0,
        small.anon as f64 / 1024.0,
        large.file as f64 / 1024.0,
        small.file as f64 / 1024.0,
    );
    Ok(())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Creates `ends` veth ends (`ends / 2` pairs) with one `ip -batch` process.
fn create_veths(netns: &TestNetns, ends: usize) -> Result<()> {
    let mut batch = String::new();
    for i in 0..ends / 2 {
        batch.push_str(&format!("link add bv{i}a type veth peer name bv{i}b\n"));
    }
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), batch)?;
    netns.ip(&["-batch", &file.path().to_string_lossy()])?;
    Ok(())
}

fn synthetic_nics(count: usize) -> Vec<NicRecord> {
    (0..count)
        .map(|i| {
            let index = u32::try_from(i).unwrap() + 2;
            let pci = (i % 2 == 0)
                .then(|| format!("0000:{:02x}:{:02x}.{}", i / 256, (i / 8) % 32, i % 8));
            NicRecord {
                link: LinkRecord {
                    index,
                    name: format!("ens{i}"),
                    kind: pci.is_none().then(|| "veth".to_owned()),
                    mac: Some(format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256)),
                    mtu: 1500,
                    up: true,
                    oper_state: "up".into(),
                    carrier: Some(true),
                    ipv4: vec![format!("192.0.2.{}/24", i % 250 + 1).parse().unwrap()],
                    ..LinkRecord::default()
                },
                sysfs: SysfsNic {
                    is_virtual: pci.is_none(),
                    pcie_root: pci.as_ref().map(|_| "pci0000:00".to_owned()),
                    vendor_id: pci.as_ref().map(|_| "15b3".to_owned()),
                    device_id: pci.as_ref().map(|_| "1017".to_owned()),
                    numa_node: pci.as_ref().map(|_| 0),
                    kernel_driver: pci.as_ref().map(|_| "mlx5_core".to_owned()),
                    pci_address: pci,
                    ..SysfsNic::default()
                },
            }
        })
        .collect()
}

/// Synthetic build rounds after one untimed round.
const BUILD_ROUNDS: usize = 100;

fn bench_synthetic_build(count: usize) {
    let nics = synthetic_nics(count);
    let filtered = DiscoveryConfig {
        filter: Some(Arc::new(
            DeviceFilter::new(r#"device.attributes["netclaim.dev"].mtu >= 1500"#).unwrap(),
        )),
        multus_resource_name: Some("example.com/nic".into()),
        include_virtual: true,
        ..DiscoveryConfig::default()
    };
    let unfiltered = DiscoveryConfig {
        filter: None,
        ..filtered.clone()
    };
    let build = |config: &DiscoveryConfig| {
        let input = nics.clone();
        let started = Instant::now();
        let report = build_report(config, input, Vec::new());
        let slices = slices::resource_slices("netclaim.dev", NODE, 1, &report.devices);
        let took = started.elapsed();
        let published: usize = slices
            .iter()
            .map(|s| s.spec.devices.as_ref().map_or(0, Vec::len))
            .sum();
        (took, published)
    };
    let (mut samples, mut reference) = (Vec::new(), Vec::new());
    let mut published = (0, 0);
    for round in 0..=BUILD_ROUNDS {
        for k in 0..2 {
            if (round + k) % 2 == 0 {
                let (took, n) = build(&filtered);
                published.0 = n;
                samples.push(took);
            } else {
                let (took, n) = build(&unfiltered);
                published.1 = n;
                reference.push(took);
            }
        }
        if round == 0 {
            // The untimed first round: caches, allocator, the filter's first evaluation.
            samples.clear();
            reference.clear();
        }
    }
    assert_eq!(published.0, published.1, "the filter keeps every device");
    let (ours, reference) = (median(samples), median(reference));
    println!(
        "build x{count} (synthetic records, CEL filter on, {} devices sliced): {}; \
         without a filter (reference): {}; ratio {:.2} (medians of {BUILD_ROUNDS})",
        published.0,
        ms(ours),
        ms(reference),
        ratio(ours, reference)
    );
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// Link dump rounds (one dump and one `ip -j link show` each).
const DUMP_ROUNDS: usize = 20;

async fn bench_dump(netns: &TestNetns) -> Result<()> {
    let (socket, _events) = RouteSocket::open_watching_in(&netns.path())?;
    let mut ours = Vec::new();
    let mut reference = Vec::new();
    let mut links = 0;
    for round in 0..DUMP_ROUNDS {
        for k in 0..2 {
            let started = Instant::now();
            if (round + k) % 2 == 0 {
                links = socket.dump_links().await?.len();
                ours.push(started.elapsed());
            } else {
                netns.ip(&["-j", "link", "show"])?;
                reference.push(started.elapsed());
            }
        }
    }
    let (ours, reference) = (median(ours), median(reference));
    println!(
        "netlink link dump ({links} links): {}; `ip -j link show` (reference): {}; \
         ratio {:.2} (medians of {DUMP_ROUNDS})",
        ms(ours),
        ms(reference),
        ratio(ours, reference)
    );
    Ok(())
}

/// Discovery pass rounds (a warm pass, a cold pass and the parts of a pass each).
const PASS_ROUNDS: usize = 20;

async fn bench_pass(netns: &TestNetns, config: &DiscoveryConfig) -> Result<()> {
    let discovery = Discovery::open_in_netns(config.clone(), &netns.path())?;
    // The pass's parts: the netlink snapshot (links, addresses, routes) and the sysfs reads.
    let (socket, _events) = RouteSocket::open_watching_in(&netns.path())?;
    // Untimed: fills the sysfs cache, so the first warm pass is warm.
    let devices = discovery.refresh().await?.len();
    let (mut warm, mut cold, mut snapshots, mut sysfs_reads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..PASS_ROUNDS {
        for k in 0..3 {
            match (round + k) % 3 {
                0 => {
                    let started = Instant::now();
                    let found = discovery.refresh().await?.len();
                    warm.push(started.elapsed());
                    ensure!(
                        found == devices,
                        "warm pass: {found} devices, want {devices}"
                    );
                }
                1 => {
                    discovery.forget_sysfs();
                    let started = Instant::now();
                    let found = discovery.refresh().await?.len();
                    cold.push(started.elapsed());
                    ensure!(
                        found == devices,
                        "cold pass: {found} devices, want {devices}"
                    );
                }
                _ => {
                    let started = Instant::now();
                    let snapshot = socket.snapshot().await?;
                    snapshots.push(started.elapsed());
                    let started = Instant::now();
                    let (nics, _) = candidate_nics(&snapshot, &config.sysfs_root);
                    sysfs_reads.push(started.elapsed());
                    ensure!(nics.len() >= devices, "{} candidates", nics.len());
                }
            }
        }
    }
    let snapshot = median(snapshots);
    let (warm, cold) = (median(warm), median(cold));
    println!(
        "discovery pass (netlink + cached sysfs + build, {devices} devices): {} \
         ({:.2}x the snapshot); cold (sysfs read for all): {} ({:.2}x); medians of {PASS_ROUNDS}",
        ms(warm),
        ratio(warm, snapshot),
        ms(cold),
        ratio(cold, snapshot)
    );
    println!(
        "  reference, the pass's parts: netlink snapshot {}; sysfs reads (all, uncached): {}",
        ms(snapshot),
        ms(median(sysfs_reads))
    );
    Ok(())
}

/// MTU changes timed by the event scenarios.
const EVENT_ROUNDS: u32 = 15;

fn mtu_of(devices: &[Arc<Device>], if_name: &str) -> Option<i64> {
    devices.iter().find_map(|d| {
        let attrs = d.attributes.as_ref()?;
        (attrs.get("ifName")?.string.as_deref() == Some(if_name)).then(|| attrs.get("mtu")?.int)?
    })
}

async fn bench_event_to_devices(netns: &TestNetns, config: &DiscoveryConfig) -> Result<()> {
    let discovery = Discovery::open_in_netns(config.clone(), &netns.path())?;
    let shutdown = CancellationToken::new();
    let mut handle = discovery.watch(shutdown.clone()).await?;
    let mut samples = Vec::new();
    let mut ip_alone = Vec::new();
    for round in 0..EVENT_ROUNDS {
        let mtu = 1400 + round;
        let started = Instant::now();
        netns.ip(&["link", "set", "bv0a", "mtu", &mtu.to_string()])?;
        ip_alone.push(started.elapsed());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while mtu_of(&handle.devices.borrow_and_update(), "bv0a") != Some(i64::from(mtu)) {
            tokio::time::timeout_at(deadline, handle.devices.changed())
                .await
                .context("no device update within 10 s")??;
        }
        samples.push(started.elapsed());
    }
    shutdown.cancel();
    println!(
        "event -> devices (mtu change to new device list, incl. {} ms debounce): {}; \
         `ip link set` alone (reference): {}; medians of {EVENT_ROUNDS}",
        config.debounce.as_millis(),
        ms(median(samples)),
        ms(median(ip_alone))
    );
    Ok(())
}

async fn bench_event_to_slices(netns: &TestNetns, config: &DiscoveryConfig) -> Result<()> {
    let server = ApiServer::start().await?;
    let client = server.client();
    let node = Node {
        metadata: kube::api::ObjectMeta {
            name: Some(NODE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await?;
    let publisher = ResourceSlicePublisher::start(
        client,
        PublisherConfig {
            driver_name: "netclaim.dev".into(),
            node_name: NODE.into(),
            node_uid: None,
        },
    );
    let discovery = Discovery::open_in_netns(config.clone(), &netns.path())?;
    let shutdown = CancellationToken::new();
    let mut handle = discovery.watch(shutdown.clone()).await?;
    let mut status = publisher.status();
    publisher.update(driver_resources(
        NODE,
        handle.devices.borrow_and_update().clone(),
    ));
    wait_synced(&mut status, 1).await?;
    let mut samples = Vec::new();
    let mut to_devices = Vec::new();
    for round in 0..EVENT_ROUNDS {
        let mtu = 1300 + round;
        let started = Instant::now();
        netns.ip(&["link", "set", "bv1a", "mtu", &mtu.to_string()])?;
        let target = status.borrow().synced_generation + 1;
        loop {
            tokio::time::timeout(Duration::from_secs(10), handle.devices.changed())
                .await
                .context("no device update within 10 s")??;
            let devices = handle.devices.borrow_and_update().clone();
            let done = mtu_of(&devices, "bv1a") == Some(i64::from(mtu));
            if done {
                to_devices.push(started.elapsed());
            }
            publisher.update(driver_resources(NODE, devices));
            if done {
                break;
            }
        }
        wait_synced(&mut status, target).await?;
        samples.push(started.elapsed());
    }
    let written: usize = Api::<ResourceSlice>::all(server.client())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|s| s.spec.devices.as_ref().map_or(0, Vec::len))
        .sum();
    shutdown.cancel();
    publisher.shutdown(false).await;
    server.shutdown().await;
    let (slices, devices) = (median(samples), median(to_devices));
    println!(
        "event -> slices written to the API stand-in ({written} devices in slices): {}; \
         the same events to the device list (reference): {}; ratio {:.2}; medians of {EVENT_ROUNDS}",
        ms(slices),
        ms(devices),
        ratio(slices, devices)
    );
    Ok(())
}

async fn wait_synced(
    status: &mut tokio::sync::watch::Receiver<kubeletplugin::PublishStatus>,
    generation: u64,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while status.borrow_and_update().synced_generation < generation {
        tokio::time::timeout_at(deadline, status.changed())
            .await
            .with_context(|| format!("publisher not synced: {:?}", status.borrow()))??;
    }
    Ok(())
}

/// The release `netclaim` binary, built now into this bench's target directory (the
/// bench runs from `<target>/release/deps/`); anything else would measure a different
/// program, so a failed build fails the bench.
fn netclaim_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .context("bench executable is not under <target>/<profile>/deps")?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "netclaim",
            "--bin",
            "netclaim",
        ])
        .arg("--target-dir")
        .arg(target)
        .current_dir(&workspace)
        .status()
        .context("running cargo build --release -p netclaim")?;
    ensure!(
        status.success(),
        "cargo build --release -p netclaim failed: {status}"
    );
    let binary = target.join("release").join("netclaim");
    ensure!(
        binary.is_file(),
        "{} missing after the build",
        binary.display()
    );
    Ok(binary)
}

/// Runs `netclaim run` inside the bench netns against an API server stand-in that also
/// lives in that netns (so `127.0.0.1` reaches it), waits until every device is in the
/// stand-in's slices, lets it idle, and reads its VmRSS.
fn idle_rss(netns: &TestNetns, expected_devices: usize) -> Result<(Rss, usize)> {
    let binary = netclaim_binary()?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (published_tx, published_rx) = std::sync::mpsc::channel();
    let stop = CancellationToken::new();
    let server_stop = stop.clone();
    let netns_path = netns.path();
    let kubeconfig_for_server = kubeconfig.clone();
    // The stand-in and its client run on a thread inside the bench netns: sockets belong
    // to the netns of the thread that creates them.
    let server = std::thread::spawn(move || -> Result<()> {
        let file = std::fs::File::open(&netns_path)?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let server = ApiServer::start().await?;
            server.write_kubeconfig(&kubeconfig_for_server)?;
            let node = Node {
                metadata: kube::api::ObjectMeta {
                    name: Some(NODE.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            Api::<Node>::all(server.client())
                .create(&PostParams::default(), &node)
                .await?;
            let _ = ready_tx.send(());
            let slices = Api::<ResourceSlice>::all(server.client());
            while !server_stop.is_cancelled() {
                let listed = slices.list(&ListParams::default()).await?;
                let devices: usize = listed
                    .items
                    .iter()
                    .map(|s| s.spec.devices.as_ref().map_or(0, Vec::len))
                    .sum();
                if devices >= expected_devices {
                    let _ = published_tx.send(devices);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            server_stop.cancelled().await;
            server.shutdown().await;
            Ok(())
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the API server stand-in did not start")?;
    let mut child = spawn_daemon(netns, &binary, &kubeconfig, dir.path())?;
    let log = dir.path().join("netclaim.log");
    let result = published_rx
        .recv_timeout(Duration::from_secs(60))
        .with_context(|| {
            format!(
                "netclaim run did not publish every device within 60 s; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .and_then(|devices| {
            // Idle: nothing changes after the first publication; let allocator and
            // runtime settle before reading the resident set.
            std::thread::sleep(Duration::from_secs(5));
            if let Some(status) = child.try_wait()? {
                bail!("netclaim run exited: {status}");
            }
            // `ip netns exec` execs the binary in place, so the child's pid is netclaim's.
            let rss = rss_kib(child.id())?;
            // How long the one start-up trim held malloc's locks (crate::memory).
            let trim = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .find(|line| line.contains("malloc_locks_held_ms"))
                .map(str::to_owned);
            println!(
                "  start-up malloc_trim ({expected_devices} devices): {}",
                trim.as_deref().unwrap_or("not logged")
            );
            Ok((rss, devices))
        });
    let _ = child.kill();
    let _ = child.wait();
    stop.cancel();
    let _ = server.join();
    result
}

/// Starts `netclaim run` in `netns` with every host path it would touch moved under
/// `private` (kubelet registration and plugin directories, state, NRI socket): on a real
/// node the defaults would register it with the host's kubelet and containerd.
fn spawn_daemon(
    netns: &TestNetns,
    binary: &Path,
    kubeconfig: &Path,
    private: &Path,
) -> Result<Child> {
    // A wrapper (a profiler) goes between `ip netns exec` and the binary; the RSS read is
    // then the wrapper's, so only the profile counts.
    let wrapper = std::env::var("NETCLAIM_BENCH_DAEMON_WRAPPER").unwrap_or_default();
    Command::new("ip")
        .args(["netns", "exec", netns.name()])
        .args(wrapper.split_whitespace())
        .arg(binary)
        .args([
            "run",
            "--node-name",
            NODE,
            "--include-virtual",
            "--kubeconfig",
        ])
        .arg(kubeconfig)
        .arg("--registrar-dir")
        .arg(private.join("plugins_registry"))
        .arg("--plugins-dir")
        .arg(private.join("plugins"))
        .arg("--state-dir")
        .arg(private.join("state"))
        .arg("--nri-socket")
        .arg(private.join("nri.sock"))
        .arg("--cdi-spec-dir")
        .arg(private.join("cdi"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(private.join("netclaim.log"))?)
        .spawn()
        .context("starting netclaim run")
}

/// A process's resident set in KiB, whole and split (`/proc/<pid>/status`).
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
}

fn rss_kib(pid: u32) -> Result<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/<pid>/status"))
    };
    Ok(Rss {
        total: field("VmRSS:")?,
        anon: field("RssAnon:")?,
        file: field("RssFile:")?,
    })
}
