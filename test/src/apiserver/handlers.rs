//! Request handling: routes a request to a verb and applies the real API's rules.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, Uri};
use serde_json::{Map, Value, json};

use super::Shared;
use super::faults::Injected;
use super::gates;
use super::merge::{self, ManagerKey, Managers, Operation};
use super::resources::{RESOURCES, ResourceType, Route, Target, route};
use super::selectors::{FieldSelector, LabelSelector, Selectors, field_labels};
use super::status::ApiError;
use super::store::{Change, ChangeKind, Key, Store, Stored};
use super::validation;

type Params = HashMap<String, String>;
type Result<T> = std::result::Result<T, ApiError>;

/// The single entry point: every request lands here.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = shared.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match route(uri.path()) {
        Route::Version => json_reply(200, version_info(&shared.options)),
        Route::CoreVersions => json_reply(200, core_versions()),
        Route::GroupList => json_reply(200, group_list()),
        Route::ResourceList { group, version } => match resource_list(&group, &version) {
            Some(list) => json_reply(200, list),
            None => ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
            .into_response(),
        },
        Route::NotFound => ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .into_response(),
        Route::Resource(target) => {
            if let Injected::Fail(code) = shared
                .faults
                .on_request(method.as_str(), &target.fault_name())
            {
                return ApiError::injected(code).into_response();
            }
            match serve(&shared, &method, &target, &params, &headers, &body) {
                Ok(response) => response,
                Err(error) => error.into_response(),
            }
        }
    }
}

fn serve(
    shared: &Shared,
    method: &Method,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response> {
    if target.rtype.custom {
        let crd = (
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            String::new(),
            target.rtype.qualified(),
        );
        if lock(shared).get(&crd).is_none() {
            // As the real API: a custom resource exists only while its CRD does.
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    }
    let named = target.name.is_some();
    match (method.as_str(), named) {
        ("GET", true) => get(shared, target, super::table::wanted(headers)),
        ("GET", false) if flag(params, "watch") => watch(shared, target, params),
        ("GET", false) => list(shared, target, params, super::table::wanted(headers)),
        ("POST", false) => create(shared, target, params, headers, body),
        ("PUT", true) => replace(shared, target, params, headers, body),
        ("PATCH", true) => patch(shared, target, params, headers, body),
        ("DELETE", true) => delete(shared, target, params, body),
        ("DELETE", false) => delete_collection(shared, target, params),
        _ => Err(ApiError::method_not_allowed()),
    }
}

// ---- helpers -------------------------------------------------------------------------

fn json_reply(code: u16, value: Value) -> Response {
    let code = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    (code, axum::Json(value)).into_response()
}

fn flag(params: &Params, name: &str) -> bool {
    params.get(name).is_some_and(|v| v == "true" || v == "1")
}

fn dry_run(params: &Params) -> bool {
    params.get("dryRun").is_some_and(|v| v == "All")
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Store> {
    // Every store mutation is a single insert/remove, so a poisoned lock holds no half-write.
    shared
        .store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn key_of(target: &Target, name: &str) -> Key {
    (
        target.rtype.group,
        target.rtype.plural,
        target.namespace.clone().unwrap_or_default(),
        name.to_string(),
    )
}

fn parse_object(body: &[u8]) -> Result<Value> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object
        .get("metadata")?
        .get(field)?
        .as_str()
        .filter(|s| !s.is_empty())
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Value::Object(meta)) => meta,
        // Made an object just above.
        _ => unreachable!("metadata was just made an object"),
    }
}

/// Rejects a body whose apiVersion/kind name another type (empty is allowed, as kube does).
fn check_type(rtype: &ResourceType, object: &Value) -> Result<()> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    if !api_version.is_empty() && api_version != rtype.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rtype.api_version()
        )));
    }
    if !kind.is_empty() && kind != rtype.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rtype.kind
        )));
    }
    Ok(())
}

fn stamp_type(rtype: &ResourceType, object: &mut Value) {
    object["apiVersion"] = json!(rtype.api_version());
    object["kind"] = json!(rtype.kind);
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn selectors(rtype: &ResourceType, params: &Params) -> Result<Selectors> {
    let labels = field_labels(rtype.group, rtype.plural, rtype.namespaced);
    let fields = FieldSelector::parse(
        params.get("fieldSelector").map_or("", String::as_str),
        labels,
    )
    .map_err(ApiError::bad_request)?;
    let labels = LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    Ok(Selectors { fields, labels })
}

fn with_managed_fields(rtype: &ResourceType, stored: &Stored) -> Value {
    let mut object = stored.object.clone();
    if !stored.managers.is_empty() {
        meta_mut(&mut object).insert(
            "managedFields".to_string(),
            merge::managed_fields(&stored.managers, &rtype.api_version()),
        );
    }
    object
}

// ---- read verbs ----------------------------------------------------------------------

/// `as_table`: answer with a `meta.k8s.io/v1` Table (see `table.rs`), as `kubectl get`
/// asks.
fn get(shared: &Shared, target: &Target, as_table: bool) -> Result<Response> {
    let name = target.name.as_deref().unwrap_or_default();
    let store = lock(shared);
    let stored = store
        .get(&key_of(target, name))
        .ok_or_else(|| ApiError::not_found(target.rtype, name))?;
    let object = with_managed_fields(target.rtype, stored);
    if as_table {
        let metadata = json!({ "resourceVersion": store.current_rv().to_string() });
        return Ok(json_reply(
            200,
            super::table::table(target.rtype, &[object], metadata),
        ));
    }
    Ok(json_reply(200, object))
}

fn list(shared: &Shared, target: &Target, params: &Params, as_table: bool) -> Result<Response> {
    let rtype = target.rtype;
    let selectors = selectors(rtype, params)?;
    let limit: usize = match params.get("limit") {
        Some(text) => text
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {text}")))?,
        None => 0,
    };
    let after = params.get("continue").filter(|c| !c.is_empty());
    let store = lock(shared);
    let mut matching = store
        .list(rtype.group, rtype.plural, target.namespace.as_deref())
        .filter(|(_, stored)| selectors.matches(&stored.object))
        .filter(|(key, _)| after.is_none_or(|token| continue_token(key).as_str() > token.as_str()));
    let mut items = Vec::new();
    let mut next = None;
    for (key, stored) in matching.by_ref() {
        if limit > 0 && items.len() == limit {
            next = Some(continue_token(key));
            break;
        }
        items.push(with_managed_fields(rtype, stored));
    }
    // The token names the last item returned; the next page starts after it.
    let continue_from = next.and_then(|_| items.last().map(item_token));
    let mut metadata = json!({ "resourceVersion": store.current_rv().to_string() });
    if let Some(token) = continue_from {
        metadata["continue"] = json!(token);
    }
    if as_table {
        return Ok(json_reply(
            200,
            super::table::table(rtype, &items, metadata),
        ));
    }
    Ok(json_reply(
        200,
        json!({
            "kind": format!("{}List", rtype.kind),
            "apiVersion": rtype.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

fn continue_token(key: &Key) -> String {
    format!("{}/{}", key.2, key.3)
}

fn item_token(item: &Value) -> String {
    format!(
        "{}/{}",
        meta_str(item, "namespace").unwrap_or_default(),
        meta_str(item, "name").unwrap_or_default()
    )
}

// ---- watch ---------------------------------------------------------------------------

/// Decides which watch event, if any, a change is for one watcher.
struct WatchFilter {
    group: &'static str,
    plural: &'static str,
    namespace: Option<String>,
    selectors: Selectors,
}

impl WatchFilter {
    fn line_for(&self, change: &Change) -> Option<Bytes> {
        if change.group != self.group
            || change.plural != self.plural
            || self
                .namespace
                .as_ref()
                .is_some_and(|ns| ns != &change.namespace)
        {
            return None;
        }
        let now_matches = self.selectors.matches(&change.object);
        let event_type = match change.kind {
            ChangeKind::Added => now_matches.then_some("ADDED"),
            ChangeKind::Deleted => now_matches.then_some("DELETED"),
            ChangeKind::Modified => {
                let was = change
                    .old
                    .as_ref()
                    .is_some_and(|old| self.selectors.matches(old));
                match (was, now_matches) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }?;
        Some(event_line(event_type, &change.object))
    }
}

fn event_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": event_type, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn gone_line() -> Bytes {
    let status = ApiError::new(410, "Expired", "too old resource version").status_body();
    event_line("ERROR", &status)
}

fn watch(shared: &Shared, target: &Target, params: &Params) -> Result<Response> {
    let rtype = target.rtype;
    let filter = WatchFilter {
        group: rtype.group,
        plural: rtype.plural,
        namespace: target.namespace.clone(),
        selectors: selectors(rtype, params)?,
    };
    let rv_param = params
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let send_initial = flag(params, "sendInitialEvents");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let mut lines: Vec<Bytes> = Vec::new();
    let store = lock(shared);
    let receiver = if send_initial || rv_param.is_empty() || rv_param == "0" {
        for (_, stored) in store.list(rtype.group, rtype.plural, target.namespace.as_deref()) {
            if filter.selectors.matches(&stored.object) {
                lines.push(event_line("ADDED", &stored.object));
            }
        }
        if send_initial {
            lines.push(initial_events_end(rtype, store.current_rv()));
        }
        store.follow_from(store.current_rv()).ok().map(|(_, rx)| rx)
    } else {
        let rv: u64 = rv_param
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv_param}")))?;
        match store.follow_from(rv) {
            Ok((replay, rx)) => {
                lines.extend(replay.iter().filter_map(|c| filter.line_for(c)));
                Some(rx)
            }
            Err(_) => {
                lines.push(gone_line());
                None
            }
        }
    };
    drop(store);
    let stop = shared.shutdown.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let initial = futures::stream::iter(lines.into_iter().map(Ok::<Bytes, Infallible>));
    let mut control = shared.faults.watch_control();
    let opened_at = control.borrow_and_update().expiries(rtype.plural);
    let live = futures::stream::unfold(
        (receiver, filter, stop, control, false),
        move |(mut receiver, filter, stop, mut control, ended)| async move {
            let rx = receiver.as_mut().filter(|_| !ended)?;
            loop {
                let (held, expired) = {
                    let c = control.borrow_and_update();
                    (
                        c.is_held(filter.plural),
                        c.expiries(filter.plural) > opened_at,
                    )
                };
                if expired {
                    return Some((Ok(gone_line()), (receiver, filter, stop, control, true)));
                }
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep_until(deadline) => return None,
                    changed = control.changed() => if changed.is_err() {
                        return None;
                    },
                    // Held events stay queued, in order (a queue that overflows is a 410).
                    received = rx.recv(), if !held => match received {
                        Ok(change) => {
                            if let Some(line) = filter.line_for(&change) {
                                return Some((Ok(line), (receiver, filter, stop, control, false)));
                            }
                        }
                        // A watcher too slow to keep up must re-list, as with the real API.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            return Some((Ok(gone_line()), (receiver, filter, stop, control, true)));
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    },
                }
            }
        },
    );
    let body = Body::from_stream(futures::StreamExt::chain(initial, live));
    Ok(Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| {
            ApiError::new(500, "InternalError", "building watch response").into_response()
        }))
}

fn initial_events_end(rtype: &ResourceType, rv: u64) -> Bytes {
    let bookmark = json!({
        "apiVersion": rtype.api_version(),
        "kind": rtype.kind,
        "metadata": {
            "resourceVersion": rv.to_string(),
            "annotations": { "k8s.io/initial-events-end": "true" },
        },
    });
    event_line("BOOKMARK", &bookmark)
}

// ---- write verbs ---------------------------------------------------------------------

fn create(
    shared: &Shared,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response> {
    let rtype = target.rtype;
    if rtype.namespaced && target.namespace.is_none() {
        return Err(ApiError::method_not_allowed());
    }
    let mut object = parse_object(body)?;
    check_type(rtype, &object)?;
    if let Some(ns) = meta_str(&object, "namespace")
        && Some(ns) != target.namespace.as_deref()
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    // The real ResourceClaim strategy drops status on create: only /status writes it.
    if rtype.kind == "ResourceClaim"
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
    let writer = update_manager(target, params, headers)?;
    let mut store = lock(shared);
    let (code, object) = insert_new(
        shared,
        &mut store,
        target,
        object,
        Ownership::Update(writer),
        dry_run(params),
    )?;
    Ok(json_reply(code, object))
}

/// Who a write is recorded as: the applier's fields, or the updating manager.
enum Ownership {
    Apply(Managers),
    Update(ManagerKey),
}

/// The manager of a non-apply write: `fieldManager`, else the User-Agent up to its first
/// `/` (the API server's `managerOrUserAgent`).
fn update_manager(target: &Target, params: &Params, headers: &HeaderMap) -> Result<ManagerKey> {
    let name = match params.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(name) => name.clone(),
        None => headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .collect(),
    };
    if name.chars().count() > 128 {
        return Err(ApiError::bad_request(
            "fieldManager: Too long: may not be more than 128 bytes",
        ));
    }
    Ok(ManagerKey {
        name,
        operation: Operation::Update,
        subresource: target.subresource.clone().unwrap_or_default(),
    })
}

/// The managers after a write, given how it is recorded.
fn ownership_after(
    ownership: Ownership,
    existing: &Managers,
    old: &Value,
    new: &Value,
) -> Managers {
    let mut managers = match ownership {
        Ownership::Apply(managers) => managers,
        Ownership::Update(writer) => merge::update_ownership(existing, old, new, &writer),
    };
    merge::prune_ownership(&mut managers, new);
    managers
}

/// Names, stamps, validates and stores a new object.
fn insert_new(
    shared: &Shared,
    store: &mut Store,
    target: &Target,
    mut object: Value,
    ownership: Ownership,
    dry_run: bool,
) -> Result<(u16, Value)> {
    let rtype = target.rtype;
    let name = match (meta_str(&object, "name"), meta_str(&object, "generateName")) {
        (Some(name), _) => name.to_string(),
        (None, Some(prefix)) => unused_name(store, target, prefix),
        (None, None) => {
            return Err(ApiError::invalid(
                rtype,
                "",
                &[validation::FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
    };
    stamp_type(rtype, &mut object);
    let meta = meta_mut(&mut object);
    meta.insert("name".into(), json!(name));
    if let Some(ns) = &target.namespace {
        meta.insert("namespace".into(), json!(ns));
    }
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.insert("generation".into(), json!(1));
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "managedFields",
        "selfLink",
    ] {
        meta.remove(field);
    }
    gates::prepare_for_create(rtype, &mut object, &shared.options);
    if rtype.kind == "PodNetwork" {
        validation::default_pod_network(&mut object);
    }
    let errors = validation::validate(rtype, &object, None, &shared.options);
    if !errors.is_empty() {
        return Err(ApiError::invalid(rtype, &name, &errors));
    }
    let key = key_of(target, &name);
    if store.get(&key).is_some() {
        return Err(ApiError::already_exists(rtype, &name));
    }
    let managers = ownership_after(ownership, &Managers::new(), &json!({}), &object);
    if dry_run {
        return Ok((201, object));
    }
    let object = store.commit(
        key,
        Stored {
            object,
            managers: managers.clone(),
        },
    );
    Ok((
        201,
        with_managed_fields(rtype, &Stored { object, managers }),
    ))
}

fn unused_name(store: &Store, target: &Target, prefix: &str) -> String {
    // The real API appends 5 random characters from an alphabet without vowels.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    loop {
        let suffix: String = (0..5)
            .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
            .collect();
        let name = format!("{prefix}{suffix}");
        if store.get(&key_of(target, &name)).is_none() {
            return name;
        }
    }
}

fn new_uid() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

fn replace(
    shared: &Shared,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response> {
    let rtype = target.rtype;
    let name = target.name.as_deref().unwrap_or_default();
    let object = parse_object(body)?;
    check_type(rtype, &object)?;
    if meta_str(&object, "name").is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta_str(&object, "name").unwrap_or_default()
        )));
    }
    let mut store = lock(shared);
    let key = key_of(target, name);
    let existing = store
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(rtype, name))?;
    check_preconditions(rtype, name, &existing.object, &object)?;
    let candidate = combine_for_write(target, &existing.object, object);
    let writer = update_manager(target, params, headers)?;
    let object = finish_update(
        shared,
        &mut store,
        target,
        key,
        existing,
        candidate,
        Ownership::Update(writer),
        dry_run(params),
    )?;
    Ok(json_reply(200, object))
}

/// A body's resourceVersion and uid, when set, must match the stored object.
fn check_preconditions(
    rtype: &ResourceType,
    name: &str,
    existing: &Value,
    body: &Value,
) -> Result<()> {
    if let Some(rv) = meta_str(body, "resourceVersion")
        && Some(rv) != meta_str(existing, "resourceVersion")
    {
        return Err(ApiError::conflict(
            rtype,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    if let Some(uid) = meta_str(body, "uid")
        && Some(uid) != meta_str(existing, "uid")
    {
        return Err(ApiError::conflict(
            rtype,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(existing, "uid").unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

/// What a write may change: `/status` writes change only status; main-resource writes of
/// types with a status subresource keep the stored status.
fn combine_for_write(target: &Target, existing: &Value, written: Value) -> Value {
    if target.subresource.as_deref() == Some("status") {
        let mut combined = existing.clone();
        match written.get("status") {
            Some(status) => combined["status"] = status.clone(),
            None => {
                if let Some(map) = combined.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        return combined;
    }
    let mut combined = written;
    if target.rtype.has_status
        && let Some(map) = combined.as_object_mut()
    {
        match existing.get("status") {
            Some(status) => {
                map.insert("status".into(), status.clone());
            }
            None => {
                map.remove("status");
            }
        }
    }
    combined
}

/// Keeps server-owned metadata, bumps generation on spec changes, validates and stores.
/// Writes that change nothing are not stored (no new resourceVersion), as with the real API.
#[allow(clippy::too_many_arguments)]
fn finish_update(
    shared: &Shared,
    store: &mut Store,
    target: &Target,
    key: Key,
    existing: Stored,
    mut candidate: Value,
    ownership: Ownership,
    dry_run: bool,
) -> Result<Value> {
    let rtype = target.rtype;
    stamp_type(rtype, &mut candidate);
    let old_meta = existing
        .object
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let meta = meta_mut(&mut candidate);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "generation",
        "resourceVersion",
    ] {
        match old_meta.get(field) {
            Some(value) => meta.insert(field.to_string(), value.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("managedFields");
    if candidate.get("spec") != existing.object.get("spec") {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(&mut candidate).insert("generation".into(), json!(generation + 1));
    }
    let name = key.3.clone();
    gates::prepare_for_update(
        rtype,
        target.subresource.as_deref(),
        &mut candidate,
        &existing.object,
        &shared.options,
    );
    if rtype.kind == "PodNetwork" {
        validation::default_pod_network(&mut candidate);
    }
    let errors = validation::validate(rtype, &candidate, Some(&existing.object), &shared.options);
    if !errors.is_empty() {
        return Err(ApiError::invalid(rtype, &name, &errors));
    }
    let managers = ownership_after(ownership, &existing.managers, &existing.object, &candidate);
    if candidate == existing.object && managers == existing.managers {
        return Ok(with_managed_fields(rtype, &existing));
    }
    if dry_run {
        return Ok(candidate);
    }
    let deleting = candidate.pointer("/metadata/deletionTimestamp").is_some();
    let finalizers_left = candidate
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let stored = Stored {
        object: candidate,
        managers,
    };
    if deleting && !finalizers_left {
        // The last finalizer is gone: the object goes away now.
        let object = store.commit(key.clone(), stored.clone());
        store.remove(&key);
        return Ok(object);
    }
    let object = store.commit(key, stored.clone());
    Ok(with_managed_fields(
        rtype,
        &Stored {
            object,
            managers: stored.managers,
        },
    ))
}

fn patch(
    shared: &Shared,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    match content_type.as_str() {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            merge_patch(shared, target, params, headers, body)
        }
        "application/json-patch+json" => json_patch(shared, target, params, headers, body),
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            server_side_apply(shared, target, params, body)
        }
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format or is not supported by this stand-in: {other}"
            ),
        )),
    }
}

fn merge_patch(
    shared: &Shared,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response> {
    let rtype = target.rtype;
    let name = target.name.as_deref().unwrap_or_default();
    let patch = parse_object(body)?;
    let mut store = lock(shared);
    let key = key_of(target, name);
    let existing = store
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(rtype, name))?;
    check_preconditions(rtype, name, &existing.object, &patch)?;
    let mut patched = existing.object.clone();
    merge::merge_patch(&mut patched, &patch);
    let candidate = combine_for_write(target, &existing.object, patched);
    let writer = update_manager(target, params, headers)?;
    let object = finish_update(
        shared,
        &mut store,
        target,
        key,
        existing,
        candidate,
        Ownership::Update(writer),
        dry_run(params),
    )?;
    Ok(json_reply(200, object))
}

fn json_patch(
    shared: &Shared,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response> {
    let rtype = target.rtype;
    let name = target.name.as_deref().unwrap_or_default();
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let mut store = lock(shared);
    let key = key_of(target, name);
    let existing = store
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(rtype, name))?;
    let mut patched = existing.object.clone();
    merge::json_patch(&mut patched, &patch).map_err(|why| {
        ApiError::new(
            422,
            "Invalid",
            format!("the JSON patch could not be applied: {why}"),
        )
    })?;
    // A patch that sets metadata.resourceVersion is an optimistic-concurrency precondition.
    check_preconditions(rtype, name, &existing.object, &patched)?;
    let candidate = combine_for_write(target, &existing.object, patched);
    let writer = update_manager(target, params, headers)?;
    let object = finish_update(
        shared,
        &mut store,
        target,
        key,
        existing,
        candidate,
        Ownership::Update(writer),
        dry_run(params),
    )?;
    Ok(json_reply(200, object))
}

fn server_side_apply(
    shared: &Shared,
    target: &Target,
    params: &Params,
    body: &[u8],
) -> Result<Response> {
    let rtype = target.rtype;
    let name = target.name.as_deref().unwrap_or_default();
    let manager = ManagerKey {
        name: params
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::bad_request("fieldManager is required for apply requests"))?
            .clone(),
        operation: Operation::Apply,
        subresource: target.subresource.clone().unwrap_or_default(),
    };
    let force = flag(params, "force");
    let applied: Value = serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    if applied.get("apiVersion").is_none() || applied.get("kind").is_none() {
        return Err(ApiError::bad_request(
            "apiVersion and kind must be set in an applied configuration",
        ));
    }
    check_type(rtype, &applied)?;
    let scoped = scope_applied(target, &applied);
    let mut store = lock(shared);
    let key = key_of(target, name);
    let Some(existing) = store.get(&key).cloned() else {
        if target.subresource.is_some() {
            return Err(ApiError::not_found(rtype, name));
        }
        let mut object = scoped.clone();
        meta_mut(&mut object).insert("name".into(), json!(name));
        let managers = Managers::from([(manager, merge::applied_paths(&scoped))]);
        let (code, object) = insert_new(
            shared,
            &mut store,
            target,
            object,
            Ownership::Apply(managers),
            dry_run(params),
        )?;
        return Ok(json_reply(code, object));
    };
    check_preconditions(rtype, name, &existing.object, &applied)?;
    let (merged, managers) = apply_ownership(rtype, name, &existing, &scoped, &manager, force)?;
    let candidate = combine_for_write(target, &existing.object, merged);
    let object = finish_update(
        shared,
        &mut store,
        target,
        key,
        existing,
        candidate,
        Ownership::Apply(managers),
        dry_run(params),
    )?;
    Ok(json_reply(200, object))
}

/// The part of an applied configuration a request may set: only `status` on `/status`, and
/// everything but `status` on the main resource of a type with a status subresource.
fn scope_applied(target: &Target, applied: &Value) -> Value {
    let mut scoped = applied.clone();
    if let Some(map) = scoped.as_object_mut() {
        if target.subresource.as_deref() == Some("status") {
            map.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
            if let Some(Value::Object(meta)) = map.get_mut("metadata") {
                meta.retain(|k, _| {
                    matches!(k.as_str(), "name" | "namespace" | "resourceVersion" | "uid")
                });
            }
        } else if target.rtype.has_status {
            map.remove("status");
        }
    }
    scoped
}

/// Server-side apply for one manager: conflicts with other managers' fields (unless
/// forced), removal of fields this manager no longer applies and nobody else owns, and the
/// merge of the applied configuration.
fn apply_ownership(
    rtype: &ResourceType,
    name: &str,
    existing: &Stored,
    applied: &Value,
    manager: &ManagerKey,
    force: bool,
) -> Result<(Value, Managers)> {
    let new_paths = merge::applied_paths(applied);
    let mut managers = existing.managers.clone();
    let mut conflicts = Vec::new();
    for (other, owned) in managers.iter_mut().filter(|(m, _)| *m != manager) {
        let contested: Vec<_> = owned
            .intersection(&new_paths)
            .filter(|p| p.last().is_some_and(|e| e.starts_with("f:")))
            .filter(|p| merge::value_at(&existing.object, p) != merge::value_at(applied, p))
            .cloned()
            .collect();
        for path in contested {
            if force {
                owned.remove(&path);
            } else {
                conflicts.push(format!(
                    "conflict with {}: {}",
                    other.describe(&rtype.api_version()),
                    merge::display_path(&path)
                ));
            }
        }
    }
    if !conflicts.is_empty() {
        let mut error = ApiError::conflict(rtype, name, "");
        error.message = format!(
            "Apply failed with {} conflict{}: {}",
            conflicts.len(),
            if conflicts.len() == 1 { "" } else { "s" },
            conflicts.join("\n")
        );
        return Err(error);
    }
    let mut merged = existing.object.clone();
    let previous = managers.get(manager).cloned().unwrap_or_default();
    for dropped in previous.difference(&new_paths) {
        let owned_elsewhere = managers
            .iter()
            .filter(|(m, _)| *m != manager)
            .any(|(_, owned)| owned.iter().any(|p| p.starts_with(dropped)));
        if !owned_elsewhere {
            merge::remove_at(&mut merged, dropped);
            // Containers left empty and owned by nobody go too, as with the real API.
            for depth in (1..dropped.len()).rev() {
                let ancestor = &dropped[..depth];
                let empty = merge::value_at(&merged, ancestor).is_some_and(|v| {
                    v.as_array().is_some_and(Vec::is_empty)
                        || v.as_object().is_some_and(Map::is_empty)
                });
                let owned = managers
                    .iter()
                    .filter(|(m, _)| *m != manager)
                    .any(|(_, owned)| owned.iter().any(|p| p.starts_with(ancestor)));
                if !empty || owned {
                    break;
                }
                merge::remove_at(&mut merged, ancestor);
            }
        }
    }
    merge::apply_merge(&mut merged, applied, &mut Vec::new());
    managers.retain(|_, owned| !owned.is_empty());
    managers.insert(manager.clone(), new_paths);
    Ok((merged, managers))
}

fn delete(shared: &Shared, target: &Target, params: &Params, body: &[u8]) -> Result<Response> {
    let rtype = target.rtype;
    let name = target.name.as_deref().unwrap_or_default();
    let options: Value = if body.is_empty() {
        json!({})
    } else {
        parse_object(body)?
    };
    let mut store = lock(shared);
    let key = key_of(target, name);
    let existing = store
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(rtype, name))?;
    if let Some(pre) = options.get("preconditions") {
        let as_meta = json!({ "metadata": pre });
        check_preconditions(rtype, name, &existing.object, &as_meta)?;
    }
    let dry = dry_run(params)
        || options
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| !d.is_empty());
    if dry {
        return Ok(json_reply(200, existing.object));
    }
    Ok(json_reply(200, delete_stored(&mut store, key, existing)))
}

/// Deletes now, or marks for deletion while finalizers remain.
fn delete_stored(store: &mut Store, key: Key, mut existing: Stored) -> Value {
    let has_finalizers = existing
        .object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if !has_finalizers {
        return store.remove(&key).unwrap_or(existing.object);
    }
    if existing
        .object
        .pointer("/metadata/deletionTimestamp")
        .is_none()
    {
        meta_mut(&mut existing.object).insert("deletionTimestamp".into(), json!(now()));
        return store.commit(key, existing);
    }
    existing.object
}

fn delete_collection(shared: &Shared, target: &Target, params: &Params) -> Result<Response> {
    let rtype = target.rtype;
    if rtype.namespaced && target.namespace.is_none() {
        return Err(ApiError::method_not_allowed());
    }
    let selectors = selectors(rtype, params)?;
    let mut store = lock(shared);
    let doomed: Vec<(Key, Stored)> = store
        .list(rtype.group, rtype.plural, target.namespace.as_deref())
        .filter(|(_, stored)| selectors.matches(&stored.object))
        .map(|(key, stored)| (key.clone(), stored.clone()))
        .collect();
    let items: Vec<Value> = if dry_run(params) {
        doomed.into_iter().map(|(_, s)| s.object).collect()
    } else {
        doomed
            .into_iter()
            .map(|(key, stored)| delete_stored(&mut store, key, stored))
            .collect()
    };
    Ok(json_reply(
        200,
        json!({
            "kind": format!("{}List", rtype.kind),
            "apiVersion": rtype.api_version(),
            "metadata": { "resourceVersion": store.current_rv().to_string() },
            "items": items,
        }),
    ))
}

// ---- discovery -----------------------------------------------------------------------

fn version_info(options: &super::ApiServerOptions) -> Value {
    let minor = options.minor;
    json!({
        "major": "1", "minor": minor.to_string(), "gitVersion": format!("v1.{minor}.0-netclaim-standin"),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "none", "compiler": "none", "platform": "linux/amd64",
    })
}

fn core_versions() -> Value {
    json!({ "kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [] })
}

fn group_list() -> Value {
    let mut groups: Vec<&str> = RESOURCES
        .iter()
        .map(|r| r.group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    let groups: Vec<Value> = groups
        .iter()
        .map(|group| {
            let version = RESOURCES
                .iter()
                .find(|r| r.group == *group)
                .map_or("v1", |r| r.version);
            let gv = json!({ "groupVersion": format!("{group}/{version}"), "version": version });
            json!({ "name": group, "versions": [gv.clone()], "preferredVersion": gv })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| {
            let verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
            let main = json!({
                "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                "kind": r.kind, "verbs": verbs,
            });
            let status = r.has_status.then(|| {
                json!({ "name": format!("{}/status", r.plural), "singularName": "",
                        "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"] })
            });
            std::iter::once(main).chain(status)
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources }),
    )
}
