import { type MessageInitShape, create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";

import {
  ContextStateSchema,
  ContextUsageSchema,
  FsmState,
  type Message,
  MessageSchema,
  MessageStatus,
  Role,
  ToolCallSchema,
} from "../gen/ctxd/v1/context_pb";
import { type WatchStateResponse, WatchStateResponseSchema } from "../gen/ctxd/v1/context_service_pb";
import {
  type Conversation,
  addPending,
  applyEvent,
  applyResponse,
  discardPending,
  emptyConversation,
  failPending,
  prependEarlier,
  shown,
} from "./conversation";

const msg = (id: string, role: Role, text: string, extra: MessageInitShape<typeof MessageSchema> = {}) =>
  create(MessageSchema, {
    id,
    role,
    status: MessageStatus.COMPLETE,
    content: [{ part: { case: "text", value: text } }],
    ...extra,
  });

const snapshot = (revision: bigint, messages: Message[], state = FsmState.IDLE): WatchStateResponse =>
  create(WatchStateResponseSchema, {
    contextId: "c",
    revision,
    kind: { case: "snapshot", value: create(ContextStateSchema, { contextId: "c", revision, state, messages }) },
  });

const event = (revision: bigint, kind: MessageInitShape<typeof WatchStateResponseSchema>["kind"]): WatchStateResponse =>
  create(WatchStateResponseSchema, { contextId: "c", revision, kind });

const textOf = (m: Message) => m.content.map((p) => (p.part.case === "text" ? p.part.value : "")).join("");

function fold(events: WatchStateResponse[], from: Conversation = emptyConversation): Conversation {
  return events.reduce(applyEvent, from);
}

describe("folding watch events", () => {
  it("applies every kind and ends where the server is", () => {
    const user = msg("u1", Role.USER, "hi", { clientMessageId: "k1" });
    const streaming = msg("a1", Role.ASSISTANT, "You ", { status: MessageStatus.STREAMING });
    const call = create(ToolCallSchema, { id: "t1", name: "clock" });
    const c = fold([
      snapshot(1n, []),
      event(2n, { case: "messageAppended", value: user }),
      event(2n, { case: "stateChanged", value: { state: FsmState.PROCESSING_USER_MESSAGE, lastError: "", pendingToolCalls: [] } }),
      event(4n, { case: "messageAppended", value: streaming }),
      event(4n, { case: "messageDelta", value: { messageId: "a1", text: "said" } }),
      event(4n, { case: "messageDelta", value: { messageId: "a1", text: ": hi" } }),
      event(5n, { case: "messageUpdated", value: msg("a1", Role.ASSISTANT, "You said: hi") }),
      event(6n, { case: "stateChanged", value: { state: FsmState.AWAITING_TOOL_APPROVAL, lastError: "", pendingToolCalls: [call] } }),
    ]);
    const server = c.server!;
    expect(server.revision).toBe(6n);
    expect(server.state).toBe(FsmState.AWAITING_TOOL_APPROVAL);
    expect(server.pendingToolCalls.map((t) => t.id)).toEqual(["t1"]);
    expect(server.messages.map(textOf)).toEqual(["hi", "You said: hi"]);
    const renamed = fold([event(7n, { case: "contextUpdated", value: { title: "Renamed", config: { model: "mock" } } })], c);
    expect(renamed.server!.title).toBe("Renamed");
    expect(renamed.server!.config?.model).toBe("mock");
    expect(renamed.server!.messages).toHaveLength(2);
    expect(fold([event(7n, { case: "contextDeleted", value: {} })], c).deleted).toBe(true);
  });

  it("streams deltas into the streaming message only", () => {
    const c = fold([
      snapshot(3n, [msg("a1", Role.ASSISTANT, "Hel", { status: MessageStatus.STREAMING }), msg("u0", Role.USER, "old")]),
      event(3n, { case: "messageDelta", value: { messageId: "a1", text: "lo" } }),
      event(3n, { case: "messageDelta", value: { messageId: "u0", text: "!" } }),
      event(3n, { case: "messageDelta", value: { messageId: "nope", text: "?" } }),
    ]);
    expect(c.server!.messages.map(textOf)).toEqual(["Hello", "old"]);
  });

  it("ignores stale revisions and older snapshots", () => {
    const c = fold([snapshot(5n, [msg("m1", Role.USER, "five")])]);
    const stale = fold(
      [
        event(4n, { case: "messageAppended", value: msg("m0", Role.USER, "four") }),
        snapshot(3n, []),
        event(4n, { case: "stateChanged", value: { state: FsmState.FAILED, lastError: "old", pendingToolCalls: [] } }),
      ],
      c,
    );
    expect(stale).toBe(c);
    const again = fold([event(5n, { case: "messageAppended", value: msg("m1", Role.USER, "five") })], c);
    expect(again.server!.messages).toHaveLength(1);
  });

  it("leaves the state to the stream: an action's (BASIC) answer only confirms pending sends", () => {
    let c = addPending(fold([snapshot(5n, [msg("a", Role.USER, "a")])]), "k1", "hello");
    const basic = create(ContextStateSchema, {
      revision: 9n,
      earlierMessageCount: 1n,
      messages: [msg("u1", Role.USER, "hello", { clientMessageId: "k1" })],
    });
    c = applyResponse(c, basic);
    expect(c.server!.revision).toBe(5n);
    expect(c.server!.messages.map((m) => m.id)).toEqual(["a"]);
    expect(c.pending).toEqual([{ clientMessageId: "k1", content: "hello", status: "saved" }]);
    c = applyEvent(c, event(6n, { case: "messageAppended", value: msg("u1", Role.USER, "hello", { clientMessageId: "k1" }) }));
    expect(c.pending).toEqual([]);
  });
});

describe("optimistic sends", () => {
  it("show at once, reconcile in place when the server's message arrives, from either path", () => {
    let c = fold([snapshot(1n, [])]);
    c = addPending(c, "k1", "hello");
    expect(c.pending).toEqual([{ clientMessageId: "k1", content: "hello", status: "sending" }]);
    // From the stream:
    const fromStream = applyEvent(c, event(2n, { case: "messageAppended", value: msg("u1", Role.USER, "hello", { clientMessageId: "k1" }) }));
    expect(fromStream.pending).toEqual([]);
    expect(fromStream.server!.messages.map((m) => m.clientMessageId)).toEqual(["k1"]);
    // Or confirmed by the response first, then brought by the stream:
    const response = create(ContextStateSchema, { revision: 2n, messages: [msg("u1", Role.USER, "hello", { clientMessageId: "k1" })] });
    const fromResponse = applyEvent(
      applyResponse(c, response),
      event(2n, { case: "messageAppended", value: msg("u1", Role.USER, "hello", { clientMessageId: "k1" }) }),
    );
    expect(fromResponse.pending).toEqual([]);
    // The later stream event changes nothing more.
    const both = applyEvent(fromResponse, event(2n, { case: "messageAppended", value: msg("u1", Role.USER, "hello", { clientMessageId: "k1" }) }));
    expect(both.server!.messages).toHaveLength(1);
  });

  it("roll back to a failed entry, and a retry reuses the same id", () => {
    let c = addPending(fold([snapshot(1n, [])]), "k1", "hello");
    c = failPending(c, "k1", "server unavailable");
    expect(c.pending).toEqual([{ clientMessageId: "k1", content: "hello", status: "failed", error: "server unavailable" }]);
    c = addPending(c, "k1", "hello");
    expect(c.pending).toEqual([{ clientMessageId: "k1", content: "hello", status: "sending" }]);
    // The retried request had in fact arrived the first time: the server holds it once.
    c = applyEvent(c, event(2n, { case: "messageAppended", value: msg("u1", Role.USER, "hello", { clientMessageId: "k1" }) }));
    expect(c.pending).toEqual([]);
    expect(c.server!.messages).toHaveLength(1);
    expect(discardPending(addPending(c, "k2", "x"), "k2").pending).toEqual([]);
  });

  it("a failure reported after the message was saved leaves no pending entry", () => {
    let c = addPending(fold([snapshot(1n, [])]), "k1", "hello");
    c = applyEvent(c, event(2n, { case: "messageAppended", value: msg("u1", Role.USER, "hello", { clientMessageId: "k1" }) }));
    expect(failPending(c, "k1", "timeout").pending).toEqual([]);
  });
});

describe("branches", () => {
  it("a branch switch keeps the shared messages and takes the new tail", () => {
    const q = msg("q", Role.USER, "question");
    const a = msg("a", Role.ASSISTANT, "answer");
    const b = msg("b", Role.ASSISTANT, "other", { siblingCount: 2, siblingIndex: 1, previousSiblingId: "a" });
    const c = fold([
      snapshot(1n, [q, a]),
      event(2n, { case: "branchSwitched", value: { kept: 1n, messages: [] } }),
      event(3n, { case: "messageAppended", value: b }),
    ]);
    expect(c.server?.messages.map((m) => m.id)).toEqual(["q", "b"]);
    const back = applyEvent(c, event(4n, { case: "branchSwitched", value: { kept: 1n, messages: [a] } }));
    expect(back.server?.messages.map(textOf)).toEqual(["question", "answer"]);
    expect(back.server?.revision).toBe(4n);
  });

  it("a pending edit shows in place of the message it replaces until the server has it", () => {
    const q = msg("q", Role.USER, "question");
    const a = msg("a", Role.ASSISTANT, "answer");
    const held = fold([snapshot(1n, [q, a])]);
    const editing = addPending(held, "k2", "reworded", "q");
    const view = shown(editing);
    expect(view.messages).toEqual([]);
    expect(view.edit?.content).toBe("reworded");
    const q2 = msg("q2", Role.USER, "reworded", { clientMessageId: "k2", siblingCount: 2, siblingIndex: 1 });
    const saved = applyEvent(editing, event(2n, { case: "branchSwitched", value: { kept: 0n, messages: [q2] } }));
    expect(saved.pending).toEqual([]);
    expect(shown(saved).messages.map((m) => m.id)).toEqual(["q2"]);
  });
});

describe("messages queued during a run", () => {
  it("are held beside the path, replaced by each queue change, and settle a pending send", () => {
    const user = msg("u1", Role.USER, "hi");
    const queued = msg("q1", Role.USER, "later", { status: MessageStatus.QUEUED, clientMessageId: "k2" });
    let c = fold([snapshot(1n, [user], FsmState.STREAMING_LLM_RESPONSE)]);
    c = addPending(c, "k2", "later");
    c = applyEvent(c, event(2n, { case: "queueChanged", value: { messages: [queued] } }));
    expect(c.server?.queuedMessages.map((m) => m.id)).toEqual(["q1"]);
    expect(c.server?.messages.map((m) => m.id)).toEqual(["u1"]);
    expect(c.pending).toEqual([]);
    // The run ended: the queued message joined the path and the queue emptied.
    const joined = msg("q1", Role.USER, "later", { clientMessageId: "k2" });
    c = fold(
      [
        event(3n, { case: "messageAppended", value: joined }),
        event(3n, { case: "queueChanged", value: { messages: [] } }),
      ],
      c,
    );
    expect(c.server?.queuedMessages).toEqual([]);
    expect(c.server?.messages.map((m) => m.id)).toEqual(["u1", "q1"]);
  });
});

describe("a window of a long conversation", () => {
  const windowed = (revision: bigint, messages: Message[], earlier: bigint): WatchStateResponse =>
    create(WatchStateResponseSchema, {
      contextId: "c",
      revision,
      kind: {
        case: "snapshot",
        value: create(ContextStateSchema, { contextId: "c", revision, messages, earlierMessageCount: earlier }),
      },
    });

  it("grows back page by page and folds events as the whole path would", () => {
    let c = fold([windowed(20n, [msg("m8", Role.USER, "8"), msg("m9", Role.ASSISTANT, "9")], 8n)]);
    c = prependEarlier(c, "m8", [msg("m6", Role.USER, "6"), msg("m7", Role.ASSISTANT, "7")]);
    expect(c.server!.messages.map((m) => m.id)).toEqual(["m6", "m7", "m8", "m9"]);
    expect(c.server!.earlierMessageCount).toBe(6n);
    // A page that is not the one before what is held (the path moved meanwhile) is dropped.
    expect(prependEarlier(c, "m8", [msg("x", Role.USER, "x")])).toBe(c);
    // A switch keeping the first 8 messages of the path keeps 2 of those held.
    c = applyEvent(c, event(21n, { case: "branchSwitched", value: { kept: 8n, messages: [msg("n8", Role.USER, "new")] } }));
    expect(c.server!.messages.map((m) => m.id)).toEqual(["m6", "m7", "n8"]);
  });

  it("shows what the model is sent: usage, summaries", () => {
    let c = fold([snapshot(1n, [msg("u", Role.USER, "u"), msg("s", Role.SUMMARY, "Summary of messages #0 to #0.")])]);
    const usage = { tokens: 1200n, windowTokens: 2000, firstMessageInWindowId: "u", summaryMessageId: "s" };
    const changed = event(2n, { case: "stateChanged", value: { state: FsmState.IDLE, lastError: "", pendingToolCalls: [] } });
    c = applyEvent(c, { ...changed, contextUsage: create(ContextUsageSchema, usage) });
    expect(c.server!.contextUsage).toMatchObject(usage);
    expect(c.server!.revision).toBe(2n);
  });
});
