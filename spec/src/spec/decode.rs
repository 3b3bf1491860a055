//! Decoding a located YAML tree into wpod's typed Pod model.
//!
//! serde stops at the first error and YAML values carry no position, but a Kubernetes user
//! expects every problem at once, each with `file:line:col` (kubectl --validate=strict). So the
//! manifest is read as saphyr's span-carrying tree and decoded field by field here: each object
//! names the fields it reads, and whatever is left over is an unknown field (with a "did you
//! mean") or a Kubernetes field wpod does not support yet.

use std::collections::BTreeMap;

use saphyr::{MarkedYaml, Scalar, YamlData};

use super::diag::{Diagnostic, Loc, SourceMap};

pub type Node<'i> = MarkedYaml<'i>;

pub fn loc_of(node: &Node) -> Loc {
    // saphyr lines are 1-based and columns 0-based; editors and compilers use 1-based for both.
    Loc {
        line: node.span.start.line(),
        col: node.span.start.col() + 1,
    }
}

/// Collects the typed values and the problems of one document.
pub struct Decoder {
    pub map: SourceMap,
    pub diags: Vec<Diagnostic>,
    /// The manifest's text, for values whose spelling matters (a file mode's leading 0).
    text: std::sync::Arc<str>,
}

/// Something that can be read from a YAML node, reporting its own problems.
pub trait Decode: Sized {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self>;
}

impl Decoder {
    pub fn new(map: SourceMap) -> Self {
        Decoder {
            map,
            diags: Vec::new(),
            text: std::sync::Arc::from(""),
        }
    }

    /// A decoder that can read how a scalar was spelled in `text`.
    pub fn with_text(map: SourceMap, text: std::sync::Arc<str>) -> Self {
        Decoder {
            map,
            diags: Vec::new(),
            text,
        }
    }

    /// The scalar at `node` as written (digits and letters from its first character).
    fn spelling(&self, node: &Node) -> String {
        let (line, col) = (node.span.start.line(), node.span.start.col());
        self.text
            .lines()
            .nth(line.saturating_sub(1))
            .map(|l| {
                l.chars()
                    .skip(col)
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn error_at(&mut self, loc: Loc, path: &str, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            file: self.map.file.clone(),
            loc,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Decodes `node` as `T`, remembering where `path` was written. `null` counts as absent, as
    /// in Kubernetes.
    pub fn value<T: Decode>(&mut self, node: &Node, path: &str) -> Option<T> {
        self.map.record(path, loc_of(node));
        if matches!(node.data, YamlData::Value(Scalar::Null)) {
            return None;
        }
        if matches!(node.data, YamlData::Alias(_)) {
            self.error_at(
                loc_of(node),
                path,
                "YAML aliases are not supported; write the value out",
            );
            return None;
        }
        T::decode(self, node, path)
    }

    /// Reads a mapping node field by field through `read`; reports leftover keys afterwards.
    pub fn object<T>(
        &mut self,
        node: &Node,
        path: &str,
        read: impl FnOnce(&mut Fields<'_, '_>) -> T,
    ) -> Option<T> {
        let YamlData::Mapping(map) = &node.data else {
            self.error_at(
                loc_of(node),
                path,
                format!("expected an object, found {}", kind_of(node)),
            );
            return None;
        };
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in map.iter() {
            match scalar_string(k) {
                Some(key) => entries.push(Entry {
                    key,
                    key_loc: loc_of(k),
                    value: v,
                    used: false,
                }),
                None => self.error_at(loc_of(k), path, "field names must be strings"),
            }
        }
        let mut fields = Fields {
            d: self,
            path,
            entries,
            known: Vec::new(),
            unsupported: &[],
        };
        let value = read(&mut fields);
        fields.report_leftovers();
        Some(value)
    }
}

struct Entry<'n, 'i> {
    key: String,
    key_loc: Loc,
    value: &'n Node<'i>,
    used: bool,
}

/// The fields of one YAML object while it is being decoded.
pub struct Fields<'n, 'i> {
    pub d: &'n mut Decoder,
    path: &'n str,
    entries: Vec<Entry<'n, 'i>>,
    known: Vec<&'static str>,
    unsupported: &'static [&'static str],
}

impl Fields<'_, '_> {
    /// The path of a child field, `parent.name`.
    pub fn child(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.path, name)
        }
    }

    /// Reads an optional field.
    pub fn opt<T: Decode>(&mut self, name: &'static str) -> Option<T> {
        self.known.push(name);
        let path = self.child(name);
        let entry = self.entries.iter_mut().find(|e| e.key == name)?;
        entry.used = true;
        let node = entry.value;
        self.d.value(node, &path)
    }

    /// Reads a field that must be present.
    pub fn req<T: Decode>(&mut self, name: &'static str) -> Option<T> {
        let present = self.entries.iter().any(|e| e.key == name);
        let value = self.opt(name);
        if !present {
            let loc = self.d.map.locate(self.path);
            let path = self.child(name);
            self.d.error_at(loc, &path, "required value is missing");
        }
        value
    }

    /// Whether the object has the field `name` (read or not).
    pub fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.key == name)
    }

    /// Reads an optional list; absent means empty.
    pub fn list<T: Decode>(&mut self, name: &'static str) -> Vec<T> {
        self.opt::<Vec<T>>(name).unwrap_or_default()
    }

    /// Accepts field `name` whatever its value, which wpod does not use; whether it is
    /// present.
    pub fn ignore(&mut self, name: &'static str) -> bool {
        self.known.push(name);
        let path = self.child(name);
        let Some(entry) = self.entries.iter_mut().find(|e| e.key == name) else {
            return false;
        };
        entry.used = true;
        // Said at the field's name: its value is not read.
        let loc = entry.key_loc;
        self.d.map.record(&path, loc);
        true
    }

    /// Accepts whatever fields are left unread (a document wpod will not run anyway).
    pub fn skip_rest(&mut self) {
        self.entries.iter_mut().for_each(|e| e.used = true);
    }

    /// Fields Kubernetes defines on this object that wpod does not implement yet: naming them
    /// is an error that says so, rather than "unknown field" or silently ignoring them.
    pub fn unsupported(&mut self, names: &'static [&'static str]) {
        self.unsupported = names;
    }

    fn report_leftovers(&mut self) {
        for e in self.entries.iter().filter(|e| !e.used) {
            let path = self.child(&e.key);
            let message = if self.unsupported.contains(&e.key.as_str()) {
                format!(
                    "field \"{}\" is valid in Kubernetes but not supported by wpod yet; remove it",
                    e.key
                )
            } else {
                match did_you_mean(&e.key, &self.known) {
                    Some(s) => format!("unknown field \"{}\"; did you mean \"{s}\"?", e.key),
                    None => format!(
                        "unknown field \"{}\"; known fields here: {}",
                        e.key,
                        self.known.join(", ")
                    ),
                }
            };
            self.d.error_at(e.key_loc, &path, message);
        }
    }
}

/// The closest known field name, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()),
                *c,
            )
        })
        .filter(|(dist, c)| *dist <= 2.max(c.len() / 4))
        .min_by_key(|(dist, _)| *dist)
        .map(|(_, c)| c)
}

pub fn kind_of(node: &Node) -> &'static str {
    match &node.data {
        YamlData::Value(Scalar::Null) => "null",
        YamlData::Value(Scalar::Boolean(_)) => "a boolean",
        YamlData::Value(Scalar::Integer(_)) => "an integer",
        YamlData::Value(Scalar::FloatingPoint(_)) => "a number",
        YamlData::Value(Scalar::String(_)) | YamlData::Representation(..) => "a string",
        YamlData::Sequence(_) => "a list",
        YamlData::Mapping(_) => "an object",
        YamlData::Tagged(..) => "a tagged value",
        YamlData::Alias(_) => "an alias",
        YamlData::BadValue => "an invalid value",
    }
}

/// A scalar as the text that was written (numbers and booleans included), for keys and strings.
fn scalar_string(node: &Node) -> Option<String> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
        YamlData::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
        YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
        YamlData::Representation(s, ..) => Some(s.to_string()),
        _ => None,
    }
}

impl Decode for String {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        match &node.data {
            YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
            YamlData::Representation(s, ..) => Some(s.to_string()),
            _ => {
                let hint = match scalar_string(node) {
                    Some(text) => format!("; quote it: \"{text}\""),
                    None => String::new(),
                };
                d.error_at(
                    loc_of(node),
                    path,
                    format!("expected a string, found {}{hint}", kind_of(node)),
                );
                None
            }
        }
    }
}

impl Decode for bool {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        match &node.data {
            YamlData::Value(Scalar::Boolean(b)) => Some(*b),
            _ => {
                d.error_at(
                    loc_of(node),
                    path,
                    format!("expected true or false, found {}", kind_of(node)),
                );
                None
            }
        }
    }
}

macro_rules! decode_int {
    ($($t:ty),*) => {$(
        impl Decode for $t {
            fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
                match &node.data {
                    YamlData::Value(Scalar::Integer(i)) => match <$t>::try_from(*i) {
                        Ok(v) => Some(v),
                        Err(_) => {
                            d.error_at(loc_of(node), path, format!(
                                "{i} is out of range: use {} to {}", <$t>::MIN, <$t>::MAX));
                            None
                        }
                    },
                    _ => {
                        d.error_at(loc_of(node), path,
                            format!("expected an integer, found {}", kind_of(node)));
                        None
                    }
                }
            }
        }
    )*};
}
decode_int!(i32, i64, u16, u32);

impl<T: Decode> Decode for Vec<T> {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let YamlData::Sequence(items) = &node.data else {
            d.error_at(
                loc_of(node),
                path,
                format!("expected a list, found {}", kind_of(node)),
            );
            return None;
        };
        Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| d.value(item, &format!("{path}[{i}]")))
                .collect(),
        )
    }
}

/// String maps (labels, annotations, resource lists). Values written as numbers (`cpu: 1`) are
/// taken as their text, as Kubernetes does for quantities.
impl Decode for BTreeMap<String, String> {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let YamlData::Mapping(map) = &node.data else {
            d.error_at(
                loc_of(node),
                path,
                format!("expected an object, found {}", kind_of(node)),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, v) in map.iter() {
            let (Some(key), value) = (scalar_string(k), scalar_string(v)) else {
                d.error_at(loc_of(k), path, "keys must be strings");
                continue;
            };
            let child = format!("{path}.{key}");
            d.map.record(&child, loc_of(v));
            match value {
                Some(value) => {
                    out.insert(key, value);
                }
                None => d.error_at(
                    loc_of(v),
                    &child,
                    format!("expected a string, found {}", kind_of(v)),
                ),
            }
        }
        Some(out)
    }
}

/// A file mode, read as Kubernetes' YAML reads it: `0644` (a leading zero) and `0o644` are
/// octal, `420` decimal; 0 to 0777.
pub struct FileMode(pub u32);

impl Decode for FileMode {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let YamlData::Value(Scalar::Integer(n)) = &node.data else {
            d.error_at(
                loc_of(node),
                path,
                format!("expected a file mode such as 0644, found {}", kind_of(node)),
            );
            return None;
        };
        let spelled = d.spelling(node);
        let octal = spelled
            .strip_prefix("0o")
            .or_else(|| spelled.strip_prefix('0').filter(|r| !r.is_empty()));
        let value = match octal {
            Some(digits) => i64::from_str_radix(digits, 8).ok(),
            None => Some(*n),
        };
        match value {
            Some(m) if (0..=0o777).contains(&m) => Some(FileMode(m as u32)),
            _ => {
                d.error_at(
                    loc_of(node),
                    path,
                    format!(
                        "{spelled} is not a file mode; write one from 0 to 0777 (octal, e.g. 0644)"
                    ),
                );
                None
            }
        }
    }
}

/// A quantity as written, a string or a number (`divisor: 1`), as its text.
pub struct Quantity(pub String);

impl Decode for Quantity {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        match (&node.data, scalar_string(node)) {
            (YamlData::Value(_), Some(text)) => Some(Quantity(text)),
            _ => {
                d.error_at(
                    loc_of(node),
                    path,
                    format!(
                        "expected a quantity such as \"1Mi\" or \"500m\", found {}",
                        kind_of(node)
                    ),
                );
                None
            }
        }
    }
}

/// A port given by number or by name (Kubernetes' IntOrString).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl Decode for IntOrString {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        match &node.data {
            YamlData::Value(Scalar::Integer(i)) => Some(IntOrString::Int(*i)),
            YamlData::Value(Scalar::String(s)) => Some(IntOrString::String(s.to_string())),
            _ => {
                d.error_at(
                    loc_of(node),
                    path,
                    format!("expected a port number or name, found {}", kind_of(node)),
                );
                None
            }
        }
    }
}
