// End-to-end: editing a sent message, flipping between versions (‹ i/n ›), regenerating,
// and a second tab following a switch live; Debian's Chromium against the real ctxd.

import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { launchBrowser, shots, startServer, stopServer } from "./harness.mjs";

const dataDir = mkdtempSync(join(tmpdir(), "ctxd-e2e-branches-"));
let server;
let base;
let browser;

before(async () => {
  server = await startServer(["--data-dir", dataDir, "--mock-delay-ms", "20"]);
  base = `http://${server.addr}`;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  if (server && server.child.exitCode === null) await stopServer(server);
});

const replies = (page) => page.locator(".message.assistant .body").allInnerTexts();
const settled = (page, text) =>
  page.locator('.message.assistant[data-status="COMPLETE"] .body', { hasText: text }).waitFor({ timeout: 15_000 });

test("edit a sent message, flip between versions, reload, and a second tab follows", async () => {
  const page = await browser.newPage();
  await page.goto(base);
  await page.getByRole("button", { name: "New conversation", exact: true }).click();
  await page.waitForURL(/\/c\//);
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill("the first wording");
  await box.press("Enter");
  await settled(page, "You said: the first wording");

  // A second tab on the same conversation.
  const other = await browser.newPage();
  await other.goto(page.url());
  await settled(other, "You said: the first wording");

  // Edit: pencil, inline editor, Save; the new version gets its own reply.
  await page.locator(".message.user").getByRole("button", { name: "Edit" }).click();
  const editor = page.getByRole("textbox", { name: "Edit message" });
  assert.equal(await editor.inputValue(), "the first wording");
  await editor.fill("a second wording");
  await page.getByRole("button", { name: "Save" }).click();
  await settled(page, "You said: a second wording");
  assert.deepEqual(await replies(page), ["You said: a second wording"]);
  assert.equal(await page.locator(".message.user .version-index").innerText(), "2/2");
  await page.screenshot({ path: join(shots, "edited.png") });
  await settled(other, "You said: a second wording");

  // ‹ back to the first version: its reply is back, here and in the other tab.
  await page.getByRole("button", { name: "Previous version" }).click();
  await settled(page, "You said: the first wording");
  assert.equal(await page.locator(".message.user .version-index").innerText(), "1/2");
  await settled(other, "You said: the first wording");
  assert.deepEqual(await replies(other), ["You said: the first wording"], "the other tab follows the switch live");

  // A reload keeps the active version.
  await page.reload();
  await settled(page, "You said: the first wording");
  assert.equal(await page.locator(".message.user .version-index").innerText(), "1/2");
  assert.equal(await page.locator(".message.user .body").innerText(), "the first wording");

  // Regenerate the last reply: a second version of it, with its own ‹ i/n ›.
  await page.getByRole("button", { name: "Regenerate" }).click();
  await page.locator(".message.assistant .version-index", { hasText: "2/2" }).waitFor({ timeout: 15_000 });
  await settled(page, "You said: the first wording");
  await page.locator(".message.assistant").getByRole("button", { name: "Previous version" }).click();
  await page.locator(".message.assistant .version-index", { hasText: "1/2" }).waitFor();
  await page.screenshot({ path: join(shots, "versions.png") });
  await other.close();
  await page.close();
});
