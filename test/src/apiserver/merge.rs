//! JSON merge patch (RFC 7386), JSON patch (RFC 6902) and field ownership: which manager
//! owns which fields, as `metadata.managedFields` records it, with the real API's
//! `listType=map` keys so managers own list items, not whole lists.
//!
//! Ownership follows structured-merge-diff (`merge/update.go`): an **Apply** takes the fields
//! it applies and conflicts with other owners of fields it would change; an **Update**
//! (create, PUT, merge or JSON patch) never conflicts: the writer takes every field it added
//! or changed, other owners lose those, and removed fields leave every owner. Owners are
//! told apart by name, operation and subresource, as the API server's manager identifiers
//! are, so a name's Update entry and its Apply entry are two owners.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// A field path in the real API's FieldsV1 element syntax: `f:<field>` or `k:<key json>`.
pub(crate) type FieldPath = Vec<String>;

/// How a manager wrote its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Operation {
    Apply,
    Update,
}

/// One owner: a manager name, its operation and the subresource it wrote through.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ManagerKey {
    pub name: String,
    pub operation: Operation,
    /// `status` for writes to `/status`, else empty.
    pub subresource: String,
}

impl ManagerKey {
    /// The owner as conflict messages name it (the API server's `printManager`):
    /// `"name"`, `"name" with subresource "status"`, and `using <apiVersion>` for updates.
    pub fn describe(&self, api_version: &str) -> String {
        let mut text = format!("{:?}", self.name);
        if !self.subresource.is_empty() {
            text.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            text.push_str(&format!(" using {api_version}"));
        }
        text
    }
}

/// Field ownership: which paths each owner holds.
pub(crate) type Managers = BTreeMap<ManagerKey, BTreeSet<FieldPath>>;

/// Metadata the server sets, which nobody owns.
fn is_server_field(path: &[String]) -> bool {
    path.len() >= 2
        && path[0] == "f:metadata"
        && matches!(
            path[1].as_str(),
            "f:uid"
                | "f:resourceVersion"
                | "f:generation"
                | "f:creationTimestamp"
                | "f:deletionTimestamp"
                | "f:deletionGracePeriodSeconds"
                | "f:managedFields"
                | "f:selfLink"
        )
}

/// Every path of `object` an owner can hold.
pub(crate) fn owned_paths(object: &Value) -> BTreeSet<FieldPath> {
    let mut paths = applied_paths(object);
    paths.retain(|path| !is_server_field(path));
    paths
}

/// Ownership after an Update by `writer` that turned `old` into `new`.
pub(crate) fn update_ownership(
    managers: &Managers,
    old: &Value,
    new: &Value,
    writer: &ManagerKey,
) -> Managers {
    let before = owned_paths(old);
    let after = owned_paths(new);
    let removed: BTreeSet<FieldPath> = before.difference(&after).cloned().collect();
    let mut changed: BTreeSet<FieldPath> = after.difference(&before).cloned().collect();
    changed.extend(
        before
            .intersection(&after)
            .filter(|path| path.last().is_some_and(|e| e.starts_with("f:")))
            .filter(|path| value_at(old, path) != value_at(new, path))
            .cloned(),
    );
    let mut result = Managers::new();
    for (owner, owned) in managers {
        if owner == writer {
            continue;
        }
        let kept: BTreeSet<FieldPath> = owned
            .iter()
            .filter(|path| !changed.contains(*path) && !removed.contains(*path))
            .cloned()
            .collect();
        if !kept.is_empty() {
            result.insert(owner.clone(), kept);
        }
    }
    let mut own: BTreeSet<FieldPath> = managers
        .get(writer)
        .map(|owned| owned.difference(&removed).cloned().collect())
        .unwrap_or_default();
    own.extend(changed);
    if !own.is_empty() {
        result.insert(writer.clone(), own);
    }
    result
}

/// Drops owned paths that are not in `object` any more (the server dropped or reset them).
pub(crate) fn prune_ownership(managers: &mut Managers, object: &Value) {
    for owned in managers.values_mut() {
        owned.retain(|path| value_at(object, path).is_some());
    }
    managers.retain(|_, owned| !owned.is_empty());
}

/// Applies an RFC 7386 merge patch: objects merge, `null` deletes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The key fields of the `listType=map` lists the stand-in knows, by the list's field path.
fn list_keys(path: &[String]) -> Option<&'static [&'static str]> {
    let names: Vec<&str> = path.iter().filter_map(|e| e.strip_prefix("f:")).collect();
    match names.as_slice() {
        ["status", "devices"] => Some(&["driver", "pool", "device", "shareID"]),
        ["status", "reservedFor"] | ["metadata", "ownerReferences"] => Some(&["uid"]),
        [.., "conditions"] => Some(&["type"]),
        _ => None,
    }
}

/// The `k:{...}` element naming a list item by its key fields (absent keys left out).
fn item_element(item: &Value, keys: &[&str]) -> String {
    let key: BTreeMap<&str, &Value> = keys
        .iter()
        .filter_map(|k| item.get(*k).map(|v| (*k, v)))
        .collect();
    format!("k:{}", serde_json::to_string(&key).unwrap_or_default())
}

/// Every path an applied configuration sets: leaves, and each keyed list item itself.
pub(crate) fn applied_paths(applied: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    if let Value::Object(map) = applied {
        for (key, value) in map {
            // Identity fields are not owned by anyone.
            if matches!(key.as_str(), "apiVersion" | "kind") {
                continue;
            }
            walk(value, &mut vec![format!("f:{key}")], &mut out);
        }
    }
    out.retain(|p| p != &["f:metadata", "f:name"] && p != &["f:metadata", "f:namespace"]);
    out.retain(|p| p.first().map(String::as_str) != Some("f:metadata") || p.len() > 1);
    out
}

fn walk(value: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(format!("f:{key}"));
                walk(child, path, out);
                path.pop();
            }
        }
        Value::Array(items) => match list_keys(path) {
            Some(keys) => {
                for item in items {
                    path.push(item_element(item, keys));
                    out.insert(path.clone());
                    walk(item, path, out);
                    path.pop();
                }
            }
            None => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at `path`, if present.
pub(crate) fn value_at<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = root;
    for (depth, element) in path.iter().enumerate() {
        current = step(current, element, &path[..depth])?;
    }
    Some(current)
}

fn step<'a>(value: &'a Value, element: &str, parent: &[String]) -> Option<&'a Value> {
    if let Some(field) = element.strip_prefix("f:") {
        return value.get(field);
    }
    let keys = list_keys(parent)?;
    value
        .as_array()?
        .iter()
        .find(|item| item_element(item, keys) == element)
}

/// Removes the field or list item at `path`, if present.
pub(crate) fn remove_at(root: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut current = root;
    for (depth, element) in parent_path.iter().enumerate() {
        let next = if let Some(field) = element.strip_prefix("f:") {
            current.get_mut(field)
        } else {
            let Some(keys) = list_keys(&parent_path[..depth]) else {
                return;
            };
            current.as_array_mut().and_then(|items| {
                items
                    .iter_mut()
                    .find(|item| item_element(item, keys) == *element)
            })
        };
        let Some(next) = next else {
            return;
        };
        current = next;
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(map) = current.as_object_mut() {
            map.remove(field);
        }
    } else if let (Some(keys), Some(items)) = (list_keys(parent_path), current.as_array_mut()) {
        items.retain(|item| item_element(item, keys) != *last);
    }
}

/// Merges an applied configuration into `target`: objects field by field, keyed lists item
/// by item, everything else replaced.
pub(crate) fn apply_merge(target: &mut Value, applied: &Value, path: &mut FieldPath) {
    match (target, applied) {
        (Value::Object(target), Value::Object(applied)) => {
            for (key, value) in applied {
                path.push(format!("f:{key}"));
                match target.get_mut(key) {
                    Some(existing) => apply_merge(existing, value, path),
                    None => {
                        target.insert(key.clone(), value.clone());
                    }
                }
                path.pop();
            }
        }
        (Value::Array(target), Value::Array(applied)) if list_keys(path).is_some() => {
            let keys = list_keys(path).unwrap_or_default();
            for item in applied {
                let element = item_element(item, keys);
                path.push(element.clone());
                match target.iter_mut().find(|t| item_element(t, keys) == element) {
                    Some(existing) => apply_merge(existing, item, path),
                    None => target.push(item.clone()),
                }
                path.pop();
            }
        }
        (target, applied) => *target = applied.clone(),
    }
}

/// A path as the real API prints it in conflict messages, e.g. `.status.devices[{..}]`.
pub(crate) fn display_path(path: &[String]) -> String {
    path.iter()
        .map(|e| match e.strip_prefix("f:") {
            Some(field) => format!(".{field}"),
            None => format!("[{}]", e.trim_start_matches("k:")),
        })
        .collect()
}

/// Renders ownership as `metadata.managedFields` entries (FieldsV1 trees).
pub(crate) fn managed_fields(managers: &Managers, api_version: &str) -> Value {
    let entries: Vec<Value> = managers
        .iter()
        .map(|(owner, paths)| {
            let mut tree = Map::new();
            for path in paths {
                let mut node = &mut tree;
                for element in path {
                    let child = node
                        .entry(element.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    node = match child {
                        Value::Object(map) => map,
                        // Built only from objects above, so this is unreachable.
                        _ => break,
                    };
                }
            }
            let mut entry = serde_json::json!({
                "manager": owner.name,
                "operation": match owner.operation {
                    Operation::Apply => "Apply",
                    Operation::Update => "Update",
                },
                "apiVersion": api_version,
                "fieldsType": "FieldsV1",
                "fieldsV1": Value::Object(tree),
            });
            if !owner.subresource.is_empty() {
                entry["subresource"] = Value::String(owner.subresource.clone());
            }
            entry
        })
        .collect();
    Value::Array(entries)
}

/// Applies an RFC 6902 JSON patch (`add`, `remove`, `replace`, `move`, `copy`, `test`).
/// Returns why it failed, naming the operation's index.
pub(crate) fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let operations = patch
        .as_array()
        .ok_or("a JSON patch must be a list of operations")?;
    for (index, operation) in operations.iter().enumerate() {
        apply_operation(target, operation).map_err(|why| format!("operation {index}: {why}"))?;
    }
    Ok(())
}

fn apply_operation(target: &mut Value, operation: &Value) -> Result<(), String> {
    let op = operation
        .get("op")
        .and_then(Value::as_str)
        .ok_or("missing op")?;
    let path = operation
        .get("path")
        .and_then(Value::as_str)
        .ok_or("missing path")?;
    let value = || {
        operation
            .get("value")
            .cloned()
            .ok_or("missing value".to_string())
    };
    let from = || {
        operation
            .get("from")
            .and_then(Value::as_str)
            .ok_or("missing from".to_string())
    };
    match op {
        "add" => pointer_insert(target, path, value()?, false),
        "replace" => pointer_insert(target, path, value()?, true),
        "remove" => pointer_remove(target, path).map(drop),
        "move" => {
            let moved = pointer_remove(target, from()?)?;
            pointer_insert(target, path, moved, false)
        }
        "copy" => {
            let copied = target
                .pointer(from()?)
                .cloned()
                .ok_or("from path not found")?;
            pointer_insert(target, path, copied, false)
        }
        "test" => match target.pointer(path) {
            Some(actual) if *actual == value()? => Ok(()),
            _ => Err(format!("test failed at {path}")),
        },
        other => Err(format!("unknown op {other}")),
    }
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or(format!("invalid path {path}"))?;
    Ok((
        parent.to_string(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn pointer_insert(
    target: &mut Value,
    path: &str,
    value: Value,
    replace: bool,
) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    let container = target
        .pointer_mut(&parent)
        .ok_or(format!("path {parent} not found"))?;
    match container {
        Value::Object(map) => {
            if replace && !map.contains_key(&last) {
                return Err(format!("path {path} not found"));
            }
            map.insert(last, value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" && !replace {
                items.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| format!("invalid index {last}"))?
            };
            match (replace, index < items.len(), index <= items.len()) {
                (true, true, _) => items[index] = value,
                (false, _, true) => items.insert(index, value),
                _ => return Err(format!("index {index} out of range")),
            }
            Ok(())
        }
        _ => Err(format!("path {parent} is not a container")),
    }
}

fn pointer_remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let container = target
        .pointer_mut(&parent)
        .ok_or(format!("path {parent} not found"))?;
    let removed = match container {
        Value::Object(map) => map.remove(&last),
        Value::Array(items) => match last.parse::<usize>() {
            Ok(index) if index < items.len() => Some(items.remove(index)),
            _ => None,
        },
        _ => None,
    };
    removed.ok_or(format!("path {path} not found"))
}
