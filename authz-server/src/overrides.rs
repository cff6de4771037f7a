//! Where configuration values come from besides the file: environment overrides and secrets read
//! from files, applied to the parsed TOML before it is validated.
//!
//! - **Environment:** `KEYBOUND_AUTHZ_<KEY>` sets a top-level key, `__` separates nested keys:
//!   `KEYBOUND_AUTHZ_LISTEN=0.0.0.0:8443`, `KEYBOUND_AUTHZ_LOG__LEVEL=debug`,
//!   `KEYBOUND_AUTHZ_TOKENS__ACCESS_TOKEN_LIFETIME=120`. The value is read as a TOML value when
//!   it is one (`120`, `true`, `["openid", "accounts"]`) and as a string otherwise. Setting `X`
//!   replaces an `X_file` of the same table and the other way round.
//! - **Secrets from files:** each secret field may be given as `<field>_file`, a path (relative
//!   to the config file's directory) whose content is the value: [`SECRET_FIELDS`]. List fields
//!   read one value per non-empty line. Giving both `X` and `X_file` in the file is refused.

use std::path::Path;

/// A value that cannot be taken: the field (or variable) and why. The configuration reports it as
/// its own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path or the variable's name.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "KEYBOUND_AUTHZ_";

/// How a secret file's content becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileValue {
    /// The whole content, without the trailing line break.
    Text,
    /// One value per non-empty line (trimmed).
    Lines,
}

/// The fields that may be read from a file (`<name>_file`), wherever they appear.
pub const SECRET_FIELDS: [(&str, FileValue); 7] = [
    ("url", FileValue::Text),
    ("database", FileValue::Text),
    ("pairwise_salt", FileValue::Text),
    ("nonce_secrets", FileValue::Lines),
    ("initial_access_tokens", FileValue::Lines),
    ("password_hash", FileValue::Text),
    ("totp_secret", FileValue::Text),
];

fn err(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Applies `KEYBOUND_AUTHZ_*` variables from `vars` to `root`.
///
/// # Errors
/// The variable's name as the field when it does not name a key of a table.
pub fn apply_env(root: &mut toml::Table, vars: impl IntoIterator<Item = (String, String)>) -> Result<(), FieldError> {
    let mut vars: Vec<(String, String)> = vars.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    vars.sort();
    for (name, value) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(err(name, "empty key in the variable's name"));
        }
        let Some((leaf, tables)) = path.split_last() else {
            continue;
        };
        let mut table = &mut *root;
        for key in tables {
            let entry = table
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => return Err(err(name, format!("`{key}` is not a table"))),
            };
        }
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        // The variable wins over the file's other spelling of the same field.
        match leaf.strip_suffix("_file") {
            Some(base) => table.remove(base),
            None => table.remove(&format!("{leaf}_file")),
        };
        table.insert(leaf.clone(), parsed);
    }
    Ok(())
}

/// Replaces every `<secret>_file` in `value` (recursively) by the file's content.
///
/// # Errors
/// The `…_file` field when the file cannot be read, is not text or is empty, or when the field is
/// also given directly.
pub fn read_secret_files(value: &mut toml::Table, base: &Path, at: &str) -> Result<(), FieldError> {
    for (name, kind) in SECRET_FIELDS {
        let file_key = format!("{name}_file");
        let Some(path) = value.remove(&file_key) else {
            continue;
        };
        let field = join(at, &file_key);
        if value.contains_key(name) {
            return Err(err(field, format!("set together with `{name}`: give one of them")));
        }
        let toml::Value::String(path) = path else {
            return Err(err(field, "must be a file path"));
        };
        let full = if Path::new(&path).is_absolute() {
            Path::new(&path).to_path_buf()
        } else {
            base.join(&path)
        };
        let text = std::fs::read_to_string(&full).map_err(|e| err(&field, format!("{}: {e}", full.display())))?;
        let read = match kind {
            FileValue::Text => {
                let t = text.strip_suffix('\n').unwrap_or(&text);
                let t = t.strip_suffix('\r').unwrap_or(t);
                (!t.is_empty()).then(|| toml::Value::String(t.to_owned()))
            }
            FileValue::Lines => {
                let lines: Vec<toml::Value> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| toml::Value::String(l.to_owned()))
                    .collect();
                (!lines.is_empty()).then_some(toml::Value::Array(lines))
            }
        };
        let read = read.ok_or_else(|| err(&field, format!("{} is empty", full.display())))?;
        value.insert(name.to_owned(), read);
    }
    for (key, v) in value.iter_mut() {
        match v {
            toml::Value::Table(t) => read_secret_files(t, base, &join(at, key))?,
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let toml::Value::Table(t) = item {
                        read_secret_files(t, base, &format!("{}[{i}]", join(at, key)))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn environment_sets_nested_keys_with_toml_or_string_values() {
        let mut t = table("listen = \"127.0.0.1:1\"\n[tokens]\ncode_lifetime = 30\n[users]\n");
        apply_env(
            &mut t,
            vars(&[
                ("KEYBOUND_AUTHZ_LISTEN", "0.0.0.0:8443"),
                ("KEYBOUND_AUTHZ_TOKENS__CODE_LIFETIME", "10"),
                ("KEYBOUND_AUTHZ_LOG__LEVEL", "debug"),
                ("KEYBOUND_AUTHZ_SCOPES", r#"["openid", "a"]"#),
                ("OTHER_LISTEN", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(t["listen"].as_str(), Some("0.0.0.0:8443"));
        assert_eq!(t["tokens"]["code_lifetime"].as_integer(), Some(10));
        assert_eq!(t["log"]["level"].as_str(), Some("debug"));
        assert_eq!(t["scopes"].as_array().unwrap().len(), 2);
        let e = apply_env(&mut t, vars(&[("KEYBOUND_AUTHZ_LISTEN__X", "1")])).unwrap_err();
        assert_eq!(e.field, "KEYBOUND_AUTHZ_LISTEN__X");
        let e = apply_env(&mut t, vars(&[("KEYBOUND_AUTHZ_LOG____LEVEL", "1")])).unwrap_err();
        assert_eq!(e.field, "KEYBOUND_AUTHZ_LOG____LEVEL");
    }

    #[test]
    fn environment_replaces_the_other_spelling_of_a_secret() {
        let mut t = table("pairwise_salt = \"inline\"");
        apply_env(&mut t, vars(&[("KEYBOUND_AUTHZ_PAIRWISE_SALT_FILE", "/run/salt")])).unwrap();
        assert!(!t.contains_key("pairwise_salt"));
        assert_eq!(t["pairwise_salt_file"].as_str(), Some("/run/salt"));
    }

    #[test]
    fn secrets_are_read_from_files_and_conflicts_or_bad_files_name_the_field() {
        let dir = std::env::temp_dir().join(format!("kb-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("salt"), "s3cret\n").unwrap();
        std::fs::write(dir.join("nonces"), "one\n\n two \n").unwrap();
        std::fs::write(dir.join("empty"), "\n").unwrap();
        let mut t = table(
            "pairwise_salt_file = \"salt\"\n[dpop]\nnonce_secrets_file = \"nonces\"\n[[users]]\nusername = \"a\"\n[[users]]\npassword_hash_file = \"salt\"\n",
        );
        read_secret_files(&mut t, &dir, "").unwrap();
        assert_eq!(t["pairwise_salt"].as_str(), Some("s3cret"));
        assert_eq!(
            t["dpop"]["nonce_secrets"].as_array().unwrap(),
            &vec![toml::Value::from("one"), toml::Value::from("two")]
        );
        assert_eq!(t["users"][1]["password_hash"].as_str(), Some("s3cret"));
        let e = read_secret_files(&mut table("[[users]]\npassword_hash_file = \"missing\""), &dir, "").unwrap_err();
        assert_eq!(e.field, "users[0].password_hash_file");
        let e = read_secret_files(
            &mut table("pairwise_salt = \"x\"\npairwise_salt_file = \"salt\""),
            &dir,
            "",
        )
        .unwrap_err();
        assert_eq!(e.field, "pairwise_salt_file");
        let e = read_secret_files(&mut table("pairwise_salt_file = \"empty\""), &dir, "").unwrap_err();
        assert!(e.reason.contains("empty"), "{e:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
