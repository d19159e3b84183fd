//! A client's view of a context, built only from WatchState events, the way a UI would.

use ctxd_proto::v1 as pb;
use pb::watch_state_response::Kind;

/// Folds watch events into a state. Written independently of the server, so comparing its
/// result with GetState checks that the events say everything.
#[derive(Debug, Default, Clone)]
pub struct Folded {
    pub state: Option<pb::ContextState>,
    pub deleted: bool,
    /// Revision of the last event applied.
    pub revision: u64,
}

impl Folded {
    pub fn apply(&mut self, event: &pb::WatchStateResponse) -> Result<(), String> {
        let kind = event.kind.as_ref().ok_or("event without a kind")?;
        if let Kind::Snapshot(snapshot) = kind {
            self.state = Some(snapshot.clone());
            self.revision = event.revision;
            return Ok(());
        }
        if let Kind::ContextDeleted(_) = kind {
            self.deleted = true;
            return Ok(());
        }
        let state = self.state.as_mut().ok_or("an event before any snapshot")?;
        if event.revision < self.revision {
            return Err(format!("revision went back from {} to {}", self.revision, event.revision));
        }
        match kind {
            Kind::MessageAppended(message) => {
                if state.messages.iter().any(|m| m.id == message.id) {
                    return Err(format!("message {} appended twice", message.id));
                }
                state.messages.push(message.clone());
            }
            Kind::MessageUpdated(message) => {
                let held =
                    state.messages.iter_mut().find(|m| m.id == message.id).ok_or("update of an unknown message")?;
                *held = message.clone();
            }
            Kind::MessageDelta(delta) => {
                let held = state
                    .messages
                    .iter_mut()
                    .find(|m| m.id == delta.message_id)
                    .ok_or("delta for an unknown message")?;
                if held.status != pb::MessageStatus::Streaming as i32 {
                    return Err("delta for a message that is not streaming".into());
                }
                match held.content.last_mut().and_then(|p| p.part.as_mut()) {
                    Some(pb::content_part::Part::Text(text)) => text.push_str(&delta.text),
                    _ => held
                        .content
                        .push(pb::ContentPart { part: Some(pb::content_part::Part::Text(delta.text.clone())) }),
                }
            }
            Kind::QueueChanged(queue) => state.queued_messages.clone_from(&queue.messages),
            Kind::BranchSwitched(switched) => {
                let kept = usize::try_from(switched.kept).map_err(|_| "kept out of range")?;
                if kept > state.messages.len() {
                    return Err(format!("keeps {kept} of {} messages", state.messages.len()));
                }
                state.messages.truncate(kept);
                for message in &switched.messages {
                    if state.messages.iter().any(|m| m.id == message.id) {
                        return Err(format!("message {} twice on the path", message.id));
                    }
                    state.messages.push(message.clone());
                }
            }
            Kind::ContextUpdated(updated) => {
                state.title = updated.title.clone();
                state.config = updated.config.clone();
            }
            Kind::StateChanged(changed) => {
                state.state = changed.state;
                state.last_error = changed.last_error.clone();
                state.pending_tool_calls = changed.pending_tool_calls.clone();
            }
            Kind::Snapshot(_) | Kind::ContextDeleted(_) => {}
        }
        if let Some(usage) = &event.context_usage {
            state.context_usage = Some(usage.clone());
        }
        state.revision = event.revision;
        if event.updated_at.is_some() {
            state.updated_at = event.updated_at;
        }
        self.revision = event.revision;
        Ok(())
    }
}
