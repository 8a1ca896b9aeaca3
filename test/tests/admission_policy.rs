//! The ValidatingAdmissionPolicies of `examples/install/admission-policy.yaml`, evaluated
//! with the `cel` crate against sample admission requests the way the API server applies
//! them: a policy applies when one of its `matchConstraints.resourceRules` matches the
//! request's group, resource (`resource/subresource`) and operation and all its
//! `matchConditions` are true; its `variables` are evaluated in order into `variables`; a
//! validation that is false denies with its `messageExpression` (else `message`), and one
//! that fails to evaluate denies too (`failurePolicy: Fail`). `object`, `oldObject` (null
//! on CREATE and DELETE respectively) and `request` (`operation`, `userInfo.username`,
//! `userInfo.extra`, `resource`, `subResource`) are bound as the API server binds them.
//!
//! Not modelled (the policy file says so too): CEL cost limits; type checking against the
//! OpenAPI schemas (the real variables are typed objects; here they are maps, and
//! numbers are plain ints); optional types; version and subresource matching beyond the
//! rules as written; a binding's `matchResources`, `paramRef` and other
//! `validationActions`; what the API server does to the object before validating
//! admission (defaulting, managedFields, a status update resetting metadata): samples
//! give `object` as the API server would hand it over.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cel::{Context, Program, Value as Cel};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use serde::Deserialize;
use serde_json::{Value, json};

const NETCLAIM: &str = "system:serviceaccount:kube-system:netclaim";
const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

fn policy_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/install/admission-policy.yaml")
}

fn documents() -> Vec<Value> {
    let text = std::fs::read_to_string(policy_file()).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn json_to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map(Cel::Int)
            .unwrap_or_else(|| Cel::Float(n.as_f64().unwrap())),
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(json_to_cel).collect())),
        Value::Object(map) => Cel::from(
            map.iter()
                .map(|(k, v)| (k.clone(), json_to_cel(v)))
                .collect::<HashMap<String, Cel>>(),
        ),
    }
}

struct Validation {
    source: String,
    program: Program,
    message: Option<String>,
    message_expression: Option<Program>,
}

struct Policy {
    name: String,
    /// (groups, resources, operations) per rule.
    rules: Vec<(Vec<String>, Vec<String>, Vec<String>)>,
    match_conditions: Vec<(String, Program)>,
    variables: Vec<(String, Program)>,
    validations: Vec<Validation>,
}

fn compile(source: &str, origin: &str) -> Program {
    Program::compile(source).unwrap_or_else(|e| panic!("{origin}: does not compile: {source}\n{e}"))
}

fn load() -> Vec<Policy> {
    let mut policies = Vec::new();
    let mut bound = Vec::new();
    for doc in documents() {
        match doc["kind"].as_str().unwrap() {
            "ValidatingAdmissionPolicy" => {
                let policy: ValidatingAdmissionPolicy = serde_json::from_value(doc).unwrap();
                let name = policy.metadata.name.clone().unwrap();
                let spec = policy.spec.unwrap();
                assert_eq!(spec.failure_policy.as_deref(), Some("Fail"), "{name}");
                let rules = spec
                    .match_constraints
                    .unwrap()
                    .resource_rules
                    .unwrap()
                    .into_iter()
                    .map(|rule| {
                        (
                            rule.api_groups.unwrap_or_default(),
                            rule.resources.unwrap_or_default(),
                            rule.operations.unwrap_or_default(),
                        )
                    })
                    .collect();
                let match_conditions = spec
                    .match_conditions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| {
                        let program = compile(&c.expression, &name);
                        (c.name, program)
                    })
                    .collect();
                let variables = spec
                    .variables
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| {
                        let program = compile(&v.expression, &name);
                        (v.name, program)
                    })
                    .collect();
                let validations = spec
                    .validations
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| Validation {
                        program: compile(&v.expression, &name),
                        source: v.expression,
                        message: v.message,
                        message_expression: v
                            .message_expression
                            .as_deref()
                            .map(|m| compile(m, &name)),
                    })
                    .collect();
                policies.push(Policy {
                    name,
                    rules,
                    match_conditions,
                    variables,
                    validations,
                });
            }
            "ValidatingAdmissionPolicyBinding" => {
                let binding: ValidatingAdmissionPolicyBinding =
                    serde_json::from_value(doc).unwrap();
                let spec = binding.spec;
                assert_eq!(spec.validation_actions, vec!["Deny".to_owned()]);
                bound.push(spec.policy_name);
            }
            other => panic!("unexpected kind {other} in the policy file"),
        }
    }
    for policy in &policies {
        assert!(
            bound.contains(&policy.name),
            "policy {} has no binding: it would never run",
            policy.name
        );
    }
    policies
}

/// A sample admission request.
struct Request {
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    operation: &'static str,
    username: &'static str,
    node: Option<&'static str>,
    object: Value,
    old_object: Value,
}

impl Request {
    fn by_netclaim(mut self, node: Option<&'static str>) -> Self {
        self.username = NETCLAIM;
        self.node = node;
        self
    }

    fn request_value(&self) -> Value {
        let mut extra = json!({"authentication.kubernetes.io/pod-name": ["netclaim-x7k2p"]});
        if let Some(node) = self.node {
            extra[NODE_NAME_KEY] = json!([node]);
        }
        json!({
            "operation": self.operation,
            "userInfo": {"username": self.username, "extra": extra},
            "resource": {"group": self.group, "resource": self.resource},
            "subResource": self.subresource,
        })
    }

    fn matches(&self, policy: &Policy) -> bool {
        let resource = if self.subresource.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        policy.rules.iter().any(|(groups, resources, operations)| {
            groups.iter().any(|g| g == "*" || g == self.group)
                && resources.contains(&resource)
                && operations.iter().any(|o| o == "*" || o == self.operation)
        })
    }
}

#[derive(Debug, PartialEq)]
enum Decision {
    Allowed,
    Denied { policy: String, message: String },
}

fn evaluate(program: &Program, context: &Context) -> Result<Cel, String> {
    program.execute(context).map_err(|e| e.to_string())
}

fn admit(policies: &[Policy], request: &Request) -> Decision {
    for policy in policies.iter().filter(|p| request.matches(p)) {
        let mut context = Context::default();
        context.add_variable_from_value("object", json_to_cel(&request.object));
        context.add_variable_from_value("oldObject", json_to_cel(&request.old_object));
        context.add_variable_from_value("request", json_to_cel(&request.request_value()));
        let deny = |message: String| Decision::Denied {
            policy: policy.name.clone(),
            message,
        };
        let mut applies = true;
        for (name, condition) in &policy.match_conditions {
            match evaluate(condition, &context) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => applies = false,
                other => return deny(format!("matchCondition {name}: {other:?}")),
            }
        }
        if !applies {
            continue;
        }
        let mut variables: HashMap<String, Cel> = HashMap::new();
        for (name, program) in &policy.variables {
            // A variable that fails is left out: the validation that reads it fails then,
            // as the API server's lazy evaluation surfaces the error there.
            if let Ok(value) = evaluate(program, &context) {
                variables.insert(name.clone(), value);
            }
            context.add_variable_from_value("variables", Cel::from(variables.clone()));
        }
        for validation in &policy.validations {
            match evaluate(&validation.program, &context) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => {
                    let message = match &validation.message_expression {
                        Some(program) => match evaluate(program, &context) {
                            Ok(Cel::String(text)) => text.to_string(),
                            other => panic!("messageExpression gave {other:?}"),
                        },
                        None => validation.message.clone().unwrap_or_default(),
                    };
                    return deny(message.trim().to_owned());
                }
                other => {
                    return deny(format!(
                        "expression error (failurePolicy Fail): {other:?} in {}",
                        validation.source
                    ));
                }
            }
        }
    }
    Decision::Allowed
}

fn assert_denied(policies: &[Policy], request: &Request, policy: &str, message: &str) {
    match admit(policies, request) {
        Decision::Denied {
            policy: by,
            message: said,
        } => {
            assert_eq!(by, policy, "{said}");
            assert!(said.contains(message), "want {message:?} in {said:?}");
        }
        Decision::Allowed => panic!("allowed, want denied by {policy}: {message}"),
    }
}

// ---- ResourceSlices ----------------------------------------------------------------------

fn slice(node: &str, driver: &str) -> Value {
    json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": format!("{node}-netclaim-dev-0")},
        "spec": {"driver": driver, "nodeName": node,
                 "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                 "devices": [{"name": "eth1"}]}
    })
}

fn slice_request(operation: &'static str, object: Value, old_object: Value) -> Request {
    Request {
        group: "resource.k8s.io",
        resource: "resourceslices",
        subresource: "",
        operation,
        username: "system:kube-scheduler",
        node: None,
        object,
        old_object,
    }
}

#[test]
fn resource_slices_only_of_its_own_node_and_driver() {
    let policies = load();
    let own = || slice("node-a", "netclaim.dev");
    let allowed = [
        slice_request("CREATE", own(), Value::Null),
        slice_request("UPDATE", own(), own()),
        slice_request("DELETE", Value::Null, own()),
    ];
    for request in allowed {
        let request = request.by_netclaim(Some("node-a"));
        assert_eq!(
            admit(&policies, &request),
            Decision::Allowed,
            "{}",
            request.operation
        );
    }
    let other_node = "may only write ResourceSlices of its own node";
    let cases = [
        (
            slice_request("CREATE", slice("node-b", "netclaim.dev"), Value::Null),
            other_node,
        ),
        (
            slice_request("DELETE", Value::Null, slice("node-b", "netclaim.dev")),
            other_node,
        ),
        (
            slice_request("UPDATE", own(), slice("node-b", "netclaim.dev")),
            "may not take over another node's ResourceSlice",
        ),
        (
            slice_request("CREATE", slice("node-a", "gpu.example.com"), Value::Null),
            "only write ResourceSlices of driver netclaim.dev",
        ),
    ];
    for (request, message) in cases {
        let request = request.by_netclaim(Some("node-a"));
        assert_denied(&policies, &request, "netclaim-resourceslices", message);
    }
    // A slice without a node (a network-attached pool) is no node's.
    let mut unbound = own();
    unbound["spec"].as_object_mut().unwrap().remove("nodeName");
    unbound["spec"]["allNodes"] = json!(true);
    let request = slice_request("CREATE", unbound, Value::Null).by_netclaim(Some("node-a"));
    assert_denied(&policies, &request, "netclaim-resourceslices", other_node);
    // Credentials without a node name (a long-lived token): nothing.
    let request = slice_request("CREATE", own(), Value::Null).by_netclaim(None);
    assert_denied(
        &policies,
        &request,
        "netclaim-resourceslices",
        "credentials name no node",
    );
    // Other users are not this policy's business.
    let request = slice_request("CREATE", slice("node-b", "gpu.example.com"), Value::Null);
    assert_eq!(admit(&policies, &request), Decision::Allowed);
}

// ---- ResourceClaim status ------------------------------------------------------------------

fn allocated_claim(nodes: &[&str]) -> Value {
    json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": "nic", "namespace": "team-a"},
        "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "netclaim-nic"}}]}},
        "status": {
            "allocation": {
                "devices": {"results": [
                    {"request": "nic", "driver": "netclaim.dev", "pool": "node-a", "device": "eth1"},
                    {"request": "gpu", "driver": "gpu.example.com", "pool": "node-a", "device": "gpu0"}
                ]},
                "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": nodes}]}]}
            },
            "reservedFor": [{"resource": "pods", "name": "app", "uid": "u-1"}],
            "devices": [{"driver": "gpu.example.com", "pool": "node-a", "device": "gpu0",
                         "conditions": [{"type": "Ready", "status": "True"}]}]
        }
    })
}

/// The claim after netclaim's server-side apply of its status entry.
fn with_netclaim_status(mut claim: Value) -> Value {
    claim["status"]["devices"].as_array_mut().unwrap().push(
        json!({"driver": "netclaim.dev", "pool": "node-a", "device": "eth1",
                     "networkData": {"interfaceName": "net1", "ips": ["192.0.2.10/24"]}}),
    );
    claim
}

fn status_request(object: Value, old_object: Value) -> Request {
    Request {
        group: "resource.k8s.io",
        resource: "resourceclaims",
        subresource: "status",
        operation: "UPDATE",
        username: "system:kube-scheduler",
        node: None,
        object,
        old_object,
    }
}

#[test]
fn claim_status_only_of_claims_on_its_node_and_only_its_entries() {
    let policies = load();
    let old = allocated_claim(&["node-a"]);
    let request =
        status_request(with_netclaim_status(old.clone()), old.clone()).by_netclaim(Some("node-a"));
    assert_eq!(admit(&policies, &request), Decision::Allowed);
    // Removing its own entry again is fine too.
    let request =
        status_request(old.clone(), with_netclaim_status(old.clone())).by_netclaim(Some("node-a"));
    assert_eq!(admit(&policies, &request), Decision::Allowed);

    const POLICY: &str = "netclaim-resourceclaim-status";
    let not_ours = "may only write the status of claims allocated to its node";
    let on_b = allocated_claim(&["node-b"]);
    let request =
        status_request(with_netclaim_status(on_b.clone()), on_b).by_netclaim(Some("node-a"));
    assert_denied(&policies, &request, POLICY, not_ours);
    // A claim that may run on several nodes is no single node's.
    let both = allocated_claim(&["node-a", "node-b"]);
    let request =
        status_request(with_netclaim_status(both.clone()), both).by_netclaim(Some("node-a"));
    assert_denied(&policies, &request, POLICY, not_ours);
    let mut unallocated = old.clone();
    unallocated["status"]
        .as_object_mut()
        .unwrap()
        .remove("allocation");
    let request = status_request(unallocated.clone(), unallocated).by_netclaim(Some("node-a"));
    assert_denied(&policies, &request, POLICY, not_ours);

    let mut moved = with_netclaim_status(old.clone());
    moved["status"]["allocation"]["devices"]["results"][0]["device"] = json!("eth2");
    let request = status_request(moved, old.clone()).by_netclaim(Some("node-a"));
    assert_denied(
        &policies,
        &request,
        POLICY,
        "may not change a claim's allocation",
    );
    let mut released = with_netclaim_status(old.clone());
    released["status"]["reservedFor"] = json!([]);
    let request = status_request(released, old.clone()).by_netclaim(Some("node-a"));
    assert_denied(
        &policies,
        &request,
        POLICY,
        "may not change a claim's reservedFor",
    );
    let mut forged = with_netclaim_status(old.clone());
    forged["status"]["devices"][0]["conditions"][0]["status"] = json!("False");
    let request = status_request(forged, old.clone()).by_netclaim(Some("node-a"));
    assert_denied(
        &policies,
        &request,
        POLICY,
        "only change the status.devices entries of driver netclaim.dev",
    );
    let request = status_request(with_netclaim_status(old.clone()), old).by_netclaim(None);
    assert_denied(&policies, &request, POLICY, "credentials name no node");
}

// ---- Pods --------------------------------------------------------------------------------

fn pod(node: Option<&str>, annotations: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": "team-a", "uid": "u-1",
                     "labels": {"app": "web"}, "annotations": annotations,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                          "name": "web-1", "uid": "rs-1"}]},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                 "resourceClaims": [{"name": "nic", "resourceClaimName": "nic"}]}
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    pod
}

fn pod_request(object: Value, old_object: Value) -> Request {
    Request {
        group: "",
        resource: "pods",
        subresource: "",
        operation: "UPDATE",
        username: "system:node:node-a",
        node: None,
        object,
        old_object,
    }
}

#[test]
fn pods_only_on_its_node_and_only_the_network_status_annotation() {
    let policies = load();
    let before = json!({"kubernetes.io/psp": "x", NETWORK_STATUS: "[{\"name\":\"cbr0\"}]"});
    let after = json!({"kubernetes.io/psp": "x",
                       NETWORK_STATUS: "[{\"name\":\"cbr0\"},{\"name\":\"team-a/nic\",\"interface\":\"net1\"}]"});
    let request = pod_request(
        pod(Some("node-a"), after.clone()),
        pod(Some("node-a"), before.clone()),
    )
    .by_netclaim(Some("node-a"));
    assert_eq!(admit(&policies, &request), Decision::Allowed);
    // Adding the annotation to a pod that had none, and removing it.
    let request = pod_request(
        pod(Some("node-a"), json!({NETWORK_STATUS: "[]"})),
        pod(Some("node-a"), json!({})),
    )
    .by_netclaim(Some("node-a"));
    assert_eq!(admit(&policies, &request), Decision::Allowed);
    let request = pod_request(
        pod(Some("node-a"), json!({"kubernetes.io/psp": "x"})),
        pod(Some("node-a"), before.clone()),
    )
    .by_netclaim(Some("node-a"));
    assert_eq!(admit(&policies, &request), Decision::Allowed);

    const POLICY: &str = "netclaim-pod-network-status";
    let request = pod_request(
        pod(Some("node-b"), after.clone()),
        pod(Some("node-b"), before.clone()),
    )
    .by_netclaim(Some("node-a"));
    assert_denied(
        &policies,
        &request,
        POLICY,
        "may only write pods of its own node",
    );
    let request = pod_request(pod(None, after.clone()), pod(None, before.clone()))
        .by_netclaim(Some("node-a"));
    assert_denied(
        &policies,
        &request,
        POLICY,
        "may only write pods of its own node",
    );

    let only_annotation = "may only change the k8s.v1.cni.cncf.io/network-status annotation";
    let mut other_annotation = after.clone();
    other_annotation["kubernetes.io/psp"] = json!("privileged");
    let request = pod_request(
        pod(Some("node-a"), other_annotation),
        pod(Some("node-a"), before.clone()),
    )
    .by_netclaim(Some("node-a"));
    assert_denied(&policies, &request, POLICY, only_annotation);
    let mut added = after.clone();
    added["sidecar.example.com/inject"] = json!("true");
    let request = pod_request(
        pod(Some("node-a"), added),
        pod(Some("node-a"), before.clone()),
    )
    .by_netclaim(Some("node-a"));
    assert_denied(&policies, &request, POLICY, only_annotation);

    let not_spec = "not its spec, labels, finalizers or owners";
    let mut new_image = pod(Some("node-a"), after.clone());
    new_image["spec"]["containers"][0]["image"] = json!("attacker.example/pause:evil");
    let request =
        pod_request(new_image, pod(Some("node-a"), before.clone())).by_netclaim(Some("node-a"));
    assert_denied(&policies, &request, POLICY, not_spec);
    let mut relabelled = pod(Some("node-a"), after.clone());
    relabelled["metadata"]["labels"]["app"] = json!("db");
    let request =
        pod_request(relabelled, pod(Some("node-a"), before.clone())).by_netclaim(Some("node-a"));
    assert_denied(&policies, &request, POLICY, not_spec);
    let mut orphaned = pod(Some("node-a"), after.clone());
    orphaned["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    let request =
        pod_request(orphaned, pod(Some("node-a"), before.clone())).by_netclaim(Some("node-a"));
    assert_denied(&policies, &request, POLICY, not_spec);
    let mut finalized = pod(Some("node-a"), after.clone());
    finalized["metadata"]["finalizers"] = json!(["example.com/hold"]);
    let request =
        pod_request(finalized, pod(Some("node-a"), before.clone())).by_netclaim(Some("node-a"));
    assert_denied(&policies, &request, POLICY, not_spec);

    // The kubelet (another user) is not this policy's business.
    let mut kubelet = pod_request(pod(Some("node-a"), after), pod(Some("node-a"), before));
    kubelet.node = Some("node-a");
    assert_eq!(admit(&policies, &kubelet), Decision::Allowed);
}

#[test]
fn an_expression_that_fails_denies_as_failure_policy_fail_says() {
    // Guards the evaluator above: a request the expressions cannot read (an UPDATE of a
    // ResourceSlice with no old object) must not be let through.
    let policies = load();
    let request = slice_request("UPDATE", slice("node-a", "netclaim.dev"), Value::Null)
        .by_netclaim(Some("node-a"));
    match admit(&policies, &request) {
        Decision::Denied { policy, message } => {
            assert_eq!(policy, "netclaim-resourceslices");
            assert!(message.contains("expression error"), "{message}");
        }
        Decision::Allowed => panic!("an expression error let the request through"),
    }
}
