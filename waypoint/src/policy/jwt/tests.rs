use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
use serde_json::json;

use super::*;
use crate::config::Service;

const SECRET: &[u8] = b"a test secret of thirty-two bytes";
const ISSUER: &str = "https://issuer.test";

fn jwks(secret: &[u8]) -> String {
    json!({"keys": [{"kty": "oct", "kid": "k1", "k": URL_SAFE_NO_PAD.encode(secret)}]}).to_string()
}

fn config(rule: &str) -> Config {
    let yaml = format!(
        "targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]\njwtRules:\n- {rule}"
    );
    Config {
        namespace: "shop".into(),
        name: "waypoint".into(),
        services: vec![Service {
            namespace: "shop".into(),
            name: "cart".into(),
            ..Service::default()
        }],
        request_authentications: vec![Named {
            namespace: "shop".into(),
            name: "jwt".into(),
            spec: serde_yaml_ng::from_str(&yaml).expect("the test rule is YAML"),
        }],
        ..Config::default()
    }
}

fn authentication(rule: &str) -> Authentication {
    let mut errors = Vec::new();
    let compiled = Authentication::compile(&config(rule), &mut errors);
    assert!(errors.is_empty(), "the test rule compiles: {errors:#?}");
    compiled
}

/// The default rule: issuer [`ISSUER`], audience `cart`, the test key inline.
fn default_rule() -> String {
    format!(
        "{{issuer: '{ISSUER}', audiences: [cart], jwks: '{}'}}",
        jwks(SECRET)
    )
}

fn token(claims: &Value, secret: &[u8]) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    encode(&header, claims, &EncodingKey::from_secret(secret)).expect("the test token encodes")
}

fn valid_claims() -> Value {
    json!({"iss": ISSUER, "sub": "alice", "aud": "cart", "exp": get_current_timestamp() + 600, "groups": ["dev", "ops"], "realm": {"role": "admin"}})
}

/// A fetcher for rules with inline keys (it is never asked).
fn fetcher() -> Fetcher {
    Fetcher::new(std::sync::Arc::new(crate::proxy::TcpConnector))
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    headers
}

#[tokio::test]
async fn a_valid_token_yields_its_principal_and_claims_and_is_not_forwarded() {
    let authentication = authentication(&default_rule());
    let mut headers = bearer(&token(&valid_claims(), SECRET));
    let claims = authentication
        .authenticate(&mut headers, None, None, &fetcher())
        .await
        .expect("the token verifies")
        .expect("the request carries a token");
    assert_eq!(claims.principal, format!("{ISSUER}/alice"));
    assert_eq!(claims.values(&["groups"]), ["dev", "ops"]);
    assert_eq!(claims.values(&["realm", "role"]), ["admin"]);
    assert!(claims.values(&["missing"]).is_empty());
    assert!(
        headers.get(header::AUTHORIZATION).is_none(),
        "the token is removed by default"
    );
}

#[tokio::test]
async fn no_token_passes_authentication() {
    let authentication = authentication(&default_rule());
    let mut headers = HeaderMap::new();
    assert_eq!(
        authentication
            .authenticate(&mut headers, Some("a=b"), None, &fetcher())
            .await,
        Ok(None)
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_with_envoys_reasons() {
    let authentication = authentication(&default_rule());
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = valid_claims();
        change(&mut claims);
        token(&claims, SECRET)
    };
    let cases = [
        (
            token(&valid_claims(), b"another secret of thirty-two bytes"),
            JwtFailure::Verification,
        ),
        (
            with(&|c| c["exp"] = json!(get_current_timestamp() - 600)),
            JwtFailure::Expired,
        ),
        (
            with(&|c| c["exp"] = json!("never")),
            JwtFailure::Verification,
        ),
        (
            with(&|c| c["nbf"] = json!(get_current_timestamp() + 600)),
            JwtFailure::NotYetValid,
        ),
        (
            with(&|c| c["iss"] = json!("https://other.test")),
            JwtFailure::UnknownIssuer,
        ),
        (with(&|c| c["aud"] = json!("web")), JwtFailure::Audience),
        (
            with(&|c| drop(c.as_object_mut().unwrap().remove("aud"))),
            JwtFailure::Audience,
        ),
        ("not.a-token".to_owned(), JwtFailure::BadFormat),
    ];
    for (token, expected) in cases {
        let result = authentication
            .authenticate(&mut bearer(&token), None, None, &fetcher())
            .await;
        assert_eq!(
            result.as_ref().err(),
            Some(&expected),
            "token {token}: {result:?}"
        );
    }
}

#[tokio::test]
async fn tokens_are_read_where_the_rule_says_and_optionally_forwarded() {
    let rule = format!(
        "{{issuer: '{ISSUER}', jwks: '{}', fromHeaders: [{{name: x-jwt, prefix: 'Token '}}], fromParams: [jwt], forwardOriginalToken: true, outputPayloadToHeader: x-jwt-payload}}",
        jwks(SECRET)
    );
    let authentication = authentication(&rule);
    let token = token(&valid_claims(), SECRET);
    let mut headers = HeaderMap::new();
    headers.insert("x-jwt", format!("Token {token}").parse().unwrap());
    let claims = authentication
        .authenticate(&mut headers, None, None, &fetcher())
        .await;
    assert!(matches!(claims, Ok(Some(_))), "from the header: {claims:?}");
    assert!(
        headers.get("x-jwt").is_some(),
        "forwardOriginalToken keeps it"
    );
    assert_eq!(headers["x-jwt-payload"], token.split('.').nth(1).unwrap());

    let mut forged = HeaderMap::new();
    forged.insert("x-jwt-payload", "eyJzdWIiOiJhZG1pbiJ9".parse().unwrap());
    let none = authentication
        .authenticate(&mut forged, None, None, &fetcher())
        .await;
    assert_eq!(none, Ok(None));
    assert!(
        forged.get("x-jwt-payload").is_none(),
        "a payload header without a verified token is dropped"
    );

    let query = format!("page=2&jwt={token}");
    let claims = authentication
        .authenticate(&mut HeaderMap::new(), Some(&query), None, &fetcher())
        .await;
    assert!(
        matches!(claims, Ok(Some(_))),
        "from the parameter: {claims:?}"
    );
    let ignored = authentication
        .authenticate(&mut bearer(&token), None, None, &fetcher())
        .await;
    assert_eq!(
        ignored,
        Ok(None),
        "Authorization is not read when the rule names locations"
    );
}

#[tokio::test]
async fn a_token_is_read_from_a_named_cookie_and_then_not_from_the_defaults() {
    let rule = format!(
        "{{issuer: '{ISSUER}', jwks: '{}', fromCookies: [session]}}",
        jwks(SECRET)
    );
    let authentication = authentication(&rule);
    let token = token(&valid_claims(), SECRET);
    let mut headers = HeaderMap::new();
    headers.append(header::COOKIE, "theme=dark".parse().unwrap());
    headers.append(
        header::COOKIE,
        format!("lang=en; session=\"{token}\"").parse().unwrap(),
    );
    let claims = authentication
        .authenticate(&mut headers, None, None, &fetcher())
        .await;
    assert_eq!(
        claims.map(|c| c.map(|c| c.principal)),
        Ok(Some(format!("{ISSUER}/alice"))),
        "from the second Cookie header, quotes removed"
    );
    let ignored = authentication
        .authenticate(
            &mut bearer(&token),
            None,
            Some("access_token=x"),
            &fetcher(),
        )
        .await;
    assert_eq!(ignored, Ok(None), "a rule naming cookies reads only them");
}

#[tokio::test]
async fn claims_are_copied_into_their_headers_and_forged_ones_dropped() {
    let rule = format!(
        "{{issuer: '{ISSUER}', jwks: '{}', outputClaimToHeaders: [{{header: x-sub, claim: sub}}, {{header: x-role, claim: realm.role}}, {{header: x-admin, claim: admin}}, {{header: x-level, claim: level}}, {{header: x-groups, claim: groups}}, {{header: x-missing, claim: nope}}]}}",
        jwks(SECRET)
    );
    let authentication = authentication(&rule);
    let mut claims = valid_claims();
    claims["admin"] = json!(true);
    claims["level"] = json!(3);
    let mut headers = bearer(&token(&claims, SECRET));
    headers.insert("x-missing", "forged".parse().unwrap());
    let verified = authentication
        .authenticate(&mut headers, None, None, &fetcher())
        .await;
    assert!(matches!(verified, Ok(Some(_))), "{verified:?}");
    assert_eq!(headers["x-sub"], "alice");
    assert_eq!(headers["x-role"], "admin", "a nested claim by `a.b`");
    assert_eq!(headers["x-admin"], "true");
    assert_eq!(headers["x-level"], "3");
    for absent in ["x-groups", "x-missing"] {
        assert!(
            headers.get(absent).is_none(),
            "{absent}: a list or a missing claim fills nothing, and a client's value is dropped"
        );
    }

    let mut forged = HeaderMap::new();
    forged.insert("x-sub", "admin".parse().unwrap());
    let none = authentication
        .authenticate(&mut forged, None, None, &fetcher())
        .await;
    assert_eq!(none, Ok(None));
    assert!(
        forged.get("x-sub").is_none(),
        "a claim header without a verified token is dropped"
    );
}

#[test]
fn malformed_rules_are_all_reported() {
    let mut errors = Vec::new();
    Authentication::compile(
        &config(
            "{issuer: '', jwksUri: 'ftp://issuer.test/jwks', outputClaimToHeaders: [{header: x-sub}]}",
        ),
        &mut errors,
    );
    Authentication::compile(
        &config("{issuer: b, jwksUri: 'issuer.test/jwks'}"),
        &mut errors,
    );
    Authentication::compile(&config("{issuer: a, jwks: '{\"keys\": []}'}"), &mut errors);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let expected = [
        "`jwtRules[0]`: the issuer is empty",
        "`jwtRules[0].jwksUri: ftp://issuer.test/jwks` cannot be fetched: write it as https://",
        "`jwtRules[0].outputClaimToHeaders`: header `x-sub` names no claim",
        "`jwtRules[0].jwksUri: issuer.test/jwks` cannot be fetched: write it as https://",
        "`jwtRules[0].jwks` is not a JSON Web Key Set: it has no keys",
    ];
    assert_eq!(messages.len(), expected.len(), "{messages:#?}");
    for (message, part) in messages.iter().zip(expected) {
        assert!(
            message.starts_with("RequestAuthentication shop/jwt: "),
            "{message}"
        );
        assert!(message.contains(part), "expected `{part}` in: {message}");
    }
}
