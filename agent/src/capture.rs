//! The capture eBPF: loading or adopting it, and enrolling pods into it.
//!
//! [`Capture::install`] loads the programs embedded in this binary, attaches the cgroup
//! programs (connect4/6, getpeername4/6, sock_ops) to the configured cgroup, attaches
//! sk_msg to its SOCKHASH, and pins maps, programs and links under the bpffs directory.
//! When the pins are already there (an agent restart or upgrade), it adopts them
//! instead, so capture never stops. [`Capture::enrol`] puts a pod's network-namespace
//! cookie in the enrolment map and attaches `sk_lookup` to its namespace.
//! [`uninstall`] removes every pin, which detaches everything.

mod enrol;
mod install;
mod object;
mod pins;

use std::{io, path::PathBuf};

use ambit_ebpf_common::Settings;
use aya::{
    maps::{Array, HashMap, MapData},
    programs::SkLookup,
};
pub use install::uninstall;
pub use pins::Pins;

/// What went wrong loading, attaching, pinning or enrolling.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "the agent must run as root (it loads eBPF programs and enters pod network namespaces)"
    )]
    NotRoot,
    #[error(
        "this agent binary was built without its eBPF object — run `cargo xtask build-ebpf`, then rebuild the agent"
    )]
    ObjectNotBuilt,
    #[error("{path} is not on a bpf filesystem — mount one: mount -t bpf bpf /sys/fs/bpf")]
    NoBpffs { path: PathBuf },
    #[error(
        "cannot open cgroup {path}: {error} — pass an existing cgroup v2 directory with --cgroup"
    )]
    Cgroup { path: PathBuf, error: io::Error },
    #[error("cannot load the eBPF object: {} — does this kernel have BPF (CONFIG_BPF_SYSCALL) and is the agent privileged?", causes(.0))]
    Load(aya::EbpfError),
    #[error("eBPF program {program} was rejected: {}", causes(.error))]
    Program {
        program: &'static str,
        error: aya::programs::ProgramError,
    },
    #[error(
        "the eBPF object has no {kind} named {name} — agent and object are out of step; rebuild both"
    )]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("eBPF map {name}: {}", causes(.error))]
    Map {
        name: &'static str,
        error: aya::maps::MapError,
    },
    #[error("cannot pin {path}: {}", causes(.error))]
    Pin {
        path: PathBuf,
        error: aya::pin::PinError,
    },
    #[error("eBPF link {path}: {}", causes(.error))]
    Link {
        path: PathBuf,
        error: aya::programs::links::LinkError,
    },
    #[error("{action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
}

/// An error followed by its causes (`a: b: c`), so a verifier log or an errno that
/// aya keeps as a source is never lost.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

/// The loaded (or adopted) capture programs and the maps the agent writes.
pub struct Capture {
    pins: Pins,
    enrolled: HashMap<MapData, u64, u32>,
    settings: Array<MapData, Settings>,
    sk_lookup: SkLookup,
    /// Reads `aya-log` records from the programs; see [`Capture::take_log_forwarder`].
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("pins", &self.pins)
            .field("log_forwarding", &self.logger.is_some())
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// Turns same-node sk_msg acceleration on or off for every enrolled pod.
    ///
    /// # Errors
    /// [`CaptureError::Map`] when the settings map cannot be written.
    pub fn set_sockmap_acceleration(&mut self, on: bool) -> Result<(), CaptureError> {
        let settings = Settings {
            sockmap_acceleration: u32::from(on),
        };
        self.settings
            .set(0, settings, 0)
            .map_err(|error| CaptureError::Map {
                name: ambit_ebpf_common::map_names::SETTINGS,
                error,
            })
    }

    /// The reader of the programs' `aya-log` records, for [`forward_logs`]; `None`
    /// when already taken or unavailable.
    pub fn take_log_forwarder(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    /// Where this capture is pinned.
    #[must_use]
    pub fn pins(&self) -> &Pins {
        &self.pins
    }
}

/// Forwards the programs' `aya-log` records to `log` (and so to `tracing`) as they
/// arrive, until the task is dropped.
pub async fn forward_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring-buffer fd for as long as the AsyncFd owns the
    // logger; nothing else closes or reuses it.
    let registered = unsafe { tokio::io::unix::AsyncFd::register(logger) };
    let mut ready = match registered {
        Ok(fd) => fd,
        Err(error) => {
            tracing::warn!(%error, "eBPF log forwarding is off");
            return;
        }
    };
    loop {
        let Ok(mut guard) = ready.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
