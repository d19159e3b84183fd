use async_trait::async_trait;
use serde_json::json;

use super::tool::{Tool, ToolError};
use crate::domain::{TenantId, ToolDefinition, ToolPolicy};

/// Evaluates an arithmetic expression (`+ - * / % ^`, parentheses, `math::` functions).
pub struct Calculator {
    definition: ToolDefinition,
}

impl Calculator {
    pub fn new() -> Self {
        Self {
            definition: ToolDefinition {
                name: "calculator".into(),
                description: "Evaluates an arithmetic expression, e.g. \"(2 + 3) * 4 / 7\" or \"2 ^ 10\".".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {"expression": {"type": "string", "minLength": 1, "maxLength": 1000}},
                    "required": ["expression"],
                    "additionalProperties": false
                }),
            },
        }
    }
}

impl Default for Calculator {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Tool for Calculator {
    fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    fn policy(&self) -> ToolPolicy {
        ToolPolicy { requires_approval: false, idempotent: true, external: false }
    }

    async fn call(&self, _tenant: &TenantId, arguments: serde_json::Value) -> Result<String, ToolError> {
        let expression = arguments.get("expression").and_then(|e| e.as_str()).unwrap_or_default();
        evaluate(expression)
    }
}

fn evaluate(expression: &str) -> Result<String, ToolError> {
    // Integers first, so that large integer results print exactly.
    match evalexpr::eval(expression) {
        Ok(evalexpr::Value::Int(n)) => Ok(n.to_string()),
        Ok(evalexpr::Value::Float(x)) if x.is_finite() => Ok(x.to_string()),
        Ok(evalexpr::Value::Float(_)) => Err(ToolError("the result is not a finite number".into())),
        Ok(other) => Err(ToolError(format!("not an arithmetic expression (it gives {other})"))),
        Err(error) => Err(ToolError(format!("cannot evaluate {expression:?}: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_evaluates_and_everything_else_is_an_error() {
        assert_eq!(evaluate("(2 + 3) * 4").ok().as_deref(), Some("20"));
        assert_eq!(evaluate("7 / 2.0").ok().as_deref(), Some("3.5"));
        assert_eq!(evaluate("2 ^ 10").ok().as_deref(), Some("1024"));
        for bad in ["1 / 0", "\"text\"", "a = 3", "2 +", "true && false"] {
            assert!(evaluate(bad).is_err(), "{bad}");
        }
    }
}
