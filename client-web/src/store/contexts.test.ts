import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";

import { ContextSummarySchema } from "../gen/ctxd/v1/context_pb";
import { WatchContextsResponseSchema } from "../gen/ctxd/v1/context_service_pb";
import { applyListEvent } from "./contexts";

const summary = (id: string, seconds: bigint, revision = 1n) =>
  create(ContextSummarySchema, { contextId: id, title: id, revision, updatedAt: { seconds, nanos: 0 } });

describe("the list of contexts", () => {
  it("resets, upserts newest first, ignores stale upserts, removes", () => {
    let list = applyListEvent([], create(WatchContextsResponseSchema, { kind: { case: "reset", value: { contexts: [summary("a", 1n), summary("b", 2n)] } } }));
    expect(list.map((c) => c.contextId)).toEqual(["b", "a"]);
    list = applyListEvent(list, create(WatchContextsResponseSchema, { kind: { case: "upserted", value: summary("a", 3n, 2n) } }));
    expect(list.map((c) => c.contextId)).toEqual(["a", "b"]);
    const stale = applyListEvent(list, create(WatchContextsResponseSchema, { kind: { case: "upserted", value: summary("a", 1n, 1n) } }));
    expect(stale).toBe(list);
    list = applyListEvent(list, create(WatchContextsResponseSchema, { kind: { case: "removedContextId", value: "a" } }));
    expect(list.map((c) => c.contextId)).toEqual(["b"]);
  });
});
