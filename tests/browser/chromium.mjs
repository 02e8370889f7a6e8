// What the browser scripts share: Debian's Chromium, headless, kept off the network (the
// machine's is closed: nothing may try to reach Google), and the workbench's command palette.
import { chromium } from "playwright-core";

/** How long a step may take on a loaded two-core machine. */
export const TIMEOUT = 90_000;

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** Runs a command from the workbench's command palette, as a person does (F1, type, Enter). */
export async function runCommand(page, name) {
  await page.keyboard.press("F1");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor({ state: "visible" });
  await input.fill(`>${name}`);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: name }).first().waitFor();
  await page.keyboard.press("Enter");
}

/**
 * Opens a new integrated terminal and waits until it has the keyboard. A fresh folder is
 * untrusted: running a shell needs the user's consent, given as any user would.
 */
export async function openTerminal(page) {
  await runCommand(page, "Terminal: Create New Terminal");
  const trust = page.getByRole("button", { name: "Trust Folder & Continue" });
  try {
    await trust.waitFor({ timeout: 10_000 });
    await trust.click();
  } catch {}
  // The new terminal takes the keyboard focus once its shell is attached.
  await page.waitForFunction(() => document.activeElement?.classList.contains("xterm-helper-textarea"));
}
