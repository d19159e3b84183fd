//! Domain → wire conversions.

use std::sync::Arc;

use ctxd_proto::v1 as pb;

use crate::domain::{
    Approval, ContentPart, Context, ContextConfig, ContextSummary, ContextUsage, FsmState, Message, MessageId,
    MessageStatus, Overflow, Role, Seq, Timestamp, ToolCall, ToolDefinition, ToolPolicy, Versions,
};

/// What `ContextState.active_branch` has always said (deprecated: a conversation is a tree).
pub const MAIN_BRANCH: &str = "main";

pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let micros = t.as_micros();
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

pub fn fsm_state(state: FsmState) -> pb::FsmState {
    match state {
        FsmState::Idle => pb::FsmState::Idle,
        FsmState::ProcessingUserMessage => pb::FsmState::ProcessingUserMessage,
        FsmState::AwaitingLlmResponse => pb::FsmState::AwaitingLlmResponse,
        FsmState::StreamingLlmResponse => pb::FsmState::StreamingLlmResponse,
        FsmState::ProcessingLlmResponse => pb::FsmState::ProcessingLlmResponse,
        FsmState::AwaitingToolApproval => pb::FsmState::AwaitingToolApproval,
        FsmState::ExecutingTools => pb::FsmState::ExecutingTools,
        FsmState::ProcessingToolResults => pb::FsmState::ProcessingToolResults,
        FsmState::GeneratingResponse => pb::FsmState::GeneratingResponse,
        FsmState::SummarizingHistory => pb::FsmState::SummarizingHistory,
        FsmState::TransientFailure => pb::FsmState::TransientFailure,
        FsmState::Failed => pb::FsmState::Failed,
    }
}

pub fn config(config: &ContextConfig) -> pb::ContextConfig {
    pb::ContextConfig {
        system_prompt: config.system_prompt.clone(),
        model: config.model.clone(),
        auto_approve_tools: config.auto_approve_tools.clone(),
        external_tools: config
            .external_tools
            .iter()
            .map(|t| pb::ExternalTool {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters_json_schema: t.parameters_json_schema.clone(),
                requires_approval: t.requires_approval,
                idempotent: t.idempotent,
                timeout_ms: t.timeout_ms,
            })
            .collect(),
        context_window_tokens: config.context_window_tokens,
        max_output_tokens: config.max_output_tokens,
        context_overflow: match config.overflow {
            None => pb::ContextOverflow::Unspecified,
            Some(Overflow::Summarize) => pb::ContextOverflow::Summarize,
            Some(Overflow::Truncate) => pb::ContextOverflow::Truncate,
        } as i32,
        summarize_at: config.summarize_at as f32 / 1000.0,
    }
}

pub fn usage(usage: &ContextUsage) -> pb::ContextUsage {
    let id = |id: Option<MessageId>| id.map(|id| id.to_string()).unwrap_or_default();
    pb::ContextUsage {
        tokens: usage.tokens,
        window_tokens: usage.window_tokens,
        first_message_in_window_id: id(usage.first_in_window),
        summary_message_id: id(usage.summary),
    }
}

pub fn tool_info(definition: &ToolDefinition, policy: ToolPolicy) -> pb::ToolInfo {
    pb::ToolInfo {
        name: definition.name.clone(),
        description: definition.description.clone(),
        parameters_json_schema: definition.parameters.to_string(),
        requires_approval: policy.requires_approval,
        idempotent: policy.idempotent,
    }
}

pub fn tool_call(call: &ToolCall) -> pb::ToolCall {
    pb::ToolCall {
        id: call.id.as_str().to_owned(),
        name: call.name.clone(),
        arguments_json: call.arguments_json.clone(),
        approval: match call.approval {
            Approval::Pending => pb::ApprovalStatus::Pending,
            Approval::Approved => pb::ApprovalStatus::Approved,
            Approval::Denied => pb::ApprovalStatus::Denied,
            Approval::AutoApproved => pb::ApprovalStatus::AutoApproved,
        } as i32,
        external: call.external,
    }
}

/// A message, standing in the tree as `versions` says.
pub fn message(message: &Message, versions: Versions) -> pb::Message {
    let id = |id: Option<MessageId>| id.map(|id| id.to_string()).unwrap_or_default();
    pb::Message {
        parent_id: id(versions.parent),
        sibling_count: versions.count,
        sibling_index: versions.index,
        previous_sibling_id: id(versions.previous),
        next_sibling_id: id(versions.next),
        id: message.id.to_string(),
        role: match message.role {
            Role::User => pb::Role::User,
            Role::Assistant => pb::Role::Assistant,
            Role::System => pb::Role::System,
            Role::Tool => pb::Role::Tool,
            Role::Summary => pb::Role::Summary,
        } as i32,
        content: message
            .content
            .iter()
            .map(|part| pb::ContentPart {
                part: Some(match part {
                    ContentPart::Text(text) => pb::content_part::Part::Text(text.clone()),
                    ContentPart::ImageUrl(url) => pb::content_part::Part::ImageUrl(url.clone()),
                }),
            })
            .collect(),
        tool_calls: message.tool_calls.iter().map(tool_call).collect(),
        tool_call_id: message.tool_call_id.as_ref().map(|id| id.as_str().to_owned()).unwrap_or_default(),
        client_message_id: message.client_message_id.clone().unwrap_or_default(),
        status: match message.status {
            MessageStatus::Streaming => pb::MessageStatus::Streaming,
            MessageStatus::Complete => pb::MessageStatus::Complete,
            MessageStatus::Cancelled => pb::MessageStatus::Cancelled,
            MessageStatus::Error => pb::MessageStatus::Error,
            MessageStatus::Queued => pb::MessageStatus::Queued,
        } as i32,
        created_at: Some(timestamp(message.created_at)),
        is_error: message.is_error(),
        usage: message
            .usage
            .map(|u| pb::Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens }),
        duration_ms: message.duration_ms,
        model: message.model.clone(),
        summary_through_message_id: message.summary_through.map(|id| id.to_string()).unwrap_or_default(),
        token_count: message.tokens,
    }
}

/// A message of `ctx`'s active path.
pub fn on_path(ctx: &Context, m: &Message) -> pb::Message {
    message(m, ctx.versions(m.seq))
}

pub fn context_state(ctx: &Context) -> pb::ContextState {
    context_state_view(ctx, pb::StateView::Full, None)
}

/// The state with all messages (FULL) or only the newest (BASIC), and at most the last
/// `limit` of them. Only the messages sent are converted: the cost does not grow with the
/// conversation.
pub fn context_state_view(ctx: &Context, view: pb::StateView, limit: Option<usize>) -> pb::ContextState {
    let shown = match view {
        pb::StateView::Basic => 1,
        pb::StateView::Full | pb::StateView::Unspecified => usize::MAX,
    };
    let count = limit.map_or(shown, |limit| limit.min(shown)).min(ctx.messages.len());
    let skipped = ctx.messages.len() - count;
    let messages = ctx.path_from(Seq::of_index(skipped)).map(|m| on_path(ctx, m)).collect();
    pb::ContextState {
        context_id: ctx.id.to_string(),
        revision: ctx.revision,
        state: fsm_state(ctx.state()) as i32,
        messages,
        pending_tool_calls: ctx.pending_tool_calls().iter().map(tool_call).collect(),
        config: Some(config(&ctx.config)),
        title: ctx.title.clone(),
        #[allow(deprecated)]
        active_branch: MAIN_BRANCH.to_owned(),
        last_error: ctx.phase.error().unwrap_or_default().to_owned(),
        created_at: Some(timestamp(ctx.created_at)),
        updated_at: Some(timestamp(ctx.updated_at)),
        created_by: ctx.created_by.clone(),
        earlier_message_count: skipped as u64,
        queued_messages: queued(&ctx.queued),
        context_usage: Some(usage(&ctx.usage)),
    }
}

/// The messages waiting for the next turn: not in the tree yet, so without versions.
pub fn queued<'a>(messages: impl IntoIterator<Item = &'a Arc<Message>>) -> Vec<pb::Message> {
    messages.into_iter().map(|m| message(m, Versions::only(None))).collect()
}

pub fn summary(summary: &ContextSummary) -> pb::ContextSummary {
    pb::ContextSummary {
        context_id: summary.id.to_string(),
        title: summary.title.clone(),
        state: fsm_state(summary.state) as i32,
        revision: summary.revision,
        message_count: summary.message_count,
        updated_at: Some(timestamp(summary.updated_at)),
        created_at: Some(timestamp(summary.created_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_split_into_seconds_and_nanos() {
        let t = timestamp(Timestamp::from_micros(1_700_000_000_123_456));
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_456_000));
        let before_epoch = timestamp(Timestamp::from_micros(-1));
        assert_eq!((before_epoch.seconds, before_epoch.nanos), (-1, 999_999_000));
    }
}
