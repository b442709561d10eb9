//! What an order request says: its token (the `X-Sale-Token` header, else the JSON body's
//! `token`) and quantity. Pure and synchronous, so it can be fuzzed on its own.

use serde::Deserialize;

use crate::error::GatewayError;
use crate::types::Token;

/// The optional JSON body of `POST /sale/{sku}/order`; unknown fields are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    token: Option<String>,
    quantity: Option<u32>,
}

/// Reads the token and quantity from the header value (if sent) and the body bytes (empty
/// or whitespace: no body). Every malformed input is a 400 `bad_request`.
pub fn parse(
    header_token: Option<&[u8]>,
    body: &[u8],
    per_user_limit: u32,
) -> Result<(Token, u32), GatewayError> {
    let parsed: Option<OrderBody> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(
            serde_json::from_slice(body)
                .map_err(|_| GatewayError::BadRequest("the body is not the expected JSON"))?,
        )
    };
    let token_text = match (
        header_token,
        parsed.as_ref().and_then(|b| b.token.as_deref()),
    ) {
        (Some(h), _) => {
            std::str::from_utf8(h).map_err(|_| GatewayError::BadRequest("malformed sale token"))?
        }
        (None, Some(t)) => t,
        (None, None) => {
            return Err(GatewayError::BadRequest(
                "no sale token (X-Sale-Token header or JSON token)",
            ))
        }
    };
    let token = Token::parse(token_text).ok_or(GatewayError::BadRequest("malformed sale token"))?;
    let quantity = parsed.and_then(|b| b.quantity).unwrap_or(1);
    if quantity == 0 || quantity > per_user_limit {
        return Err(GatewayError::BadRequest(
            "quantity must be between 1 and the per-user limit",
        ));
    }
    Ok((token, quantity))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_header_wins_and_the_body_may_carry_token_and_quantity() {
        let (t, q) = parse(Some(T.as_bytes()), b"", 1).expect("header token");
        assert_eq!((t.to_string(), q), (T.to_owned(), 1));
        let body = format!("{{\"token\": \"{T}\", \"quantity\": 2}}");
        assert_eq!(parse(None, body.as_bytes(), 2).expect("body").1, 2);
        assert!(parse(None, body.as_bytes(), 1).is_err(), "over the limit");
        assert!(parse(None, b"  \n", 1).is_err(), "no token anywhere");
        assert!(parse(Some(b"\xff"), b"", 1).is_err());
    }
}
