import { useEffect, useState } from "react";

import { idFromPath } from "../navigation";
import { followContext, followList } from "../stream";
import { useStore } from "../store";
import { ConversationView } from "./ConversationView";
import { Sidebar } from "./Sidebar";
import { SignIn } from "./SignIn";

export function App() {
  const [openId, setOpenId] = useState(idFromPath);
  const [sidebarOpen, setSidebarOpen] = useState(false);
  const refusal = useStore((s) => s.refusal);
  // Streams start again whenever the credentials change.
  const session = useStore((s) => s.session);

  useEffect(() => {
    const onPop = () => setOpenId(idFromPath());
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);

  useEffect(() => {
    const stop = new AbortController();
    followList(stop.signal);
    return () => stop.abort();
  }, [session]);

  useEffect(() => {
    useStore.getState().open(openId);
    if (!openId) return;
    const stop = new AbortController();
    followContext(openId, stop.signal);
    return () => stop.abort();
  }, [openId, session]);

  if (refusal !== null) return <SignIn refusal={refusal} />;

  return (
    <div className={sidebarOpen ? "app sidebar-open" : "app"}>
      <button className="menu" aria-label="Conversations" onClick={() => setSidebarOpen((o) => !o)}>
        ☰
      </button>
      <Sidebar openId={openId} onPicked={() => setSidebarOpen(false)} />
      <main>{openId ? <ConversationView id={openId} /> : <p className="empty">Pick or start a conversation.</p>}</main>
    </div>
  );
}
