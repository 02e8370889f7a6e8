// Drives headless Chromium through the real workbench served by our binary.
// Run by tests/browser.rs; configured through the environment:
//   CS_URL        the server's base URL (http://127.0.0.1:PORT/)
//   CS_PASSWORD   the login password
//   CS_FILE       name of a file in the opened folder to edit (e.g. hello.txt)
//   CS_EXTENSION  display name of an extension installed beforehand
//   CS_KILL_CMD   shell command that SIGKILLs the VS Code server (optional)
//   CS_OPEN_CMD   shell command running `code-server FILE` against this instance (optional)
//   CS_OPEN_FILE  the file name that command opens
//   CS_TERMINAL_FILE  a file in the opened folder that `code-server FILE` typed into the
//                 integrated terminal must open as a tab (optional)
//   CS_LOOK       where to save a screenshot of the workbench with that tab open (optional)
//   CHROMIUM      browser executable (default /usr/bin/chromium)
// Prints one line per step; exits non-zero with the failing step on error.
import { TIMEOUT, launch, openTerminal, runCommand as paletteCommand } from "./chromium.mjs";
import { execSync } from "node:child_process";

const url = process.env.CS_URL;
const password = process.env.CS_PASSWORD;
const file = process.env.CS_FILE ?? "hello.txt";
const extension = process.env.CS_EXTENSION;
const killCmd = process.env.CS_KILL_CMD;

const browser = await launch();
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT);
let step = "start";
const done = (what) => console.log(`ok: ${what}`);

async function waitForWorkbench() {
  await page.waitForSelector(".monaco-workbench .part.editor", { timeout: TIMEOUT });
  // The explorer lists the folder's files once the remote connection works (a restored window
  // may show another view first).
  await runCommand("View: Show Explorer");
  await page.waitForSelector(`.explorer-folders-view .monaco-list-row[aria-label*="${file}"]`, { timeout: TIMEOUT });
}

const runCommand = (name) => paletteCommand(page, name);

try {
  step = "login page";
  await page.goto(url);
  await page.waitForSelector("form.login-form input.password");
  done(step);

  step = "log in, workbench appears";
  await page.fill("input.password", password);
  await Promise.all([page.waitForNavigation(), page.click("input.submit")]);
  await waitForWorkbench();
  done(step);

  step = "open a file from the explorer, type, save";
  await page.locator(`.explorer-folders-view .monaco-list-row[aria-label*="${file}"]`).first().click();
  const editor = page.locator(".editor-instance .monaco-editor .view-lines").first();
  await editor.waitFor();
  await editor.click();
  await page.keyboard.press("Control+End");
  await page.keyboard.type("\ntyped in the browser");
  await page.keyboard.press("Control+S");
  // Saved: the tab loses its dirty marker.
  await page.waitForFunction(() => !document.querySelector(".tabs-container .tab.dirty"));
  done(step);

  step = "terminal runs echo $((6*7))";
  await openTerminal(page);
  // Keys typed before the shell has drawn its prompt can be lost on a loaded machine: type
  // again, as a person would, until the answer shows (within the step's whole TIMEOUT).
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    await page.keyboard.type("echo $((6*7))\n");
    try {
      await page.waitForFunction(
        () => [...document.querySelectorAll(".xterm-rows > div, .xterm-accessibility-tree > div")]
          .some((row) => row.textContent.trim() === "42"),
        null,
        { timeout: 15_000 },
      );
      break;
    } catch (e) {
      if (Date.now() > deadline) throw e;
    }
  }
  done(step);

  if (process.env.CS_TERMINAL_FILE) {
    const name = process.env.CS_TERMINAL_FILE;
    step = `code-server ${name} typed in the terminal opens it here`;
    await page.keyboard.type(`code-server ${name}\n`);
    await page.locator(".tabs-container .tab", { hasText: name }).first().waitFor();
    // The command ends quietly: the shell prompt is back, no error was printed.
    const rows = async () => page.evaluate(
      () => [...document.querySelectorAll(".xterm-rows > div")].map((r) => r.textContent).join("\n"));
    if (/not found|No such file|Error/.test(await rows())) throw new Error(`the terminal says:\n${await rows()}`);
    if (process.env.CS_LOOK) await page.screenshot({ path: process.env.CS_LOOK });
    done(step);
  }

  if (extension) {
    step = "installed extension appears in the Extensions view";
    await runCommand("Extensions: Show Installed Extensions");
    await page.locator(".extensions-viewlet .extension-list-item", { hasText: extension }).first().waitFor();
    done(step);
  }

  if (process.env.CS_OPEN_CMD) {
    step = "code-server FILE opens the file in this window";
    execSync(process.env.CS_OPEN_CMD, { stdio: "inherit" });
    await page.locator(".tabs-container .tab", { hasText: process.env.CS_OPEN_FILE }).first().waitFor();
    done(step);
  }

  if (killCmd) {
    step = "VS Code server killed with SIGKILL: the page recovers";
    execSync(killCmd);
    // The window notices the lost connection; a reload reaches the restarted server.
    await page.waitForTimeout(1000);
    await page.reload();
    await waitForWorkbench();
    done(step);
  }

  step = "sign out returns to the login page, and the session is gone";
  await runCommand("Sign out of");
  await page.waitForSelector("form.login-form input.password");
  // The browser's cookie jar as it is now: a request that needs a session is refused.
  const after = await page.request.post(new URL("mint-key", url).href);
  if (after.status() !== 401) throw new Error(`after signing out, /mint-key answered ${after.status()}`);
  done(step);
} catch (e) {
  console.error(`FAILED at step "${step}": ${e.message}`);
  try {
    await page.screenshot({ path: process.env.CS_SCREENSHOT ?? "/tmp/code-server-browser-failure.png" });
    console.error(`screenshot: ${process.env.CS_SCREENSHOT ?? "/tmp/code-server-browser-failure.png"}`);
  } catch {}
  await browser.close();
  process.exit(1);
}
await browser.close();
