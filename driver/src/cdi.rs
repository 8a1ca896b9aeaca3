//! CDI (Container Device Interface) spec files: how a prepared claim's devices reach the
//! pod's containers.
//!
//! The kubelet passes the `cdi_device_ids` that prepare returns to the runtime with every
//! container that uses the claim (CRI `ContainerConfig.CDI_devices`); the runtime (containerd
//! with CDI on: `enable_cdi = true` in 1.7's CRI section, the default in 2.x) looks each id up
//! in the spec files of its `cdi_spec_dirs` (default `/etc/cdi` and `/var/run/cdi`) and
//! applies the device's `containerEdits` to the container's OCI spec. netclaim's edits are
//! the RDMA character devices of a moved NIC (`deviceNodes`) and the bind mount of the
//! claim's device metadata file (`mounts`, see [`crate::device_metadata`]).
//!
//! # Layout
//! - One spec file per claim: `<dir>/<vendor>-<class>_<claim uid>.json` (CDI's naming for
//!   transient specs, `vendor-class_transientID`), kind `<driver name>/net`, so the vendor
//!   is the driver name (`netclaim.dev`) and the class is `net`.
//! - One CDI device per prepared device of the claim, named `<claim uid>-<device>`, or
//!   `<claim uid>-<device>-<share id>` for an allocation of a shared device: unique per
//!   claim, device and share. Its id is `<vendor>/<class>=<name>`
//!   (`netclaim.dev/net=0b5f...-eth1`).
//! - `cdiVersion` [`CDI_VERSION`] (0.5.0): the features used need no more (0.4.0 for mount
//!   types, 0.5.0 for device names starting with a digit, as claim UIDs may), and every
//!   runtime here accepts it: containerd 1.7.24 vendors the CDI library 0.7.2 (versions
//!   0.3.0-0.7.0), 2.1.9 vendors 1.0.1 (0.3.0-1.0.0), and 1.7.0's 0.5.4 knew 0.5.0. The
//!   Kubernetes Go helper writes its metadata specs with 0.5.0 too.
//!
//! # Guarantees
//! - A spec file is replaced atomically (written to a hidden `.tmp` file the CDI cache
//!   ignores, then renamed): the runtime reads either the old or the new spec, never a torn
//!   one. No fsync: spec dirs under `/var/run` are tmpfs, gone after a reboot anyway, and a
//!   spec lost to a crash is written again at the next prepare or daemon start.
//! - The JSON has exactly the fields of the CDI spec the runtimes parse strictly (the CDI
//!   library rejects unknown fields).
//! - Names are checked against the CDI library's rules before anything is written.
//!
//! # Assumptions
//! - The directory is netclaim's to write for its vendor and class: files named
//!   `<vendor>-<class>_*.json` there are netclaim's, and [`SpecDir::cleanup`] removes those of
//!   claims it no longer holds.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The `cdiVersion` netclaim writes (see the [module docs](self)).
pub const CDI_VERSION: &str = "0.5.0";

/// Where runtimes look for transient spec files by default (containerd 1.7 and 2.x, CRI-O).
pub const DEFAULT_SPEC_DIR: &str = "/var/run/cdi";

/// The CDI class of netclaim's devices (the vendor is the driver name).
pub const CLASS: &str = "net";

/// A CDI spec file, with the fields netclaim uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The CDI spec version.
    #[serde(rename = "cdiVersion")]
    pub cdi_version: String,
    /// `<vendor>/<class>`.
    pub kind: String,
    /// The devices.
    pub devices: Vec<Device>,
}

/// One CDI device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The device name, unique within the vendor and class.
    pub name: String,
    /// What the runtime changes in the container's OCI spec.
    #[serde(rename = "containerEdits")]
    pub container_edits: ContainerEdits,
}

/// The edits of one device (never empty: the CDI library refuses a device without edits).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerEdits {
    /// Device nodes the runtime creates in the container (and allows in its device cgroup).
    #[serde(rename = "deviceNodes", default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNode>,
    /// Mounts added to the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
}

impl ContainerEdits {
    /// Whether there is nothing to edit.
    pub fn is_empty(&self) -> bool {
        self.device_nodes.is_empty() && self.mounts.is_empty()
    }
}

/// A device node. With `type` and a non-zero `major` given, the CDI library takes them as
/// they are and does not stat a host path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// Path in the container.
    pub path: String,
    /// `c` for a character device.
    #[serde(rename = "type")]
    pub kind: String,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// Permission bits of the node.
    #[serde(rename = "fileMode", default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
}

/// A bind mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The source on the host.
    #[serde(rename = "hostPath")]
    pub host_path: String,
    /// Where it appears in the container.
    #[serde(rename = "containerPath")]
    pub container_path: String,
    /// Mount options (`ro`, `bind`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A name that CDI would refuse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} {name:?} is not a valid CDI {what}: {reason}")]
pub struct InvalidName {
    what: &'static str,
    name: String,
    reason: &'static str,
}

/// netclaim's spec files in one CDI spec directory.
#[derive(Clone, Debug)]
pub struct SpecDir {
    dir: PathBuf,
    vendor: String,
}

impl SpecDir {
    /// The spec files of vendor `vendor` (the driver name) in `dir`.
    ///
    /// # Errors
    /// `vendor` is not a valid CDI vendor name (it must start with a letter and end with a
    /// letter or digit, with only letters, digits, `_`, `-` and `.` between).
    pub fn new(dir: impl Into<PathBuf>, vendor: &str) -> Result<Self, InvalidName> {
        check_vendor_or_class("vendor", vendor)?;
        check_vendor_or_class("class", CLASS)?;
        Ok(Self {
            dir: dir.into(),
            vendor: vendor.to_owned(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The spec kind, `<vendor>/<class>`.
    pub fn kind(&self) -> String {
        format!("{}/{CLASS}", self.vendor)
    }

    /// The fully qualified id of device `name`, as the kubelet passes it to the runtime.
    pub fn qualified_name(&self, name: &str) -> String {
        format!("{}/{CLASS}={name}", self.vendor)
    }

    /// The CDI device name of a claim's device: `<claim uid>-<device>[-<share id>]`.
    ///
    /// # Errors
    /// The name is not one CDI accepts (a claim UID or share id with other characters than
    /// letters, digits, `_`, `-`, `.` and `:`).
    pub fn device_name(
        claim_uid: &str,
        device: &str,
        share_id: Option<&str>,
    ) -> Result<String, InvalidName> {
        let name = match share_id {
            Some(share) => format!("{claim_uid}-{device}-{share}"),
            None => format!("{claim_uid}-{device}"),
        };
        check_device_name(&name)?;
        Ok(name)
    }

    /// The spec file of claim `claim_uid`.
    ///
    /// # Errors
    /// The UID is not usable in a file name CDI would read (see [`SpecDir::device_name`]).
    pub fn spec_path(&self, claim_uid: &str) -> Result<PathBuf, InvalidName> {
        check_device_name(claim_uid).map_err(|e| InvalidName {
            what: "claim UID",
            ..e
        })?;
        Ok(self
            .dir
            .join(format!("{}{claim_uid}.json", self.file_prefix())))
    }

    /// `<vendor>-<class>_`: every netclaim spec file name starts with it.
    fn file_prefix(&self) -> String {
        format!("{}-{CLASS}_", self.vendor)
    }

    /// A spec of this vendor and class with `devices`.
    pub fn spec(&self, devices: Vec<Device>) -> Spec {
        Spec {
            cdi_version: CDI_VERSION.to_owned(),
            kind: self.kind(),
            devices,
        }
    }

    /// Writes (or atomically replaces) the spec file of claim `claim_uid`. Blocking.
    ///
    /// # Errors
    /// An invalid UID, or the I/O error, naming the file.
    pub fn write(&self, claim_uid: &str, spec: &Spec) -> io::Result<()> {
        let path = self.spec_path(claim_uid).map_err(io::Error::other)?;
        let body = serde_json::to_vec_pretty(spec).map_err(io::Error::other)?;
        fs::create_dir_all(&self.dir)
            .map_err(|e| with_path(e, "creating the CDI spec directory", &self.dir))?;
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other("spec file without a name"))?;
        // Hidden and not `.json`: the CDI cache skips it, so a runtime never reads it half
        // written.
        let temp = self.dir.join(format!(".{file_name}.tmp"));
        write_new(&temp, &body).map_err(|e| with_path(e, "writing the CDI spec", &temp))?;
        fs::rename(&temp, &path).map_err(|e| {
            let _ = fs::remove_file(&temp);
            with_path(e, "renaming the CDI spec into place", &path)
        })
    }

    /// Reads the spec file of claim `claim_uid`, if there is one. Blocking.
    ///
    /// # Errors
    /// An unreadable or unparsable file.
    pub fn read(&self, claim_uid: &str) -> io::Result<Option<Spec>> {
        let path = self.spec_path(claim_uid).map_err(io::Error::other)?;
        match fs::read(&path) {
            Ok(body) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| with_path(io::Error::other(e), "parsing the CDI spec", &path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(with_path(e, "reading the CDI spec", &path)),
        }
    }

    /// Removes the spec file of claim `claim_uid`; `Ok(false)` when there was none.
    /// Blocking.
    ///
    /// # Errors
    /// The I/O error, naming the file.
    pub fn remove(&self, claim_uid: &str) -> io::Result<bool> {
        let path = self.spec_path(claim_uid).map_err(io::Error::other)?;
        remove_if_there(&path).map_err(|e| with_path(e, "removing the CDI spec", &path))
    }

    /// Removes every spec file of this vendor and class whose claim `keep` says no to, and
    /// every left-over temporary file; returns the claim UIDs whose specs were removed.
    /// Blocking.
    ///
    /// # Errors
    /// The directory cannot be read, or a file cannot be removed.
    pub fn cleanup(&self, keep: impl Fn(&str) -> bool) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(with_path(e, "listing the CDI spec directory", &self.dir)),
        };
        let prefix = self.file_prefix();
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| with_path(e, "listing", &self.dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let temp = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".tmp"))
                .is_some_and(|n| n.starts_with(&prefix));
            let uid = name
                .strip_prefix(&prefix)
                .and_then(|n| n.strip_suffix(".json"));
            let stale = match uid {
                Some(uid) => !keep(uid),
                None => temp,
            };
            if stale {
                let path = entry.path();
                remove_if_there(&path).map_err(|e| with_path(e, "removing", &path))?;
                if let Some(uid) = uid {
                    removed.push(uid.to_owned());
                }
            }
        }
        removed.sort();
        Ok(removed)
    }
}

/// Writes `body` to a fresh file at `path` (replacing a left-over one).
pub(crate) fn write_new(path: &Path, body: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(body)?;
    file.flush()
}

/// Removes `path`; `Ok(false)` when it was not there.
pub(crate) fn remove_if_there(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// `error`, saying what was being done to which path.
pub(crate) fn with_path(error: io::Error, action: &str, path: &Path) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("{action} {}: {error}", path.display()),
    )
}

/// The CDI library's rule for vendor and class names (`pkg/parser`, `validateVendorOrClassName`):
/// a letter first, a letter or digit last, letters, digits, `_`, `-` and `.` between.
fn check_vendor_or_class(what: &'static str, name: &str) -> Result<(), InvalidName> {
    let bad = |reason| InvalidName {
        what,
        name: name.to_owned(),
        reason,
    };
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return Err(bad("it is empty"));
    };
    if !first.is_ascii_alphabetic() {
        return Err(bad("it must start with a letter"));
    }
    if !last.is_ascii_alphanumeric() {
        return Err(bad("it must end with a letter or digit"));
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(bad("only letters, digits, '_', '-' and '.' are allowed"));
    }
    Ok(())
}

/// The CDI library's rule for device names (`pkg/parser`, `ValidateDeviceName`): a letter or
/// digit first and last, letters, digits, `_`, `-`, `.` and `:` between.
fn check_device_name(name: &str) -> Result<(), InvalidName> {
    let bad = |reason| InvalidName {
        what: "device name",
        name: name.to_owned(),
        reason,
    };
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return Err(bad("it is empty"));
    };
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err(bad("it must start and end with a letter or digit"));
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return Err(bad(
            "only letters, digits, '_', '-', '.' and ':' are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const UID: &str = "0b5f3c2e-1d2a-4c3b-9e8f-0123456789ab";

    fn dir() -> (tempfile::TempDir, SpecDir) {
        let temp = tempfile::tempdir().unwrap();
        let specs = SpecDir::new(temp.path().join("cdi"), "netclaim.dev").unwrap();
        (temp, specs)
    }

    fn one_device(name: &str) -> Spec {
        let (_temp, specs) = dir();
        specs.spec(vec![Device {
            name: name.to_owned(),
            container_edits: ContainerEdits {
                device_nodes: vec![DeviceNode {
                    path: "/dev/infiniband/uverbs0".into(),
                    kind: "c".into(),
                    major: 231,
                    minor: 192,
                    file_mode: Some(0o666),
                }],
                mounts: Vec::new(),
            },
        }])
    }

    #[test]
    fn names_are_unique_per_claim_device_and_share_and_follow_cdi_rules() {
        let plain = SpecDir::device_name(UID, "eth1", None).unwrap();
        assert_eq!(plain, format!("{UID}-eth1"));
        let shared = SpecDir::device_name(UID, "eth1", Some("5c1d-77")).unwrap();
        assert_eq!(shared, format!("{UID}-eth1-5c1d-77"));
        assert_ne!(
            SpecDir::device_name(UID, "eth1", Some("a")).unwrap(),
            SpecDir::device_name(UID, "eth1", Some("b")).unwrap()
        );
        let (_temp, specs) = dir();
        assert_eq!(
            specs.qualified_name(&plain),
            format!("netclaim.dev/net={UID}-eth1")
        );
        assert_eq!(specs.kind(), "netclaim.dev/net");
        let error = SpecDir::device_name("uid/../x", "eth1", None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "device name \"uid/../x-eth1\" is not a valid CDI device name: only letters, \
             digits, '_', '-', '.' and ':' are allowed"
        );
        let error = specs.spec_path("-leading").unwrap_err();
        assert!(
            error.to_string().starts_with("claim UID \"-leading\""),
            "{error}"
        );
    }

    #[test]
    fn the_vendor_must_be_a_cdi_vendor_name() {
        let error = SpecDir::new("/tmp/x", "1netclaim.dev").unwrap_err();
        assert_eq!(
            error.to_string(),
            "vendor \"1netclaim.dev\" is not a valid CDI vendor: it must start with a letter"
        );
        assert!(SpecDir::new("/tmp/x", "example.com").is_ok());
    }

    #[test]
    fn a_spec_is_written_as_the_cdi_library_reads_it_and_replaced_atomically() {
        let (_temp, specs) = dir();
        let spec = one_device(&format!("{UID}-eth1"));
        specs.write(UID, &spec).unwrap();
        let path = specs.spec_path(UID).unwrap();
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            format!("netclaim.dev-net_{UID}.json")
        );
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "cdiVersion": "0.5.0",
                "kind": "netclaim.dev/net",
                "devices": [{
                    "name": format!("{UID}-eth1"),
                    "containerEdits": {"deviceNodes": [{
                        "path": "/dev/infiniband/uverbs0", "type": "c", "major": 231,
                        "minor": 192, "fileMode": 438
                    }]}
                }]
            })
        );
        // Replacing keeps one file and leaves no temporary one behind.
        let mut other = spec.clone();
        other.devices[0].container_edits.device_nodes[0].minor = 193;
        specs.write(UID, &other).unwrap();
        assert_eq!(specs.read(UID).unwrap(), Some(other));
        let names: Vec<String> = fs::read_dir(specs.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [format!("netclaim.dev-net_{UID}.json")]);
    }

    #[test]
    fn removal_is_idempotent() {
        let (_temp, specs) = dir();
        specs.write(UID, &one_device("d")).unwrap();
        assert!(specs.remove(UID).unwrap());
        assert!(!specs.remove(UID).unwrap());
        assert_eq!(specs.read(UID).unwrap(), None);
    }

    #[test]
    fn cleanup_removes_specs_of_unknown_claims_and_temp_files_only() {
        let (_temp, specs) = dir();
        specs.write("kept", &one_device("a")).unwrap();
        specs.write("gone", &one_device("b")).unwrap();
        fs::write(specs.dir().join(".netclaim.dev-net_x.json.tmp"), "{").unwrap();
        fs::write(specs.dir().join("vendor.com-gpu.json"), "{}").unwrap();
        fs::write(specs.dir().join("other.dev-net_gone.json"), "{}").unwrap();
        let removed = specs.cleanup(|uid| uid == "kept").unwrap();
        assert_eq!(removed, ["gone"]);
        let mut names: Vec<String> = fs::read_dir(specs.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "netclaim.dev-net_kept.json",
                "other.dev-net_gone.json",
                "vendor.com-gpu.json"
            ]
        );
        // A missing directory has nothing to clean.
        let missing = SpecDir::new(specs.dir().join("nope"), "netclaim.dev").unwrap();
        assert_eq!(missing.cleanup(|_| false).unwrap(), Vec::<String>::new());
    }
}
