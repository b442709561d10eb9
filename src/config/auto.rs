//! Settings an operator may fix or leave to the gateway: a number, or `"auto"`.

use serde::{Deserialize, Serialize};

/// A figure set in the file, or `"auto"`: found by the gateway as it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoOr<T> {
    /// Found live (`"auto"`).
    Auto,
    /// This figure, always.
    Fixed(T),
}

/// `delivery.max_in_flight`: deliveries in flight, fixed or found from the backend's answers.
pub type InFlight = AutoOr<usize>;

/// `queue.drain_rate`: requests released a second, fixed or steered by the outbox lag.
pub type DrainRate = AutoOr<u32>;

impl<T: Copy> AutoOr<T> {
    /// The figure when fixed, else `auto`'s.
    pub fn or(self, auto: T) -> T {
        match self {
            Self::Auto => auto,
            Self::Fixed(n) => n,
        }
    }

    /// Whether it is left to the gateway.
    pub fn is_auto(self) -> bool {
        matches!(self, Self::Auto)
    }
}

impl<T: Serialize> Serialize for AutoOr<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::Fixed(n) => n.serialize(s),
        }
    }
}

impl<'de, T: TryFrom<u64>> Deserialize<'de> for AutoOr<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<T: TryFrom<u64>> serde::de::Visitor<'_> for Visitor<T> {
            type Value = AutoOr<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, or \"auto\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<AutoOr<T>, E> {
                T::try_from(n)
                    .map(AutoOr::Fixed)
                    .map_err(|_| E::custom("too large"))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<AutoOr<T>, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom("must be a positive number, or \"auto\""))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AutoOr<T>, E> {
                match v {
                    "auto" => Ok(AutoOr::Auto),
                    other => Err(E::custom(format!("`{other}`: a number, or \"auto\""))),
                }
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct Keys {
        rate: DrainRate,
        in_flight: InFlight,
    }

    #[test]
    fn a_number_or_auto_and_nothing_else() {
        let k: Keys = toml::from_str("rate = 5\nin_flight = \"auto\"\n").expect("valid");
        assert_eq!((k.rate, k.in_flight), (AutoOr::Fixed(5), AutoOr::Auto));
        assert_eq!(k.rate.or(9), 5);
        assert_eq!(k.in_flight.or(9), 9);
        assert_eq!(
            toml::to_string(&k).expect("printed"),
            "rate = 5\nin_flight = \"auto\"\n"
        );
        for bad in [
            "rate = \"fast\"",
            "rate = -1",
            "rate = 5000000000",
            "rate = 1.5",
        ] {
            let text = format!("{bad}\nin_flight = 1\n");
            assert!(toml::from_str::<Keys>(&text).is_err(), "{bad}");
        }
    }
}
