//! YAML documents as JSON values and back, for Kubernetes objects: what `wpod kube generate`
//! reads through and writes out of Kubernetes' own types (k8s-openapi, serde).

use std::borrow::Cow;

use saphyr::{LoadableYamlNode, Mapping, Scalar, Yaml, YamlEmitter};
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
    #[error("cannot write YAML: {0}")]
    Emit(String),
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

fn from_json(value: &Value) -> Yaml<'static> {
    match value {
        Value::Null => Yaml::Value(Scalar::Null),
        Value::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Yaml::Value(Scalar::Integer(i)),
            (None, Some(f)) => Yaml::Value(Scalar::FloatingPoint(f.into())),
            (None, None) => Yaml::Value(Scalar::String(Cow::Owned(n.to_string()))),
        },
        Value::String(s) => Yaml::Value(Scalar::String(Cow::Owned(s.clone()))),
        Value::Array(items) => Yaml::Sequence(items.iter().map(from_json).collect()),
        Value::Object(map) => {
            let mut out = Mapping::new();
            for (k, v) in map {
                out.insert(
                    Yaml::Value(Scalar::String(Cow::Owned(k.clone()))),
                    from_json(v),
                );
            }
            Yaml::Mapping(out)
        }
    }
}

/// The documents as one YAML stream (`---` before each).
pub fn write(docs: &[Value]) -> Result<String, YamlError> {
    let mut out = String::new();
    for doc in docs {
        let mut text = String::new();
        let mut emitter = YamlEmitter::new(&mut text);
        emitter.multiline(true);
        emitter
            .dump(&from_json(doc))
            .map_err(|e| YamlError::Emit(e.to_string()))?;
        out.push_str(&text);
        out.push('\n');
    }
    Ok(out)
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
                "k": 2.5, "l": "", "m": "0x1F", "n": "~", "o": "8080"}),
            serde_json::json!({"kind": "Pod", "items": [{"name": "x"}, "y"]}),
        ];
        let text = write(&docs).expect("written");
        assert_eq!(documents(&text).expect("read"), docs, "{text}");
    }
}
