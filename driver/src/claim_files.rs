//! The files a prepared claim puts on the node for the container runtime: its CDI spec
//! ([`crate::cdi`]) and its device metadata files ([`crate::device_metadata`]), kept in line
//! with the checkpoint.
//!
//! # Lifecycle
//! - **Prepare** writes them before the claim is recorded and before the kubelet is
//!   answered (the metadata files first, then the spec that mounts them), and returns each
//!   device's CDI ids; a failed record removes them again (or, for a claim the checkpoint
//!   still holds, writes them from that record). A prepare retry writes them again, which
//!   also brings them back after a reboot emptied `/var/run/cdi`.
//! - **Attach and give-back** rewrite the metadata files (the network data changes).
//! - **Unprepare** removes them after the claim's record is gone (also for a claim already
//!   gone from the checkpoint: removal is idempotent).
//! - **Start** removes the files of every claim the checkpoint does not hold (a crash
//!   between writing them and recording the claim, or between forgetting it and removing
//!   them, leaves such files) and writes those of the claims it holds.
//!
//! # What a device gets
//! A NIC that moves into the pod gets its RDMA character devices ([`crate::rdma`]); every
//! device gets the mount of its request's metadata file (when metadata is on). A device
//! with neither has no CDI device and no CDI id, and a claim without any has no spec file.
//! CNI-mode devices get no RDMA devices: their NIC stays on the host as a parent other
//! pods may share.
//!
//! All disk work runs on blocking threads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::cdi::{self, ContainerEdits, DeviceNode, SpecDir};
use crate::device_metadata::{MetadataDir, base_request};
use crate::state::{PreparedClaim, PreparedNic, PreparedRdma};

/// The CDI spec and metadata files of prepared claims. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ClaimFiles {
    specs: SpecDir,
    metadata: Option<MetadataDir>,
    sysfs_root: PathBuf,
}

/// What the start-up reconcile did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Claims whose left-over spec or metadata files were removed.
    pub removed: Vec<String>,
    /// Claims whose files were written.
    pub written: usize,
}

/// A claim's CDI spec and the CDI ids of its devices, derived from the prepared claim.
#[derive(Debug, PartialEq, Eq)]
pub struct ClaimSpec {
    /// The spec, `None` when no device has edits.
    pub spec: Option<cdi::Spec>,
    /// Per device of the claim (in order), its CDI ids.
    pub ids: Vec<Vec<String>>,
}

impl ClaimFiles {
    /// Specs in `spec_dir` under vendor `driver_name`; device metadata under
    /// `metadata_dir` (the driver's plugin data directory) when `Some`; RDMA facts from
    /// `sysfs_root`.
    ///
    /// # Errors
    /// `driver_name` is not a valid CDI vendor name.
    pub fn new(
        spec_dir: impl Into<PathBuf>,
        driver_name: &str,
        metadata_dir: Option<&Path>,
        sysfs_root: impl Into<PathBuf>,
    ) -> Result<Self, cdi::InvalidName> {
        Ok(Self {
            specs: SpecDir::new(spec_dir, driver_name)?,
            metadata: metadata_dir.map(|dir| MetadataDir::new(dir, driver_name)),
            sysfs_root: sysfs_root.into(),
        })
    }

    /// The spec directory.
    pub fn specs(&self) -> &SpecDir {
        &self.specs
    }

    /// The metadata files, when metadata is on.
    pub fn metadata(&self) -> Option<&MetadataDir> {
        self.metadata.as_ref()
    }

    /// The RDMA facts of the prepared NICs that move into pods, read from sysfs (on a
    /// blocking thread).
    pub async fn resolve_rdma(&self, nics: &mut [PreparedNic]) {
        let wanted: Vec<String> = nics
            .iter()
            .filter(|nic| !nic.is_cni())
            .map(|nic| nic.host_if_name.clone())
            .collect();
        if wanted.is_empty() {
            return;
        }
        let root = self.sysfs_root.clone();
        let found: Vec<(String, Option<PreparedRdma>)> = tokio::task::spawn_blocking(move || {
            wanted
                .into_iter()
                .map(|name| {
                    let rdma = crate::rdma::rdma_of_interface(&root, &name);
                    (name, rdma)
                })
                .collect()
        })
        .await
        .unwrap_or_default();
        for nic in nics.iter_mut().filter(|nic| !nic.is_cni()) {
            nic.rdma = found
                .iter()
                .find(|(name, _)| *name == nic.host_if_name)
                .and_then(|(_, rdma)| rdma.clone());
            if let Some(rdma) = &nic.rdma
                && !rdma.char_devices.iter().any(|d| d.path.contains("uverbs"))
            {
                tracing::warn!(
                    device = %nic.device,
                    rdma = %rdma.device,
                    "the NIC's RDMA device has no verbs character device in sysfs (is ib_uverbs loaded?); pods get no /dev/infiniband/uverbsN for it"
                );
            }
        }
    }

    /// The CDI spec of `claim` and its devices' ids.
    ///
    /// # Errors
    /// A name CDI or the metadata layout refuses (a malformed claim UID, name or request).
    pub fn claim_spec(&self, claim: &PreparedClaim) -> Result<ClaimSpec, String> {
        let mut devices = Vec::new();
        let mut ids = Vec::new();
        for nic in &claim.nics {
            let edits = self.edits(claim, nic)?;
            if edits.is_empty() {
                ids.push(Vec::new());
                continue;
            }
            let name = SpecDir::device_name(&claim.uid, &nic.device, nic.share_id.as_deref())
                .map_err(|e| e.to_string())?;
            ids.push(vec![self.specs.qualified_name(&name)]);
            devices.push(cdi::Device {
                name,
                container_edits: edits,
            });
        }
        let spec = (!devices.is_empty()).then(|| self.specs.spec(devices));
        Ok(ClaimSpec { spec, ids })
    }

    fn edits(&self, claim: &PreparedClaim, nic: &PreparedNic) -> Result<ContainerEdits, String> {
        let device_nodes = nic
            .rdma
            .iter()
            .filter(|_| !nic.is_cni())
            .flat_map(|rdma| &rdma.char_devices)
            .map(|dev| DeviceNode {
                path: dev.path.clone(),
                kind: "c".to_owned(),
                major: i64::from(dev.major),
                minor: i64::from(dev.minor),
                file_mode: Some(dev.file_mode),
            })
            .collect();
        let mounts = match &self.metadata {
            Some(metadata) => vec![metadata.mount(claim, base_request(&nic.request))?],
            None => Vec::new(),
        };
        Ok(ContainerEdits {
            device_nodes,
            mounts,
        })
    }

    /// Writes `claim`'s metadata files, then its CDI spec (or removes a spec it no longer
    /// needs), on a blocking thread; returns its devices' CDI ids.
    ///
    /// # Errors
    /// An invalid name, or the I/O error naming the file.
    pub async fn write(&self, claim: &PreparedClaim) -> Result<Vec<Vec<String>>, String> {
        let planned = self.claim_spec(claim)?;
        let files = self.clone();
        let claim = claim.clone();
        let spec = planned.spec;
        blocking(move || {
            if let Some(metadata) = &files.metadata {
                metadata.write(&claim)?;
            }
            match &spec {
                Some(spec) => files.specs.write(&claim.uid, spec),
                None => files.specs.remove(&claim.uid).map(|_| ()),
            }
        })
        .await?;
        Ok(planned.ids)
    }

    /// Rewrites `claim`'s metadata files where their content changed (after an attach or
    /// a give-back), on a blocking thread.
    ///
    /// # Errors
    /// The I/O error naming the file.
    pub async fn refresh_metadata(&self, claim: &PreparedClaim) -> Result<(), String> {
        let Some(metadata) = self.metadata.clone() else {
            return Ok(());
        };
        let claim = claim.clone();
        blocking(move || metadata.write(&claim)).await
    }

    /// Removes claim `claim_uid`'s spec, then its metadata files, on a blocking thread.
    /// Idempotent.
    ///
    /// # Errors
    /// The I/O error naming the file.
    pub async fn remove(&self, claim_uid: &str) -> Result<(), String> {
        let files = self.clone();
        let uid = claim_uid.to_owned();
        blocking(move || {
            files.specs.remove(&uid)?;
            if let Some(metadata) = &files.metadata {
                metadata.remove(&uid)?;
            }
            Ok(())
        })
        .await
    }

    /// At start: removes the files of every claim not in `claims`, and writes those of
    /// `claims`.
    ///
    /// # Errors
    /// The spec directory or the metadata root cannot be listed or a file not written;
    /// the message names it.
    pub async fn reconcile(&self, claims: Vec<PreparedClaim>) -> Result<Reconciled, String> {
        let keep: BTreeSet<String> = claims.iter().map(|c| c.uid.clone()).collect();
        let files = self.clone();
        let mut removed = blocking(move || {
            let mut removed = files.specs.cleanup(|uid| keep.contains(uid))?;
            if let Some(metadata) = &files.metadata {
                removed.extend(metadata.cleanup(|uid| keep.contains(uid))?);
            }
            Ok(removed)
        })
        .await?;
        removed.sort();
        removed.dedup();
        let mut written = 0;
        for claim in &claims {
            self.write(claim)
                .await
                .map_err(|e| format!("claim {}: {e}", claim.qualified_name()))?;
            written += 1;
        }
        Ok(Reconciled { removed, written })
    }
}

/// Runs blocking file work off the async runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("file work failed: {e}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::state::RdmaCharDevice;
    use serde_json::json;

    fn nic(device: &str, cni: bool) -> PreparedNic {
        let mut nic: PreparedNic = serde_json::from_value(json!({
            "request": "nic", "pool": "node-a", "device": device, "hostIfName": device,
            "config": {}
        }))
        .unwrap();
        if cni {
            nic.cni = Some(json!({"cniVersion": "1.0.0", "name": "n", "plugins": []}));
        }
        nic.rdma = Some(PreparedRdma {
            device: "mlx5_0".into(),
            char_devices: vec![RdmaCharDevice {
                path: "/dev/infiniband/uverbs0".into(),
                major: 231,
                minor: 192,
                file_mode: 0o666,
            }],
            netns_exclusive: false,
        });
        nic
    }

    fn claim(nics: Vec<PreparedNic>) -> PreparedClaim {
        PreparedClaim {
            uid: "c0ffee00-0000-4000-8000-000000000001".into(),
            namespace: "default".into(),
            name: "rdma-nic".into(),
            pods: Vec::new(),
            pod_claim_name: None,
            nics,
        }
    }

    #[tokio::test]
    async fn ids_spec_and_files_follow_the_claim() {
        let temp = tempfile::tempdir().unwrap();
        let plugin_dir = temp.path().join("plugins/netclaim.dev");
        let files = ClaimFiles::new(
            temp.path().join("cdi"),
            "netclaim.dev",
            Some(&plugin_dir),
            temp.path(),
        )
        .unwrap();
        let c = claim(vec![nic("eth1", false), nic("eth2", true)]);
        let ids = files.write(&c).await.unwrap();
        assert_eq!(
            ids,
            [
                vec![format!("netclaim.dev/net={}-eth1", c.uid)],
                vec![format!("netclaim.dev/net={}-eth2", c.uid)]
            ]
        );
        let spec = files.specs().read(&c.uid).unwrap().unwrap();
        let moved = &spec.devices[0].container_edits;
        assert_eq!(moved.device_nodes.len(), 1);
        assert_eq!(moved.mounts[0].options, ["ro", "bind"]);
        assert_eq!(
            moved.mounts[0].container_path,
            "/var/run/kubernetes.io/dra-device-attributes/resourceclaims/rdma-nic/nic/netclaim.dev-metadata.json"
        );
        assert!(Path::new(&moved.mounts[0].host_path).is_file());
        // The CNI-mode device keeps its NIC on the host: no RDMA nodes, only the mount.
        assert!(spec.devices[1].container_edits.device_nodes.is_empty());

        // Without metadata, a device without RDMA has no CDI device at all.
        let bare =
            ClaimFiles::new(temp.path().join("cdi2"), "netclaim.dev", None, temp.path()).unwrap();
        let mut plain = nic("eth3", false);
        plain.rdma = None;
        let ids = bare.write(&claim(vec![plain])).await.unwrap();
        assert_eq!(ids, [Vec::<String>::new()]);
        assert_eq!(bare.specs().read(&c.uid).unwrap(), None);

        files.remove(&c.uid).await.unwrap();
        assert_eq!(files.specs().read(&c.uid).unwrap(), None);
        assert!(!plugin_dir.join("dra-device-metadata").join(&c.uid).exists());
        files.remove(&c.uid).await.unwrap();
    }

    #[tokio::test]
    async fn reconcile_removes_strays_and_rewrites_what_the_checkpoint_holds() {
        let temp = tempfile::tempdir().unwrap();
        let files = ClaimFiles::new(
            temp.path().join("cdi"),
            "netclaim.dev",
            Some(&temp.path().join("plugin")),
            temp.path(),
        )
        .unwrap();
        let kept = claim(vec![nic("eth1", false)]);
        let mut stray = claim(vec![nic("eth2", false)]);
        stray.uid = "5a5a5a5a-0000-4000-8000-000000000002".into();
        files.write(&stray).await.unwrap();
        let done = files.reconcile(vec![kept.clone()]).await.unwrap();
        assert_eq!(
            done,
            Reconciled {
                removed: vec![stray.uid.clone()],
                written: 1
            }
        );
        assert!(files.specs().read(&stray.uid).unwrap().is_none());
        assert!(files.specs().read(&kept.uid).unwrap().is_some());
        let metadata = files.metadata().unwrap();
        assert!(metadata.read(&stray.uid, "nic").unwrap().is_none());
        assert!(metadata.read(&kept.uid, "nic").unwrap().is_some());
    }
}
