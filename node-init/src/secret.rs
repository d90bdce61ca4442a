//! A wrapper for values that must never reach a log, an error or `status`.
//!
//! `Debug` and `Display` print `<redacted>`; the only way to the value is
//! [`Secret::expose`], so leaking one takes a deliberate call. Deserializing
//! never echoes the input either: a wrong type is reported by its kind only.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself. Call only where it is written to its destination.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Deserializes a string without ever quoting what was found instead.
pub fn deserialize_secret_string<'de, D: Deserializer<'de>>(d: D) -> Result<Secret<String>, D::Error> {
    struct V;
    fn kind<E: de::Error>(what: &str) -> E {
        E::custom(format_args!("expected a string, found {what} (value redacted)"))
    }
    impl<'de> Visitor<'de> for V {
        type Value = Secret<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Secret(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Secret(v))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(kind("a boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(kind("a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(kind("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(kind("a number"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(kind("nothing"))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(kind("nothing"))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(kind("a list"))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(kind("a mapping"))
        }
    }
    d.deserialize_any(V)
}

impl<'de> Deserialize<'de> for Secret<String> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_secret_string(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn wrong_type_is_not_echoed() {
        let err = serde_json::from_str::<Secret<String>>("123456789").unwrap_err();
        assert!(!err.to_string().contains("123456789"), "{err}");
        assert!(err.to_string().contains("expected a string"), "{err}");
    }
}
