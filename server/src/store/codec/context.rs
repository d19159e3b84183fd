//! A context's metadata, path and phase: domain ↔ stored.

use std::sync::Arc;

use super::schema::*;
use crate::domain::{
    Context, ContextConfig, ContextId, ContextKey, ExternalTool, Message, NodeId, Overflow, PathShape, Phase, Segment,
    Seq, Sibling, Timestamp,
};
use crate::store::error::Error;

pub fn context_to_stored(ctx: &Context) -> StoredContext {
    StoredContext {
        title: ctx.title.clone(),
        system_prompt: ctx.config.system_prompt.clone(),
        model: ctx.config.model.clone(),
        auto_approve_tools: ctx.config.auto_approve_tools.clone(),
        revision: ctx.revision,
        created_at_us: ctx.created_at.as_micros(),
        updated_at_us: ctx.updated_at.as_micros(),
        message_count: ctx.next_seq().get(),
        next_node: ctx.next_node.get(),
        phase: Some(phase_to_stored(&ctx.phase)),
        external_tools: ctx
            .config
            .external_tools
            .iter()
            .map(|t| StoredExternalTool {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters_json_schema: t.parameters_json_schema.clone(),
                requires_approval: t.requires_approval,
                idempotent: t.idempotent,
                timeout_ms: t.timeout_ms,
            })
            .collect(),
        created_by: ctx.created_by.clone(),
        queued: ctx.queued.iter().map(|m| super::message_to_stored(m)).collect(),
        context_window_tokens: ctx.config.context_window_tokens,
        max_output_tokens: ctx.config.max_output_tokens,
        overflow: match ctx.config.overflow {
            None => 0,
            Some(Overflow::Summarize) => 1,
            Some(Overflow::Truncate) => 2,
        },
        summarize_at: ctx.config.summarize_at,
        calibration: ctx.calibration,
    }
}

pub fn path_to_stored(shape: &PathShape) -> StoredPath {
    StoredPath {
        segments: shape.segments.iter().map(|s| StoredSegment { seq: s.seq.get(), node: s.node.get() }).collect(),
        forks: shape.forks.keys().map(|seq| seq.get()).collect(),
    }
}

/// The segments of a saved path; a context saved before branches has one, from node 0.
pub fn segments_from_stored(stored: Option<&StoredPath>) -> Vec<Segment> {
    match stored {
        Some(path) => {
            path.segments.iter().map(|s| Segment { seq: Seq::new(s.seq), node: NodeId::new(s.node) }).collect()
        }
        None => vec![Segment { seq: Seq::FIRST, node: NodeId::new(0) }],
    }
}

/// Rebuilds a context from its saved metadata, the messages of its active path (depth 0,
/// 1, ...) and the versions at the depths that have them.
pub fn context_from_stored(
    key: ContextKey,
    stored: StoredContext,
    messages: Vec<Message>,
    forks: Vec<(Seq, Arc<[Sibling]>)>,
) -> Result<Context, Error> {
    let StoredContext {
        title,
        system_prompt,
        model,
        auto_approve_tools,
        revision,
        created_at_us,
        updated_at_us,
        message_count,
        phase,
        external_tools,
        created_by,
        next_node,
        queued,
        context_window_tokens,
        max_output_tokens,
        overflow,
        summarize_at,
        calibration,
    } = stored;
    if messages.len() as u64 != message_count {
        return Err(Error::Corrupt(format!(
            "context {key}: metadata counts {message_count} messages but {} are stored",
            messages.len()
        )));
    }
    let phase = phase_from_stored(phase.unwrap_or_default())?;
    let overflow = match overflow {
        0 => None,
        1 => Some(Overflow::Summarize),
        2 => Some(Overflow::Truncate),
        other => return Err(Error::Corrupt(format!("context {key}: unknown overflow {other}"))),
    };
    let mut ctx = Context::new(
        key,
        created_by,
        title,
        ContextConfig {
            system_prompt,
            model,
            auto_approve_tools,
            external_tools: external_tools
                .into_iter()
                .map(
                    |StoredExternalTool {
                         name,
                         description,
                         parameters_json_schema,
                         requires_approval,
                         idempotent,
                         timeout_ms,
                     }| ExternalTool {
                        name,
                        description,
                        parameters_json_schema,
                        requires_approval,
                        idempotent,
                        timeout_ms,
                    },
                )
                .collect(),
            context_window_tokens,
            max_output_tokens,
            overflow,
            summarize_at,
        },
        Timestamp::from_micros(created_at_us),
    );
    if calibration > 0 {
        ctx.calibration = calibration;
    }
    ctx.phase = phase;
    ctx.revision = revision;
    ctx.updated_at = Timestamp::from_micros(updated_at_us);
    for message in messages {
        ctx.put_message(Arc::new(message));
    }
    ctx.next_node = ctx.next_node.max(NodeId::new(next_node));
    for stored in queued {
        // Not in the tree yet: no node of their own (the stored one is meaningless).
        ctx.queued.push_back(Arc::new(super::message_from_stored(NodeId::default(), stored)?));
    }
    if !forks.is_empty() {
        let shape = Arc::make_mut(&mut ctx.shape);
        shape.forks = forks.into_iter().collect();
    }
    Ok(ctx)
}

fn phase_to_stored(phase: &Phase) -> StoredPhase {
    let (state, attempt, message, error) = match phase {
        Phase::Idle => (1, 0, 0, ""),
        Phase::ProcessingUserMessage => (2, 0, 0, ""),
        Phase::AwaitingLlmResponse { attempt } => (3, *attempt, 0, ""),
        Phase::StreamingLlmResponse { attempt, message } => (4, *attempt, message.get(), ""),
        Phase::ProcessingLlmResponse { message } => (5, 0, message.get(), ""),
        Phase::AwaitingToolApproval { message } => (6, 0, message.get(), ""),
        Phase::ExecutingTools { message } => (7, 0, message.get(), ""),
        Phase::ProcessingToolResults => (8, 0, 0, ""),
        Phase::GeneratingResponse => (9, 0, 0, ""),
        Phase::TransientFailure { attempt, error } => (10, *attempt, 0, error.as_str()),
        Phase::Failed { error } => (11, 0, 0, error.as_str()),
        Phase::SummarizingHistory { through } => (12, 0, through.get(), ""),
    };
    StoredPhase { state, attempt, message, error: error.to_owned() }
}

fn phase_from_stored(stored: StoredPhase) -> Result<Phase, Error> {
    let StoredPhase { state, attempt, message, error } = stored;
    let message = Seq::new(message);
    Ok(match state {
        1 => Phase::Idle,
        2 => Phase::ProcessingUserMessage,
        3 => Phase::AwaitingLlmResponse { attempt },
        4 => Phase::StreamingLlmResponse { attempt, message },
        5 => Phase::ProcessingLlmResponse { message },
        6 => Phase::AwaitingToolApproval { message },
        7 => Phase::ExecutingTools { message },
        8 => Phase::ProcessingToolResults,
        9 => Phase::GeneratingResponse,
        10 => Phase::TransientFailure { attempt, error },
        11 => Phase::Failed { error },
        12 => Phase::SummarizingHistory { through: message },
        other => return Err(Error::Corrupt(format!("unknown stored state {other}"))),
    })
}

pub fn summary_from_stored(id: ContextId, stored: &StoredContext) -> Result<crate::domain::ContextSummary, Error> {
    Ok(crate::domain::ContextSummary {
        id,
        title: stored.title.clone(),
        state: phase_from_stored(stored.phase.clone().unwrap_or_default())?.state(),
        revision: stored.revision,
        message_count: stored.message_count,
        created_at: Timestamp::from_micros(stored.created_at_us),
        updated_at: Timestamp::from_micros(stored.updated_at_us),
    })
}
