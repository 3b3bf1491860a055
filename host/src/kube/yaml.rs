//! YAML documents as JSON values and back, for Kubernetes objects: what `wpod kube generate`
//! reads through and writes out of Kubernetes' own types (k8s-openapi, serde).

use saphyr::{LoadableYamlNode, Scalar, Yaml};
use serde_json::Value;

/// Why a YAML text is not a list of JSON-shaped documents.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("not YAML: {0}")]
    Parse(String),
    #[error("a mapping key is not a string ({0}); Kubernetes objects have string keys")]
    Key(String),
    #[error("{0}: YAML anchors, aliases and tags are not used in Kubernetes objects")]
    Unsupported(&'static str),
}

/// Every document of `text`, as JSON values.
pub fn documents(text: &str) -> Result<Vec<Value>, YamlError> {
    let docs = Yaml::load_from_str(text).map_err(|e| YamlError::Parse(e.to_string()))?;
    docs.iter()
        .filter(|d| !matches!(d, Yaml::Value(Scalar::Null)))
        .map(to_json)
        .collect()
}

fn to_json(node: &Yaml<'_>) -> Result<Value, YamlError> {
    Ok(match node {
        Yaml::Value(s) => scalar(s),
        Yaml::Representation(text, _, _) => Value::String(text.to_string()),
        Yaml::Sequence(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = match k {
                    Yaml::Value(Scalar::String(s)) => s.to_string(),
                    Yaml::Representation(s, _, _) => s.to_string(),
                    other => return Err(YamlError::Key(format!("{other:?}"))),
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        Yaml::Tagged(_, _) => return Err(YamlError::Unsupported("a tag")),
        Yaml::Alias(_) => return Err(YamlError::Unsupported("an alias")),
        Yaml::BadValue => return Err(YamlError::Parse("a bad value".into())),
    })
}

fn scalar(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::from(*i),
        Scalar::FloatingPoint(f) => {
            serde_json::Number::from_f64(f.into_inner()).map_or(Value::Null, Value::Number)
        }
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

/// The documents as one YAML stream (`---` before each), in block style. Every string is
/// double-quoted (JSON's escapes are YAML's), and every key that a YAML 1.1 reader could take
/// for something else: kubectl reads YAML 1.1, where `y`, `on` or `0b101` unquoted are not
/// strings.
pub fn write(docs: &[Value]) -> Result<String, YamlError> {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        match doc {
            Value::Object(map) if !map.is_empty() => block_map(map, 0, &mut out),
            Value::Array(items) if !items.is_empty() => block_seq(items, 0, &mut out),
            other => {
                out.push_str(&scalar_text(other));
                out.push('\n');
            }
        }
    }
    Ok(out)
}

fn indent(n: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn block_map(map: &serde_json::Map<String, Value>, at: usize, out: &mut String) {
    for (k, v) in map {
        indent(at, out);
        out.push_str(&key_text(k));
        out.push(':');
        value_after(v, at + 2, out);
    }
}

fn block_seq(items: &[Value], at: usize, out: &mut String) {
    for v in items {
        indent(at, out);
        out.push('-');
        match v {
            // A mapping in a sequence starts on the dash's line.
            Value::Object(map) if !map.is_empty() => {
                let mut inner = String::new();
                block_map(map, at + 2, &mut inner);
                out.push(' ');
                out.push_str(&inner[at + 2..]);
            }
            _ => value_after(v, at + 2, out),
        }
    }
}

/// A value after `key:` or `-`: on the same line when it is a scalar or empty, else below.
fn value_after(v: &Value, at: usize, out: &mut String) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            block_map(map, at, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            block_seq(items, at, out);
        }
        Value::String(text) if literal_block(text) => {
            // A block scalar: a string in every YAML version, and readable (a manifest in a
            // ConfigMap). Chomping keeps the final line breaks exactly.
            let breaks = text.len() - text.trim_end_matches('\n').len();
            out.push_str(match breaks {
                0 => " |-\n",
                1 => " |\n",
                _ => " |+\n",
            });
            for line in text.trim_end_matches('\n').split('\n') {
                if !line.is_empty() {
                    indent(at, out);
                }
                out.push_str(line);
                out.push('\n');
            }
            for _ in 1..breaks {
                out.push('\n');
            }
        }
        other => {
            out.push(' ');
            out.push_str(&scalar_text(other));
            out.push('\n');
        }
    }
}

/// Whether `text` can be written as a literal block scalar: several lines, nothing a block
/// cannot hold (other control characters, a first line starting with a space, which would
/// need an indentation indicator).
fn literal_block(text: &str) -> bool {
    text.contains('\n')
        // A first line starting with a space or a tab would set (or break) the indentation.
        && !text.starts_with([' ', '\t', '\n'])
        && !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
        && !text.contains(['\u{feff}', '\u{fffe}', '\u{ffff}', '\u{2028}', '\u{2029}', '\u{85}'])
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        Value::String(text) => quoted(text),
        // JSON's forms of numbers and booleans are YAML's too.
        other => other.to_string(),
    }
}

/// `text` double-quoted, with every character a YAML reader would not keep as it is escaped:
/// control characters (C0, DEL, C1), YAML's line breaks (U+0085, U+2028, U+2029), the byte
/// order mark and the non-characters U+FFFE and U+FFFF (YAML 1.1 readers refuse them raw).
fn quoted(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if c.is_control() || matches!(c, '\u{feff}' | '\u{fffe}' | '\u{ffff}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key as it is when no YAML reader can take it for anything but that string, else quoted.
fn key_text(k: &str) -> String {
    let plain = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    match plain {
        true => k.to_string(),
        false => quoted(k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is written reads back as the same values: strings that look like numbers, booleans
    /// or nulls stay strings, multi-line strings stay whole.
    #[test]
    fn documents_round_trip() {
        let docs = vec![
            serde_json::json!({"a": "1", "b": 1, "c": "true", "d": true, "e": "null",
                "f": "line one\nline two\n", "g": [], "h": {}, "i": "-x", "j": "a: b",
                "k": 2.5, "l": "", "m": "0x1F", "n": "~", "o": "8080", "y": "y", "N": "N",
                "p": "1_000", "q": "0b101", "r": "2001-12-14", "on": "off", "a b": "\u{7}\t",
                "s": [{"t": ["u", {"v": "w"}], "x": {}}, [], ["z"]],
                "b1": "a\n b\n\nc", "b2": "x\n\n\n", "b3": "  lead\nx\n", "b4": "tab\tin\n",
                "c1": "a\u{85}b", "c2": "a \u{2028} b\u{2029}",
                "c3": "\u{7f}\u{80}\u{fffe}\u{ffff}\u{feff}", "c4": "\tfirst\nsecond",
                "k\u{85}": "v", "c5": "\\ \" '"}),
            serde_json::json!({"kind": "Pod", "items": [{"name": "x"}, "y"]}),
        ];
        let text = write(&docs).expect("written");
        assert_eq!(documents(&text).expect("read"), docs, "{text}");
        // What a YAML 1.1 reader (kubectl) would change or refuse is never written raw.
        for raw in [
            '\u{85}', '\u{2028}', '\u{2029}', '\u{7f}', '\u{80}', '\u{fffe}', '\u{feff}',
        ] {
            assert!(!text.contains(raw), "{raw:?} written raw:\n{text}");
        }
        assert!(text.contains("c4: \"\\tfirst\\nsecond\""), "{text}");
    }
}
