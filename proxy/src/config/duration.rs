//! Durations as the configuration writes them: `"250ms"`, `"5s"`, `"1m30s"`.

use std::fmt;
use std::time::Duration;

/// Why a duration string was refused by [`parse_duration`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurationError {
    /// The string is empty.
    Empty,
    /// A number is not followed by a unit, such as `"5"`.
    MissingUnit,
    /// A unit is not preceded by a number, such as `"s"`.
    MissingNumber,
    /// A unit other than `h`, `m`, `s` and `ms`.
    UnknownUnit {
        /// The unit as written (at most 16 characters of it).
        unit: String,
    },
    /// A character that has no place in a duration (sign, fraction, space).
    UnexpectedCharacter {
        /// The character.
        found: char,
    },
    /// Units are not from largest to smallest, or one is repeated.
    UnitOrder,
    /// The total does not fit in 2^64 milliseconds.
    TooLarge,
}

const DURATION_FORMS: &str = "such as \"250ms\", \"5s\", \"1m30s\" or \"1h\"";

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Empty => write!(f, "expected a duration {DURATION_FORMS}"),
            DurationError::MissingUnit => {
                write!(f, "a number has no unit; expected a duration {DURATION_FORMS}")
            }
            DurationError::MissingNumber => {
                write!(f, "a unit has no number before it; expected a duration {DURATION_FORMS}")
            }
            DurationError::UnknownUnit { unit } => write!(
                f,
                "unknown unit \"{unit}\"; the units are h, m, s and ms, as in a duration {DURATION_FORMS}"
            ),
            DurationError::UnexpectedCharacter { found } => write!(
                f,
                "unexpected {found:?}: write whole numbers with units and nothing else, \
                 such as \"1500ms\" rather than \"1.5s\""
            ),
            DurationError::UnitOrder => {
                f.write_str("units must go from largest to smallest, each at most once (h, m, s, ms)")
            }
            DurationError::TooLarge => f.write_str("the duration is too large"),
        }
    }
}

impl core::error::Error for DurationError {}

const MS_PER_SECOND: u64 = 1_000;
const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;

/// Parses a duration written as one or more `<integer><unit>` parts, units
/// `h`, `m`, `s`, `ms`, largest first and each at most once: `"250ms"`,
/// `"5s"`, `"1h30m"`, `"1m0s500ms"`. Millisecond resolution.
///
/// ```
/// use std::time::Duration;
/// use voxproxy::config::parse_duration;
///
/// assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert!(parse_duration("1.5s").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut pos = 0;
    let mut total_ms: u64 = 0;
    // Rank of the last unit seen; every next unit must rank lower.
    let mut last_rank = u8::MAX;
    while pos < bytes.len() {
        let digits_start = pos;
        let mut number: u64 = 0;
        while let Some(&b) = bytes.get(pos).filter(|b| b.is_ascii_digit()) {
            number = number
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
                .ok_or(DurationError::TooLarge)?;
            pos += 1;
        }
        let unit_start = pos;
        while bytes.get(pos).is_some_and(u8::is_ascii_alphabetic) {
            pos += 1;
        }
        // Both loops stopped on ASCII or at the end, so these are char boundaries.
        let unit = &text[unit_start..pos];
        if unit.is_empty() {
            return match text[pos..].chars().next() {
                None => Err(DurationError::MissingUnit),
                Some(found) => Err(DurationError::UnexpectedCharacter { found }),
            };
        }
        if digits_start == unit_start {
            return Err(DurationError::MissingNumber);
        }
        let (rank, factor) = match unit {
            "h" => (3, MS_PER_HOUR),
            "m" => (2, MS_PER_MINUTE),
            "s" => (1, MS_PER_SECOND),
            "ms" => (0, 1),
            _ => return Err(DurationError::UnknownUnit { unit: unit.chars().take(16).collect() }),
        };
        if rank >= last_rank {
            return Err(DurationError::UnitOrder);
        }
        last_rank = rank;
        total_ms = number
            .checked_mul(factor)
            .and_then(|part| part.checked_add(total_ms))
            .ok_or(DurationError::TooLarge)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Writes a duration the way [`parse_duration`] reads it, largest units first
/// and zero parts left out (`"1h30m"`, `"250ms"`, `"0s"`). Below a
/// millisecond is dropped; beyond 2^64 ms saturates.
#[must_use]
pub fn format_duration(duration: Duration) -> String {
    let total = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if total == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = total;
    for (factor, unit) in [(MS_PER_HOUR, "h"), (MS_PER_MINUTE, "m"), (MS_PER_SECOND, "s"), (1, "ms")] {
        let part = rest / factor;
        rest %= factor;
        if part > 0 {
            out.push_str(&part.to_string());
            out.push_str(unit);
        }
    }
    out
}
