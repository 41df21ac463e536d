//! `loadBalancer.consistentHash`: session affinity by hashing one property of the
//! request onto a ring of the cluster's endpoints, as Envoy's ring-hash balancer does.
//!
//! Each endpoint owns `ceil(ring size / endpoints)` points, placed by hashing
//! `<address>_<n>`; a request goes to the owner of the first point at or after its hash.
//! An endpoint that cannot take the request (ejected, of a locality not in use, already
//! tried by this request) is stepped over, so only the keys that hashed to it move, to
//! the next endpoint on the ring, and they come back when it does. An endpoint that
//! leaves the service takes its keys with it and, as in Envoy, the others' share of
//! points grows to keep the ring's size, which moves a few of their keys too.
//!
//! The key, as Envoy computes it for Istio: a header's value (several values sorted and
//! hashed together), a cookie's, the client's IP, or a query parameter's first value. A
//! request without it is placed at random. A cookie absent from a request is generated
//! when `httpCookie.ttl` is set: the request is hashed on the new value and the response
//! carries it (`Set-Cookie: name="value"; Max-Age=ttl; Path=path; HttpOnly`, a session
//! cookie when `ttl` is 0), so the client's next requests stick.
//!
//! One algorithm serves both of Istio's: `maglev.tableSize` sizes the ring as
//! `ringHash.minimumRingSize` does (a hash ring moves no key it need not move; Maglev
//! trades a few such moves for an even spread).

use std::{net::IpAddr, time::Duration};

use ambit_api::istio::destination_rule::ConsistentHashLb;
use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::headers::HeaderError;

/// Envoy's default `minimum_ring_size`, which Istio keeps.
pub const DEFAULT_RING_SIZE: u64 = 1024;
/// Envoy's default `maximum_ring_size`: the most points a ring gets.
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;

/// What a cluster hashes requests on, and over how large a ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashPolicy {
    key: HashKey,
    ring_size: u64,
}

/// The request property hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HashKey {
    Header(HeaderName),
    Cookie(CookieKey),
    SourceIp,
    QueryParameter(String),
}

/// `httpCookie`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CookieKey {
    name: String,
    path: String,
    /// Generate the cookie with this lifetime when a request has none.
    ttl: Option<Duration>,
}

/// One request's place on the ring, and the cookie to give the client if one was made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHash {
    /// `None`: the request lacks the key (it is placed at random).
    pub hash: Option<u64>,
    /// A `Set-Cookie` value for the response.
    pub set_cookie: Option<HeaderValue>,
}

/// The parts of a request a key is read from.
#[derive(Debug, Clone, Copy)]
pub struct RequestKeys<'r> {
    pub headers: &'r HeaderMap,
    pub query: Option<&'r str>,
    pub source: IpAddr,
}

impl HashPolicy {
    /// The policy `spec` describes; `Ok(None)` when it names nothing to hash (the
    /// controller refuses that).
    ///
    /// # Errors
    /// `httpHeaderName` is not a header name; `field` locates it.
    pub fn new(spec: &ConsistentHashLb, field: &str) -> Result<Option<Self>, HeaderError> {
        let key = if let Some(name) = &spec.http_header_name {
            HeaderName::from_bytes(name.as_bytes())
                .map(HashKey::Header)
                .map_err(|_| HeaderError::Name {
                    field: format!("{field}.httpHeaderName"),
                    name: name.clone(),
                })?
        } else if let Some(cookie) = &spec.http_cookie {
            HashKey::Cookie(CookieKey {
                name: cookie.name.clone(),
                path: cookie.path.clone(),
                ttl: cookie.ttl.map(|ttl| ttl.0),
            })
        } else if spec.use_source_ip == Some(true) {
            HashKey::SourceIp
        } else if let Some(name) = &spec.http_query_parameter_name {
            HashKey::QueryParameter(name.clone())
        } else {
            return Ok(None);
        };
        let ring_size = spec
            .ring_hash
            .as_ref()
            .and_then(|ring| ring.minimum_ring_size)
            .or(spec.minimum_ring_size)
            .or_else(|| spec.maglev.as_ref().and_then(|maglev| maglev.table_size))
            .filter(|size| *size > 0)
            .unwrap_or(DEFAULT_RING_SIZE)
            .min(MAX_RING_SIZE);
        Ok(Some(Self { key, ring_size }))
    }

    /// Where `request` falls on the ring.
    #[must_use]
    pub fn hash(&self, request: RequestKeys<'_>) -> RequestHash {
        let hash = match &self.key {
            HashKey::Header(name) => {
                let mut values: Vec<&[u8]> = request
                    .headers
                    .get_all(name)
                    .iter()
                    .map(HeaderValue::as_bytes)
                    .collect();
                values.sort_unstable();
                (!values.is_empty()).then(|| hash64(&values))
            }
            HashKey::Cookie(cookie) => {
                return match cookie_value(request.headers, &cookie.name) {
                    Some(value) => RequestHash {
                        hash: Some(hash64(&[value.as_bytes()])),
                        set_cookie: None,
                    },
                    None => cookie.generate(),
                };
            }
            HashKey::SourceIp => Some(hash64(&[request.source.to_string().as_bytes()])),
            HashKey::QueryParameter(name) => request
                .query
                .and_then(|query| query_value(query, name))
                .map(|value| hash64(&[value.as_bytes()])),
        };
        RequestHash {
            hash,
            set_cookie: None,
        }
    }

    /// How many points the ring of this policy's cluster gets.
    #[must_use]
    pub fn ring_size(&self) -> u64 {
        self.ring_size
    }
}

impl CookieKey {
    /// A new cookie when `ttl` is set (Envoy's), else no hash.
    fn generate(&self) -> RequestHash {
        let Some(ttl) = self.ttl else {
            return RequestHash::default();
        };
        let value = format!("{:016x}", fastrand::u64(..));
        let mut set_cookie = format!("{}=\"{value}\"", self.name);
        if !ttl.is_zero() {
            set_cookie.push_str(&format!("; Max-Age={}", ttl.as_secs().max(1)));
        }
        if !self.path.is_empty() {
            set_cookie.push_str(&format!("; Path={}", self.path));
        }
        set_cookie.push_str("; HttpOnly");
        RequestHash {
            hash: Some(hash64(&[value.as_bytes()])),
            set_cookie: HeaderValue::try_from(set_cookie).ok(),
        }
    }
}

/// The value of the first cookie called `name` in the request's `Cookie` headers,
/// without surrounding quotes.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key.trim() == name).then(|| {
                let value = value.trim();
                value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value)
            })
        })
}

/// The first value of the query parameter `name`, as written.
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// The endpoints' points on the ring, sorted by hash.
#[derive(Debug, Default)]
pub struct Ring {
    /// `(hash, endpoint index)`.
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// A ring of at least `size` points (at least one per endpoint) over endpoints with
    /// these names (their addresses).
    #[must_use]
    pub fn new(names: &[String], size: u64) -> Self {
        let Ok(count) = u64::try_from(names.len()) else {
            return Self::default();
        };
        if count == 0 {
            return Self::default();
        }
        let per_endpoint = size.div_ceil(count).max(1);
        let mut points: Vec<(u64, usize)> = names
            .iter()
            .enumerate()
            .flat_map(|(index, name)| {
                (0..per_endpoint).map(move |n| (hash64(&[format!("{name}_{n}").as_bytes()]), index))
            })
            .collect();
        points.sort_unstable();
        Self { points }
    }

    /// The endpoint indices met going round the ring from `hash` (each many times).
    pub fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|(point, _)| *point < hash);
        self.points[start..]
            .iter()
            .chain(&self.points[..start])
            .map(|(_, index)| *index)
    }
}

/// A stable 64-bit hash of the concatenated `parts` (FNV-1a, then MurmurHash3's
/// finaliser to spread the bits): every waypoint replica, of any build, places a key
/// at the same point.
#[must_use]
pub fn hash64(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = parts
        .iter()
        .flat_map(|part| part.iter())
        .fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
        });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn policy(yaml: &str) -> HashPolicy {
        let spec: ConsistentHashLb = serde_yaml_ng::from_str(yaml).expect("test spec is YAML");
        HashPolicy::new(&spec, "consistentHash")
            .expect("valid")
            .expect("names a key")
    }

    fn keys<'r>(headers: &'r HeaderMap, query: Option<&'r str>) -> RequestKeys<'r> {
        RequestKeys {
            headers,
            query,
            source: IpAddr::from([198, 18, 0, 7]),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    fn names(count: usize) -> Vec<String> {
        (1..=count).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    /// The owner (by name) of each of `count` keys.
    fn owners(ring: &Ring, names: &[String], count: u64) -> Vec<String> {
        (0..count)
            .map(|key| {
                let index = ring.walk(hash64(&[&key.to_be_bytes()])).next().unwrap();
                names[index].clone()
            })
            .collect()
    }

    #[test]
    fn each_key_reads_its_request_property() {
        let sent = headers(&[("x-user", "ana"), ("cookie", "theme=dark; session=\"abc\"")]);
        let hash_of = |value: &str| Some(hash64(&[value.as_bytes()]));
        let by_header = policy("{httpHeaderName: X-User}");
        assert_eq!(by_header.hash(keys(&sent, None)).hash, hash_of("ana"));
        let by_cookie = policy("{httpCookie: {name: session, ttl: 60s}}");
        let hashed = by_cookie.hash(keys(&sent, None));
        assert_eq!(
            hashed.hash,
            hash_of("abc"),
            "quotes are not part of the value"
        );
        assert_eq!(hashed.set_cookie, None, "a present cookie is not set again");
        let by_query = policy("{httpQueryParameterName: user}");
        assert_eq!(
            by_query.hash(keys(&sent, Some("a=1&user=bo&user=cy"))).hash,
            hash_of("bo")
        );
        assert_eq!(by_query.hash(keys(&sent, Some("users=bo"))).hash, None);
        let by_ip = policy("{useSourceIp: true}");
        assert_eq!(by_ip.hash(keys(&sent, None)).hash, hash_of("198.18.0.7"));
        assert_eq!(
            by_header.hash(keys(&HeaderMap::new(), None)),
            RequestHash::default(),
            "a request without the header has no hash"
        );
    }

    #[test]
    fn several_header_values_hash_alike_in_any_order() {
        let policy = policy("{httpHeaderName: x-user}");
        let one = headers(&[("x-user", "a"), ("x-user", "b")]);
        let other = headers(&[("x-user", "b"), ("x-user", "a")]);
        assert_eq!(
            policy.hash(keys(&one, None)).hash,
            policy.hash(keys(&other, None)).hash
        );
    }

    #[test]
    fn a_missing_cookie_with_a_ttl_is_generated_and_hashed_on() {
        let policy = policy("{httpCookie: {name: sticky, path: /shop, ttl: 1h}}");
        let first = policy.hash(keys(&HeaderMap::new(), None));
        let set_cookie = first
            .set_cookie
            .expect("a cookie is generated")
            .to_str()
            .unwrap()
            .to_owned();
        let value = set_cookie
            .strip_prefix("sticky=\"")
            .and_then(|rest| rest.split_once('"'))
            .map(|(value, _)| value.to_owned())
            .unwrap_or_else(|| panic!("unexpected Set-Cookie `{set_cookie}`"));
        assert!(
            set_cookie.ends_with("; Max-Age=3600; Path=/shop; HttpOnly"),
            "{set_cookie}"
        );
        // The client sends it back: the same hash, no new cookie.
        let mut returned = HeaderMap::new();
        returned.insert(
            header::COOKIE,
            HeaderValue::try_from(format!("sticky={value}")).unwrap(),
        );
        let again = policy.hash(keys(&returned, None));
        assert_eq!(again.hash, first.hash);
        assert_eq!(again.set_cookie, None);

        let session = self::policy("{httpCookie: {name: s, ttl: 0s}}");
        let cookie = session
            .hash(keys(&HeaderMap::new(), None))
            .set_cookie
            .unwrap();
        assert!(
            !cookie.to_str().unwrap().contains("Max-Age"),
            "ttl 0 makes a session cookie: {cookie:?}"
        );
        let no_ttl = self::policy("{httpCookie: {name: s}}");
        assert_eq!(
            no_ttl.hash(keys(&HeaderMap::new(), None)),
            RequestHash::default(),
            "without a ttl no cookie is made"
        );
    }

    #[test]
    fn ring_sizes_come_from_ring_hash_or_maglev_within_bounds() {
        assert_eq!(policy("{useSourceIp: true}").ring_size(), DEFAULT_RING_SIZE);
        assert_eq!(
            policy("{useSourceIp: true, ringHash: {minimumRingSize: 64}}").ring_size(),
            64
        );
        assert_eq!(
            policy("{useSourceIp: true, maglev: {tableSize: 65537}}").ring_size(),
            65537
        );
        assert_eq!(
            policy("{useSourceIp: true, ringHash: {minimumRingSize: 100000000}}").ring_size(),
            MAX_RING_SIZE
        );
        let bad: ConsistentHashLb = serde_yaml_ng::from_str("{httpHeaderName: 'x user'}").unwrap();
        assert!(HashPolicy::new(&bad, "lb").is_err());
    }

    #[test]
    fn keys_spread_over_every_endpoint() {
        let names = names(4);
        let ring = Ring::new(&names, DEFAULT_RING_SIZE);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for owner in owners(&ring, &names, 4000) {
            *counts.entry(owner).or_default() += 1;
        }
        for name in &names {
            let share = counts.get(name).copied().unwrap_or(0);
            assert!(
                (700..=1300).contains(&share),
                "{name} owns {share} of 4000 keys, expected about 1000: {counts:?}"
            );
        }
    }

    #[test]
    fn removing_an_endpoint_moves_its_keys_and_few_others() {
        let all = names(5);
        let before = owners(&Ring::new(&all, DEFAULT_RING_SIZE), &all, 5000);
        let rest: Vec<String> = all.iter().filter(|n| *n != &all[2]).cloned().collect();
        let after = owners(&Ring::new(&rest, DEFAULT_RING_SIZE), &rest, 5000);
        let (mut theirs, mut others_moved) = (0, 0);
        for (was, is) in before.iter().zip(&after) {
            if was == &all[2] {
                theirs += 1;
            } else if was != is {
                others_moved += 1;
            }
        }
        assert!(
            theirs > 500,
            "the removed endpoint owned only {theirs} keys"
        );
        // Hashing modulo the endpoint count would move about 4 in 5 of them.
        let kept = 5000 - theirs;
        assert!(
            others_moved * 5 < kept,
            "{others_moved} of the {kept} keys of the remaining endpoints moved"
        );
    }
}
