// Stream pumps, outside components: each follows a server stream into the store and
// reconnects with backoff, resuming from the last revision it holds.

import { Code, ConnectError } from "@connectrpc/connect";

import { PAGE, explain } from "./actions";
import { ctxd } from "./api";
import { type Connection, useStore } from "./store";

const MAX_BACKOFF_MS = 10_000;

function backoff(attempt: number): number {
  const ceiling = Math.min(MAX_BACKOFF_MS, 250 * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** Waits `ms`, or less if `signal` aborts; leaves no listener behind either way. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

function disconnected(): Connection {
  return navigator.onLine ? "reconnecting" : "offline";
}

/** Runs `follow` until `signal` aborts, reconnecting after errors and ends. */
async function pump(
  signal: AbortSignal,
  follow: () => Promise<void>,
  setConnection: (connection: Connection) => void,
  stopOn: (error: unknown) => boolean,
) {
  let attempt = 0;
  while (!signal.aborted) {
    try {
      await follow();
      attempt = 0;
    } catch (error) {
      if (signal.aborted) return;
      if (stopOn(error)) return;
      attempt += 1;
    }
    if (signal.aborted) return;
    setConnection(disconnected());
    await sleep(backoff(attempt), signal);
  }
}

/** Whether `error` ends a pump for good: the credentials were refused (the sign-in panel
 * takes over, and the streams start again after signing in), or `code` says so. */
function final(error: unknown, code?: Code): boolean {
  if (!(error instanceof ConnectError)) return false;
  if (error.code === Code.Unauthenticated) {
    explain(error); // opens the sign-in panel
    return true;
  }
  return error.code === code;
}

/** Follows one context while `signal` is not aborted. */
export function followContext(id: string, signal: AbortSignal): void {
  const store = useStore.getState;
  void pump(
    signal,
    async () => {
      const from = store().openId === id ? (store().conversation.server?.revision ?? 0n) : 0n;
      // The end of the conversation; older messages are read as the user scrolls back.
      const events = ctxd.watchState({ contextId: id, fromRevision: from, messageLimit: PAGE }, { signal });
      for await (const event of events) {
        store().setConnection("live");
        store().onEvent(id, event);
        if (event.kind.case === "contextDeleted") return;
      }
    },
    (connection) => store().setConnection(connection),
    // A context that does not exist (any more) is not worth reconnecting to.
    (error) => final(error, Code.NotFound),
  );
}

/** Follows the list of contexts while `signal` is not aborted. */
export function followList(signal: AbortSignal): void {
  const store = useStore.getState;
  void pump(
    signal,
    async () => {
      for await (const event of ctxd.watchContexts({ pageSize: 200 }, { signal })) {
        store().setListConnection("live");
        store().onListEvent(event);
      }
    },
    (connection) => store().setListConnection(connection),
    (error) => final(error),
  );
}
