import { StrictMode } from "react";
import { createRoot } from "react-dom/client";

import { adoptTokenFromAddress } from "./credentials";
import "./styles.css";
import { App } from "./ui/App";

// A link may carry a token (`#token=...`): taken once, before the first call, and removed
// from the address.
adoptTokenFromAddress();

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}
