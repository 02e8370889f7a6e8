// One cold workbench load in headless Chromium, for benches/workbench.rs.
// Env: URL (page to open), PASSWORD (log in first when set), FILE (explorer entry that marks
// the workbench as ready), PLAYWRIGHT_CORE (path to playwright-core's entry).
// Prints one JSON line: {"visibleAt": <epoch ms>, "bytes": <bytes over the wire>, "requests": n}.
const { chromium } = await import(process.env.PLAYWRIGHT_CORE);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(120_000);

// Bytes as transferred (compressed bodies plus headers), from the DevTools protocol.
const cdp = await context.newCDPSession(page);
await cdp.send("Network.enable");
let bytes = 0;
let requests = 0;
cdp.on("Network.loadingFinished", (e) => { bytes += e.encodedDataLength; requests += 1; });
cdp.on("Network.webSocketFrameReceived", (e) => { bytes += e.response.payloadData.length; });

if (process.env.PASSWORD) {
  await page.goto(process.env.URL);
  await page.fill("input.password", process.env.PASSWORD);
  await Promise.all([page.waitForNavigation(), page.click("input.submit")]);
} else {
  await page.goto(process.env.URL);
}
await page.waitForSelector(".monaco-workbench .part.editor");
await page.waitForSelector(`.explorer-folders-view .monaco-list-row[aria-label*="${process.env.FILE}"]`);
const visibleAt = Date.now();
console.log(JSON.stringify({ visibleAt, bytes, requests }));
await browser.close();
