// The security-header presets with the real workbench open, in headless Chromium: sign in,
// the workbench loads and lists the folder, a Markdown preview (a webview: frames of our own
// origin) renders, and nothing on any of our pages or VS Code's was refused by a policy
// (Content-Security-Policy, X-Frame-Options, nosniff, COOP/CORP). Run by tests/headers.rs:
//   CS_URL, CS_PASSWORD   the server and its password
//   CS_FILE               a Markdown file in the opened folder
//   CS_EXPECT_CSP         "1": our login page must carry a Content-Security-Policy header
//   CS_SHOT               where to save a screenshot of the preview (optional)
import { TIMEOUT, launch, runCommand as paletteCommand } from "./chromium.mjs";

const url = process.env.CS_URL;
const file = process.env.CS_FILE;
const browser = await launch();
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT);
const refused = [];
const watch = (p) => {
  p.on("console", (m) => {
    const t = m.text();
    // vsda (Microsoft's signing module) is not in code-server's builds: VS Code asks for it, gets
    // a 404, and goes on without; that refusal is about a missing file, not a policy.
    if (t.includes("/vsda/")) return;
    if (/Content Security Policy|Refused to|X-Frame-Options|Cross-Origin-(Opener|Resource)-Policy|nosniff|MIME type/i.test(t)) {
      refused.push(`${p.url()}: ${t}`);
    }
  });
};
watch(page);
context.on("page", watch);
let step = "start";
const done = (what) => console.log(`ok: ${what}`);

const runCommand = (name) => paletteCommand(page, name);

try {
  step = "the login page and its headers";
  const res = await page.goto(url);
  const csp = (await res.request().response())?.headers()["content-security-policy"];
  const loginRes = await page.request.get(new URL("login", url).href);
  const loginCsp = loginRes.headers()["content-security-policy"];
  if (process.env.CS_EXPECT_CSP === "1" && !loginCsp) throw new Error("no Content-Security-Policy on the login page");
  if (process.env.CS_EXPECT_CSP !== "1" && loginCsp) throw new Error(`unexpected CSP: ${loginCsp}`);
  void csp;
  await page.waitForSelector("form.login-form input.password");
  done(step);

  step = "sign in, the workbench lists the folder";
  await page.fill('input[name="password"]', process.env.CS_PASSWORD);
  await Promise.all([page.waitForNavigation(), page.click("input.submit")]);
  await page.waitForSelector(".monaco-workbench .part.editor");
  await runCommand("View: Show Explorer");
  await page.waitForSelector(`.explorer-folders-view .monaco-list-row[aria-label*="${file}"]`);
  done(step);

  step = "open the Markdown file and its preview (a webview)";
  await page.locator(`.explorer-folders-view .monaco-list-row[aria-label*="${file}"]`).first().click();
  await page.locator(".tabs-container .tab", { hasText: file }).first().waitFor();
  // The editor's own button (Markdown's command, as a person clicks it).
  await page.locator('.editor-actions a[aria-label*="Open Preview to the Side"]').first().click();
  // The preview renders inside nested frames of our own origin.
  const outer = page.frameLocator("iframe.webview.ready");
  const inner = outer.frameLocator("iframe#active-frame");
  await inner.locator("h1", { hasText: "Preview under the policy" }).waitFor({ timeout: TIMEOUT });
  if (process.env.CS_SHOT) await page.screenshot({ path: process.env.CS_SHOT });
  done(step);

  step = "nothing was refused by a policy";
  // Late console messages (the webview's own loads) get a moment to arrive.
  await page.waitForTimeout(1000);
  if (refused.length) throw new Error(refused.join("\n"));
  done(step);
} catch (e) {
  console.error(`FAILED at step "${step}": ${e.message}`);
  try { await page.screenshot({ path: process.env.CS_SHOT ?? "/tmp/cs-headers-failure.png" }); } catch {}
  await browser.close();
  process.exit(1);
}
await browser.close();
