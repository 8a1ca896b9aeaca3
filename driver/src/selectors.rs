//! DeviceClass and request CEL selectors, as `netclaim validate` and `netclaim explain`
//! check them: compiled in the DRA environment (one variable, `device`, with `driver`,
//! `attributes[domain].name`, `capacity[domain].name`, `allowMultipleAllocations`; see
//! [`crate::discovery::filter::device_value`]) and, for `explain`, evaluated on a device with
//! the reason it did not match.
//!
//! # Explaining a mismatch
//! The expression's top-level `||` and `&&` operands are split off (by the source text,
//! outside strings and brackets, recursively through parentheses) and each is evaluated on
//! its own, so the answer names the operand that was false or failed: for `a && b && c`
//! the first operand that is false (or, when none is, the one that failed), for `a || b`
//! every operand. Each named operand comes with the values of the attributes it reads on
//! that device, or "missing".
//!
//! # Assumptions
//! - Capacities are integers here when their quantity is a plain number (netclaim's
//!   `children`), else strings: this evaluator has no `quantity` type, so
//!   `quantity(...)` comparisons do not work as they do in Kubernetes.
//! - A selector that fails on a device (a missing attribute is `NoSuchKey`) is a CEL
//!   runtime error in Kubernetes too: the scheduler reports it and stops allocating the
//!   claim rather than skipping the device. `explain` says so.

use std::fmt;
use std::sync::Arc;

use cel::{Context, Env, ExecutionError, Program, Value};
use k8s_openapi::api::resource::v1::Device;

use crate::discovery::filter::device_value;

/// A compiled selector expression.
pub struct Selector {
    source: String,
    program: Program,
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selector")
            .field("source", &self.source)
            .finish()
    }
}

/// How a selector came out on one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It evaluated to `true`.
    Match,
    /// It evaluated to `false`.
    False,
    /// Evaluation failed (a missing attribute, a type mismatch).
    Error(String),
    /// It evaluated to something other than a boolean.
    NotBool(String),
}

/// Why a selector did not match a device: the operands responsible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The leaf operands that were false or failed, each with its outcome and the values
    /// of the attributes it reads.
    pub operands: Vec<OperandReport>,
}

/// One operand of a selector that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperandReport {
    /// The operand's source text.
    pub source: String,
    /// How it came out.
    pub outcome: Outcome,
    /// The attributes (and capacities) it reads, as written (`netclaim.dev/ifName`), with
    /// their values on the device or `None` when the device lacks them.
    pub reads: Vec<(String, Option<String>)>,
}

impl fmt::Display for OperandReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Match => write!(f, "`{}` is true", self.source)?,
            Outcome::False => write!(f, "`{}` is false", self.source)?,
            Outcome::Error(error) => write!(f, "`{}` failed: {error}", self.source)?,
            Outcome::NotBool(value) => {
                write!(f, "`{}` returned {value}, not a boolean", self.source)?;
            }
        }
        if !self.reads.is_empty() {
            let reads: Vec<String> = self
                .reads
                .iter()
                .map(|(name, value)| match value {
                    Some(value) => format!("{name} = {value}"),
                    None => format!("{name} is missing"),
                })
                .collect();
            write!(f, " ({})", reads.join(", "))?;
        }
        if matches!(self.outcome, Outcome::Error(_))
            && self.reads.iter().any(|(_, value)| value.is_none())
        {
            write!(
                f,
                "; in Kubernetes this is a CEL runtime error that stops the claim's \
                 allocation: guard the attribute with has(...)"
            )?;
        }
        Ok(())
    }
}

impl Selector {
    /// Compiles `source`.
    ///
    /// # Errors
    /// A message saying why it does not parse, or which unknown name it uses (only
    /// `device` is defined).
    pub fn compile(source: &str) -> Result<Self, String> {
        let program = Program::compile(source).map_err(|errors| {
            format!(
                "does not compile: {}",
                errors.to_string().lines().next().unwrap_or_default()
            )
        })?;
        let selector = Self {
            source: source.to_owned(),
            program,
        };
        let probe = Device {
            name: "probe".into(),
            ..Device::default()
        };
        if let Err(ExecutionError::UndeclaredReference(name)) =
            selector.evaluate(netclaim_api::DRIVER_NAME, &probe)
        {
            return Err(format!(
                "unknown name {name:?} (a device selector has only the variable `device`)"
            ));
        }
        Ok(selector)
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How the whole expression comes out on `device` of driver `driver`.
    pub fn outcome(&self, driver: &str, device: &Device) -> Outcome {
        outcome_of(self.evaluate(driver, device))
    }

    /// `Ok` when the selector matches `device`, else the operands that did not hold.
    pub fn explain(&self, driver: &str, device: &Device) -> Result<(), Mismatch> {
        match self.outcome(driver, device) {
            Outcome::Match => Ok(()),
            outcome => {
                let mut operands = Vec::new();
                explain_into(&self.source, outcome, driver, device, &mut operands);
                Err(Mismatch { operands })
            }
        }
    }

    fn evaluate(&self, driver: &str, device: &Device) -> Result<Value, ExecutionError> {
        evaluate(&self.program, driver, device)
    }
}

fn evaluate(program: &Program, driver: &str, device: &Device) -> Result<Value, ExecutionError> {
    let mut context = Context::with_env(Arc::new(Env::stdlib()));
    context.add_variable_from_value("device", device_value(driver, device));
    program.execute(&context)
}

fn outcome_of(result: Result<Value, ExecutionError>) -> Outcome {
    match result {
        Ok(Value::Bool(true)) => Outcome::Match,
        Ok(Value::Bool(false)) => Outcome::False,
        Ok(other) => Outcome::NotBool(format!("{other:?}")),
        Err(error) => Outcome::Error(error.to_string()),
    }
}

/// Finds the operands of `source` (which came out as `outcome`) that made it fail.
fn explain_into(
    source: &str,
    outcome: Outcome,
    driver: &str,
    device: &Device,
    out: &mut Vec<OperandReport>,
) {
    let source = strip_parens(source.trim());
    let leaf = |out: &mut Vec<OperandReport>, outcome: Outcome| {
        out.push(OperandReport {
            source: source.to_owned(),
            outcome,
            reads: reads_of(source, driver, device),
        });
    };
    let (operands, is_and) = match split_top(source, "||") {
        operands if operands.len() > 1 => (operands, false),
        _ => match split_top(source, "&&") {
            operands if operands.len() > 1 => (operands, true),
            _ => return leaf(out, outcome),
        },
    };
    let evaluated: Vec<(&str, Outcome)> = operands
        .iter()
        .map(|operand| {
            let outcome = match Program::compile(operand) {
                Ok(program) => outcome_of(evaluate(&program, driver, device)),
                Err(error) => Outcome::Error(error.to_string()),
            };
            (*operand, outcome)
        })
        .collect();
    if is_and {
        // CEL's `&&`: a false operand decides even when another fails.
        let culprit = evaluated
            .iter()
            .find(|(_, o)| *o == Outcome::False)
            .or_else(|| evaluated.iter().find(|(_, o)| *o != Outcome::Match));
        match culprit {
            Some((operand, outcome)) => explain_into(operand, outcome.clone(), driver, device, out),
            None => leaf(out, outcome),
        }
    } else {
        let failing: Vec<_> = evaluated
            .into_iter()
            .filter(|(_, o)| *o != Outcome::Match)
            .collect();
        if failing.is_empty() {
            return leaf(out, outcome);
        }
        for (operand, outcome) in failing {
            explain_into(operand, outcome, driver, device, out);
        }
    }
}

/// Splits `source` at `op` (`&&` or `||`) where it is outside strings and brackets.
fn split_top<'a>(source: &'a str, op: &str) -> Vec<&'a str> {
    let bytes = source.as_bytes();
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
        } else {
            match c {
                b'"' | b'\'' => quote = Some(c),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                _ if depth == 0 && source[i..].starts_with(op) => {
                    parts.push(source[start..i].trim());
                    i += op.len();
                    start = i;
                    continue;
                }
                _ => {}
            }
        }
        i += 1;
    }
    parts.push(source[start..].trim());
    parts
}

/// `(a && b)` without its outer parentheses, when they enclose the whole expression.
fn strip_parens(mut source: &str) -> &str {
    loop {
        let Some(inner) = source
            .strip_prefix('(')
            .and_then(|rest| rest.strip_suffix(')'))
        else {
            return source;
        };
        // `(a) && (b)` starts and ends with parentheses that do not pair up.
        let mut depth = 0i32;
        let mut quote: Option<char> = None;
        let mut escaped = false;
        for c in inner.chars() {
            if let Some(q) = quote {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                continue;
            }
            match c {
                '"' | '\'' => quote = Some(c),
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth < 0 {
                        return source;
                    }
                }
                _ => {}
            }
        }
        source = inner.trim();
    }
}

/// The attributes and capacities `source` reads (`device.attributes["d"].id`,
/// `device.attributes["d"]["id"]`, likewise `capacity`), with their values on `device`.
fn reads_of(source: &str, driver: &str, device: &Device) -> Vec<(String, Option<String>)> {
    let mut reads: Vec<(String, Option<String>)> = Vec::new();
    for (map, marker) in [
        ("attributes", "device.attributes["),
        ("capacity", "device.capacity["),
    ] {
        let mut rest = source;
        while let Some(at) = rest.find(marker) {
            rest = &rest[at + marker.len()..];
            let Some((domain, after)) = quoted(rest) else {
                continue;
            };
            let Some(after) = after.trim_start().strip_prefix(']') else {
                continue;
            };
            let id = if let Some(after) = after.strip_prefix('.') {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                Some(after[..end].to_owned())
            } else if let Some(after) = after.strip_prefix('[') {
                quoted(after).map(|(id, _)| id)
            } else {
                None
            };
            let Some(id) = id.filter(|id| !id.is_empty()) else {
                continue;
            };
            let name = format!("{domain}/{id}");
            if reads.iter().any(|(seen, _)| *seen == name) {
                continue;
            }
            let value = if map == "attributes" {
                attribute_text(device, driver, &domain, &id)
            } else {
                capacity_text(device, driver, &domain, &id)
            };
            reads.push((name, value));
        }
    }
    reads
}

/// A quoted string at the start of `text` and what follows it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let text = text.trim_start();
    let quote = text.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = &text[1..];
    let end = body.find(quote)?;
    Some((body[..end].to_owned(), &body[end + 1..]))
}

fn attribute_text(device: &Device, driver: &str, domain: &str, id: &str) -> Option<String> {
    let attributes = device.attributes.as_ref()?;
    let qualified = format!("{domain}/{id}");
    let attribute = attributes.get(&qualified).or_else(|| {
        if domain == driver {
            attributes.get(id)
        } else {
            None
        }
    })?;
    if let Some(s) = attribute.string.as_ref().or(attribute.version.as_ref()) {
        return Some(format!("{s:?}"));
    }
    if let Some(b) = attribute.bool {
        return Some(b.to_string());
    }
    attribute.int.map(|i| i.to_string())
}

fn capacity_text(device: &Device, driver: &str, domain: &str, id: &str) -> Option<String> {
    let capacity = device.capacity.as_ref()?;
    let qualified = format!("{domain}/{id}");
    capacity
        .get(&qualified)
        .or_else(|| {
            if domain == driver {
                capacity.get(id)
            } else {
                None
            }
        })
        .map(|c| c.value.0.clone())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::resource::v1::DeviceAttribute;

    fn device(attrs: &[(&str, DeviceAttribute)]) -> Device {
        Device {
            name: "d".into(),
            attributes: Some(
                attrs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
            ),
            ..Device::default()
        }
    }

    fn s(v: &str) -> DeviceAttribute {
        DeviceAttribute {
            string: Some(v.into()),
            ..DeviceAttribute::default()
        }
    }

    fn i(v: i64) -> DeviceAttribute {
        DeviceAttribute {
            int: Some(v),
            ..DeviceAttribute::default()
        }
    }

    #[test]
    fn splits_outside_strings_and_brackets() {
        assert_eq!(
            split_top(r#"a == "x && y" && (b || c) && f(d && e)"#, "&&"),
            vec![r#"a == "x && y""#, "(b || c)", "f(d && e)"]
        );
        assert_eq!(split_top("a || b && c", "||"), vec!["a", "b && c"]);
        assert_eq!(strip_parens("((a && b))"), "a && b");
        assert_eq!(strip_parens("(a) && (b)"), "(a) && (b)");
    }

    #[test]
    fn names_the_false_operand_and_its_attribute() {
        let selector = Selector::compile(
            r#"device.driver == "netclaim.dev" && device.attributes["netclaim.dev"].ifName == "eth1""#,
        )
        .unwrap();
        let mismatch = selector
            .explain("netclaim.dev", &device(&[("ifName", s("eth2"))]))
            .unwrap_err();
        assert_eq!(mismatch.operands.len(), 1);
        let operand = &mismatch.operands[0];
        assert_eq!(
            operand.source,
            r#"device.attributes["netclaim.dev"].ifName == "eth1""#
        );
        assert_eq!(operand.outcome, Outcome::False);
        assert_eq!(
            operand.reads,
            vec![(
                "netclaim.dev/ifName".to_owned(),
                Some("\"eth2\"".to_owned())
            )]
        );
    }

    #[test]
    fn a_missing_attribute_is_named_as_missing() {
        let selector = Selector::compile(
            r#"device.attributes["netclaim.dev"].numaNode == 0 && device.attributes["netclaim.dev"].rdma == true"#,
        )
        .unwrap();
        let mismatch = selector
            .explain("netclaim.dev", &device(&[("numaNode", i(0))]))
            .unwrap_err();
        let operand = &mismatch.operands[0];
        assert!(operand.source.contains("rdma"), "{operand:?}");
        assert!(matches!(operand.outcome, Outcome::Error(_)), "{operand:?}");
        assert_eq!(operand.reads[0], ("netclaim.dev/rdma".to_owned(), None));
        assert!(operand.to_string().contains("netclaim.dev/rdma is missing"));
    }

    #[test]
    fn every_false_operand_of_an_or_is_named() {
        let selector = Selector::compile(
            r#"(device.attributes["netclaim.dev"].mtu > 9000 || device.attributes["netclaim.dev"].ifName.startsWith("ens"))"#,
        )
        .unwrap();
        let mismatch = selector
            .explain(
                "netclaim.dev",
                &device(&[("mtu", i(1500)), ("ifName", s("eth0"))]),
            )
            .unwrap_err();
        assert_eq!(mismatch.operands.len(), 2, "{mismatch:?}");
        assert!(mismatch.operands[0].source.contains("mtu > 9000"));
        assert!(mismatch.operands[1].source.contains("startsWith"));
    }

    #[test]
    fn unknown_names_and_syntax_errors_are_refused() {
        assert!(
            Selector::compile(r#"devcie.driver == "x""#)
                .unwrap_err()
                .contains("devcie")
        );
        assert!(
            Selector::compile("device.attributes[")
                .unwrap_err()
                .starts_with("does not compile")
        );
    }
}
