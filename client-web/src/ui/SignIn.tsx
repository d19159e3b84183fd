import { useState } from "react";

import { signIn } from "../actions";
import { currentToken } from "../credentials";

/** Shown when the server refuses the app's credentials, or needs some and has none. */
export function SignIn({ refusal }: { refusal: string }) {
  const [draft, setDraft] = useState("");
  // Without a saved credential the refusal only says one is needed, which the panel says.
  const tried = currentToken() !== null;
  return (
    <main className="sign-in">
      <form
        onSubmit={(e) => {
          e.preventDefault();
          if (draft.trim()) signIn(draft.trim());
        }}
      >
        <h1>Sign in</h1>
        <p>This server needs a token: paste a JWT from your identity provider, or an API key.</p>
        {tried && (
          <p role="alert" className="error">
            {refusal}
          </p>
        )}
        <label>
          Token or API key
          <input type="password" autoComplete="off" autoFocus value={draft} onChange={(e) => setDraft(e.target.value)} />
        </label>
        <button type="submit" disabled={!draft.trim()}>
          Sign in
        </button>
      </form>
    </main>
  );
}
