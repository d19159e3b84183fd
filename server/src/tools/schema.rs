//! JSON-schema checks of tool arguments, so a model's malformed call becomes an error
//! result it can read and correct, never a crash or a call with garbage.

use serde_json::Value;

use super::schema_bounds::SchemaBounds;

/// A compiled argument schema.
pub struct ArgumentSchema {
    validator: jsonschema::Validator,
}

impl ArgumentSchema {
    /// Compiles `schema`; the error says what is wrong with it.
    pub fn compile(schema: &Value) -> Result<Self, String> {
        if !schema.is_object() {
            return Err("the schema must be a JSON object".into());
        }
        jsonschema::validator_for(schema).map(|validator| Self { validator }).map_err(|e| e.to_string())
    }

    /// Parses a schema a caller declared, checks it against [`SchemaBounds::DEFAULT`] and
    /// compiles it; empty text means "any object". The error says what is wrong with it.
    pub fn parse(text: &str) -> Result<(Self, Value), String> {
        let schema = Self::parse_json(text)?;
        SchemaBounds::DEFAULT.check(&schema, text.len())?;
        Self::compile(&schema).map(|compiled| (compiled, schema))
    }

    /// The JSON of a declared schema, without compiling it (what the model is shown).
    pub fn parse_json(text: &str) -> Result<Value, String> {
        if text.trim().is_empty() {
            return Ok(serde_json::json!({"type": "object"}));
        }
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
    }

    /// Parses a call's arguments and checks them; the error, written for the model, names the
    /// first problem found (finding every one can cost far more than the check itself).
    pub fn check(&self, arguments_json: &str) -> Result<Value, String> {
        let arguments: Value =
            serde_json::from_str(arguments_json).map_err(|e| format!("invalid arguments: not JSON ({e})"))?;
        if !arguments.is_object() {
            return Err("invalid arguments: expected a JSON object".into());
        }
        if self.validator.is_valid(&arguments) {
            return Ok(arguments);
        }
        match self.validator.validate(&arguments) {
            Ok(()) => Ok(arguments),
            Err(e) => {
                let path = e.instance_path().to_string();
                Err(if path.is_empty() {
                    format!("invalid arguments: {e}")
                } else {
                    format!("invalid arguments: {path}: {e}")
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked_against_the_schema() {
        let (schema, _) = ArgumentSchema::parse(
            r#"{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false}"#,
        )
        .expect("valid schema");
        assert!(schema.check(r#"{"n": 3}"#).is_ok());
        for bad in [r#"{"n": "three"}"#, "{}", r#"{"n": 1, "m": 2}"#, "[1]", "nope"] {
            let error = schema.check(bad).expect_err(bad);
            assert!(error.starts_with("invalid arguments"), "{error}");
        }
        assert!(ArgumentSchema::parse("").is_ok_and(|(s, _)| s.check("{}").is_ok()));
        assert!(ArgumentSchema::parse("[]").is_err());
        assert!(ArgumentSchema::parse(r#"{"type": 12}"#).is_err());
    }
}
