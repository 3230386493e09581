// Opens the admin listener's live dashboard in a real Chromium while load runs through the proxy,
// and checks that it lives: four charts per route, drawn, growing from one look to the next, with
// requests in flight, latency and rejections seen; nothing fetched but the page and /metrics; no
// script errors. Saves a screenshot.
//
//   node dashboard.mjs http://ADMIN/dashboard OUT.png
//
// Exits 1 with one line per failed check, 2 on bad usage.

import { fail, failures, withPage } from './browser.mjs';
import { stat } from 'node:fs/promises';
import path from 'node:path';

const CHARTS = ['inflight', 'queue', 'rejections', 'latency'];

const [url, pngArg] = process.argv.slice(2);
if (!url || !pngArg) {
  console.error('usage: node dashboard.mjs http://ADMIN/dashboard OUT.png');
  process.exit(2);
}
const png = path.resolve(pngArg);
const origin = new URL(url).origin;

// What the page shows now: per route and chart, its series' point counts and values.
const look = (page) =>
  page.evaluate((charts) => {
    const routes = {};
    for (const div of document.querySelectorAll('div.route')) {
      const route = {};
      for (const name of charts) {
        const svg = div.querySelector(`svg.chart[data-chart="${name}"]`);
        if (!svg) continue;
        const box = svg.getBoundingClientRect();
        const series = {};
        for (const line of svg.querySelectorAll('polyline')) {
          const ys = line.getAttribute('points').trim().split(/\s+/).map((p) => Number(p.split(',')[1]));
          (series[line.dataset.series] ||= []).push(...ys);
        }
        route[name] = { width: box.width, height: box.height, series, text: svg.textContent };
      }
      routes[div.dataset.route] = route;
    }
    return { updates: Number(document.body.dataset.updates || 0), routes, text: document.body.innerText };
  }, CHARTS);

await withPage(async (page) => {
  page.on('request', (req) => {
    const u = new URL(req.url());
    if (u.origin !== origin || !['/dashboard', '/metrics'].includes(u.pathname))
      fail(`the page fetched ${req.url()} (only the page and /metrics are allowed)`);
  });
  const response = await page.goto(url, { waitUntil: 'load' });
  if (!response || !response.ok()) fail(`opening ${url}: status ${response && response.status()}`);

  await page.waitForFunction(() => Number(document.body.dataset.updates || 0) >= 3, null, { timeout: 15000 });
  const first = await look(page);
  await page.waitForTimeout(4000);
  const second = await look(page);

  if (!(second.updates >= first.updates + 3)) fail(`${first.updates} then ${second.updates} updates in 4 s`);
  const names = Object.keys(second.routes);
  if (names.length === 0) fail('no route drawn');
  let inflight = 0, latency = 0, rejections = 0;
  for (const route of names) {
    for (const chart of CHARTS) {
      const c = second.routes[route][chart];
      if (!c) { fail(`route ${route}: no ${chart} chart`); continue; }
      if (!(c.width > 0 && c.height > 0)) fail(`route ${route}, ${chart}: drawn ${c.width}×${c.height} px`);
      if (/NaN|Infinity/.test(c.text)) fail(`route ${route}, ${chart}: NaN or Infinity`);
      const before = first.routes[route]?.[chart];
      const points = (x) => Object.values(x?.series ?? {}).reduce((n, ys) => n + ys.length, 0);
      if (!(points(c) > points(before))) fail(`route ${route}, ${chart}: ${points(before)} points, then ${points(c)}`);
    }
    // A point above the baseline (y < 140) is a value above zero.
    const above = (c, s) => (c?.series[s] ?? []).some((y) => y < 139);
    const r = second.routes[route];
    if (above(r.inflight, 'in flight')) inflight += 1;
    if (above(r.latency, 'p99')) latency += 1;
    if (Object.keys(r.rejections?.series ?? {}).some((s) => s !== 'total' && above(r.rejections, s))) rejections += 1;
  }
  if (inflight === 0) fail('no route showed requests in flight');
  if (latency === 0) fail('no route showed a p99 latency');
  if (rejections === 0) fail('no route showed rejections');
  if (/NaN|Infinity/.test(second.text)) fail('NaN or Infinity in the page text');

  await page.screenshot({ path: png, fullPage: true });
  const { size } = await stat(png);
  if (size < 10 * 1024) fail(`screenshot ${png} is ${size} bytes: the page looks blank`);
  if (failures.length === 0)
    console.log(`dashboard test: ${names.length} route(s), ${second.updates} updates, in flight, p99 and rejections seen; screenshot ${png} (${size} bytes)`);
});
