//! Kubernetes mode's [`Authenticator`]: the caller's bearer token is a projected
//! service-account token of its pod, checked with a `TokenReview`
//! (`authentication.k8s.io/v1`) for this CA's audience. The token must authenticate as
//! a service account (`system:serviceaccount:<namespace>:<name>`).
//!
//! A node proxy's token (one of the node service accounts) must also be bound to a pod:
//! the API server (Kubernetes ≥ 1.30) then names the pod's node in the user's extra field
//! [`NODE_NAME_EXTRA`], and that node is the caller's; whether the node may obtain an
//! identity is the same [`Placement`](super::Placement) rule as in local mode. Any other
//! service account's token (a waypoint's) is that account, with its pod's node when the
//! token is bound to one: it may obtain its own identity and nothing else, as with
//! Istio's CA, and subscribe to the config push as a waypoint or gateway of that node.
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
/// How the API server names a service account's user: `<prefix><namespace>:<name>`.
const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";

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
                    Ok(format!("{SERVICE_ACCOUNT_USER_PREFIX}{namespace}:{name}"))
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
                user.trim_start_matches(SERVICE_ACCOUNT_USER_PREFIX)
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
        let node = user
            .extra
            .and_then(|mut extra| extra.remove(NODE_NAME_EXTRA))
            .and_then(|nodes| nodes.into_iter().next())
            .filter(|node| !node.is_empty());
        if !self.node_accounts.contains(&username) {
            return service_account(&username, node).ok_or_else(|| AuthError::NotAServiceAccount {
                user: username.clone(),
                allowed: self.allowed(),
            });
        }
        let node = node.ok_or(AuthError::NoNodeBinding { user: username })?;
        Ok(Caller::Node(node))
    }
}

/// The service account a user name (`system:serviceaccount:<namespace>:<name>`) is, its
/// token bound to a pod on `node` if known.
fn service_account(user: &str, node: Option<String>) -> Option<Caller> {
    let (namespace, name) = user
        .strip_prefix(SERVICE_ACCOUNT_USER_PREFIX)?
        .split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then(|| {
        Caller::ServiceAccount {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            node,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_service_account_users_are_service_accounts() {
        assert_eq!(
            service_account("system:serviceaccount:shop:waypoint", Some("node-a".into())),
            Some(Caller::ServiceAccount {
                namespace: "shop".into(),
                name: "waypoint".into(),
                node: Some("node-a".into()),
            })
        );
        for not_one in [
            "alice",
            "system:node:node-a",
            "system:serviceaccount:shop",
            "system:serviceaccount::waypoint",
            "system:serviceaccount:shop:",
            "system:serviceaccount:shop:a:b",
        ] {
            assert_eq!(service_account(not_one, None), None, "{not_one}");
        }
    }
}
