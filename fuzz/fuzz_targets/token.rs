//! Token authentication's parsers on arbitrary input (berth-auth): a bearer token as
//! the gate verifies it (JWT: header, claims and signature, `TokenService::verify`),
//! the claims' JSON, and the token endpoint's `scope` parameter (`Scope::parse`).
//! Nothing panics; nothing the fuzzer writes verifies (it cannot sign with this
//! process's key), neither as a whole token nor as the claims of a token whose header
//! and signature are real; parsed claims and scopes keep their grammar.

#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_auth::keys::SigningKeys;
use berth_auth::{Access, Claims, Scope, TokenService};
use libfuzzer_sys::fuzz_target;

static TOKENS: LazyLock<(TokenService, String)> = LazyLock::new(|| {
    let keys = SigningKeys::from_pkcs8(&SigningKeys::generate().unwrap()).unwrap();
    let tokens = TokenService::new(keys, "berth".into(), "berth".into(), 300);
    let access = vec![Access {
        kind: "repository".into(),
        name: "alice/app".into(),
        actions: vec!["pull".into()],
    }];
    let real = tokens.issue("alice", access).unwrap().token;
    (tokens, real)
});

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (tokens, real) = &*TOKENS;
    assert!(tokens.verify(s).is_err(), "{s:?} verified");
    let mut parts = real.split('.');
    let (header, payload, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let forged = URL_SAFE_NO_PAD.encode(s);
    if forged != payload {
        let token = format!("{header}.{forged}.{signature}");
        assert!(tokens.verify(&token).is_err(), "{s:?} verified as claims");
    }
    if let Ok(claims) = serde_json::from_str::<Claims>(s) {
        let again: Claims = serde_json::from_value(serde_json::to_value(&claims).unwrap()).unwrap();
        assert_eq!(again, claims);
        for access in &claims.access {
            for action in &access.actions {
                assert!(claims.allows(&access.kind, &access.name, action));
            }
        }
    }
    // The token endpoint splits `scope` on whitespace.
    for scope in s.split_whitespace() {
        let Ok(parsed) = Scope::parse(scope) else {
            continue;
        };
        assert!(
            !parsed.kind.is_empty() && !parsed.kind.contains(':'),
            "{scope:?}"
        );
        assert!(!parsed.name.is_empty(), "{scope:?}");
        assert!(parsed
            .actions
            .iter()
            .all(|a| !a.is_empty() && !a.contains(':') && !a.contains(',')));
        let actions = scope.rsplit_once(':').unwrap().1;
        assert_eq!(scope, format!("{}:{}:{actions}", parsed.kind, parsed.name));
    }
});
