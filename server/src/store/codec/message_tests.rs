use super::*;
use crate::domain::{MessageId, NodeId, Place, ToolOutcome};

fn tool_answer(outcome: Option<ToolOutcome>) -> Message {
    let place = Place::straight(Seq::new(1));
    let mut message =
        Message::text(MessageId::from_bytes([9; 16]), place, Role::Tool, "x".into(), Timestamp::from_micros(5));
    message.tool_call_id = Some("c1".into());
    message.tool_outcome = outcome;
    message
}

#[test]
fn tool_outcomes_round_trip_and_records_saved_before_them_still_decode() {
    let outcomes = [
        ToolOutcome::Ok,
        ToolOutcome::Failed,
        ToolOutcome::TimedOut,
        ToolOutcome::Denied,
        ToolOutcome::Cancelled,
        ToolOutcome::Interrupted,
    ];
    for outcome in outcomes {
        let message = tool_answer(Some(outcome));
        let stored = message_to_stored(&message);
        assert_eq!(stored.is_error, outcome.is_error(), "readers of is_error see the same");
        assert_eq!(message_from_stored(NodeId::new(1), stored).expect("decodes"), message);
    }
    // A record written before outcomes were saved: only is_error.
    for (is_error, outcome) in [(false, ToolOutcome::Ok), (true, ToolOutcome::Failed)] {
        let stored = StoredMessage { tool_outcome: 0, is_error, ..message_to_stored(&tool_answer(None)) };
        assert_eq!(message_from_stored(NodeId::new(1), stored).expect("decodes").tool_outcome, Some(outcome));
    }
    let user = Message::text(
        MessageId::from_bytes([8; 16]),
        Place::straight(Seq::new(0)),
        Role::User,
        "hi".into(),
        Timestamp::from_micros(5),
    );
    assert_eq!(message_from_stored(NodeId::new(0), message_to_stored(&user)).expect("decodes").tool_outcome, None);
    let bad = StoredMessage { tool_outcome: 99, ..message_to_stored(&tool_answer(None)) };
    assert!(message_from_stored(NodeId::new(1), bad).is_err());
}
