// End-to-end with authentication on: the app asks for a token, refuses a wrong one with a
// message (not a blank page), shows the tenant's conversations with a right one, takes a
// token from a link, and forgets it on sign-out.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { binary, launchBrowser, shots, startServer, stopServer } from "./harness.mjs";

const dir = mkdtempSync(join(tmpdir(), "ctxd-e2e-auth-"));
// `ctxd api-key new` prints the key, then the line that grants it.
const [key, line] = execFileSync(binary, ["api-key", "new", "--tenant", "acme"], { encoding: "utf8" }).trim().split("\n");
writeFileSync(join(dir, "api-keys"), `${line}\n`);

let server;
let base;
let browser;

before(async () => {
  server = await startServer(["--data-dir", join(dir, "data"), "--mock-delay-ms", "5", "--api-keys-file", join(dir, "api-keys")]);
  base = `http://${server.addr}`;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  if (server && server.child.exitCode === null) await stopServer(server);
});

const signInPanel = (page) => page.getByRole("heading", { name: "Sign in" });

test("the app asks for a token, refuses a wrong one, and shows the tenant's conversations with a right one", async () => {
  const page = await browser.newPage();
  await page.goto(base);
  await signInPanel(page).waitFor();
  assert.equal(await page.getByRole("alert").count(), 0, "nothing was tried yet: no error");

  const field = page.getByLabel("Token or API key");
  await field.fill("ctxd_not-a-key-this-server-knows");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "the API key is not known" }).waitFor();
  await page.screenshot({ path: join(shots, "sign-in-refused.png") });

  await field.fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("button", { name: "New conversation", exact: true }).click();
  await page.waitForURL(/\/c\//);
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill("hello as acme");
  await box.press("Enter");
  await page.locator('.message.assistant[data-status="COMPLETE"]').waitFor({ timeout: 15_000 });
  await page.locator(".sidebar li .title", { hasText: "hello as acme" }).waitFor();

  await page.getByRole("button", { name: "Sign out" }).click();
  await signInPanel(page).waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem("ctxd.token")), null, "the key is forgotten");
  await page.close();
});

test("a token in the link is taken once and removed from the address", async () => {
  const page = await browser.newPage();
  await page.goto(`${base}/#token=${key}`);
  await page.locator(".sidebar li .title", { hasText: "hello as acme" }).waitFor();
  assert.ok(!page.url().includes(key), `the address still holds the key: ${page.url()}`);
  assert.equal(await page.evaluate(() => localStorage.getItem("ctxd.token")), key);
  await page.reload();
  await page.locator(".sidebar li .title", { hasText: "hello as acme" }).waitFor();
  await page.screenshot({ path: join(shots, "signed-in.png") });
  await page.close();
});
