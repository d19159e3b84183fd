import { useEffect, useRef, useState } from "react";
import Markdown from "react-markdown";
import { useShallow } from "zustand/react/shallow";

import { cancelRun, forkContext, retryRun, retrySend } from "../actions";
import type { Message } from "../gen/ctxd/v1/context_pb";
import { FsmState, MessageStatus, Role } from "../gen/ctxd/v1/context_pb";
import { isBusy } from "../store/conversation";
import { useStore } from "../store";
import { ApprovalCard } from "./ApprovalCard";
import { Composer } from "./Composer";
import { ConnectionIndicator } from "./ConnectionIndicator";
import { Settings } from "./Settings";
import { StateBadge } from "./StateBadge";

function text(message: Message): string {
  return message.content.map((p) => (p.part.case === "text" ? p.part.value : "")).join("");
}

function MessageView({ message, onFork }: { message: Message; onFork: () => void }) {
  const role = Role[message.role]?.toLowerCase() ?? "unknown";
  const status = MessageStatus[message.status]?.toLowerCase() ?? "";
  const body = text(message);
  return (
    <li className={`message ${role} ${status}`} data-id={message.id} data-status={MessageStatus[message.status]}>
      {message.role === Role.ASSISTANT ? (
        // react-markdown renders no raw HTML: the model's text cannot inject markup.
        <div className="body">
          <Markdown>{body}</Markdown>
        </div>
      ) : (
        <div className="body">{body}</div>
      )}
      {message.toolCalls.map((call) => (
        <div key={call.id} className="tool-call">
          calls <code>{call.name}</code> <code>{call.argumentsJson}</code>
        </div>
      ))}
      {message.status === MessageStatus.CANCELLED && <div className="note">stopped</div>}
      {message.status === MessageStatus.ERROR && <div className="note">this attempt failed</div>}
      {message.role !== Role.TOOL && message.status !== MessageStatus.STREAMING && (
        <button className="fork" onClick={onFork} title="A new conversation with the messages up to here">
          Branch off here
        </button>
      )}
    </li>
  );
}

export function ConversationView({ id }: { id: string }) {
  const { server, pending, deleted, connection } = useStore(
    useShallow((s) => ({
      server: s.conversation.server,
      pending: s.conversation.pending,
      deleted: s.conversation.deleted,
      connection: s.connection,
    })),
  );
  const [actionError, setActionError] = useState<string | null>(null);
  const [settingsOpen, setSettingsOpen] = useState(false);
  const end = useRef<HTMLDivElement>(null);
  const lastText = server?.messages.length ? text(server.messages[server.messages.length - 1]) : "";
  useEffect(() => {
    // Braces: newer browsers return a promise from scrollIntoView, and an effect may only
    // return a cleanup function.
    end.current?.scrollIntoView({ block: "end" });
  }, [server?.messages.length, lastText.length, pending.length]);

  if (deleted) return <p className="empty">This conversation was deleted.</p>;
  if (!server) return <p className="empty">Loading…</p>;
  const state = server.state;
  const busy = isBusy(state);
  const run = async (action: () => Promise<string | null>) => setActionError(await action());

  return (
    <section className="conversation" aria-label={server.title || "Conversation"}>
      <header>
        <h1>{server.title || "Untitled"}</h1>
        <StateBadge state={state} />
        <ConnectionIndicator connection={connection} />
        {busy && (
          <button className="stop" onClick={() => run(() => cancelRun(id))}>
            Stop
          </button>
        )}
        <button aria-expanded={settingsOpen} onClick={() => setSettingsOpen((o) => !o)}>
          Settings
        </button>
      </header>
      {settingsOpen && <Settings id={id} config={server.config} onClose={() => setSettingsOpen(false)} />}
      <ol className="messages" aria-live="polite">
        {server.messages.map((m) => (
          <MessageView key={m.id} message={m} onFork={() => void run(() => forkContext(id, m.id))} />
        ))}
        {pending.map((p) => (
          <li key={p.clientMessageId} className={`message user pending ${p.status}`} data-pending={p.status}>
            <div className="body">{p.content}</div>
            {p.status === "sending" ? (
              <div className="note">sending…</div>
            ) : (
              <div className="note error" role="alert">
                Not saved: {p.error}{" "}
                <button onClick={() => retrySend(id, p.clientMessageId)}>Retry</button>{" "}
                <button onClick={() => useStore.getState().discard(id, p.clientMessageId)}>Discard</button>
              </div>
            )}
          </li>
        ))}
      </ol>
      <div ref={end} />
      {state === FsmState.AWAITING_TOOL_APPROVAL && (
        <ApprovalCard id={id} calls={server.pendingToolCalls} onError={setActionError} />
      )}
      {state === FsmState.FAILED && (
        <div className="failed" role="alert">
          The run failed: {server.lastError}{" "}
          <button onClick={() => run(() => retryRun(id))}>Retry</button>
        </div>
      )}
      {actionError && (
        <p className="error" role="alert">
          {actionError}
        </p>
      )}
      <Composer id={id} state={state} />
    </section>
  );
}


