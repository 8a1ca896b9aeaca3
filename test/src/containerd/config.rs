//! The files a test node's containerd reads: `config.toml` (version 2) and the CNI conflist.
//!
//! containerd 1.7 gets a version-2 config, containerd 2.x a version-3 one (its own format;
//! 2.1.9 also accepts version 2, migrating it with a warning, "Configuration migrated from
//! version 2, use `containerd config migrate` to avoid migration"). The settings are the
//! same: where 1.7 has one CRI plugin (`io.containerd.grpc.v1.cri`), 2.x splits it into
//! `io.containerd.cri.v1.images` (snapshotter, the pinned `sandbox` image) and
//! `io.containerd.cri.v1.runtime` (the rest; CNI's `bin_dir` becomes `bin_dirs`); the NRI
//! section is the same in both. What differs by default between the majors is set
//! explicitly, so both behave alike: NRI (off by default in 1.7, on in 2.x) and CDI (off by
//! default in 1.7, on in 2.x reading `/etc/cdi` and `/var/run/cdi`; here on, reading only
//! the node's own `cdi` dir). The test `effective_config_keeps_the_node_settings` in
//! `test/tests/containerd_node.rs` checks what the installed containerd makes of it
//! (`containerd config dump`).
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
    /// The only CDI spec directory containerd reads.
    pub cdi_dir: PathBuf,
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
            cdi_dir: dir.join("cdi"),
        }
    }
}

/// A TOML basic string holding `path` (JSON string escapes are valid TOML).
fn toml_str(path: &Path) -> String {
    serde_json::Value::String(path.display().to_string()).to_string()
}

/// containerd's `config.toml` for a test node of `major`: version 2 for containerd 1.7,
/// version 3 (2.x's own format) for containerd 2.x, with the same settings.
///
/// The CRI settings are the ones this machine needs (see /work/shared/node-facts.md):
/// `restrict_oom_score_adj` because the machine lacks CAP_SYS_RESOURCE, `disable_apparmor`,
/// pods' netns mounts under the private state dir, and bookworm's runc (trixie's needs a
/// newer glibc). NRI is on with short timeouts so a stuck plugin fails a test fast.
pub fn containerd_config(
    paths: &NodePaths,
    sandbox_image: &str,
    nri: bool,
    major: super::ContainerdMajor,
) -> String {
    let (version, cri) = match major {
        super::ContainerdMajor::V1 => (2, cri_v2(paths, sandbox_image)),
        super::ContainerdMajor::V2 => (3, cri_v3(paths, sandbox_image)),
    };
    format!(
        r#"# netclaim test node for containerd {major}
version = {version}
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
{cri}
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
        nri_disable = !nri,
        nri_socket = toml_str(&paths.nri_socket),
        nri_plugins = toml_str(&paths.dir.join("nri-plugins")),
        nri_conf = toml_str(&paths.dir.join("nri-conf")),
    )
}

/// The CRI plugin of containerd 1.7 (config version 2): one `io.containerd.grpc.v1.cri`.
fn cri_v2(paths: &NodePaths, sandbox_image: &str) -> String {
    let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
    format!(
        r#"
[{cri}]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  enable_cdi = true
  cdi_spec_dirs = [{cdi}]
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
"#,
        runc = super::RUNC,
        runc_root = toml_str(&paths.runc_root),
        cni_bin = super::CNI_BIN_DIR,
        cni_conf = toml_str(&paths.cni_conf_dir),
        cdi = toml_str(&paths.cdi_dir),
    )
}

/// The CRI plugins of containerd 2.x (config version 3): images (snapshotter, the pinned
/// sandbox image) and runtime (everything else) are plugins of their own.
fn cri_v3(paths: &NodePaths, sandbox_image: &str) -> String {
    let images = r#"plugins."io.containerd.cri.v1.images""#;
    let runtime = r#"plugins."io.containerd.cri.v1.runtime""#;
    format!(
        r#"
[{images}]
  snapshotter = "overlayfs"
  [{images}.pinned_images]
    sandbox = "{sandbox_image}"

[{runtime}]
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  enable_cdi = true
  cdi_spec_dirs = [{cdi}]
  [{runtime}.containerd]
    default_runtime_name = "runc"
    [{runtime}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{runtime}.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = {runc_root}
        SystemdCgroup = false
  [{runtime}.cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = {cni_conf}
    max_conf_num = 1
"#,
        runc = super::RUNC,
        runc_root = toml_str(&paths.runc_root),
        cni_bin = super::CNI_BIN_DIR,
        cni_conf = toml_str(&paths.cni_conf_dir),
        cdi = toml_str(&paths.cdi_dir),
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
        let config = containerd_config(
            &paths,
            "netclaim.test/pause:1",
            true,
            super::super::ContainerdMajor::V2,
        );
        for line in config
            .lines()
            .filter(|l| l.contains("= \"/") || l.contains("= [\"/"))
        {
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
