//! Stored values: the node keeps values as the JSON text it received, so it must accept only JSON
//! that every client can parse back. Beyond the grammar that means: nesting at most
//! [`MAX_DEPTH`] arrays/objects deep (serde_json, for one, refuses more than 128 by default, and
//! a reply wraps the value in a few levels of its own), numbers a 64-bit float can hold, and no
//! lone UTF-16 surrogates in strings (`"\ud800"` is not a Unicode string).

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Deepest nesting of arrays and objects in a stored value (`[[1]]` is 2 deep).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    /// Not JSON, or JSON a client cannot represent (out-of-range number, lone surrogate).
    Invalid(String),
    TooDeep,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::Invalid(e) => write!(f, "{e}"),
            ValueError::TooDeep => write!(
                f,
                "the value nests arrays and objects more than {MAX_DEPTH} deep"
            ),
        }
    }
}

/// Checks that `text` is one JSON value a client can read back. Allocates nothing for the
/// value itself and recurses at most `MAX_DEPTH` deep.
pub fn check(text: &str) -> Result<(), ValueError> {
    if plain_string(text) {
        return Ok(());
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let mut too_deep = false;
    let seed = Check {
        depth_left: MAX_DEPTH,
        too_deep: &mut too_deep,
    };
    let parsed = seed.deserialize(&mut de).and_then(|()| de.end());
    match parsed {
        Ok(()) => Ok(()),
        Err(_) if too_deep => Err(ValueError::TooDeep),
        Err(e) => Err(ValueError::Invalid(e.to_string())),
    }
}

/// Whether `text` is a JSON string with nothing to unescape: a quote, characters that need no
/// escape, a quote. Valid whatever those characters are (`text` is a `str`: no byte sequence
/// that is not Unicode, and a surrogate can only come from an escape). Strings are the values
/// most often stored, and the parser's walk cost about 300 of a put's 26,000 instructions more
/// than this scan, which has no branch per byte (callgrind).
fn plain_string(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() < 2 || b[0] != b'"' || b[b.len() - 1] != b'"' {
        return false;
    }
    let inner = &b[1..b.len() - 1];
    !inner.iter().fold(false, |bad, &c| {
        bad | (c < 0x20) | (c == b'"') | (c == b'\\')
    })
}

struct Check<'a> {
    depth_left: usize,
    too_deep: &'a mut bool,
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        // `deserialize_any` parses every number (failing on one out of f64's range) and
        // decodes every string (failing on a lone surrogate), unlike `IgnoredAny`.
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some(depth_left) = self.depth_left.checked_sub(1) else {
            *self.too_deep = true;
            return Err(de::Error::custom("too deep"));
        };
        let too_deep = self.too_deep;
        while seq
            .next_element_seed(Check {
                depth_left,
                too_deep: &mut *too_deep,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some(depth_left) = self.depth_left.checked_sub(1) else {
            *self.too_deep = true;
            return Err(de::Error::custom("too deep"));
        };
        let too_deep = self.too_deep;
        // Keys are strings: decoding them checks for lone surrogates.
        while map.next_key::<KeyCheck>()?.is_some() {
            map.next_value_seed(Check {
                depth_left,
                too_deep: &mut *too_deep,
            })?;
        }
        Ok(())
    }
}

/// A map key, decoded (so a lone surrogate fails) and dropped.
struct KeyCheck;

impl<'de> de::Deserialize<'de> for KeyCheck {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyCheck;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E>(self, _: &str) -> Result<KeyCheck, E> {
                Ok(KeyCheck)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    /// The scan for plain strings answers as the parser does, on strings it takes and on ones
    /// it leaves to the parser (escapes, control characters, a quote inside, no closing quote).
    #[test]
    fn plain_strings_are_judged_as_the_parser_judges_them() {
        let cases = [
            (r#""""#, true),
            (r#""x""#, true),
            ("\"é ✓ 😀 \u{7f}\"", true),
            (r#""a\"b""#, false),
            (r#""a\nb""#, false),
            (r#""\ud800""#, false),
            ("\"a\tb\"", false),
            ("\"a\u{1f}\"", false),
            (r#""a"b""#, false),
            (r#"""#, false),
            (r#""abc"#, false),
            (r#" "x""#, false),
            ("1", false),
        ];
        for (text, plain) in cases {
            assert_eq!(plain_string(text), plain, "{text:?}");
            let mut de = serde_json::Deserializer::from_str(text);
            let parsed =
                serde::Deserialize::deserialize(&mut de).and_then(|de::IgnoredAny| de.end());
            if plain {
                assert!(parsed.is_ok(), "{text:?} is valid JSON");
            }
            // The parser refuses what the scan refuses, but for a lone surrogate, which only
            // the full check refuses.
            assert_eq!(
                check(text).is_ok(),
                parsed.is_ok() && !text.contains("\\ud800"),
                "{text:?}"
            );
        }
    }

    #[test]
    fn good_values_pass() {
        for v in [
            "1",
            "-0",
            "1e308",
            "1e-400",
            "18446744073709551616",
            r#""\ud83d\ude00""#,
            r#"{"\ud83d\ude00":[null,true,{"a":{}}]}"#,
            " [ 1 , 2 ] ",
        ] {
            assert_eq!(check(v), Ok(()), "{v}");
        }
        assert_eq!(check(&nested(MAX_DEPTH)), Ok(()));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert_eq!(check(&objects), Ok(()));
    }

    #[test]
    fn values_clients_cannot_parse_fail() {
        assert_eq!(check(&nested(MAX_DEPTH + 1)), Err(ValueError::TooDeep));
        assert_eq!(check(&nested(100_000)), Err(ValueError::TooDeep));
        for v in [
            "1e999999",
            "-1e400",
            r#""\ud800""#,
            r#""a\udc00""#,
            r#"{"\udbff":1}"#,
            "[1,]",
            "1 2",
            "",
            "nul",
        ] {
            assert!(matches!(check(v), Err(ValueError::Invalid(_))), "{v}");
        }
    }

    #[test]
    fn everything_that_passes_parses_as_a_serde_json_value() {
        // The client's parser, wrapped the way a list reply wraps a value.
        let v = nested(MAX_DEPTH);
        let reply = format!(r#"{{"items":[{{"key":"k","value":{v}}}],"next":null}}"#);
        assert!(serde_json::from_str::<serde_json::Value>(&reply).is_ok());
    }
}
