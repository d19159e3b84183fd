// What the user can do. Each action is one call; its response, like the stream, only moves
// the cache forward. A send is optimistic: shown at once as pending, keyed by a
// client_message_id that a retry reuses, so a request that did arrive is never doubled.

import { Code, ConnectError } from "@connectrpc/connect";

import { ctxd } from "./api";
import { forgetToken, saveToken } from "./credentials";
import { navigate } from "./navigation";
import { type ContextConfig, type ContextState, StateView, type ToolInfo } from "./gen/ctxd/v1/context_pb";
import { OnBusy } from "./gen/ctxd/v1/context_service_pb";
import { useStore } from "./store";

/** The message to show for a failed call. A refusal of the credentials also opens the
 * sign-in panel. */
export function explain(error: unknown): string {
  if (error instanceof ConnectError) {
    const message = error.rawMessage || error.message;
    if (error.code === Code.Unauthenticated) useStore.getState().refused(message);
    return message;
  }
  return error instanceof Error ? error.message : String(error);
}

/** Uses `token` (a JWT or an API key) from now on. */
export function signIn(token: string) {
  saveToken(token);
  useStore.getState().credentialsChanged();
}

/** Forgets the saved credential and everything shown under it. */
export function signOut() {
  forgetToken();
  useStore.getState().credentialsChanged();
}

/** Sends a message; with `interrupt`, a reply in progress is stopped first ("stop and send":
 * the server keeps its text so far, marked cancelled, and answers the new message). */
export async function sendMessage(
  id: string,
  content: string,
  clientMessageId: string = crypto.randomUUID(),
  interrupt = false,
) {
  const store = useStore.getState();
  store.markPending(id, clientMessageId, content);
  try {
    const onBusy = interrupt ? OnBusy.INTERRUPT : OnBusy.REJECT;
    const response = await ctxd.sendMessage({ contextId: id, content, clientMessageId, view: StateView.BASIC, onBusy });
    useStore.getState().onResponse(id, response.state);
  } catch (error) {
    useStore.getState().markFailed(id, clientMessageId, explain(error));
  }
}

/** Edits a sent message: optimistic like a send, shown in place of the message it replaces. */
export async function editMessage(
  id: string,
  messageId: string,
  content: string,
  clientMessageId: string = crypto.randomUUID(),
) {
  useStore.getState().markPending(id, clientMessageId, content, messageId);
  try {
    const response = await ctxd.editMessage({ contextId: id, messageId, content, clientMessageId, view: StateView.BASIC });
    useStore.getState().onResponse(id, response.state);
  } catch (error) {
    useStore.getState().markFailed(id, clientMessageId, explain(error));
  }
}

export async function retrySend(id: string, clientMessageId: string) {
  const pending = useStore.getState().conversation.pending.find((p) => p.clientMessageId === clientMessageId);
  if (!pending) return;
  if (pending.replaces) await editMessage(id, pending.replaces, pending.content, clientMessageId);
  else await sendMessage(id, pending.content, clientMessageId);
}

/** The revision the view shows, so that an action meant for it is refused if it moved on. */
const shownRevision = () => useStore.getState().conversation.server?.revision;

export const regenerateReply = (id: string, messageId = "") =>
  act(id, () =>
    ctxd.regenerateReply({ contextId: id, messageId, expectedRevision: shownRevision(), view: StateView.BASIC }),
  );

export const switchBranch = (id: string, messageId: string) =>
  act(id, () => ctxd.switchBranch({ contextId: id, messageId, view: StateView.BASIC }));

/** Runs an action whose answer is a (BASIC) state; returns an error message, or null. */
async function act(id: string, call: () => Promise<{ state?: ContextState }>) {
  try {
    const response = await call();
    useStore.getState().onResponse(id, response.state);
    return null;
  } catch (error) {
    return explain(error);
  }
}

export const cancelRun = (id: string) => act(id, () => ctxd.cancelRun({ contextId: id, view: StateView.BASIC }));
export const retryRun = (id: string) => act(id, () => ctxd.retryRun({ contextId: id, view: StateView.BASIC }));
export const decideTools = (id: string, approved: string[], denied: string[]) =>
  act(id, () =>
    ctxd.approveTools({ contextId: id, approvedToolCallIds: approved, deniedToolCallIds: denied, view: StateView.BASIC }),
  );

/** Messages the view shows at first, and reads at a time when the user scrolls back. */
export const PAGE = 50;

/** Reads the page of the active path before the first message held, into the store. */
export async function loadEarlier(id: string): Promise<string | null> {
  const first = useStore.getState().conversation.server?.messages[0]?.id;
  if (!first) return null;
  try {
    const page = await ctxd.listPathMessages({ contextId: id, beforeMessageId: first, pageSize: PAGE });
    useStore.getState().onEarlier(id, first, page.messages);
    return null;
  } catch (error) {
    return explain(error);
  }
}

export async function createContext(title: string): Promise<string> {
  const response = await ctxd.createContext({ title });
  return response.state?.contextId ?? "";
}

/** Starts a new conversation from this one's messages through `messageId`; returns an
 * error message, or null once the new conversation is open. */
export async function forkContext(id: string, messageId: string): Promise<string | null> {
  try {
    const response = await ctxd.forkContext({ contextId: id, messageId });
    const forked = response.state?.contextId;
    if (forked) navigate(forked);
    return null;
  } catch (error) {
    return explain(error);
  }
}

export const renameContext = (id: string, title: string) =>
  act(id, () => ctxd.updateContext({ contextId: id, title, view: StateView.BASIC }));

export const configureContext = (id: string, config: ContextConfig) =>
  act(id, () => ctxd.updateContext({ contextId: id, config, view: StateView.BASIC }));

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
