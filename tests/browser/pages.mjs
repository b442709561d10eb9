// Drives Debian's Chromium (headless, through playwright-core) over flashgate's pages.
// Run by tests/browser.rs, which starts the gateway and passes, in the environment:
//   GATEWAY (http://127.0.0.1:port), ADMIN (admin base URL), ADMIN_TOKEN, SKU, ARTIFACTS (dir),
//   and for a gateway over TLS, CERT_PEM (its self-signed certificate, which Chromium is
//   told to trust by its key; node's own fetch trusts it through NODE_EXTRA_CA_CERTS)
// and the scenario as the one argument: waiting-room | busy | countdown | prequeue | demo.
// Every wait is for a state the page must reach; the timeouts only bound a broken run.
import { chromium } from "playwright-core";

const scenario = process.argv[2];
const { GATEWAY, ADMIN, ADMIN_TOKEN, SKU, ARTIFACTS } = process.env;
const BOUND = 60000;

function fail(message) {
  throw new Error(`${scenario}: ${message}`);
}

async function admin(action) {
  const resp = await fetch(`${ADMIN}/admin/sales/${SKU}/${action}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  if (!resp.ok) fail(`admin ${action}: HTTP ${resp.status}`);
}

async function ticketPosition(ticket) {
  const resp = await fetch(`${GATEWAY}/sale/tickets/${ticket}`);
  const body = await resp.json();
  return body.status === "queued" ? body.position : 0;
}

// Another buyer joins the queue through the API (async mode: 202 with a ticket).
async function queueBuyer(user) {
  const headers = { "X-User-Id": user };
  const t = await (await fetch(`${GATEWAY}/sale/${SKU}/token`, { method: "POST", headers })).json();
  const resp = await fetch(`${GATEWAY}/sale/${SKU}/order`, {
    method: "POST",
    headers: { ...headers, "X-Sale-Token": t.token },
  });
  if (resp.status !== 202) fail(`buyer ${user} was not queued: HTTP ${resp.status}`);
}

async function shot(page, name) {
  await page.screenshot({ path: `${ARTIFACTS}/${scenario}-${name}.png`, fullPage: true });
}

async function text(page, selector) {
  return (await page.locator(selector).textContent()) ?? "";
}

async function waitingRoom(context) {
  const page = await context.newPage();
  await admin("hold");
  for (let i = 0; i < 6; i++) await queueBuyer(`ahead-${i}`);

  // token -> order -> waiting page, all from the sale page's buy button.
  await page.goto(`${GATEWAY}/sale/${SKU}/wait`);
  await page.locator("#buy:enabled").click();
  await page.waitForURL(/\/wait\?ticket=[0-9a-f]{32}$/, { timeout: BOUND });
  const ticket = new URL(page.url()).searchParams.get("ticket");
  await page.locator("#position", { hasText: "7" }).waitFor({ timeout: BOUND });
  await shot(page, "1-queued");

  // A reload keeps the place: the ticket is in the URL.
  await page.reload();
  await page.locator("#position", { hasText: "7" }).waitFor({ timeout: BOUND });

  // Release the drain until our place has fallen, then hold it there: the page must show it.
  await admin("release");
  let position = 7;
  while (position > 4) {
    await new Promise((r) => setTimeout(r, 20));
    position = await ticketPosition(ticket);
    if (position === 0) fail("the ticket left the queue before the hold");
  }
  await admin("hold");
  position = await ticketPosition(ticket);
  if (position < 1 || position > 4) fail(`held at position ${position}`);
  await page.reload();
  await page.locator("#position", { hasText: String(position) }).waitFor({ timeout: BOUND });
  await shot(page, "2-moved-up");

  // While nothing moves the page polls no faster than Retry-After (1 s), and slower and slower.
  const polls = [];
  const onRequest = (req) => { if (req.url().includes("/sale/tickets/")) polls.push(Date.now()); };
  page.on("request", onRequest);
  while (polls.length < 3) await page.waitForRequest(/\/sale\/tickets\//, { timeout: BOUND });
  page.off("request", onRequest);
  const gaps = polls.slice(1).map((t, i) => t - polls[i]);
  if (gaps.some((g) => g < 990)) fail(`polled faster than Retry-After: gaps ${gaps} ms`);
  if (gaps[1] <= gaps[0]) fail(`no back-off while the position stood still: gaps ${gaps} ms`);

  // A network blip: the page says so, keeps its place and carries on afterwards.
  await context.setOffline(true);
  await page.locator("#network").waitFor({ state: "visible", timeout: BOUND });
  await shot(page, "3-offline");
  await context.setOffline(false);
  await admin("release");
  await page.locator("#outcome.won").waitFor({ timeout: BOUND });
  const order = await text(page, "#order");
  if (!/Order [0-9a-f]{32}/.test(order)) fail(`order text: ${order}`);
  if (!(await page.locator("#network").isHidden())) fail("the offline note stayed");
  await shot(page, "4-reserved");
}

async function busy(context) {
  // The test's sale has a queue of one, held full by another buyer.
  await admin("hold");
  await queueBuyer("first-in-line");
  const page = await context.newPage();
  await page.goto(`${GATEWAY}/sale/${SKU}/wait`);
  await page.locator("#buy:enabled").click();
  await page.waitForURL(/\/sale\/busy\?sku=/, { timeout: BOUND });
  const heading = await text(page, "h1");
  if (!heading.includes("So many people")) fail(`busy page heading: ${heading}`);
  if ((await text(page, "#sku")) !== SKU) fail("the busy page names the sale");
  await shot(page, "busy");
}

async function countdown(context) {
  // SKU opens in 2100: the page counts down and will not sell.
  const page = await context.newPage();
  await page.goto(`${GATEWAY}/sale/${SKU}/wait`);
  await page.locator("#countdown").waitFor({ state: "visible", timeout: BOUND });
  if (!(await page.locator("#buy").isDisabled())) fail("buy is enabled before the opening");
  if (!/\d+ h \d+ min \d+ s/.test(await text(page, "#remaining"))) fail("no countdown shown");
  await shot(page, "1-before");
  // SOON opens seconds after the gateway started (before or after this page loads): at the
  // opening the countdown gives way to the buy button, and buying works.
  await page.goto(`${GATEWAY}/sale/${process.env.SOON}/wait`);
  await page.locator("#buy:enabled").waitFor({ timeout: BOUND });
  if (!(await page.locator("#countdown").isHidden())) fail("countdown still shown after the opening");
  // Without the identity header the auth layer would set, buying is refused in words.
  const anonymous = await (await context.browser().newContext()).newPage();
  await anonymous.goto(`${GATEWAY}/sale/${process.env.SOON}/wait`);
  await anonymous.locator("#buy:enabled").click();
  await anonymous.locator("#message", { hasText: "Please sign in to buy." }).waitFor({ timeout: BOUND });
  if (!(await anonymous.locator("#buy").isEnabled())) fail("buy stays disabled after a refusal");
  await shot(anonymous, "2-signed-out");
  await page.locator("#buy").click();
  await page.waitForURL(/\/wait\?ticket=[0-9a-f]{32}$/, { timeout: BOUND });
  await page.locator("#outcome.won").waitFor({ timeout: BOUND });
  await shot(page, "3-bought");
}

// SKU opens seconds after the gateway started, with a pre-queue open already: the sale page
// offers to join the queue before the opening, the waiting room shows the pre-queued state
// and its countdown, and at the opening the buyer's order goes through.
async function prequeue(context) {
  const page = await context.newPage();
  await page.goto(`${GATEWAY}/sale/${SKU}/wait`);
  await page.locator("#countdown").waitFor({ state: "visible", timeout: BOUND });
  await page.locator("#prequeue-note").waitFor({ state: "visible", timeout: BOUND });
  await page.locator("#buy:enabled", { hasText: "Join the queue" }).waitFor({ timeout: BOUND });
  await shot(page, "1-sale-page");
  await page.locator("#buy").click();
  await page.waitForURL(/\/wait\?ticket=[0-9a-f]{32}$/, { timeout: BOUND });
  await page.locator("#state[data-state=prequeued]").waitFor({ state: "attached", timeout: BOUND });
  await page.locator("#prequeue").waitFor({ state: "visible", timeout: BOUND });
  if (!/\d+ min \d+ s/.test(await text(page, "#opens-in"))) fail("no countdown to the opening");
  if (!(await page.locator("#state").isHidden())) fail("a place is shown before the opening");
  await shot(page, "2-prequeued");
  await page.locator("#outcome.won").waitFor({ timeout: BOUND });
  if (!(await page.locator("#prequeue").isHidden())) fail("the pre-queue note stayed after the opening");
  await shot(page, "3-reserved");
}

// `flashgate demo` as its banner prints it: a browser with no identity header (no auth
// layer in front) buys from the sale page, watches the waiting room, and keeps its demo
// identity (a cookie) for its next try.
async function demo(browser) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await admin("hold");
  await page.goto(`${GATEWAY}/sale/${SKU}/wait`);
  await page.locator("#buy:enabled").click();
  await page.waitForURL(/\/wait\?ticket=[0-9a-f]{32}$/, { timeout: BOUND });
  await page.locator("#position", { hasText: "1" }).waitFor({ timeout: BOUND });
  await shot(page, "1-waiting-room");
  const cookies = await context.cookies();
  const mine = cookies.find((c) => c.name === "flashgate_demo_user");
  if (!mine || !/^demo-[0-9a-f]+$/.test(mine.value)) fail(`no demo identity cookie: ${JSON.stringify(cookies)}`);
  await admin("release");
  await page.locator("#outcome.won").waitFor({ timeout: BOUND });
  await shot(page, "2-reserved");
  // The same browser is the same buyer: one unit per user.
  await page.goto(`${GATEWAY}/sale/${SKU}/wait`);
  await page.locator("#buy:enabled").click();
  await page.locator("#message", { hasText: "You already have an order" }).waitFor({ timeout: BOUND });
  await shot(page, "3-same-buyer");
  await context.close();
}

// One page in one state (PAGE: its path, SELECTOR: what the state shows, NAME: the
// screenshots' name), at a desktop's width and a 360-px phone's: the state is shown, nothing
// runs off the side of the screen, and the page says its language and has a heading.
async function pageState(browser) {
  const { PAGE, SELECTOR, NAME } = process.env;
  for (const [width, height] of [[1280, 800], [360, 740]]) {
    const context = await browser.newContext({
      viewport: { width, height },
      extraHTTPHeaders: { "X-User-Id": "browser-page-state" },
    });
    const page = await context.newPage();
    await page.goto(`${GATEWAY}${PAGE}`);
    await page.locator(SELECTOR).first().waitFor({ state: "visible", timeout: BOUND });
    const fits = await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
    if (!fits) fail(`${NAME} runs wider than ${width} px`);
    if (!(await page.locator("html[lang]").count())) fail(`${NAME}: no lang`);
    if (!(await page.locator("h1").count())) fail(`${NAME}: no heading`);
    if (await page.locator("body").evaluate((b) => b.innerHTML.includes("{{"))) fail(`${NAME}: a variable left unfilled`);
    await page.screenshot({ path: `${ARTIFACTS}/state-${NAME}-${width}.png`, fullPage: true });
    await context.close();
  }
}

const scenarios = { "waiting-room": waitingRoom, busy, countdown, prequeue };
const ownContext = { demo, "page-state": pageState };
if (!scenarios[scenario] && !ownContext[scenario]) {
  console.error(`unknown scenario ${scenario}; one of ${[...Object.keys(scenarios), ...Object.keys(ownContext)].join(", ")}`);
  process.exit(2);
}
const args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"];
if (process.env.CERT_PEM) {
  const { X509Certificate, createHash } = await import("node:crypto");
  const { readFileSync } = await import("node:fs");
  const spki = new X509Certificate(readFileSync(process.env.CERT_PEM)).publicKey.export({ type: "spki", format: "der" });
  args.push(`--ignore-certificate-errors-spki-list=${createHash("sha256").update(spki).digest("base64")}`);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args,
});
try {
  if (ownContext[scenario]) {
    await ownContext[scenario](browser);
  } else {
    // The auth layer in front of the gateway would set the identity header; here the browser does.
    const context = await browser.newContext({ extraHTTPHeaders: { "X-User-Id": `browser-${scenario}` } });
    await scenarios[scenario](context);
  }
  console.log(`${scenario}: ok`);
} catch (e) {
  console.error(e.stack || String(e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
