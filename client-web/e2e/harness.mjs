// What the end-to-end tests share: the real ctxd binary serving the built app, and Debian's
// Chromium driven by playwright-core (never a downloaded browser).

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { createInterface } from "node:readline";

import { chromium } from "playwright-core";

const here = resolve(import.meta.dirname, "..");
export const binary = process.env.CTXD_BIN ?? resolve(here, "../target/debug/ctxd");
export const shots = resolve(here, "../test-output/client-web");
mkdirSync(shots, { recursive: true });

/** Starts ctxd serving the built app with `args` (on `listen`); resolves with the process and
 * its address once it serves. */
export function startServer(args, listen = "127.0.0.1:0") {
  const child = spawn(binary, [
    "--listen", listen, "--web-dir", resolve(here, "dist"), "--metrics-listen", "off", ...args,
  ], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "info" } });
  return new Promise((resolveAddr, reject) => {
    const lines = createInterface({ input: child.stderr });
    lines.on("line", (line) => {
      const match = /ctxd listening on (\S+)/.exec(line);
      if (match) resolveAddr({ child, addr: match[1] });
    });
    child.on("exit", (code) => reject(new Error(`ctxd exited with ${code}`)));
  });
}

/** SIGTERM, then waits for the process to exit. */
export async function stopServer(server) {
  const exited = new Promise((r) => server.child.on("exit", r));
  server.child.kill("SIGTERM");
  await exited;
}

export function launchBrowser() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}
