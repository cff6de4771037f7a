//! Open banking at the authorization server, in process: payment consent as RFC 9396
//! `authorization_details` (registered types, shown in plain words, signed into the consent
//! record, carried by the access token, the token response and introspection), signed request
//! objects at PAR (RFC 9101 with FAPI 2.0 Message Signing), and PSD2 roles from the client's
//! qualified certificate per client and per scope. Every refusal has its case.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::*;
use serde_json::{Value, json};

const TYPES: &str = r#"
[authorization_details_types.payment_initiation]
consent = "Pay {/instructedAmount/amount} {/instructedAmount/currency} to {/creditorName} ({/creditorAccount/iban})"
[authorization_details_types.payment_initiation.shape]
type = "object"
required = ["instructedAmount", "creditorName", "creditorAccount"]
additionalProperties = false
[authorization_details_types.payment_initiation.shape.properties.actions]
type = "array"
items = { enum = ["initiate", "status"] }
[authorization_details_types.payment_initiation.shape.properties.instructedAmount]
type = "object"
required = ["currency", "amount"]
properties = { currency = { enum = ["EUR", "GBP"] }, amount = { type = "string", maxLength = 18 } }
[authorization_details_types.payment_initiation.shape.properties.creditorName]
type = "string"
maxLength = 70
[authorization_details_types.payment_initiation.shape.properties.creditorAccount]
type = "object"
required = ["iban"]
properties = { iban = { type = "string", minLength = 15, maxLength = 34 } }

[authorization_details_types.account_information]
consent = "Read the accounts {/accounts}"
shape = { type = "object", properties = { accounts = { type = "array", items = { type = "string" } } } }

[psd2]
scope_roles = { accounts = ["PSP_AI"] }
"#;

/// The test configuration with the types registered, the mtls client allowed both, `fapi2`
/// required to sign its requests, and `fapi` allowed payments.
fn env() -> Env {
    let env = Env::new(&Options {
        extra: TYPES.into(),
        ..no_nonce()
    });
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text
        .replacen(
            "client_id = \"mtls\"\n",
            "client_id = \"mtls\"\nauthorization_details_types = [\"payment_initiation\", \"account_information\"]\n",
            1,
        )
        .replacen(
            "client_id = \"fapi\"\n",
            "client_id = \"fapi\"\nauthorization_details_types = [\"payment_initiation\"]\n",
            1,
        )
        .replacen(
            "client_id = \"fapi2\"\n",
            "client_id = \"fapi2\"\nrequire_signed_request_object = true\n",
            1,
        );
    std::fs::write(&env.config, text).unwrap();
    env
}

fn payment() -> Value {
    json!([{
        "type": "payment_initiation",
        "actions": ["initiate"],
        "instructedAmount": {"currency": "EUR", "amount": "123.50"},
        "creditorName": "Merchant A",
        "creditorAccount": {"iban": "DE02100100109307118603"}
    }])
}

fn par_form<'a>(challenge: &'a str, details: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut f = authz_params("mtls", challenge, REDIRECT);
    for p in &mut f {
        if p.0 == "scope" {
            p.1 = "openid";
        }
    }
    f.push(("authorization_details", details));
    f
}

#[tokio::test]
async fn a_payment_consent_is_shown_signed_and_carried_by_the_token() {
    let env = env();
    let server = InProcess::start(&env).await;
    let https = server.mtls(&env);
    let meta = https.get("/.well-known/openid-configuration").await.json();
    assert_eq!(
        meta["authorization_details_types_supported"],
        json!(["account_information", "payment_initiation"])
    );
    assert_eq!(meta["request_parameter_supported"], true);

    let (verifier, challenge) = pkce();
    let details = payment().to_string();
    let r = https.post_form("/par", &par_form(&challenge, &details), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let uri = r.json()["request_uri"].as_str().unwrap().to_owned();
    // The consent page says what is being agreed to, in plain words.
    let (cookie, txn) = login_page(&https, "mtls", &uri).await;
    let r = https
        .post_form(
            "/authorize/login",
            &[("txn", &txn), ("username", "alice"), ("password", PASSWORD)],
            &[("cookie", &cookie)],
        )
        .await;
    assert!(
        r.text()
            .contains("Pay 123.50 EUR to Merchant A (DE02100100109307118603)"),
        "{}",
        r.text()
    );
    let r = https
        .post_form(
            "/authorize/consent",
            &[("txn", &txn), ("decision", "allow")],
            &[("cookie", &cookie)],
        )
        .await;
    let location = r.header("location").unwrap();
    let code = form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    // The signed consent record holds the details.
    let consents = server.app.store.consents("alice").await.unwrap();
    let consent = claims(&consents.last().unwrap().jwt);
    assert_eq!(consent["authorization_details"], payment());

    // Asking the token endpoint for more than was granted is refused, the code stays usable.
    let more = json!([{"type": "payment_initiation", "instructedAmount": {"currency": "EUR", "amount": "999.00"},
        "creditorName": "Merchant A", "creditorAccount": {"iban": "DE02100100109307118603"}}])
    .to_string();
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", "mtls"),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let mut asking_more = form.clone();
    asking_more.push(("authorization_details", more.as_str()));
    let r = https.post_form("/token", &asking_more, &[]).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_authorization_details"));
    // The same details as granted may be named.
    let granted = payment().to_string();
    form.push(("authorization_details", granted.as_str()));
    let r = https.post_form("/token", &form, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["authorization_details"], payment());
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&token)["authorization_details"], payment());
    // Introspection tells the resource server what was granted.
    let intro = server.client(&env, None);
    let r = intro
        .post_form(
            "/introspect",
            &with_assertion(
                vec![("token", token.as_str()), ("client_id", "rs")],
                &assertion(&env, "rs", &rs_key()),
            ),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["authorization_details"], payment());
}

#[tokio::test]
async fn authorization_details_that_are_not_registered_or_allowed_are_refused() {
    let env = env();
    let server = InProcess::start(&env).await;
    let https = server.mtls(&env);
    let (_, challenge) = pkce();
    let mut wrong_currency = payment();
    wrong_currency[0]["instructedAmount"]["currency"] = json!("USD");
    let mut extra_field = payment();
    extra_field[0]["debtorAccount"] = json!({"iban": "DE02100100109307118603"});
    for (name, details) in [
        ("unknown type", json!([{"type": "card_payment"}]).to_string()),
        ("wrong currency", wrong_currency.to_string()),
        ("unknown field", extra_field.to_string()),
        ("not an array", json!({"type": "payment_initiation"}).to_string()),
        ("not JSON", "[{".to_owned()),
    ] {
        let r = https.post_form("/par", &par_form(&challenge, &details), &[]).await;
        assert_eq!(
            (r.status, r.error().as_str()),
            (400, "invalid_authorization_details"),
            "{name}"
        );
    }
    // A type the client is not registered for: fapi2 has none.
    let mut f = authz_params("fapi2", &challenge, REDIRECT);
    let details = payment().to_string();
    f.push(("authorization_details", &details));
    let a = assertion(&env, "fapi2", &fapi2_key());
    let r = server
        .client(&env, None)
        .post_form("/par", &with_assertion(f, &a), &[])
        .await;
    // fapi2 must sign its requests: refused for that first.
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_request"));
}

/// A signed request object at PAR: its parameters, and only those, make the request.
#[tokio::test]
async fn signed_request_objects_at_par() {
    let env = env();
    let server = InProcess::start(&env).await;
    let client = server.client(&env, None);
    let (_, challenge) = pkce();
    let object = |patch: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let n = now();
        let mut c = serde_json::Map::new();
        for (k, v) in [
            ("iss", json!("fapi2")),
            ("client_id", json!("fapi2")),
            ("aud", json!(env.issuer)),
            ("nbf", json!(n - 5)),
            ("exp", json!(n + 300)),
            ("jti", json!(unique())),
            ("response_type", json!("code")),
            ("redirect_uri", json!(REDIRECT)),
            ("scope", json!("openid")),
            ("code_challenge", json!(challenge)),
            ("code_challenge_method", json!("S256")),
            ("state", json!("signed-state")),
        ] {
            c.insert(k.into(), v);
        }
        patch(&mut c);
        keybound_core::jws::sign_json(&fapi2_key(), Some("oauth-authz-req+jwt"), None, &Value::Object(c)).unwrap()
    };
    let push = |request: String, outside: Vec<(&'static str, &'static str)>| {
        let client = &client;
        let env = &env;
        async move {
            let mut f: Vec<(&str, &str)> = vec![("client_id", "fapi2"), ("request", request.as_str())];
            f.extend(outside);
            let a = assertion(env, "fapi2", &fapi2_key());
            client.post_form("/par", &with_assertion(f, &a), &[]).await
        }
    };
    // Accepted; a parameter sent beside the object (another state) is ignored.
    let good = object(&|_| {});
    let r = push(good.clone(), vec![("state", "tampered-outside")]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let uri = r.json()["request_uri"].as_str().unwrap().to_owned();
    let stored = server.app.store.par(&uri).await.unwrap().unwrap();
    let request: Value = serde_json::from_str(&stored.params).unwrap();
    assert_eq!(request["state"], "signed-state");
    // The same object again: replayed.
    let r = push(good, vec![]).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_request_object"));
    // Tampered (a claim changed after signing), wrong audience, expired, too long-lived, from
    // another client, signed by another key: each refused.
    let tampered = {
        let jwt = object(&|_| {});
        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        let mut claims: Value = serde_json::from_slice(&keybound_core::b64::decode(&parts[1]).unwrap()).unwrap();
        claims["scope"] = json!("openid accounts payments");
        parts[1] = keybound_core::b64::encode(claims.to_string().as_bytes());
        parts.join(".")
    };
    let cases: Vec<(&str, String)> = vec![
        ("tampered", tampered),
        (
            "aud is the PAR endpoint",
            object(&|c| drop(c.insert("aud".into(), json!(env.url("/par"))))),
        ),
        ("expired", object(&|c| drop(c.insert("exp".into(), json!(now() - 60))))),
        (
            "lives more than 60 minutes",
            object(&|c| drop(c.insert("exp".into(), json!(now() + 3700)))),
        ),
        (
            "iss another client",
            object(&|c| drop(c.insert("iss".into(), json!("fapi")))),
        ),
        ("no nbf", object(&|c| drop(c.remove("nbf")))),
        (
            "signed by another key",
            keybound_core::jws::sign_json(&fapi_key(), None, None, &json!({"iss": "fapi2"})).unwrap(),
        ),
    ];
    for (name, jwt) in cases {
        let r = push(jwt, vec![]).await;
        assert_eq!(
            (r.status, r.error().as_str()),
            (400, "invalid_request_object"),
            "{name}: {}",
            r.text()
        );
    }
    // fapi2 must sign: a plain PAR is refused.
    let a = assertion(&env, "fapi2", &fapi2_key());
    let r = client
        .post_form(
            "/par",
            &with_assertion(authz_params("fapi2", &challenge, REDIRECT), &a),
            &[],
        )
        .await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_request"));
}

/// PSD2 roles: `accounts` needs PSP_AI (both certificates have it); a client that must be a
/// payment initiator needs PSP_PI, which the second certificate lacks.
#[tokio::test]
async fn psd2_roles_from_the_client_certificate() {
    let env = env();
    let text = std::fs::read_to_string(&env.config).unwrap();
    // Both of the mtls client's certificates carry its subject; make it a payment initiator.
    std::fs::write(
        &env.config,
        text.replacen(
            "client_id = \"mtls\"\n",
            "client_id = \"mtls\"\npsd2_roles = [\"PSP_PI\"]\n",
            1,
        ),
    )
    .unwrap();
    let server = InProcess::start(&env).await;
    let pi = server.mtls(&env);
    let ai = server.client(&env, Some(("mtls-client-ai.pem", "mtls-client-ai-key.pem")));
    let cc = [
        ("grant_type", "client_credentials"),
        ("client_id", "mtls"),
        ("scope", "accounts"),
    ];
    let r = pi.post_form("/token", &cc, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = ai.post_form("/token", &cc, &[]).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (401, "invalid_client"),
        "PSP_PI missing"
    );
    let (_, challenge) = pkce();
    let r = ai
        .post_form("/par", &authz_params("mtls", &challenge, REDIRECT), &[])
        .await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_client"));
    // The self-signed client has no PSD2 statement: the `accounts` scope needs PSP_AI.
    let ss = server.client(&env, Some(("selfsigned-client.pem", "selfsigned-client-key.pem")));
    let mut f = authz_params("selfsigned", &challenge, REDIRECT);
    for p in &mut f {
        if p.0 == "scope" {
            p.1 = "accounts";
        }
    }
    let r = ss.post_form("/par", &f, &[]).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_scope"), "{}", r.text());
}

/// Configuration mistakes about these features name their field.
#[test]
fn open_banking_configuration_errors_name_the_field() {
    let env = env();
    let good = std::fs::read_to_string(&env.config).unwrap();
    let refused = |text: String| {
        keybound_authz::config::Config::parse(&text, &env.dir)
            .unwrap_err()
            .field
    };
    assert_eq!(
        refused(good.replacen("maxLength = 70", "pattern = \"^x\"", 1)),
        "authorization_details_types.payment_initiation.shape.properties.creditorName.pattern"
    );
    assert_eq!(
        refused(good.replacen(
            "authorization_details_types = [\"payment_initiation\"]",
            "authorization_details_types = [\"card\"]",
            1
        )),
        "clients[0].authorization_details_types[0]"
    );
    assert_eq!(
        refused(good.replacen(
            "scope_roles = { accounts = [\"PSP_AI\"] }",
            "scope_roles = { accounts = [\"PSP_XX\"] }",
            1
        )),
        "psd2.scope_roles.accounts[0]"
    );
    assert_eq!(
        refused(good.replacen("scope_roles = { accounts", "scope_roles = { nope", 1)),
        "psd2.scope_roles.nope"
    );
    assert_eq!(
        refused(good.replacen(
            "client_id = \"spa\"\n",
            "client_id = \"spa\"\npsd2_roles = [\"PSP_PI\"]\n",
            1
        )),
        "clients[5].psd2_roles"
    );
}
