// Pure folding of server state for one context. The server is the source of truth: these
// functions only ever move the cache forward to what the server said, never invent state.
// The one local addition is the optimistic "pending" message the user just typed.

import type { ContextState, Message } from "../gen/ctxd/v1/context_pb";
import { FsmState, MessageStatus } from "../gen/ctxd/v1/context_pb";
import type { WatchStateResponse } from "../gen/ctxd/v1/context_service_pb";

/** A message the user sent that the server has not confirmed yet. */
export interface PendingMessage {
  clientMessageId: string;
  content: string;
  /** "sending": the request is in flight; "saved": the server answered that it saved it (the
   * stream has not brought it yet); "failed": it was refused or never arrived. */
  status: "sending" | "saved" | "failed";
  error?: string;
  /** An edit: the id of the message it makes a new version of (shown in its place). */
  replaces?: string;
}

export interface Conversation {
  /** What the server last said; null until the first snapshot. */
  server: ContextState | null;
  /** Optimistic messages, oldest first, keyed by their client_message_id. */
  pending: PendingMessage[];
  /** The context was deleted (by anyone). */
  deleted: boolean;
}

export const emptyConversation: Conversation = { server: null, pending: [], deleted: false };

/** Whether a message is still arriving. */
export function isStreaming(message: Message): boolean {
  return message.status === MessageStatus.STREAMING;
}

/** States in which a run is going on (the composer waits, Stop is offered). */
export function isBusy(state: FsmState): boolean {
  return ![FsmState.IDLE, FsmState.FAILED, FsmState.UNSPECIFIED].includes(state);
}

function withMessage(state: ContextState, message: Message): ContextState {
  const index = state.messages.findIndex((m) => m.id === message.id);
  const messages =
    index === -1 ? [...state.messages, message] : state.messages.map((m, i) => (i === index ? message : m));
  return { ...state, messages };
}

function appendText(message: Message, text: string): Message {
  const content = [...message.content];
  const last = content[content.length - 1];
  if (last && last.part.case === "text") {
    content[content.length - 1] = { ...last, part: { case: "text", value: last.part.value + text } };
  } else {
    content.push({ $typeName: "ctxd.v1.ContentPart", part: { case: "text", value: text } });
  }
  return { ...message, content };
}

/** The client_message_ids of the messages `state` holds, on the path or queued. */
function clientIds(state: ContextState): Set<string> {
  const held = [...state.messages, ...state.queuedMessages];
  return new Set(held.map((m) => m.clientMessageId).filter((id) => id !== ""));
}

/** Drops the pending messages the server now holds (matched by client_message_id), on the
 * path or queued for the next turn. */
export function reconcile(conversation: Conversation): Conversation {
  const server = conversation.server;
  if (!server || conversation.pending.length === 0) return conversation;
  const saved = clientIds(server);
  const pending = conversation.pending.filter((p) => !saved.has(p.clientMessageId));
  return pending.length === conversation.pending.length ? conversation : { ...conversation, pending };
}

/**
 * Applies one WatchState event. Events older than what is held are ignored; applying an
 * event twice changes nothing more than applying it once (a message appended again
 * replaces itself), except deltas, which the server sends once each.
 */
export function applyEvent(conversation: Conversation, event: WatchStateResponse): Conversation {
  const kind = event.kind;
  if (kind.case === "snapshot") {
    const held = conversation.server;
    if (held && held.revision > kind.value.revision) return conversation;
    return reconcile({ ...conversation, server: kind.value, deleted: false });
  }
  if (kind.case === "contextDeleted") return { ...conversation, deleted: true };
  const held = conversation.server;
  if (!held || event.revision < held.revision) return conversation;
  let server: ContextState = held;
  switch (kind.case) {
    case "messageAppended":
    case "messageUpdated":
      server = withMessage(held, kind.value);
      break;
    case "messageDelta": {
      const target = held.messages.find((m) => m.id === kind.value.messageId);
      if (!target || !isStreaming(target)) return conversation;
      server = withMessage(held, appendText(target, kind.value.text));
      break;
    }
    case "branchSwitched": {
      // `kept` counts from the path's first message; the cache may hold only its end. (A
      // switch from before what a watcher holds comes as a snapshot instead.)
      const kept = Math.max(0, Number(kind.value.kept - held.earlierMessageCount));
      server = { ...held, messages: [...held.messages.slice(0, kept), ...kind.value.messages] };
      break;
    }
    case "contextUpdated":
      server = { ...held, title: kind.value.title, config: kind.value.config };
      break;
    case "queueChanged":
      server = { ...held, queuedMessages: kind.value.messages };
      break;
    case "stateChanged":
      server = {
        ...held,
        state: kind.value.state,
        lastError: kind.value.lastError,
        pendingToolCalls: kind.value.pendingToolCalls,
      };
      break;
    default:
      return conversation;
  }
  // The last event of a change that moved what the model is sent carries it.
  if (event.contextUsage) server = { ...server, contextUsage: event.contextUsage };
  server = { ...server, revision: event.revision, updatedAt: event.updatedAt ?? server.updatedAt };
  return reconcile({ ...conversation, server });
}

/**
 * Takes what an action's answer says. Actions ask for the BASIC view (its cost does not grow
 * with the conversation), which holds only the newest message: it cannot stand in for the
 * cache, so the state itself comes from the stream. The answer confirms the pending sends it
 * holds: they are saved, and show as such until the stream brings them.
 */
export function applyResponse(conversation: Conversation, state: ContextState | undefined): Conversation {
  if (!state) return conversation;
  const saved = clientIds(state);
  const pending = conversation.pending.map((p) =>
    saved.has(p.clientMessageId) && p.status === "sending" ? { ...p, status: "saved" as const } : p,
  );
  return reconcile({ ...conversation, pending });
}

/**
 * Puts older messages of the active path (a page read with ListPathMessages, oldest first)
 * before those held, if they are the ones right before them: the cache then holds a longer
 * end of the path, and folds events as before.
 */
export function prependEarlier(conversation: Conversation, before: string, page: Message[]): Conversation {
  const held = conversation.server;
  if (!held || page.length === 0 || held.messages[0]?.id !== before) return conversation;
  const known = new Set(held.messages.map((m) => m.id));
  const earlier = page.filter((m) => !known.has(m.id));
  const earlierMessageCount = held.earlierMessageCount - BigInt(Math.min(earlier.length, Number(held.earlierMessageCount)));
  return { ...conversation, server: { ...held, messages: [...earlier, ...held.messages], earlierMessageCount } };
}

export function addPending(
  conversation: Conversation,
  clientMessageId: string,
  content: string,
  replaces?: string,
): Conversation {
  const others = conversation.pending.filter((p) => p.clientMessageId !== clientMessageId);
  const pending: PendingMessage = { clientMessageId, content, status: "sending", ...(replaces ? { replaces } : {}) };
  return { ...conversation, pending: [...others, pending] };
}

/** What to show: the server's active path, with a pending edit in place of the message it
 * replaces (and nothing after it, as the server will have it), then pending sends. */
export function shown(conversation: Conversation): { messages: Message[]; edit: PendingMessage | null } {
  const messages = conversation.server?.messages ?? [];
  const edit = conversation.pending.find((p) => p.replaces !== undefined) ?? null;
  const at = edit ? messages.findIndex((m) => m.id === edit.replaces) : -1;
  return at === -1 ? { messages, edit: null } : { messages: messages.slice(0, at), edit };
}

export function failPending(conversation: Conversation, clientMessageId: string, error: string): Conversation {
  const pending = conversation.pending.map((p) =>
    p.clientMessageId === clientMessageId ? { ...p, status: "failed" as const, error } : p,
  );
  return reconcile({ ...conversation, pending });
}

export function discardPending(conversation: Conversation, clientMessageId: string): Conversation {
  return { ...conversation, pending: conversation.pending.filter((p) => p.clientMessageId !== clientMessageId) };
}
