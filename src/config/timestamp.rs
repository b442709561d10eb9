//! RFC 3339 timestamps in the config, written quoted or as TOML date-time literals.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// An instant given in the config as RFC 3339 (`2026-11-11T00:00:00+08:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// Parses RFC 3339 text.
    pub fn parse(text: &str) -> Result<Self, String> {
        OffsetDateTime::parse(text, &Rfc3339)
            .map(Self)
            .map_err(|e| format!("`{text}` is not an RFC 3339 timestamp ({e})"))
    }

    /// The instant as a `SystemTime`, for comparing with the clock.
    pub fn system_time(self) -> SystemTime {
        self.0.into()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // TOML date-time literals arrive as toml's own type, quoted ones as strings.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Toml(toml::value::Datetime),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Toml(dt) => dt.to_string(),
        };
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_kept_and_compared_as_instants() {
        let a = Timestamp::parse("2026-11-11T00:00:00+08:00").expect("valid");
        let b = Timestamp::parse("2026-11-10T16:00:00Z").expect("valid");
        assert_eq!(a.system_time(), b.system_time());
        assert!(Timestamp::parse("2026-11-11 00:00").is_err());
    }
}
