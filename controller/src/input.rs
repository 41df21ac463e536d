//! What `-f` names: files, folders, or `-` for standard input, read into one
//! [`Manifests`] collection.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use ambit_api::manifests::Manifests;

/// The `-f` argument that means standard input.
pub const STDIN_ARG: &str = "-";

/// The file name diagnostics show for documents read from standard input.
pub const STDIN_NAME: &str = "<stdin>";

/// Why the inputs could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read manifests from standard input: {0}")]
    Stdin(#[source] std::io::Error),
}

/// Reads every path in `paths` (a folder: its `*.yaml`/`*.yml` files; a file: its
/// documents; `-`: `stdin`, once). A path that cannot be read becomes an entry of
/// [`Manifests::errors`], like a document that does not parse, so it is reported with
/// the rest.
///
/// # Errors
/// [`InputError::Stdin`] when `-` is given and standard input cannot be read.
pub fn read(paths: &[PathBuf], mut stdin: impl Read) -> Result<Manifests, InputError> {
    let mut manifests = Manifests::default();
    let mut stdin_read = false;
    for path in paths {
        if path.as_os_str() == STDIN_ARG {
            if !stdin_read {
                let mut text = String::new();
                stdin.read_to_string(&mut text).map_err(InputError::Stdin)?;
                manifests.parse_documents(Path::new(STDIN_NAME), &text);
                stdin_read = true;
            }
        } else if let Err(error) = manifests.read_path(path) {
            manifests.errors.push(error);
        }
    }
    Ok(manifests)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ";

    #[test]
    fn reads_files_folders_and_stdin_together() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("more")).unwrap();
        fs::write(dir.path().join("more/b.yml"), format!("{NAMESPACE}b\n")).unwrap();
        let file = dir.path().join("a.json");
        fs::write(&file, format!("{NAMESPACE}a\n")).unwrap();
        let stdin = format!("{NAMESPACE}c\n");

        let paths = [
            file,
            dir.path().join("more"),
            PathBuf::from("-"),
            PathBuf::from("-"),
        ];
        let manifests = read(&paths, stdin.as_bytes()).unwrap();

        let names: Vec<_> = manifests
            .objects
            .iter()
            .map(|o| o.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(manifests.objects[2].source.file, Path::new(STDIN_NAME));
        assert!(manifests.errors.is_empty(), "{:?}", manifests.errors);
    }

    #[test]
    fn a_missing_path_is_reported_not_fatal() {
        let manifests = read(&[PathBuf::from("/nonexistent/x.yaml")], &b""[..]).unwrap();
        assert_eq!(manifests.errors.len(), 1);
        let error = manifests.errors[0].to_string();
        assert!(error.contains("/nonexistent/x.yaml"), "{error}");
    }
}
