// What the browser tests share: Debian's chromium (/usr/bin/chromium, or $CHROMIUM) through
// playwright-core, which downloads no browser of its own, headless, in a throwaway profile; and
// one list of failures, printed one a line, that makes the process exit 1.

import { chromium } from 'playwright-core';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const failures = [];
export const fail = (msg) => failures.push(msg);

// Runs `body(page)` in a fresh headless Chromium; any throw is a failure. Exits 1 on failures.
export async function withPage(body) {
  const userDataDir = await mkdtemp(path.join(tmpdir(), 'spillway-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 1400, height: 900 },
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (err) => fail(`script error on the page: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') fail(`console error: ${msg.text()}`);
    });
    await body(page);
  } catch (err) {
    fail(`browser test could not run: ${err && err.stack ? err.stack : err}`);
  } finally {
    if (context) await context.close().catch(() => {});
    await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  }
  if (failures.length > 0) {
    for (const f of failures) console.error(`browser test FAILED: ${f}`);
    process.exit(1);
  }
}
