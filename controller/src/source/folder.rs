//! The watched folder's manifests, kept between reads: a file whose text has not changed
//! is not parsed again, so a change to one file costs that file's parse, not the
//! folder's.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use ambit_api::manifests::{self, ManifestError, Manifests, Object};

use crate::mesh::FileChanges;

/// A folder's manifests, as [`Manifests::load_dir`] reads them, updated file by file.
#[derive(Debug)]
pub struct Folder {
    dir: PathBuf,
    /// The text of each file read, to tell which files changed.
    texts: BTreeMap<PathBuf, String>,
    manifests: Manifests,
}

impl Folder {
    /// Reads every manifest under `dir`.
    ///
    /// # Errors
    /// [`ManifestError::Folder`] when `dir` cannot be listed.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let mut folder = Self {
            dir: dir.to_owned(),
            texts: BTreeMap::new(),
            manifests: Manifests::default(),
        };
        folder.reread()?;
        Ok(folder)
    }

    /// What the folder held at the last read.
    #[must_use]
    pub fn manifests(&self) -> &Manifests {
        &self.manifests
    }

    /// Reads the folder again, parsing only the files whose text changed; returns the
    /// files added, edited, deleted or unreadable, and the objects those held before.
    ///
    /// # Errors
    /// [`ManifestError::Folder`] when the folder cannot be listed; what it held stays.
    pub fn reread(&mut self) -> Result<FileChanges, ManifestError> {
        let files = manifests::yaml_files(&self.dir)?;
        // A file that could not be read is read again, and is gone if it is gone.
        let mut changed: BTreeSet<PathBuf> = self
            .manifests
            .errors
            .iter()
            .filter_map(|error| match error {
                ManifestError::File { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect();
        let mut fresh = Manifests::default();
        let mut texts = BTreeMap::new();
        for file in files {
            match fs::read_to_string(&file) {
                Ok(text) => {
                    if self.texts.get(&file) != Some(&text) {
                        fresh.parse_documents(&file, &text);
                        changed.insert(file.clone());
                    }
                    texts.insert(file, text);
                }
                Err(source) => {
                    changed.insert(file.clone());
                    fresh
                        .errors
                        .push(ManifestError::File { path: file, source });
                }
            }
        }
        changed.extend(
            self.texts
                .keys()
                .filter(|file| !texts.contains_key(*file))
                .cloned(),
        );
        self.texts = texts;
        let removed = self.replace(&changed, fresh);
        Ok(FileChanges {
            files: changed,
            removed,
        })
    }

    /// Puts `fresh`, what the `changed` files hold now, in place of what they held;
    /// returns the objects they held. Objects and errors stay in file order, each file's
    /// replaced in place.
    fn replace(&mut self, changed: &BTreeSet<PathBuf>, fresh: Manifests) -> Vec<Object> {
        let mut fresh_objects = fresh.objects.into_iter().peekable();
        let mut fresh_errors = fresh.errors.into_iter().peekable();
        let mut removed = Vec::new();
        for file in changed {
            let objects = std::iter::from_fn(|| fresh_objects.next_if(|o| o.source.file == *file));
            let held = &mut self.manifests.objects;
            removed.extend(held.splice(range_of(held, file, |o| Some(&o.source.file)), objects));
            let errors = std::iter::from_fn(|| fresh_errors.next_if(|e| file_of(e) == Some(file)));
            let held = &mut self.manifests.errors;
            held.splice(range_of(held, file, file_of), errors);
        }
        removed
    }
}

/// The file an error is about (none for the folder itself).
fn file_of(error: &ManifestError) -> Option<&Path> {
    match error {
        ManifestError::File { path, .. } => Some(path),
        ManifestError::Document { at, .. } => Some(&at.file),
        ManifestError::Folder { .. } => None,
    }
}

/// Where the items of `file` are (or would go) in `items`, which are in file order.
fn range_of<T>(
    items: &[T],
    file: &Path,
    file_of: impl Fn(&T) -> Option<&Path>,
) -> std::ops::Range<usize> {
    let start = items.partition_point(|item| file_of(item) < Some(file));
    let len = items[start..].partition_point(|item| file_of(item) == Some(file));
    start..start + len
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: NAME, namespace: shop}\n";

    fn pods(names: &[&str]) -> String {
        names
            .iter()
            .map(|name| POD.replace("NAME", name))
            .collect::<Vec<_>>()
            .join("---\n")
    }

    /// Objects and errors (as text) of `manifests`, to compare two reads.
    fn contents(manifests: &Manifests) -> (Vec<Object>, Vec<String>) {
        let errors = manifests.errors.iter().map(ToString::to_string).collect();
        (manifests.objects.clone(), errors)
    }

    #[test]
    fn rereading_after_each_edit_matches_a_fresh_read_and_names_the_changed_files() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = |name: &str| dir.path().join(name);
        let write = |name: &str, text: &str| fs::write(path(name), text).expect("written");
        write("b.yaml", &pods(&["b1", "b2"]));
        write("d.yaml", &pods(&["d1"]));
        fs::create_dir(path("sub")).expect("a subfolder");
        write("sub/a.yaml", &pods(&["s1"]));
        let mut folder = Folder::load(dir.path()).expect("loaded");

        let mut reread_after = |what: &str, edit: &dyn Fn(), expected: &[&str]| {
            let before: Vec<Object> = folder.manifests().objects.clone();
            edit();
            let FileChanges {
                files: changed,
                removed,
            } = folder.reread().expect("reread");
            let expected: BTreeSet<PathBuf> = expected.iter().map(|name| path(name)).collect();
            assert_eq!(changed, expected, "{what}: the changed files");
            let held: Vec<Object> = before
                .into_iter()
                .filter(|o| changed.contains(&o.source.file))
                .collect();
            assert_eq!(removed, held, "{what}: what the changed files held");
            let fresh = Manifests::load_dir(dir.path()).expect("a fresh read");
            assert_eq!(
                contents(folder.manifests()),
                contents(&fresh),
                "{what}: the kept read differs from a fresh one"
            );
        };
        reread_after(
            "edit",
            &|| write("b.yaml", &pods(&["b1", "b3"])),
            &["b.yaml"],
        );
        reread_after(
            "add first",
            &|| write("a.yaml", &pods(&["a1"])),
            &["a.yaml"],
        );
        reread_after("add last", &|| write("z.yml", &pods(&["z1"])), &["z.yml"]);
        reread_after("break", &|| write("d.yaml", "kind: [unclosed"), &["d.yaml"]);
        reread_after(
            "delete",
            &|| fs::remove_file(path("b.yaml")).expect("deleted"),
            &["b.yaml"],
        );
        reread_after(
            "rewrite unchanged",
            &|| write("a.yaml", &pods(&["a1"])),
            &[],
        );
    }
}
