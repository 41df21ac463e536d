//! `rewrite` and `redirect`: the path and authority a request is forwarded with, or
//! the `Location` it is sent to instead.

use ambit_api::istio::virtual_service::{HttpRedirect, HttpRewrite, RedirectPortSelection};
use http::{HeaderValue, StatusCode};
use regex::Regex;

use super::{Problem, route::Matched};
use crate::matcher::{RequestView, Semantics};

/// In a Gateway API redirect, what marks `uri` as the replacement of the matched
/// prefix (`ReplacePrefixMatch`) rather than of the whole path: Istio's own marker in
/// the VirtualService it generates for an HTTPRoute.
pub const PREFIX_MARKER: &str = "%PREFIX()%";

/// `rewrite`: the path (or its matched prefix) and the authority.
#[derive(Debug)]
pub struct Rewrite {
    uri: Option<String>,
    uri_regex: Option<(Regex, String)>,
    pub authority: Option<HeaderValue>,
    semantics: Semantics,
}

/// `redirect`.
#[derive(Debug)]
pub struct Redirect {
    path: Option<RedirectPath>,
    authority: Option<String>,
    scheme: Option<String>,
    port: RedirectPort,
    /// Leave out a port that is the scheme's own (80 for http, 443 for https), as the
    /// Gateway API asks.
    omit_default_port: bool,
    pub status: StatusCode,
}

/// The path a redirect sends to.
#[derive(Debug)]
enum RedirectPath {
    /// This path (and query, if it has one).
    Whole(String),
    /// The matched prefix replaced by this (`%PREFIX()%`, Gateway API routes only).
    Prefix(String),
}

#[derive(Debug, Clone, Copy)]
enum RedirectPort {
    Keep,
    Set(u16),
    FromRequest,
    ProtocolDefault,
}

impl Rewrite {
    pub(super) fn compile(
        field: &str,
        spec: &HttpRewrite,
        semantics: Semantics,
        problems: &mut Vec<Problem>,
    ) -> Option<Self> {
        let field = format!("{field}.rewrite");
        let uri_regex = match &spec.uri_regex_rewrite {
            None => None,
            Some(rewrite) => match Regex::new(&rewrite.pattern) {
                // RE2's `\1` is the regex crate's `${1}`.
                Ok(regex) => Some((regex, backrefs_to_regex_crate(&rewrite.rewrite))),
                Err(source) => {
                    problems.push(Problem::RewriteRegex {
                        field: format!("{field}.uriRegexRewrite.match"),
                        source: Box::new(source),
                    });
                    return None;
                }
            },
        };
        let authority = match spec.authority.as_str() {
            "" => None,
            authority => match HeaderValue::from_str(authority) {
                Ok(value) => Some(value),
                Err(_) => {
                    problems.push(Problem::Authority {
                        field: format!("{field}.authority"),
                    });
                    return None;
                }
            },
        };
        Some(Self {
            uri: Some(spec.uri.clone()).filter(|u| !u.is_empty()),
            uri_regex,
            authority,
            semantics,
        })
    }

    /// The path to forward instead of `path` (no query), or `None` to keep it.
    #[must_use]
    pub fn path(&self, matched: Matched, path: &str) -> Option<String> {
        if let Some(uri) = &self.uri {
            return Some(match (matched, self.semantics) {
                (Matched::Prefix(len), Semantics::VirtualService) => {
                    format!("{uri}{}", path.get(len..).unwrap_or_default())
                }
                (Matched::Prefix(len), Semantics::GatewayApi) => replace_prefix(uri, path, len),
                (Matched::WholePath, _) => uri.clone(),
            });
        }
        let (regex, replacement) = self.uri_regex.as_ref()?;
        Some(regex.replace_all(path, replacement.as_str()).into_owned())
    }
}

/// The Gateway API's `ReplacePrefixMatch`: the first `len` bytes of `path` (whole
/// elements, without a trailing `/`) replaced by `replacement`, joined with one `/`:
/// `/foo/bar` with `/foo` → `/xyz` is `/xyz/bar`, → `/` or `""` is `/bar`, and
/// `/foo` → `""` is `/`.
fn replace_prefix(replacement: &str, path: &str, len: usize) -> String {
    let joined = format!(
        "{}{}",
        replacement.trim_end_matches('/'),
        path.get(len..).unwrap_or_default()
    );
    if joined.is_empty() {
        "/".to_owned()
    } else {
        joined
    }
}

fn backrefs_to_regex_crate(rewrite: &str) -> String {
    let mut out = String::with_capacity(rewrite.len());
    let mut chars = rewrite.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            ('$', _) => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}

impl Redirect {
    pub(super) fn compile(
        field: &str,
        spec: &HttpRedirect,
        semantics: Semantics,
        problems: &mut Vec<Problem>,
    ) -> Option<Self> {
        let field = format!("{field}.redirect");
        let code = spec.redirect_code.unwrap_or(301);
        let status = match code {
            301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(u16::try_from(code).ok()?).ok()?,
            _ => {
                problems.push(Problem::RedirectCode {
                    field: format!("{field}.redirectCode"),
                    code,
                });
                return None;
            }
        };
        let port = match (spec.port, spec.derive_port) {
            (Some(port), _) => match u16::try_from(port) {
                Ok(port) if port != 0 => RedirectPort::Set(port),
                _ => {
                    problems.push(Problem::Port {
                        field: format!("{field}.port"),
                        port,
                    });
                    return None;
                }
            },
            (None, Some(RedirectPortSelection::FromRequestPort)) => RedirectPort::FromRequest,
            (None, Some(RedirectPortSelection::FromProtocolDefault)) => {
                RedirectPort::ProtocolDefault
            }
            (None, None) => RedirectPort::Keep,
        };
        let non_empty = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        let path = match (spec.uri.strip_prefix(PREFIX_MARKER), semantics) {
            (Some(replacement), Semantics::GatewayApi) => {
                Some(RedirectPath::Prefix(replacement.to_owned()))
            }
            _ => non_empty(&spec.uri).map(RedirectPath::Whole),
        };
        Some(Self {
            path,
            authority: non_empty(&spec.authority),
            scheme: non_empty(&spec.scheme),
            port,
            omit_default_port: semantics == Semantics::GatewayApi,
            status,
        })
    }

    /// The `Location` for a request: the path (query kept unless the new uri has one),
    /// authority, scheme and port replaced as configured.
    #[must_use]
    pub fn location(&self, request: &RequestView<'_>, matched: Matched) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(request.scheme);
        let authority = self.authority.as_deref().unwrap_or(request.authority);
        let (host, _port) = crate::host::split_authority(authority);
        let port = match self.port {
            RedirectPort::Set(port) => Some(port),
            RedirectPort::FromRequest => Some(request.port),
            RedirectPort::Keep | RedirectPort::ProtocolDefault => None,
        };
        let scheme_default = match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        };
        let authority = match (self.port, port) {
            (_, Some(port)) if self.omit_default_port && scheme_default == Some(port) => {
                host.to_owned()
            }
            (_, Some(port)) => format!("{host}:{port}"),
            (RedirectPort::Keep, None) => authority.to_owned(),
            (_, None) => host.to_owned(),
        };
        let path = match (&self.path, matched) {
            (None, _) => request.path.to_owned(),
            (Some(RedirectPath::Whole(path)), _) => path.clone(),
            (Some(RedirectPath::Prefix(replacement)), Matched::Prefix(len)) => {
                replace_prefix(replacement, request.path, len)
            }
            (Some(RedirectPath::Prefix(replacement)), Matched::WholePath) => replacement.clone(),
        };
        match request.query {
            Some(query) if !path.contains('?') => format!("{scheme}://{authority}{path}?{query}"),
            _ => format!("{scheme}://{authority}{path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn rewrite(yaml: &str) -> Rewrite {
        let spec: HttpRewrite = serde_yaml_ng::from_str(yaml).unwrap();
        Rewrite::compile("http[0]", &spec, Semantics::VirtualService, &mut Vec::new())
            .expect("test rewrite compiles")
    }

    fn redirect(yaml: &str) -> Redirect {
        let spec: HttpRedirect = serde_yaml_ng::from_str(yaml).unwrap();
        Redirect::compile("http[0]", &spec, Semantics::VirtualService, &mut Vec::new())
            .expect("test redirect compiles")
    }

    #[test]
    fn a_uri_rewrite_replaces_the_matched_prefix_or_the_whole_path() {
        let to_v2 = rewrite("uri: /v2");
        assert_eq!(
            to_v2.path(Matched::Prefix(3), "/v1/items").as_deref(),
            Some("/v2/items")
        );
        assert_eq!(
            to_v2.path(Matched::WholePath, "/v1/items").as_deref(),
            Some("/v2")
        );
        // Istio's well-known surprise: a route without a uri match rewrites the `/`.
        assert_eq!(
            to_v2.path(Matched::Prefix(1), "/items").as_deref(),
            Some("/v2items")
        );
        assert_eq!(rewrite("authority: x").path(Matched::Prefix(1), "/a"), None);
    }

    #[test]
    fn a_gateway_api_prefix_replacement_joins_with_one_slash() {
        // The Gateway API's table for `ReplacePrefixMatch` (`/foo` matched: 4 bytes).
        for (path, replacement, want) in [
            ("/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo", "/xyz", "/xyz"),
            ("/foo/", "/xyz", "/xyz/"),
            ("/foo/bar", "", "/bar"),
            ("/foo/", "", "/"),
            ("/foo", "", "/"),
            ("/foo", "/", "/"),
            ("/foo/", "/", "/"),
        ] {
            assert_eq!(
                replace_prefix(replacement, path, 4),
                want,
                "{path} with {replacement:?}"
            );
        }
    }

    #[test]
    fn a_gateway_api_redirect_leaves_out_the_schemes_own_port() {
        let headers = HeaderMap::new();
        let on_port = |port| RequestView {
            method: "GET",
            scheme: "http",
            authority: "app",
            path: "/old/y",
            query: None,
            headers: &headers,
            port,
            source: None,
            gateways: &[],
        };
        let compile = |yaml: &str| {
            let spec: HttpRedirect = serde_yaml_ng::from_str(yaml).unwrap();
            Redirect::compile("http[0]", &spec, Semantics::GatewayApi, &mut Vec::new())
                .expect("test redirect compiles")
        };
        let prefix = Matched::Prefix(4);
        let from_request = compile("{uri: '%PREFIX()%/new', derivePort: FROM_REQUEST_PORT}");
        assert_eq!(
            from_request.location(&on_port(80), prefix),
            "http://app/new/y"
        );
        assert_eq!(
            from_request.location(&on_port(8080), prefix),
            "http://app:8080/new/y"
        );
        let https = compile("{scheme: https, port: 443}");
        assert_eq!(https.location(&on_port(80), prefix), "https://app/old/y");
        assert_eq!(
            redirect("{derivePort: FROM_REQUEST_PORT}").location(&on_port(80), prefix),
            "http://app:80/old/y",
            "a VirtualService's keeps it"
        );
    }

    #[test]
    fn a_regex_rewrite_takes_re2_group_references() {
        let swap = rewrite(
            r"uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '\2/instance/\1'}",
        );
        assert_eq!(
            swap.path(Matched::WholePath, "/service/foo/v1/api")
                .as_deref(),
            Some("/v1/api/instance/foo")
        );
        assert_eq!(backrefs_to_regex_crate(r"\1-$x"), "${1}-$$x");
    }

    #[test]
    fn a_redirect_keeps_what_it_does_not_replace() {
        let headers = HeaderMap::new();
        let request = RequestView {
            method: "GET",
            scheme: "http",
            authority: "shop.example.com:8080",
            path: "/old",
            query: Some("a=1"),
            headers: &headers,
            port: 8080,
            source: None,
            gateways: &[],
        };
        assert_eq!(
            redirect("uri: /new").location(&request, Matched::WholePath),
            "http://shop.example.com:8080/new?a=1"
        );
        assert_eq!(redirect("uri: /new").status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            redirect("{authority: other, scheme: https, port: 8443}")
                .location(&request, Matched::WholePath),
            "https://other:8443/old?a=1"
        );
        assert_eq!(
            redirect("{derivePort: FROM_PROTOCOL_DEFAULT, uri: '/x?b=2'}")
                .location(&request, Matched::WholePath),
            "http://shop.example.com/x?b=2",
            "a query in the new uri replaces the request's"
        );
    }
}
