//! What clients cost the API server: requests by verb and resource, and bytes each way.
//!
//! The verbs are the API server's (`get`, `list`, `watch`, `create`, `update`, `patch`,
//! `delete`, `deletecollection`), derived from the method, the path (collection or named
//! object) and `?watch=true`, as the real server's request info does. Bytes are request
//! bodies and response bodies as sent, watch streams included (counted as each event is
//! written). Benchmarks read it (`test/benches/api_load.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;

/// Counters shared by the middleware and readers.
#[derive(Clone, Default)]
pub struct Traffic {
    inner: Arc<Mutex<BTreeMap<(String, String), Counts>>>,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
}

/// Requests of one (verb, resource).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests received.
    pub requests: u64,
}

impl Traffic {
    /// Requests of `verb` on `resource` (plural name, `/status` for the subresource) since
    /// the last [`Traffic::reset`]; `"*"` matches any.
    pub fn requests(&self, verb: &str, resource: &str) -> u64 {
        self.lock()
            .iter()
            .filter(|((v, r), _)| (verb == "*" || verb == v) && (resource == "*" || resource == r))
            .map(|(_, c)| c.requests)
            .sum()
    }

    /// Every (verb, resource) seen and its count.
    pub fn by_verb(&self) -> BTreeMap<(String, String), u64> {
        self.lock()
            .iter()
            .map(|(k, c)| (k.clone(), c.requests))
            .collect()
    }

    /// Request body bytes received.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Response body bytes sent (watch events included).
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Starts counting from zero.
    pub fn reset(&self) {
        self.lock().clear();
        self.bytes_in.store(0, Ordering::Relaxed);
        self.bytes_out.store(0, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Counts>> {
        // Counters only: a panic elsewhere cannot leave them inconsistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, verb: String, resource: String) {
        self.lock().entry((verb, resource)).or_default().requests += 1;
    }
}

/// The (verb, resource) of a request, as the API server's request info derives it.
pub fn classify(method: &str, path: &str, query: Option<&str>) -> (String, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest: &[&str] = match parts.first() {
        Some(&"api") if parts.len() >= 2 => &parts[2..],
        Some(&"apis") if parts.len() >= 3 => &parts[3..],
        _ => return (method.to_ascii_lowercase(), "nonresource".to_owned()),
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named) = match rest {
        [] => ("", false),
        [resource] => (*resource, false),
        [resource, _name] => (*resource, true),
        [resource, _name, sub, ..] => {
            return (verb(method, true, query), format!("{resource}/{sub}"));
        }
    };
    (verb(method, named, query), resource.to_owned())
}

fn verb(method: &str, named: bool, query: Option<&str>) -> String {
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    match (method, named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return method.to_ascii_lowercase(),
    }
    .to_owned()
}

/// The middleware: counts the request and the bytes of both bodies.
pub async fn count(State(traffic): State<Traffic>, request: Request, next: Next) -> Response {
    let (verb, resource) = classify(
        request.method().as_str(),
        request.uri().path(),
        request.uri().query(),
    );
    traffic.record(verb, resource);
    let bytes_in = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    traffic.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let out = traffic.bytes_out.clone();
    let body = Body::from_stream(body.into_data_stream().inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            out.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    }));
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::classify;

    #[test]
    fn verbs_and_resources_are_derived_as_the_api_server_does() {
        let cases = [
            (
                "GET",
                "/apis/resource.k8s.io/v1/resourceslices",
                None,
                ("list", "resourceslices"),
            ),
            (
                "GET",
                "/apis/resource.k8s.io/v1/resourceslices",
                Some("watch=true&resourceVersion=5"),
                ("watch", "resourceslices"),
            ),
            (
                "PUT",
                "/apis/resource.k8s.io/v1/resourceslices/n-a",
                None,
                ("update", "resourceslices"),
            ),
            (
                "GET",
                "/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c",
                None,
                ("get", "resourceclaims"),
            ),
            (
                "PATCH",
                "/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c/status",
                None,
                ("patch", "resourceclaims/status"),
            ),
            ("GET", "/api/v1/nodes/n", None, ("get", "nodes")),
            (
                "DELETE",
                "/apis/resource.k8s.io/v1/resourceslices",
                Some("fieldSelector=x"),
                ("deletecollection", "resourceslices"),
            ),
            ("GET", "/version", None, ("get", "nonresource")),
        ];
        for (method, path, query, (verb, resource)) in cases {
            assert_eq!(
                classify(method, path, query),
                (verb.to_owned(), resource.to_owned()),
                "{method} {path}"
            );
        }
    }
}
