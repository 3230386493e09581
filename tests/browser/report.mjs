// Opens the lab's HTML report in a real Chromium and checks what a reader would see: every chart
// drawn with lines and a size, the summary table filled in, nothing fetched from the network,
// no script errors; then saves a full-page screenshot.
//
//   node report.mjs REPORT.html OUT.png
//
// Uses Debian's chromium (/usr/bin/chromium, or $CHROMIUM) through playwright-core, which
// downloads no browser of its own. Exits 1 with one line per failed check, 2 on bad usage.

import { fail, failures, withPage } from './browser.mjs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const CHARTS = ['goodput', 'p50', 'p99', 'backend-queue', 'proxy-queue', 'rejections', 'memory'];
const MIN_SCREENSHOT_BYTES = 10 * 1024;

const [reportArg, pngArg] = process.argv.slice(2);
if (!reportArg || !pngArg) {
  console.error('usage: node report.mjs REPORT.html OUT.png');
  process.exit(2);
}
const report = path.resolve(reportArg);
const png = path.resolve(pngArg);
const reportUrl = pathToFileURL(report).href;

try {
  await stat(report);
} catch {
  console.error(`browser test: no report at ${report}`);
  process.exit(2);
}

await withPage(async (page) => {
  // The report must be self-contained: the only thing loaded is the file itself.
  page.on('request', (req) => {
    const url = req.url();
    if (url !== reportUrl && !url.startsWith('data:')) fail(`the page fetched ${url} (must be self-contained)`);
  });
  const response = await page.goto(reportUrl, { waitUntil: 'load' });
  if (response && !response.ok()) fail(`opening ${reportUrl}: status ${response.status()}`);

  const seen = await page.evaluate((names) => {
    const charts = {};
    for (const name of names) {
      const svgs = document.querySelectorAll(`svg.chart[data-chart="${name}"]`);
      if (svgs.length === 0) {
        charts[name] = null;
        continue;
      }
      const svg = svgs[0];
      const box = svg.getBoundingClientRect();
      let lines = 0;
      for (const el of svg.querySelectorAll('polyline, path')) {
        const pts = el.tagName === 'polyline' ? el.getAttribute('points') : el.getAttribute('d');
        if (pts && pts.trim().split(/[\s,]+/).length >= 4) lines += 1;
      }
      // A series with one point (a run at a single load) is drawn as a marker.
      lines += svg.querySelectorAll('circle').length;
      charts[name] = {
        count: svgs.length,
        width: box.width,
        height: box.height,
        lines,
        text: svg.textContent,
      };
    }
    const table = document.querySelector('table.summary');
    const headers = table ? table.querySelectorAll('thead th').length : 0;
    const rows = table ? [...table.querySelectorAll('tbody tr')].map((tr) => tr.querySelectorAll('td').length) : [];
    return { charts, table: !!table, headers, rows, bodyText: document.body.innerText };
  }, CHARTS);

  for (const name of CHARTS) {
    const c = seen.charts[name];
    if (!c) {
      fail(`chart ${name}: no svg.chart[data-chart="${name}"]`);
      continue;
    }
    if (c.count !== 1) fail(`chart ${name}: ${c.count} charts with that name, expected 1`);
    if (!(c.width > 0 && c.height > 0)) fail(`chart ${name}: drawn ${c.width}×${c.height} px`);
    if (c.lines === 0) fail(`chart ${name}: no polyline, path or point marker with data`);
    if (/NaN|Infinity/.test(c.text)) fail(`chart ${name}: NaN or Infinity in its text`);
  }
  if (!seen.table) fail('no table.summary');
  else if (seen.rows.length === 0) fail('the summary table has no rows');
  else if (seen.rows.some((cells) => cells !== seen.headers))
    fail(`summary rows should have ${seen.headers} cells each, have ${JSON.stringify(seen.rows)}`);
  if (/NaN|Infinity/.test(seen.bodyText)) fail('NaN or Infinity in the page text');

  await page.screenshot({ path: png, fullPage: true });
  const { size } = await stat(png);
  if (size < MIN_SCREENSHOT_BYTES)
    fail(`screenshot ${png} is ${size} bytes (< ${MIN_SCREENSHOT_BYTES}): the page looks blank`);

  if (failures.length === 0) {
    const rows = seen.rows.length;
    console.log(`browser test: ${CHARTS.length} charts drawn, ${rows} summary rows, screenshot ${png} (${size} bytes)`);
  }
});
