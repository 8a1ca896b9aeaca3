//! Field and label selectors as the real API parses them (equality-based subset).

use serde_json::Value;

/// One `path=value` or `path!=value` term.
struct Term {
    path: String,
    equal: bool,
    value: String,
}

/// A parsed `fieldSelector`: terms joined by `,`, all of which must hold.
pub(crate) struct FieldSelector {
    terms: Vec<Term>,
}

impl FieldSelector {
    /// Parses `spec.driver=x,spec.nodeName!=y`; `allowed` (when given) lists the field
    /// paths the type supports, as the real API rejects others.
    pub fn parse(text: &str, allowed: Option<&[&str]>) -> Result<Self, String> {
        let mut terms = Vec::new();
        for raw in text.split(',').filter(|t| !t.trim().is_empty()) {
            let term = parse_term(raw)
                .ok_or_else(|| format!("invalid selector: '{text}'; can't understand '{raw}'"))?;
            if let Some(allowed) = allowed
                && !allowed.contains(&term.path.as_str())
            {
                return Err(format!("field label not supported: {}", term.path));
            }
            terms.push(term);
        }
        Ok(FieldSelector { terms })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|term| {
            let actual = field_string(object, &term.path);
            (actual == term.value) == term.equal
        })
    }
}

fn parse_term(raw: &str) -> Option<Term> {
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
    Some(Term {
        path: path.to_string(),
        equal,
        value: value.trim().to_string(),
    })
}

/// The value at a dotted path as the real API's field sets render it; missing is "".
fn field_string(object: &Value, path: &str) -> String {
    let found = path.split('.').try_fold(object, |v, part| v.get(part));
    match found {
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
