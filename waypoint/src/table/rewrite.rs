//! `rewrite` and `redirect`: the path and authority a request is forwarded with, or
//! the `Location` it is sent to instead.

use ambit_api::istio::virtual_service::{HttpRedirect, HttpRewrite, RedirectPortSelection};
use http::{HeaderValue, StatusCode};
use regex::Regex;

use super::{Problem, route::Matched};
use crate::matcher::RequestView;

/// `rewrite`: the path (or its matched prefix) and the authority.
#[derive(Debug)]
pub struct Rewrite {
    uri: Option<String>,
    uri_regex: Option<(Regex, String)>,
    pub authority: Option<HeaderValue>,
}

/// `redirect`.
#[derive(Debug)]
pub struct Redirect {
    uri: Option<String>,
    authority: Option<String>,
    scheme: Option<String>,
    port: RedirectPort,
    pub status: StatusCode,
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
        })
    }

    /// The path to forward instead of `path` (no query), or `None` to keep it.
    #[must_use]
    pub fn path(&self, matched: Matched, path: &str) -> Option<String> {
        if let Some(uri) = &self.uri {
            return Some(match matched {
                Matched::Prefix(len) => format!("{uri}{}", path.get(len..).unwrap_or_default()),
                Matched::WholePath => uri.clone(),
            });
        }
        let (regex, replacement) = self.uri_regex.as_ref()?;
        Some(regex.replace_all(path, replacement.as_str()).into_owned())
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
        Some(Self {
            uri: non_empty(&spec.uri),
            authority: non_empty(&spec.authority),
            scheme: non_empty(&spec.scheme),
            port,
            status,
        })
    }

    /// The `Location` for a request: the path (query kept unless the new uri has one),
    /// authority, scheme and port replaced as configured.
    #[must_use]
    pub fn location(&self, request: &RequestView<'_>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(request.scheme);
        let authority = self.authority.as_deref().unwrap_or(request.authority);
        let (host, _port) = crate::host::split_authority(authority);
        let authority = match self.port {
            RedirectPort::Keep => authority.to_owned(),
            RedirectPort::Set(port) => format!("{host}:{port}"),
            RedirectPort::FromRequest => format!("{host}:{}", request.port),
            RedirectPort::ProtocolDefault => host.to_owned(),
        };
        let path = self.uri.as_deref().unwrap_or(request.path);
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
        Rewrite::compile("http[0]", &spec, &mut Vec::new()).expect("test rewrite compiles")
    }

    fn redirect(yaml: &str) -> Redirect {
        let spec: HttpRedirect = serde_yaml_ng::from_str(yaml).unwrap();
        Redirect::compile("http[0]", &spec, &mut Vec::new()).expect("test redirect compiles")
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
            redirect("uri: /new").location(&request),
            "http://shop.example.com:8080/new?a=1"
        );
        assert_eq!(redirect("uri: /new").status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            redirect("{authority: other, scheme: https, port: 8443}").location(&request),
            "https://other:8443/old?a=1"
        );
        assert_eq!(
            redirect("{derivePort: FROM_PROTOCOL_DEFAULT, uri: '/x?b=2'}").location(&request),
            "http://shop.example.com/x?b=2",
            "a query in the new uri replaces the request's"
        );
    }
}
