//! Host names as Istio reads them: short names resolved per namespace, wildcards, and
//! `exportTo` visibility.

use std::net::IpAddr;

/// The cluster's DNS domain, as in `reviews.shop.svc.cluster.local`.
pub const DEFAULT_DOMAIN_SUFFIX: &str = "cluster.local";

/// Resolves `host` as written in an object of `namespace`, the way Istio does: a name
/// without a dot (`reviews`) is a Kubernetes service of that namespace
/// (`reviews.shop.svc.cluster.local`); anything with a dot, `*` and IP addresses are
/// taken as written — so `reviews.shop` stays `reviews.shop`, as in Istio.
#[must_use]
pub fn resolve(host: &str, namespace: &str) -> String {
    if host.is_empty() || host == "*" || host.contains('.') || host.parse::<IpAddr>().is_ok() {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{DEFAULT_DOMAIN_SUFFIX}")
    }
}

/// Whether the resolved `pattern` (an FQDN, `*.suffix` or `*`) covers the resolved
/// `host`.
#[must_use]
pub fn matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern == host,
    }
}

/// Whether an object of `own_namespace` with this `exportTo` is visible from
/// `namespace`: empty or `*` means everywhere, `.` its own namespace, `~` nowhere, any
/// other entry names a namespace.
#[must_use]
pub fn visible(export_to: &[String], own_namespace: &str, namespace: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|entry| match entry.as_str() {
            "*" => true,
            "." => own_namespace == namespace,
            "~" => false,
            other => other == namespace,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_the_objects_namespace() {
        assert_eq!(resolve("reviews", "shop"), "reviews.shop.svc.cluster.local");
        assert_eq!(
            resolve("reviews.shop.svc.cluster.local", "other"),
            "reviews.shop.svc.cluster.local"
        );
        assert_eq!(resolve("reviews.shop", "other"), "reviews.shop");
        assert_eq!(resolve("*", "shop"), "*");
        assert_eq!(resolve("fd00::1", "shop"), "fd00::1");
    }

    #[test]
    fn wildcards_cover_subdomains_only() {
        assert!(matches("*", "a.b"));
        assert!(matches(
            "*.shop.svc.cluster.local",
            "reviews.shop.svc.cluster.local"
        ));
        assert!(!matches(
            "*.shop.svc.cluster.local",
            "shop.svc.cluster.local"
        ));
        assert!(!matches(
            "*.shop.svc.cluster.local",
            "reviews.other.svc.cluster.local"
        ));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "x.a.b"));
    }

    #[test]
    fn export_to_limits_who_sees_an_object() {
        let to = |entries: &[&str]| entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>();
        assert!(visible(&[], "shop", "web"));
        assert!(visible(&to(&["*"]), "shop", "web"));
        assert!(visible(&to(&["."]), "shop", "shop"));
        assert!(!visible(&to(&["."]), "shop", "web"));
        assert!(visible(&to(&[".", "web"]), "shop", "web"));
        assert!(!visible(&to(&["~"]), "shop", "shop"));
    }
}
