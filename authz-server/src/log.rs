//! Structured logs: one line per event on stderr, as JSON (the default) or as `key=value` text,
//! filtered by level (`[log] level`, `KEYBOUND_AUTHZ_LOG__LEVEL`).
//!
//! Every line has `ts` (Unix seconds), `level` and `event`; request lines (event `request`, one
//! per HTTP request) add `method`, `path` (never the query, which may carry codes), `status`,
//! `ms` and `client`. Nothing that is a secret is ever logged: no tokens, codes, passwords,
//! assertions or proofs, only names, addresses and reasons.

use std::fmt::Write as _;
use std::sync::OnceLock;

use serde::Deserialize;

/// How important a line is; lines below the configured level are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Details for debugging.
    Debug,
    /// Normal operation: requests, refused requests, login failures.
    #[default]
    Info,
    /// Something an operator should look at.
    Warn,
    /// Something failed on the server's side.
    Error,
}

impl Level {
    /// The level's name as logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Json,
    /// `ts=… level=… event=… key=value …`, values quoted when they contain spaces or quotes.
    Text,
}

/// The `[log]` section of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// The lowest level written.
    pub level: Level,
    /// The line format.
    pub format: Format,
}

static SETTINGS: OnceLock<LogSettings> = OnceLock::new();

/// Sets the process's log settings (the first call wins; before it, info and JSON).
pub fn init(settings: &LogSettings) {
    let _ = SETTINGS.set(*settings);
}

fn settings() -> LogSettings {
    SETTINGS.get().copied().unwrap_or_default()
}

/// Whether a line at `level` would be written.
pub fn enabled(level: Level) -> bool {
    level >= settings().level
}

/// Writes one line: `event` with `fields` (an object; other values are logged as `detail`).
pub fn event(level: Level, event: &str, fields: serde_json::Value) {
    let s = settings();
    if level < s.level {
        return;
    }
    eprintln!("{}", render(s.format, crate::random::now(), level, event, fields));
}

/// The text of one line.
pub fn render(format: Format, ts: u64, level: Level, event: &str, fields: serde_json::Value) -> String {
    let fields = match fields {
        serde_json::Value::Object(o) => o,
        serde_json::Value::Null => serde_json::Map::new(),
        other => {
            let mut o = serde_json::Map::new();
            o.insert("detail".into(), other);
            o
        }
    };
    match format {
        Format::Json => {
            let mut line = serde_json::Map::new();
            line.insert("ts".into(), ts.into());
            line.insert("level".into(), level.as_str().into());
            line.insert("event".into(), event.into());
            for (k, v) in fields {
                line.entry(k).or_insert(v);
            }
            serde_json::Value::Object(line).to_string()
        }
        Format::Text => {
            let mut line = format!("ts={ts} level={} event={}", level.as_str(), text_value(event));
            for (k, v) in fields {
                let v = match v {
                    serde_json::Value::String(s) => text_value(&s),
                    other => text_value(&other.to_string()),
                };
                let _ = write!(line, " {k}={v}");
            }
            line
        }
    }
}

/// A value as written in text lines: bare when it has no space, quote, `=` or control character,
/// else JSON-quoted (so a line is always one line).
fn text_value(v: &str) -> String {
    if !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=')
    {
        v.to_owned()
    } else {
        serde_json::Value::String(v.to_owned()).to_string()
    }
}

fn level(name: &str) -> Level {
    match name {
        "debug" => Level::Debug,
        "info" => Level::Info,
        "warn" => Level::Warn,
        _ => Level::Error,
    }
}

/// Logs one line (`debug`, `info`, `warn`, `error`; see the module) with a `detail`.
pub fn log_line(level_name: &str, name: &str, detail: &str) {
    event(level(level_name), name, serde_json::json!({ "detail": detail }));
}

/// Logs one line with `fields` (an object) next to `ts`, `level`, `event`.
pub fn log_event(level_name: &str, name: &str, fields: serde_json::Value) {
    event(level(level_name), name, fields);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn json_and_text_lines_carry_the_same_fields_on_one_line() {
        let fields = serde_json::json!({ "path": "/token", "status": 400, "reason": "bad \"x\"\nnext" });
        let json = render(Format::Json, 7, Level::Info, "request", fields.clone());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["ts"], 7);
        assert_eq!(v["level"], "info");
        assert_eq!(v["event"], "request");
        assert_eq!(v["status"], 400);
        let text = render(Format::Text, 7, Level::Warn, "request", fields);
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with("ts=7 level=warn event=request "), "{text}");
        assert!(text.contains("path=/token") && text.contains("status=400"), "{text}");
        assert!(text.contains(r#"reason="bad \"x\"\nnext""#), "{text}");
        let detail = render(Format::Json, 1, Level::Error, "e", serde_json::json!("why"));
        assert!(detail.contains(r#""detail":"why""#), "{detail}");
    }

    #[test]
    fn levels_are_ordered() {
        assert!(Level::Debug < Level::Info && Level::Info < Level::Warn && Level::Warn < Level::Error);
        assert!(enabled(Level::Error));
    }
}
