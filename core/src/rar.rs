//! Rich Authorization Requests ([RFC 9396]): `authorization_details` checked against the types an
//! operator registers, each with a declared shape (a subset of JSON Schema), and a plain-words
//! summary of each detail for a consent page.
//!
//! A request's `authorization_details` is a JSON array of objects, each with a string `type`
//! (RFC 9396 §2). Every `type` must be registered; the object must satisfy its type's shape; the
//! common fields of RFC 9396 §2.2 (`locations`, `actions`, `datatypes`, `privileges`: arrays of
//! strings; `identifier`: a string) must have their RFC types whatever the shape says. A refusal
//! names the JSON pointer of the offending value and maps to `invalid_authorization_details`.
//!
//! ## Shapes
//! The keywords understood (anything else refuses the configuration, so a shape never silently
//! checks less than its author meant): `type` (`object`, `array`, `string`, `number`,
//! `integer`, `boolean`, or an array of them), `properties`, `required`,
//! `additionalProperties` (`false` only, or absent), `items`, `minItems`, `maxItems`,
//! `minLength`, `maxLength`, `minimum`, `maximum`, `exclusiveMinimum`, `enum`, `const`,
//! `description` and `title` (ignored).
//!
//! ## Consent text
//! A type may declare `consent`: a sentence with `{pointer}` placeholders (JSON pointers into the
//! detail, e.g. `Pay {/instructedAmount/amount} {/instructedAmount/currency} to {/creditorName}`);
//! [`DetailTypes::describe`] fills them in (arrays joined with `, `). The caller escapes the text
//! for its page.
//!
//! [RFC 9396]: https://www.rfc-editor.org/rfc/rfc9396

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::Value;

use crate::error::{Error, Result};

/// The longest `authorization_details` array accepted.
pub const MAX_DETAILS: usize = 16;
/// How deep a shape or a detail may nest.
const MAX_DEPTH: usize = 16;

/// A registered type: its shape and consent sentence.
#[derive(Debug, Clone, PartialEq)]
struct DetailType {
    shape: Value,
    consent: Option<String>,
}

/// The types an operator registered, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetailTypes {
    types: BTreeMap<String, DetailType>,
}

fn config(field: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn invalid(at: &str, what: &'static str) -> Error {
    Error::AuthorizationDetailsInvalid {
        at: at.to_string(),
        what,
    }
}

const TYPES: [&str; 6] = ["object", "array", "string", "number", "integer", "boolean"];

/// Checks that `shape` only uses the keywords this module understands, with the right types.
fn check_shape(shape: &Value, field: &str, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(config(field, "nests too deep"));
    }
    let Value::Object(map) = shape else {
        return Err(config(field, "a shape is a JSON object"));
    };
    for (k, v) in map {
        let at = format!("{field}.{k}");
        let ok = match k.as_str() {
            "type" => match v {
                Value::String(t) => TYPES.contains(&t.as_str()),
                Value::Array(ts) => !ts.is_empty() && ts.iter().all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t))),
                _ => false,
            },
            "properties" => match v {
                Value::Object(props) => {
                    for (name, sub) in props {
                        check_shape(sub, &format!("{at}.{name}"), depth + 1)?;
                    }
                    true
                }
                _ => false,
            },
            "items" => {
                check_shape(v, &at, depth + 1)?;
                true
            }
            "required" => v.as_array().is_some_and(|r| r.iter().all(Value::is_string)),
            "additionalProperties" => v == &Value::Bool(false),
            "minItems" | "maxItems" | "minLength" | "maxLength" => v.as_u64().is_some(),
            "minimum" | "maximum" | "exclusiveMinimum" => v.is_number(),
            "enum" => v.as_array().is_some_and(|e| !e.is_empty()),
            "const" => true,
            "description" | "title" => v.is_string(),
            _ => return Err(config(&at, "unknown shape keyword")),
        };
        if !ok {
            return Err(config(&at, "has the wrong type for this keyword"));
        }
    }
    Ok(())
}

fn type_matches(name: &str, v: &Value) -> bool {
    match name {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        _ => false,
    }
}

/// Checks `v` against a shape already accepted by [`check_shape`].
fn validate(shape: &Value, v: &Value, at: &str, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(invalid(at, "nests too deep"));
    }
    let Value::Object(s) = shape else {
        return Ok(());
    };
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(t, v),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_matches(t, v)),
            _ => false,
        };
        if !ok {
            return Err(invalid(at, "has the wrong type"));
        }
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        return Err(invalid(at, "is not the required value"));
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.contains(v)
    {
        return Err(invalid(at, "is not one of the allowed values"));
    }
    if let Value::String(text) = v {
        let len = text.chars().count() as u64;
        if s.get("minLength").and_then(Value::as_u64).is_some_and(|m| len < m) {
            return Err(invalid(at, "is too short"));
        }
        if s.get("maxLength").and_then(Value::as_u64).is_some_and(|m| len > m) {
            return Err(invalid(at, "is too long"));
        }
    }
    if let Some(n) = v.as_f64() {
        if s.get("minimum").and_then(Value::as_f64).is_some_and(|m| n < m) {
            return Err(invalid(at, "is below the minimum"));
        }
        if s.get("exclusiveMinimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n <= m)
        {
            return Err(invalid(at, "is not above the minimum"));
        }
        if s.get("maximum").and_then(Value::as_f64).is_some_and(|m| n > m) {
            return Err(invalid(at, "is above the maximum"));
        }
    }
    if let Value::Array(items) = v {
        let len = items.len() as u64;
        if s.get("minItems").and_then(Value::as_u64).is_some_and(|m| len < m) {
            return Err(invalid(at, "has too few items"));
        }
        if s.get("maxItems").and_then(Value::as_u64).is_some_and(|m| len > m) {
            return Err(invalid(at, "has too many items"));
        }
        if let Some(item_shape) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(item_shape, item, &format!("{at}/{i}"), depth + 1)?;
            }
        }
    }
    if let Value::Object(fields) = v {
        if let Some(Value::Array(required)) = s.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    return Err(invalid(&format!("{at}/{}", escape(name)), "is required"));
                }
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        let closed = s.get("additionalProperties") == Some(&Value::Bool(false));
        for (name, value) in fields {
            let here = format!("{at}/{}", escape(name));
            match props.and_then(|p| p.get(name)) {
                Some(sub) => validate(sub, value, &here, depth + 1)?,
                None if closed && name != "type" => return Err(invalid(&here, "is not a known field")),
                None => {}
            }
        }
    }
    Ok(())
}

/// A JSON pointer token (RFC 6901 §3).
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// The RFC 9396 §2.2 common fields, checked for every type.
fn check_common(detail: &serde_json::Map<String, Value>, at: &str) -> Result<()> {
    for name in ["locations", "actions", "datatypes", "privileges"] {
        if let Some(v) = detail.get(name)
            && !v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
        {
            return Err(invalid(&format!("{at}/{name}"), "must be an array of strings"));
        }
    }
    if detail.get("identifier").is_some_and(|v| !v.is_string()) {
        return Err(invalid(&format!("{at}/identifier"), "must be a string"));
    }
    Ok(())
}

impl DetailTypes {
    /// The types of a configuration object `{ "<type>": { "shape": {…}, "consent": "…" } }`
    /// (`consent` optional), named `field` in errors.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field of an unknown keyword, a mistyped value, or a
    /// placeholder that is not a JSON pointer.
    pub fn from_config(types: &Value, field: &str) -> Result<DetailTypes> {
        let Value::Object(map) = types else {
            return Err(config(field, "must be an object of types"));
        };
        let mut out = BTreeMap::new();
        for (name, def) in map {
            let at = format!("{field}.{name}");
            if name.is_empty() {
                return Err(config(&at, "a type name is not empty"));
            }
            let Value::Object(def) = def else {
                return Err(config(&at, "must be an object with `shape`"));
            };
            for k in def.keys() {
                if k != "shape" && k != "consent" {
                    return Err(config(
                        &format!("{at}.{k}"),
                        "unknown field (expected `shape`, `consent`)",
                    ));
                }
            }
            let shape = def.get("shape").ok_or_else(|| config(&at, "missing `shape`"))?;
            check_shape(shape, &format!("{at}.shape"), 0)?;
            let consent = match def.get("consent") {
                None => None,
                Some(Value::String(s)) => {
                    placeholders(s).map_err(|reason| config(&format!("{at}.consent"), reason))?;
                    Some(s.clone())
                }
                Some(_) => return Err(config(&format!("{at}.consent"), "must be a string")),
            };
            out.insert(
                name.clone(),
                DetailType {
                    shape: shape.clone(),
                    consent,
                },
            );
        }
        Ok(DetailTypes { types: out })
    }

    /// The registered type names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// Whether no type is registered.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Parses and checks a request's `authorization_details` (the parameter's JSON text).
    ///
    /// # Errors
    /// [`Error::AuthorizationDetailsInvalid`] with the JSON pointer of the first offending value.
    pub fn parse(&self, text: &str) -> Result<Value> {
        let v: Value = serde_json::from_str(text).map_err(|_| invalid("", "is not JSON"))?;
        self.check(&v)?;
        Ok(v)
    }

    /// Checks an `authorization_details` value.
    ///
    /// # Errors
    /// As [`DetailTypes::parse`].
    pub fn check(&self, details: &Value) -> Result<()> {
        let Value::Array(list) = details else {
            return Err(invalid("", "must be a JSON array"));
        };
        if list.is_empty() {
            return Err(invalid("", "must not be empty"));
        }
        if list.len() > MAX_DETAILS {
            return Err(invalid("", "has too many entries"));
        }
        for (i, detail) in list.iter().enumerate() {
            let at = format!("/{i}");
            let Value::Object(fields) = detail else {
                return Err(invalid(&at, "must be a JSON object"));
            };
            let name = fields
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{at}/type"), "is required and must be a string"))?;
            let t = self
                .types
                .get(name)
                .ok_or_else(|| invalid(&format!("{at}/type"), "is not a supported type"))?;
            check_common(fields, &at)?;
            validate(&t.shape, detail, &at, 0)?;
        }
        Ok(())
    }

    /// One plain sentence per detail of a checked `authorization_details`: the type's `consent`
    /// with its placeholders filled in, or the type's name and its fields when it has none.
    pub fn describe(&self, details: &Value) -> Vec<String> {
        let Some(list) = details.as_array() else {
            return Vec::new();
        };
        list.iter()
            .map(|d| {
                let name = d.get("type").and_then(Value::as_str).unwrap_or("");
                match self.types.get(name).and_then(|t| t.consent.as_deref()) {
                    Some(template) => fill(template, d),
                    None => format!("{name}: {d}"),
                }
            })
            .collect()
    }

    /// The types present in an `authorization_details` value.
    pub fn types_of(details: &Value) -> Vec<&str> {
        details
            .as_array()
            .map(|l| l.iter().filter_map(|d| d.get("type").and_then(Value::as_str)).collect())
            .unwrap_or_default()
    }
}

/// The JSON pointers of a consent template's placeholders.
fn placeholders(template: &str) -> core::result::Result<Vec<&str>, &'static str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = rest.get(start + 1..).unwrap_or("");
        let end = after.find('}').ok_or("a `{` without its `}`")?;
        let pointer = after.get(..end).unwrap_or("");
        if !pointer.starts_with('/') {
            return Err("a placeholder is a JSON pointer starting with `/`");
        }
        out.push(pointer);
        rest = after.get(end + 1..).unwrap_or("");
    }
    Ok(out)
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join(", "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn fill(template: &str, detail: &Value) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(rest.get(..start).unwrap_or(""));
        let after = rest.get(start + 1..).unwrap_or("");
        let Some(end) = after.find('}') else {
            break;
        };
        let pointer = after.get(..end).unwrap_or("");
        out.push_str(
            &detail
                .pointer(pointer)
                .map(text_of)
                .unwrap_or_else(|| "(not given)".into()),
        );
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed step fails the test")]
mod tests {
    use super::*;
    use alloc::vec;
    use serde_json::json;

    fn types() -> DetailTypes {
        DetailTypes::from_config(
            &json!({
                "payment_initiation": {
                    "consent": "Pay {/instructedAmount/amount} {/instructedAmount/currency} to {/creditorName} ({/creditorAccount/iban})",
                    "shape": {
                        "type": "object",
                        "required": ["instructedAmount", "creditorName", "creditorAccount"],
                        "additionalProperties": false,
                        "properties": {
                            "actions": {"type": "array", "items": {"enum": ["initiate", "status", "cancel"]}},
                            "locations": {"type": "array"},
                            "instructedAmount": {
                                "type": "object",
                                "required": ["currency", "amount"],
                                "additionalProperties": false,
                                "properties": {
                                    "currency": {"type": "string", "enum": ["EUR", "GBP"]},
                                    "amount": {"type": "string", "minLength": 1, "maxLength": 18}
                                }
                            },
                            "creditorName": {"type": "string", "minLength": 1, "maxLength": 70},
                            "creditorAccount": {
                                "type": "object",
                                "required": ["iban"],
                                "properties": {"iban": {"type": "string", "minLength": 15, "maxLength": 34}}
                            },
                            "remittanceInformationUnstructured": {"type": "string", "maxLength": 140}
                        }
                    }
                },
                "account_information": {
                    "consent": "Read {/actions} of accounts {/accounts}",
                    "shape": {
                        "type": "object",
                        "properties": {
                            "accounts": {"type": "array", "minItems": 1, "maxItems": 10, "items": {"type": "string"}},
                            "days": {"type": "integer", "minimum": 1, "maximum": 90}
                        }
                    }
                }
            }),
            "authorization_details_types",
        )
        .unwrap()
    }

    fn payment() -> Value {
        json!({
            "type": "payment_initiation",
            "actions": ["initiate", "status"],
            "locations": ["https://bank.example/payments"],
            "instructedAmount": {"currency": "EUR", "amount": "123.50"},
            "creditorName": "Merchant A",
            "creditorAccount": {"iban": "DE02100100109307118603"}
        })
    }

    fn refusal(details: Value) -> (String, &'static str) {
        match types().check(&details) {
            Err(Error::AuthorizationDetailsInvalid { at, what }) => (at, what),
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn registered_details_pass_and_read_in_plain_words() {
        let t = types();
        let details =
            json!([payment(), {"type": "account_information", "actions": ["read"], "accounts": ["A1", "A2"]}]);
        t.check(&details).unwrap();
        assert_eq!(
            t.describe(&details),
            [
                "Pay 123.50 EUR to Merchant A (DE02100100109307118603)",
                "Read read of accounts A1, A2"
            ]
        );
        assert_eq!(
            DetailTypes::types_of(&details),
            ["payment_initiation", "account_information"]
        );
        assert_eq!(
            t.names().collect::<Vec<_>>(),
            ["account_information", "payment_initiation"]
        );
        assert_eq!(t.parse(&details.to_string()).unwrap(), details);
    }

    #[test]
    fn every_refusal_names_the_offending_value() {
        let mut p = payment();
        p["instructedAmount"]["currency"] = json!("USD");
        assert_eq!(
            refusal(json!([p])),
            (
                "/0/instructedAmount/currency".into(),
                "is not one of the allowed values"
            )
        );
        let mut p = payment();
        p.as_object_mut().unwrap().remove("creditorName");
        assert_eq!(refusal(json!([p])), ("/0/creditorName".into(), "is required"));
        let mut p = payment();
        p["extra"] = json!(1);
        assert_eq!(refusal(json!([p])), ("/0/extra".into(), "is not a known field"));
        let mut p = payment();
        p["actions"] = json!(["delete"]);
        assert_eq!(
            refusal(json!([p])),
            ("/0/actions/0".into(), "is not one of the allowed values")
        );
        let mut p = payment();
        p["locations"] = json!("https://bank.example");
        assert_eq!(
            refusal(json!([p])),
            ("/0/locations".into(), "must be an array of strings")
        );
        let mut p = payment();
        p["creditorAccount"]["iban"] = json!("DE02");
        assert_eq!(refusal(json!([p])), ("/0/creditorAccount/iban".into(), "is too short"));
        assert_eq!(
            refusal(json!([{"type": "account_information", "days": 91}])),
            ("/0/days".into(), "is above the maximum")
        );
        assert_eq!(
            refusal(json!([{"type": "account_information", "days": 1.5}])),
            ("/0/days".into(), "has the wrong type")
        );
        assert_eq!(
            refusal(json!([{"type": "account_information", "accounts": []}])),
            ("/0/accounts".into(), "has too few items")
        );
        assert_eq!(
            refusal(json!([{"type": "account_information", "identifier": 7}])),
            ("/0/identifier".into(), "must be a string")
        );
        assert_eq!(
            refusal(json!([{"type": "unknown"}])),
            ("/0/type".into(), "is not a supported type")
        );
        assert_eq!(
            refusal(json!([{"actions": []}])),
            ("/0/type".into(), "is required and must be a string")
        );
        assert_eq!(refusal(json!(["x"])), ("/0".into(), "must be a JSON object"));
        assert_eq!(refusal(json!([])), ("".into(), "must not be empty"));
        assert_eq!(refusal(json!({"type": "x"})), ("".into(), "must be a JSON array"));
        assert_eq!(
            refusal(json!(vec![payment(); MAX_DETAILS + 1])),
            ("".into(), "has too many entries")
        );
        assert!(matches!(
            types().parse("[{"),
            Err(Error::AuthorizationDetailsInvalid {
                what: "is not JSON",
                ..
            })
        ));
    }

    #[test]
    fn shapes_with_unknown_or_mistyped_keywords_refuse_the_configuration() {
        let field = |v: Value| match DetailTypes::from_config(&v, "t") {
            Err(Error::Config { field, .. }) => field,
            other => panic!("accepted: {other:?}"),
        };
        assert_eq!(field(json!({"p": {"shape": {"pattern": "^x$"}}})), "t.p.shape.pattern");
        assert_eq!(
            field(json!({"p": {"shape": {"properties": {"a": {"type": "strng"}}}}})),
            "t.p.shape.properties.a.type"
        );
        assert_eq!(
            field(json!({"p": {"shape": {"additionalProperties": true}}})),
            "t.p.shape.additionalProperties"
        );
        assert_eq!(
            field(json!({"p": {"shape": {}, "consent": "Pay {amount}"}})),
            "t.p.consent"
        );
        assert_eq!(
            field(json!({"p": {"shape": {}, "consent": "Pay {/amount"}})),
            "t.p.consent"
        );
        assert_eq!(field(json!({"p": {"schema": {}}})), "t.p.schema");
        assert_eq!(field(json!({"p": {}})), "t.p");
        assert_eq!(field(json!([])), "t");
        // A missing field in a consent sentence reads as "(not given)".
        let t = DetailTypes::from_config(&json!({"p": {"shape": {}, "consent": "to {/who}"}}), "t").unwrap();
        assert_eq!(t.describe(&json!([{"type": "p"}])), ["to (not given)"]);
    }
}
