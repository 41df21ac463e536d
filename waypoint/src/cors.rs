//! `corsPolicy`: cross-origin requests answered as Envoy's CORS filter does for the
//! route a request takes. A preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) from an allowed origin is answered by the waypoint
//! (200, the allowed methods, headers and max age); one from another origin is forwarded
//! (`unmatchedPreflights: FORWARD`, the default) or answered without CORS headers
//! (`IGNORE`). Any other request from an allowed origin is forwarded, and its response
//! gets `Access-Control-Allow-Origin` (the origin itself), `…-Allow-Credentials` and
//! `…-Expose-Headers`.

use ambit_api::istio::virtual_service::{CorsPolicy, UnmatchedPreflights};
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};

use crate::matcher::{MatchError, StringMatcher};

/// A `corsPolicy` that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum CorsError {
    #[error(transparent)]
    Origin(#[from] MatchError),
    #[error("`{field}` holds a character a header cannot carry: remove control characters")]
    Value { field: String },
}

/// One route's compiled `corsPolicy`.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Vec<StringMatcher>,
    methods: Option<HeaderValue>,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
    ignore_unmatched: bool,
}

/// What the waypoint does with a preflight request.
#[derive(Debug, PartialEq, Eq)]
pub enum Preflight {
    /// Answer it with these headers.
    Answer(HeaderMap),
    /// Not a preflight this policy answers: route it as any request.
    Forward,
}

impl Cors {
    /// Compiles `spec`, the `corsPolicy` at `field`.
    pub fn compile(field: &str, spec: &CorsPolicy) -> Result<Self, Vec<CorsError>> {
        let mut errors = Vec::new();
        let mut origins: Vec<StringMatcher> = spec
            .allow_origins
            .iter()
            .enumerate()
            .filter_map(|(i, origin)| {
                StringMatcher::compile(&format!("{field}.allowOrigins[{i}]"), origin, false)
                    .map_err(|e| errors.push(e.into()))
                    .ok()
            })
            .collect();
        origins.extend(spec.allow_origin.iter().map(|origin| {
            if origin == "*" {
                StringMatcher::Present
            } else {
                StringMatcher::Exact(origin.clone())
            }
        }));
        let mut joined = |name: &str, values: &[String]| {
            (!values.is_empty())
                .then(|| HeaderValue::from_str(&values.join(",")))
                .transpose()
                .map_err(|_| {
                    errors.push(CorsError::Value {
                        field: format!("{field}.{name}"),
                    });
                })
                .ok()
                .flatten()
        };
        let methods = joined("allowMethods", &spec.allow_methods);
        let headers = joined("allowHeaders", &spec.allow_headers);
        let expose = joined("exposeHeaders", &spec.expose_headers);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            origins,
            methods,
            headers,
            expose,
            max_age: spec
                .max_age
                .map(|age| HeaderValue::from(age.get().as_secs())),
            credentials: spec.allow_credentials == Some(true),
            ignore_unmatched: spec.unmatched_preflights == Some(UnmatchedPreflights::Ignore),
        })
    }

    /// How to handle a request with `method` and `headers` if it is a preflight;
    /// `None` when it is not one.
    #[must_use]
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Preflight> {
        let origin = headers.get(header::ORIGIN)?;
        if method != Method::OPTIONS || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        if !self.allows(origin) {
            return Some(if self.ignore_unmatched {
                Preflight::Answer(HeaderMap::new())
            } else {
                Preflight::Forward
            });
        }
        let mut answer = self.origin_headers(origin);
        let optional = [
            (header::ACCESS_CONTROL_ALLOW_METHODS, &self.methods),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, &self.headers),
            (header::ACCESS_CONTROL_MAX_AGE, &self.max_age),
        ];
        insert_set(&mut answer, optional);
        Some(Preflight::Answer(answer))
    }

    /// Adds the CORS headers to the response to a request from an allowed `origin`.
    pub fn decorate(&self, origin: Option<&HeaderValue>, response: &mut HeaderMap) {
        let Some(origin) = origin.filter(|origin| self.allows(origin)) else {
            return;
        };
        response.extend(self.origin_headers(origin));
        insert_set(
            response,
            [(header::ACCESS_CONTROL_EXPOSE_HEADERS, &self.expose)],
        );
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        origin
            .to_str()
            .is_ok_and(|origin| self.origins.iter().any(|m| m.matches(origin)))
    }

    fn origin_headers(&self, origin: &HeaderValue) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers
    }
}

fn insert_set<const N: usize>(
    headers: &mut HeaderMap,
    values: [(HeaderName, &Option<HeaderValue>); N],
) {
    for (name, value) in values {
        if let Some(value) = value {
            headers.insert(name, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(yaml: &str) -> Cors {
        let spec: CorsPolicy = serde_yaml_ng::from_str(yaml).expect("the test policy is YAML");
        Cors::compile("http[0].corsPolicy", &spec).expect("the test policy compiles")
    }

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    const POLICY: &str = "{allowOrigins: [{exact: 'https://shop.example'}, {regex: 'https://.*\\.dev\\.example'}], allowMethods: [GET, POST], allowHeaders: [x-user], exposeHeaders: [x-trace], maxAge: 1h, allowCredentials: true}";

    #[test]
    fn a_preflight_from_an_allowed_origin_is_answered() {
        let cors = cors(POLICY);
        let headers = request(&[
            ("origin", "https://a.dev.example"),
            ("access-control-request-method", "POST"),
        ]);
        let Some(Preflight::Answer(answer)) = cors.preflight(&Method::OPTIONS, &headers) else {
            panic!("expected an answered preflight");
        };
        assert_eq!(
            answer["access-control-allow-origin"],
            "https://a.dev.example"
        );
        assert_eq!(answer["access-control-allow-methods"], "GET,POST");
        assert_eq!(answer["access-control-allow-headers"], "x-user");
        assert_eq!(answer["access-control-max-age"], "3600");
        assert_eq!(answer["access-control-allow-credentials"], "true");
        assert_eq!(
            cors.preflight(&Method::GET, &headers),
            None,
            "only OPTIONS is a preflight"
        );
    }

    #[test]
    fn a_preflight_from_another_origin_is_forwarded_or_ignored() {
        let headers = request(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ]);
        assert_eq!(
            cors(POLICY).preflight(&Method::OPTIONS, &headers),
            Some(Preflight::Forward)
        );
        let ignoring = cors("{allowOrigin: ['https://shop.example'], unmatchedPreflights: IGNORE}");
        assert_eq!(
            ignoring.preflight(&Method::OPTIONS, &headers),
            Some(Preflight::Answer(HeaderMap::new()))
        );
    }

    #[test]
    fn responses_to_allowed_origins_get_the_cors_headers() {
        let cors = cors(POLICY);
        let mut response = HeaderMap::new();
        cors.decorate(
            Some(&HeaderValue::from_static("https://shop.example")),
            &mut response,
        );
        assert_eq!(
            response["access-control-allow-origin"],
            "https://shop.example"
        );
        assert_eq!(response["access-control-expose-headers"], "x-trace");
        let mut untouched = HeaderMap::new();
        cors.decorate(
            Some(&HeaderValue::from_static("https://evil.example")),
            &mut untouched,
        );
        cors.decorate(None, &mut untouched);
        assert!(untouched.is_empty(), "{untouched:?}");
    }
}
