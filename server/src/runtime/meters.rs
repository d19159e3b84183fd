//! What the runtime counts that takes more than one line to tell.

use std::sync::Arc;

use metrics::counter;

use crate::domain::{Context, Message, Role, ToolOutcome};
use crate::telemetry::names;
use crate::tools::ToolRegistry;

/// Counts the answers to tool calls among the messages a transition saved, by tool and
/// outcome. Tools other services run are counted as `external`, so clients cannot grow
/// the label set with the names they declare.
pub(super) fn count_tool_answers(ctx: &Context, saved: &[Arc<Message>], tools: &ToolRegistry) {
    for answer in saved.iter().filter(|m| m.role == Role::Tool) {
        let Some(call_id) = answer.tool_call_id.as_ref() else { continue };
        let outcome = answer.tool_outcome.map_or("error", ToolOutcome::label);
        let name = ctx
            .messages
            .iter()
            .rev()
            .find_map(|m| m.tool_calls.iter().find(|c| &c.id == call_id))
            .map(|call| match call.name.as_str() {
                builtin if tools.has(builtin) => builtin.to_owned(),
                _ if call.external => "external".to_owned(),
                _ => "unknown".to_owned(),
            })
            .unwrap_or_else(|| "unknown".to_owned());
        counter!(names::TOOL_CALLS, "tool" => name, "outcome" => outcome).increment(1);
    }
}
