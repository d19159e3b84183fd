// The app's one store, built from slices. Server state enters only through WatchState /
// WatchContexts events and action responses; the only local writes are pending messages
// and whether the server refused the app's credentials.

import { create } from "zustand";

import type { ContextSummary } from "../gen/ctxd/v1/context_pb";
import type { WatchContextsResponse, WatchStateResponse } from "../gen/ctxd/v1/context_service_pb";
import type { ContextState, Message } from "../gen/ctxd/v1/context_pb";
import { applyListEvent } from "./contexts";
import {
  type Conversation,
  addPending,
  applyEvent,
  applyResponse,
  discardPending,
  emptyConversation,
  failPending,
  prependEarlier,
} from "./conversation";

export type Connection = "live" | "reconnecting" | "offline";

interface ListSlice {
  contexts: ContextSummary[];
  listConnection: Connection;
  onListEvent: (event: WatchContextsResponse) => void;
  setListConnection: (connection: Connection) => void;
}

interface ConversationSlice {
  /** The context on screen. */
  openId: string | null;
  conversation: Conversation;
  connection: Connection;
  open: (id: string | null) => void;
  onEvent: (id: string, event: WatchStateResponse) => void;
  onResponse: (id: string, state: ContextState | undefined) => void;
  setConnection: (connection: Connection) => void;
  markPending: (id: string, clientMessageId: string, content: string, replaces?: string) => void;
  markFailed: (id: string, clientMessageId: string, error: string) => void;
  discard: (id: string, clientMessageId: string) => void;
  /** Older messages of the path, read before the first one held (`before`). */
  onEarlier: (id: string, before: string, messages: Message[]) => void;
}

interface SessionSlice {
  /** Why the server refused the app's credentials (or their absence); null while they work.
   * The sign-in panel shows while it is set. */
  refusal: string | null;
  /** Bumped when the credentials change: streams start again with the new ones. */
  session: number;
  refused: (reason: string) => void;
  /** New credentials (or none): what was cached under the old ones is dropped. */
  credentialsChanged: () => void;
}

export type Store = ListSlice & ConversationSlice & SessionSlice;

export const useStore = create<Store>()((set) => {
  /** Changes the open conversation only if `id` is still the one open. */
  const onOpen = (id: string, change: (c: Conversation) => Conversation) =>
    set((s) => (s.openId === id ? { conversation: change(s.conversation) } : {}));
  return {
    contexts: [],
    listConnection: "reconnecting",
    onListEvent: (event) => set((s) => ({ contexts: applyListEvent(s.contexts, event) })),
    setListConnection: (listConnection) => set({ listConnection }),

    openId: null,
    conversation: emptyConversation,
    connection: "reconnecting",
    open: (openId) => set({ openId, conversation: emptyConversation, connection: "reconnecting" }),
    onEvent: (id, event) => onOpen(id, (c) => applyEvent(c, event)),
    onResponse: (id, state) => onOpen(id, (c) => applyResponse(c, state)),
    setConnection: (connection) => set({ connection }),
    markPending: (id, clientMessageId, content, replaces) =>
      onOpen(id, (c) => addPending(c, clientMessageId, content, replaces)),
    markFailed: (id, clientMessageId, error) => onOpen(id, (c) => failPending(c, clientMessageId, error)),
    discard: (id, clientMessageId) => onOpen(id, (c) => discardPending(c, clientMessageId)),
    onEarlier: (id, before, messages) => onOpen(id, (c) => prependEarlier(c, before, messages)),

    refusal: null,
    session: 0,
    refused: (refusal) => set({ refusal }),
    credentialsChanged: () =>
      set((s) => ({
        refusal: null,
        session: s.session + 1,
        contexts: [],
        listConnection: "reconnecting",
        conversation: emptyConversation,
        connection: "reconnecting",
      })),
  };
});
