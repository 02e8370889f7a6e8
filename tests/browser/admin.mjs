// Multi-user mode as people use it, in headless Chromium: an admin signs in and creates a user
// on the admin page; that user signs in in a second browser context and reaches the workbench;
// the admin revokes their sessions on the admin page; the user's next request lands on the
// login page. Run by tests/admin_browser.rs; configured through the environment:
//   CS_URL              the server's base URL (http://127.0.0.1:PORT/)
//   CS_ADMIN, CS_ADMIN_PASSWORD   the first admin
//   CS_USER, CS_USER_PASSWORD     the account to create
//   CS_FILE             a file the workbench's explorer shows once it works
//   CS_SHOTS            a directory for screenshots of each page (looked at by the test)
//   CHROMIUM            browser executable (default /usr/bin/chromium)
// Prints one line per step; exits non-zero with the failing step on error.
import fs from "node:fs";
import path from "node:path";
import { TIMEOUT, launch, runCommand } from "./chromium.mjs";

const url = process.env.CS_URL;
const shots = process.env.CS_SHOTS;

const browser = await launch();
let step = "start";
const done = (what) => console.log(`ok: ${what}`);
const consoleErrors = [];

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1300, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (m) => {
    if (m.type() === "error" && !page.url().includes("/?") && new URL(page.url()).pathname.match(/^\/(admin|account|login)/)) {
      consoleErrors.push(`${page.url()}: ${m.text()}`);
    }
  });
  return page;
}

async function signIn(page, username, password) {
  await page.goto(url);
  await page.waitForSelector('form.login-form input[name="username"]');
  await page.fill('input[name="username"]', username);
  await page.fill('input[name="password"]', password);
  await Promise.all([page.waitForNavigation(), page.click("input.submit")]);
}

const shot = async (page, name) => {
  if (shots) await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
};

try {
  const admin = await newPage();
  step = "admin signs in";
  await signIn(admin, process.env.CS_ADMIN, process.env.CS_ADMIN_PASSWORD);
  done(step);

  step = "admin page lists the admin";
  await admin.goto(new URL("admin", url).href);
  await admin.waitForSelector(`tr[data-username="${process.env.CS_ADMIN}"]`);
  // This server runs with directory isolation: the page must say what that means.
  if (!/no security boundary/.test(await admin.locator("p.warning").innerText())) {
    throw new Error("the admin page does not warn that directory isolation is no security boundary");
  }
  done(step);

  step = "admin creates a user on the page";
  await admin.fill('form[action$="/admin/users"] input[name="username"]', process.env.CS_USER);
  await admin.fill('form[action$="/admin/users"] input[name="email"]', `${process.env.CS_USER}@example.com`);
  await admin.fill('form[action$="/admin/users"] input[name="password"]', process.env.CS_USER_PASSWORD);
  await Promise.all([admin.waitForNavigation(), admin.click('form[action$="/admin/users"] input[type="submit"]')]);
  await admin.waitForSelector(".notice");
  const created = await admin.waitForSelector(`tr[data-username="${process.env.CS_USER}"]`);
  await shot(admin, "admin-created");
  // The new user's own folder (base path/<user id>/workspaces) gets a file their explorer
  // must show: they open their own folder, nobody else's.
  const id = await created.getAttribute("data-id");
  const folder = path.join(process.env.CS_BASE_PATH, id, "workspaces");
  fs.mkdirSync(folder, { recursive: true });
  fs.writeFileSync(path.join(folder, process.env.CS_FILE), "mine\n");
  done(step);

  step = "the user signs in in another browser and reaches the workbench";
  const user = await newPage();
  await signIn(user, process.env.CS_USER, process.env.CS_USER_PASSWORD);
  await user.waitForSelector(".monaco-workbench .part.editor", { timeout: TIMEOUT });
  await runCommand(user, "View: Show Explorer");
  await user.waitForSelector(`.explorer-folders-view .monaco-list-row[aria-label*="${process.env.CS_FILE}"]`);
  await shot(user, "user-workbench");
  done(step);

  step = "the user's own page lists their session";
  const account = await user.context().newPage();
  await account.goto(new URL("account", url).href);
  await account.waitForSelector("table.sessions tbody tr");
  await shot(account, "user-account");
  await account.close();
  done(step);

  step = "the admin sees one live session and revokes it";
  await admin.goto(new URL("admin", url).href);
  const row = admin.locator(`tr[data-username="${process.env.CS_USER}"]`);
  const sessions = await row.locator("td").nth(4).innerText();
  if (sessions.trim() !== "1") throw new Error(`expected 1 live session, the page says ${sessions}`);
  await Promise.all([admin.waitForNavigation(), row.locator('form[action$="/revoke"] button').click()]);
  await admin.waitForSelector(".notice");
  const after = await admin.locator(`tr[data-username="${process.env.CS_USER}"] td`).nth(4).innerText();
  if (after.trim() !== "0") throw new Error(`expected 0 live sessions after revoking, the page says ${after}`);
  await shot(admin, "admin-revoked");
  done(step);

  step = "the admin sees the user's workspace running and stops it";
  const ws = () => admin.locator(`tr[data-username="${process.env.CS_USER}"] td.workspace`);
  if (!(await ws().getAttribute("class")).includes("workspace-running")) {
    throw new Error(`expected a running workspace, the page says ${await ws().innerText()}`);
  }
  await Promise.all([
    admin.waitForNavigation(),
    admin.locator(`tr[data-username="${process.env.CS_USER}"] form[action$="/workspace/stop"] button`).click(),
  ]);
  await admin.waitForSelector(".notice");
  if (!(await ws().getAttribute("class")).includes("workspace-stopped")) {
    throw new Error(`expected a stopped workspace, the page says ${await ws().innerText()}`);
  }
  await shot(admin, "admin-workspace-stopped");
  done(step);

  step = "the user's next request lands on the login page";
  await user.goto(url);
  await user.waitForSelector('form.login-form input[name="username"]:not([hidden])');
  await shot(user, "user-login-again");
  done(step);

  step = "the admin's pages logged no console errors";
  if (consoleErrors.length) throw new Error(consoleErrors.join("\n"));
  done(step);
} catch (e) {
  console.error(`FAILED at step "${step}": ${e.stack ?? e}`);
  await browser.close();
  process.exit(1);
}
await browser.close();
