import { useState } from "react";

import { createContext, deleteContext, explain, renameContext, signOut } from "../actions";
import { currentToken } from "../credentials";
import { navigate } from "../navigation";
import { useStore } from "../store";
import { ConnectionIndicator } from "./ConnectionIndicator";
import { StateBadge } from "./StateBadge";

export function Sidebar({ openId, onPicked }: { openId: string | null; onPicked: () => void }) {
  const contexts = useStore((s) => s.contexts);
  const connection = useStore((s) => s.listConnection);
  const [error, setError] = useState<string | null>(null);
  const [renaming, setRenaming] = useState<string | null>(null);
  const [draft, setDraft] = useState("");

  const rename = async (id: string) => {
    setRenaming(null);
    setError(await renameContext(id, draft.trim()));
  };

  const startNew = async () => {
    try {
      // Untitled: the server names it after its first message, for every client.
      const id = await createContext("");
      navigate(id);
      onPicked();
    } catch (e) {
      setError(explain(e));
    }
  };

  const remove = async (id: string, title: string) => {
    if (!window.confirm(`Delete “${title || "Untitled"}”? This cannot be undone.`)) return;
    try {
      await deleteContext(id);
      if (id === openId) navigate(null);
    } catch (e) {
      setError(explain(e));
    }
  };

  return (
    <nav className="sidebar" aria-label="Conversations">
      <div className="sidebar-head">
        <button onClick={startNew}>New conversation</button>
        <ConnectionIndicator connection={connection} />
        {currentToken() !== null && (
          <button className="sign-out" onClick={signOut}>
            Sign out
          </button>
        )}
      </div>
      {error && <p role="alert" className="error">{error}</p>}
      <ul>
        {contexts.map((c) => (
          <li key={c.contextId} className={c.contextId === openId ? "current" : undefined}>
            {renaming === c.contextId ? (
              <input
                aria-label="New title"
                autoFocus
                value={draft}
                onChange={(e) => setDraft(e.target.value)}
                onBlur={() => setRenaming(null)}
                onKeyDown={(e) => {
                  if (e.key === "Enter") void rename(c.contextId);
                  if (e.key === "Escape") setRenaming(null);
                }}
              />
            ) : (
            <a
              href={`/c/${c.contextId}`}
              aria-current={c.contextId === openId ? "page" : undefined}
              onClick={(e) => {
                e.preventDefault();
                navigate(c.contextId);
                onPicked();
              }}
            >
              <span className="title">{c.title || "Untitled"}</span>
              <StateBadge state={c.state} />
            </a>
            )}
            <button
              className="rename"
              aria-label={`Rename ${c.title || "Untitled"}`}
              onClick={() => {
                setDraft(c.title);
                setRenaming(c.contextId);
              }}
            >
              ✎
            </button>
            <button className="delete" aria-label={`Delete ${c.title || "Untitled"}`} onClick={() => remove(c.contextId, c.title)}>
              ✕
            </button>
          </li>
        ))}
      </ul>
    </nav>
  );
}
