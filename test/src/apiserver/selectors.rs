//! Field and label selectors as the real API parses them (equality-based subset).
//!
//! Field selectors: each type accepts only its own field labels, and answers any other with
//! 400 `field label not supported: <label>`, as the field label conversion functions
//! registered for it do; a label's value is read as the type's selectable field set renders
//! it. Sources: `pkg/apis/core/v1/conversion.go` (Pod, Node, Event),
//! `pkg/registry/core/pod/strategy.go` and `pkg/registry/core/node/strategy.go`
//! (`ToSelectableFields`), `pkg/registry/core/event/strategy.go` and its events.k8s.io
//! counterpart (`regarding.*`, `reportingController`), the ResourceSlice strategy
//! (`spec.nodeName`, `spec.driver`), and the default for every other type and for custom
//! resources: `metadata.name` and, when namespaced, `metadata.namespace`.

use serde_json::Value;

/// One `path=value` or `path!=value` term, with the path resolved to the type's label.
struct Term {
    label: &'static FieldLabel,
    equal: bool,
    value: String,
}

/// A field label a type supports, and how its value is read from an object.
pub(crate) struct FieldLabel {
    /// The label as clients write it.
    name: &'static str,
    /// Where the value comes from.
    source: FieldSource,
}

/// How a field label's value is rendered.
enum FieldSource {
    /// The string at this dotted path; missing is "".
    Path(&'static str),
    /// The boolean at this path as "true"/"false"; missing is "false".
    Bool(&'static str),
    /// The first path that holds a non-empty string.
    FirstOf(&'static [&'static str]),
}

const fn label(name: &'static str) -> FieldLabel {
    FieldLabel {
        name,
        source: FieldSource::Path(name),
    }
}

const fn label_from(name: &'static str, source: FieldSource) -> FieldLabel {
    FieldLabel { name, source }
}

static CLUSTER_SCOPED: &[FieldLabel] = &[label("metadata.name")];
static NAMESPACED: &[FieldLabel] = &[label("metadata.name"), label("metadata.namespace")];
static PODS: &[FieldLabel] = &[
    label("metadata.name"),
    label("metadata.namespace"),
    label("spec.nodeName"),
    label_from("spec.host", FieldSource::Path("spec.nodeName")),
    label("spec.restartPolicy"),
    label("spec.schedulerName"),
    label("spec.serviceAccountName"),
    label_from("spec.hostNetwork", FieldSource::Bool("spec.hostNetwork")),
    label("status.phase"),
    label_from(
        "status.podIP",
        FieldSource::FirstOf(&["status.podIPs.0.ip", "status.podIP"]),
    ),
    label("status.podIPs"),
    label("status.nominatedNodeName"),
];
static NODES: &[FieldLabel] = &[
    label("metadata.name"),
    label_from(
        "spec.unschedulable",
        FieldSource::Bool("spec.unschedulable"),
    ),
];
static CORE_EVENTS: &[FieldLabel] = &[
    label("metadata.name"),
    label("metadata.namespace"),
    label("involvedObject.kind"),
    label("involvedObject.namespace"),
    label("involvedObject.name"),
    label("involvedObject.uid"),
    label("involvedObject.apiVersion"),
    label("involvedObject.resourceVersion"),
    label("involvedObject.fieldPath"),
    label("reason"),
    label("reportingComponent"),
    label_from(
        "source",
        FieldSource::FirstOf(&["source.component", "reportingComponent"]),
    ),
    label("type"),
];
static EVENTS_V1: &[FieldLabel] = &[
    label("metadata.name"),
    label("metadata.namespace"),
    label("regarding.kind"),
    label("regarding.namespace"),
    label("regarding.name"),
    label("regarding.uid"),
    label("regarding.apiVersion"),
    label("regarding.resourceVersion"),
    label("regarding.fieldPath"),
    label("reason"),
    label("reportingController"),
    label_from(
        "source",
        FieldSource::FirstOf(&["deprecatedSource.component", "reportingController"]),
    ),
    label("type"),
];
static RESOURCE_SLICES: &[FieldLabel] = &[
    label("metadata.name"),
    label("spec.nodeName"),
    label("spec.driver"),
];

/// The field labels of the type `(group, plural)`.
pub(crate) fn field_labels(group: &str, plural: &str, namespaced: bool) -> &'static [FieldLabel] {
    match (group, plural) {
        ("", "pods") => PODS,
        ("", "nodes") => NODES,
        ("", "events") => CORE_EVENTS,
        ("events.k8s.io", "events") => EVENTS_V1,
        ("resource.k8s.io", "resourceslices") => RESOURCE_SLICES,
        _ if namespaced => NAMESPACED,
        _ => CLUSTER_SCOPED,
    }
}

/// A parsed `fieldSelector`: terms joined by `,`, all of which must hold.
pub(crate) struct FieldSelector {
    terms: Vec<Term>,
}

impl FieldSelector {
    /// Parses `spec.driver=x,spec.nodeName!=y` against the type's `labels`.
    ///
    /// Errors: a term that does not parse, or a label the type does not support (the
    /// real API's message).
    pub fn parse(text: &str, labels: &'static [FieldLabel]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for raw in text.split(',').filter(|t| !t.trim().is_empty()) {
            let (path, equal, value) = parse_term(raw)
                .ok_or_else(|| format!("invalid selector: '{text}'; can't understand '{raw}'"))?;
            let label = labels
                .iter()
                .find(|l| l.name == path)
                .ok_or_else(|| format!("field label not supported: {path}"))?;
            terms.push(Term {
                label,
                equal,
                value,
            });
        }
        Ok(FieldSelector { terms })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|term| {
            let actual = label_value(object, &term.label.source);
            (actual == term.value) == term.equal
        })
    }
}

fn parse_term(raw: &str) -> Option<(String, bool, String)> {
    let raw = raw.trim();
    let (path, equal, value) = if let Some((p, v)) = raw.split_once("!=") {
        (p, false, v)
    } else if let Some((p, v)) = raw.split_once("==") {
        (p, true, v)
    } else {
        let (p, v) = raw.split_once('=')?;
        (p, true, v)
    };
    let path = path.trim();
    if path.is_empty() {
        return None;
    }
    Some((path.to_string(), equal, value.trim().to_string()))
}

fn label_value(object: &Value, source: &FieldSource) -> String {
    match source {
        FieldSource::Path(path) => field_string(object, path),
        FieldSource::Bool(path) => {
            let set = lookup(object, path).and_then(Value::as_bool) == Some(true);
            set.to_string()
        }
        FieldSource::FirstOf(paths) => paths
            .iter()
            .map(|path| field_string(object, path))
            .find(|value| !value.is_empty())
            .unwrap_or_default(),
    }
}

/// The value at a dotted path (numeric parts index lists).
fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(object, |v, part| match v {
        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => v.get(part),
    })
}

/// The value at a dotted path as the real API's field sets render it; missing is "".
fn field_string(object: &Value, path: &str) -> String {
    match lookup(object, path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// One label requirement.
enum LabelTerm {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// A parsed equality-based `labelSelector`.
pub(crate) struct LabelSelector {
    terms: Vec<LabelTerm>,
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e,!f`. Set-based terms (`in`, `notin`) are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for raw in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if raw.contains('(') {
                return Err(format!(
                    "set-based label selectors are not supported by this stand-in: '{raw}'"
                ));
            }
            let term = if let Some((k, v)) = raw.split_once("!=") {
                LabelTerm::NotEquals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = raw.split_once("==") {
                LabelTerm::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = raw.split_once('=') {
                LabelTerm::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some(k) = raw.strip_prefix('!') {
                LabelTerm::NotExists(k.trim().to_string())
            } else {
                LabelTerm::Exists(raw.to_string())
            };
            terms.push(term);
        }
        Ok(LabelSelector { terms })
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.terms.iter().all(|term| match term {
            LabelTerm::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelTerm::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelTerm::Exists(k) => label(k).is_some(),
            LabelTerm::NotExists(k) => label(k).is_none(),
        })
    }
}

/// Both selectors of a list or watch request.
pub(crate) struct Selectors {
    pub fields: FieldSelector,
    pub labels: LabelSelector,
}

impl Selectors {
    pub fn matches(&self, object: &Value) -> bool {
        self.fields.matches(object) && self.labels.matches(object)
    }
}
