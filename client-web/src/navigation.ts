// The open conversation lives in the address (`/c/<id>`), so a reload or a shared link
// opens it again. Components navigate through here; App listens for the change.

/** The context id in the address, or null. */
export function idFromPath(): string | null {
  const match = /^\/c\/([0-9a-fA-F-]{36})$/.exec(window.location.pathname);
  return match ? match[1] : null;
}

/** Opens conversation `id` (null: none), as a new history entry. */
export function navigate(id: string | null) {
  window.history.pushState(null, "", id ? `/c/${id}` : "/");
  window.dispatchEvent(new PopStateEvent("popstate"));
}
