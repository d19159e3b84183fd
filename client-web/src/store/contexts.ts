// Pure folding of the list of contexts from WatchContexts.

import type { ContextSummary } from "../gen/ctxd/v1/context_pb";
import type { WatchContextsResponse } from "../gen/ctxd/v1/context_service_pb";

function updatedMicros(summary: ContextSummary): bigint {
  const at = summary.updatedAt;
  return at ? at.seconds * 1_000_000n + BigInt(Math.floor(at.nanos / 1000)) : 0n;
}

/** Newest-updated first, as the server lists them. */
export function sortContexts(contexts: ContextSummary[]): ContextSummary[] {
  return [...contexts].sort((a, b) => {
    const d = updatedMicros(b) - updatedMicros(a);
    return d > 0n ? 1 : d < 0n ? -1 : a.contextId.localeCompare(b.contextId);
  });
}

export function applyListEvent(contexts: ContextSummary[], event: WatchContextsResponse): ContextSummary[] {
  const kind = event.kind;
  switch (kind.case) {
    case "reset":
      return sortContexts(kind.value.contexts);
    case "upserted": {
      const held = contexts.find((c) => c.contextId === kind.value.contextId);
      if (held && held.revision > kind.value.revision) return contexts;
      return sortContexts([...contexts.filter((c) => c.contextId !== kind.value.contextId), kind.value]);
    }
    case "removedContextId":
      return contexts.filter((c) => c.contextId !== kind.value);
    default:
      return contexts;
  }
}
