// The credential the app sends with every call and stream: a JWT or an API key a person
// pasted (or a link brought as `#token=...`), kept in localStorage until they sign out.
// Without one nothing is sent, which is all a server without authentication needs.

const STORAGE_KEY = "ctxd.token";

/** Splits `token=...` out of a URL fragment: the token, and the fragment without it. */
export function tokenFromHash(hash: string): { token: string | null; rest: string } {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  if (!params.has("token")) return { token: null, rest: hash };
  const token = params.get("token")?.trim() || null;
  params.delete("token");
  const rest = params.toString();
  return { token, rest: rest ? `#${rest}` : "" };
}

/** Takes a token from the address once, and removes it from the address bar (and so from
 * the history and from links copied from it). */
export function adoptTokenFromAddress(): void {
  const { token, rest } = tokenFromHash(window.location.hash);
  if (!token) return;
  saveToken(token);
  window.history.replaceState(window.history.state, "", window.location.pathname + window.location.search + rest);
}

export function currentToken(): string | null {
  try {
    return window.localStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

export function saveToken(token: string) {
  window.localStorage.setItem(STORAGE_KEY, token);
}

export function forgetToken() {
  window.localStorage.removeItem(STORAGE_KEY);
}
