//! Rules for values that appear in many places: ports, percentages, regexes, string
//! matches, route weights, Gateway API host names. Each takes the field path it reports
//! at.

use std::{collections::BTreeMap, net::IpAddr};

use ambit_api::istio::{Percent, StringMatch};

use super::{Findings, Reason};

/// `parent.key`, or `parent["key"]` when the key is not a plain name (label and header
/// names such as `app.kubernetes.io/name`).
pub(super) fn key_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}

/// A port number, when given, is in 1..=65535.
pub(super) fn port(findings: &mut Findings, path: &str, port: Option<u32>) {
    if let Some(port) = port
        && !(1..=65_535).contains(&port)
    {
        findings.add(path, Reason::PortOutOfRange(port));
    }
}

/// A `Percent` message, when given, holds 0..=100 (reported at `path.value`).
pub(super) fn percentage(findings: &mut Findings, path: &str, percent: Option<&Percent>) {
    if let Some(percent) = percent {
        percent_value(findings, &format!("{path}.value"), percent.value);
    }
}

/// A plain number that is a percentage.
pub(super) fn percent_value(findings: &mut Findings, path: &str, value: f64) {
    if !(0.0..=100.0).contains(&value) {
        findings.add(path, Reason::PercentOutOfRange(value));
    }
}

/// A signed count, when given, is not negative.
pub(super) fn non_negative(findings: &mut Findings, path: &str, value: Option<i32>) {
    if let Some(value) = value
        && value < 0
    {
        findings.add(path, Reason::Negative(value.into()));
    }
}

/// A Gateway API host name (a listener's `hostname`, a route's `hostnames`) is what the
/// CRDs' pattern allows — a DNS name of lowercase labels, `*.` first for any one label —
/// and not an IP address, which the Gateway API forbids there (TLS and HTTP clients
/// send no IP address as a server name). A port has no place in it either.
pub(super) fn hostname(findings: &mut Findings, path: &str, hostname: &str) {
    let name = hostname.strip_prefix("*.").unwrap_or(hostname);
    let label = |label: &str| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if !name.split('.').all(label) || name.parse::<IpAddr>().is_ok() {
        findings.add(
            path,
            Reason::Conflict(format!(
                "`{hostname}` is not a host name: write `example.com` or `*.example.com`, in lowercase, without a port; an IP address is not one"
            )),
        );
    }
}

/// A required string is not empty.
pub(super) fn required(findings: &mut Findings, path: &str, value: &str, hint: &'static str) {
    if value.is_empty() {
        findings.add(path, Reason::Required(hint));
    }
}

/// A deprecated field, when given, earns a warning.
pub(super) fn deprecated(findings: &mut Findings, path: &str, given: bool, instead: &'static str) {
    if given {
        findings.add(path, Reason::Deprecated(instead));
    }
}

/// `pattern` compiles. Istio's proxies use RE2; the `regex` crate's syntax is the same
/// for everything RE2 accepts (neither has backreferences or look-around).
pub(super) fn regex(findings: &mut Findings, path: &str, pattern: &str) {
    if let Err(error) = regex::Regex::new(pattern) {
        // A syntax error prints the pattern with a caret; its last line says what is wrong.
        let text = error.to_string();
        let why = text.lines().last().unwrap_or(&text);
        let why = why.strip_prefix("error: ").unwrap_or(why);
        findings.add(
            path,
            Reason::InvalidRegex {
                pattern: pattern.to_owned(),
                error: why.to_owned(),
            },
        );
    }
}

/// A `uri`, `scheme`, `method` or `authority` match: not `{}`, and a regex compiles.
pub(super) fn string_match(findings: &mut Findings, path: &str, matcher: Option<&StringMatch>) {
    match matcher {
        Some(StringMatch::Present) => findings.add(path, Reason::EmptyMatch),
        Some(StringMatch::Regex(pattern)) => regex(findings, &format!("{path}.regex"), pattern),
        _ => {}
    }
}

/// A `headers` / `queryParams` map: each regex compiles (`{}` means "present").
pub(super) fn string_match_map(
    findings: &mut Findings,
    path: &str,
    map: &BTreeMap<String, StringMatch>,
) {
    for (key, matcher) in map {
        if let Some(pattern) = matcher.regex() {
            regex(findings, &format!("{}.regex", key_path(path, key)), pattern);
        }
    }
}

/// The weights of one route's destinations (reported at `path`, the `route` list):
/// none negative; a single destination needs none; otherwise they sum to 100.
pub(super) fn weights(findings: &mut Findings, path: &str, weights: &[Option<i32>]) {
    let mut negative = false;
    for (index, weight) in weights.iter().enumerate() {
        if let Some(weight) = *weight
            && weight < 0
        {
            findings.add(
                format!("{path}[{index}].weight"),
                Reason::Negative(weight.into()),
            );
            negative = true;
        }
    }
    if negative {
        return;
    }
    if weights.iter().all(Option::is_none) {
        if weights.len() > 1 {
            findings.add(path, Reason::WeightsMissing(weights.len()));
        }
        return;
    }
    let sum: i64 = weights.iter().flatten().map(|w| i64::from(*w)).sum();
    if sum != 100 {
        findings.add(path, Reason::WeightSum(sum));
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The findings as `(path, message)` pairs, for exact comparison.
    pub(crate) fn found(findings: Findings) -> Vec<(String, String)> {
        findings
            .0
            .into_iter()
            .map(|(path, reason)| (path, reason.to_string()))
            .collect()
    }

    fn pair(path: &str, message: &str) -> (String, String) {
        (path.to_owned(), message.to_owned())
    }

    #[test]
    fn key_paths_quote_keys_that_are_not_plain_names() {
        assert_eq!(key_path("spec", "hosts"), "spec.hosts");
        assert_eq!(key_path("a.labels", "end-user"), "a.labels.end-user");
        assert_eq!(
            key_path("a.labels", "app.io/name"),
            "a.labels[\"app.io/name\"]"
        );
    }

    #[test]
    fn weights_must_sum_to_100_when_given() {
        let check = |given: &[Option<i32>]| {
            let mut findings = Findings::default();
            weights(&mut findings, "r", given);
            found(findings)
        };
        assert_eq!(check(&[None]), []);
        assert_eq!(check(&[Some(100)]), []);
        assert_eq!(check(&[Some(50), Some(50)]), []);
        assert_eq!(check(&[Some(100), Some(0)]), []);
        assert_eq!(check(&[]), []);
        assert_eq!(
            check(&[Some(50), Some(40)]),
            [pair("r", "weights sum to 90, they must sum to 100")]
        );
        assert_eq!(
            check(&[Some(60), None]),
            [pair("r", "weights sum to 60, they must sum to 100")]
        );
        assert_eq!(
            check(&[None, None]),
            [pair(
                "r",
                "2 destinations and no weights: give each a `weight`, so they sum to 100"
            )]
        );
        assert_eq!(
            check(&[Some(110), Some(-10)]),
            [pair("r[1].weight", "-10 is negative: it must be 0 or more")]
        );
    }

    #[test]
    fn ports_and_percentages_have_ranges() {
        let mut findings = Findings::default();
        port(&mut findings, "p", Some(80));
        port(&mut findings, "p", None);
        port(&mut findings, "p0", Some(0));
        port(&mut findings, "p1", Some(65_536));
        percentage(&mut findings, "ok", Some(&Percent { value: 0.5 }));
        percentage(&mut findings, "high", Some(&Percent { value: 100.5 }));
        percent_value(&mut findings, "low", -1.0);
        non_negative(&mut findings, "n", Some(-3));
        non_negative(&mut findings, "n", Some(0));
        assert_eq!(
            found(findings),
            [
                pair("p0", "port 0 is out of range: use 1 to 65535"),
                pair("p1", "port 65536 is out of range: use 1 to 65535"),
                pair(
                    "high.value",
                    "100.5 is not a percentage: use a value from 0 to 100"
                ),
                pair("low", "-1 is not a percentage: use a value from 0 to 100"),
                pair("n", "-3 is negative: it must be 0 or more"),
            ]
        );
    }

    #[test]
    fn host_names_are_dns_names_or_wildcards_without_ports_or_ip_addresses() {
        let mut findings = Findings::default();
        for good in ["example.com", "*.example.com", "a-1.b", "localhost"] {
            hostname(&mut findings, good, good);
        }
        let bad = [
            "",
            "*",
            "a.*.com",
            "a.com:443",
            "10.0.0.1",
            "::1",
            "Shop.com",
            "-a.b",
        ];
        for bad in bad {
            hostname(&mut findings, bad, bad);
        }
        let reported: Vec<String> = found(findings).into_iter().map(|(path, _)| path).collect();
        assert_eq!(
            reported, bad,
            "the good ones pass, each bad one is reported"
        );
    }

    #[test]
    fn a_regex_that_does_not_compile_is_reported_with_the_reason() {
        let mut findings = Findings::default();
        regex(&mut findings, "ok", "^/api/v[0-9]+(/.*)?$");
        regex(&mut findings, "bad", "/api/(v1");
        assert_eq!(
            found(findings),
            [pair(
                "bad",
                "`/api/(v1` is not a valid regular expression (RE2 syntax): unclosed group"
            )]
        );
    }

    #[test]
    fn string_matches_reject_empty_outside_headers_and_check_regexes() {
        let mut findings = Findings::default();
        string_match(&mut findings, "uri", Some(&StringMatch::Prefix("/".into())));
        string_match(&mut findings, "uri", Some(&StringMatch::Present));
        string_match(
            &mut findings,
            "method",
            Some(&StringMatch::Regex("GET|(".into())),
        );
        let headers = BTreeMap::from([
            ("end-user".to_owned(), StringMatch::Present),
            ("x-id".to_owned(), StringMatch::Regex("[".into())),
        ]);
        string_match_map(&mut findings, "headers", &headers);
        let found = found(findings);
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["uri", "method.regex", "headers.x-id.regex"]);
        assert!(found[0].1.starts_with("matches nothing"), "{found:?}");
    }
}
