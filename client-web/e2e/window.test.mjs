// End-to-end: a conversation longer than the mock's context window, in Debian's Chromium.
// The model's summaries show as collapsed notes, a meter shows how full the next request
// is, a line marks where the model's view starts, and a reload shows only the end of the
// conversation, the rest read page by page as the user scrolls up.

import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { launchBrowser, shots, startServer, stopServer } from "./harness.mjs";

const dataDir = mkdtempSync(join(tmpdir(), "ctxd-e2e-window-"));
let server;
let browser;

before(async () => {
  server = await startServer(["--data-dir", dataDir, "--mock-delay-ms", "0", "--mock-context-window", "2000"]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  if (server && server.child.exitCode === null) await stopServer(server);
});

const TURNS = 35;
const said = (n) => `turn ${n}: ` + Array.from({ length: 30 }, (_, k) => `w${n * 31 + k}`).join(" ");
const held = (page) => page.locator(".messages > li[data-id]").count();

test("a long conversation shows its summaries, the model's window and pages back on scroll", async () => {
  const page = await browser.newPage();
  await page.goto(`http://${server.addr}`);
  await page.getByRole("button", { name: "New conversation", exact: true }).click();
  await page.waitForURL(/\/c\//);
  const box = page.getByRole("textbox", { name: "Message" });
  for (let n = 0; n < TURNS; n++) {
    await box.fill(said(n));
    await box.press("Enter");
    await page.locator('.message.assistant[data-status="COMPLETE"]').nth(n).waitFor({ timeout: 15_000 });
  }
  await page.locator('.conversation header .badge[data-state="IDLE"]').waitFor();

  const summaries = page.locator(".message.summary");
  assert.ok((await summaries.count()) >= 1, "the model summarised the oldest messages");
  const note = summaries.last();
  assert.equal(await note.locator(".body").isVisible(), false, "summaries start folded");
  await note.locator("summary").click();
  assert.match(await note.locator(".body").innerText(), /^Summary of messages #0 to #\d+\.$|^Summary of messages #\d+ to #\d+\.$/);
  await page.locator(".window-start").waitFor();
  assert.match(await page.locator(".window-start").innerText(), /model sees the conversation from here, and a summary/);
  const share = Number(await page.locator(".usage meter").getAttribute("value"));
  assert.ok(share > 0.2 && share <= 1, `usage ${share}`);
  await page.screenshot({ path: `${shots}/window.png` });

  // After a reload only the end is read; scrolling up reads the rest, page by page.
  const total = await held(page);
  assert.ok(total > 60, `${total} messages`);
  await page.reload();
  await page.locator('.conversation header .badge[data-state="IDLE"]').waitFor();
  await page.locator(".messages > li[data-id]").first().waitFor();
  const first = await held(page);
  assert.ok(first <= 50, `a reload reads the last 50, not ${first}`);
  await page.getByRole("button", { name: /earlier messages/ }).waitFor();
  for (let i = 0; i < 5 && (await held(page)) < total; i++) {
    await page.locator(".messages").evaluate((list) => (list.scrollTop = 0));
    await page.waitForFunction((n) => document.querySelectorAll(".messages > li[data-id]").length > n, first, { timeout: 5_000 }).catch(() => {});
  }
  assert.equal(await held(page), total, "every message is back, once");
  assert.equal(await page.getByRole("button", { name: /earlier messages/ }).count(), 0);
  await page.close();
});
