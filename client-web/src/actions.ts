// What the user can do. Each action is one call; its response, like the stream, only moves
// the cache forward. A send is optimistic: shown at once as pending, keyed by a
// client_message_id that a retry reuses, so a request that did arrive is never doubled.

import { ConnectError } from "@connectrpc/connect";

import { ctxd } from "./api";
import { type ContextConfig, type ContextState, StateView, type ToolInfo } from "./gen/ctxd/v1/context_pb";
import { useStore } from "./store";

export function describe(error: unknown): string {
  if (error instanceof ConnectError) return error.rawMessage || error.message;
  return error instanceof Error ? error.message : String(error);
}

export async function sendMessage(id: string, content: string, clientMessageId: string = crypto.randomUUID()) {
  const store = useStore.getState();
  store.markPending(id, clientMessageId, content);
  try {
    const response = await ctxd.sendMessage({ contextId: id, content, clientMessageId, view: StateView.FULL });
    useStore.getState().onResponse(id, response.state);
  } catch (error) {
    useStore.getState().markFailed(id, clientMessageId, describe(error));
  }
}

export async function retrySend(id: string, clientMessageId: string) {
  const pending = useStore.getState().conversation.pending.find((p) => p.clientMessageId === clientMessageId);
  if (pending) await sendMessage(id, pending.content, clientMessageId);
}

/** Runs an action whose answer is a (FULL) state; returns an error message, or null. */
async function act(id: string, call: () => Promise<{ state?: ContextState }>) {
  try {
    const response = await call();
    useStore.getState().onResponse(id, response.state);
    return null;
  } catch (error) {
    return describe(error);
  }
}

export const cancelRun = (id: string) => act(id, () => ctxd.cancelRun({ contextId: id, view: StateView.FULL }));
export const retryRun = (id: string) => act(id, () => ctxd.retryRun({ contextId: id, view: StateView.FULL }));
export const decideTools = (id: string, approved: string[], denied: string[]) =>
  act(id, () =>
    ctxd.approveTools({ contextId: id, approvedToolCallIds: approved, deniedToolCallIds: denied, view: StateView.FULL }),
  );

export async function createContext(title: string): Promise<string> {
  const response = await ctxd.createContext({ title });
  return response.state?.contextId ?? "";
}

export const renameContext = (id: string, title: string) =>
  act(id, () => ctxd.updateContext({ contextId: id, title, view: StateView.FULL }));

export const configureContext = (id: string, config: ContextConfig) =>
  act(id, () => ctxd.updateContext({ contextId: id, config, view: StateView.FULL }));

/** The server's built-in tools, fetched once. */
let tools: Promise<ToolInfo[]> | null = null;
export function listTools(): Promise<ToolInfo[]> {
  tools ??= ctxd.listTools({}).then((r) => r.tools).catch(() => {
    tools = null;
    return [];
  });
  return tools;
}

export async function deleteContext(id: string) {
  await ctxd.deleteContext({ contextId: id });
}
