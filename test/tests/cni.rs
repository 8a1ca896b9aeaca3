//! CNI mode against the real Debian CNI plugins (`/usr/lib/cni`), in network namespaces
//! the tests create: a "node" netns (where the plugins run, as on a node) and "pod"
//! netns. Only documentation ranges are used.
//!
//! Each test moves its own thread into its node netns before running plugins: a plugin
//! inherits the netns of the thread that spawns it, and `#[tokio::test]` runs the test on
//! one thread. No other thread (and nothing on the host) is affected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netclaim::cni::{Attachment, CniError, CniRunner, DeviceRef, network_data, substitute_device};
use netclaim::network_status::{NetworkStatusEntry, update_network_status};
use netclaim::state::PodRef;
use netclaim_api::{CniNetworkList, PluginAllowlist};
use netclaim_test::netns::TestNetns;
use serde_json::{Value, json};
use tempfile::TempDir;

const PLUGINS: &str = "/usr/lib/cni";

/// The Debian plugins these tests run.
const NEEDED: [&str; 6] = [
    "macvlan",
    "bridge",
    "host-local",
    "host-device",
    "tuning",
    "static",
];

/// The default plugin allowlist plus `more`.
fn allow(more: &[&str]) -> PluginAllowlist {
    PluginAllowlist::default_and(more.iter().copied()).unwrap()
}

/// Fails the test, naming what to install, unless every plugin in [`NEEDED`] is installed.
fn require_plugins() {
    let missing: Vec<&str> = NEEDED
        .into_iter()
        .filter(|p| !Path::new(PLUGINS).join(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "CNI plugins {missing:?} missing in {PLUGINS}: install Debian's \
         containernetworking-plugins (hack/install-deps.sh does, as root)"
    );
}

/// A node netns the current thread has entered, with its temp dirs.
struct Node {
    netns: TestNetns,
    cache: TempDir,
    data: TempDir,
}

impl Node {
    fn new(prefix: &str) -> Self {
        let netns = TestNetns::new(prefix).unwrap();
        let file = File::open(netns.path()).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        Self {
            netns,
            cache: TempDir::new().unwrap(),
            data: TempDir::new().unwrap(),
        }
    }

    /// A runner over the Debian plugins, allowing every type these tests run (as an
    /// admin's `--cni-allowed-plugins` would: bridge and tuning are not in the default).
    fn runner(&self) -> CniRunner {
        CniRunner::new(
            vec![PathBuf::from(PLUGINS)],
            Duration::from_secs(20),
            self.cache.path().to_owned(),
        )
        .with_allowed_plugins(allow(&["bridge", "tuning"]))
    }

    /// A veth end in the node, up, to act as a NIC.
    fn nic(&self, name: &str) {
        self.netns.add_veth(name, &format!("{name}p")).unwrap();
        self.netns.ip(&["link", "set", name, "up"]).unwrap();
        self.netns
            .ip(&["link", "set", &format!("{name}p"), "up"])
            .unwrap();
    }

    fn cache_files(&self) -> Vec<String> {
        std::fs::read_dir(self.cache.path())
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// host-local's allocation files (one per IP) under its data dir.
    fn allocations(&self, network: &str) -> Vec<String> {
        std::fs::read_dir(self.data.path().join(network))
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Pod {
    netns: TestNetns,
    attachment: Attachment,
}

impl Pod {
    fn new(n: usize) -> Self {
        let netns = TestNetns::new("cnipod").unwrap();
        let attachment = Attachment {
            container_id: format!("sandbox{n:04}"),
            netns: netns.path(),
            ifname: "net1".into(),
            pod: PodRef {
                namespace: "default".into(),
                name: format!("pod-{n}"),
                uid: format!("uid-{n}"),
            },
        };
        Self { netns, attachment }
    }

    /// Interfaces in the pod other than lo.
    fn links(&self) -> Vec<String> {
        let out = self.netns.ip(&["-j", "link", "show"]).unwrap();
        let links: Vec<Value> = serde_json::from_str(&out).unwrap();
        links
            .iter()
            .filter_map(|l| l["ifname"].as_str())
            .filter(|n| *n != "lo")
            .map(str::to_owned)
            .collect()
    }

    /// `(addresses in CIDR form, mac)` of an interface, from `ip -j addr`.
    fn addr(&self, ifname: &str) -> (Vec<String>, String) {
        let link = self.netns.link_json(ifname).unwrap();
        let ips = link["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["scope"] == "global")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect();
        (ips, link["address"].as_str().unwrap().to_owned())
    }
}

fn list(value: Value) -> CniNetworkList {
    CniNetworkList::parse(value.to_string().as_bytes()).unwrap()
}

fn macvlan_list(name: &str, address: &str) -> CniNetworkList {
    list(json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {"type": "macvlan", "mode": "bridge",
             "ipam": {"type": "static", "addresses": [{"address": address}]}},
            {"type": "tuning", "mtu": 1400}
        ]
    }))
}

fn uplink(ifname: &str) -> DeviceRef {
    DeviceRef {
        ifname: ifname.into(),
        pci_address: None,
    }
}

#[tokio::test]
async fn macvlan_with_tuning_add_then_del_leaves_nothing_and_status_matches_the_netns() {
    require_plugins();
    let node = Node::new("cninode");
    node.nic("uplink0");
    let pod = Pod::new(1);
    let runner = node.runner();
    let network = substitute_device(
        &macvlan_list("macnet", "192.0.2.10/24"),
        None,
        &uplink("uplink0"),
    )
    .unwrap();
    assert_eq!(network.plugins[0].0["master"], "uplink0");

    let result = runner.add(&network, &pod.attachment).await.unwrap();
    assert_eq!(pod.links(), ["net1"]);
    let link = pod.netns.link_json("net1").unwrap();
    assert_eq!(link["mtu"], 1400, "tuning ran after macvlan");
    assert_eq!(link["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(node.cache_files(), ["macnet-sandbox0001-net1.json"]);

    // networkData and the network-status entry match what is in the pod's netns.
    let (ips, mac) = pod.addr("net1");
    let data = network_data(&result, "net1").unwrap();
    let data_ips: Vec<String> = data.ips.iter().map(ToString::to_string).collect();
    assert_eq!(data_ips, ips);
    assert_eq!(data.hardware_address.as_deref(), Some(mac.as_str()));
    let entry = NetworkStatusEntry::from_cni_result("default/macnet", "net1", &result, None);
    let primary = r#"[{"name":"cbr0","interface":"eth0","ips":["10.244.0.5"],"default":true}]"#;
    let annotation = update_network_status(Some(primary), &[entry], &Default::default()).unwrap();
    let entries: Vec<Value> = serde_json::from_str(&annotation).unwrap();
    assert_eq!(entries[0]["interface"], "eth0", "other entries untouched");
    assert_eq!(entries[1]["interface"], "net1");
    assert_eq!(entries[1]["ips"], json!(["192.0.2.10"]));
    assert_eq!(entries[1]["mac"], mac);
    assert_eq!(entries[1]["default"], false);

    runner.check("macnet", &pod.attachment).await.unwrap();
    runner.del(&network, &pod.attachment).await.unwrap();
    assert!(pod.links().is_empty(), "{:?}", pod.links());
    assert!(node.cache_files().is_empty());
    assert!(node.netns.has_link("uplink0"), "the parent NIC stays");
}

fn bridge_list(node: &Node, name: &str) -> CniNetworkList {
    list(json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{
            "type": "bridge", "bridge": "cnibr0", "isGateway": false,
            "ipam": {"type": "host-local", "dataDir": node.data.path(),
                     "ranges": [[{"subnet": "198.51.100.0/24"}]]}
        }]
    }))
}

#[tokio::test]
async fn bridge_host_local_del_after_a_restart_runs_from_the_cache() {
    require_plugins();
    let node = Node::new("cninode");
    let pod = Pod::new(2);
    let network = bridge_list(&node, "brnet");
    let result = node.runner().add(&network, &pod.attachment).await.unwrap();
    assert_eq!(pod.links(), ["net1"]);
    let (ips, _) = pod.addr("net1");
    let allocated = node.allocations("brnet");
    assert_eq!(allocated.len(), 1);
    assert_eq!(ips, [format!("{}/24", allocated[0])]);
    assert_eq!(
        network_data(&result, "net1").unwrap().ips[0].to_string(),
        ips[0]
    );

    // "Restart": a new runner that knows only the cache dir and the network name.
    let restarted = node.runner();
    restarted
        .del_cached("brnet", &pod.attachment)
        .await
        .unwrap();
    assert!(pod.links().is_empty());
    assert!(node.allocations("brnet").is_empty(), "IP released");
    assert!(node.cache_files().is_empty());
    let again = restarted
        .del_cached("brnet", &pod.attachment)
        .await
        .unwrap_err();
    let CniError::NotCached {
        network,
        container_id,
        ifname,
    } = &again
    else {
        panic!("want NotCached, got {again:?}");
    };
    assert_eq!(
        (network.as_str(), container_id.as_str(), ifname.as_str()),
        ("brnet", "sandbox0002", "net1")
    );
}

#[tokio::test]
async fn host_device_moves_the_device_in_and_back_out() {
    require_plugins();
    let node = Node::new("cninode");
    node.nic("hd0");
    let pod = Pod::new(3);
    let network = list(json!({
        "cniVersion": "1.0.0", "name": "hdnet",
        "plugins": [{"type": "host-device",
                     "ipam": {"type": "static", "addresses": [{"address": "203.0.113.5/24"}]}}]
    }));
    let network = substitute_device(&network, None, &uplink("hd0")).unwrap();
    assert_eq!(network.plugins[0].0["device"], "hd0");
    let runner = node.runner();
    runner.add(&network, &pod.attachment).await.unwrap();
    assert_eq!(pod.links(), ["net1"]);
    assert!(!node.netns.has_link("hd0"));
    assert_eq!(pod.addr("net1").0, ["203.0.113.5/24"]);
    runner.del(&network, &pod.attachment).await.unwrap();
    assert!(pod.links().is_empty());
    assert!(
        node.netns.has_link("hd0"),
        "back in the node under its name"
    );
}

#[tokio::test]
async fn a_failing_plugin_mid_chain_is_undone_and_its_message_reported() {
    require_plugins();
    let node = Node::new("cninode");
    let pod = Pod::new(4);
    // A second plugin that refuses every command with a CNI error (a device-taking plugin
    // such as host-device may not stand second in a chain any more).
    let bin = TempDir::new().unwrap();
    write_script(
        bin.path(),
        "refuser",
        r#"echo '{"cniVersion": "1.0.0", "code": 11, "msg": "refused: no such uplink"}'; exit 1"#,
    );
    let runner = CniRunner::new(
        vec![bin.path().to_owned(), PathBuf::from(PLUGINS)],
        Duration::from_secs(20),
        node.cache.path().to_owned(),
    )
    .with_allowed_plugins(allow(&["bridge", "refuser"]));
    let mut network = bridge_list(&node, "failnet");
    network.plugins.extend(
        list(json!({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "refuser"}]})).plugins,
    );
    let error = runner.add(&network, &pod.attachment).await.unwrap_err();
    // As a runtime's teardown after a failed setup does, DEL ran for the whole list, in
    // reverse: the refuser's DEL failed too, and bridge's DEL still removed the veth and
    // released the lease.
    let CniError::CleanupFailed { add, del } = &error else {
        panic!("want the ADD failure with a failed cleanup, got {error:?}");
    };
    let CniError::Plugin(failure) = add.as_ref() else {
        panic!("want a plugin error, got {add:?}");
    };
    let (plugin, command, msg) = (&failure.plugin, failure.command, &failure.msg);
    assert_eq!((plugin.as_str(), command), ("refuser", "ADD"));
    assert_eq!(
        (failure.code, msg.as_str()),
        (Some(11), "refused: no such uplink")
    );
    assert!(error.to_string().contains(msg.as_str()), "{error}");
    let CniError::Plugin(del) = del.as_ref() else {
        panic!("want the refuser's DEL failure, got {del:?}");
    };
    assert_eq!((del.plugin.as_str(), del.command), ("refuser", "DEL"));
    assert!(
        pod.links().is_empty(),
        "bridge's veth removed: {:?}",
        pod.links()
    );
    assert!(node.allocations("failnet").is_empty(), "IP released");
    assert!(node.cache_files().is_empty());
}

#[tokio::test]
async fn bad_configs_are_refused_with_field_paths_before_anything_runs() {
    // Runs no plugin: every list here is refused before anything is exec'd.
    let error = CniNetworkList::parse(
        br#"{"cniVersion": "0.3.1", "name": "n", "plugins": [{"type": "bridge"}, {"mode": "x"}]}"#,
    )
    .unwrap_err();
    let paths: Vec<_> = error.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["cniVersion", "plugins[1].type"], "{error}");

    // A plugin that would leave a mark, then a path-traversal type: nothing may run.
    let bin = TempDir::new().unwrap();
    let mark = bin.path().join("ran");
    write_script(
        bin.path(),
        "marker",
        &format!(
            "touch {}\necho '{{\"cniVersion\":\"1.0.0\"}}'",
            mark.display()
        ),
    );
    let node = Node::new("cninode");
    let pod = Pod::new(5);
    let runner = CniRunner::new(
        vec![bin.path().to_owned()],
        Duration::from_secs(5),
        node.cache.path().to_owned(),
    )
    .with_allowed_plugins(allow(&["marker", "sh"]));
    for bad in ["../../bin/sh", "/bin/true"] {
        let mut network = list(json!({"cniVersion": "1.0.0", "name": "n",
                                      "plugins": [{"type": "marker"}]}));
        let mut plugin = network.plugins[0].clone();
        plugin.0.insert("type".into(), bad.into());
        network.plugins.push(plugin);
        let error = runner.add(&network, &pod.attachment).await.unwrap_err();
        match &error {
            CniError::Config(config) => {
                assert_eq!(config.errors[0].path, "plugins[1].type", "{error}")
            }
            other => panic!("want a config error, got {other:?}"),
        }
        assert!(!mark.exists(), "a plugin ran before the list was refused");
    }
    // A plugin found only on PATH is not found.
    let network = list(json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "sh"}]}));
    let error = runner.add(&network, &pod.attachment).await.unwrap_err();
    let CniError::PluginNotFound { plugin, dirs } = &error else {
        panic!("want PluginNotFound, got {error:?}");
    };
    assert_eq!(
        (plugin.as_str(), dirs.as_slice()),
        ("sh", [bin.path().to_owned()].as_slice())
    );
    assert!(!mark.exists(), "a plugin ran");

    // A plugin (or an IPAM type) off the admin's allowlist, installed or not: the whole
    // list is refused before the first plugin runs, for ADD and for DEL alike.
    write_script(bin.path(), "portmap", "exit 0");
    let chained = list(json!({"cniVersion": "1.0.0", "name": "n",
                              "plugins": [{"type": "marker"}, {"type": "portmap"}]}));
    let ipam = list(json!({"cniVersion": "1.0.0", "name": "n",
                           "plugins": [{"type": "marker", "ipam": {"type": "dhcp"}}]}));
    for (network, path, plugin) in [
        (&chained, "plugins[1].type", "portmap"),
        (&ipam, "plugins[0].ipam.type", "dhcp"),
    ] {
        for outcome in [
            runner.add(network, &pod.attachment).await.map(drop),
            runner.del(network, &pod.attachment).await,
        ] {
            let error = outcome.unwrap_err();
            let CniError::Config(config) = &error else {
                panic!("want a config error, got {error:?}");
            };
            assert_eq!(config.errors[0].path, path, "{error}");
            assert!(
                config.errors[0]
                    .message
                    .starts_with(&format!("\"{plugin}\" is not an allowed CNI plugin")),
                "{error}"
            );
        }
    }
    assert!(!mark.exists(), "a plugin ran before the list was refused");
}

fn write_script(dir: &Path, name: &str, body: &str) {
    netclaim_test::netns::write_executable(dir, name, &format!("#!/bin/sh\n{body}\n")).unwrap();
}

/// Gone, or a zombie awaiting its new parent's reaping: no longer running either way.
fn process_ended(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_hanging_plugin_is_killed_with_its_children_at_the_timeout() {
    let bin = TempDir::new().unwrap();
    let child_pid = bin.path().join("child.pid");
    write_script(
        bin.path(),
        "hang",
        &format!(
            "[ \"$CNI_COMMAND\" = ADD ] || exit 0\nsleep 1000 &\necho $! > {}\nwait",
            child_pid.display()
        ),
    );
    let node = Node::new("cninode");
    let pod = Pod::new(6);
    let runner = CniRunner::new(
        vec![bin.path().to_owned()],
        Duration::from_millis(500),
        node.cache.path().to_owned(),
    )
    .with_allowed_plugins(allow(&["hang"]));
    let network =
        list(json!({"cniVersion": "1.0.0", "name": "hangnet", "plugins": [{"type": "hang"}]}));
    let started = Instant::now();
    let error = runner.add(&network, &pod.attachment).await.unwrap_err();
    let took = started.elapsed();
    let CniError::Timeout {
        plugin, command, ..
    } = &error
    else {
        panic!("want a timeout, got {error:?}");
    };
    assert_eq!((plugin.as_str(), *command), ("hang", "ADD"));
    assert!(
        error.to_string().contains("did not finish within 500ms"),
        "{error}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let pid = std::fs::read_to_string(&child_pid).unwrap();
    let pid = pid.trim();
    // SIGKILL was sent to the group before `add` returned; its delivery is immediate but
    // the exit is asynchronous, so poll the process's state with a deadline.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_ended(pid) && Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    assert!(process_ended(pid), "the plugin's child {pid} survived");
    assert!(node.cache_files().is_empty());
}

#[tokio::test]
async fn ten_pods_each_get_a_macvlan_child_of_one_parent() {
    require_plugins();
    let node = Node::new("cninode");
    node.nic("uplink0");
    let runner = node.runner();
    let pods: Vec<Pod> = (0..10).map(|i| Pod::new(100 + i)).collect();
    let networks: Vec<CniNetworkList> = (0..10)
        .map(|i| {
            substitute_device(
                &macvlan_list("macnet", &format!("192.0.2.{}/24", 20 + i)),
                None,
                &uplink("uplink0"),
            )
            .unwrap()
        })
        .collect();
    let adds = pods
        .iter()
        .zip(&networks)
        .map(|(pod, network)| runner.add(network, &pod.attachment));
    for result in futures::future::join_all(adds).await {
        result.unwrap();
    }
    let mut macs = std::collections::BTreeSet::new();
    for (i, pod) in pods.iter().enumerate() {
        let (ips, mac) = pod.addr("net1");
        assert_eq!(ips, [format!("192.0.2.{}/24", 20 + i)]);
        macs.insert(mac);
    }
    assert_eq!(macs.len(), 10, "each child has its own MAC");
    assert_eq!(node.cache_files().len(), 10);
    for (pod, network) in pods.iter().zip(&networks) {
        runner.del(network, &pod.attachment).await.unwrap();
        assert!(pod.links().is_empty());
    }
    assert!(node.cache_files().is_empty());
}

#[tokio::test]
async fn status_and_gc_run_only_for_1_1_0_and_gc_prunes_the_cache() {
    require_plugins();
    let bin = TempDir::new().unwrap();
    let seen = bin.path().join("seen");
    // A 1.1.0 plugin: ADD echoes a result, STATUS says "unavailable" (code 50), GC records
    // its stdin.
    write_script(
        bin.path(),
        "v11",
        &format!(
            r#"case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}}' ;;
ADD) cat >/dev/null; echo '{{"cniVersion":"1.1.0","interfaces":[],"ips":[]}}' ;;
STATUS) echo '{{"cniVersion":"1.1.0","code":50,"msg":"datastore not ready"}}'; exit 1 ;;
GC) cat > {seen} ;;
*) cat >/dev/null ;;
esac"#,
            seen = seen.display()
        ),
    );
    let node = Node::new("cninode");
    let runner = CniRunner::new(
        vec![bin.path().to_owned(), PLUGINS.into()],
        Duration::from_secs(10),
        node.cache.path().to_owned(),
    )
    .with_allowed_plugins(allow(&["v11", "tuning"]));
    // 1.0.0 plugins in a 1.0.0 list: STATUS does not exist, nothing runs.
    let old = list(json!({"cniVersion": "1.0.0", "name": "old", "plugins": [{"type": "tuning"}]}));
    let report = runner.status(&old, None).await.unwrap();
    assert_eq!(
        (report.ran.len(), report.skipped),
        (0, vec!["tuning".to_owned()])
    );
    // In a 1.1.0 list, the Debian tuning (which speaks up to 1.0.0) is skipped, v11 asked.
    let new = list(json!({"cniVersion": "1.1.0", "name": "new",
                          "plugins": [{"type": "v11"}, {"type": "tuning"}]}));
    let error = runner.status(&new, None).await.unwrap_err();
    assert_eq!(error.code(), Some(50), "{error}");
    assert!(error.to_string().contains("datastore not ready"), "{error}");

    let only_v11 =
        list(json!({"cniVersion": "1.1.0", "name": "new", "plugins": [{"type": "v11"}]}));
    let (keep, drop) = (Pod::new(7), Pod::new(8));
    runner.add(&only_v11, &keep.attachment).await.unwrap();
    runner.add(&only_v11, &drop.attachment).await.unwrap();
    assert_eq!(node.cache_files().len(), 2);
    let valid = vec![(keep.attachment.container_id.clone(), "net1".to_owned())];
    let report = runner.gc(&only_v11, &valid).await.unwrap();
    assert_eq!(report.ran, ["v11"]);
    let stdin: Value = serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(
        stdin["cni.dev/valid-attachments"],
        json!([{"containerID": "sandbox0007", "ifname": "net1"}])
    );
    assert_eq!(stdin["name"], "new");
    assert_eq!(node.cache_files(), ["new-sandbox0007-net1.json"]);
}

#[tokio::test]
async fn an_unreadable_cache_entry_does_not_block_del() {
    require_plugins();
    let node = Node::new("cninode");
    let pod = Pod::new(9);
    let network = bridge_list(&node, "tornnet");
    let runner = node.runner();
    runner.add(&network, &pod.attachment).await.unwrap();
    assert_eq!(node.allocations("tornnet").len(), 1);
    // What a machine crash can leave after a rename whose data never reached the disk.
    std::fs::write(runner.cache.path("tornnet", &pod.attachment), b"").unwrap();
    runner.del(&network, &pod.attachment).await.unwrap();
    assert!(pod.links().is_empty());
    assert!(node.allocations("tornnet").is_empty(), "IP released");
    assert!(node.cache_files().is_empty());
}
