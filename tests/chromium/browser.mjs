#!/usr/bin/env node
// A real browser for tokend's end-to-end tests: `$BROWSER URL` drives Debian's
// headless Chromium (/usr/bin/chromium) through playwright-core. It plays the
// user in front of oidc-provider's development interactions: fills the login
// form (any login is accepted), submits the consent form, lets the provider
// redirect to the loopback listener (tokend's callback), and saves a
// screenshot of the page the listener answers with.
//
// Like xdg-open, `browser.mjs URL` records the launch, starts a detached
// worker that does the clicking and exits 0 at once; the worker gives up after
// BROWSER_DEADLINE_SECS (default 120). BROWSER_FOREGROUND=1 does the work
// before returning (exit code = outcome).
//
// Environment:
//   BROWSER_SCREENSHOT  where the final page's PNG goes (written to a temp
//                       name, then renamed: once it exists it is complete)
//   BROWSER_LOG         append a log of what was done to this file
//   BROWSER_COUNT_FILE  append one line per launch to this file
//   BROWSER_LOGIN       the login to use (default: tester)
//   CHROMIUM            the browser binary (default: /usr/bin/chromium)
//
// Only http://127.0.0.1 is ever loaded: every other request is aborted and
// logged (the closed test network refuses them anyway).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const DEADLINE_SECS = Number(process.env.BROWSER_DEADLINE_SECS || 120);
const MAX_STEPS = 10;
// Without the background-networking flags Chromium's own connections (field
// trials, component updates, sync) are refused on a closed network and can
// stall start-up.
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-dev-shm-usage',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];

function log(msg) {
  const line = `${new Date().toISOString().slice(11, 19)} [chromium pid ${process.pid}] ${msg}\n`;
  if (process.env.BROWSER_LOG) {
    try {
      fs.appendFileSync(process.env.BROWSER_LOG, line);
    } catch {
      // a log that cannot be written is no reason to fail the login
    }
  }
  if (process.env.BROWSER_STDERR === '1') process.stderr.write(line);
}

// Codes and states are short-lived, but logs are read by tests: drop queries.
function redact(url) {
  try {
    const u = new URL(url);
    return u.search ? `${u.origin}${u.pathname}?…` : `${u.origin}${u.pathname}`;
  } catch {
    return '<not a URL>';
  }
}

function allowed(url) {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' && u.hostname === '127.0.0.1';
  } catch {
    return false;
  }
}

function recordLaunch(url) {
  const p = process.env.BROWSER_COUNT_FILE;
  // One short O_APPEND write per launch: atomic even with concurrent launches.
  if (p) fs.appendFileSync(p, `${process.pid} ${url}\n`);
}

// Submits the form holding `selector` and waits for the next document.
async function submit(page, formSelector) {
  const loaded = page.waitForEvent('load', { timeout: 60_000 });
  await page.locator(`${formSelector} [type=submit]`).first().click({ noWaitAfter: true });
  await loaded;
}

async function authorize(url) {
  // Imported here so the launcher stays fast and works without node_modules.
  const { chromium } = await import('playwright-core');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'tokend-chromium.'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 800, height: 600 },
    timeout: 60_000,
  });
  try {
    await context.route('**/*', (route) => {
      const u = route.request().url();
      if (allowed(u)) return route.continue();
      log(`refused ${redact(u)}`);
      return route.abort('blockedbyclient');
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on('framenavigated', (f) => {
      if (f === page.mainFrame()) log(`at ${redact(f.url())}`);
    });
    const login = process.env.BROWSER_LOGIN || 'tester';
    await page.goto(url, { waitUntil: 'load', timeout: 60_000 });
    // tokend hands the browser a one-time loopback /start link that
    // redirects to the provider: the provider is where that landed.
    const provider = new URL(page.url()).origin;
    for (let step = 0; ; step++) {
      if (step >= MAX_STEPS) throw new Error('too many steps');
      if (new URL(page.url()).origin !== provider) break;
      if (await page.locator('form input[name=login]').count()) {
        log(`login form: signing in as ${JSON.stringify(login)}`);
        await page.fill('input[name=login]', login);
        await page.fill('input[name=password]', 'any-password');
        await submit(page, 'form:has(input[name=login])');
      } else if (await page.locator('form input[name=prompt]').count()) {
        log('consent form: continue');
        await submit(page, 'form:has(input[name=prompt])');
      } else {
        const text = (await page.locator('body').innerText()).replace(/\s+/g, ' ').slice(0, 300);
        throw new Error(`the provider's page has nothing to fill: ${text}`);
      }
    }
    const text = (await page.locator('body').innerText()).replace(/\s+/g, ' ').trim();
    log(`final page ${redact(page.url())}: ${text.slice(0, 300)}`);
    const shot = process.env.BROWSER_SCREENSHOT;
    if (shot) {
      fs.mkdirSync(path.dirname(shot), { recursive: true });
      const tmp = `${shot}.${process.pid}.tmp`;
      await page.screenshot({ path: tmp, type: 'png' });
      fs.renameSync(tmp, shot);
      log(`screenshot ${shot}`);
    }
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

async function main(argv) {
  if (argv[0] === '--worker') {
    setTimeout(() => {
      log(`failed: not done within ${DEADLINE_SECS} s`);
      process.exit(1);
    }, DEADLINE_SECS * 1000).unref();
    try {
      await authorize(argv[1]);
      log('done');
      return 0;
    } catch (e) {
      log(`failed: ${e && e.message ? e.message.split('\n')[0] : e}`);
      return 1;
    }
  }
  const url = argv[argv.length - 1];
  if (!url) {
    process.stderr.write('usage: browser.mjs URL\n');
    return 2;
  }
  recordLaunch(url);
  log(`launch url=${redact(url)}`);
  if (process.env.BROWSER_FOREGROUND === '1') return main(['--worker', url]);
  const worker = spawn(process.execPath, [fileURLToPath(import.meta.url), '--worker', url], {
    detached: true,
    stdio: 'ignore',
  });
  worker.unref();
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
