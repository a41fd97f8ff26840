//! The registry's bearer tokens: JSON Web Tokens (RFC 7519) in compact form, signed and checked
//! with HMAC-SHA256 (`hmac` + `sha2`) under the registry's own key. The registry is both the
//! issuer and the only verifier, so one algorithm is all there is: a token whose header names
//! another (`none`, RS256, …) is refused before its signature is looked at, and the signature is
//! compared in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header of every token the registry signs.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

/// Why a token was not accepted (told to no one: the caller answers 401 either way).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JwtError {
    #[error("not three base64url parts")]
    Malformed,
    #[error("the header names another algorithm than HS256")]
    Algorithm,
    #[error("the signature does not match")]
    Signature,
    #[error("the claims are not what the registry issues")]
    Claims,
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).expect("invariant: HMAC accepts any key length")
}

/// `claims` as a signed token.
pub fn sign<C: Serialize>(key: &[u8], claims: &C) -> Result<String, serde_json::Error> {
    let header = serde_json::to_vec(&Header {
        alg: "HS256".into(),
        typ: Some("JWT".into()),
    })?;
    let mut token = B64.encode(header);
    token.push('.');
    token.push_str(&B64.encode(serde_json::to_vec(claims)?));
    let mut m = mac(key);
    m.update(token.as_bytes());
    let signature = B64.encode(m.finalize().into_bytes());
    token.push('.');
    token.push_str(&signature);
    Ok(token)
}

/// The claims of `token` if it is an HS256 token signed with `key` (their meaning, such as
/// expiry, is the caller's to check).
pub fn verify<C: DeserializeOwned>(key: &[u8], token: &str) -> Result<C, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Header = B64
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(JwtError::Malformed)?;
    if header.alg != "HS256" {
        return Err(JwtError::Algorithm);
    }
    let signature = B64.decode(signature).map_err(|_| JwtError::Malformed)?;
    let signed = &token[..token.len() - token.rsplit('.').next().map_or(0, str::len) - 1];
    let mut m = mac(key);
    m.update(signed.as_bytes());
    m.verify_slice(&signature)
        .map_err(|_| JwtError::Signature)?;
    let payload = B64.decode(payload).map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&payload).map_err(|_| JwtError::Claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct C {
        sub: String,
        exp: i64,
    }

    fn claims() -> C {
        C {
            sub: "alice".into(),
            exp: 1_900_000_000,
        }
    }

    #[test]
    fn a_signed_token_verifies_with_its_key_only() {
        let t = sign(b"key one", &claims()).expect("sign");
        assert_eq!(verify::<C>(b"key one", &t), Ok(claims()));
        assert_eq!(verify::<C>(b"key two", &t), Err(JwtError::Signature));
    }

    #[test]
    fn rfc7515_a1_hs256_example_verifies() {
        // RFC 7515, appendix A.1: the HS256 example and its key.
        let key = B64
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .expect("key");
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let v: serde_json::Value = verify(&key, token).expect("the RFC's token verifies");
        assert_eq!(v["iss"], "joe");
    }

    #[test]
    fn tampered_foreign_algorithm_and_malformed_tokens_are_refused() {
        let t = sign(b"k", &claims()).expect("sign");
        let (head, rest) = t.split_once('.').expect("parts");
        let (_, sig) = rest.split_once('.').expect("parts");
        let forged = format!(
            "{head}.{}.{sig}",
            B64.encode(br#"{"sub":"root","exp":1900000000}"#)
        );
        assert_eq!(verify::<C>(b"k", &forged), Err(JwtError::Signature));
        let none = format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none"}"#),
            B64.encode(br#"{"sub":"root","exp":1900000000}"#)
        );
        assert_eq!(verify::<C>(b"k", &none), Err(JwtError::Algorithm));
        for bad in ["", "a.b", "a.b.c.d", "!!.??.**"] {
            assert_eq!(verify::<C>(b"k", bad), Err(JwtError::Malformed), "{bad:?}");
        }
    }
}
