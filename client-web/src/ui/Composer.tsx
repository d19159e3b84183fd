import { useState } from "react";

import { sendMessage } from "../actions";
import { FsmState } from "../gen/ctxd/v1/context_pb";
import { isBusy } from "../store/conversation";

function reasonDisabled(state: FsmState): string | null {
  if (state === FsmState.AWAITING_TOOL_APPROVAL) return "Decide the tool calls above first.";
  return null;
}

/** Enter sends, Shift+Enter adds a line. While the assistant is answering, sending stops
 * the answer (its text so far stays, marked stopped) and sends the new message. */
export function Composer({ id, state }: { id: string; state: FsmState }) {
  const [draft, setDraft] = useState("");
  const reason = reasonDisabled(state);
  const busy = isBusy(state);
  const send = () => {
    const content = draft.trim();
    if (!content || reason) return;
    setDraft("");
    void sendMessage(id, content, undefined, busy);
  };
  return (
    <form
      className="composer"
      onSubmit={(e) => {
        e.preventDefault();
        send();
      }}
    >
      <textarea
        aria-label="Message"
        value={draft}
        placeholder={
          reason ??
          (busy
            ? "The assistant is answering; sending stops it and sends this"
            : "Message (Enter to send, Shift+Enter for a new line)")
        }
        disabled={reason !== null}
        onChange={(e) => setDraft(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === "Enter" && !e.shiftKey) {
            e.preventDefault();
            send();
          }
        }}
      />
      <button type="submit" disabled={reason !== null || draft.trim() === ""}>
        {busy ? "Stop and send" : "Send"}
      </button>
      {reason && <p className="reason">{reason}</p>}
    </form>
  );
}
