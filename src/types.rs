//! Domain types: what a value means travels with it, not in a variable name.

use std::fmt;
use std::sync::Arc;

use rand::RngCore;

/// A sale's stock keeping unit, validated by the config (`[A-Za-z0-9_.-]`, 1–64 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(Arc<str>);

/// Path segments reserved for routes under `/sale/`, so no sale may use them as its sku.
pub const RESERVED_SKUS: &[&str] = &["tickets", "busy"];

/// Why a text is not a sku.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkuError {
    /// Not 1–64 characters of `A-Z a-z 0-9 _ - .`.
    #[error("must be 1-64 characters of A-Z a-z 0-9 _ - . (and not . or ..)")]
    Malformed,
    /// A word a route under `/sale/` uses.
    #[error("is reserved for a route under /sale/")]
    Reserved,
}

impl Sku {
    /// Wraps a sku the config has validated.
    pub fn new(s: &str) -> Self {
        Self(Arc::from(s))
    }

    /// A sku from outside text: 1–64 characters of `A-Z a-z 0-9 _ - .`, not a route word,
    /// nor `.` or `..` (dot segments: no path could name the sale).
    pub fn parse(s: &str) -> Result<Self, SkuError> {
        let well_formed = !s.is_empty()
            && s.len() <= 64
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !well_formed {
            return Err(SkuError::Malformed);
        }
        if RESERVED_SKUS.contains(&s) {
            return Err(SkuError::Reserved);
        }
        Ok(Self::new(s))
    }

    /// The sku as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A 16-bit tag of the sku, the same on every instance: what a ticket carries to name
    /// its sale (FNV-1a folded; tags of two sales may collide, which costs a lookup more).
    pub fn tag(&self) -> u16 {
        let hash = self.0.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        (hash >> 16) as u16 ^ hash as u16
    }
}

// A `Sku` hashes exactly as its text, so maps keyed by `Sku` can be searched with a `&str`.
impl std::borrow::Borrow<str> for Sku {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user id, as the auth layer in front asserts it: 1–128 bytes of
/// `A-Z a-z 0-9 _ - . : @`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl UserId {
    /// Longest accepted id, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Parses an id, refusing empty, overlong and odd-character ones.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@')
            });
        ok.then(|| Self(Arc::from(s)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Writes 16 random bytes as 32 lowercase hex digits.
fn random_hex128() -> [u8; 32] {
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    let mut out = [0u8; 32];
    // Cannot fail: the output is exactly twice the input.
    let _ = hex::encode_to_slice(raw, &mut out);
    out
}

/// Parses 32 lowercase hex digits.
fn parse_hex128(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 32 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(b);
    Some(out)
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// A fresh random id (128 bits).
            pub fn random() -> Self {
                Self(random_hex128())
            }

            /// Parses the 32-hex-digit text form; anything else is `None`.
            pub fn parse(s: &str) -> Option<Self> {
                parse_hex128(s).map(Self)
            }

            /// The 32-hex-digit text form.
            pub fn as_str(&self) -> &str {
                // Only ever built from ASCII hex digits.
                std::str::from_utf8(&self.0).unwrap_or("")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| serde::de::Error::custom("not 32 lowercase hex digits"))
            }
        }
    };
}

/// A one-time purchase token, bound to one user and one sale and signed by the gateway
/// (see [`crate::token`]): 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token([u8; 64]);

impl Token {
    /// The token of these 32 bytes.
    pub fn from_bytes(raw: &[u8; 32]) -> Self {
        let mut text = [0u8; 64];
        // Cannot fail: the output is exactly twice the input.
        let _ = hex::encode_to_slice(raw, &mut text);
        Self(text)
    }

    /// Random bytes: a token no signer issued, for tests and benchmarks of what follows
    /// the edge's check.
    pub fn random() -> Self {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        Self::from_bytes(&raw)
    }

    /// Parses the 64-hex-digit text form; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 64 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut text = [0u8; 64];
        text.copy_from_slice(b);
        Some(Self(text))
    }

    /// Its 32 bytes.
    pub fn bytes(&self) -> [u8; 32] {
        let mut raw = [0u8; 32];
        // Cannot fail: only ever built from 64 hex digits.
        let _ = hex::decode_to_slice(self.0, &mut raw);
        raw
    }

    /// When it expires, milliseconds since the Unix epoch.
    pub fn expires_ms(&self) -> u64 {
        let raw = self.bytes();
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&raw[..8]);
        u64::from_be_bytes(expiry)
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.as_str())
    }
}

impl serde::Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("not 64 lowercase hex digits"))
    }
}

hex_id!(
    /// An admitted order request's ticket: how its owner follows it.
    TicketId
);
hex_id!(
    /// A reserved order's id; also the backend's idempotency key.
    OrderId
);

/// What every ticket an instance issues starts with: 8 random hex digits drawn at each
/// start, so that another instance sharing the store can tell whose ticket it is asked
/// about (and that it was issued before a restart, by a process that is gone).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerTag([u8; 8]);

impl OwnerTag {
    /// A fresh tag for this process.
    pub fn random() -> Self {
        let id = OrderId::random();
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&id.0[..8]);
        Self(tag)
    }

    /// The tag as text (8 lowercase hex digits).
    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Debug for OwnerTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerTag({})", self.as_str())
    }
}

impl TicketId {
    /// A fresh ticket id of the instance tagged `owner`.
    pub fn issued_by(owner: &OwnerTag) -> Self {
        let mut id = Self::random();
        id.0[..8].copy_from_slice(&owner.0);
        id
    }

    /// The tag of the sale it was issued for ([`Sku::tag`]).
    pub fn sale_tag(&self) -> u16 {
        let mut tag = [0u8; 2];
        // Cannot fail: only ever built from hex digits.
        let _ = hex::decode_to_slice(&self.0[8..12], &mut tag);
        u16::from_be_bytes(tag)
    }

    /// The instance that issued it.
    pub fn owner(&self) -> OwnerTag {
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&self.0[..8]);
        OwnerTag(tag)
    }
}

/// The most units a sale's stock may hold: 2^53 − 1, the largest integer every layer
/// (Lua's doubles in Redis scripts, JSON readers) carries exactly.
pub const MAX_STOCK: u64 = (1 << 53) - 1;

/// Which loading of a sale's stock the store holds: written with the stock, so that a store
/// that lost its state (and with it the epoch) is told apart from one never loaded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Epoch(String);

impl Epoch {
    /// A fresh epoch written by a gateway's first start (`init-…`).
    pub fn initial() -> Self {
        Self(format!("init-{}", OrderId::random().as_str()))
    }

    /// A fresh epoch written by an operator loading stock (`load-…`).
    pub fn loaded() -> Self {
        Self(format!("load-{}", OrderId::random().as_str()))
    }

    /// An epoch as the store holds it.
    pub fn from_store(s: &str) -> Self {
        Self(s.to_owned())
    }

    /// True when an operator wrote it (not a gateway's first start).
    pub fn by_operator(&self) -> bool {
        self.0.starts_with("load-")
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Milliseconds since the Unix epoch (0 before it), for order records and deadlines.
pub fn unix_millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {

    #[test]
    fn skus_are_checked_once_here() {
        assert_eq!(
            Sku::parse("phone-12.b_1").map(|s| s.to_string()),
            Ok("phone-12.b_1".into())
        );
        // "." and ".." are dot segments: no /sale/ route could ever name them.
        for bad in ["", "a b", "ph/one", "é", &"x".repeat(65), ".", ".."] {
            assert_eq!(Sku::parse(bad), Err(SkuError::Malformed), "{bad:?}");
        }
        assert!(Sku::parse("...").is_ok() && Sku::parse(".a").is_ok());
        for word in RESERVED_SKUS {
            assert_eq!(Sku::parse(word), Err(SkuError::Reserved));
        }
    }

    use super::*;

    #[test]
    fn ids_round_trip_and_reject_other_text() {
        let t = OrderId::random();
        assert_eq!(OrderId::parse(t.as_str()), Some(t));
        assert_ne!(OrderId::random(), t);
        assert!(OrderId::parse("").is_none());
        assert!(
            OrderId::parse(&"A".repeat(32)).is_none(),
            "uppercase is not our form"
        );
        assert!(OrderId::parse(&"0".repeat(31)).is_none());
        assert!(OrderId::parse(&"é".repeat(16)).is_none());
        let owner = OwnerTag::random();
        let ticket = TicketId::issued_by(&owner);
        assert_eq!(ticket.owner(), owner);
        assert_eq!(&ticket.as_str()[..8], owner.as_str());
        assert_ne!(TicketId::issued_by(&owner), ticket);
        let raw: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let token = Token::from_bytes(&raw);
        assert_eq!(Token::parse(token.as_str()), Some(token));
        assert_eq!(token.bytes(), raw);
        assert!(Token::parse(&"0".repeat(63)).is_none());
        assert!(Token::parse(&"F".repeat(64)).is_none());
        assert!(Token::parse(&"é".repeat(32)).is_none());
    }

    #[test]
    fn user_ids_are_checked() {
        assert!(UserId::parse("alice@example.com").is_some());
        assert!(UserId::parse("u:42").is_some());
        assert!(UserId::parse("").is_none());
        assert!(UserId::parse("a b").is_none());
        assert!(UserId::parse(&"a".repeat(129)).is_none());
    }
}
