//! The objects the watches have delivered, held as the folder source holds a folder's:
//! one [`Manifests`], its objects in file order, each object its own synthetic file. An
//! applied or deleted object is a changed file for [`crate::mesh::update`]. Each
//! object's `resourceVersion`, which the model does not read, is held beside it for the
//! Events written about it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use ambit_api::manifests::{Manifests, Object};

use crate::mesh::FileChanges;

/// An object as the API served it.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// What the model reads; it names its file in `source.file`.
    pub object: Object,
    pub resource_version: Option<String>,
}

/// What one watch event (or a relist) does to one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The object is created or changed.
    Apply(Box<Served>),
    /// The object of this file is deleted.
    Delete(PathBuf),
}

/// The cluster's objects of the watched kinds.
#[derive(Debug, Default)]
pub struct Store {
    /// Sorted by `source.file`, one object per file.
    manifests: Manifests,
    /// The `resourceVersion` of each object that had one, by file.
    resource_versions: BTreeMap<PathBuf, String>,
}

impl Store {
    /// What the cluster holds, as the model reads it.
    #[must_use]
    pub fn manifests(&self) -> &Manifests {
        &self.manifests
    }

    /// The object of `file`, and the `resourceVersion` it was last served at.
    #[must_use]
    pub fn object(&self, file: &Path) -> Option<(&Object, Option<&str>)> {
        let at = self.position(file).ok()?;
        let version = self.resource_versions.get(file).map(String::as_str);
        Some((&self.manifests.objects[at], version))
    }

    /// Applies `updates` in order; returns the files whose object changed and what they
    /// held before the first of these updates. Applying an object equal to the one held
    /// (a status heartbeat, a new `resourceVersion`) changes no file.
    pub fn apply(&mut self, updates: impl IntoIterator<Item = Update>) -> FileChanges {
        let mut changes = FileChanges::default();
        for update in updates {
            let (file, before) = match update {
                Update::Apply(served) => {
                    let Served {
                        object,
                        resource_version,
                    } = *served;
                    let file = object.source.file.clone();
                    match resource_version {
                        Some(version) => self.resource_versions.insert(file.clone(), version),
                        None => self.resource_versions.remove(&file),
                    };
                    match self.position(&file) {
                        Ok(at) if self.manifests.objects[at] == object => continue,
                        Ok(at) => (
                            file,
                            Some(std::mem::replace(&mut self.manifests.objects[at], object)),
                        ),
                        Err(at) => {
                            self.manifests.objects.insert(at, object);
                            (file, None)
                        }
                    }
                }
                Update::Delete(file) => match self.position(&file) {
                    Ok(at) => {
                        self.resource_versions.remove(&file);
                        let before = self.manifests.objects.remove(at);
                        (file, Some(before))
                    }
                    Err(_) => continue,
                },
            };
            // What the model was built from is the first version this batch replaced.
            if changes.files.insert(file) {
                changes.removed.extend(before);
            }
        }
        changes
    }

    /// Where the object of `file` is (`Ok`), or would go (`Err`).
    fn position(&self, file: &Path) -> Result<usize, usize> {
        self.manifests
            .objects
            .binary_search_by(|held| held.source.file.as_path().cmp(file))
    }
}

#[cfg(test)]
mod tests {
    use ambit_api::manifests::Source;

    use super::*;

    fn pod(name: &str, node: &str) -> Object {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{nodeName: {node}}}\n"
        );
        let value = serde_yaml_ng::from_str(&text).expect("a pod");
        let source = Source {
            file: PathBuf::from(format!("kube://core/Pod/shop/{name}")),
            document: 1,
        };
        Object::from_value(value, source).expect("a pod object")
    }

    fn apply(object: Object) -> Update {
        Update::Apply(Box::new(Served {
            object,
            resource_version: None,
        }))
    }

    fn names(store: &Store) -> Vec<&str> {
        store
            .manifests()
            .objects
            .iter()
            .map(|o| o.metadata.name.as_str())
            .collect()
    }

    #[test]
    fn applies_and_deletes_keep_file_order_and_report_what_changed() {
        let mut store = Store::default();
        let added = store.apply([apply(pod("b", "n1")), apply(pod("a", "n1"))]);
        assert_eq!(names(&store), ["a", "b"]);
        assert_eq!(added.files.len(), 2);
        assert!(added.removed.is_empty(), "{:?}", added.removed);

        let unchanged = store.apply([apply(pod("a", "n1"))]);
        assert!(unchanged.files.is_empty(), "{:?}", unchanged.files);

        let moved = store.apply([
            apply(pod("a", "n2")),
            apply(pod("a", "n3")),
            Update::Delete(pod("b", "n1").source.file),
            Update::Delete(PathBuf::from("kube://core/Pod/shop/never")),
        ]);
        assert_eq!(names(&store), ["a"]);
        assert_eq!(
            moved.removed,
            [pod("a", "n1"), pod("b", "n1")],
            "what the changed files held before the batch"
        );
        assert_eq!(store.manifests().objects, [pod("a", "n3")]);
    }

    #[test]
    fn a_new_resource_version_alone_changes_no_file_but_is_held() {
        let served = |version: &str| {
            Update::Apply(Box::new(Served {
                object: pod("a", "n1"),
                resource_version: Some(version.to_owned()),
            }))
        };
        let mut store = Store::default();
        store.apply([served("7")]);
        let resynced = store.apply([served("8")]);
        assert!(resynced.files.is_empty(), "{:?}", resynced.files);
        let file = pod("a", "n1").source.file;
        assert_eq!(store.object(&file), Some((&pod("a", "n1"), Some("8"))));
        store.apply([Update::Delete(file.clone())]);
        assert_eq!(store.object(&file), None);
        assert!(
            store.resource_versions.is_empty(),
            "a deleted object's version is dropped"
        );
    }
}
