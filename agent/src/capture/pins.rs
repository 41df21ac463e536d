//! The layout of Ambit's pins under the bpffs directory:
//!
//! ```text
//! <bpffs>/maps/<MAP NAME>      every map (AMBIT_ENROLLED, AMBIT_ODST_CN, …)
//! <bpffs>/progs/<program>      every program
//! <bpffs>/links/<program>      the cgroup attachments (connect4/6, getpeername4/6, sock_ops)
//! <bpffs>/pods/<netns cookie>  each enrolled pod's sk_lookup attachment
//! ```

use std::path::{Path, PathBuf};

/// Paths of every pin, rooted at one bpffs directory.
#[derive(Debug, Clone)]
pub struct Pins {
    root: PathBuf,
}

impl Pins {
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    #[must_use]
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    #[must_use]
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    #[must_use]
    pub fn programs(&self) -> PathBuf {
        self.root.join("progs")
    }

    #[must_use]
    pub fn program(&self, name: &str) -> PathBuf {
        self.programs().join(name)
    }

    #[must_use]
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    #[must_use]
    pub fn link(&self, name: &str) -> PathBuf {
        self.links().join(name)
    }

    #[must_use]
    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }

    #[must_use]
    pub fn pod_link(&self, netns_cookie: u64) -> PathBuf {
        self.pods().join(netns_cookie.to_string())
    }
}
