//! The value sets of AuthorizationPolicy fields, as ztunnel (L4) and the waypoint (L7)
//! both match them: Istio's string patterns (`exact`, `prefix*`, `*suffix`, `*`) and IP
//! blocks, each with its negated twin (`principals` / `notPrincipals`).

use std::net::IpAddr;

use crate::ip_block::{self, IpBlockError, IpNet};

/// An IP block field that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {source}")]
pub struct BlocksError {
    pub field: String,
    #[source]
    pub source: IpBlockError,
}

/// Istio's policy string match: exact, `prefix*`, `*suffix`, or `*` (any value, which
/// must still be present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl Pattern {
    /// Reads a pattern; `lowercase` for values compared without case (hosts).
    #[must_use]
    pub fn new(text: &str, lowercase: bool) -> Self {
        let text = if lowercase {
            text.to_ascii_lowercase()
        } else {
            text.to_owned()
        };
        if text == "*" {
            Self::Any
        } else if let Some(prefix) = text.strip_suffix('*') {
            Self::Prefix(prefix.to_owned())
        } else if let Some(suffix) = text.strip_prefix('*') {
            Self::Suffix(suffix.to_owned())
        } else {
            Self::Exact(text)
        }
    }

    #[must_use]
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => value == exact,
            Self::Prefix(prefix) => value.starts_with(prefix.as_str()),
            Self::Suffix(suffix) => value.ends_with(suffix.as_str()),
        }
    }
}

/// A field and its negation (`methods` / `notMethods`): the attribute must match one
/// of `any` (when given) and none of `none`. An attribute may have several values (a
/// token's audiences, a list claim) or none (no peer identity, no token): with none, a
/// positive field fails and a negative one holds.
#[derive(Debug, Clone, Default)]
pub struct Strings {
    any: Vec<Pattern>,
    none: Vec<Pattern>,
}

impl Strings {
    #[must_use]
    pub fn new(any: &[String], none: &[String], lowercase: bool) -> Self {
        let read = |texts: &[String]| texts.iter().map(|t| Pattern::new(t, lowercase)).collect();
        Self {
            any: read(any),
            none: read(none),
        }
    }

    /// Whether `values` (all of the attribute's values) satisfy the field.
    #[must_use]
    pub fn matches<'v>(&self, values: impl IntoIterator<Item = &'v str> + Clone) -> bool {
        let hit = |patterns: &[Pattern]| {
            values
                .clone()
                .into_iter()
                .any(|value| patterns.iter().any(|p| p.matches(value)))
        };
        (self.any.is_empty() || hit(&self.any)) && !hit(&self.none)
    }
}

/// IP blocks and their negation (`ipBlocks` / `notIpBlocks`).
#[derive(Debug, Clone, Default)]
pub struct Blocks {
    any: Vec<IpNet>,
    none: Vec<IpNet>,
}

impl Blocks {
    /// Reads addresses and CIDRs; `field` names them in errors.
    ///
    /// # Errors
    /// A text that is neither an address nor a CIDR.
    pub fn new(field: &str, any: &[String], none: &[String]) -> Result<Self, BlocksError> {
        let read = |texts: &[String]| {
            texts
                .iter()
                .map(|text| {
                    ip_block::parse(text).map_err(|source| BlocksError {
                        field: field.to_owned(),
                        source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            any: read(any)?,
            none: read(none)?,
        })
    }

    #[must_use]
    pub fn matches(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        (self.any.is_empty() || self.any.iter().any(|net| net.contains(&ip)))
            && !self.none.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(any: &[&str], none: &[&str]) -> Strings {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Strings::new(&owned(any), &owned(none), false)
    }

    #[test]
    fn patterns_are_exact_prefix_suffix_or_any() {
        let field = strings(&["/api/*", "*.png", "/health"], &[]);
        for (value, expected) in [
            ("/api/v1", true),
            ("/logo.png", true),
            ("/health", true),
            ("/healthz", false),
            ("/other", false),
        ] {
            assert_eq!(field.matches([value]), expected, "`{value}`");
        }
        assert!(strings(&["*"], &[]).matches(["anything"]));
        assert!(
            !strings(&["*"], &[]).matches([]),
            "`*` needs the attribute to be present"
        );
    }

    #[test]
    fn a_negated_field_holds_for_absent_values_and_fails_on_any_match() {
        let field = strings(&[], &["/admin*"]);
        assert!(field.matches(["/shop"]));
        assert!(!field.matches(["/admin/users"]));
        assert!(field.matches([]), "no value matches no notValue");
        assert!(
            !strings(&[], &["a"]).matches(["b", "a"]),
            "any value counts"
        );
    }

    #[test]
    fn blocks_take_addresses_and_cidrs() {
        let blocks = Blocks::new("ipBlocks", &["10.0.0.0/8".into()], &["10.1.0.0/16".into()])
            .expect("valid blocks");
        let ip = |text: &str| text.parse::<IpAddr>().expect("an address");
        assert!(blocks.matches(ip("10.2.3.4")));
        assert!(!blocks.matches(ip("10.1.3.4")));
        assert!(!blocks.matches(ip("192.168.0.1")));
        assert!(
            blocks.matches(ip("::ffff:10.2.3.4")),
            "an IPv4-mapped peer is its IPv4 address"
        );
        let error = Blocks::new("ipBlocks", &["shop".into()], &[]).expect_err("not a block");
        assert!(error.to_string().contains("`ipBlocks`"), "{error}");
    }
}
