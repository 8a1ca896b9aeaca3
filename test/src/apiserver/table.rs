//! Server-side printing: `meta.k8s.io/v1` Table answers, which `kubectl get` asks for
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io, ...;v=v1beta1..., application/json`)
//! and prints as its table.
//!
//! Columns follow the real API server's printers (kubernetes `pkg/printers/internalversion/
//! printers.go`): ResourceSlices `Name, Node, Driver, Pool, Age`; ResourceClaims
//! `Name, State, Age` with State from `deleted`, `pending`, `allocated`, `reserved`;
//! every other type `Name, Age` (as the default table convertor prints objects without
//! a printer). Ages are `HumanDuration` (`45s`, `3m20s`, `5h`, `2d`). Rows carry the
//! object's metadata as a `PartialObjectMetadata` (the default `includeObject=Metadata`),
//! which kubectl uses for `-A`'s NAMESPACE column and `--show-labels`.
//!
//! Not modelled: `-o wide` extra columns (none of these types has one), `includeObject`
//! other than `Metadata`, tables over watches.

use http::HeaderMap;
use serde_json::{Value, json};

use super::resources::ResourceType;

/// Whether the request's `Accept` header asks for a `meta.k8s.io/v1` Table.
pub(crate) fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let params: Vec<&str> = media.split(';').map(str::trim).collect();
            params.contains(&"as=Table")
                && params.contains(&"v=v1")
                && params.contains(&"g=meta.k8s.io")
        })
}

/// A Table of `objects` of `rtype`; `metadata` is the list's (`resourceVersion`,
/// `continue`).
pub(crate) fn table(rtype: &ResourceType, objects: &[Value], metadata: Value) -> Value {
    let now = chrono::Utc::now();
    let columns: Vec<Value> = columns(rtype)
        .iter()
        .map(|(name, description)| {
            let mut column = json!({"name": name, "type": "string", "format": "", "description": description, "priority": 0});
            if *name == "Name" {
                column["format"] = json!("name");
            }
            column
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let age = age(object["metadata"]["creationTimestamp"].as_str(), now);
            let cells: Vec<Value> = match rtype.kind {
                "ResourceSlice" => vec![
                    json!(name),
                    json!(object["spec"]["nodeName"].as_str().unwrap_or_default()),
                    json!(object["spec"]["driver"].as_str().unwrap_or_default()),
                    json!(object["spec"]["pool"]["name"].as_str().unwrap_or_default()),
                    json!(age),
                ],
                "ResourceClaim" => vec![json!(name), json!(claim_state(object)), json!(age)],
                _ => vec![json!(name), json!(age)],
            };
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object["metadata"].clone(),
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn columns(rtype: &ResourceType) -> Vec<(&'static str, &'static str)> {
    const NAME: (&str, &str) = ("Name", "Name must be unique within a namespace.");
    const AGE: (&str, &str) = (
        "Age",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    match rtype.kind {
        "ResourceSlice" => vec![
            NAME,
            (
                "Node",
                "NodeName identifies the node which provides the resources in this pool.",
            ),
            (
                "Driver",
                "Driver identifies the DRA driver providing the capacity information.",
            ),
            ("Pool", "Name is used to identify the pool."),
            AGE,
        ],
        "ResourceClaim" => vec![
            NAME,
            (
                "State",
                "A summary of the current state (allocated, pending, reserved, etc.).",
            ),
            AGE,
        ],
        _ => vec![NAME, AGE],
    }
}

/// The State column of a ResourceClaim, as the real printer builds it.
fn claim_state(claim: &Value) -> String {
    let mut states = Vec::new();
    let deleted = !claim["metadata"]["deletionTimestamp"].is_null();
    if deleted {
        states.push("deleted");
    }
    if claim["status"]["allocation"].is_null() {
        if !deleted {
            states.push("pending");
        }
    } else {
        states.push("allocated");
        if claim["status"]["reservedFor"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            states.push("reserved");
        }
    }
    states.join(",")
}

fn age(created: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(created) = created.and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok()) else {
        return "<unknown>".to_owned();
    };
    human_duration((now - created.with_timezone(&chrono::Utc)).num_seconds())
}

/// apimachinery's `duration.HumanDuration`, on whole seconds.
fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(5 * 3600 + 60), "5h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
    }

    #[test]
    fn the_accept_header_decides() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert!(wanted(&headers));
        headers.insert(
            http::header::ACCEPT,
            "application/json"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert!(!wanted(&headers));
    }

    #[test]
    fn claim_states() {
        assert_eq!(claim_state(&json!({"metadata": {}})), "pending");
        assert_eq!(
            claim_state(
                &json!({"metadata": {}, "status": {"allocation": {}, "reservedFor": [{"name": "p"}]}})
            ),
            "allocated,reserved"
        );
        assert_eq!(
            claim_state(
                &json!({"metadata": {"deletionTimestamp": "x"}, "status": {"allocation": {}}})
            ),
            "deleted,allocated"
        );
    }
}
