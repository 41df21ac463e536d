//! Who is calling the CA ([`Authenticator`]), and which identities it may obtain
//! ([`Placement`]).
//!
//! Most callers are node proxies (ztunnels). Each proves which node it runs on; it may
//! then obtain the identity of any workload the model places on that node, and nothing
//! else. Local mode authenticates with a bootstrap token per node ([`TokenFiles`]);
//! Kubernetes mode checks the ztunnel pod's service-account token with a `TokenReview`
//! ([`TokenReviewer`](super::token_review::TokenReviewer)), behind the same trait. In
//! Kubernetes mode a pod may also present its own service-account token (a waypoint
//! does): it may then obtain exactly its own identity, as with Istio's CA.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    future::Future,
    io,
    path::{Path, PathBuf},
};

use ambit_api::{bearer::AUTHORIZATION, manifests::Manifests};
use tonic::metadata::MetadataMap;

use super::identity::Identity;
use crate::mesh::Mesh;

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no `authorization: Bearer <token>` metadata: send the node's bootstrap token")]
    MissingToken,
    #[error("the `authorization` metadata is not `Bearer <token>`")]
    MalformedToken,
    #[error("unknown token: it matches no node's token file — was it rotated?")]
    UnknownToken,
    #[error(
        "the Kubernetes API does not authenticate this token ({reason}): pass ztunnel a projected service-account token for audience `{audience}`"
    )]
    NotAuthenticated { reason: String, audience: String },
    #[error(
        "{user} is not a service account: the CA signs for node proxies (accounts {allowed}, see --node-service-account) and for pods presenting their own service-account token"
    )]
    NotAServiceAccount { user: String, allowed: String },
    #[error(
        "{user}'s token names no node (`authentication.kubernetes.io/node-name`): use a projected token of ztunnel's pod, on Kubernetes 1.30 or later"
    )]
    NoNodeBinding { user: String },
    #[error(
        "cannot check the token with a TokenReview: {0} — is the API server reachable, and may the CA's service account create tokenreviews (ClusterRole system:auth-delegator)?"
    )]
    ReviewFailed(String),
    #[error("node {node} may not obtain {identity}: no workload with that identity runs on {node}")]
    NotOnNode { node: String, identity: String },
    #[error(
        "{caller} may obtain only its own identity {own}, not {identity}: ask for {own}, or run the caller as a node proxy (--node-service-account)"
    )]
    NotOwnIdentity {
        caller: String,
        own: String,
        identity: String,
    },
    #[error("{identity} is outside this CA's trust domain {trust_domain}")]
    ForeignTrustDomain {
        identity: String,
        trust_domain: String,
    },
}

/// A caller that proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The proxy of this node: it may obtain the identities of the workloads on it.
    Node(String),
    /// A pod with its own service-account token: it may obtain that account's identity.
    ServiceAccount {
        namespace: String,
        name: String,
        /// The node of the pod the token is bound to, when the authenticator can tell
        /// (a TokenReview of a pod-bound token, Kubernetes ≥ 1.30).
        node: Option<String>,
    },
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Node(node) => write!(f, "node {node}"),
            Self::ServiceAccount {
                namespace, name, ..
            } => {
                write!(f, "service account {namespace}/{name}")
            }
        }
    }
}

/// Checks a caller's bearer token.
pub trait Authenticator: Send + Sync + 'static {
    /// The caller the token belongs to.
    fn authenticate(&self, token: &str) -> impl Future<Output = Result<Caller, AuthError>> + Send;
}

/// Why the token folder could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenFilesError {
    #[error(
        "cannot read token folder {path}: {source} — create it with one file per node, named after the node and holding its token"
    )]
    Folder { path: PathBuf, source: io::Error },
    #[error("cannot read token file {path}: {source}")]
    File { path: PathBuf, source: io::Error },
    #[error("token file {0} is empty: write the node's token in it")]
    Empty(PathBuf),
    #[error("token files {0} and {1} hold the same token: give each node its own")]
    Duplicate(PathBuf, PathBuf),
}

/// Local mode: `<dir>/<node-name>` holds that node's bootstrap token (surrounding
/// whitespace ignored). Hidden files (a mounted Secret's `..data`) are skipped.
pub struct TokenFiles {
    /// (token, node), compared in constant time.
    tokens: Vec<(String, String)>,
}

impl std::fmt::Debug for TokenFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<_> = self.tokens.iter().map(|(_, node)| node).collect();
        f.debug_struct("TokenFiles").field("nodes", &nodes).finish()
    }
}

impl TokenFiles {
    /// Reads every token file in `dir`.
    ///
    /// # Errors
    /// A [`TokenFilesError`] naming the folder or file.
    pub fn load(dir: &Path) -> Result<Self, TokenFilesError> {
        let folder = |source| TokenFilesError::Folder {
            path: dir.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in fs::read_dir(dir).map_err(folder)? {
            let path = entry.map_err(folder)?.path();
            let hidden = path
                .file_name()
                .and_then(|name| name.to_str())
                .is_none_or(|name| name.starts_with('.'));
            if !hidden && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut tokens = Vec::new();
        let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in paths {
            let text = fs::read_to_string(&path).map_err(|source| TokenFilesError::File {
                path: path.clone(),
                source,
            })?;
            let token = text.trim().to_owned();
            if token.is_empty() {
                return Err(TokenFilesError::Empty(path));
            }
            if let Some(first) = seen.get(&token) {
                return Err(TokenFilesError::Duplicate(first.clone(), path));
            }
            seen.insert(token.clone(), path.clone());
            let node = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default()
                .to_owned();
            tokens.push((token, node));
        }
        Ok(Self { tokens })
    }

    /// The nodes that have a token.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().map(|(_, node)| node.as_str())
    }
}

impl Authenticator for TokenFiles {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        // Look at every token, so the time taken does not say which one nearly matched.
        let mut found = None;
        for (known, node) in &self.tokens {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(node);
            }
        }
        found
            .map(|node| Caller::Node(node.clone()))
            .ok_or(AuthError::UnknownToken)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a gRPC request's `authorization` metadata.
///
/// # Errors
/// [`AuthError::MissingToken`] or [`AuthError::MalformedToken`].
pub fn request_token(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let header = metadata
        .get(AUTHORIZATION)
        .ok_or(AuthError::MissingToken)?
        .to_str()
        .map_err(|_| AuthError::MalformedToken)?;
    bearer_token(header)
}

/// The token in an `authorization` metadata value.
///
/// # Errors
/// [`AuthError::MalformedToken`] when it is not `Bearer <token>`.
pub fn bearer_token(authorization: &str) -> Result<&str, AuthError> {
    let (scheme, token) = authorization
        .split_once(' ')
        .ok_or(AuthError::MalformedToken)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::MalformedToken);
    }
    Ok(token)
}

/// Which identities run on which node, from the model's Pods (at start from the folder,
/// then from each version of the watched model).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    trust_domain: String,
    by_node: BTreeMap<String, BTreeSet<Identity>>,
}

impl Placement {
    /// Every Pod with `spec.nodeName`, as the identity of its namespace and
    /// `spec.serviceAccountName` (`default` when absent).
    #[must_use]
    pub fn from_manifests(manifests: &Manifests, trust_domain: &str) -> Self {
        let mut by_node: BTreeMap<String, BTreeSet<Identity>> = BTreeMap::new();
        for pod in manifests.of_kind("Pod") {
            let Some(node) = pod.spec_str("nodeName") else {
                continue;
            };
            let service_account = pod.spec_str("serviceAccountName").unwrap_or("default");
            match Identity::new(trust_domain, pod.namespace(), service_account) {
                Ok(identity) => {
                    by_node.entry(node.to_owned()).or_default().insert(identity);
                }
                Err(error) => {
                    tracing::warn!(pod = %pod.metadata.name, %error, "pod names no valid identity; it gets no certificate")
                }
            }
        }
        Self {
            trust_domain: trust_domain.to_owned(),
            by_node,
        }
    }

    /// The workloads of a resolved model that have a node and an identity.
    #[must_use]
    pub fn from_mesh(mesh: &Mesh, trust_domain: &str) -> Self {
        let mut by_node: BTreeMap<String, BTreeSet<Identity>> = BTreeMap::new();
        for workload in mesh.workloads.values() {
            if let (Some(node), Some(identity)) = (&workload.node, &workload.identity) {
                by_node
                    .entry(node.clone())
                    .or_default()
                    .insert(identity.clone());
            }
        }
        Self {
            trust_domain: trust_domain.to_owned(),
            by_node,
        }
    }

    /// Whether `caller` may obtain `identity`: a node's proxy, the identity of a workload
    /// on its node; a service account, its own.
    ///
    /// # Errors
    /// [`AuthError::ForeignTrustDomain`], [`AuthError::NotOnNode`] or
    /// [`AuthError::NotOwnIdentity`].
    pub fn authorize(&self, caller: &Caller, identity: &Identity) -> Result<(), AuthError> {
        if identity.trust_domain != self.trust_domain {
            return Err(AuthError::ForeignTrustDomain {
                identity: identity.to_string(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        match caller {
            Caller::Node(node) => self.authorize_node(node, identity),
            Caller::ServiceAccount {
                namespace, name, ..
            } => {
                let own = Identity {
                    trust_domain: self.trust_domain.clone(),
                    namespace: namespace.clone(),
                    service_account: name.clone(),
                };
                if *identity == own {
                    Ok(())
                } else {
                    Err(AuthError::NotOwnIdentity {
                        caller: caller.to_string(),
                        own: own.to_string(),
                        identity: identity.to_string(),
                    })
                }
            }
        }
    }

    /// Whether `node`'s proxy may obtain `identity` of this trust domain.
    fn authorize_node(&self, node: &str, identity: &Identity) -> Result<(), AuthError> {
        if self
            .by_node
            .get(node)
            .is_some_and(|identities| identities.contains(identity))
        {
            Ok(())
        } else {
            Err(AuthError::NotOnNode {
                node: node.to_owned(),
                identity: identity.to_string(),
            })
        }
    }

    /// How many nodes run at least one workload.
    #[must_use]
    pub fn node_count(&self) -> usize {
        self.by_node.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_nodes_and_bad_folders_say_why() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("node-a"), "secret-a\n").unwrap();
        fs::write(dir.path().join("node-b"), "  secret-b ").unwrap();
        fs::write(dir.path().join(".hidden"), "ignored").unwrap();
        let tokens = TokenFiles::load(dir.path()).unwrap();
        assert_eq!(tokens.nodes().collect::<Vec<_>>(), ["node-a", "node-b"]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(tokens.authenticate("secret-b")),
            Ok(Caller::Node("node-b".into()))
        );
        assert_eq!(
            rt.block_on(tokens.authenticate("secret-")),
            Err(AuthError::UnknownToken)
        );

        fs::write(dir.path().join("node-c"), "secret-a").unwrap();
        let error = TokenFiles::load(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("node-a") && error.contains("node-c"),
            "{error}"
        );
        fs::write(dir.path().join("node-c"), "\n").unwrap();
        let error = TokenFiles::load(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("node-c") && error.contains("empty"),
            "{error}"
        );
    }

    #[test]
    fn bearer_tokens_parse() {
        assert_eq!(bearer_token("Bearer abc"), Ok("abc"));
        assert_eq!(bearer_token("bearer  abc "), Ok("abc"));
        assert_eq!(bearer_token("Basic abc"), Err(AuthError::MalformedToken));
        assert_eq!(bearer_token("Bearer"), Err(AuthError::MalformedToken));
    }

    #[test]
    fn placement_allows_only_pods_on_the_node() {
        let mut manifests = Manifests::default();
        manifests.parse_documents(
            Path::new("pods.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: cart, namespace: shop}\nspec: {nodeName: node-a, serviceAccountName: cart}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec: {nodeName: node-b}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: pending, namespace: shop}\nspec: {serviceAccountName: pending}\n",
        );
        let placement = Placement::from_manifests(&manifests, "cluster.local");
        let cart = Identity::new("cluster.local", "shop", "cart").unwrap();
        let web = Identity::new("cluster.local", "shop", "default").unwrap();
        let node = |name: &str| Caller::Node(name.to_owned());
        assert_eq!(placement.authorize(&node("node-a"), &cart), Ok(()));
        assert_eq!(placement.authorize(&node("node-b"), &web), Ok(()));
        let error = placement
            .authorize(&node("node-a"), &web)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("node-a") && error.contains("spiffe://cluster.local/ns/shop/sa/default"),
            "{error}"
        );
        let pending = Identity::new("cluster.local", "shop", "pending").unwrap();
        assert!(placement.authorize(&node("node-a"), &pending).is_err());
        let foreign = Identity::new("other.local", "shop", "cart").unwrap();
        assert!(matches!(
            placement.authorize(&node("node-a"), &foreign),
            Err(AuthError::ForeignTrustDomain { .. })
        ));
    }

    #[test]
    fn a_service_account_may_obtain_its_own_identity_only() {
        let placement = Placement::from_manifests(&Manifests::default(), "cluster.local");
        let waypoint = Caller::ServiceAccount {
            namespace: "shop".into(),
            name: "waypoint".into(),
            node: None,
        };
        let own = Identity::new("cluster.local", "shop", "waypoint").unwrap();
        assert_eq!(
            placement.authorize(&waypoint, &own),
            Ok(()),
            "not placed anywhere"
        );
        for other in [
            Identity::new("cluster.local", "shop", "cart").unwrap(),
            Identity::new("cluster.local", "other", "waypoint").unwrap(),
        ] {
            let error = placement
                .authorize(&waypoint, &other)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("service account shop/waypoint")
                    && error.contains(&format!("only its own identity {own}, not {other}")),
                "{error}"
            );
        }
        let foreign = Identity::new("other.local", "shop", "waypoint").unwrap();
        assert!(matches!(
            placement.authorize(&waypoint, &foreign),
            Err(AuthError::ForeignTrustDomain { .. })
        ));
    }
}
