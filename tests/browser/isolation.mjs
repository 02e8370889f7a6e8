// Two users side by side in the real workbench of a multi-user server with os-user isolation
// (run by tests/isolation_browser.rs). Configured through the environment:
//   CS_URL               the server's base URL
//   CS_A, CS_A_PASSWORD  user A; CS_B, CS_B_PASSWORD  user B
//   CS_B_SECRET          a file in B's folder that A's terminal tries to read
//   CS_A_FOLDER          A's folder (the terminal's working directory)
//   CS_PORT_A, CS_PORT_B free ports: each user starts a dev server on theirs in their terminal
//   CS_SHOTS             where the screenshots go
// Prints one line per step; exits non-zero with the failing step on error.
import fs from "node:fs";
import path from "node:path";
import { TIMEOUT, launch, openTerminal, runCommand } from "./chromium.mjs";

const url = process.env.CS_URL;
const shots = process.env.CS_SHOTS;
const browser = await launch();
let step = "start";
const done = (what) => console.log(`ok: ${what}`);

async function signIn(username, password) {
  const context = await browser.newContext({ viewport: { width: 1300, height: 850 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  await page.goto(url);
  await page.waitForSelector('form.login-form input[name="username"]');
  await page.fill('input[name="username"]', username);
  await page.fill('input[name="password"]', password);
  await Promise.all([page.waitForNavigation(), page.click("input.submit")]);
  await page.waitForSelector(".monaco-workbench .part.editor", { timeout: TIMEOUT });
  return page;
}

/**
 * Types `command` into the focused terminal, as a person does, until `file` (which the
 * command writes) exists: the first keystrokes may go before the shell is ready. Returns the
 * file's text. (The terminal draws on a canvas, so its text is read from files, not the page.)
 */
async function inTerminal(page, command, file) {
  for (let attempt = 0; attempt < 4; attempt++) {
    await page.keyboard.type(`${command}\n`);
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (fs.existsSync(file) && fs.readFileSync(file, "utf8").length > 0) {
        await page.waitForTimeout(200);
        return fs.readFileSync(file, "utf8");
      }
      await page.waitForTimeout(250);
    }
  }
  throw new Error(`${command} never wrote ${file}`);
}

/** What a fetch of `target` from inside `page` gets: [status, body]. */
const fetchIn = (page, target) =>
  page.evaluate(async (t) => {
    const r = await fetch(t, { cache: "no-store" });
    return [r.status, await r.text()];
  }, target);

async function eventuallyOk(page, target) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const got = await fetchIn(page, target);
    if (got[0] === 200) return got;
    if (Date.now() > deadline) throw new Error(`${target} never answered 200: ${got}`);
    await page.waitForTimeout(250);
  }
}

const devServer = (port, text) =>
  `node -e 'require("http").createServer((q, r) => r.end("${text}")).listen(${port}, "127.0.0.1")' &\n`;

let a, b;
try {
  step = "A and B sign in, each in their own browser, and get their workbench";
  a = await signIn(process.env.CS_A, process.env.CS_A_PASSWORD);
  b = await signIn(process.env.CS_B, process.env.CS_B_PASSWORD);
  // B's private file, in B's folder, B's own (made as the owner of B's folder).
  const secret = process.env.CS_B_SECRET;
  fs.writeFileSync(secret, "only B may read this\n");
  const owner = fs.statSync(path.dirname(secret));
  fs.chownSync(secret, owner.uid, owner.gid);
  fs.chmodSync(secret, 0o600);
  done(step);

  step = "in A's terminal: id -u is A's uid, B's file is out of reach";
  const folderA = process.env.CS_A_FOLDER;
  await openTerminal(a);
  const uid = await inTerminal(a, "id -u > uid.txt", path.join(folderA, "uid.txt"));
  console.log(`A: uid=${uid.trim()}`);
  const cat = await inTerminal(a, `cat ${secret} > cat.txt 2>&1; echo "exit $?" >> cat.txt`, path.join(folderA, "cat.txt"));
  fs.writeFileSync(path.join(shots, "a-terminal.txt"), cat);
  if (!/Permission denied/.test(cat) || /only B may read this/.test(cat)) throw new Error(`cat said: ${cat}`);
  done(step);

  step = "code-server notes.txt in A's terminal opens in A's window only";
  await a.keyboard.type("code-server notes.txt\n");
  await a.locator(".tabs-container .tab", { hasText: "notes.txt" }).first().waitFor();
  await a.screenshot({ path: `${shots}/a-workbench.png` });
  await b.waitForTimeout(3000);
  if ((await b.locator(".tabs-container .tab", { hasText: "notes.txt" }).count()) > 0) {
    throw new Error("notes.txt opened in B's window too");
  }
  done(step);

  step = "A's dev server: A reaches it through /proxy, B gets 403";
  const portA = process.env.CS_PORT_A;
  const portB = process.env.CS_PORT_B;
  // The opened file took the keyboard: back to the terminal.
  await runCommand(a, "Terminal: Focus Terminal");
  await a.waitForFunction(() => document.activeElement?.classList.contains("xterm-helper-textarea"));
  await a.keyboard.type(devServer(portA, "served by A"));
  const mine = await eventuallyOk(a, `/proxy/${portA}/`);
  if (mine[1] !== "served by A") throw new Error(`A got ${mine}`);
  const theirs = await fetchIn(b, `/proxy/${portA}/`);
  if (theirs[0] !== 403 || /served by A/.test(theirs[1])) throw new Error(`B got ${theirs}`);
  console.log(`B at A's port: ${theirs[0]} ${theirs[1].slice(0, 120)}`);
  done(step);

  step = "B's own dev server on another port works for B, not for A";
  await openTerminal(b);
  await b.keyboard.type(devServer(portB, "served by B"));
  const own = await eventuallyOk(b, `/proxy/${portB}/`);
  if (own[1] !== "served by B") throw new Error(`B got ${own}`);
  const notA = await fetchIn(a, `/proxy/${portB}/`);
  if (notA[0] !== 403) throw new Error(`A got ${notA}`);
  await b.goto(new URL(`/proxy/${portA}/`, url).href);
  await b.screenshot({ path: `${shots}/b-refused.png` });
  done(step);

  await browser.close();
  console.log("all steps passed");
} catch (e) {
  console.error(`FAILED at step "${step}": ${e.message}`);
  // What each user saw when it failed.
  for (const [name, page] of [["a", a], ["b", b]]) {
    if (page) await page.screenshot({ path: `${shots}/failed-${name}.png` }).catch(() => {});
  }
  await browser.close();
  process.exit(1);
}
