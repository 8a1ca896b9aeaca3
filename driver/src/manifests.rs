//! Kubernetes manifests read from files, as `netclaim validate` and `netclaim explain`
//! take them: multi-document YAML (or JSON), `kind: List` flattened, each object kept with
//! the file and document it came from so every message can name them.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One object from a manifest file.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The file it was read from, as given.
    pub file: PathBuf,
    /// Its position among the file's documents (from 0; items of a List count one each).
    pub document: usize,
    /// The object.
    pub value: Value,
}

/// A problem found in a manifest: the file, the object, the field path and what is wrong.
///
/// Displays as `FILE: KIND NAMESPACE/NAME: FIELD.PATH: message`, leaving out parts that
/// are empty.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The file the object is in.
    pub file: String,
    /// `Kind namespace/name` (or `document N` when the object has no kind or name).
    pub object: String,
    /// The field in the object, in its YAML keys: `spec.config[0].opaque.parameters.mtu`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        for part in [&self.object, &self.path] {
            if !part.is_empty() {
                write!(f, ": {part}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl Manifest {
    /// `kind`, or empty.
    pub fn kind(&self) -> &str {
        self.value.get("kind").and_then(Value::as_str).unwrap_or("")
    }

    /// `apiVersion`'s group (empty for the core group).
    pub fn group(&self) -> &str {
        let api_version = self
            .value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        api_version
            .rsplit_once('/')
            .map_or("", |(group, _version)| group)
    }

    /// `metadata.name`, or empty.
    pub fn name(&self) -> &str {
        self.metadata("name").unwrap_or("")
    }

    /// `metadata.namespace`, if set.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata("namespace")
    }

    fn metadata(&self, field: &str) -> Option<&str> {
        self.value
            .get("metadata")
            .and_then(|m| m.get(field))
            .and_then(Value::as_str)
    }

    /// How messages name the object: `Kind namespace/name`, `Kind name`, or `document N`.
    pub fn label(&self) -> String {
        match (self.kind(), self.name(), self.namespace()) {
            ("", _, _) | (_, "", _) => format!("document {}", self.document + 1),
            (kind, name, Some(namespace)) => format!("{kind} {namespace}/{name}"),
            (kind, name, None) => format!("{kind} {name}"),
        }
    }

    /// The file as messages show it.
    pub fn file_label(&self) -> String {
        self.file.display().to_string()
    }

    /// A problem with this object at `path`.
    pub fn problem(&self, path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            file: self.file_label(),
            object: self.label(),
            path: path.into(),
            message: message.into(),
        }
    }

    /// The object as a typed Kubernetes object.
    ///
    /// # Errors
    /// A [`Problem`] at the path of the first field that does not fit the type.
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T, Problem> {
        serde_path_to_error::deserialize(self.value.clone()).map_err(|error| {
            let path = error.path().to_string();
            let path = if path == "." { String::new() } else { path };
            self.problem(path, error.into_inner().to_string())
        })
    }

    /// Whether this is a `resource.k8s.io` object of `kind`.
    pub fn is_resource(&self, kind: &str) -> bool {
        self.group() == "resource.k8s.io" && self.kind() == kind
    }

    /// Whether this is a Multus NetworkAttachmentDefinition.
    pub fn is_network_attachment_definition(&self) -> bool {
        self.group() == netclaim_api::cni::NAD_GROUP && self.kind() == netclaim_api::cni::NAD_KIND
    }
}

/// Reads every object in `paths`; a file that cannot be read or parsed is a problem, and
/// the files after it are still read.
pub fn load(paths: &[PathBuf]) -> (Vec<Manifest>, Vec<Problem>) {
    let mut manifests = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match load_file(path) {
            Ok(mut more) => manifests.append(&mut more),
            Err(problem) => problems.push(problem),
        }
    }
    (manifests, problems)
}

fn load_file(path: &Path) -> Result<Vec<Manifest>, Problem> {
    let file_problem = |document: Option<usize>, message: String| Problem {
        file: path.display().to_string(),
        object: document.map_or_else(String::new, |d| format!("document {}", d + 1)),
        path: String::new(),
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|error| file_problem(None, format!("cannot read it: {error}")))?;
    let mut manifests = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(document)
            .map_err(|error| file_problem(Some(index), format!("not valid YAML: {error}")))?;
        if value.is_null() {
            continue;
        }
        let items = match value.get("items").and_then(Value::as_array) {
            Some(items) if value.get("kind").and_then(Value::as_str) == Some("List") => {
                items.clone()
            }
            _ => vec![value],
        };
        for value in items {
            manifests.push(Manifest {
                file: path.to_owned(),
                document: manifests.len(),
                value,
            });
        }
    }
    Ok(manifests)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_documents_and_lists_and_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yaml");
        std::fs::write(
            &path,
            "---\napiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: a}\n---\n\
             ---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: k8s.cni.cncf.io/v1, kind: \
             NetworkAttachmentDefinition, metadata: {name: n, namespace: ns}}\n- {kind: X}\n",
        )
        .unwrap();
        let (manifests, problems) = load(std::slice::from_ref(&path));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(manifests.len(), 3);
        assert!(manifests[0].is_resource("DeviceClass"));
        assert_eq!(manifests[0].label(), "DeviceClass a");
        assert!(manifests[1].is_network_attachment_definition());
        assert_eq!(manifests[1].label(), "NetworkAttachmentDefinition ns/n");
        assert_eq!(manifests[2].label(), "document 3");
    }

    #[test]
    fn a_broken_file_is_one_problem_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "a: [\n").unwrap();
        let (manifests, problems) = load(&[path.clone(), dir.path().join("missing.yaml")]);
        assert!(manifests.is_empty());
        assert_eq!(problems.len(), 2);
        assert!(
            problems[0]
                .to_string()
                .contains("bad.yaml: document 1: not valid YAML")
        );
        assert!(
            problems[1]
                .to_string()
                .contains("missing.yaml: cannot read it")
        );
    }
}
