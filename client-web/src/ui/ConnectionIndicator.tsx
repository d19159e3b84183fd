import type { Connection } from "../store";

const LABELS: Record<Connection, string> = { live: "live", reconnecting: "reconnecting…", offline: "offline" };

export function ConnectionIndicator({ connection }: { connection: Connection }) {
  return (
    <span className={`connection ${connection}`} role="status" data-connection={connection}>
      {LABELS[connection]}
    </span>
  );
}
