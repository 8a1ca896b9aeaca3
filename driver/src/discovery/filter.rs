//! The admin's device filters (`--filter`, `--shared-filter`): CEL expressions evaluated
//! over the same `device` variable a DeviceClass selector sees (`device.driver`,
//! `device.attributes[domain].name`, `device.capacity[domain].name`,
//! `device.allowMultipleAllocations`).
//!
//! # Errors
//! An expression that does not parse, or that names a variable other than `device`, is
//! refused by [`DeviceFilter::new`], so the daemon stops at start with the reason. A
//! runtime error on one device (reading an attribute the device lacks is `NoSuchKey`, as in
//! Kubernetes) or a non-boolean result excludes that device, and the reason is returned.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use anyhow::{Result, bail};
use cel::{Context, Env, ExecutionError, Program, Value};
use k8s_openapi::api::resource::v1::{Device, DeviceAttribute};

use super::names::DRIVER_DOMAIN;

/// A compiled `--filter` (or `--shared-filter`) expression.
pub struct DeviceFilter {
    source: String,
    program: Program,
    /// The standard library, built once: building it is most of the cost of a fresh
    /// `Context` (about 70 µs, which is 70 ms per pass over 1,000 devices).
    env: Arc<Env>,
}

impl fmt::Debug for DeviceFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceFilter")
            .field("source", &self.source)
            .finish()
    }
}

/// Why a device did not pass the filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The expression evaluated to `false`.
    False,
    /// Evaluation failed (for example `NoSuchKey` for a missing attribute).
    Error(String),
    /// The expression evaluated to something other than a boolean.
    NotBool(String),
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::False => write!(f, "the filter evaluated to false"),
            Rejection::Error(err) => write!(f, "the filter failed on this device: {err}"),
            Rejection::NotBool(v) => write!(f, "the filter returned {v}, not a boolean"),
        }
    }
}

impl DeviceFilter {
    /// Compiles `source` given as `--filter`; fails with a message naming the flag and the
    /// problem.
    pub fn new(source: &str) -> Result<Self> {
        Self::for_flag("--filter", source)
    }

    /// Compiles `source` given as the command-line flag `flag` (named in errors).
    pub fn for_flag(flag: &str, source: &str) -> Result<Self> {
        let program = match Program::compile(source) {
            Ok(program) => program,
            Err(errors) => bail!("invalid {flag} expression {source:?}: {errors}"),
        };
        let filter = Self {
            source: source.to_owned(),
            program,
            env: Arc::new(Env::stdlib()),
        };
        // The parser does not resolve names; a trial run on a device without attributes
        // catches a misspelt variable now instead of rejecting every device later.
        let probe = Device {
            name: "probe".into(),
            ..Device::default()
        };
        if let Err(ExecutionError::UndeclaredReference(name)) =
            filter.evaluate(DRIVER_DOMAIN, &probe)
        {
            bail!(
                "invalid {flag} expression {source:?}: unknown name {name:?} (only `device` is defined)"
            );
        }
        Ok(filter)
    }

    /// The expression as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `device` (of driver `driver`) passes; the rejection reason otherwise.
    pub fn check(&self, driver: &str, device: &Device) -> Result<(), Rejection> {
        match self.evaluate(driver, device) {
            Ok(Value::Bool(true)) => Ok(()),
            Ok(Value::Bool(false)) => Err(Rejection::False),
            Ok(other) => Err(Rejection::NotBool(format!("{other:?}"))),
            Err(err) => Err(Rejection::Error(err.to_string())),
        }
    }

    fn evaluate(&self, driver: &str, device: &Device) -> Result<Value, ExecutionError> {
        let mut context = Context::with_env(Arc::clone(&self.env));
        context.add_variable_from_value("device", device_value(driver, device));
        self.program.execute(&context)
    }
}

/// The `device` variable: `{driver, attributes: {domain: {id: value}}, capacity: {domain:
/// {id: value}}, allowMultipleAllocations}`. This evaluator has no quantity type: a
/// capacity whose quantity is a plain integer (netclaim's `children`) is an int, any other
/// its text.
///
/// Short attribute names belong to the driver's own domain, as in Kubernetes.
pub fn device_value(driver: &str, device: &Device) -> Value {
    let mut domains: BTreeMap<String, HashMap<String, Value>> = BTreeMap::new();
    for (name, attribute) in device.attributes.iter().flatten() {
        let (domain, id) = name.split_once('/').unwrap_or((driver, name.as_str()));
        if let Some(value) = attribute_value(attribute) {
            domains
                .entry(domain.to_owned())
                .or_default()
                .insert(id.to_owned(), value);
        }
    }
    let attributes: HashMap<String, Value> = domains
        .into_iter()
        .map(|(domain, ids)| (domain, Value::from(ids)))
        .collect();
    let mut root: HashMap<String, Value> = HashMap::new();
    root.insert("driver".into(), Value::String(Arc::new(driver.to_owned())));
    root.insert("attributes".into(), Value::from(attributes));
    let mut capacity: BTreeMap<String, HashMap<String, Value>> = BTreeMap::new();
    for (name, quantity) in device.capacity.iter().flatten() {
        let (domain, id) = name.split_once('/').unwrap_or((driver, name.as_str()));
        let text = &quantity.value.0;
        let value = text
            .parse::<i64>()
            .map_or_else(|_| Value::String(Arc::new(text.clone())), Value::Int);
        capacity
            .entry(domain.to_owned())
            .or_default()
            .insert(id.to_owned(), value);
    }
    let capacity: HashMap<String, Value> = capacity
        .into_iter()
        .map(|(domain, ids)| (domain, Value::from(ids)))
        .collect();
    root.insert("capacity".into(), Value::from(capacity));
    root.insert(
        "allowMultipleAllocations".into(),
        Value::Bool(device.allow_multiple_allocations.unwrap_or(false)),
    );
    Value::from(root)
}

fn attribute_value(attribute: &DeviceAttribute) -> Option<Value> {
    // A version attribute is a semver object in Kubernetes; comparing it as a string is
    // the closest this evaluator offers. netclaim publishes none.
    if let Some(s) = attribute.string.as_ref().or(attribute.version.as_ref()) {
        return Some(Value::String(Arc::new(s.clone())));
    }
    if let Some(b) = attribute.bool {
        return Some(Value::Bool(b));
    }
    attribute.int.map(Value::Int)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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

    #[test]
    fn selects_like_a_device_class() {
        let d = device(&[
            ("ifName", s("eth1")),
            ("resource.kubernetes.io/pcieRoot", s("pci0000:00")),
        ]);
        let f = DeviceFilter::new(r#"device.attributes["netclaim.dev"].ifName == "eth1""#).unwrap();
        assert_eq!(f.check("netclaim.dev", &d), Ok(()));
        let f = DeviceFilter::new(
            r#"device.attributes["resource.kubernetes.io"].pcieRoot.startsWith("pci")"#,
        )
        .unwrap();
        assert_eq!(f.check("netclaim.dev", &d), Ok(()));
        let f = DeviceFilter::new(r#"device.driver == "other""#).unwrap();
        assert_eq!(f.check("netclaim.dev", &d), Err(Rejection::False));
    }

    #[test]
    fn missing_attribute_rejects_the_device() {
        let f = DeviceFilter::new(r#"device.attributes["netclaim.dev"].rdmaDevice == "mlx5_0""#)
            .unwrap();
        let err = f.check("netclaim.dev", &device(&[])).unwrap_err();
        assert!(
            matches!(&err, Rejection::Error(e) if e.contains("No such key")),
            "{err:?}"
        );
    }

    #[test]
    fn bad_expressions_are_refused() {
        assert!(DeviceFilter::new("device.attributes[").is_err());
        let err = DeviceFilter::new(r#"devcie.driver == "x""#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("devcie"), "{err}");
        let f = DeviceFilter::new(r#"device.driver"#).unwrap();
        assert!(matches!(
            f.check("netclaim.dev", &device(&[])),
            Err(Rejection::NotBool(_))
        ));
    }
}
