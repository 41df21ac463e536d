//! Who may subscribe as what. Each `Subscribe` call carries `authorization: Bearer
//! <token>`, checked by the CA's [`Authenticator`] (a bootstrap token per node, or a
//! `TokenReview` with `--kube`); then [`authorize`] decides whether that caller may
//! receive the config of the node and kind its `Hello` names:
//!
//! - a node (its bootstrap token, or a node-proxy service account's token bound to a pod
//!   on it) may subscribe as any kind, for its own node only;
//! - another service account (a waypoint's or an ingress gateway's pod) may subscribe as
//!   `WAYPOINT` or `GATEWAY` only, and for its pod's node when the token says which.
//!
//! A server started with no authenticator ([`Gate::open`]) accepts everyone.

use std::{future::Future, pin::Pin, sync::Arc};

use ambit_api::config::SubscriberKind;
use tonic::{Status, metadata::MetadataMap};

use super::select::Subscriber;
use crate::ca::auth::{AuthError, Authenticator, Caller, request_token};

/// Why a subscription was refused; each maps to one gRPC status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{0} (a subscriber presents its CA token: ztunnel's and the waypoint's --ca-token-file, the agent's --controller-token-file)"
    )]
    Unauthenticated(AuthError),
    #[error("{0}")]
    Unavailable(AuthError),
    #[error(
        "{caller} may not subscribe for node {asked}: subscribe with --node-name {own}, or present {asked}'s token"
    )]
    OtherNode {
        caller: String,
        own: String,
        asked: String,
    },
    #[error(
        "{caller} may subscribe only as WAYPOINT or GATEWAY, not {kind}: an agent or ztunnel presents its node's token (with --kube, a node-proxy service account's, see --node-service-account)"
    )]
    NotAProxy { caller: String, kind: String },
}

impl Refusal {
    /// The gRPC status the subscriber receives.
    #[must_use]
    pub fn status(&self) -> Status {
        let message = self.to_string();
        match self {
            Self::Unauthenticated(_) => Status::unauthenticated(message),
            Self::Unavailable(_) => Status::unavailable(message),
            Self::OtherNode { .. } | Self::NotAProxy { .. } => Status::permission_denied(message),
        }
    }
}

/// Whether `caller` may subscribe as `subscriber` (its `Hello`).
///
/// # Errors
/// [`Refusal::OtherNode`] or [`Refusal::NotAProxy`].
pub fn authorize(caller: &Caller, subscriber: &Subscriber) -> Result<(), Refusal> {
    let own = match caller {
        Caller::Node(node) => Some(node),
        Caller::ServiceAccount { node, .. } => {
            if !matches!(
                subscriber.kind,
                SubscriberKind::Waypoint | SubscriberKind::Gateway
            ) {
                return Err(Refusal::NotAProxy {
                    caller: caller.to_string(),
                    kind: subscriber.kind.as_str_name().to_owned(),
                });
            }
            node.as_ref()
        }
    };
    match own {
        Some(own) if *own != subscriber.node => Err(Refusal::OtherNode {
            caller: caller.to_string(),
            own: own.clone(),
            asked: subscriber.node.clone(),
        }),
        _ => Ok(()),
    }
}

/// An authenticator behind a pointer, so the server's type does not name it.
type Check =
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Caller, AuthError>> + Send>> + Send + Sync;

/// Who the server lets in. Clones share the authenticator.
#[derive(Clone)]
pub struct Gate(Option<Arc<Check>>);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Gate::Authenticated"
        } else {
            "Gate::Open"
        })
    }
}

impl Gate {
    /// Lets everyone in.
    #[must_use]
    pub fn open() -> Self {
        Self(None)
    }

    /// Lets in the callers `authenticator` accepts, as [`authorize`] allows.
    #[must_use]
    pub fn new(authenticator: impl Authenticator) -> Self {
        let authenticator = Arc::new(authenticator);
        Self(Some(Arc::new(move |token: String| {
            let authenticator = Arc::clone(&authenticator);
            Box::pin(async move { authenticator.authenticate(&token).await })
        })))
    }

    /// The caller of a request with `metadata`, if it may subscribe as `subscriber`
    /// (`None` when the gate is open).
    ///
    /// # Errors
    /// A [`Refusal`].
    pub async fn admit(
        &self,
        metadata: &MetadataMap,
        subscriber: &Subscriber,
    ) -> Result<Option<Caller>, Refusal> {
        let Some(check) = &self.0 else {
            return Ok(None);
        };
        let token = request_token(metadata).map_err(Refusal::Unauthenticated)?;
        let caller = check(token.to_owned()).await.map_err(|error| match error {
            // Not the caller's fault: it may try again.
            AuthError::ReviewFailed(_) => Refusal::Unavailable(error),
            error => Refusal::Unauthenticated(error),
        })?;
        authorize(&caller, subscriber)?;
        Ok(Some(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber(node: &str, kind: SubscriberKind) -> Subscriber {
        Subscriber {
            node: node.to_owned(),
            kind,
        }
    }

    fn account(node: Option<&str>) -> Caller {
        Caller::ServiceAccount {
            namespace: "shop".into(),
            name: "waypoint".into(),
            node: node.map(str::to_owned),
        }
    }

    const ALL_KINDS: [SubscriberKind; 4] = [
        SubscriberKind::Agent,
        SubscriberKind::Ztunnel,
        SubscriberKind::Waypoint,
        SubscriberKind::Gateway,
    ];

    #[test]
    fn a_node_subscribes_for_itself_only() {
        let node_a = Caller::Node("node-a".into());
        for kind in ALL_KINDS {
            assert_eq!(authorize(&node_a, &subscriber("node-a", kind)), Ok(()));
            let refusal = authorize(&node_a, &subscriber("node-b", kind)).unwrap_err();
            assert_eq!(
                refusal.to_string(),
                "node node-a may not subscribe for node node-b: subscribe with --node-name node-a, or present node-b's token"
            );
            assert_eq!(refusal.status().code(), tonic::Code::PermissionDenied);
        }
    }

    #[test]
    fn a_service_account_subscribes_as_a_waypoint_or_gateway_of_its_node() {
        for kind in [SubscriberKind::Agent, SubscriberKind::Ztunnel] {
            let refusal = authorize(&account(None), &subscriber("node-a", kind)).unwrap_err();
            assert!(
                matches!(&refusal, Refusal::NotAProxy { caller, .. } if caller == "service account shop/waypoint"),
                "{refusal}"
            );
            assert_eq!(refusal.status().code(), tonic::Code::PermissionDenied);
        }
        for kind in [SubscriberKind::Waypoint, SubscriberKind::Gateway] {
            // Without a node binding, the claimed node is taken as is.
            assert_eq!(
                authorize(&account(None), &subscriber("node-b", kind)),
                Ok(())
            );
            assert_eq!(
                authorize(&account(Some("node-a")), &subscriber("node-a", kind)),
                Ok(())
            );
            assert!(matches!(
                authorize(&account(Some("node-a")), &subscriber("node-b", kind)),
                Err(Refusal::OtherNode { .. })
            ));
        }
    }

    #[tokio::test]
    async fn the_gate_authenticates_before_it_authorizes() {
        struct OneNode;
        impl Authenticator for OneNode {
            async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
                match token {
                    "token-a" => Ok(Caller::Node("node-a".into())),
                    "unreachable" => Err(AuthError::ReviewFailed("timed out".into())),
                    _ => Err(AuthError::UnknownToken),
                }
            }
        }
        let gate = Gate::new(OneNode);
        let ztunnel_a = subscriber("node-a", SubscriberKind::Ztunnel);
        let with = |token: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
            metadata
        };
        let code = |result: Result<Option<Caller>, Refusal>| result.unwrap_err().status().code();
        assert_eq!(
            code(gate.admit(&MetadataMap::new(), &ztunnel_a).await),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(gate.admit(&with("other"), &ztunnel_a).await),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(gate.admit(&with("unreachable"), &ztunnel_a).await),
            tonic::Code::Unavailable
        );
        assert_eq!(
            gate.admit(&with("token-a"), &ztunnel_a).await,
            Ok(Some(Caller::Node("node-a".into())))
        );
        assert_eq!(
            Gate::open().admit(&MetadataMap::new(), &ztunnel_a).await,
            Ok(None)
        );
    }
}
