//! A folder of ordinary Kubernetes YAML, read into objects.
//!
//! Every `*.yaml` / `*.yml` file under the folder (recursively, in name order) may hold
//! several documents separated by `---`. A document that does not parse, or lacks
//! `apiVersion`, `kind` or `metadata.name`, is reported with its file and document
//! number; every other document is still read. [`Manifests::read_path`] reads a single
//! file (any extension, as `kubectl apply -f` does) or a folder into the same collection.

use std::{
    collections::BTreeMap,
    fmt, fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// Where an object came from: a file and the document's position in it (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: PathBuf,
    pub document: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file.display(), self.document)
    }
}

/// `metadata` as far as Ambit reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    /// The spec's version (the API server counts changes to it); `None` in a file.
    #[serde(default)]
    pub generation: Option<i64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// One Kubernetes object. `spec` is kept whole for the kinds that need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: serde_yaml_ng::Value,
    /// The document's other top-level fields (`status`, `data`, a misspelt `spec`, …),
    /// kept so a strict reader can report the ones its kind does not have.
    pub extra: serde_yaml_ng::Mapping,
    pub source: Source,
}

impl Object {
    /// The object's namespace, `default` when a namespaced object names none.
    #[must_use]
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// A string field of `spec` (for example `serviceAccountName`).
    #[must_use]
    pub fn spec_str(&self, field: &str) -> Option<&str> {
        self.spec.get(field).and_then(serde_yaml_ng::Value::as_str)
    }

    /// The object one parsed document holds, read as a folder's document is: what a
    /// source other than files (the Kubernetes API) uses to read objects exactly as the
    /// folder would.
    ///
    /// # Errors
    /// Why `value` is not a Kubernetes object (no `apiVersion`, `kind` or
    /// `metadata.name`, or a malformed `metadata`).
    pub fn from_value(value: serde_yaml_ng::Value, source: Source) -> Result<Self, String> {
        object_from_value(value, source)
    }

    /// A boolean field of `spec` (for example `hostNetwork`), false when absent.
    #[must_use]
    pub fn spec_flag(&self, field: &str) -> bool {
        self.spec
            .get(field)
            .and_then(serde_yaml_ng::Value::as_bool)
            .unwrap_or(false)
    }
}

/// Why a file or document was not read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read config folder {path}: {source} — does it exist and is it readable?")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: not a valid Kubernetes object: {reason}")]
    Document { at: Source, reason: String },
}

/// What a folder holds: the objects read, and what could not be read.
#[derive(Debug, Default)]
pub struct Manifests {
    pub objects: Vec<Object>,
    pub errors: Vec<ManifestError>,
}

impl Manifests {
    /// Reads every manifest under `dir`. Fails only if `dir` itself cannot be listed;
    /// bad files and documents are collected in [`Manifests::errors`].
    ///
    /// # Errors
    /// [`ManifestError::Folder`] when `dir` cannot be read.
    pub fn load_dir(dir: &Path) -> Result<Self, ManifestError> {
        let mut manifests = Self::default();
        manifests.read_dir(dir)?;
        Ok(manifests)
    }

    /// Adds what `path` holds: every manifest under it if it is a folder (as
    /// [`Manifests::load_dir`]), else the documents of that one file, whatever its
    /// extension. Fails only if `path` itself cannot be read; bad documents (and bad
    /// files inside a folder) are collected in [`Manifests::errors`].
    ///
    /// # Errors
    /// [`ManifestError::Folder`] or [`ManifestError::File`] when `path` cannot be read.
    pub fn read_path(&mut self, path: &Path) -> Result<(), ManifestError> {
        if path.is_dir() {
            return self.read_dir(path);
        }
        let text = fs::read_to_string(path).map_err(|source| ManifestError::File {
            path: path.to_owned(),
            source,
        })?;
        self.parse_documents(path, &text);
        Ok(())
    }

    fn read_dir(&mut self, dir: &Path) -> Result<(), ManifestError> {
        for file in yaml_files(dir)? {
            match fs::read_to_string(&file) {
                Ok(text) => self.parse_documents(&file, &text),
                Err(source) => self.errors.push(ManifestError::File { path: file, source }),
            }
        }
        Ok(())
    }

    /// Parses the documents of one file's text, as [`Manifests::load_dir`] does.
    pub fn parse_documents(&mut self, file: &Path, text: &str) {
        for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let at = Source {
                file: file.to_owned(),
                document: index + 1,
            };
            match serde_yaml_ng::Value::deserialize(document) {
                Ok(serde_yaml_ng::Value::Null) => {}
                Ok(value) => match object_from_value(value, at.clone()) {
                    Ok(object) => self.objects.push(object),
                    Err(reason) => self.errors.push(ManifestError::Document { at, reason }),
                },
                Err(error) => {
                    self.errors.push(ManifestError::Document {
                        at,
                        reason: error.to_string(),
                    });
                    // The parser cannot resynchronise after a syntax error.
                    break;
                }
            }
        }
    }

    /// Objects of one kind.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Object> + 'a {
        self.objects.iter().filter(move |o| o.kind == kind)
    }

    /// The Namespace object called `name`.
    #[must_use]
    pub fn namespace(&self, name: &str) -> Option<&Object> {
        self.of_kind("Namespace").find(|o| o.metadata.name == name)
    }

    /// The Pod `namespace/name`.
    #[must_use]
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Object> {
        self.of_kind("Pod")
            .find(|o| o.metadata.name == name && o.namespace() == namespace)
    }
}

/// The `*.yaml` / `*.yml` files under `dir`, recursively, in the order
/// [`Manifests::load_dir`] reads them.
///
/// # Errors
/// [`ManifestError::Folder`] when `dir` or a folder under it cannot be listed.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let mut files = Vec::new();
    collect_yaml_files(dir, &mut files).map_err(|source| ManifestError::Folder {
        path: dir.to_owned(),
        source,
    })?;
    files.sort();
    Ok(files)
}

fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_yaml_files(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            out.push(path);
        }
    }
    Ok(())
}

fn object_from_value(mut value: serde_yaml_ng::Value, source: Source) -> Result<Object, String> {
    let field = |name: &str| -> Result<String, String> {
        value
            .get(name)
            .and_then(serde_yaml_ng::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("missing `{name}`"))
    };
    let api_version = field("apiVersion")?;
    let kind = field("kind")?;
    let metadata = value
        .get("metadata")
        .ok_or_else(|| "missing `metadata`".to_owned())?;
    let metadata =
        ObjectMeta::deserialize(metadata.clone()).map_err(|e| format!("metadata: {e}"))?;
    if metadata.name.is_empty() {
        return Err("`metadata.name` is empty".to_owned());
    }
    let mut extra = match std::mem::take(&mut value) {
        serde_yaml_ng::Value::Mapping(mapping) => mapping,
        _ => serde_yaml_ng::Mapping::new(),
    };
    let spec = extra.remove("spec").unwrap_or(serde_yaml_ng::Value::Null);
    for known in ["apiVersion", "kind", "metadata"] {
        extra.remove(known);
    }
    Ok(Object {
        api_version,
        kind,
        metadata,
        spec,
        extra,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_document_and_reports_the_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    istio.io/dataplane-mode: ambient\n---\nkind: Pod\nmetadata:\n  name: broken\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: cart\n  namespace: shop\nspec:\n  serviceAccountName: cart-sa\n",
        )
        .unwrap();
        fs::write(dir.path().join("ignored.txt"), "not yaml").unwrap();

        let manifests = Manifests::load_dir(dir.path()).unwrap();

        assert_eq!(manifests.objects.len(), 2, "{:?}", manifests.objects);
        let ns = manifests.namespace("shop").expect("namespace shop");
        assert_eq!(ns.metadata.labels["istio.io/dataplane-mode"], "ambient");
        let pod = manifests.pod("shop", "cart").expect("pod shop/cart");
        assert_eq!(pod.spec_str("serviceAccountName"), Some("cart-sa"));
        assert_eq!(manifests.errors.len(), 1);
        let error = manifests.errors[0].to_string();
        assert!(
            error.contains("a.yaml (document 2)") && error.contains("apiVersion"),
            "{error}"
        );
    }

    #[test]
    fn reads_a_single_file_and_keeps_other_top_level_fields() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vs.txt");
        fs::write(
            &file,
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspce:\n  hosts: [r]\n",
        )
        .unwrap();

        let mut manifests = Manifests::default();
        manifests.read_path(&file).unwrap();

        assert!(manifests.errors.is_empty(), "{:?}", manifests.errors);
        let object = &manifests.objects[0];
        assert_eq!(object.spec, serde_yaml_ng::Value::Null);
        let extra: Vec<_> = object.extra.keys().filter_map(|k| k.as_str()).collect();
        assert_eq!(extra, ["spce"]);
        let missing = manifests
            .read_path(&dir.path().join("nope.yaml"))
            .unwrap_err();
        assert!(missing.to_string().contains("nope.yaml"), "{missing}");
    }

    #[test]
    fn a_missing_folder_says_so() {
        let error = Manifests::load_dir(Path::new("/nonexistent/ambit")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/ambit"), "{error}");
    }
}
