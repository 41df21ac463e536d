//! Request paths as Istio's default `pathNormalization` (`BASE`) has Envoy read them:
//! dot segments removed as RFC 3986 (§5.2.4) says, `%2e` counting as `.`, before any
//! policy or route sees the path, and the normalized path is the one forwarded. So
//! `/public/../admin` is `/admin` for an AuthorizationPolicy and for the endpoint alike,
//! and cannot slip past a rule on `/admin*`.

use std::borrow::Cow;

use http::{Uri, uri::PathAndQuery};

/// Normalizes `uri`'s path in place (the query is kept as is).
pub fn normalize(uri: &mut Uri) {
    let Cow::Owned(path) = remove_dot_segments(uri.path()) else {
        return;
    };
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let Ok(path_and_query) = PathAndQuery::try_from(path_and_query) else {
        return;
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(path_and_query);
    if let Ok(normalized) = Uri::from_parts(parts) {
        *uri = normalized;
    }
}

/// `path` without `.` and `..` segments; borrowed when it has none.
#[must_use]
pub fn remove_dot_segments(path: &str) -> Cow<'_, str> {
    let dots = |segment: &str| match segment.to_ascii_lowercase().as_str() {
        "." | "%2e" => Some(1),
        ".." | ".%2e" | "%2e." | "%2e%2e" => Some(2),
        _ => None,
    };
    if !path.split('/').any(|segment| dots(segment).is_some()) {
        return Cow::Borrowed(path);
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match dots(segment) {
            Some(count) => {
                if count == 2 {
                    kept.pop();
                }
                if last {
                    kept.push("");
                }
            }
            None => kept.push(segment),
        }
    }
    Cow::Owned(format!("/{}", kept.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        for (path, expected) in [
            ("/a/b/c", "/a/b/c"),
            ("/a/./b", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/a/b/..", "/a/"),
            ("/..", "/"),
            ("/../../admin", "/admin"),
            ("/public/%2e%2E/admin", "/admin"),
            ("/public/.%2e/admin/.", "/admin/"),
            ("/a/..b/c.", "/a/..b/c."),
        ] {
            assert_eq!(remove_dot_segments(path), expected, "`{path}`");
        }
    }

    #[test]
    fn the_query_is_kept() {
        let mut uri: Uri = "http://app/public/../admin?next=/../x".parse().unwrap();
        normalize(&mut uri);
        assert_eq!(uri.to_string(), "http://app/admin?next=/../x");
        let mut origin: Uri = "/a/./b".parse().unwrap();
        normalize(&mut origin);
        assert_eq!(origin, "/a/b");
    }
}
