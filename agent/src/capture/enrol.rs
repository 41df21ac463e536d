//! Enrolling a pod: its network-namespace cookie goes into `AMBIT_ENROLLED` (outbound
//! capture by the cgroup programs) and `sk_lookup` is attached to its namespace
//! (inbound capture), pinned under `pods/<cookie>` so it survives an agent restart.

use std::io;

use ambit_ebpf_common::{NETNS_ENROLLED, map_names};
use ambit_netns::Netns;
use aya::programs::links::{FdLink, PinnedLink};

use super::{Capture, CaptureError};

impl Capture {
    /// Enrols the pod whose network namespace `netns` is and whose cookie is `cookie`.
    /// Enrolling an enrolled pod again is harmless.
    ///
    /// # Errors
    /// [`CaptureError`] when the attachment or the map update fails; nothing is left
    /// half-done.
    pub fn enrol(&mut self, netns: &Netns, cookie: u64) -> Result<(), CaptureError> {
        let link_path = self.pins.pod_link(cookie);
        if !link_path.exists() {
            let id = self
                .sk_lookup
                .attach(netns)
                .map_err(|error| CaptureError::Program {
                    program: "ambit_sk_lookup",
                    error,
                })?;
            let link: FdLink = self
                .sk_lookup
                .take_link(id)
                .map_err(|error| CaptureError::Program {
                    program: "ambit_sk_lookup",
                    error,
                })?
                .into();
            link.pin(&link_path).map_err(|error| CaptureError::Pin {
                path: link_path.clone(),
                error,
            })?;
        }
        if let Err(error) = self.enrolled.insert(cookie, NETNS_ENROLLED, 0) {
            let _ = self.detach_pod(cookie);
            return Err(CaptureError::Map {
                name: map_names::ENROLLED_NETNS,
                error,
            });
        }
        Ok(())
    }

    /// Un-enrols the pod whose namespace cookie is `cookie`. Un-enrolling a pod that is
    /// not enrolled is harmless.
    ///
    /// # Errors
    /// [`CaptureError`] when the map entry or the pinned link cannot be removed.
    pub fn unenrol(&mut self, cookie: u64) -> Result<(), CaptureError> {
        match self.enrolled.remove(&cookie) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(error) => {
                return Err(CaptureError::Map {
                    name: map_names::ENROLLED_NETNS,
                    error,
                });
            }
        }
        self.detach_pod(cookie)
    }

    /// Whether the cookie is in the enrolment map.
    #[must_use]
    pub fn is_enrolled(&self, cookie: u64) -> bool {
        self.enrolled.get(&cookie, 0).is_ok()
    }

    fn detach_pod(&self, cookie: u64) -> Result<(), CaptureError> {
        let path = self.pins.pod_link(cookie);
        if !path.exists() {
            return Ok(());
        }
        let link = PinnedLink::from_pin(&path).map_err(|error| CaptureError::Link {
            path: path.clone(),
            error,
        })?;
        // Dropping the unpinned link closes its last reference: the kernel detaches it.
        link.unpin()
            .map(drop)
            .map_err(|error: io::Error| CaptureError::Io {
                action: "cannot unpin",
                path,
                error,
            })
    }
}
