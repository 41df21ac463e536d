//! SPIFFE workload identities, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`:
//! the only form Istio issues, carried as the one URI SAN of a workload certificate.
//! The CA issues them, HBONE checks them, policy names them: one type for all.

use std::{fmt, str::FromStr};

/// The trust domain when none is configured, as in Istio.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";

/// Why a string does not name a workload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "{uri:?} is not a SPIFFE workload identity: {reason} \
         (expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)"
    )]
    Malformed { uri: String, reason: &'static str },
    #[error(
        "invalid trust domain `{0}`: use lowercase letters, digits, `.`, `-` and `_` (for example cluster.local)"
    )]
    TrustDomain(String),
}

/// A workload's identity: who a peer is, for policy and for the client's server check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl Identity {
    /// An identity from its parts, each checked as [`FromStr`] would.
    ///
    /// # Errors
    /// A part that is empty or holds a `/` (or, for the trust domain, a character outside
    /// `[a-z0-9._-]`).
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, IdentityError> {
        let identity = Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        };
        identity
            .validate()
            .map_err(|reason| IdentityError::Malformed {
                uri: identity.to_string(),
                reason,
            })?;
        Ok(identity)
    }

    fn validate(&self) -> Result<(), &'static str> {
        if self.trust_domain.is_empty() {
            return Err("the trust domain is empty");
        }
        if !valid_trust_domain(&self.trust_domain) {
            return Err("the trust domain may only hold a-z, 0-9, '.', '_' and '-'");
        }
        for (part, what) in [
            (&self.namespace, "the namespace is empty or holds '/'"),
            (
                &self.service_account,
                "the service account is empty or holds '/'",
            ),
        ] {
            if part.is_empty() || part.contains('/') {
                return Err(what);
            }
        }
        Ok(())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        let malformed = |reason| IdentityError::Malformed {
            uri: uri.to_owned(),
            reason,
        };
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| malformed("it does not start with spiffe://"))?;
        let mut parts = rest.split('/');
        let (Some(trust_domain), Some("ns"), Some(namespace), Some("sa"), Some(service_account)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed(
                "the path is not /ns/<namespace>/sa/<service-account>",
            ));
        };
        if parts.next().is_some() {
            return Err(malformed("there is more path after the service account"));
        }
        let identity = Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        };
        identity.validate().map_err(malformed)?;
        Ok(identity)
    }
}

/// Checks a trust domain as SPIFFE defines it (lowercase letters, digits, `.`, `-`, `_`).
///
/// # Errors
/// [`IdentityError::TrustDomain`] naming the bad value.
pub fn check_trust_domain(trust_domain: &str) -> Result<(), IdentityError> {
    if valid_trust_domain(trust_domain) {
        Ok(())
    } else {
        Err(IdentityError::TrustDomain(trust_domain.to_owned()))
    }
}

fn valid_trust_domain(trust_domain: &str) -> bool {
    !trust_domain.is_empty()
        && trust_domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_display() {
        let uri = "spiffe://cluster.local/ns/shop/sa/client";
        let identity: Identity = uri.parse().expect("a well-formed identity parses");
        assert_eq!(
            identity,
            Identity::new("cluster.local", "shop", "client").expect("valid parts")
        );
        assert_eq!(identity.to_string(), uri);
    }

    #[test]
    fn names_what_is_wrong_with_a_malformed_uri() {
        for (uri, reason) in [
            ("http://cluster.local/ns/a/sa/b", "spiffe://"),
            ("spiffe://cluster.local/ns/a", "/ns/<namespace>/sa/"),
            ("spiffe://cluster.local/sa/b/ns/a", "/ns/<namespace>/sa/"),
            ("spiffe://cluster.local/ns/a/sa/b/c", "more path"),
            ("spiffe:///ns/a/sa/b", "trust domain is empty"),
            ("spiffe://Cluster.Local/ns/a/sa/b", "may only hold"),
            ("spiffe://cluster.local/ns//sa/b", "namespace is empty"),
            (
                "spiffe://cluster.local/ns/a/sa/",
                "service account is empty",
            ),
        ] {
            let error = uri
                .parse::<Identity>()
                .expect_err(&format!("{uri} should be rejected"));
            let message = error.to_string();
            assert!(
                message.contains(reason) && message.contains(uri),
                "error for {uri} should name the URI and say {reason:?}, got: {message}"
            );
        }
    }

    #[test]
    fn new_rejects_a_slash_in_a_part() {
        let error = Identity::new("cluster.local", "a/b", "c").expect_err("'/' is not allowed");
        assert!(error.to_string().contains("namespace"), "got: {error}");
    }
}
