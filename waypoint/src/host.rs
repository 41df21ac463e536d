//! Host names as Istio reads them: short names resolved in a namespace, FQDNs, and
//! wildcards, and the request authority they are matched against.

use crate::config::CLUSTER_DOMAIN;

/// A host in a VirtualService's `hosts` (or a DestinationRule's `host`), resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// A name, lowercase: `reviews.shop.svc.cluster.local`, `bookinfo.com`.
    Exact(String),
    /// `*.example.com`, kept as the suffix `.example.com`.
    Suffix(String),
    /// `*`: every host.
    Any,
}

impl HostPattern {
    /// Reads `host` as written in an object of `namespace`: a name without a dot is a
    /// service of that namespace (`reviews` → `reviews.<namespace>.svc.cluster.local`),
    /// as Istio resolves short names.
    #[must_use]
    pub fn resolve(host: &str, namespace: &str) -> Self {
        match Self::literal(host) {
            Self::Exact(name) => Self::Exact(qualify(&name, namespace)),
            wildcard => wildcard,
        }
    }

    /// Reads `host` as written, short names left short: what a TLS client's server
    /// name (SNI) is compared with (`sniHosts`).
    #[must_use]
    pub fn literal(host: &str) -> Self {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host == "*" {
            Self::Any
        } else if let Some(suffix) = host.strip_prefix('*') {
            Self::Suffix(suffix.to_owned())
        } else {
            Self::Exact(host)
        }
    }

    /// Whether a request for `host` (normalised by [`authority_host`]) is covered.
    #[must_use]
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => name == host,
            Self::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
            Self::Any => true,
        }
    }

    /// Whether some host name matches both patterns.
    #[must_use]
    pub fn overlaps(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Any, _) | (_, Self::Any) => true,
            (Self::Exact(name), pattern) | (pattern, Self::Exact(name)) => pattern.matches(name),
            (Self::Suffix(a), Self::Suffix(b)) => {
                a.ends_with(b.as_str()) || b.ends_with(a.as_str())
            }
        }
    }

    /// How specific the pattern is: an exact name beats every wildcard, and a longer
    /// wildcard beats a shorter one (Istio picks the most specific host).
    #[must_use]
    pub fn specificity(&self) -> usize {
        match self {
            Self::Exact(_) => usize::MAX,
            Self::Suffix(suffix) => suffix.len(),
            Self::Any => 0,
        }
    }
}

/// `name` as an FQDN: names without a dot are services of `namespace`.
#[must_use]
pub fn qualify(name: &str, namespace: &str) -> String {
    if name.contains('.') {
        name.to_owned()
    } else {
        format!("{name}.{namespace}.svc.{CLUSTER_DOMAIN}")
    }
}

/// An authority split into its host and port text (`[::1]:80` → (`[::1]`, `80`)).
#[must_use]
pub fn split_authority(authority: &str) -> (&str, Option<&str>) {
    let host_end = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |end| end + 1)
    } else {
        authority.rfind(':').unwrap_or(authority.len())
    };
    let (host, rest) = authority.split_at(host_end);
    (host, rest.strip_prefix(':'))
}

/// The host of a request's authority: without the port, lowercase, without a trailing
/// dot (`Reviews.Shop:9080` → `reviews.shop`, `[::1]:80` → `[::1]`).
#[must_use]
pub fn authority_host(authority: &str) -> String {
    split_authority(authority)
        .0
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// The names a request for `host` may mean, most literal first: the name itself, then
/// the service it names as a pod in `namespace` would resolve it through its DNS search
/// path (`reviews` → `reviews.<namespace>.svc.cluster.local`, `reviews.other` →
/// `reviews.other.svc.cluster.local`, `reviews.other.svc` → `….svc.cluster.local`).
#[must_use]
pub fn candidates(host: &str, namespace: &str) -> Vec<String> {
    let mut names = vec![host.to_owned()];
    let qualified = match host.split('.').count() {
        1 => Some(qualify(host, namespace)),
        2 => Some(format!("{host}.svc.{CLUSTER_DOMAIN}")),
        3 if host.ends_with(".svc") => Some(format!("{host}.{CLUSTER_DOMAIN}")),
        _ => None,
    };
    names.extend(qualified);
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_overlap_when_some_name_matches_both() {
        let pattern = |host: &str| HostPattern::resolve(host, "shop");
        for (a, b) in [
            ("*", "db"),
            ("*.example.com", "api.example.com"),
            ("*.example.com", "*.api.example.com"),
            ("db", "db.shop.svc.cluster.local"),
        ] {
            assert!(pattern(a).overlaps(&pattern(b)), "{a} and {b}");
            assert!(pattern(b).overlaps(&pattern(a)), "{b} and {a}");
        }
        for (a, b) in [
            ("*.example.com", "example.com"),
            ("*.example.com", "*.example.org"),
            ("db", "web"),
        ] {
            assert!(!pattern(a).overlaps(&pattern(b)), "{a} and {b}");
        }
    }

    #[test]
    fn short_names_resolve_in_the_objects_namespace() {
        assert_eq!(
            HostPattern::resolve("reviews", "shop"),
            HostPattern::Exact("reviews.shop.svc.cluster.local".into())
        );
        assert_eq!(
            HostPattern::resolve("Ratings.Other.svc.cluster.local.", "shop"),
            HostPattern::Exact("ratings.other.svc.cluster.local".into())
        );
    }

    #[test]
    fn wildcards_cover_subdomains_only() {
        let pattern = HostPattern::resolve("*.example.com", "shop");
        assert!(pattern.matches("api.example.com"));
        assert!(pattern.matches("a.b.example.com"));
        assert!(!pattern.matches("example.com"), "a wildcard needs a label");
        assert!(!pattern.matches("api.example.org"));
        assert!(HostPattern::resolve("*", "shop").matches("anything"));
    }

    #[test]
    fn exact_names_are_more_specific_than_any_wildcard() {
        let exact = HostPattern::resolve("a.example.com", "x").specificity();
        let long = HostPattern::resolve("*.a.example.com", "x").specificity();
        let short = HostPattern::resolve("*.com", "x").specificity();
        assert!(exact > long && long > short && short > HostPattern::Any.specificity());
    }

    #[test]
    fn the_authority_loses_its_port_and_case() {
        assert_eq!(authority_host("Reviews.Shop:9080"), "reviews.shop");
        assert_eq!(authority_host("reviews"), "reviews");
        assert_eq!(authority_host("[::1]:80"), "[::1]");
        assert_eq!(split_authority("reviews:9080"), ("reviews", Some("9080")));
        assert_eq!(split_authority("[::1]:80"), ("[::1]", Some("80")));
        assert_eq!(split_authority("[::1]"), ("[::1]", None));
        assert_eq!(split_authority("reviews"), ("reviews", None));
    }

    #[test]
    fn a_request_host_is_tried_literally_then_as_a_service() {
        assert_eq!(
            candidates("reviews", "shop"),
            ["reviews", "reviews.shop.svc.cluster.local"]
        );
        assert_eq!(
            candidates("reviews.other", "shop"),
            ["reviews.other", "reviews.other.svc.cluster.local"]
        );
        assert_eq!(
            candidates("reviews.other.svc", "shop"),
            ["reviews.other.svc", "reviews.other.svc.cluster.local"]
        );
        assert_eq!(
            candidates("bookinfo.example.com", "shop"),
            ["bookinfo.example.com"]
        );
    }
}
