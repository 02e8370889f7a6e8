// One user, two fronts of one deployment, the real workbench (run by tests/fronts.rs).
// Configured through the environment:
//   CS_URL_A, CS_URL_B  the two fronts' base URLs (both on 127.0.0.1: cookies ignore the port,
//                       so the session cookie set through A is sent to B too)
//   CS_USER, CS_PASSWORD the user
//   CS_FOLDER           the user's folder (what a bare visit opens)
//   CS_KILL_A           shell command that SIGKILLs front A
//   CS_SHOTS            where the screenshots go
// Prints one line per step; exits non-zero with the failing step on error.
import fs from "node:fs";
import path from "node:path";
import { execSync } from "node:child_process";
import { TIMEOUT, launch, openTerminal, runCommand } from "./chromium.mjs";

const folder = process.env.CS_FOLDER;
const shots = process.env.CS_SHOTS;
const browser = await launch();
const context = await browser.newContext({ viewport: { width: 1300, height: 850 } });
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT);
let step = "start";
const done = (what) => console.log(`ok: ${what}`);

async function workbenchListing(file) {
  await page.waitForSelector(".monaco-workbench .part.editor", { timeout: TIMEOUT });
  if (file) {
    await runCommand(page, "View: Show Explorer");
    await page.waitForSelector(`.explorer-folders-view .monaco-list-row[aria-label*="${file}"]`, { timeout: TIMEOUT });
  }
}

/**
 * Opens a terminal; on a loaded machine the palette may miss the first try (a keystroke taken
 * by a view still loading), so it is closed and asked again, as a person would.
 */
async function newTerminal() {
  for (let attempt = 1; ; attempt++) {
    page.setDefaultTimeout(30_000);
    try {
      await openTerminal(page);
      return;
    } catch (e) {
      if (attempt >= 3) throw e;
      console.log(`terminal, attempt ${attempt}: ${String(e).split("\n")[0]}`);
      await page.keyboard.press("Escape");
      await page.waitForTimeout(1_000);
    } finally {
      page.setDefaultTimeout(TIMEOUT);
    }
  }
}

/** Types `command` into a new terminal until `file` (which it writes) exists; its text. */
async function inTerminal(command, file) {
  await newTerminal();
  for (let attempt = 0; attempt < 4; attempt++) {
    await page.keyboard.type(`${command}\n`);
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (fs.existsSync(file) && fs.readFileSync(file, "utf8").length > 0) {
        return fs.readFileSync(file, "utf8");
      }
      await page.waitForTimeout(250);
    }
  }
  throw new Error(`${command} never wrote ${file}`);
}

try {
  step = "sign in through front A, the workbench appears";
  await page.goto(process.env.CS_URL_A);
  await page.waitForSelector('form.login-form input[name="username"]');
  await page.fill('input[name="username"]', process.env.CS_USER);
  await page.fill('input[name="password"]', process.env.CS_PASSWORD);
  await Promise.all([page.waitForNavigation(), page.click("input.submit")]);
  await workbenchListing();
  done(step);

  step = "a terminal through A";
  const a = path.join(folder, "through-a.txt");
  await inTerminal(`echo typed through front A > ${a}`, a);
  await page.screenshot({ path: path.join(shots, "through-a.png") });
  done(step);

  step = "the same session through front B: the same workspace, its terminal";
  await page.goto(process.env.CS_URL_B);
  await workbenchListing("through-a.txt");
  const b = path.join(folder, "through-b.txt");
  await inTerminal(`echo typed through front B > ${b}`, b);
  await page.screenshot({ path: path.join(shots, "through-b.png") });
  done(step);

  step = "front A is killed; through B the workbench comes back, files intact";
  execSync(process.env.CS_KILL_A);
  await page.waitForTimeout(1_000);
  await page.goto(process.env.CS_URL_B);
  await workbenchListing("through-b.txt");
  await page.waitForSelector('.explorer-folders-view .monaco-list-row[aria-label*="through-a.txt"]');
  await page.screenshot({ path: path.join(shots, "after-a-killed.png") });
  done(step);
} catch (e) {
  console.error(`FAILED at "${step}": ${e.stack ?? e}`);
  try {
    await page.screenshot({ path: path.join(shots, "failure.png") });
  } catch {}
  await browser.close();
  process.exit(1);
}
await browser.close();
