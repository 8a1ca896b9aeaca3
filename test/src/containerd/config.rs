//! The files a test node's containerd reads: `config.toml` (version 2) and the CNI conflist.
//!
//! Every path containerd would otherwise share with the machine (root, state, sockets, opt,
//! runc's state root, CNI config and IPAM data) points into the node's own directory, so
//! several nodes can run side by side and leave nothing behind.

use std::path::{Path, PathBuf};

/// Where one node keeps everything; all paths live under `dir`.
#[derive(Debug, Clone)]
pub struct NodePaths {
    /// The node's private directory.
    pub dir: PathBuf,
    /// containerd's `config.toml`.
    pub config: PathBuf,
    /// containerd's persistent root (content store, snapshots, metadata).
    pub root: PathBuf,
    /// containerd's state dir (sockets of tasks, the pods' netns mounts).
    pub state: PathBuf,
    /// The containerd gRPC socket (CRI is served here too).
    pub grpc_socket: PathBuf,
    /// The containerd ttrpc socket.
    pub ttrpc_socket: PathBuf,
    /// The NRI socket plugins connect to.
    pub nri_socket: PathBuf,
    /// runc's state root (`--root`); the shim adds the namespace (`k8s.io`).
    pub runc_root: PathBuf,
    /// The CRI CNI `conf_dir`.
    pub cni_conf_dir: PathBuf,
    /// host-local IPAM's data dir.
    pub ipam_dir: PathBuf,
    /// Pods' `log_directory` parent.
    pub pod_logs: PathBuf,
    /// containerd's stdout and stderr.
    pub log: PathBuf,
    /// Scratch space for building the pause image.
    pub build: PathBuf,
}

impl NodePaths {
    /// Lays out the paths under `dir` (nothing is created).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            config: dir.join("config.toml"),
            root: dir.join("root"),
            state: dir.join("state"),
            grpc_socket: dir.join("containerd.sock"),
            ttrpc_socket: dir.join("containerd-ttrpc.sock"),
            nri_socket: dir.join("nri.sock"),
            runc_root: dir.join("runc"),
            cni_conf_dir: dir.join("cni"),
            ipam_dir: dir.join("ipam"),
            pod_logs: dir.join("pods"),
            log: dir.join("containerd.log"),
            build: dir.join("build"),
        }
    }
}

/// A TOML basic string holding `path` (JSON string escapes are valid TOML).
fn toml_str(path: &Path) -> String {
    serde_json::Value::String(path.display().to_string()).to_string()
}

/// containerd's `config.toml` for a test node.
///
/// The CRI settings are the ones this machine needs (see /work/shared/node-facts.md):
/// `restrict_oom_score_adj` because the machine lacks CAP_SYS_RESOURCE, `disable_apparmor`,
/// pods' netns mounts under the private state dir, and bookworm's runc (trixie's needs a
/// newer glibc). NRI is on with short timeouts so a stuck plugin fails a test fast.
pub fn containerd_config(paths: &NodePaths, sandbox_image: &str, nri: bool) -> String {
    let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
    format!(
        r#"version = 2
root = {root}
state = {state}
# Snapshotters that cannot work here only slow the start down.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = {grpc}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[{cri}]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [{cri}.containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = {runc_root}
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{cni_bin}"
    conf_dir = {cni_conf}
    max_conf_num = 1

[plugins."io.containerd.nri.v1.nri"]
  disable = {nri_disable}
  socket_path = {nri_socket}
  plugin_path = {nri_plugins}
  plugin_config_path = {nri_conf}
  plugin_registration_timeout = "5s"
  plugin_request_timeout = "2s"
  disable_connections = false
"#,
        root = toml_str(&paths.root),
        state = toml_str(&paths.state),
        grpc = toml_str(&paths.grpc_socket),
        ttrpc = toml_str(&paths.ttrpc_socket),
        opt = toml_str(&paths.dir.join("opt")),
        runc = super::RUNC,
        runc_root = toml_str(&paths.runc_root),
        cni_bin = super::CNI_BIN_DIR,
        cni_conf = toml_str(&paths.cni_conf_dir),
        nri_disable = !nri,
        nri_socket = toml_str(&paths.nri_socket),
        nri_plugins = toml_str(&paths.dir.join("nri-plugins")),
        nri_conf = toml_str(&paths.dir.join("nri-conf")),
    )
}

/// The pods' primary network: a bridge in the node's netns with host-local addresses from
/// `subnet` (IPAM state kept in the node's directory), then loopback.
pub fn cni_conflist(paths: &NodePaths, subnet: &str) -> String {
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "netclaim-test",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "ncbr0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet }]],
                    "dataDir": paths.ipam_dir,
                },
            },
            { "type": "loopback" },
        ],
    });
    format!("{conflist:#}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_points_everything_into_the_node_dir() {
        let paths = NodePaths::new(Path::new("/tmp/node-x"));
        let config = containerd_config(&paths, "netclaim.test/pause:1", true);
        for line in config.lines().filter(|l| l.contains("= \"/")) {
            let value = line.split('"').nth(1).unwrap();
            assert!(
                value.starts_with("/tmp/node-x")
                    || value == "/usr/sbin/runc"
                    || value == "/usr/lib/cni",
                "{line}"
            );
        }
        assert!(config.contains("disable = false"));
        assert!(config.contains("restrict_oom_score_adj = true"));
    }

    #[test]
    fn conflist_is_json_with_the_subnet() {
        let paths = NodePaths::new(Path::new("/tmp/node-x"));
        let text = cni_conflist(&paths, "203.0.113.0/24");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "203.0.113.0/24"
        );
        assert_eq!(value["plugins"][0]["ipam"]["dataDir"], "/tmp/node-x/ipam");
    }
}
