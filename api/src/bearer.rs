//! The bearer token a proxy presents to the controller (the CA and the config push): read
//! from a file at each request, since projected service-account tokens rotate, and sent
//! as `authorization: Bearer <token>` gRPC metadata.

use std::path::{Path, PathBuf};

use tonic::metadata::{Ascii, MetadataValue};

/// The gRPC metadata key the token travels in.
pub const AUTHORIZATION: &str = "authorization";

/// Why the token file gives no usable token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error(
        "cannot read token file {path}: {source} — does it exist, and may this process read it?"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "token file {0} is empty: write the node's bootstrap token in it, or mount a projected service-account token there"
    )]
    Empty(PathBuf),
    #[error(
        "token file {0} holds characters not allowed in gRPC metadata: write the token as printable ASCII"
    )]
    NotAscii(PathBuf),
}

/// The `authorization` metadata value for the token in `path` (surrounding whitespace
/// ignored).
///
/// # Errors
/// A [`TokenFileError`] naming the file.
pub fn authorization(path: &Path) -> Result<MetadataValue<Ascii>, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenFileError::Empty(path.to_owned()));
    }
    format!("Bearer {token}")
        .parse()
        .map_err(|_| TokenFileError::NotAscii(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_token_and_says_what_is_wrong_with_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, " secret\n").unwrap();
        assert_eq!(authorization(&path).unwrap(), "Bearer secret");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            authorization(&path),
            Err(TokenFileError::Empty(_))
        ));
        std::fs::write(&path, "sec\u{1}ret").unwrap();
        assert!(matches!(
            authorization(&path),
            Err(TokenFileError::NotAscii(_))
        ));
        let missing = dir.path().join("missing");
        let error = authorization(&missing).unwrap_err().to_string();
        assert!(error.contains("missing"), "{error}");
    }
}
