//! Measured values as exact decimals.
//!
//! Instruments, the LIMS and rule profiles write numbers in decimal (`1.003`, `14999`). Binary
//! floating point cannot hold most of them exactly, so a cutoff comparison on `f64` can go the
//! wrong way at the edge. Every value that reaches a rule is a [`Decimal`]. A number that arrives
//! as an `f64` (JSON and TOML parsers hand them over that way) is converted through its shortest
//! round-trip decimal text, which is exactly the text that was written for any number of up to
//! 15 significant digits — far more than any instrument reports.

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::str::FromStr;

pub use rust_decimal::Decimal as Value;

/// Why a number could not be taken as a measured value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("not a finite number")]
    NotFinite,
    #[error("out of range")]
    OutOfRange,
    #[error("not a decimal number")]
    NotDecimal,
}

/// Converts an `f64` to the decimal it was written as (shortest round-trip text).
pub fn from_f64(v: f64) -> Result<Decimal, NumberError> {
    if !v.is_finite() {
        return Err(NumberError::NotFinite);
    }
    // `{}` on f64 prints the shortest text that reads back as the same f64, never exponent form.
    let text = format!("{v}");
    parse(&text)
}

/// Parses decimal text (`12`, `-0.5`, `1.0030`, `1.5e3`).
pub fn parse(text: &str) -> Result<Decimal, NumberError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(NumberError::NotDecimal);
    }
    let plain = Decimal::from_str(t);
    match plain {
        Ok(d) => Ok(d.normalize()),
        Err(_) if t.contains(['e', 'E']) => Decimal::from_scientific(t)
            .map(|d| d.normalize())
            .map_err(|_| NumberError::OutOfRange),
        Err(_) => {
            if t.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+'))
            {
                Err(NumberError::OutOfRange)
            } else {
                Err(NumberError::NotDecimal)
            }
        }
    }
}

/// A JSON-friendly rendering: integers as integers, other values as the nearest `f64`.
pub fn to_json(d: Decimal) -> serde_json::Value {
    let n = d.normalize();
    if n.fract().is_zero()
        && let Ok(i) = i64::try_from(n)
    {
        return serde_json::Value::from(i);
    }
    let f: f64 = n.to_string().parse().unwrap_or(f64::NAN);
    serde_json::Number::from_f64(f)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

/// Serde helper: a decimal from a JSON/TOML integer, float or decimal string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    d.deserialize_any(DecimalVisitor)
}

/// Serde helper for `Option<Decimal>`.
pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    struct Opt;
    impl<'de> Visitor<'de> for Opt {
        type Value = Option<Decimal>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            deserialize(d).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

/// Serde helper for a map of key → decimal.
pub fn deserialize_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, Decimal>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "deserialize")] Decimal);
    let m: std::collections::BTreeMap<String, Wrapped> = serde::Deserialize::deserialize(d)?;
    Ok(m.into_iter().map(|(k, Wrapped(v))| (k, v)).collect())
}

struct DecimalVisitor;

impl<'de> Visitor<'de> for DecimalVisitor {
    type Value = Decimal;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
        from_f64(v).map_err(|e| E::custom(format!("number {e}")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
        parse(v).map_err(|e| E::custom(format!("number text {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_text_is_kept_exactly() {
        assert_eq!(from_f64(1.003).unwrap(), parse("1.003").unwrap());
        assert_eq!(from_f64(1.0029).unwrap().to_string(), "1.0029");
        assert!(from_f64(1.003).unwrap() > parse("1.00299999").unwrap());
        assert_eq!(from_f64(14999.0).unwrap(), Decimal::from(14999));
        assert_eq!(
            from_f64(0.1 + 0.2).unwrap().to_string(),
            "0.30000000000000004"
        );
    }

    #[test]
    fn bad_numbers_are_refused() {
        assert_eq!(from_f64(f64::NAN), Err(NumberError::NotFinite));
        assert_eq!(from_f64(f64::INFINITY), Err(NumberError::NotFinite));
        assert_eq!(from_f64(1e300), Err(NumberError::OutOfRange));
        assert_eq!(parse("abc"), Err(NumberError::NotDecimal));
        assert_eq!(parse(""), Err(NumberError::NotDecimal));
        assert_eq!(parse("1.5e3").unwrap(), Decimal::from(1500));
    }

    #[test]
    fn json_rendering() {
        assert_eq!(to_json(Decimal::from(15000)), serde_json::json!(15000));
        assert_eq!(to_json(parse("33.5").unwrap()), serde_json::json!(33.5));
        assert_eq!(to_json(parse("1.0030").unwrap()), serde_json::json!(1.003));
    }
}
