import { FsmState } from "../gen/ctxd/v1/context_pb";

const LABELS: Record<FsmState, string> = {
  [FsmState.UNSPECIFIED]: "…",
  [FsmState.IDLE]: "idle",
  [FsmState.PROCESSING_USER_MESSAGE]: "sending",
  [FsmState.AWAITING_LLM_RESPONSE]: "thinking",
  [FsmState.STREAMING_LLM_RESPONSE]: "replying",
  [FsmState.PROCESSING_LLM_RESPONSE]: "processing",
  [FsmState.AWAITING_TOOL_APPROVAL]: "needs approval",
  [FsmState.EXECUTING_TOOLS]: "running tools",
  [FsmState.PROCESSING_TOOL_RESULTS]: "processing tools",
  [FsmState.GENERATING_RESPONSE]: "thinking",
  [FsmState.SUMMARIZING_HISTORY]: "summarising",
  [FsmState.TRANSIENT_FAILURE]: "retrying",
  [FsmState.FAILED]: "failed",
};

export function StateBadge({ state }: { state: FsmState }) {
  return (
    <span className={`badge state-${FsmState[state]?.toLowerCase() ?? "unknown"}`} data-state={FsmState[state]}>
      {LABELS[state] ?? "…"}
    </span>
  );
}
