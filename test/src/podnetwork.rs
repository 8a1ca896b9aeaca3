//! PodNetworks in tests: installing the CRD netclaim ships into the API server stand-in,
//! running `netclaim controller` (the real binary) against it, and reading conditions.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use netclaim::podnetwork::PodNetwork;
use netclaim_api::podnetwork::Condition;
use serde_json::Value;

use crate::apiserver::ApiServer;
use crate::node::netclaim_binary;

const WAIT: Duration = Duration::from_secs(20);

/// The CRD manifest netclaim ships.
pub fn crd_manifest() -> Result<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/install/podnetwork-crd.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_yaml::from_str(&text)?)
}

/// Creates the PodNetwork CRD from `examples/install/podnetwork-crd.yaml`: the stand-in
/// serves PodNetworks from then on, as the real API does once a CRD is established.
pub async fn install_crd(client: kube::Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let crd: CustomResourceDefinition = serde_json::from_value(crd_manifest()?)?;
    api.create(&PostParams::default(), &crd).await?;
    Ok(())
}

/// `netclaim controller` running against an API server; killed when dropped.
pub struct Controller {
    child: Child,
    dir: tempfile::TempDir,
}

impl Controller {
    /// Starts the controller binary with a kubeconfig for `api`.
    pub fn start(api: &ApiServer) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("netclaim-controller-")
            .tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig)?;
        let log = std::fs::File::create(dir.path().join("controller.log"))?;
        let child = Command::new(netclaim_binary()?)
            .args(["controller", "--kubeconfig"])
            .arg(&kubeconfig)
            .env("RUST_LOG", "info,netclaim=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting netclaim controller")?;
        Ok(Self { child, dir })
    }

    /// What the controller logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates PodNetwork `name` with `spec`.
pub async fn create(client: kube::Client, name: &str, spec: Value) -> Result<PodNetwork> {
    let api: Api<PodNetwork> = Api::all(client);
    let network: PodNetwork = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name}, "spec": spec,
    }))?;
    Ok(api.create(&PostParams::default(), &network).await?)
}

/// Merge-patches the spec of PodNetwork `name`.
pub async fn patch_spec(client: kube::Client, name: &str, spec: Value) -> Result<()> {
    let api: Api<PodNetwork> = Api::all(client);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "spec": spec })),
    )
    .await?;
    Ok(())
}

/// Waits until PodNetwork `name` has a condition `type_` with `status` for its current
/// generation, and returns it.
pub async fn wait_for_condition(
    client: kube::Client,
    name: &str,
    type_: &str,
    status: &str,
    controller: &Controller,
) -> Result<Condition> {
    let api: Api<PodNetwork> = Api::all(client);
    let deadline = Instant::now() + WAIT;
    loop {
        let network = api.get(name).await?;
        let generation = network.metadata.generation;
        if let Some(condition) = network
            .status
            .as_ref()
            .and_then(|s| s.condition(type_))
            .filter(|c| c.status == status && c.observed_generation == generation)
        {
            return Ok(condition.clone());
        }
        if Instant::now() > deadline {
            bail!(
                "PodNetwork {name} never got {type_}={status}; its status: {:?}; controller log:\n{}",
                network.status,
                controller.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `podNetwork` attribute of a published device.
pub fn network_of(device: &k8s_openapi::api::resource::v1::Device) -> Option<String> {
    netclaim::podnetwork::network_attribute(device).map(str::to_owned)
}

/// Evaluates a DRA CEL selector on `device` of `driver`, as the scheduler would (with the
/// `device` variable `netclaim run --filter` sees).
pub fn selects(
    expression: &str,
    driver: &str,
    device: &k8s_openapi::api::resource::v1::Device,
) -> Result<bool> {
    let filter = netclaim::discovery::DeviceFilter::for_flag("selector", expression)
        .map_err(|e| anyhow!("{e:#}"))?;
    Ok(filter.check(driver, device).is_ok())
}
