//! The objects the watches have delivered, held as the folder source holds a folder's:
//! one [`Manifests`], its objects in file order, each object its own synthetic file. An
//! applied or deleted object is a changed file for [`crate::mesh::update`].

use std::path::{Path, PathBuf};

use ambit_api::manifests::{Manifests, Object};

use crate::mesh::FileChanges;

/// What one watch event (or a relist) does to one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The object is created or changed; it names its file in `source.file`.
    Apply(Box<Object>),
    /// The object of this file is deleted.
    Delete(PathBuf),
}

/// The cluster's objects of the watched kinds.
#[derive(Debug, Default)]
pub struct Store {
    /// Sorted by `source.file`, one object per file.
    manifests: Manifests,
}

impl Store {
    /// What the cluster holds, as the model reads it.
    #[must_use]
    pub fn manifests(&self) -> &Manifests {
        &self.manifests
    }

    /// Applies `updates` in order; returns the files whose object changed and what they
    /// held before the first of these updates. Applying an object equal to the one held
    /// (a status heartbeat, a new `resourceVersion`) changes nothing.
    pub fn apply(&mut self, updates: impl IntoIterator<Item = Update>) -> FileChanges {
        let mut changes = FileChanges::default();
        for update in updates {
            let (file, before) = match update {
                Update::Apply(object) => {
                    let object = *object;
                    let file = object.source.file.clone();
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
        Update::Apply(Box::new(object))
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
}
