//! Errors answered as `metav1.Status` bodies, with the real API's reasons and codes.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::resources::ResourceType;

/// One field-level problem, reported in `details.causes`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// The field path, e.g. `spec.devices[0].attributes[foo]`.
    pub field: String,
    /// The cause type, e.g. `FieldValueInvalid`.
    pub reason: &'static str,
    /// What is wrong, without the field path.
    pub detail: String,
}

impl FieldError {
    /// An `Invalid value` error.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl Into<String>) -> Self {
        let value = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        FieldError {
            field: field.into(),
            reason: "FieldValueInvalid",
            detail: format!("Invalid value: {value}: {}", detail.into()),
        }
    }

    /// A `Required value` error.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: "FieldValueRequired",
            detail: format!("Required value: {}", detail.into()),
        }
    }

    /// A `Too many` error.
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        FieldError {
            field: field.into(),
            reason: "FieldValueTooMany",
            detail: format!("Too many: {actual}: must have at most {max} items"),
        }
    }

    /// A `Too long` error.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        FieldError {
            field: field.into(),
            reason: "FieldValueTooLong",
            detail: format!("Too long: may not be more than {max} bytes"),
        }
    }

    /// A `Duplicate value` error.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        FieldError {
            field: field.into(),
            reason: "FieldValueDuplicate",
            detail: format!("Duplicate value: {value}"),
        }
    }

    /// An `Invalid value` error that does not print the value (as the real API does for raw
    /// JSON).
    pub fn invalid_omitted(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::invalid(field, &Value::String("<value omitted>".into()), detail)
    }

    /// An `Unsupported value` error listing the supported values.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let value = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        let supported: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError {
            field: field.into(),
            reason: "FieldValueNotSupported",
            detail: format!(
                "Unsupported value: {value}: supported values: {}",
                supported.join(", ")
            ),
        }
    }

    /// A `Forbidden` error.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: "FieldValueForbidden",
            detail: format!("Forbidden: {}", detail.into()),
        }
    }

    /// `field: detail`, as the real API prints it.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.detail)
    }
}

/// An API error: HTTP code, `reason`, message and optional details.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn not_found(rtype: &ResourceType, name: &str) -> Self {
        let mut error = Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rtype.qualified()),
        );
        error.details = Some(details(rtype, name, &[]));
        error
    }

    pub fn already_exists(rtype: &ResourceType, name: &str) -> Self {
        let mut error = Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rtype.qualified()),
        );
        error.details = Some(details(rtype, name, &[]));
        error
    }

    pub fn conflict(rtype: &ResourceType, name: &str, why: &str) -> Self {
        let mut error = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rtype.qualified()
            ),
        );
        error.details = Some(details(rtype, name, &[]));
        error
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn invalid(rtype: &ResourceType, name: &str, errors: &[FieldError]) -> Self {
        let list: Vec<String> = errors.iter().map(FieldError::message).collect();
        let summary = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut error = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {summary}", qualified_kind(rtype)),
        );
        error.details = Some(details(rtype, name, errors));
        error
    }

    /// An injected failure with the reason the real API uses for that code.
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            409 => "Conflict",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            404 => "NotFound",
            403 => "Forbidden",
            401 => "Unauthorized",
            400 => "BadRequest",
            _ => "",
        };
        Self::new(code, reason, format!("injected fault: HTTP {code}"))
    }

    /// The `metav1.Status` body.
    pub fn status_body(&self) -> Value {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            body["details"] = details.clone();
        }
        body
    }
}

/// `Kind.group`, as the real API names a type in Invalid messages.
fn qualified_kind(rtype: &ResourceType) -> String {
    if rtype.group.is_empty() {
        rtype.kind.to_string()
    } else {
        format!("{}.{}", rtype.kind, rtype.group)
    }
}

fn details(rtype: &ResourceType, name: &str, errors: &[FieldError]) -> Value {
    let mut details = json!({ "name": name, "group": rtype.group, "kind": rtype.plural });
    if !errors.is_empty() {
        details["kind"] = json!(rtype.kind);
        details["causes"] = errors
            .iter()
            .map(|e| json!({ "reason": e.reason, "message": e.detail, "field": e.field }))
            .collect();
    }
    details
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = http::StatusCode::from_u16(self.code)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        // No Retry-After on 429: kube's retry honours it, and whole seconds would slow tests.
        (code, axum::Json(self.status_body())).into_response()
    }
}
