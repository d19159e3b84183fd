import { useState } from "react";

import { decideTools } from "../actions";
import type { ToolCall } from "../gen/ctxd/v1/context_pb";

/** Every pending call is decided together: Approve or Deny each, then Submit. */
export function ApprovalCard({ id, calls, onError }: { id: string; calls: ToolCall[]; onError: (e: string | null) => void }) {
  const [decisions, setDecisions] = useState<Record<string, boolean>>({});
  const decided = calls.every((c) => c.id in decisions);
  const submit = async (all?: boolean) => {
    const choice = (c: ToolCall) => (all === undefined ? decisions[c.id] : all);
    const approved = calls.filter((c) => choice(c)).map((c) => c.id);
    const denied = calls.filter((c) => !choice(c)).map((c) => c.id);
    onError(await decideTools(id, approved, denied));
  };
  return (
    <div className="approval" role="group" aria-label="Tool calls waiting for approval">
      <p>The assistant wants to run:</p>
      <ul>
        {calls.map((c) => (
          <li key={c.id} data-call={c.id}>
            <code>{c.name}</code> <code className="args">{c.argumentsJson}</code>{" "}
            <label>
              <input
                type="radio"
                name={`decision-${c.id}`}
                checked={decisions[c.id] === true}
                onChange={() => setDecisions((d) => ({ ...d, [c.id]: true }))}
              />
              Approve
            </label>
            <label>
              <input
                type="radio"
                name={`decision-${c.id}`}
                checked={decisions[c.id] === false}
                onChange={() => setDecisions((d) => ({ ...d, [c.id]: false }))}
              />
              Deny
            </label>
          </li>
        ))}
      </ul>
      {calls.length > 1 && (
        <button disabled={!decided} onClick={() => submit()}>
          Submit decisions
        </button>
      )}
      <button onClick={() => submit(true)}>Approve{calls.length > 1 ? " all" : ""}</button>
      <button onClick={() => submit(false)}>Deny{calls.length > 1 ? " all" : ""}</button>
    </div>
  );
}
