//! Sale tokens, signed by the gateway and verified at the edge: issuing one touches neither
//! the store nor memory, and a forged, expired or borrowed token is refused before it costs
//! anything. The store only learns of a token when it is spent (and remembers it spent).
//!
//! A token is 32 bytes written as 64 lowercase hex digits:
//!
//! | bytes | holds |
//! |---|---|
//! | 0..8 | expiry, milliseconds since the Unix epoch, big-endian |
//! | 8..16 | a random nonce |
//! | 16..32 | HMAC-SHA256(secret, "flashgate-token-v1", sku, user, expiry, nonce), first 16 bytes |
//!
//! Sku and user are length-prefixed in the MAC input, so no two (sku, user) pairs sign
//! alike. Every instance sharing a store must share the secret (`cluster.secret`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::types::{OwnerTag, Sku, TicketId, Token, UserId};

type HmacSha256 = Hmac<Sha256>;

/// What the MAC input starts with: a new layout gets a new label.
const LABEL: &[u8] = b"flashgate-token-v1";

/// Why a token is refused at the edge (all answered 422 `invalid_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not signed by this secret for this sale and user (forged, another user's, another
    /// sale's).
    #[error("the token was not issued for this sale and user")]
    Forged,
    /// Its expiry has passed.
    #[error("the token has expired")]
    Expired,
}

/// Issues and verifies tokens under one secret.
#[derive(Clone)]
pub struct TokenSigner {
    /// The keyed MAC, ready: cloned per token instead of re-keyed.
    mac: HmacSha256,
    /// The serial of the next ticket this process issues (from a random start): no two
    /// of its tickets alike for 2^32 tickets.
    serial: Arc<AtomicU32>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(<redacted>)")
    }
}

impl TokenSigner {
    /// A signer under `secret`; an empty secret draws a random one (tokens then hold only
    /// for this process: right for the memory store, and config refuses it with a shared one).
    pub fn new(secret: &str) -> Self {
        let mut random = [0u8; 32];
        let key: &[u8] = if secret.is_empty() {
            rand::rng().fill_bytes(&mut random);
            &random
        } else {
            secret.as_bytes()
        };
        // HMAC takes a key of any length; this cannot fail.
        let mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        Self {
            mac,
            serial: Arc::new(AtomicU32::new(rand::rng().next_u32())),
        }
    }

    /// A token for `user` in `sku` that expires at `expires_ms` (Unix milliseconds).
    pub fn issue(&self, sku: &Sku, user: &UserId, expires_ms: u64) -> Token {
        let mut raw = [0u8; 32];
        raw[..8].copy_from_slice(&expires_ms.to_be_bytes());
        rand::rng().fill_bytes(&mut raw[8..16]);
        let tag = self.tag(sku, user, &raw[..16]);
        raw[16..].copy_from_slice(&tag);
        Token::from_bytes(&raw)
    }

    /// Checks that `token` was issued for `user` in `sku` by this secret.
    pub fn check_binding(&self, token: &Token, sku: &Sku, user: &UserId) -> Result<(), TokenError> {
        let raw = token.bytes();
        let expected = self.tag(sku, user, &raw[..16]);
        if bool::from(expected.ct_eq(&raw[16..])) {
            Ok(())
        } else {
            Err(TokenError::Forged)
        }
    }

    /// Checks the binding and that the token has not expired at `now_ms`.
    pub fn verify(
        &self,
        token: &Token,
        sku: &Sku,
        user: &UserId,
        now_ms: u64,
    ) -> Result<(), TokenError> {
        self.check_binding(token, sku, user)?;
        if token.expires_ms() < now_ms {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    /// A credential derived from the secret for `purpose` (hex), the same on every
    /// instance sharing it: how they authenticate their calls to each other.
    pub fn derive(&self, purpose: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(b"flashgate-derive-v1\0");
        mac.update(purpose.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A fresh ticket id of the process tagged `owner` for sale `sku`: the owner's tag,
    /// the sale's tag, a serial and a 48-bit MAC of them (docs/contract.md, "Tickets"), so
    /// that any instance knows whose ticket it is and for which sale, and knows one no
    /// instance issued at once, without asking anyone.
    pub fn new_ticket(&self, owner: &OwnerTag, sku: &Sku) -> TicketId {
        // On the admission path: built in place, no allocation.
        let mut text = [0u8; 32];
        text[..8].copy_from_slice(owner.as_str().as_bytes());
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        // Cannot fail: each output is exactly twice its input.
        let _ = hex::encode_to_slice(sku.tag().to_be_bytes(), &mut text[8..12]);
        let _ = hex::encode_to_slice(serial.to_be_bytes(), &mut text[12..20]);
        let mac = self.ticket_mac(&text[..20]);
        let _ = hex::encode_to_slice(mac, &mut text[20..]);
        // Hex digits of the right length: always a ticket id.
        std::str::from_utf8(&text)
            .ok()
            .and_then(TicketId::parse)
            .unwrap_or_else(TicketId::random)
    }

    /// True when `ticket` was issued by an instance holding this secret.
    pub fn issued(&self, ticket: &TicketId) -> bool {
        let (head, given) = ticket.as_str().as_bytes().split_at(20);
        let mut expected = [0u8; 12];
        let _ = hex::encode_to_slice(self.ticket_mac(head), &mut expected);
        bool::from(expected.ct_eq(given))
    }

    /// The first 6 bytes of HMAC(secret, label, the ticket's first 20 hex digits).
    fn ticket_mac(&self, head: &[u8]) -> [u8; 6] {
        let mut mac = self.mac.clone();
        mac.update(b"flashgate-ticket-v1\0");
        mac.update(head);
        let mut out = [0u8; 6];
        out.copy_from_slice(&mac.finalize().into_bytes()[..6]);
        out
    }

    fn tag(&self, sku: &Sku, user: &UserId, expiry_and_nonce: &[u8]) -> [u8; 16] {
        let mut mac = self.mac.clone();
        mac.update(LABEL);
        for part in [sku.as_str().as_bytes(), user.as_str().as_bytes()] {
            // Both are short (64 and 128 bytes at most); two bytes of length is plenty.
            mac.update(&(part.len() as u16).to_be_bytes());
            mac.update(part);
        }
        mac.update(expiry_and_nonce);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&full[..16]);
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::parse(s).expect("user")
    }

    #[test]
    fn a_token_holds_for_its_sale_and_user_until_it_expires() {
        let signer = TokenSigner::new("a shared secret of some length");
        let (phone, alice) = (Sku::new("phone"), user("alice"));
        let t = signer.issue(&phone, &alice, 10_000);
        assert_eq!(t.expires_ms(), 10_000);
        assert_eq!(signer.verify(&t, &phone, &alice, 10_000), Ok(()));
        assert_eq!(
            signer.verify(&t, &phone, &alice, 10_001),
            Err(TokenError::Expired)
        );
        assert_eq!(
            signer.verify(&t, &phone, &user("bob"), 0),
            Err(TokenError::Forged)
        );
        assert_eq!(
            signer.verify(&t, &Sku::new("tablet"), &alice, 0),
            Err(TokenError::Forged)
        );
        // Another secret (another fleet, or a forger) signs differently.
        let other = TokenSigner::new("another secret");
        assert_eq!(other.verify(&t, &phone, &alice, 0), Err(TokenError::Forged));
        // Each issue is a new token.
        assert_ne!(signer.issue(&phone, &alice, 10_000), t);
    }

    #[test]
    fn a_changed_expiry_or_one_flipped_bit_is_a_forgery() {
        let signer = TokenSigner::new("s");
        let (phone, alice) = (Sku::new("phone"), user("alice"));
        let t = signer.issue(&phone, &alice, 10_000);
        for i in 0..32 {
            for bit in [0x01u8, 0x80] {
                let mut raw = t.bytes();
                raw[i] ^= bit;
                let forged = Token::from_bytes(&raw);
                assert_eq!(
                    signer.check_binding(&forged, &phone, &alice),
                    Err(TokenError::Forged),
                    "byte {i}"
                );
            }
        }
    }

    #[test]
    fn sku_and_user_boundaries_are_signed() {
        let signer = TokenSigner::new("s");
        let t = signer.issue(&Sku::new("ab"), &user("c"), 1);
        assert_eq!(
            signer.check_binding(&t, &Sku::new("a"), &user("bc")),
            Err(TokenError::Forged)
        );
    }

    #[test]
    fn tickets_carry_their_owner_their_sale_and_a_mac() {
        let signer = TokenSigner::new("s");
        let owner = OwnerTag::random();
        let (phone, tv) = (Sku::new("phone"), Sku::new("tv"));
        assert_ne!(phone.tag(), tv.tag());
        let t = signer.new_ticket(&owner, &phone);
        assert_eq!(t.owner(), owner);
        assert_eq!(t.sale_tag(), phone.tag());
        assert_eq!(signer.new_ticket(&owner, &tv).sale_tag(), tv.tag());
        assert!(signer.issued(&t));
        assert!(!TokenSigner::new("other").issued(&t));
        assert!(!signer.issued(&TicketId::issued_by(&owner)));
        assert_ne!(signer.new_ticket(&owner, &phone), t);
    }

    #[test]
    fn an_empty_secret_is_random_per_signer() {
        let (phone, alice) = (Sku::new("phone"), user("alice"));
        let t = TokenSigner::new("").issue(&phone, &alice, 1);
        assert_eq!(
            TokenSigner::new("").check_binding(&t, &phone, &alice),
            Err(TokenError::Forged)
        );
    }
}
