//! CNI mode: ADD+DEL of a macvlan (static IPAM) + tuning chain through `CniRunner`, against
//! the same plugin chain run by hand in the same run.
//!
//! Run: `cargo bench -p netclaim-test --bench cni` (optional arguments: iterations, default
//! 200; `fixed`). Needs root and the Debian CNI plugins in `/usr/lib/cni`; fails when they
//! are missing.
//!
//! With `fixed`, the chain is two `cni-fixed` plugins (this package's `src/bin/cni-fixed.rs`:
//! answers at once, creates nothing) instead of macvlan + tuning. Real plugins vary by
//! milliseconds per run, which hides a sub-millisecond overhead; with plugins that always
//! do the same small thing, the per-round differences below are netclaim's own cost.
//!
//! - `by hand`: each plugin exec'd with `std::process::Command`, the same environment and
//!   the same stdin bytes netclaim would send (ADD in order with `prevResult` chaining, DEL
//!   in reverse with the final result), nothing else: the cost of the plugins themselves.
//! - `exec path`: the same chain through netclaim's `run_with_timeout` (tokio process in
//!   its own process group, with a timeout), nothing else.
//! - `CniRunner`: `add` then `del`: validation, plugin lookup, process groups and timeouts,
//!   result parsing, the atomic cache write and its removal.
//! - `hooks`: the whole CNI-mode attach and detach as the NRI events run it
//!   (`PodNetworkHooks::run_pod_sandbox` then `stop_pod_sandbox` for a pod with one prepared
//!   CNI-mode claim): the runner plus the checkpoint records of each phase (durable saves
//!   in a directory on disk, as `--state-dir` is) and the netns bookkeeping.
//!
//! The four run interleaved (one of each per round, in a rotating order) in one node netns
//! (a veth as the macvlan parent) against one pod netns, so machine noise hits all alike.
//! The figures that matter are netclaim's overheads over the plugins themselves, as the
//! median of per-round differences: CniRunner - by hand, and hooks - by hand (target
//! under 1 ms; see docs/benchmarks.md for where the hooks' time goes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netclaim::checkpoint::{Checkpoint, CheckpointError, Durability, Recovery};
use netclaim::cni::{
    Attachment, CniRunner, DeviceRef, plugin_stdin, run_with_timeout, substitute_device,
};
use netclaim::deadline::HookDeadline;
use netclaim::hooks::{NoHolds, PodNetworkHooks};
use netclaim::netlink::NetHandle;
use netclaim::nri::plugin::PodSandboxHandler;
use netclaim::state::{PodRef, PreparedClaim, PreparedNic};
use netclaim_api::CniNetworkList;
use netclaim_test::netns::TestNetns;
use netclaim_test::runtime::{driver_pod, pod_sandbox};
use serde_json::{Value, json};
use std::io::Write as _;

const PLUGINS: &str = "/usr/lib/cni";
const WARMUP: usize = 10;

fn main() {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let chain = if std::env::args().skip(1).any(|a| a == "fixed") {
        Chain::Fixed
    } else {
        Chain::Macvlan
    };
    let bin_dir = chain.bin_dir();
    let missing: Vec<&str> = chain
        .plugins()
        .iter()
        .copied()
        .filter(|p| !bin_dir.join(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "CNI plugins {missing:?} missing in {}: install Debian's \
         containernetworking-plugins (hack/install-deps.sh does, as root)",
        bin_dir.display()
    );
    // Plugins run in the netns of the thread that spawns them: this (main) thread, which
    // also runs the current-thread runtime below.
    let node = TestNetns::new("cnibench").unwrap();
    nix::sched::setns(
        File::open(node.path()).unwrap(),
        nix::sched::CloneFlags::CLONE_NEWNET,
    )
    .unwrap();
    node.add_veth("uplink0", "uplink0p").unwrap();
    node.ip(&["link", "set", "uplink0", "up"]).unwrap();
    let pod = TestNetns::new("cnibenchpod").unwrap();
    // The state directory on disk (not the tmpfs /tmp may be), as the kubelet's is;
    // NETCLAIM_BENCH_STATE_DIR puts it elsewhere (a tmpfs: what the hooks cost without
    // any device flush).
    let state_parent =
        std::env::var("NETCLAIM_BENCH_STATE_DIR").unwrap_or_else(|_| "/var/tmp".to_owned());
    // The runner's CNI cache in the same place as the hooks' (their runner keeps it in the
    // state directory), so both pay the same filesystem.
    let cache = tempfile::TempDir::new_in(&state_parent).unwrap();
    let runner = CniRunner::new(
        vec![bin_dir.clone()],
        Duration::from_secs(10),
        cache.path().to_owned(),
    )
    .with_allowed_plugins(chain.allowlist());
    let attachment = Attachment {
        container_id: "benchsandbox".into(),
        netns: pod.path(),
        ifname: "net1".into(),
        pod: PodRef {
            namespace: "default".into(),
            name: "bench".into(),
            uid: "bench-uid".into(),
        },
    };
    let list = CniNetworkList::parse(chain.list().to_string().as_bytes()).unwrap();
    let list = substitute_device(
        &list,
        None,
        &DeviceRef {
            ifname: "uplink0".into(),
            pci_address: None,
        },
    )
    .unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = tempfile::TempDir::new_in(&state_parent).unwrap();
    let hooks = runtime.block_on(async { hooks_with_one_cni_claim(state.path(), &list, &runner) });
    let sandbox = driver_pod(&pod_sandbox(
        "benchhooks",
        "bench",
        "default",
        HOOKS_POD_UID,
        Some(&pod.path().display().to_string()),
    ));
    let mut by_hand = Vec::with_capacity(iterations);
    let mut exec_path = Vec::with_capacity(iterations);
    let mut netclaim = Vec::with_capacity(iterations);
    let mut through_hooks = Vec::with_capacity(iterations);
    for round in 0..WARMUP + iterations {
        // The order rotates every round: whichever runs right after a DEL meets the
        // kernel's deferred cleanup of the previous macvlan, so a fixed order biases.
        let mut times = [Duration::ZERO; 4];
        for k in 0..4 {
            let scenario = (round + k) % 4;
            times[scenario] = match scenario {
                0 => time(|| run_by_hand(&runner, &list, &attachment)),
                1 => time(|| runtime.block_on(run_exec_path(&runner, &list, &attachment))),
                2 => time(|| {
                    runtime.block_on(async {
                        runner.add(&list, &attachment).await.unwrap();
                        runner.del(&list, &attachment).await.unwrap();
                    })
                }),
                _ => time(|| {
                    runtime.block_on(async {
                        hooks
                            .run_pod_sandbox(sandbox.clone(), hook_deadline("RunPodSandbox"))
                            .await
                            .unwrap();
                        hooks
                            .stop_pod_sandbox(sandbox.clone(), hook_deadline("StopPodSandbox"))
                            .await
                            .unwrap();
                    })
                }),
            };
        }
        let [hand, exec_only, ours, hooked] = times;
        assert!(!pod.has_link("net1"), "round {round} left net1 behind");
        if round >= WARMUP {
            by_hand.push(hand);
            exec_path.push(exec_only);
            netclaim.push(ours);
            through_hooks.push(hooked);
        }
    }
    // Paired per round (the rounds are interleaved): the median of the differences is far
    // less sensitive to machine noise than the difference of the medians.
    let paired = |a: &[Duration], b: &[Duration]| {
        let mut d: Vec<f64> = a.iter().zip(b).map(|(x, y)| ms(*x) - ms(*y)).collect();
        d.sort_by(f64::total_cmp);
        d[d.len() / 2]
    };
    let over_hand = paired(&netclaim, &by_hand);
    let over_exec = paired(&netclaim, &exec_path);
    let hooks_over_hand = paired(&through_hooks, &by_hand);
    let hooks_over_runner = paired(&through_hooks, &netclaim);
    by_hand.sort();
    exec_path.sort();
    netclaim.sort();
    through_hooks.sort();
    let p = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "CNI ADD+DEL, {}, {iterations} iterations (after {WARMUP} warm-up)",
        chain.describe()
    );
    println!("| runner | p50 | p90 | min |");
    println!("|---|---|---|---|");
    for (name, v) in [
        ("plugins by hand (std::process)", &by_hand),
        ("same chain on netclaim's exec path", &exec_path),
        ("CniRunner add + del", &netclaim),
        ("NRI hooks RUN + STOP (runner + checkpoint)", &through_hooks),
    ] {
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms |",
            ms(p(v, 0.5)),
            ms(p(v, 0.9)),
            ms(v[0])
        );
    }
    let overhead = ms(p(&netclaim, 0.5)) - ms(p(&by_hand, 0.5));
    println!(
        "netclaim overhead, p50(CniRunner) - p50(by hand): {overhead:.3} ms ({:.3}x the plugins alone; target < 1 ms)",
        ms(p(&netclaim, 0.5)) / ms(p(&by_hand, 0.5))
    );
    println!(
        "median of per-round differences: CniRunner - by hand {over_hand:.3} ms; CniRunner - exec path {over_exec:.3} ms; hooks - by hand {hooks_over_hand:.3} ms; hooks - CniRunner {hooks_over_runner:.3} ms"
    );
    for durability in [Durability::Durable, Durability::Volatile] {
        record_writes(&state_parent, iterations, durability);
    }
}

/// One checkpoint record write of `durability`, both ways it can go, interleaved in one
/// directory: into a new slotted file (temp file, rename; for a durable write also the
/// file's and the directory's fsync: what every write cost before the slots, and what a
/// claim's first write of each kind still costs) and into the older slot of the claim's
/// existing file (a `pwrite`; for a durable write also one `fdatasync`). The durable write
/// is what a CNI-mode RUN pays for `Attaching`; the volatile one what it and STOP pay for
/// each of `Attached`, `Detaching` and the record's removal.
fn record_writes(state_parent: &str, iterations: usize, durability: Durability) {
    let dir = tempfile::TempDir::new_in(state_parent).unwrap();
    let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
    let record = |uid: &str, round: usize| {
        let mut claim: PreparedClaim = serde_json::from_value(json!({
            "uid": uid, "namespace": "default", "name": "bench", "pods": [],
            "nics": [{"request": "nic", "pool": "bench", "device": "uplink0",
                      "hostIfName": "uplink0", "config": {"name": "net1"}}]
        }))
        .unwrap();
        claim.name = format!("bench-{round}");
        checkpoint
            .update(uid, durability, |_| {
                Ok::<_, CheckpointError>((Some(claim), ()))
            })
            .unwrap();
    };
    record("slotted", 0);
    let (mut new_file, mut in_place) = (Vec::new(), Vec::new());
    for round in 0..WARMUP + iterations {
        let fresh = format!("fresh-{round}");
        let times = if round % 2 == 0 {
            [
                time(|| record(&fresh, round)),
                time(|| record("slotted", round + 1)),
            ]
        } else {
            let slot = time(|| record("slotted", round + 1));
            [time(|| record(&fresh, round)), slot]
        };
        checkpoint
            .update(&fresh, Durability::Durable, |_| {
                Ok::<_, CheckpointError>((None, ()))
            })
            .unwrap();
        if round >= WARMUP {
            new_file.push(times[0]);
            in_place.push(times[1]);
        }
    }
    new_file.sort();
    in_place.sort();
    let (a, b) = (
        ms(new_file[new_file.len() / 2]),
        ms(in_place[in_place.len() / 2]),
    );
    println!(
        "{durability:?} record write, p50 of {iterations}: new file + rename {a:.3} ms; slot overwrite {b:.3} ms; ratio {:.2}",
        b / a
    );
}

const HOOKS_POD_UID: &str = "bench-hooks-uid";

/// The daemon's hooks over a checkpoint in `state_dir` holding one prepared CNI-mode claim
/// (network `list`, pod interface `net1`) for the pod [`HOOKS_POD_UID`].
fn hooks_with_one_cni_claim(
    state_dir: &std::path::Path,
    list: &CniNetworkList,
    runner: &CniRunner,
) -> PodNetworkHooks {
    let checkpoint = Arc::new(Checkpoint::open(state_dir, Recovery::Fail).unwrap());
    let nic: PreparedNic = serde_json::from_value(json!({
        "request": "nic", "pool": "bench", "device": "uplink0", "hostIfName": "uplink0",
        "config": {"name": "net1"}, "cni": list.to_json()
    }))
    .unwrap();
    let claim = PreparedClaim {
        uid: "bench-claim".into(),
        namespace: "default".into(),
        name: "bench".into(),
        pods: vec![PodRef {
            namespace: "default".into(),
            name: "bench".into(),
            uid: HOOKS_POD_UID.into(),
        }],
        pod_claim_name: None,
        nics: vec![nic],
    };
    checkpoint
        .update("bench-claim", Durability::Durable, |_| {
            Ok::<_, CheckpointError>((Some(claim), ()))
        })
        .unwrap();
    PodNetworkHooks::new(checkpoint, NetHandle::current().unwrap(), Box::new(NoHolds)).with_cni(
        CniRunner::new(
            runner.bin_dirs.clone(),
            runner.timeout,
            state_dir.join("cni-cache"),
        )
        .with_allowed_plugins(runner.allowed.clone()),
    )
}

/// The plugin chain the rounds run.
#[derive(Clone, Copy)]
enum Chain {
    /// macvlan (static IPAM) + tuning, Debian's containernetworking-plugins: real work.
    Macvlan,
    /// Two `cni-fixed` plugins: the same answer every time, nothing created.
    Fixed,
}

impl Chain {
    fn bin_dir(self) -> PathBuf {
        match self {
            Chain::Macvlan => PLUGINS.into(),
            Chain::Fixed => std::path::Path::new(env!("CARGO_BIN_EXE_cni-fixed"))
                .parent()
                .unwrap()
                .to_owned(),
        }
    }

    fn plugins(self) -> &'static [&'static str] {
        match self {
            Chain::Macvlan => &["macvlan", "static", "tuning"],
            Chain::Fixed => &["cni-fixed"],
        }
    }

    /// The default plugin allowlist and the chain's non-default plugins (an admin's
    /// `--cni-allowed-plugins`).
    fn allowlist(self) -> netclaim_api::PluginAllowlist {
        let extra = match self {
            Chain::Macvlan => "tuning",
            Chain::Fixed => "cni-fixed",
        };
        netclaim_api::PluginAllowlist::default_and([extra]).expect("a valid plugin name")
    }

    fn list(self) -> Value {
        match self {
            Chain::Macvlan => json!({
                "cniVersion": "1.0.0",
                "name": "benchnet",
                "plugins": [
                    {"type": "macvlan", "mode": "bridge",
                     "ipam": {"type": "static", "addresses": [{"address": "192.0.2.10/24"}]}},
                    {"type": "tuning", "mtu": 1400}
                ]
            }),
            Chain::Fixed => json!({
                "cniVersion": "1.0.0",
                "name": "benchnet",
                "plugins": [
                    {"type": "cni-fixed", "address": "192.0.2.10/24"},
                    {"type": "cni-fixed"}
                ]
            }),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Chain::Macvlan => "macvlan(static) + tuning",
            Chain::Fixed => "cni-fixed + cni-fixed (no kernel work)",
        }
    }
}

/// The deadline containerd gives a hook by default (2 s, less the reply's margin).
fn hook_deadline(what: &'static str) -> HookDeadline {
    HookDeadline::for_runtime(what, Duration::from_millis(1800), Duration::from_secs(2))
}

fn time(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The chain as a minimal runtime would run it: plain exec, same env, same stdin.
fn run_by_hand(runner: &CniRunner, list: &CniNetworkList, attachment: &Attachment) {
    let mut prev: Option<Value> = None;
    for plugin in &list.plugins {
        let stdin = plugin_stdin(plugin, list, prev.as_ref());
        let out = exec(
            runner,
            "ADD",
            attachment,
            plugin.plugin_type().unwrap(),
            &stdin,
        );
        prev = Some(serde_json::from_slice(&out).unwrap());
    }
    for plugin in list.plugins.iter().rev() {
        let stdin = plugin_stdin(plugin, list, prev.as_ref());
        exec(
            runner,
            "DEL",
            attachment,
            plugin.plugin_type().unwrap(),
            &stdin,
        );
    }
}

/// The chain on netclaim's exec path (`run_with_timeout`: tokio process, own process
/// group, timeout) without validation, lookup or the cache: splits the overhead.
async fn run_exec_path(runner: &CniRunner, list: &CniNetworkList, attachment: &Attachment) {
    let mut prev: Option<Value> = None;
    let order: Vec<(&str, usize)> = (0..list.plugins.len())
        .map(|i| ("ADD", i))
        .chain((0..list.plugins.len()).rev().map(|i| ("DEL", i)))
        .collect();
    for (command, index) in order {
        let plugin = &list.plugins[index];
        let stdin = Value::Object(plugin_stdin(plugin, list, prev.as_ref())).to_string();
        let path = runner.bin_dirs[0].join(plugin.plugin_type().unwrap());
        let env = runner.plugin_env(command, Some(attachment));
        let out = run_with_timeout(&path, &env, stdin.as_bytes(), runner.timeout)
            .await
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        assert!(out.status.success(), "{command}");
        if command == "ADD" {
            prev = Some(serde_json::from_slice(&out.stdout).unwrap());
        }
    }
}

fn exec(
    runner: &CniRunner,
    command: &str,
    attachment: &Attachment,
    plugin: &str,
    stdin: &serde_json::Map<String, Value>,
) -> Vec<u8> {
    let mut child = Command::new(runner.bin_dirs[0].join(plugin))
        .env_clear()
        .envs(runner.plugin_env(command, Some(attachment)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Object(stdin.clone()).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{plugin} {command}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    out.stdout
}
