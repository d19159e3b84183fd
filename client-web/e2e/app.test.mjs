// End-to-end: Debian's Chromium (driven by playwright-core, never a downloaded browser)
// against the real ctxd binary serving the built app, with the mock LLM.

import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { launchBrowser, shots, startServer, stopServer } from "./harness.mjs";

const dataDir = mkdtempSync(join(tmpdir(), "ctxd-e2e-"));
const workspace = mkdtempSync(join(tmpdir(), "ctxd-e2e-ws-"));
writeFileSync(join(workspace, "notes.txt"), "remember the milk");
const serverArgs = ["--data-dir", dataDir, "--mock-delay-ms", "40", "--workspace", workspace];

let server;
let base;
let browser;

before(async () => {
  server = await startServer(serverArgs);
  base = `http://${server.addr}`;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  if (server && server.child.exitCode === null) await stopServer(server);
});

async function newConversation(page) {
  await page.goto(base);
  await page.getByRole("button", { name: "New conversation", exact: true }).click();
  await page.waitForURL(/\/c\//);
  return page.url();
}

const messageIds = (page) => page.locator(".messages > li[data-id]").evaluateAll((els) => els.map((e) => e.dataset.id));
const assistantComplete = (page, n) =>
  page.locator('.message.assistant[data-status="COMPLETE"]').nth(n - 1).waitFor({ timeout: 15_000 });

test("a sent message streams a reply, and a reload shows the same conversation", async () => {
  const page = await browser.newPage();
  await newConversation(page);
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill("hello from the browser");
  // Time from Enter to the pending message and to the first streamed token, in the page.
  await page.evaluate(() => {
    const marks = (window.__marks = {});
    new MutationObserver(() => {
      const now = performance.now();
      if (!marks.pending && document.querySelector(".message.user")) marks.pending = now;
      if (!marks.token && document.querySelector(".message.assistant")) marks.token = now;
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
    document.querySelector("textarea").addEventListener("keydown", () => (marks.enter = performance.now()), { once: true });
  });
  await box.press("Enter");
  await assistantComplete(page, 1);
  const marks = await page.evaluate(() => window.__marks);
  console.log(`Enter → pending message visible: ${(marks.pending - marks.enter).toFixed(1)} ms; → first streamed token: ${(marks.token - marks.enter).toFixed(1)} ms`);
  assert.equal(await page.locator(".message.assistant .body").innerText(), "You said: hello from the browser");
  // Named by the server after its first message, in the sidebar too.
  await page.locator(".sidebar li.current .title", { hasText: "hello from the browser" }).waitFor();
  assert.equal(await page.locator("h1").innerText(), "hello from the browser");
  await page.screenshot({ path: join(shots, "conversation.png") });
  const before = await messageIds(page);
  await page.reload();
  await assistantComplete(page, 1);
  assert.deepEqual(await messageIds(page), before, "the same messages, with the same ids, after a reload");
  await page.close();
});

test("reloading while a reply streams shows the text so far and finishes it in place", async () => {
  const page = await browser.newPage();
  await newConversation(page);
  const words = Array.from({ length: 60 }, (_, i) => `w${i}`).join(" ");
  await page.getByRole("textbox", { name: "Message" }).fill(words);
  await page.getByRole("textbox", { name: "Message" }).press("Enter");
  await page.waitForFunction(() => (document.querySelector(".message.assistant")?.textContent ?? "").length > 40);
  await page.reload();
  const partial = await page.locator(".message.assistant .body").innerText({ timeout: 5000 });
  assert.ok(partial.startsWith("You said: w0") && partial.length > 20, `text so far after reload: ${partial}`);
  await page.screenshot({ path: join(shots, "reload-mid-stream.png") });
  await assistantComplete(page, 1);
  assert.equal(await page.locator(".message.assistant").count(), 1, "no doubled reply");
  assert.equal(await page.locator(".message.assistant .body").innerText(), `You said: ${words}`);
  await page.close();
});

test("sending while a reply streams stops it, keeps its text so far, and answers the new message", async () => {
  const page = await browser.newPage();
  await newConversation(page);
  const box = page.getByRole("textbox", { name: "Message" });
  const words = Array.from({ length: 60 }, (_, i) => `w${i}`).join(" ");
  await box.fill(words);
  await box.press("Enter");
  await page.waitForFunction(() => (document.querySelector(".message.assistant")?.textContent ?? "").length > 40);
  await box.fill("stop, and answer this");
  await page.getByRole("button", { name: "Stop and send" }).click();
  await page.locator('.message.assistant[data-status="COMPLETE"]').waitFor({ timeout: 15_000 });
  const stopped = page.locator('.message.assistant[data-status="CANCELLED"] .body');
  const partial = await stopped.innerText();
  assert.ok(partial.startsWith("You said: w0") && partial.length < `You said: ${words}`.length, partial);
  assert.equal(await page.locator('.message.assistant[data-status="COMPLETE"] .body').innerText(), "You said: stop, and answer this");
  assert.equal(await page.locator(".message.user").count(), 2);
  assert.equal(await page.getByRole("button", { name: "Send", exact: true }).count(), 1, "at rest the button sends");
  await page.close();
});

test("tool calls are approved or denied from the approval card", async () => {
  const page = await browser.newPage();
  await newConversation(page);
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill('/tool read_file {"path": "notes.txt"}');
  await box.press("Enter");
  const card = page.getByRole("group", { name: "Tool calls waiting for approval" });
  await card.waitFor();
  assert.match(await card.innerText(), /read_file/);
  await page.screenshot({ path: join(shots, "approval.png") });
  await card.getByRole("button", { name: "Approve" }).click();
  await page.getByText("Tool read_file returned: remember the milk").waitFor();

  await box.fill('/tool read_file {"path": "notes.txt"}');
  await box.press("Enter");
  await card.waitFor();
  await card.getByRole("button", { name: "Deny" }).click();
  await page.getByText("Tool read_file returned: denied by the user").waitFor();
  await page.close();
});

test("two tabs: a message sent in one streams into the other; a new context shows in both sidebars", async () => {
  const one = await browser.newPage();
  const url = await newConversation(one);
  const two = await browser.newPage();
  await two.goto(url);
  await two.getByRole("textbox", { name: "Message" }).waitFor();
  await one.getByRole("textbox", { name: "Message" }).fill("seen in both tabs");
  await one.getByRole("textbox", { name: "Message" }).press("Enter");
  await two.getByText("You said: seen in both tabs").waitFor();
  await assistantComplete(two, 1);
  const sidebar = (page) => page.locator(".sidebar li").count();
  const before = await sidebar(two);
  await one.getByRole("button", { name: "New conversation", exact: true }).click();
  await two.waitForFunction((n) => document.querySelectorAll(".sidebar li").length === n + 1, before);
  await one.close();
  await two.close();
});

test("a message sent while the server is down is marked not saved, and Retry saves it exactly once", async () => {
  const page = await browser.newPage();
  await newConversation(page);
  const box = page.getByRole("textbox", { name: "Message" });
  await box.waitFor();
  const addr = server.addr;
  await stopServer(server);
  await page.locator('[data-connection="reconnecting"], [data-connection="offline"]').first().waitFor();
  await box.fill("sent while the server was down");
  await box.press("Enter");
  const failed = page.locator('[data-pending="failed"]');
  await failed.waitFor();
  assert.match(await failed.innerText(), /Not saved/);
  await page.screenshot({ path: join(shots, "not-saved.png") });
  server = await startServer(serverArgs, addr);
  await page.locator('[data-connection="live"]').first().waitFor({ timeout: 20_000 });
  await failed.getByRole("button", { name: "Retry" }).click();
  await assistantComplete(page, 1);
  assert.equal(await page.locator(".message.user").count(), 1, "saved exactly once");
  assert.equal(await page.locator("[data-pending]").count(), 0);
  await page.close();
});

test("a conversation is renamed from the sidebar and configured from its settings", async () => {
  const page = await browser.newPage();
  await newConversation(page);
  await page.locator(".sidebar li.current").getByRole("button", { name: /^Rename/ }).click();
  const title = page.getByRole("textbox", { name: "New title" });
  await title.fill("Groceries");
  await title.press("Enter");
  await page.getByRole("heading", { name: "Groceries" }).waitFor();
  await page.locator(".sidebar li.current .title", { hasText: "Groceries" }).waitFor();

  await page.getByRole("button", { name: "Settings" }).click();
  const settings = page.getByRole("form", { name: "Conversation settings" });
  await settings.getByLabel("System prompt").fill("Answer in French.");
  await settings.getByLabel("read_file").check();
  await settings.getByLabel("When the conversation outgrows the model's window").selectOption({ label: "leave the oldest messages out" });
  await page.screenshot({ path: join(shots, "settings.png") });
  await settings.getByRole("button", { name: "Save" }).click();
  await settings.waitFor({ state: "detached" });
  await page.reload();
  await page.getByRole("button", { name: "Settings" }).click();
  // Within the form: conversations named after a message about read_file (the server names
  // untitled ones after their first message) have sidebar buttons whose labels mention it.
  const reopened = page.getByRole("form", { name: "Conversation settings" });
  assert.equal(await reopened.getByLabel("System prompt").inputValue(), "Answer in French.");
  assert.equal(await reopened.getByLabel("read_file").isChecked(), true);
  const overflow = reopened.getByLabel("When the conversation outgrows the model's window");
  assert.equal(await overflow.locator("option:checked").innerText(), "leave the oldest messages out");
  await page.close();
});

test("assistant markdown is rendered without raw HTML, and the layout fits a narrow screen", async () => {
  const page = await browser.newPage({ viewport: { width: 390, height: 760 } });
  await page.goto(base);
  // On a narrow screen the sidebar sits behind the menu button.
  await page.getByRole("button", { name: "Conversations" }).click();
  await page.getByRole("button", { name: "New conversation", exact: true }).click();
  await page.waitForURL(/\/c\//);
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill('**bold** <img src=x onerror="window.__owned=1"> <b>tag</b>');
  await box.press("Enter");
  await assistantComplete(page, 1);
  const reply = page.locator(".message.assistant .body");
  assert.equal(await reply.locator("strong").count(), 1, "markdown is rendered");
  assert.equal(await reply.locator("img, b").count(), 0, "raw HTML is not");
  assert.equal(await page.evaluate(() => window.__owned), undefined);
  await page.screenshot({ path: join(shots, "narrow.png") });
  await page.close();
});

test("a conversation branches off at a message into a new one, and the source stays", async () => {
  const page = await browser.newPage();
  const source = await newConversation(page);
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill("branch me off");
  await box.press("Enter");
  await assistantComplete(page, 1);
  await page.locator(".message.assistant").getByRole("button", { name: "Branch off here" }).click();
  await page.waitForURL((url) => url.href !== source && url.pathname.startsWith("/c/"));
  await assistantComplete(page, 1);
  assert.equal(await page.locator(".message.assistant .body").innerText(), "You said: branch me off");
  await page.locator(".sidebar li .title", { hasText: "branch me off" }).nth(1).waitFor();
  await page.screenshot({ path: join(shots, "forked.png") });
  await page.goto(source);
  await assistantComplete(page, 1);
  assert.equal(await page.locator(".message").count(), 2, "the source is unchanged");
  await page.close();
});
