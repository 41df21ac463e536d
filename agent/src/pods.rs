//! The pods this agent knows (enrolled or not), persisted as JSON in the run directory so that a
//! restarted agent still knows them (and can hand them to ztunnel, or clean up after
//! the ones that went away while it was down).

use std::{
    collections::BTreeMap,
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// One enrolled pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    /// Kubernetes uid, or the sandbox id when the runtime passed none.
    pub uid: String,
    pub container_id: String,
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub ips: Vec<IpAddr>,
    /// Path of the pod's network namespace (`CNI_NETNS`).
    pub netns_path: String,
    /// The namespace's cookie, the key of the enrolment map.
    pub netns_cookie: u64,
    /// In the mesh now (the agent also remembers pods outside it, for label changes).
    pub enrolled: bool,
    /// The namespace is set up for delivery from the client's address.
    pub transparent_delivery: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PodStoreError {
    #[error("cannot read the pod state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "pod state file {path} is corrupt: {source} — move it away; the agent rebuilds it as pods are added"
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write the pod state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The enrolled pods by uid, written through to a file on every change.
#[derive(Debug)]
pub struct PodStore {
    path: PathBuf,
    pods: BTreeMap<String, PodRecord>,
}

impl PodStore {
    /// Reads the state file; a missing file is an empty store.
    ///
    /// # Errors
    /// [`PodStoreError`] when the file exists but cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, PodStoreError> {
        let pods = match fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| PodStoreError::Corrupt {
                    path: path.to_owned(),
                    source,
                })?
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(PodStoreError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Ok(Self {
            path: path.to_owned(),
            pods,
        })
    }

    /// Adds or replaces a pod.
    ///
    /// # Errors
    /// [`PodStoreError::Write`]; the pod is not recorded then.
    pub fn insert(&mut self, pod: PodRecord) -> Result<(), PodStoreError> {
        let previous = self.pods.insert(pod.uid.clone(), pod.clone());
        self.save().inspect_err(|_| {
            match previous {
                Some(previous) => self.pods.insert(pod.uid, previous),
                None => self.pods.remove(&pod.uid),
            };
        })
    }

    /// Removes a pod by uid.
    ///
    /// # Errors
    /// [`PodStoreError::Write`].
    pub fn remove(&mut self, uid: &str) -> Result<Option<PodRecord>, PodStoreError> {
        let removed = self.pods.remove(uid);
        if removed.is_some() {
            self.save()?;
        }
        Ok(removed)
    }

    #[must_use]
    pub fn get(&self, uid: &str) -> Option<&PodRecord> {
        self.pods.get(uid)
    }

    pub fn iter(&self) -> impl Iterator<Item = &PodRecord> {
        self.pods.values()
    }

    fn save(&self) -> Result<(), PodStoreError> {
        let write_error = |source| PodStoreError::Write {
            path: self.path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(&self.pods)
            .map_err(io::Error::other)
            .map_err(write_error)?;
        // Write then rename, so a crash never leaves half a file.
        let temporary = self.path.with_extension("json.tmp");
        fs::write(&temporary, json).map_err(write_error)?;
        fs::rename(&temporary, &self.path).map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> PodRecord {
        PodRecord {
            uid: uid.to_owned(),
            container_id: format!("sandbox-{uid}"),
            name: "cart".to_owned(),
            namespace: "shop".to_owned(),
            service_account: "default".to_owned(),
            ips: vec!["198.18.1.5".parse().unwrap()],
            netns_path: "/var/run/netns/cart".to_owned(),
            netns_cookie: 4097,
            enrolled: true,
            transparent_delivery: true,
        }
    }

    #[test]
    fn survives_a_reload_and_forgets_removed_pods() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods.json");
        let mut store = PodStore::load(&path).unwrap();
        store.insert(pod("a")).unwrap();
        store.insert(pod("b")).unwrap();
        assert_eq!(
            store.remove("a").unwrap().map(|p| p.uid),
            Some("a".to_owned())
        );

        let reloaded = PodStore::load(&path).unwrap();
        let uids: Vec<_> = reloaded.iter().map(|p| p.uid.as_str()).collect();
        assert_eq!(uids, ["b"]);
        assert_eq!(reloaded.get("b"), Some(&pod("b")));
    }

    #[test]
    fn a_corrupt_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods.json");
        fs::write(&path, "{not json").unwrap();
        let error = PodStore::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("pods.json") && error.contains("corrupt"),
            "{error}"
        );
    }
}
