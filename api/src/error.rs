//! Errors that name the field they are about.
//!
//! Every problem netclaim finds in an opaque config becomes a [`FieldError`]: the path of
//! the field in the user's JSON/YAML (`interface.addresses[1]`) and a message. A
//! [`ConfigError`] carries all of them, so a user fixes a config in one round trip rather
//! than one error at a time.

use std::fmt;

/// One problem with one field of a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where the problem is, in the user's camelCase keys: `interface.routes[0].gateway`.
    /// Empty when the problem is with the document as a whole (too large, not JSON).
    /// Errors from [`crate::merge_configs`] are prefixed with the config they came from:
    /// `claim config[1] (requests [nic]): interface.mtu`.
    pub path: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl FieldError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A config that netclaim cannot use, with every problem found in it.
///
/// Displays as the problems joined by `"; "`, each as `path: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems, in the order they were found; never empty when returned as an error.
    pub errors: Vec<FieldError>,
}

impl ConfigError {
    /// An error holding exactly one problem.
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            errors: vec![FieldError::new(path, message)],
        }
    }

    /// The same problems, with every path prefixed by `context` (for example the config
    /// source `claim config[1] (requests [nic])`), so the user knows which config to fix.
    pub fn in_context(mut self, context: &str) -> Self {
        for error in &mut self.errors {
            error.path = if error.path.is_empty() {
                context.to_owned()
            } else {
                format!("{context}: {}", error.path)
            };
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects problems while a config is checked; turns into a [`ConfigError`] at the end.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    errors: Vec<FieldError>,
}

impl Problems {
    /// Records a problem at `path`.
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    /// Records every problem of `error`.
    pub(crate) fn extend(&mut self, error: ConfigError) {
        self.errors.extend(error.errors);
    }

    /// `Ok` when nothing was recorded, else all problems.
    pub(crate) fn into_result(self) -> Result<(), ConfigError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                errors: self.errors,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_every_problem_with_its_path() {
        let error = ConfigError {
            errors: vec![
                FieldError::new("interface.mtu", "too small"),
                FieldError::new("", "too large"),
            ],
        };
        assert_eq!(error.to_string(), "interface.mtu: too small; too large");
    }

    #[test]
    fn context_prefixes_every_path() {
        let error = ConfigError {
            errors: vec![
                FieldError::new("interface.mtu", "too small"),
                FieldError::new("", "not JSON"),
            ],
        }
        .in_context("claim config[1]");
        assert_eq!(
            error.to_string(),
            "claim config[1]: interface.mtu: too small; claim config[1]: not JSON"
        );
    }

    #[test]
    fn no_problems_is_ok() {
        assert!(Problems::default().into_result().is_ok());
        let mut problems = Problems::default();
        problems.push("a", "b");
        assert_eq!(problems.into_result().unwrap_err().errors.len(), 1);
    }
}
