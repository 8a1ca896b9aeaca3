//! The install: `deploy/install.yaml` is exactly what the real `kubectl kustomize` (the
//! 1.36 client of hack/install-deps.sh) renders from `deploy/kustomize/overlays/default`
//! (`hack/render-install.sh --check`, which is shown to catch a stale file); every overlay
//! renders with the image set once in the base's `images:`, carries what it is for, passes
//! the official schemas of Kubernetes 1.35, 1.36 and 1.37 (PyPI `kubernetes-validate
//! --strict`, installed by hack/validate-manifests.sh) and `netclaim validate`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

const KUBECTL: &str = "/opt/netclaim-deps/kubectl/usr/bin/kubectl";
const OVERLAYS: [&str; 3] = ["default", "cni-mode", "shared-nics"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn kubectl() -> &'static str {
    assert!(
        Path::new(KUBECTL).is_file(),
        "{KUBECTL} is missing: run hack/install-deps.sh (it installs Debian sid's \
         kubernetes-client 1.36 there)"
    );
    KUBECTL
}

fn render(overlay: &str) -> String {
    let out = Command::new(kubectl())
        .args(["kustomize", &format!("deploy/kustomize/overlays/{overlay}")])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn env_of(daemonset: &Value) -> Vec<(String, String)> {
    daemonset["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The image the base's `images:` entry sets.
fn image_of_the_base() -> String {
    let text = std::fs::read_to_string(repo().join("examples/install/kustomization.yaml")).unwrap();
    let kustomization: Value = serde_yaml::from_str(&text).unwrap();
    let images = kustomization["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "one image, set in one place: {images:?}");
    format!(
        "{}:{}",
        images[0]["newName"].as_str().unwrap(),
        images[0]["newTag"].as_str().unwrap()
    )
}

#[test]
fn the_committed_install_yaml_is_the_rendering() {
    kubectl();
    let out = Command::new("bash")
        .args(["hack/render-install.sh", "--check"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The header aside, the file is the default overlay as kubectl renders it.
    let committed = std::fs::read_to_string(repo().join("deploy/install.yaml")).unwrap();
    let body: String = committed
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(body, render("default"));
}

#[test]
fn a_stale_install_yaml_is_caught_with_a_message() {
    kubectl();
    // A copy of what the script reads, with one edit to the rendered file.
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &str| {
        let status = Command::new("cp")
            .args(["-r", "--parents", from])
            .arg(dir.path())
            .current_dir(repo())
            .status()
            .unwrap();
        assert!(status.success(), "copying {from}");
    };
    for path in ["hack/render-install.sh", "deploy", "examples/install"] {
        copy(path);
    }
    let install = dir.path().join("deploy/install.yaml");
    let text = std::fs::read_to_string(&install).unwrap();
    std::fs::write(
        &install,
        format!("{text}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: edited-by-hand\n"),
    )
    .unwrap();
    let out = Command::new("bash")
        .args(["hack/render-install.sh", "--check"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("deploy/install.yaml is stale: run hack/render-install.sh"),
        "{stderr}"
    );
}

#[test]
fn every_overlay_renders_what_it_is_for_with_the_one_image() {
    let image = image_of_the_base();
    for overlay in OVERLAYS {
        let docs = documents(&render(overlay));
        let daemonset = find(&docs, "DaemonSet", "netclaim").unwrap();
        // Every workload runs the one image the base names.
        for workload in docs
            .iter()
            .filter(|d| d["kind"] == "DaemonSet" || d["kind"] == "Deployment")
        {
            for container in workload["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
            {
                assert_eq!(
                    container["image"], image,
                    "{overlay}: {}",
                    workload["metadata"]["name"]
                );
            }
        }
        for (kind, name) in [
            ("ServiceAccount", "netclaim"),
            ("ClusterRole", "netclaim"),
            ("ClusterRoleBinding", "netclaim"),
            ("DeviceClass", "netclaim-nic"),
            ("ValidatingAdmissionPolicy", "netclaim-resourceslices"),
        ] {
            assert!(
                find(&docs, kind, name).is_some(),
                "{overlay}: no {kind} {name}"
            );
        }
        let env = env_of(daemonset);
        let has = |name: &str, value: &str| env.iter().any(|(n, v)| n == name && v == value);
        // The base's env survives the overlays' patches.
        assert!(has("NETCLAIM_LOG_FORMAT", "json"), "{overlay}: {env:?}");
        match overlay {
            "cni-mode" => {
                assert!(find(&docs, "DeviceClass", "netclaim-macvlan").is_some());
                assert!(find(&docs, "DeviceClass", "netclaim-cni").is_some());
                assert!(has("NETCLAIM_NRI_REQUEST_TIMEOUT_SECONDS", "2"), "{env:?}");
            }
            "shared-nics" => {
                assert!(find(&docs, "DeviceClass", "netclaim-shared-macvlan").is_some());
                assert!(
                    has(
                        "NETCLAIM_SHARED_FILTER",
                        r#"device.attributes["netclaim.dev"].type == "device""#
                    ),
                    "{env:?}"
                );
                assert!(has("NETCLAIM_SHARED_CHILDREN", "16"), "{env:?}");
            }
            _ => assert!(
                !env.iter().any(|(n, _)| n.starts_with("NETCLAIM_SHARED")),
                "{env:?}"
            ),
        }
    }
}

#[test]
fn every_overlay_passes_the_1_35_to_1_37_schemas_and_netclaim_validate() {
    let validator = repo().join("target/pyvenv/bin/kubernetes-validate");
    assert!(
        validator.is_file(),
        "{} is missing: run hack/validate-manifests.sh once (it installs PyPI \
         kubernetes-validate into target/pyvenv)",
        validator.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for overlay in OVERLAYS {
        let path = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&path, render(overlay)).unwrap();
        files.push(path);
    }
    for version in ["1.35.0", "1.36.0", "1.37.0"] {
        let out = Command::new(&validator)
            .args(["-k", version, "--strict"])
            .args(&files)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "Kubernetes {version}:\n{text}");
        // Every object was checked against a schema (none skipped as unknown).
        assert!(!text.contains("Couldn't find schema"), "{version}:\n{text}");
        assert!(text.matches("passed").count() >= 33, "{version}:\n{text}");
    }
    let bin = netclaim_test::node::netclaim_binary().unwrap();
    let out = Command::new(bin)
        .arg("validate")
        .args(&files)
        .env_remove("NETCLAIM_CNI_ALLOWED_PLUGINS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
}
