import { create } from "@bufbuild/protobuf";
import { useEffect, useState } from "react";

import { configureContext, listTools } from "../actions";
import { type ContextConfig, ContextConfigSchema, ContextOverflow, type ToolInfo } from "../gen/ctxd/v1/context_pb";

/** The context's system prompt, model, auto-approved tools and what happens when the
 * conversation outgrows the model's window; saved with UpdateContext (the settings not shown
 * here are kept). */
export function Settings({ id, config, onClose }: { id: string; config: ContextConfig | undefined; onClose: () => void }) {
  const [systemPrompt, setSystemPrompt] = useState(config?.systemPrompt ?? "");
  const [model, setModel] = useState(config?.model ?? "");
  const [autoApprove, setAutoApprove] = useState(new Set(config?.autoApproveTools ?? []));
  const [overflow, setOverflow] = useState(config?.contextOverflow ?? ContextOverflow.UNSPECIFIED);
  const [tools, setTools] = useState<ToolInfo[]>([]);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    void listTools().then(setTools);
  }, []);
  const toggle = (name: string) =>
    setAutoApprove((held) => {
      const next = new Set(held);
      if (next.has(name)) next.delete(name);
      else next.add(name);
      return next;
    });
  const save = async () => {
    const next = create(ContextConfigSchema, {
      contextWindowTokens: config?.contextWindowTokens ?? 0,
      maxOutputTokens: config?.maxOutputTokens ?? 0,
      summarizeAt: config?.summarizeAt ?? 0,
      systemPrompt,
      model,
      autoApproveTools: [...autoApprove],
      externalTools: config?.externalTools ?? [],
      contextOverflow: overflow,
    });
    const failed = await configureContext(id, next);
    setError(failed);
    if (!failed) onClose();
  };
  const approvable = [...tools.filter((t) => t.requiresApproval).map((t) => t.name), ...(config?.externalTools ?? []).map((t) => t.name)];
  return (
    <form
      className="settings"
      aria-label="Conversation settings"
      onSubmit={(e) => {
        e.preventDefault();
        void save();
      }}
    >
      <label>
        System prompt
        <textarea value={systemPrompt} onChange={(e) => setSystemPrompt(e.target.value)} />
      </label>
      <label>
        Model (empty: the server's default)
        <input value={model} onChange={(e) => setModel(e.target.value)} />
      </label>
      <label>
        When the conversation outgrows the model's window
        <select value={overflow} onChange={(e) => setOverflow(Number(e.target.value) as ContextOverflow)}>
          <option value={ContextOverflow.UNSPECIFIED}>summarise the oldest messages (default)</option>
          <option value={ContextOverflow.SUMMARIZE}>summarise the oldest messages</option>
          <option value={ContextOverflow.TRUNCATE}>leave the oldest messages out</option>
        </select>
      </label>
      {approvable.length > 0 && (
        <fieldset>
          <legend>Run without asking</legend>
          {approvable.map((name) => (
            <label key={name}>
              <input type="checkbox" checked={autoApprove.has(name)} onChange={() => toggle(name)} /> {name}
            </label>
          ))}
        </fieldset>
      )}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <button type="submit">Save</button>
      <button type="button" onClick={onClose}>
        Cancel
      </button>
    </form>
  );
}
