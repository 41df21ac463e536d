//! The eBPF object embedded at build time (see `build.rs`).

use super::CaptureError;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ambit-ebpf.o"));

/// The embedded object, or [`CaptureError::ObjectNotBuilt`] if this binary carries the
/// empty placeholder.
///
/// # Errors
/// [`CaptureError::ObjectNotBuilt`].
pub fn embedded() -> Result<&'static [u8], CaptureError> {
    if OBJECT.is_empty() {
        Err(CaptureError::ObjectNotBuilt)
    } else {
        Ok(OBJECT)
    }
}
