//! Kubernetes mode's [`Authenticator`]: the caller's bearer token is a projected
//! service-account token of its ztunnel pod, checked with a `TokenReview`
//! (`authentication.k8s.io/v1`) for this CA's audience.
//!
//! The token must authenticate, belong to one of the node proxies' service accounts,
//! and be bound to a pod: the API server (Kubernetes ≥ 1.30) then names the pod's node in
//! the user's extra field [`NODE_NAME_EXTRA`], and that node is the caller's. Whether the
//! node may obtain an identity is the same [`Placement`](super::Placement) rule as in
//! local mode.
//!
//! Every request is reviewed (no cache): a revoked token or a deleted pod is refused at
//! once, and ztunnel asks only when a certificate is due.

use std::{collections::BTreeSet, fmt};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{Api, Client, api::PostParams};

use super::auth::{AuthError, Authenticator, Caller};

/// The audience the node proxies' tokens are requested for, by default.
pub const DEFAULT_AUDIENCE: &str = "ambit-ca";
/// The node proxies' service account, by default (`namespace/name`).
pub const DEFAULT_NODE_SERVICE_ACCOUNT: &str = "ambit-system/ambit-node";
/// Where the API server names the node of the pod a token is bound to.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// Why the reviewer cannot be configured.
#[derive(Debug, thiserror::Error)]
pub enum TokenReviewError {
    #[error("`{0}` is not a service account: write it as `namespace/name`")]
    ServiceAccount(String),
    #[error("no node service account given: name at least one as `namespace/name`")]
    NoServiceAccount,
    #[error("the token audience is empty: give the audience ztunnel's projected token is for")]
    EmptyAudience,
}

/// Checks callers' tokens with the Kubernetes API.
pub struct TokenReviewer {
    client: Client,
    audience: String,
    /// The node service accounts' user names (`system:serviceaccount:<ns>:<name>`).
    node_accounts: BTreeSet<String>,
}

impl fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .field("node_accounts", &self.node_accounts)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// Reviews tokens through `client`, accepting those for `audience` of the service
    /// accounts `node_accounts` (`namespace/name`).
    ///
    /// # Errors
    /// A [`TokenReviewError`] naming the value at fault.
    pub fn new(
        client: Client,
        audience: &str,
        node_accounts: &[String],
    ) -> Result<Self, TokenReviewError> {
        if audience.trim().is_empty() {
            return Err(TokenReviewError::EmptyAudience);
        }
        if node_accounts.is_empty() {
            return Err(TokenReviewError::NoServiceAccount);
        }
        let node_accounts = node_accounts
            .iter()
            .map(|account| match account.split_once('/') {
                Some((namespace, name))
                    if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
                {
                    Ok(format!("system:serviceaccount:{namespace}:{name}"))
                }
                _ => Err(TokenReviewError::ServiceAccount(account.clone())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            client,
            audience: audience.to_owned(),
            node_accounts,
        })
    }

    fn allowed(&self) -> String {
        self.node_accounts
            .iter()
            .map(|user| {
                user.trim_start_matches("system:serviceaccount:")
                    .replace(':', "/")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Authenticator for TokenReviewer {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| AuthError::ReviewFailed(error.to_string()))?;
        let status = reviewed.status.unwrap_or_default();
        // An authenticator that ignores audiences must not pass another service's token.
        let for_us = status
            .audiences
            .as_ref()
            .is_none_or(|audiences| audiences.contains(&self.audience));
        if status.authenticated != Some(true) || !for_us {
            return Err(AuthError::NotAuthenticated {
                reason: status
                    .error
                    .unwrap_or_else(|| format!("not for audience {}", self.audience)),
                audience: self.audience.clone(),
            });
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        if !self.node_accounts.contains(&username) {
            return Err(AuthError::NotANodeAccount {
                user: username,
                allowed: self.allowed(),
            });
        }
        let node = user
            .extra
            .and_then(|mut extra| extra.remove(NODE_NAME_EXTRA))
            .and_then(|nodes| nodes.into_iter().next())
            .filter(|node| !node.is_empty())
            .ok_or(AuthError::NoNodeBinding { user: username })?;
        Ok(Caller { node })
    }
}
