//! Device metadata for containers (KEP-5304, "DRA device attributes downward API": alpha in
//! Kubernetes 1.36, beta in 1.37): a claim's network data, readable as a file inside every
//! container that uses the claim.
//!
//! netclaim writes the files the way the Kubernetes Go helper does
//! (`k8s.io/dynamic-resource-allocation/kubeletplugin`, `metadata.go`; types in
//! `api/metadata`), so consumers written for any DRA driver (or its `devicemetadata`
//! reader) read netclaim's:
//! - **In the container**, per request of the claim, read-only:
//!   `/var/run/kubernetes.io/dra-device-attributes/resourceclaims/<claim name>/<request>/netclaim.dev-metadata.json`,
//!   or for a claim made from a ResourceClaimTemplate (annotation
//!   `resource.kubernetes.io/pod-claim-name`)
//!   `.../resourceclaimtemplates/<pod's claim name>/<request>/netclaim.dev-metadata.json`.
//!   `<request>` is the request's name without a subrequest (`nic`, not `nic/fast`).
//! - **The format**: a JSON stream holding the same object once per API version, newest
//!   first; today one object, `apiVersion: metadata.resource.k8s.io/v1alpha1`,
//!   `kind: DeviceMetadata`, `metadata: {name, namespace, uid, generation}` of the claim,
//!   `podClaimName` when set, and `requests: [{name, devices: [{driver, pool, name,
//!   attributes, networkData}]}]`: `attributes` as the device is published in the
//!   ResourceSlice, `networkData` (`interfaceName`, `ips`, `hardwareAddress`) as in the
//!   claim's `status.devices[].networkData`.
//! - **On the host**: `<plugins dir>/<driver>/dra-device-metadata/<claim uid>/<request>/metadata.json`
//!   (the Go helper keys the directory by `<namespace>_<name>`; netclaim by UID, so a claim
//!   deleted and recreated under the same name never shares a file with its predecessor).
//!   The host path is not part of the consumer-facing API.
//! - **Delivery**: a CDI bind mount (`ro`, `bind`) in the claim's CDI spec
//!   ([`crate::cdi`]): every netclaim CDI device of a request mounts its request's file
//!   (the runtime keeps one mount per container path).
//!
//! # When the content is known
//! The interface name, addresses and MAC inside the pod are only known after the attach,
//! which runs in the NRI `RunPodSandbox` hook: after prepare, before any container of the
//! pod is created. So:
//! 1. prepare writes the file with what is certain then: the devices and their published
//!    attributes, no `networkData` (generation 1). A prediction from the config (the
//!    configured name, static addresses) is left out: if the attach never happens (the
//!    runtime's NRI connection drops between prepare and RUN), the pod would read data for
//!    an interface it does not have.
//! 2. after an attach is recorded, the hook rewrites the file with `networkData`
//!    (generation + 1), before it answers the runtime, so the first container already
//!    reads it; after a give-back it is rewritten without.
//!
//! The content is a function of the prepared claim as the checkpoint records it, so every
//! write is level-triggered: unchanged content is not rewritten, and the generation only
//! grows when the content changes.
//!
//! # Guarantees
//! - A new file appears whole (written to a temporary file and renamed). An existing file
//!   is rewritten in place, never replaced: a running container's bind mount holds the
//!   file's inode, so a replacement would be invisible to it (a late attach, after the
//!   containers started, must reach them). The new bytes are written over the old ones and
//!   the file then cut to length, so a reader never sees an empty file; a reader racing the
//!   rewrite can see a mix, which `metadata.generation` lets it notice and re-read.
//! - Path components taken from outside data (claim UID, name, request) are checked: a
//!   component that is empty, `.`, `..` or holds a `/` is refused.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::cdi::{self, with_path};
use crate::state::{AttachPhase, PreparedClaim, PreparedNic};

/// Where metadata files are mounted in containers.
pub const CONTAINER_DIR: &str = "/var/run/kubernetes.io/dra-device-attributes";
/// The metadata API version netclaim writes.
pub const API_VERSION: &str = "metadata.resource.k8s.io/v1alpha1";
/// The metadata kind.
pub const KIND: &str = "DeviceMetadata";
/// The annotation the ResourceClaim controller puts on claims made from a template: the
/// pod's name for the claim (`pod.spec.resourceClaims[].name`).
pub const POD_CLAIM_NAME_ANNOTATION: &str = "resource.kubernetes.io/pod-claim-name";
/// The directory under the driver's plugin data directory (as the Go helper names it).
pub const HOST_SUBDIR: &str = "dra-device-metadata";

/// The request a metadata file is for: the request's name without a subrequest.
pub fn base_request(request: &str) -> &str {
    request.split_once('/').map_or(request, |(base, _)| base)
}

/// The metadata files of one driver on this node.
#[derive(Clone, Debug)]
pub struct MetadataDir {
    root: PathBuf,
    driver: String,
}

impl MetadataDir {
    /// The files of `driver` under `<plugin_data_dir>/dra-device-metadata`.
    pub fn new(plugin_data_dir: &Path, driver: &str) -> Self {
        Self {
            root: plugin_data_dir.join(HOST_SUBDIR),
            driver: driver.to_owned(),
        }
    }

    /// The directory holding every claim's files.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host file of request `request` (base name) of claim `claim_uid`.
    ///
    /// # Errors
    /// A component that is not a plain file name.
    pub fn host_path(&self, claim_uid: &str, request: &str) -> Result<PathBuf, String> {
        Ok(self
            .root
            .join(component("claim UID", claim_uid)?)
            .join(component("request", request)?)
            .join("metadata.json"))
    }

    /// Where the file of request `request` (base name) of `claim` appears in containers.
    ///
    /// # Errors
    /// A component that is not a plain file name.
    pub fn container_path(&self, claim: &PreparedClaim, request: &str) -> Result<String, String> {
        let (subdir, name) = match &claim.pod_claim_name {
            Some(pod_claim) if !pod_claim.is_empty() => ("resourceclaimtemplates", pod_claim),
            _ => ("resourceclaims", &claim.name),
        };
        Ok(format!(
            "{CONTAINER_DIR}/{subdir}/{}/{}/{}-metadata.json",
            component("claim name", name)?,
            component("request", request)?,
            self.driver
        ))
    }

    /// The CDI mount of request `request`'s file of `claim`.
    ///
    /// # Errors
    /// As [`MetadataDir::host_path`].
    pub fn mount(&self, claim: &PreparedClaim, request: &str) -> Result<cdi::Mount, String> {
        Ok(cdi::Mount {
            host_path: self.host_path(&claim.uid, request)?.display().to_string(),
            container_path: self.container_path(claim, request)?,
            options: vec!["ro".into(), "bind".into()],
        })
    }

    /// The metadata object of request `request` (base name) of `claim`, at `generation`.
    pub fn document(&self, claim: &PreparedClaim, request: &str, generation: i64) -> Value {
        let nics: Vec<&PreparedNic> = claim
            .nics
            .iter()
            .filter(|nic| base_request(&nic.request) == request)
            .collect();
        let full_request = nics.first().map_or(request, |nic| nic.request.as_str());
        let devices: Vec<Value> = nics.iter().map(|nic| self.device(nic)).collect();
        let mut object = json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": claim.name,
                "namespace": claim.namespace,
                "uid": claim.uid,
                "generation": generation,
            },
            "requests": [{"name": full_request, "devices": devices}],
        });
        if let Some(pod_claim) = &claim.pod_claim_name {
            object["podClaimName"] = Value::String(pod_claim.clone());
        }
        object
    }

    fn device(&self, nic: &PreparedNic) -> Value {
        let mut device = Map::new();
        device.insert("driver".into(), Value::String(self.driver.clone()));
        device.insert("pool".into(), Value::String(nic.pool.clone()));
        device.insert("name".into(), Value::String(nic.device.clone()));
        if let Some(attributes) = nic
            .published
            .as_ref()
            .and_then(|d| d.get("attributes"))
            .filter(|a| a.as_object().is_some_and(|a| !a.is_empty()))
        {
            device.insert("attributes".into(), attributes.clone());
        }
        let network = nic
            .attachment
            .as_ref()
            .filter(|a| a.phase == AttachPhase::Attached)
            .and_then(|a| a.network.as_ref());
        if let Some(network) = network
            && let Ok(data) = serde_json::to_value(&network.data)
        {
            device.insert("networkData".into(), data);
        }
        Value::Object(device)
    }

    /// The base requests of `claim`'s devices, in order, without repeats.
    pub fn requests(claim: &PreparedClaim) -> Vec<&str> {
        let mut requests: Vec<&str> = Vec::new();
        for nic in &claim.nics {
            let request = base_request(&nic.request);
            if !requests.contains(&request) {
                requests.push(request);
            }
        }
        requests
    }

    /// Writes every request file of `claim` whose content changed (see the
    /// [module docs](self)), and removes files of requests the claim no longer has.
    /// Blocking.
    ///
    /// # Errors
    /// An invalid path component, or the I/O error naming the file.
    pub fn write(&self, claim: &PreparedClaim) -> io::Result<()> {
        let requests = Self::requests(claim);
        for request in &requests {
            let path = self
                .host_path(&claim.uid, request)
                .map_err(io::Error::other)?;
            self.write_file(&path, claim, request)?;
        }
        let claim_dir = self
            .root
            .join(component("claim UID", &claim.uid).map_err(io::Error::other)?);
        if let Ok(entries) = fs::read_dir(&claim_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !requests.iter().any(|r| name.to_str() == Some(*r)) {
                    let path = entry.path();
                    fs::remove_dir_all(&path).map_err(|e| with_path(e, "removing", &path))?;
                }
            }
        }
        Ok(())
    }

    fn write_file(&self, path: &Path, claim: &PreparedClaim, request: &str) -> io::Result<()> {
        let render = |generation: i64| -> io::Result<Vec<u8>> {
            let mut body = serde_json::to_vec_pretty(&self.document(claim, request, generation))
                .map_err(io::Error::other)?;
            body.push(b'\n');
            Ok(body)
        };
        let existing = match fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(with_path(e, "reading the device metadata", path)),
        };
        let Some(existing) = existing else {
            let dir = path
                .parent()
                .ok_or_else(|| io::Error::other("metadata file without a directory"))?;
            fs::create_dir_all(dir)
                .map_err(|e| with_path(e, "creating the metadata directory", dir))?;
            let temp = dir.join(".metadata.json.tmp");
            cdi::write_new(&temp, &render(1)?)
                .map_err(|e| with_path(e, "writing the device metadata", &temp))?;
            return fs::rename(&temp, path)
                .map_err(|e| with_path(e, "renaming the device metadata into place", path));
        };
        let generation = generation_of(&existing).unwrap_or(0);
        if generation > 0 && render(generation)? == existing {
            return Ok(());
        }
        let body = render(generation + 1)?;
        let file = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| with_path(e, "opening the device metadata", path))?;
        file.write_all_at(&body, 0)
            .and_then(|()| file.set_len(u64::try_from(body.len()).unwrap_or(u64::MAX)))
            .map_err(|e| with_path(e, "rewriting the device metadata", path))
    }

    /// Reads the first object of request `request`'s file of claim `claim_uid`. Blocking.
    ///
    /// # Errors
    /// An unreadable or unparsable file.
    pub fn read(&self, claim_uid: &str, request: &str) -> io::Result<Option<Value>> {
        let path = self
            .host_path(claim_uid, request)
            .map_err(io::Error::other)?;
        match fs::read(&path) {
            Ok(bytes) => first_object(&bytes)
                .map(Some)
                .map_err(|e| with_path(io::Error::other(e), "parsing", &path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(with_path(e, "reading", &path)),
        }
    }

    /// Removes claim `claim_uid`'s files; `Ok(false)` when there were none. Blocking.
    ///
    /// # Errors
    /// The I/O error, naming the directory.
    pub fn remove(&self, claim_uid: &str) -> io::Result<bool> {
        let dir = self
            .root
            .join(component("claim UID", claim_uid).map_err(io::Error::other)?);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(with_path(e, "removing the device metadata", &dir)),
        }
    }

    /// Removes the files of every claim `keep` says no to; returns their UIDs. Blocking.
    ///
    /// # Errors
    /// The root cannot be listed, or a directory cannot be removed.
    pub fn cleanup(&self, keep: impl Fn(&str) -> bool) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(with_path(e, "listing", &self.root)),
        };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let Ok(uid) = entry.file_name().into_string() else {
                continue;
            };
            if !keep(&uid) {
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(|e| with_path(e, "removing", &path))?;
                removed.push(uid);
            }
        }
        removed.sort();
        Ok(removed)
    }
}

/// The first JSON object of a metadata stream.
pub fn first_object(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    match stream.next() {
        Some(value) => value,
        None => serde_json::from_slice(b""),
    }
}

/// `metadata.generation` of a file's first object.
fn generation_of(bytes: &[u8]) -> Option<i64> {
    first_object(bytes)
        .ok()?
        .pointer("/metadata/generation")?
        .as_i64()
}

/// `value` as one path component.
fn component<'a>(what: &str, value: &'a str) -> Result<&'a str, String> {
    if value.is_empty()
        || value == "."
        || value == ".."
        || value.contains('/')
        || value.contains('\0')
    {
        return Err(format!(
            "{what} {value:?} cannot name a device metadata path"
        ));
    }
    Ok(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::state::{AttachedNetwork, Attachment, LinkSnapshot, NetworkData};

    fn nic(request: &str, device: &str) -> PreparedNic {
        serde_json::from_value(json!({
            "request": request, "pool": "node-a", "device": device, "hostIfName": device,
            "config": {},
            "published": {"name": device, "attributes": {
                "ifName": {"string": device}, "rdma": {"bool": true}}}
        }))
        .unwrap()
    }

    fn claim(nics: Vec<PreparedNic>) -> PreparedClaim {
        PreparedClaim {
            uid: "6f2c1e2a-0000-4000-8000-000000000001".into(),
            namespace: "team-a".into(),
            name: "fast-nic".into(),
            pods: Vec::new(),
            pod_claim_name: None,
            nics,
        }
    }

    fn attach(nic: &mut PreparedNic, name: &str) {
        nic.attachment = Some(Attachment {
            sandbox_id: "s".into(),
            netns_path: "/run/netns/p".into(),
            host: LinkSnapshot::default(),
            pod_if_name: name.into(),
            phase: AttachPhase::Attached,
            pod: None,
            network: Some(AttachedNetwork {
                data: NetworkData {
                    interface_name: name.into(),
                    ips: vec!["192.0.2.10/24".parse().unwrap()],
                    hardware_address: Some("02:00:00:00:00:0a".into()),
                },
                cni_result: None,
                since: "2026-01-01T00:00:00Z".into(),
                late: false,
            }),
            error: None,
        });
    }

    #[test]
    fn paths_follow_the_go_helper_layout() {
        let dir = MetadataDir::new(
            Path::new("/var/lib/kubelet/plugins/netclaim.dev"),
            "netclaim.dev",
        );
        let mut c = claim(vec![nic("nic/fast", "eth1")]);
        assert_eq!(
            dir.container_path(&c, "nic").unwrap(),
            "/var/run/kubernetes.io/dra-device-attributes/resourceclaims/fast-nic/nic/netclaim.dev-metadata.json"
        );
        c.pod_claim_name = Some("net".into());
        assert_eq!(
            dir.container_path(&c, "nic").unwrap(),
            "/var/run/kubernetes.io/dra-device-attributes/resourceclaimtemplates/net/nic/netclaim.dev-metadata.json"
        );
        assert_eq!(
            dir.host_path(&c.uid, "nic").unwrap(),
            Path::new(
                "/var/lib/kubelet/plugins/netclaim.dev/dra-device-metadata/6f2c1e2a-0000-4000-8000-000000000001/nic/metadata.json"
            )
        );
        assert_eq!(
            dir.host_path("../etc", "nic").unwrap_err(),
            "claim UID \"../etc\" cannot name a device metadata path"
        );
        assert_eq!(base_request("nic/fast"), "nic");
    }

    #[test]
    fn the_document_has_the_v1alpha1_shape() {
        let dir = MetadataDir::new(Path::new("/p"), "netclaim.dev");
        let mut first = nic("nic", "eth1");
        attach(&mut first, "net1");
        let c = claim(vec![first, nic("nic", "eth2"), nic("other", "eth3")]);
        assert_eq!(
            dir.document(&c, "nic", 2),
            json!({
                "apiVersion": "metadata.resource.k8s.io/v1alpha1",
                "kind": "DeviceMetadata",
                "metadata": {"name": "fast-nic", "namespace": "team-a",
                             "uid": "6f2c1e2a-0000-4000-8000-000000000001", "generation": 2},
                "requests": [{"name": "nic", "devices": [
                    {"driver": "netclaim.dev", "pool": "node-a", "name": "eth1",
                     "attributes": {"ifName": {"string": "eth1"}, "rdma": {"bool": true}},
                     "networkData": {"interfaceName": "net1", "ips": ["192.0.2.10/24"],
                                     "hardwareAddress": "02:00:00:00:00:0a"}},
                    {"driver": "netclaim.dev", "pool": "node-a", "name": "eth2",
                     "attributes": {"ifName": {"string": "eth2"}, "rdma": {"bool": true}}}
                ]}]
            })
        );
    }

    #[test]
    fn writes_are_level_triggered_in_place_and_bump_the_generation() {
        let temp = tempfile::tempdir().unwrap();
        let dir = MetadataDir::new(temp.path(), "netclaim.dev");
        let mut c = claim(vec![nic("nic", "eth1")]);
        dir.write(&c).unwrap();
        let path = dir.host_path(&c.uid, "nic").unwrap();
        let read = |dir: &MetadataDir| dir.read(&c.uid, "nic").unwrap().unwrap();
        assert_eq!(read(&dir)["metadata"]["generation"], 1);
        assert!(
            read(&dir)["requests"][0]["devices"][0]
                .get("networkData")
                .is_none()
        );
        let inode = || std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        let before = inode();
        // Same content: nothing is written.
        let modified = fs::metadata(&path).unwrap().modified().unwrap();
        dir.write(&c).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), modified);
        assert_eq!(read(&dir)["metadata"]["generation"], 1);
        // Attached: networkData appears, generation 2, the same inode (a bind mount of it
        // sees the change), and the file parses whole (the longer and then the shorter
        // content leave no tail behind).
        attach(&mut c.nics[0], "net1");
        dir.write(&c).unwrap();
        assert_eq!(read(&dir)["metadata"]["generation"], 2);
        assert_eq!(
            read(&dir)["requests"][0]["devices"][0]["networkData"]["interfaceName"],
            "net1"
        );
        assert_eq!(inode(), before);
        c.nics[0].attachment = None;
        dir.write(&c).unwrap();
        let bytes = fs::read(&path).unwrap();
        let all: Vec<Value> = serde_json::Deserializer::from_slice(&bytes)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0]["metadata"]["generation"], 3);
        assert!(
            all[0]["requests"][0]["devices"][0]
                .get("networkData")
                .is_none()
        );
        assert_eq!(inode(), before);
        assert!(bytes.ends_with(b"}\n"));
    }

    #[test]
    fn removal_and_cleanup() {
        let temp = tempfile::tempdir().unwrap();
        let dir = MetadataDir::new(temp.path(), "netclaim.dev");
        let mut c = claim(vec![nic("nic", "eth1"), nic("spare", "eth2")]);
        dir.write(&c).unwrap();
        // A request the claim no longer has loses its file.
        c.nics.pop();
        dir.write(&c).unwrap();
        assert!(dir.read(&c.uid, "spare").unwrap().is_none());
        let mut other = claim(vec![nic("nic", "eth3")]);
        other.uid = "other".into();
        dir.write(&other).unwrap();
        assert_eq!(dir.cleanup(|uid| uid == c.uid).unwrap(), ["other"]);
        assert!(dir.read("other", "nic").unwrap().is_none());
        assert!(dir.remove(&c.uid).unwrap());
        assert!(!dir.remove(&c.uid).unwrap());
        assert_eq!(dir.cleanup(|_| false).unwrap(), Vec::<String>::new());
    }
}
