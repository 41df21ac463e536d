//! Durations as Istio writes them: a sequence of decimal numbers, each with a unit, as
//! Go's `time.ParseDuration` reads them (`10s`, `1.5s`, `250ms`, `1m`, `1h30m`, `0`).
//! Protobuf's JSON form (`"1.500s"`) is a special case of that.

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A non-negative span of time, read from Istio's text form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration: write a number and a unit, for example `1.5s` or `250ms`")]
    Empty,
    #[error("`{0}` is negative: durations must be 0 or more")]
    Negative(String),
    #[error("`{0}` is not a duration: write a number and a unit, for example `1.5s` or `250ms`")]
    Malformed(String),
    #[error("`{text}` has no unit after `{number}`: add one of h, m, s, ms, us or ns")]
    MissingUnit { text: String, number: String },
    #[error("`{text}` has an unknown unit `{unit}`: use h, m, s, ms, us or ns")]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}` is too long: a duration must be under 584 years")]
    Overflow(String),
}

impl Duration {
    /// The duration as a [`std::time::Duration`].
    #[must_use]
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(duration: std::time::Duration) -> Self {
        Self(duration)
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let owned = || text.to_owned();
        if text.is_empty() {
            return Err(DurationError::Empty);
        }
        if text.starts_with('-') {
            return Err(DurationError::Negative(owned()));
        }
        if text.contains(char::is_whitespace) {
            return Err(DurationError::Malformed(owned()));
        }
        if text == "0" {
            return Ok(Self::default());
        }
        let mut rest = text;
        let mut total_nanos: u64 = 0;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, after) = rest.split_at(number_len);
            if number.is_empty() || number == "." || number.matches('.').count() > 1 {
                return Err(DurationError::Malformed(owned()));
            }
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            if unit.is_empty() {
                return Err(DurationError::MissingUnit {
                    text: owned(),
                    number: number.to_owned(),
                });
            }
            let unit_nanos = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
                text: owned(),
                unit: unit.to_owned(),
            })?;
            let nanos =
                scaled(number, unit_nanos).ok_or_else(|| DurationError::Overflow(owned()))?;
            total_nanos = total_nanos
                .checked_add(nanos)
                .ok_or_else(|| DurationError::Overflow(owned()))?;
            rest = after;
        }
        Ok(Self(std::time::Duration::from_nanos(total_nanos)))
    }
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// `number` (digits with at most one `.`) times `unit_nanos`, truncated to whole
/// nanoseconds; `None` on overflow.
fn scaled(number: &str, unit_nanos: u64) -> Option<u64> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos = whole.checked_mul(unit_nanos)?;
    // Each fractional digit is worth a tenth of the one before it.
    let mut place = unit_nanos;
    for digit in fraction.bytes() {
        place /= 10;
        if place == 0 {
            break;
        }
        nanos = nanos.checked_add(u64::from(digit - b'0') * place)?;
    }
    Some(nanos)
}

/// Protobuf's JSON form: seconds with as many fractional digits as needed (`1.5s`).
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if nanos == 0 {
            write!(f, "{secs}s")
        } else {
            let fraction = format!("{nanos:09}");
            write!(f, "{secs}.{}s", fraction.trim_end_matches('0'))
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, such as `1.5s` or `250ms`")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as `1.5s`, `250ms`, `1m` or `1h30m`."
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as Std;

    use super::*;

    fn parse(text: &str) -> Result<Std, DurationError> {
        text.parse::<Duration>().map(Duration::get)
    }

    #[test]
    fn reads_the_forms_istio_users_write() {
        assert_eq!(parse("10s"), Ok(Std::from_secs(10)));
        assert_eq!(parse("1.5s"), Ok(Std::from_millis(1_500)));
        assert_eq!(parse("250ms"), Ok(Std::from_millis(250)));
        assert_eq!(parse("1m"), Ok(Std::from_secs(60)));
        assert_eq!(parse("1h"), Ok(Std::from_secs(3_600)));
        assert_eq!(parse("1h30m"), Ok(Std::from_secs(5_400)));
        assert_eq!(parse(".5s"), Ok(Std::from_millis(500)));
        assert_eq!(parse("1.500s"), Ok(Std::from_millis(1_500)));
        assert_eq!(parse("100us"), Ok(Std::from_micros(100)));
        assert_eq!(parse("7ns"), Ok(Std::from_nanos(7)));
        assert_eq!(parse("0"), Ok(Std::ZERO));
    }

    #[test]
    fn says_what_is_wrong_with_a_bad_duration() {
        assert_eq!(
            parse("5").unwrap_err().to_string(),
            "`5` has no unit after `5`: add one of h, m, s, ms, us or ns"
        );
        assert_eq!(
            parse("5sec").unwrap_err().to_string(),
            "`5sec` has an unknown unit `sec`: use h, m, s, ms, us or ns"
        );
        assert_eq!(parse("-1s"), Err(DurationError::Negative("-1s".into())));
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert_eq!(parse("s"), Err(DurationError::Malformed("s".into())));
        assert_eq!(parse("5 s"), Err(DurationError::Malformed("5 s".into())));
        assert_eq!(
            parse("1..5s"),
            Err(DurationError::Malformed("1..5s".into()))
        );
        assert_eq!(
            parse("999999999999h"),
            Err(DurationError::Overflow("999999999999h".into()))
        );
    }

    #[test]
    fn prints_the_protobuf_json_form() {
        assert_eq!(Duration(Std::from_millis(1_500)).to_string(), "1.5s");
        assert_eq!(Duration(Std::from_millis(250)).to_string(), "0.25s");
        assert_eq!(Duration(Std::from_secs(60)).to_string(), "60s");
    }

    #[test]
    fn decodes_from_yaml_and_rejects_a_bare_number() {
        let ok: Duration = serde_yaml_ng::from_str("2s").unwrap();
        assert_eq!(ok.get(), Std::from_secs(2));
        let number = serde_yaml_ng::Value::Number(5.into());
        let error = serde_yaml_ng::from_value::<Duration>(number)
            .unwrap_err()
            .to_string();
        assert!(error.contains("expected a duration with a unit"), "{error}");
    }
}
