import { Fragment, useEffect, useMemo, useRef, useState } from "react";
import Markdown from "react-markdown";
import { useShallow } from "zustand/react/shallow";

import {
  cancelRun,
  editMessage,
  forkContext,
  loadEarlier,
  regenerateReply,
  retryRun,
  retrySend,
  switchBranch,
} from "../actions";
import type { ContextUsage, Message } from "../gen/ctxd/v1/context_pb";
import { FsmState, MessageStatus, Role } from "../gen/ctxd/v1/context_pb";
import { isBusy, shown } from "../store/conversation";
import { useStore } from "../store";
import { ApprovalCard } from "./ApprovalCard";
import { Composer } from "./Composer";
import { ConnectionIndicator } from "./ConnectionIndicator";
import { Settings } from "./Settings";
import { StateBadge } from "./StateBadge";

function text(message: Message): string {
  return message.content.map((p) => (p.part.case === "text" ? p.part.value : "")).join("");
}

interface MessageActions {
  /** No run is going on: edits, regenerates and switches are allowed. */
  resting: boolean;
  /** The last assistant message of the path: it can be regenerated. */
  last: boolean;
  onFork: () => void;
  onEdit: (content: string) => void;
  onRegenerate: () => void;
  onSwitch: (messageId: string) => void;
}

/** ‹ i/n ›: the versions at this place of the conversation. */
function Versions({ message, enabled, onSwitch }: { message: Message; enabled: boolean; onSwitch: (id: string) => void }) {
  if (message.siblingCount < 2) return null;
  return (
    <span className="versions" aria-label="Versions">
      <button
        aria-label="Previous version"
        disabled={!enabled || message.previousSiblingId === ""}
        onClick={() => onSwitch(message.previousSiblingId)}
      >
        ‹
      </button>
      <span className="version-index">
        {message.siblingIndex + 1}/{message.siblingCount}
      </span>
      <button
        aria-label="Next version"
        disabled={!enabled || message.nextSiblingId === ""}
        onClick={() => onSwitch(message.nextSiblingId)}
      >
        ›
      </button>
    </span>
  );
}

/** How much of the model's context window the next request takes. */
function UsageMeter({ usage }: { usage: ContextUsage | undefined }) {
  if (!usage || usage.windowTokens === 0) return null;
  const tokens = Number(usage.tokens);
  const share = Math.min(1, tokens / usage.windowTokens);
  const label = `${tokens.toLocaleString()} of ${usage.windowTokens.toLocaleString()} tokens of the model's context window`;
  return (
    <span className="usage" title={label} aria-label={label}>
      <meter min={0} max={1} low={0.6} high={0.8} optimum={0} value={share} />
      <span className="usage-share">{Math.round(share * 100)}%</span>
    </span>
  );
}

/** A summary the model wrote of the messages before it: collapsed, like a note. */
function SummaryView({ message }: { message: Message }) {
  return (
    <li className="message summary" data-id={message.id} data-role="SUMMARY">
      <details>
        <summary>Earlier messages were summarised for the model</summary>
        <div className="body">{text(message)}</div>
      </details>
    </li>
  );
}

function MessageView({ message, actions }: { message: Message; actions: MessageActions }) {
  const [editing, setEditing] = useState<string | null>(null);
  if (message.role === Role.SUMMARY) return <SummaryView message={message} />;
  const role = Role[message.role]?.toLowerCase() ?? "unknown";
  const status = MessageStatus[message.status]?.toLowerCase() ?? "";
  const body = text(message);
  const settled = message.status !== MessageStatus.STREAMING;
  if (editing !== null) {
    const save = () => {
      const content = editing.trim();
      if (!content) return;
      setEditing(null);
      actions.onEdit(content);
    };
    return (
      <li className={`message ${role} editing`} data-id={message.id}>
        <textarea
          aria-label="Edit message"
          value={editing}
          onChange={(e) => setEditing(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey) {
              e.preventDefault();
              save();
            }
            if (e.key === "Escape") setEditing(null);
          }}
        />
        <button onClick={save} disabled={editing.trim() === ""}>
          Save
        </button>
        <button onClick={() => setEditing(null)}>Cancel</button>
      </li>
    );
  }
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
      <div className="message-actions">
        <Versions message={message} enabled={actions.resting} onSwitch={actions.onSwitch} />
        {message.role === Role.USER && actions.resting && (
          <button className="edit" aria-label="Edit" title="Edit this message" onClick={() => setEditing(body)}>
            ✎
          </button>
        )}
        {message.role === Role.ASSISTANT && actions.last && actions.resting && settled && (
          <button className="regenerate" onClick={actions.onRegenerate} title="Another reply to the same message">
            Regenerate
          </button>
        )}
        {message.role !== Role.TOOL && settled && (
          <button className="fork" onClick={actions.onFork} title="A new conversation with the messages up to here">
            Branch off here
          </button>
        )}
      </div>
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
  const { messages, edit } = useMemo(() => shown({ server, pending, deleted }), [server, pending, deleted]);
  const [actionError, setActionError] = useState<string | null>(null);
  const [settingsOpen, setSettingsOpen] = useState(false);
  const end = useRef<HTMLLIElement>(null);
  const top = useRef<HTMLLIElement>(null);
  const newest = server?.messages[server.messages.length - 1];
  const lastText = newest ? text(newest) : "";
  useEffect(() => {
    // Braces: newer browsers return a promise from scrollIntoView, and an effect may only
    // return a cleanup function.
    end.current?.scrollIntoView({ block: "end" });
  }, [newest?.id, lastText.length, pending.length]);
  const earlier = Number(server?.earlierMessageCount ?? 0n);
  const [loading, setLoading] = useState(false);
  const showEarlier = async () => {
    if (loading) return;
    setLoading(true);
    // Keeps what is on screen in place while older messages are put above it.
    const list = top.current?.parentElement;
    const from = list ? list.scrollHeight - list.scrollTop : 0;
    setActionError(await loadEarlier(id));
    setLoading(false);
    if (list) requestAnimationFrame(() => (list.scrollTop = list.scrollHeight - from));
  };
  useEffect(() => {
    // Scrolling up to the first message held reads the page before it.
    const sentinel = top.current;
    if (!sentinel || earlier === 0 || typeof IntersectionObserver === "undefined") return;
    const observer = new IntersectionObserver((seen) => {
      if (seen.some((e) => e.isIntersecting)) void showEarlier();
    });
    observer.observe(sentinel);
    return () => observer.disconnect();
  });

  if (deleted) return <p className="empty">This conversation was deleted.</p>;
  if (!server) return <p className="empty">Loading…</p>;
  const state = server.state;
  const busy = isBusy(state);
  const run = async (action: () => Promise<string | null>) => setActionError(await action());
  const resting = !busy && state !== FsmState.AWAITING_TOOL_APPROVAL && !edit;
  const lastReply = [...messages].reverse().find((m) => m.role === Role.ASSISTANT)?.id;
  const actionsFor = (m: Message): MessageActions => ({
    resting,
    last: m.id === lastReply && m.id === messages[messages.length - 1]?.id,
    onFork: () => void run(() => forkContext(id, m.id)),
    onEdit: (content) => void editMessage(id, m.id, content),
    onRegenerate: () => void run(() => regenerateReply(id, m.id)),
    onSwitch: (to) => void run(() => switchBranch(id, to)),
  });
  const windowStart = server.contextUsage?.firstMessageInWindowId;
  const missingReply = resting && messages.length > 0 && messages[messages.length - 1].role === Role.USER && pending.length === 0;

  return (
    <section className="conversation" aria-label={server.title || "Conversation"}>
      <header>
        <h1>{server.title || "Untitled"}</h1>
        <StateBadge state={state} />
        <UsageMeter usage={server.contextUsage} />
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
        {/* In the scrolled list: seen once the user scrolls up to the first message held. */}
        <li ref={top} className="earlier-sentinel">
          {earlier > 0 && (
            <button className="earlier" disabled={loading} onClick={() => void showEarlier()}>
              {loading ? "Loading…" : `Show ${earlier.toLocaleString()} earlier messages`}
            </button>
          )}
        </li>
        {messages.map((m, i) => (
          <Fragment key={m.id}>
            {m.id === windowStart && (i > 0 || earlier > 0) && (
              <li className="window-start" role="note">
                The model sees the conversation from here
                {server.contextUsage?.summaryMessageId ? ", and a summary of what came before" : ""}
              </li>
            )}
            <MessageView message={m} actions={actionsFor(m)} />
          </Fragment>
        ))}
        {server.queuedMessages.map((m) => (
          // Sent during a run (by any client): it joins the conversation when the run ends.
          <li key={m.id} className="message user queued" data-id={m.id} data-status="QUEUED">
            <div className="body">{text(m)}</div>
            <div className="note">queued: sent when the reply ends</div>
          </li>
        ))}
        {pending.map((p) => (
          // An edit shows in place of the message it replaces, which is where the list ends.
          <li key={p.clientMessageId} className={`message user pending ${p.status}`} data-pending={p.status}>
            <div className="body">{p.content}</div>
            {p.status === "sending" ? (
              <div className="note">sending…</div>
            ) : p.status === "saved" ? null : (
              <div className="note error" role="alert">
                Not saved: {p.error}{" "}
                <button onClick={() => retrySend(id, p.clientMessageId)}>Retry</button>{" "}
                <button onClick={() => useStore.getState().discard(id, p.clientMessageId)}>Discard</button>
              </div>
            )}
          </li>
        ))}
        {/* Inside the scrolled list, so that scrolling it into view scrolls the list. */}
        <li ref={end} className="end" aria-hidden="true" />
      </ol>
      {missingReply && state === FsmState.IDLE && (
        <p className="note">
          No reply yet. <button onClick={() => run(() => regenerateReply(id))}>Generate a reply</button>
        </p>
      )}
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


