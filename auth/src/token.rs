//! Registry tokens as Docker's token-auth spec describes them: JWTs signed with the
//! registry's Ed25519 key, carrying the granted `access` list.

use std::sync::Arc;

use jsonwebtoken::{decode, encode, Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::keys::SigningKeys;
use crate::scope::Access;
use crate::verified_tokens::VerifiedTokens;

/// Seconds of clock difference tolerated on `exp` and `nbf`.
const LEEWAY_SECS: i64 = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user name; empty for an anonymous token.
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub access: Vec<Access>,
}

impl Claims {
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.access.iter().any(|a| a.allows(kind, name, action))
    }
}

pub struct IssuedToken {
    pub token: String,
    pub expires_in: i64,
    pub issued_at: chrono::DateTime<chrono::Utc>,
}

pub struct TokenService {
    keys: SigningKeys,
    /// `iss` of the tokens we make and accept.
    pub issuer: String,
    /// The `service` / `aud` tokens are for.
    pub service: String,
    pub ttl_secs: i64,
    verified: VerifiedTokens,
}

impl TokenService {
    pub fn new(keys: SigningKeys, issuer: String, service: String, ttl_secs: i64) -> TokenService {
        TokenService {
            keys,
            issuer,
            service,
            ttl_secs,
            verified: VerifiedTokens::default(),
        }
    }

    pub fn issue(&self, subject: &str, access: Vec<Access>) -> Result<IssuedToken, AuthError> {
        let now = chrono::Utc::now();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: self.service.clone(),
            exp: now.timestamp() + self.ttl_secs,
            nbf: now.timestamp() - 1,
            iat: now.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
            access,
        };
        let token = encode(&Header::new(Algorithm::EdDSA), &claims, &self.keys.encoding)
            .map_err(|e| AuthError::TokenInvalid(e.to_string()))?;
        Ok(IssuedToken {
            token,
            expires_in: self.ttl_secs,
            issued_at: now,
        })
    }

    /// Checks signature (Ed25519 only: `none` and HMAC tricks are refused), expiry,
    /// not-before, audience and issuer. A token verified before skips the signature
    /// check only (see `verified_tokens`).
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let now = chrono::Utc::now().timestamp();
        if let Some(claims) = self.verified.get(token) {
            return self.check_claims(&claims, now).map(|()| claims);
        }
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&[&self.service]);
        v.set_issuer(&[&self.issuer]);
        v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        v.validate_nbf = true;
        v.leeway = LEEWAY_SECS as u64;
        let claims = decode::<Claims>(token, &self.keys.decoding, &v)
            .map(|data| Arc::new(data.claims))
            .map_err(|e| AuthError::TokenInvalid(e.to_string()))?;
        self.verified.insert(token, claims.clone(), now);
        Ok(claims)
    }

    /// What `verify` checks besides the signature, as `jsonwebtoken` does.
    fn check_claims(&self, claims: &Claims, now: i64) -> Result<(), AuthError> {
        let invalid = |why: &str| Err(AuthError::TokenInvalid(why.into()));
        if claims.exp < now - LEEWAY_SECS {
            return invalid("ExpiredSignature");
        }
        if claims.nbf > now + LEEWAY_SECS {
            return invalid("ImmatureSignature");
        }
        if claims.aud != self.service {
            return invalid("InvalidAudience");
        }
        if claims.iss != self.issuer {
            return invalid("InvalidIssuer");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn service() -> TokenService {
        let keys = SigningKeys::from_pkcs8(&SigningKeys::generate().unwrap()).unwrap();
        TokenService::new(keys, "berth".into(), "registry".into(), 300)
    }

    fn access() -> Vec<Access> {
        vec![Access {
            kind: "repository".into(),
            name: "alice/app".into(),
            actions: vec!["pull".into()],
        }]
    }

    #[test]
    fn issued_tokens_verify_and_tampering_is_caught() {
        let s = service();
        let t = s.issue("alice", access()).unwrap();
        let c = s.verify(&t.token).unwrap();
        assert_eq!(c.sub, "alice");
        assert!(c.allows("repository", "alice/app", "pull"));
        assert!(!c.allows("repository", "alice/app", "push"));
        // Change the payload (grant push) and keep the signature.
        let parts: Vec<&str> = t.token.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        claims["access"][0]["actions"] = serde_json::json!(["pull", "push"]);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(claims.to_string()),
            parts[2]
        );
        assert!(s.verify(&forged).is_err());
        // alg: none, unsigned.
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert!(s.verify(&none).is_err());
        // Signed by another key.
        assert!(service().verify(&t.token).is_err());
    }

    #[test]
    fn expiry_audience_and_issuer_are_checked() {
        let mut s = service();
        s.ttl_secs = -60;
        let expired = s.issue("alice", access()).unwrap();
        s.ttl_secs = 300;
        assert!(s.verify(&expired.token).is_err());
        let t = s.issue("alice", access()).unwrap();
        s.verify(&t.token).unwrap();
        // Verified once: the claims are still checked on every use.
        s.service = "elsewhere".into();
        assert!(s.verify(&t.token).is_err(), "wrong audience");
        s.service = "registry".into();
        s.issuer = "other".into();
        assert!(s.verify(&t.token).is_err(), "wrong issuer");
        s.issuer = "berth".into();
        assert!(s.verify(&t.token).is_ok());
    }

    #[test]
    fn a_verified_token_expires_on_time() {
        let mut s = service();
        // Expires 6 s ago, within the leeway: valid; checked again after verification.
        s.ttl_secs = -4;
        let t = s.issue("alice", access()).unwrap();
        assert!(s.verify(&t.token).is_ok());
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert!(s.verify(&t.token).is_err(), "expired while remembered");
    }
}
