//! An API server stand-in for the parts of kube-apiserver that netclaim talks to.
//!
//! It serves the real Kubernetes REST protocol over plain HTTP on `127.0.0.1`, so the real
//! `kube` client (and `kubectl`, with the written kubeconfig) can talk to it unchanged.
//!
//! # What it models
//! - Resources: `resource.k8s.io/v1` ResourceSlices, DeviceClasses (cluster-scoped),
//!   ResourceClaims (namespaced, with a `status` subresource) and ResourceClaimTemplates;
//!   `v1` Nodes (with `status`), Pods (stored only), Events; `events.k8s.io/v1` Events;
//!   `k8s.cni.cncf.io/v1` NetworkAttachmentDefinitions; `apiextensions.k8s.io/v1`
//!   CustomResourceDefinitions (stored) and the custom resource
//!   `multinetwork.networking.k8s.io/v1alpha1` PodNetworks (cluster-scoped, `status`
//!   subresource), served only while the CRD `podnetworks.multinetwork.networking.k8s.io`
//!   exists (404 before, as the real API), with the rules of the CRD netclaim ships
//!   (`examples/install/podnetwork-crd.yaml`, written out in `validation.rs`: defaulting
//!   `spec.enabled`, required and immutable `spec.provider`, at most 8 valid conditions);
//!   `metadata.generation` moves on spec changes only, as for every CR with a status
//!   subresource. Not modelled for CRs: schemas read from the stored CRD (the rules are
//!   written out for this one), pruning of unknown fields, CEL rules other than the
//!   provider's `self == oldSelf`, versions other than the one served. Discovery: `/version`, `/api`,
//!   `/apis`, `/api/v1`, `/apis/<group>/<version>`.
//! - Emulated version ([`ApiServerOptions`]): Kubernetes 1.34 by default (1.34 to 1.37
//!   modelled), reported by `/version`; feature gates follow the version
//!   (`DRAConsumableCapacity` and `DRADeviceTaints` on from 1.36) or are set explicitly.
//!   Fields of a gate that is off are dropped on write, as the real strategies'
//!   `dropDisabledFields` do, and a device taint without `timeAdded` gets the time of the
//!   write, as the real defaulting does (see `gates.rs` for which and where from); limits
//!   that differ by release (taints per device, taint effects) follow the version.
//! - Verbs: get, list (`fieldSelector` with `=`, `==`, `!=` on the field labels each type
//!   supports, anything else a 400 `field label not supported` as with the real API: pods
//!   `metadata.name`, `metadata.namespace`, `spec.nodeName`, `spec.restartPolicy`,
//!   `spec.schedulerName`, `spec.serviceAccountName`, `spec.hostNetwork`, `status.phase`,
//!   `status.podIP`, `status.podIPs`, `status.nominatedNodeName`; nodes `metadata.name`,
//!   `spec.unschedulable`; core Events `involvedObject.*`, `reason`, `reportingComponent`,
//!   `source`, `type`; events.k8s.io Events `regarding.*`, `reportingController`, `source`,
//!   `type`; ResourceSlices `metadata.name`, `spec.nodeName`, `spec.driver`; every other type
//!   `metadata.name` (and `metadata.namespace` when namespaced), see `selectors.rs`;
//!   `labelSelector` with `=`, `==`, `!=`, `key`, `!key`; `limit` and `continue`), watch (newline-delimited
//!   WatchEvents; no `resourceVersion` or `"0"` starts with synthetic ADDED events for the
//!   current state, a later `resourceVersion` replays the retained history after it;
//!   `sendInitialEvents=true` ends the initial events with the `k8s.io/initial-events-end`
//!   bookmark; `timeoutSeconds` honoured; objects leaving or entering a selector are sent as
//!   DELETED/ADDED), create (`generateName`, uid, creationTimestamp, generation,
//!   resourceVersion from one global counter), replace (PUT; a stale `resourceVersion` is 409
//!   Conflict, an empty one is an unconditional update), delete (with `preconditions`,
//!   finalizers honoured by setting `deletionTimestamp`), deletecollection, JSON patch
//!   (`application/json-patch+json`; a `metadata.resourceVersion` it leaves behind that
//!   differs from the stored one is a 409), JSON merge patch
//!   (`application/merge-patch+json`, also used for `strategic-merge-patch+json`, which is
//!   exact for the map-only patches kube sends; a `metadata.resourceVersion` in the patch
//!   that differs from the stored one is a 409, as with the real API), and server-side apply
//!   (`application/apply-patch+yaml`) with conflicts, `force`, removal of fields a manager
//!   stops applying, and the real list keys for `listType=map` lists (`status.devices` by
//!   driver/pool/device/shareID, `conditions` by type, `status.reservedFor` by uid,
//!   `ownerReferences` by uid).
//! - Field ownership (`metadata.managedFields`) for every write, as structured-merge-diff
//!   keeps it: creates, updates, merge and JSON patches are Update operations of their
//!   `fieldManager` (else the User-Agent up to its first `/`) that take the fields they add
//!   or change without conflict; applies are Apply operations that conflict with any other
//!   owner of a field they would change (`conflict with "m" using v1` for an updater);
//!   owners are told apart by name, operation and subresource (see `merge.rs`).
//! - Status subresources: writes to the main resource keep the stored `status`; writes to
//!   `/status` keep everything but `status` (and metadata labels/annotations), as the real
//!   registry strategies do. Creating a ResourceClaim drops its `status`, as the real API does.
//! - Validation of the raw JSON received, with 422 Invalid and a `metav1.Status` naming the
//!   field: ResourceSlice spec, ResourceClaim status (`ValidateResourceClaimStatusUpdate`:
//!   `status.devices` with their conditions and data, a new allocation, an allocation that
//!   must not change once set, `reservedFor`), object names; see [`validation`]. A status
//!   write that deallocates devices drops their `status.devices` entries.
//! - Faults for tests: [`Faults`] injects failures, conflicts and latency, holds the live
//!   events of a resource's watches (a watcher that has fallen behind) or ends its watches
//!   with 410 Gone (one that fell out of the history), and counts requests.
//! - `kubectl` (test/tests/kubectl.rs runs the real 1.36 client): discovery is asked for
//!   in the aggregated form first (`/api` and `/apis` with `Accept:
//!   application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList, ...v2beta1...,
//!   application/json`); the stand-in answers the legacy `APIVersions`/`APIGroupList` as
//!   `application/json`, which kubectl takes as "no aggregated discovery" and then reads
//!   `/api/v1` and every `/apis/<group>/<version>`, as it does with older servers.
//!   `kubectl get` asks for `meta.k8s.io/v1` Tables and gets the real columns (see
//!   `table.rs`); `-o yaml|json` reads the plain objects.
//!
//! # What it does NOT model
//! No authentication or authorization, no TLS, no admission (no defaulting webhooks, no
//! quota), no CEL validation rules beyond the ones written out in [`validation`], no garbage
//! collection (ownerReferences are stored, never acted on), no scheduler or controllers (no
//! claim gets allocated unless a test writes `status.allocation`), no namespaces objects (any
//! namespace exists), no protobuf, no Table over watches, no OpenAPI documents
//! (`/openapi/v2`, `/openapi/v3`: `kubectl apply`/`create` need `--validate=false`), no
//! aggregated discovery (the legacy form answers it), no `resourceVersionMatch`, no
//! `dryRun` other than skipping the write, one storage per Event API group (core and
//! `events.k8s.io` Events do not see each other), no `time` in managedFields entries, no
//! field ownership of server-set metadata beyond leaving it unowned, and a bounded watch
//! history (a watch
//! from an older `resourceVersion` gets a 410 Gone ERROR event), no periodic watch bookmarks
//! (`allowWatchBookmarks` is ignored; only the initial-events-end bookmark is sent), no
//! `Retry-After` header on 429 (kube's built-in retry would wait whole seconds).

mod faults;
mod gates;
mod handlers;
mod merge;
mod resources;
mod selectors;
mod status;
mod store;
mod table;
mod traffic;
pub mod validation;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use faults::Faults;
pub use gates::ApiServerOptions;
pub use traffic::{Traffic, classify};

/// State shared by every request handler.
pub(crate) struct Shared {
    pub(crate) store: std::sync::Mutex<store::Store>,
    pub(crate) faults: Faults,
    /// The Kubernetes version and feature gates emulated.
    pub(crate) options: ApiServerOptions,
    /// Cancelled on shutdown so long-running watches end and the server can stop.
    pub(crate) shutdown: CancellationToken,
}

/// A running API server stand-in (see the [module docs](self) for what it models).
pub struct ApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    traffic: Traffic,
    task: JoinHandle<()>,
}

impl ApiServer {
    /// Serves plain HTTP on `127.0.0.1:<free port>`, as Kubernetes 1.34 with its default
    /// feature gates.
    pub async fn start() -> anyhow::Result<ApiServer> {
        Self::start_with(ApiServerOptions::default()).await
    }

    /// Serves plain HTTP on `127.0.0.1:<free port>`, emulating `options`.
    pub async fn start_with(options: ApiServerOptions) -> anyhow::Result<ApiServer> {
        Self::start_on_with(SocketAddr::from(([127, 0, 0, 1], 0)), options).await
    }

    /// Serves plain HTTP on `addr` (port 0 picks a free port), as Kubernetes 1.34.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<ApiServer> {
        Self::start_on_with(addr, ApiServerOptions::default()).await
    }

    /// Serves plain HTTP on `addr` (port 0 picks a free port), emulating `options`.
    pub async fn start_on_with(
        addr: SocketAddr,
        options: ApiServerOptions,
    ) -> anyhow::Result<ApiServer> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the API server stand-in to {addr}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: std::sync::Mutex::new(store::Store::new()),
            faults: Faults::default(),
            options,
            shutdown: CancellationToken::new(),
        });
        let traffic = Traffic::default();
        let app = axum::Router::new()
            .fallback(handlers::handle)
            .with_state(shared.clone())
            .layer(axum::middleware::from_fn_with_state(
                traffic.clone(),
                traffic::count,
            ));
        let stop = shared.shutdown.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "API server stand-in stopped with an error");
            }
        });
        Ok(ApiServer {
            addr,
            shared,
            traffic,
            task,
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A real `kube::Client` pointed at this server (call it inside a tokio runtime). Like
    /// every kube 5 client by default, it retries 429, 503 and 504 answers by itself.
    pub fn client(&self) -> kube::Client {
        self.client_with(|_| {})
    }

    /// Like [`Self::client`] but with kube's built-in retry of 429/503/504 turned off, for
    /// tests that want to see those answers themselves.
    pub fn client_without_retries(&self) -> kube::Client {
        self.client_with(|config| config.default_retry = false)
    }

    fn client_with(&self, adjust: impl FnOnce(&mut kube::Config)) -> kube::Client {
        let url: http::Uri = match self.url().parse() {
            Ok(url) => url,
            // The URL is built from a SocketAddr, so it always parses.
            Err(error) => unreachable!("stand-in URL does not parse: {error}"),
        };
        let mut config = kube::Config::new(url);
        adjust(&mut config);
        match kube::Client::try_from(config) {
            Ok(client) => client,
            Err(error) => unreachable!("a plain-HTTP kube config cannot fail: {error}"),
        }
    }

    /// Writes a kubeconfig (cluster, empty user, current context) pointing at this server.
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, kubeconfig_yaml(&self.url()))
            .with_context(|| format!("writing kubeconfig {}", path.display()))
    }

    /// Requests by API verb and bytes each way (see [`Traffic`]).
    pub fn traffic(&self) -> Traffic {
        self.traffic.clone()
    }

    /// A cloneable handle to inject faults and count requests.
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Stops serving: ends open watches, then waits (bounded) for the server to stop.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        let mut task = self.task;
        // Keep-alive connections of clients that are still alive can hold graceful shutdown
        // open; bound the wait and then drop the server.
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {url}\n\
         users:\n- name: standin\n  user: {{}}\ncontexts:\n- name: standin\n  context:\n    \
         cluster: standin\n    user: standin\n    namespace: default\ncurrent-context: standin\n"
    )
}
