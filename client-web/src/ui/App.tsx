import { useEffect, useState } from "react";

import { idFromPath } from "../navigation";
import { followContext, followList } from "../stream";
import { useStore } from "../store";
import { ConversationView } from "./ConversationView";
import { Sidebar } from "./Sidebar";

export function App() {
  const [openId, setOpenId] = useState(idFromPath);
  const [sidebarOpen, setSidebarOpen] = useState(false);

  useEffect(() => {
    const onPop = () => setOpenId(idFromPath());
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);

  useEffect(() => {
    const stop = new AbortController();
    followList(stop.signal);
    return () => stop.abort();
  }, []);

  useEffect(() => {
    useStore.getState().open(openId);
    if (!openId) return;
    const stop = new AbortController();
    followContext(openId, stop.signal);
    return () => stop.abort();
  }, [openId]);

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
