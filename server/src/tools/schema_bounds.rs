//! What makes a tool's argument schema safe to accept from a caller: checked once, when the
//! schema is declared, so that checking a call against it later is bounded in time and
//! memory whatever the caller wrote.
//!
//! The danger is not the schema's size but what it expands to: `{"anyOf": [{"$ref": "#/$defs/a1"},
//! {"$ref": "#/$defs/a1"}]}` repeated 20 times is under 2 KB and doubles the work at every
//! level, so a validator that follows it visits a million subschemas per call (and collects an
//! error for each). Here every local `$ref` is counted as the subschema it stands for, so the
//! bound is on the schema as the validator will walk it. Remote and file references are never
//! followed: they are refused, and the validator is built without the features that fetch.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// Limits on a declared argument schema.
#[derive(Debug, Clone, Copy)]
pub struct SchemaBounds {
    /// Bytes of the schema's JSON text.
    pub max_bytes: usize,
    /// Levels of nested objects and arrays in the schema document.
    pub max_depth: usize,
    /// `$ref`s in the schema document.
    pub max_refs: usize,
    /// Subschemas the validator may walk, with each `$ref` counted as what it points to.
    pub max_expanded: u64,
}

impl SchemaBounds {
    /// Room for any hand-written tool schema (OpenAI's own limit on a function's schema is
    /// in the same range), far below what makes validation slow.
    pub const DEFAULT: SchemaBounds =
        SchemaBounds { max_bytes: 64 * 1024, max_depth: 32, max_refs: 256, max_expanded: 10_000 };

    /// Checks `schema` (whose text is `text_len` bytes); the error names the limit.
    pub fn check(&self, schema: &Value, text_len: usize) -> Result<(), String> {
        if text_len > self.max_bytes {
            return Err(format!("the schema is {text_len} bytes; the limit is {}", self.max_bytes));
        }
        let mut walk = Walk { root: schema, bounds: self, refs: 0, expanded: HashMap::new(), open: HashSet::new() };
        walk.size(schema, 0, true)?;
        Ok(())
    }
}

/// Keywords whose values are data, not subschemas: a `$ref` inside them is not a reference.
const DATA_KEYWORDS: [&str; 4] = ["const", "enum", "default", "examples"];

struct Walk<'a> {
    root: &'a Value,
    bounds: &'a SchemaBounds,
    /// `$ref`s seen in the document.
    refs: usize,
    /// Expanded size of each reference target already walked.
    expanded: HashMap<&'a str, u64>,
    /// References being expanded: meeting one again is a cycle.
    open: HashSet<&'a str>,
}

impl<'a> Walk<'a> {
    /// The number of subschemas under `value` once references are expanded.
    fn size(&mut self, value: &'a Value, depth: usize, at_root: bool) -> Result<u64, String> {
        if depth > self.bounds.max_depth {
            return Err(format!("the schema nests deeper than {} levels", self.bounds.max_depth));
        }
        let mut total: u64 = 1;
        match value {
            Value::Array(items) => {
                for item in items {
                    total = total.saturating_add(self.size(item, depth + 1, false)?);
                }
            }
            Value::Object(fields) => {
                for (key, field) in fields {
                    match (key.as_str(), field) {
                        ("$ref", Value::String(target)) => {
                            total = total.saturating_add(self.reference(target)?);
                        }
                        ("$dynamicRef" | "$recursiveRef", _) => {
                            return Err(format!("{key} is not supported in tool schemas; use \"$ref\": \"#/...\""));
                        }
                        ("$id", Value::String(_)) if !at_root => {
                            return Err(
                                "\"$id\" is only allowed at the schema's root (references stay inside it)".into()
                            );
                        }
                        (keyword, _) if DATA_KEYWORDS.contains(&keyword) => {
                            // Data: only its nesting counts.
                            self.depth_of(field, depth + 1)?;
                        }
                        ("$defs" | "definitions", Value::Object(definitions)) => {
                            // Walked where they are referred to; checked here, counted there.
                            for definition in definitions.values() {
                                self.size(definition, depth + 2, false)?;
                            }
                        }
                        _ => total = total.saturating_add(self.size(field, depth + 1, false)?),
                    }
                }
            }
            _ => {}
        }
        if total > self.bounds.max_expanded {
            return Err(self.too_large());
        }
        Ok(total)
    }

    /// The expanded size of a reference's target.
    fn reference(&mut self, target: &'a str) -> Result<u64, String> {
        self.refs += 1;
        if self.refs > self.bounds.max_refs {
            return Err(format!("the schema has more than {} \"$ref\"s", self.bounds.max_refs));
        }
        let Some(pointer) = target.strip_prefix('#') else {
            return Err(format!(
                "\"$ref\": {} points outside the schema; only local references (\"#/...\") are allowed and nothing is fetched",
                crate::domain::shown(target)
            ));
        };
        if let Some(&size) = self.expanded.get(target) {
            return Ok(size);
        }
        if !self.open.insert(target) {
            return Err(format!(
                "\"$ref\": {} refers to itself; recursive schemas are not supported",
                crate::domain::shown(target)
            ));
        }
        let found =
            if pointer.is_empty() || pointer.starts_with('/') { self.root.pointer(&decode(pointer)) } else { None };
        let Some(found) = found else {
            return Err(format!("\"$ref\": {} points at nothing in the schema", crate::domain::shown(target)));
        };
        // The target's own nesting was checked where it stands in the document.
        let size = self.size(found, 0, false)?;
        self.open.remove(target);
        self.expanded.insert(target, size);
        Ok(size)
    }

    fn depth_of(&self, value: &Value, depth: usize) -> Result<(), String> {
        if depth > self.bounds.max_depth {
            return Err(format!("the schema nests deeper than {} levels", self.bounds.max_depth));
        }
        match value {
            Value::Array(items) => items.iter().try_for_each(|item| self.depth_of(item, depth + 1)),
            Value::Object(fields) => fields.values().try_for_each(|field| self.depth_of(field, depth + 1)),
            _ => Ok(()),
        }
    }

    fn too_large(&self) -> String {
        format!(
            "the schema expands to more than {} subschemas once its \"$ref\"s are followed (combinators that refer to \
             the same definitions multiply); simplify it",
            self.bounds.max_expanded
        )
    }
}

/// A URI fragment's JSON pointer with its percent-escapes decoded (`#/$defs/a%20b`).
fn decode(pointer: &str) -> String {
    let bytes = pointer.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The attack pass's schema: `depth` levels of anyOf over two references to the next level.
    pub fn doubling(depth: usize) -> Value {
        let mut defs = serde_json::Map::new();
        for i in 0..depth {
            let next = format!("#/$defs/a{}", i + 1);
            defs.insert(format!("a{i}"), json!({"anyOf": [{"$ref": next}, {"$ref": next}]}));
        }
        defs.insert(format!("a{depth}"), json!({"type": "string"}));
        json!({"$defs": defs, "type": "object", "properties": {"v": {"$ref": "#/$defs/a0"}}})
    }

    fn check(schema: &Value) -> Result<(), String> {
        SchemaBounds::DEFAULT.check(schema, schema.to_string().len())
    }

    #[test]
    fn schemas_that_expand_beyond_the_bound_are_refused() {
        for depth in [20, 30] {
            let error = check(&doubling(depth)).expect_err("exponential");
            assert!(error.contains("expands to more than 10000 subschemas"), "{error}");
        }
        // Ten levels are fine (2^10 leaves, about 6,000 subschemas); eleven are not.
        assert!(check(&doubling(10)).is_ok());
        assert!(check(&doubling(11)).is_err());
        // The same definition referred to many times side by side is counted each time.
        let wide: Vec<Value> = (0..300).map(|_| json!({"$ref": "#/$defs/s"})).collect();
        let error = check(&json!({"$defs": {"s": {"type": "string"}}, "anyOf": wide})).expect_err("wide");
        assert!(error.contains("more than 256 \"$ref\"s"), "{error}");
    }

    #[test]
    fn only_local_references_that_resolve_are_accepted() {
        let ok = json!({"$defs": {"a b": {"type": "integer"}}, "properties": {"n": {"$ref": "#/$defs/a%20b"}}});
        assert!(check(&ok).is_ok());
        for (schema, expected) in [
            (json!({"$ref": "http://127.0.0.1:1/schema.json"}), "points outside the schema"),
            (json!({"$ref": "file:///etc/passwd"}), "points outside the schema"),
            (json!({"$ref": "other.json#/x"}), "points outside the schema"),
            (json!({"$ref": "#/$defs/missing"}), "points at nothing"),
            (json!({"$ref": "#anchor"}), "points at nothing"),
            (json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}), "refers to itself"),
            (json!({"properties": {"x": {"$ref": "#"}}}), "refers to itself"),
            (json!({"$dynamicRef": "#meta"}), "not supported"),
            (
                json!({"properties": {"x": {"$id": "http://evil/", "type": "string"}}}),
                "only allowed at the schema's root",
            ),
        ] {
            let error = check(&schema).expect_err(&schema.to_string());
            assert!(error.contains(expected), "{schema}: {error}");
        }
        // A "$ref" inside data is not a reference.
        assert!(check(&json!({"const": {"$ref": "http://x"}, "examples": [{"$ref": "#/nope"}]})).is_ok());
    }

    #[test]
    fn size_and_nesting_are_bounded() {
        let mut deep = json!({"type": "string"});
        for _ in 0..40 {
            deep = json!({"items": deep});
        }
        assert!(check(&deep).expect_err("deep").contains("deeper than 32 levels"));
        let error = SchemaBounds::DEFAULT.check(&json!({}), 70_000).expect_err("big");
        assert!(error.contains("70000 bytes; the limit is 65536"), "{error}");
    }
}
