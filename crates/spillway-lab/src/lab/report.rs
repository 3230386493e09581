//! The lab's report: a summary table for the terminal ([`write_table`]) and one self-contained
//! HTML page with inline SVG charts ([`write_html`]): no script, no font, no stylesheet fetched
//! from anywhere, so the file can be mailed, attached to a CI run or opened offline.
//!
//! The charts (each an `<svg class="chart" data-chart="NAME">`):
//!
//! | NAME | what |
//! | --- | --- |
//! | `goodput` | goodput, % of capacity, against offered load (× capacity) |
//! | `p50`, `p99` | latency of admitted (ok) answers, ms, second by second |
//! | `backend-queue` | requests waiting in the backend's own queue |
//! | `proxy-queue` | requests waiting in the proxy's queue |
//! | `rejections` | rejections (429, 503, 504, other) a second |
//! | `memory` | the backend's resident memory, MiB |
//!
//! Every chart but `goodput` shows the run at the highest offered load in the results, one line
//! per contestant; a contestant has the same colour in every chart.
//!
//! When the message-queue scenario ran ([`super::queue`]), a last section compares its two
//! consumers: `queue-lag` (messages fetched and not finished), `queue-throughput` (handled a
//! second) and `queue-broker` (the backlog the broker holds).

use super::queue::{QueueResults, QueueRun, QueueSample};
use super::results::{LabResults, Run};
use std::io::{self, Write};

/// The names of the charts [`write_html`] draws, in page order (each is the `data-chart`
/// attribute of an `<svg class="chart">`).
pub const CHART_NAMES: [&str; 7] =
    ["goodput", "p50", "p99", "backend-queue", "proxy-queue", "rejections", "memory"];

/// The charts of the message-queue section, drawn when the results have one (see
/// [`super::queue`]).
pub const QUEUE_CHART_NAMES: [&str; 3] = ["queue-lag", "queue-throughput", "queue-broker"];

const MIB: f64 = 1024.0 * 1024.0;

// ---------------------------------------------------------------------------------------------
// The summary: computed once, printed as text or HTML.

/// Column headers of the summary, and whether the column holds numbers (right-aligned).
const COLUMNS: [(&str, bool); 11] = [
    ("contestant", false),
    ("load ×", true),
    ("goodput %", true),
    ("ok p50 ms", true),
    ("ok p99 ms", true),
    ("rejected %", true),
    ("late %", true),
    ("rejection p99 ms", true),
    ("Retry-After %", true),
    ("max backend queue", true),
    ("backend RSS MiB", true),
];

/// What each column means, shown as a tooltip in the HTML table.
const COLUMN_HINTS: [&str; 11] = [
    "who stood between the clients and the backend",
    "offered load as a multiple of the backend's capacity",
    "ok answers within the deadline a second, as a percentage of the backend's capacity",
    "median latency of ok answers, from the intended send time",
    "99th percentile latency of ok answers",
    "answers 429, 503, 504 or other non-2xx, as a percentage of requests sent",
    "requests not answered within the deadline (abandoned), as a percentage of requests sent",
    "99th percentile latency of rejections: how fast the answer 'no' came",
    "share of rejections that carried a Retry-After header",
    "the most requests seen waiting in the backend's own queue",
    "the backend's resident memory at the end of the run",
];

/// One line of the summary, every cell already formatted.
fn summary_row(run: &Run, capacity_per_s: f64) -> [String; 11] {
    let t = &run.load.totals;
    let pct = |n: u64, d: u64| {
        if d == 0 { "-".to_owned() } else { format!("{:.1}", (n as f64 / d as f64 * 100.0).min(100.0)) }
    };
    let ms =
        |count: u64, v: f64| if count == 0 || !v.is_finite() { "-".to_owned() } else { format!("{v:.1}") };
    let goodput = run.goodput_fraction(capacity_per_s) * 100.0;
    [
        run.contestant.clone(),
        format_load(run.load_multiple),
        if goodput.is_finite() { format!("{goodput:.1}") } else { "-".to_owned() },
        ms(run.load.ok_latency.count, run.load.ok_latency.p50_ms),
        ms(run.load.ok_latency.count, run.load.ok_latency.p99_ms),
        pct(t.rejected(), t.sent),
        pct(t.late, t.sent),
        ms(run.load.rejection_latency.count, run.load.rejection_latency.p99_ms),
        pct(t.with_retry_after, t.rejected()),
        if run.samples.is_empty() { "-".to_owned() } else { run.max_backend_waiting().to_string() },
        if run.samples.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.1}", run.final_backend_rss() as f64 / MIB)
        },
    ]
}

/// `4`, `1.5`, `0.75`: a load multiple without trailing zeros.
fn format_load(x: f64) -> String {
    if !x.is_finite() {
        return "-".to_owned();
    }
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The runs in table order: by offered load, then in the order run.
fn table_order(results: &LabResults) -> Vec<&Run> {
    let mut runs: Vec<&Run> = results.runs.iter().collect();
    runs.sort_by(|a, b| a.load_multiple.total_cmp(&b.load_multiple));
    runs
}

/// One sentence on the set-up: backend, capacity, deadline, length of each run.
fn setup_sentence(r: &LabResults) -> String {
    format!(
        "a backend of {} workers × {} ms of service time = {:.0} requests/s of capacity; \
         clients give each request a deadline of {} ms; {} s per run",
        r.pool, r.service_ms, r.capacity_per_s, r.deadline_ms, r.seconds
    )
}

/// Prints the summary as an aligned plain-text table, one row per contestant and load.
///
/// ```
/// use spillway_lab::lab::report::{sample_results, write_table};
///
/// let mut out = Vec::new();
/// write_table(&sample_results(), &mut out).unwrap();
/// let text = String::from_utf8(out).unwrap();
/// assert!(text.contains("unprotected") && text.contains("gradient2"));
/// ```
pub fn write_table(results: &LabResults, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "scenario {}: {}", results.scenario, setup_sentence(results))?;
    writeln!(out)?;
    let rows: Vec<[String; 11]> =
        table_order(results).into_iter().map(|r| summary_row(r, results.capacity_per_s)).collect();
    let mut widths = COLUMNS.map(|(h, _)| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[&str]| -> io::Result<()> {
        let mut s = String::from(" ");
        for ((cell, &(_, numeric)), &w) in cells.iter().zip(&COLUMNS).zip(&widths) {
            let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
            s.push_str("  ");
            if numeric {
                s.push_str(&pad);
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&pad);
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(out, &COLUMNS.map(|(h, _)| h))?;
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    line(out, &rule.iter().map(String::as_str).collect::<Vec<_>>())?;
    if rows.is_empty() {
        writeln!(out, "   (no runs)")?;
    }
    for row in &rows {
        line(out, &row.each_ref().map(String::as_str))?;
    }
    if let Some(q) = &results.queue {
        writeln!(out)?;
        writeln!(out, "message queue: {}", queue_sentence(q))?;
        writeln!(out)?;
        writeln!(
            out,
            "  {:<14} {:>12} {:>10} {:>12} {:>10} {:>7}",
            "consumer", "throughput/s", "peak lag", "peak memory", "final lag", "pauses"
        )?;
        for r in &q.runs {
            writeln!(
                out,
                "  {:<14} {:>12.0} {:>10} {:>8.1} MiB {:>10} {:>7}",
                r.contestant,
                r.throughput_per_s,
                r.peak_lag,
                r.peak_lag_bytes as f64 / MIB,
                r.final_lag,
                r.pauses
            )?;
        }
    }
    Ok(())
}

fn queue_sentence(q: &QueueResults) -> String {
    format!(
        "a NATS JetStream consumer with {} handlers x {} ms ({:.0} messages/s) under {:.0} messages/s of {} bytes, {} s each",
        q.handlers, q.service_ms, q.capacity_per_s, q.publish_rate, q.payload_bytes, q.seconds
    )
}

/// The queue section of the page: a table and [`QUEUE_CHART_NAMES`].
fn write_queue_html(q: &QueueResults, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "<h2>Message queue: a slow consumer under a fast producer</h2>")?;
    writeln!(
        out,
        "<p>{}. <em>unbounded</em> pulls everything the broker will send into a local queue that \
         never refuses; <em>flow control</em> is <code>spillway-queue</code>'s NATS consumer \
         (limit {}, batches of 32, pause above a lag of 64, resume below 32). <em>Lag</em> is the \
         consumer's memory: messages fetched and not yet finished. The backlog is the same either \
         way; with flow control it stays in the broker.</p>",
        escape(&queue_sentence(q)),
        q.handlers
    )?;
    writeln!(
        out,
        "<table class=\"queue\">\n<thead><tr><th>consumer</th><th>throughput /s</th><th>peak lag \
         (messages)</th><th>peak memory (MiB)</th><th>final lag</th><th>pauses</th></tr></thead>\n<tbody>"
    )?;
    for r in &q.runs {
        writeln!(
            out,
            "<tr><td class=\"who\"><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td class=\"num\">{:.0}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{:.1}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            queue_colour(&r.contestant),
            escape(&r.contestant),
            r.throughput_per_s,
            r.peak_lag,
            r.peak_lag_bytes as f64 / MIB,
            r.final_lag,
            r.pauses
        )?;
    }
    writeln!(out, "</tbody>\n</table>\n<div class=\"charts\">")?;
    for chart in queue_charts(q) {
        chart.write_svg(out)?;
    }
    writeln!(out, "</div>")
}

fn queue_colour(contestant: &str) -> &'static str {
    if contestant == "unbounded" { PALETTE[1] } else { PALETTE[2] }
}

fn queue_charts(q: &QueueResults) -> Vec<LineChart> {
    let lines = |f: &dyn Fn(&QueueSample) -> f64| -> Vec<Line> {
        q.runs
            .iter()
            .map(|r| Line {
                label: r.contestant.clone(),
                colour: queue_colour(&r.contestant),
                dash: None,
                points: r.samples.iter().map(|s| Some((s.t, f(s)))).collect(),
            })
            .collect()
    };
    vec![
        LineChart {
            name: "queue-lag",
            title: "Consumer lag: fetched, not finished".to_owned(),
            x_label: "seconds",
            y_label: "messages",
            lines: lines(&|s| s.lag as f64),
            markers: false,
            reference: None,
        },
        LineChart {
            name: "queue-throughput",
            title: "Consumer throughput".to_owned(),
            x_label: "seconds",
            y_label: "messages / s",
            lines: lines(&|s| s.processed_per_s),
            markers: false,
            reference: Some((q.capacity_per_s, "handler capacity")),
        },
        LineChart {
            name: "queue-broker",
            title: "Backlog held by the broker".to_owned(),
            x_label: "seconds",
            y_label: "messages",
            lines: lines(&|s| s.broker_pending as f64),
            markers: false,
            reference: None,
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// The HTML page.

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1500px;margin:0 auto;padding:1.5rem 2rem 3rem}
h1{font-size:1.5rem;margin:.2rem 0 .6rem}h2{font-size:1.15rem;margin:1.8rem 0 .6rem}
p{max-width:62rem;line-height:1.45}
code{background:#eee;padding:0 .25em;border-radius:3px}
table.summary{border-collapse:collapse;font-size:.9rem;background:#fff}
table.summary th,table.summary td{border:1px solid #ddd;padding:.3rem .6rem}
table.summary th{background:#f0f0f0;text-align:center;cursor:help}
table.summary td.num{text-align:right;font-variant-numeric:tabular-nums}
table.summary td.who{white-space:nowrap}
table.summary tr.first td{border-top:2px solid #999}
table.queue{border-collapse:collapse;font-size:.9rem;background:#fff;margin-bottom:1rem}
table.queue th,table.queue td{border:1px solid #ddd;padding:.3rem .6rem}
table.queue th{background:#f0f0f0}
table.queue td.num{text-align:right;font-variant-numeric:tabular-nums}
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.4em;vertical-align:-.05em}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:1rem}
svg.chart{width:100%;height:auto;background:#fff;border:1px solid #ddd;border-radius:4px}
svg.chart text{font-size:12px;fill:#333}
svg.chart text.title{font-size:15px;font-weight:600}
svg.chart text.empty{font-size:14px;fill:#999}
svg.chart .grid{stroke:#e6e6e6}
svg.chart .axis{stroke:#555}
";

/// Writes the whole report as one self-contained HTML page: the set-up, the summary table and
/// the charts listed in the [module documentation](self).
///
/// ```
/// use spillway_lab::lab::report::{sample_results, write_html, CHART_NAMES, QUEUE_CHART_NAMES};
///
/// let mut out = Vec::new();
/// write_html(&sample_results(), &mut out).unwrap();
/// let html = String::from_utf8(out).unwrap();
/// for name in CHART_NAMES.iter().chain(&QUEUE_CHART_NAMES) {
///     assert!(html.contains(&format!("data-chart=\"{name}\"")));
/// }
/// ```
pub fn write_html(results: &LabResults, out: &mut impl Write) -> io::Result<()> {
    let scenario = escape(&results.scenario);
    let contestants = contestants(results);
    let top = highest_load(results);

    writeln!(out, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">")?;
    writeln!(out, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")?;
    writeln!(
        out,
        "<title>Spillway lab: {scenario}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<main>"
    )?;
    writeln!(out, "<h1>Spillway overload lab: <code>{scenario}</code></h1>")?;

    let mut loads: Vec<f64> = results.runs.iter().map(|r| r.load_multiple).collect();
    loads.sort_by(f64::total_cmp);
    loads.dedup();
    let loads: Vec<String> = loads.iter().map(|&l| format!("{}×", format_load(l))).collect();
    writeln!(
        out,
        "<p>Scenario <code>{scenario}</code>: {}. Each contestant faced the same open-loop load \
         (requests sent on schedule whether or not earlier ones were answered) at {} the \
         capacity. <em>Goodput</em> counts only ok answers that arrived within the deadline; an \
         answer after it is <em>late</em> and worth nothing to the client. Latencies are measured \
         from each request's intended send time. The charts over time show the highest offered \
         load, {}× capacity.</p>",
        escape(&setup_sentence(results)),
        if loads.is_empty() { "no load".to_owned() } else { loads.join(", ") },
        top.map_or_else(|| "-".to_owned(), format_load),
    )?;

    writeln!(out, "<h2>Summary</h2>\n<table class=\"summary\">\n<thead><tr>")?;
    for ((h, _), hint) in COLUMNS.iter().zip(COLUMN_HINTS) {
        write!(out, "<th title=\"{}\">{}</th>", escape(hint), escape(h))?;
    }
    writeln!(out, "</tr></thead>\n<tbody>")?;
    let rows = table_order(results);
    if rows.is_empty() {
        writeln!(out, "<tr><td colspan=\"{}\">no runs</td></tr>", COLUMNS.len())?;
    }
    let mut previous_load = None;
    for run in rows {
        let first = previous_load.is_some_and(|l: f64| l.total_cmp(&run.load_multiple).is_ne());
        previous_load = Some(run.load_multiple);
        write!(out, "<tr{}>", if first { " class=\"first\"" } else { "" })?;
        let colour = colour_of(&contestants, &run.contestant).0;
        for (i, (cell, &(_, numeric))) in
            summary_row(run, results.capacity_per_s).iter().zip(&COLUMNS).enumerate()
        {
            if i == 0 {
                write!(
                    out,
                    "<td class=\"who\"><span class=\"swatch\" style=\"background:{colour}\"></span>{}</td>",
                    escape(cell)
                )?;
            } else {
                write!(out, "<td class=\"{}\">{}</td>", if numeric { "num" } else { "txt" }, escape(cell))?;
            }
        }
        writeln!(out, "</tr>")?;
    }
    writeln!(out, "</tbody>\n</table>")?;

    writeln!(out, "<h2>Charts</h2>\n<div class=\"charts\">")?;
    for chart in charts(results, &contestants, top) {
        chart.write_svg(out)?;
    }
    writeln!(out, "</div>")?;
    if let Some(q) = &results.queue {
        write_queue_html(q, out)?;
    }
    writeln!(out, "</main>\n</body>\n</html>")
}

/// The contestants in order of first appearance: the index picks the colour.
fn contestants(results: &LabResults) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for r in &results.runs {
        if !names.contains(&r.contestant.as_str()) {
            names.push(&r.contestant);
        }
    }
    names
}

/// The highest finite offered load in the results.
fn highest_load(results: &LabResults) -> Option<f64> {
    results.runs.iter().map(|r| r.load_multiple).filter(|l| l.is_finite()).max_by(f64::total_cmp)
}

/// Colour-blind-friendly, distinct on white (Okabe–Ito, then a few more).
const PALETTE: [&str; 10] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#8c564b", "#7f7f7f",
    "#bcbd22",
];

/// A contestant's colour, and a dash pattern once the palette has been used up.
fn colour_of(contestants: &[&str], name: &str) -> (&'static str, Option<&'static str>) {
    let i = contestants.iter().position(|c| *c == name).unwrap_or(0);
    (PALETTE[i % PALETTE.len()], (i >= PALETTE.len()).then_some("7 4"))
}

/// Every chart of the page, in page order.
fn charts(results: &LabResults, contestants: &[&str], top: Option<f64>) -> Vec<LineChart> {
    let line = |name: &str, points: Vec<Option<(f64, f64)>>| {
        let (colour, dash) = colour_of(contestants, name);
        Line { label: name.to_owned(), colour, dash, points }
    };

    // Goodput against offered load: every run, one line per contestant.
    let goodput = contestants
        .iter()
        .map(|&c| {
            let mut points: Vec<(f64, f64)> = results
                .runs
                .iter()
                .filter(|r| r.contestant == c)
                .map(|r| (r.load_multiple, r.goodput_fraction(results.capacity_per_s) * 100.0))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            line(c, points.into_iter().map(Some).collect())
        })
        .collect();

    // At the highest load: the first run of each contestant there.
    let at_top: Vec<&Run> = contestants
        .iter()
        .filter_map(|&c| results.runs.iter().find(|r| r.contestant == c && Some(r.load_multiple) == top))
        .collect();
    let per_second = |f: &dyn Fn(&crate::load::SecondReport) -> Option<f64>| -> Vec<Line> {
        at_top
            .iter()
            .map(|r| {
                line(
                    &r.contestant,
                    r.load.series.iter().map(|s| f(s).map(|y| (s.second as f64, y))).collect(),
                )
            })
            .collect()
    };
    let per_sample = |f: &dyn Fn(&super::Sample) -> f64| -> Vec<Line> {
        at_top
            .iter()
            .map(|r| line(&r.contestant, r.samples.iter().map(|s| Some((s.second as f64, f(s)))).collect()))
            .collect()
    };
    let at = top.map_or_else(String::new, |l| format!(" at {}× capacity", format_load(l)));
    let time = "time (s)";

    vec![
        LineChart {
            name: "goodput",
            title: "Goodput against offered load".to_owned(),
            x_label: "offered load (× capacity)",
            y_label: "goodput (% of capacity)",
            lines: goodput,
            markers: true,
            reference: Some((100.0, "capacity")),
        },
        LineChart {
            name: "p50",
            title: format!("Median latency of ok answers{at}"),
            x_label: time,
            y_label: "p50 (ms)",
            // A second with no ok answer has no latency: a gap, not a zero.
            lines: per_second(&|s| (s.counts.ok > 0).then_some(s.p50_ms)),
            markers: false,
            reference: None,
        },
        LineChart {
            name: "p99",
            title: format!("99th percentile latency of ok answers{at}"),
            x_label: time,
            y_label: "p99 (ms)",
            lines: per_second(&|s| (s.counts.ok > 0).then_some(s.p99_ms)),
            markers: false,
            reference: None,
        },
        LineChart {
            name: "backend-queue",
            title: format!("Requests waiting in the backend{at}"),
            x_label: time,
            y_label: "backend queue (requests)",
            lines: per_sample(&|s| s.backend_waiting as f64),
            markers: false,
            reference: None,
        },
        LineChart {
            name: "proxy-queue",
            title: format!("Requests waiting in the proxy{at}"),
            x_label: time,
            y_label: "proxy queue (requests)",
            lines: per_sample(&|s| s.proxy_queue as f64),
            markers: false,
            reference: None,
        },
        LineChart {
            name: "rejections",
            title: format!("Rejections (429, 503, 504, other){at}"),
            x_label: time,
            y_label: "rejections / s",
            lines: per_second(&|s| Some(s.counts.rejected() as f64)),
            markers: false,
            reference: None,
        },
        LineChart {
            name: "memory",
            title: format!("Backend resident memory{at}"),
            x_label: time,
            y_label: "RSS (MiB)",
            lines: per_sample(&|s| s.backend_rss_bytes as f64 / MIB),
            markers: false,
            reference: None,
        },
    ]
}

/// Escapes text for HTML (element content and quoted attribute values alike).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A small SVG line chart.

/// One line of a chart. `None` points (and non-finite values) are gaps: the line breaks there.
#[derive(Debug)]
struct Line {
    label: String,
    colour: &'static str,
    dash: Option<&'static str>,
    points: Vec<Option<(f64, f64)>>,
}

/// A line chart: title, two labelled axes with a handful of ticks, a legend, a polyline per
/// unbroken stretch of each line.
#[derive(Debug)]
struct LineChart {
    /// The `data-chart` attribute.
    name: &'static str,
    title: String,
    x_label: &'static str,
    y_label: &'static str,
    lines: Vec<Line>,
    /// Mark every point with a dot (isolated points are always marked).
    markers: bool,
    /// A dashed horizontal line at this y, with its label.
    reference: Option<(f64, &'static str)>,
}

// The SVG's coordinate system (it scales to its container).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = WIDTH - 180.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = HEIGHT - 52.0;

impl LineChart {
    fn finite_points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.lines
            .iter()
            .flat_map(|l| l.points.iter().flatten().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    }

    fn write_svg(&self, out: &mut impl Write) -> io::Result<()> {
        let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (0.0_f64, 0.0_f64, 0.0_f64, 0.0_f64);
        let mut any = false;
        for (x, y) in self.finite_points() {
            any = true;
            (x_lo, x_hi, y_lo, y_hi) = (x_lo.min(x), x_hi.max(x), y_lo.min(y), y_hi.max(y));
        }
        if let Some((y, _)) = self.reference.filter(|(y, _)| y.is_finite()) {
            (y_lo, y_hi) = (y_lo.min(y), y_hi.max(y));
        }
        let xa = Axis::new(x_lo, x_hi);
        let ya = Axis::new(y_lo, y_hi);
        let px = |x: f64| LEFT + xa.fraction(x) * (RIGHT - LEFT);
        let py = |y: f64| BOTTOM - ya.fraction(y) * (BOTTOM - TOP);

        writeln!(
            out,
            "<svg class=\"chart\" data-chart=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\">",
            self.name
        )?;
        let title = escape(&self.title);
        writeln!(out, "<title>{title}</title>")?;
        writeln!(out, "<text class=\"title\" x=\"{LEFT}\" y=\"24\">{title}</text>")?;

        // Grid and ticks.
        for t in ya.ticks() {
            let y = py(t);
            writeln!(out, "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{RIGHT}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>")?;
            writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT - 6.0,
                y + 4.0,
                ya.label(t)
            )?;
        }
        for t in xa.ticks() {
            let x = px(t);
            writeln!(
                out,
                "<line class=\"axis\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{BOTTOM}\" y2=\"{:.1}\"/>",
                BOTTOM + 5.0
            )?;
            writeln!(
                out,
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                BOTTOM + 19.0,
                xa.label(t)
            )?;
        }
        writeln!(out, "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{RIGHT}\" y1=\"{BOTTOM}\" y2=\"{BOTTOM}\"/>")?;
        writeln!(out, "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{BOTTOM}\"/>")?;
        writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            (LEFT + RIGHT) / 2.0,
            HEIGHT - 12.0,
            escape(self.x_label)
        )?;
        writeln!(
            out,
            "<text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            (TOP + BOTTOM) / 2.0,
            escape(self.y_label)
        )?;

        if let Some((y, label)) = self.reference.filter(|(y, _)| y.is_finite()) {
            let y = py(y);
            writeln!(
                out,
                "<line x1=\"{LEFT}\" x2=\"{RIGHT}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#888\" \
                 stroke-dasharray=\"4 4\"/>"
            )?;
            writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#777\">{}</text>",
                RIGHT - 4.0,
                y - 5.0,
                escape(label)
            )?;
        }

        if !any {
            writeln!(
                out,
                "<text class=\"empty\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no data</text>",
                (LEFT + RIGHT) / 2.0,
                (TOP + BOTTOM) / 2.0
            )?;
        }

        // The lines: one polyline per unbroken stretch; dots where asked or where a point stands alone.
        for line in &self.lines {
            let dash = line.dash.map_or_else(String::new, |d| format!(" stroke-dasharray=\"{d}\""));
            writeln!(out, "<g class=\"line\" data-label=\"{}\">", escape(&line.label))?;
            let stretches = line.points.split(|p| !p.is_some_and(|(x, y)| x.is_finite() && y.is_finite()));
            for stretch in stretches.filter(|s| !s.is_empty()) {
                let coords: Vec<(f64, f64)> =
                    stretch.iter().flatten().map(|&(x, y)| (px(x), py(y))).collect();
                if coords.len() > 1 {
                    write!(
                        out,
                        "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-linejoin=\"round\"{dash} points=\"",
                        line.colour
                    )?;
                    for (i, (x, y)) in coords.iter().enumerate() {
                        write!(out, "{}{x:.1},{y:.1}", if i == 0 { "" } else { " " })?;
                    }
                    writeln!(out, "\"/>")?;
                }
                if self.markers || coords.len() == 1 {
                    for (x, y) in &coords {
                        writeln!(
                            out,
                            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{}\"/>",
                            line.colour
                        )?;
                    }
                }
            }
            writeln!(out, "</g>")?;
        }

        // The legend, right of the plot.
        for (i, line) in self.lines.iter().enumerate() {
            let y = TOP + 8.0 + i as f64 * 20.0;
            if y > BOTTOM {
                break;
            }
            let dash = line.dash.map_or_else(String::new, |d| format!(" stroke-dasharray=\"{d}\""));
            writeln!(
                out,
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{}\" stroke-width=\"3\"{dash}/>",
                RIGHT + 16.0,
                RIGHT + 40.0,
                line.colour
            )?;
            writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                RIGHT + 46.0,
                y + 4.0,
                escape(&shorten(&line.label, 18))
            )?;
        }
        writeln!(out, "</svg>")
    }
}

/// At most `n` characters, with an ellipsis when cut.
fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_owned() } else { s.chars().take(n - 1).chain(['…']).collect() }
}

/// A linear axis over `[min, max]` (always `min < max`, both finite) with ticks every `step`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Axis {
    min: f64,
    max: f64,
    step: f64,
}

impl Axis {
    /// The default when the data give nothing usable.
    const UNIT: Axis = Axis { min: 0.0, max: 1.0, step: 0.2 };

    /// An axis covering `lo..=hi` and zero, widened to whole ticks (about five of them). A zero
    /// range (one value, or nothing) is widened so that the axis still has length.
    fn new(lo: f64, hi: f64) -> Self {
        if !(lo.is_finite() && hi.is_finite()) || lo > hi {
            return Self::UNIT;
        }
        let (mut lo, mut hi) = (lo.min(0.0), hi.max(0.0));
        if hi - lo <= f64::EPSILON * hi.abs().max(lo.abs()).max(1.0) {
            // Only zero (lo and hi both include it): a unit axis.
            (lo, hi) = (lo, lo + 1.0);
        }
        let range = hi - lo;
        if !range.is_finite() {
            return Self::UNIT;
        }
        let step = nice_step(range / 5.0);
        let (min, max) = ((lo / step).floor() * step, (hi / step).ceil() * step);
        let axis = Axis { min, max, step };
        if [min, max, step].iter().all(|v| v.is_finite())
            && max > min
            && step > 0.0
            && axis.tick_count() <= 20
        {
            axis
        } else {
            Self::UNIT
        }
    }

    fn tick_count(&self) -> usize {
        ((self.max - self.min) / self.step).round() as usize + 1
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        (0..self.tick_count()).map(|i| self.min + i as f64 * self.step)
    }

    /// Where `v` falls, 0 at `min` and 1 at `max`.
    fn fraction(&self, v: f64) -> f64 {
        (v - self.min) / (self.max - self.min)
    }

    /// A tick label with as many decimals as the step needs.
    fn label(&self, v: f64) -> String {
        let decimals = (-self.step.log10().floor()).clamp(0.0, 6.0) as usize;
        let v = if v.abs() < self.step * 1e-9 { 0.0 } else { v };
        format!("{v:.decimals$}")
    }
}

/// The smallest of 1, 2, 2.5, 5 or 10 times a power of ten that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalised = raw / magnitude;
    let nice = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().find(|&n| normalised <= n).unwrap_or(10.0);
    nice * magnitude
}

// ---------------------------------------------------------------------------------------------
// Made-up results, to try the report without running the lab.

/// Made-up but plausible results: three contestants (`unprotected`, `static`, `gradient2`) at
/// 1× and 4× capacity, ten seconds each, for trying the report, its tests and the browser test
/// without running the lab.
///
/// ```
/// let r = spillway_lab::lab::report::sample_results();
/// assert_eq!(r.runs.len(), 6);
/// ```
pub fn sample_results() -> LabResults {
    use super::results::Sample;
    use crate::load::{Counts, Latency, LoadReport, SecondReport};

    let (pool, service_ms, deadline_ms, seconds) = (8_usize, 20_u64, 1000_u64, 10_u64);
    let capacity = pool as f64 * 1000.0 / service_ms as f64;
    let mut runs = Vec::new();
    for load in [1.0_f64, 4.0] {
        for (k, contestant) in ["unprotected", "static", "gradient2"].into_iter().enumerate() {
            let offered = (capacity * load) as u64;
            let mut series = Vec::new();
            let mut samples = Vec::new();
            let mut totals = Counts::default();
            for s in 0..seconds {
                let t = s as f64;
                // A little deterministic wobble so the lines do not sit on each other.
                let wobble = ((t * 1.7 + k as f64).sin() + 1.0) / 2.0;
                let overloaded = load > 1.0;
                let (ok, rejected, late, p50, p99, waiting, queue) = match (contestant, overloaded) {
                    (_, false) => {
                        let ok = offered - 2 + (wobble * 4.0) as u64;
                        (
                            ok.min(offered),
                            0,
                            0,
                            21.0 + wobble * 2.0,
                            38.0 + wobble * 8.0,
                            (wobble * 3.0) as u64,
                            0,
                        )
                    }
                    ("unprotected", true) => {
                        // The queue grows without bound; answers arrive after the deadline.
                        let ok = if s < 2 { capacity as u64 / (s + 1) } else { 10 + (wobble * 20.0) as u64 };
                        let latency = (150.0 + t * 120.0).min(990.0);
                        (ok, 0, offered - ok, latency * 0.8, latency, (t + 1.0) as u64 * 1200, 0)
                    }
                    (_, true) => {
                        let ok = (capacity * (0.93 + 0.04 * wobble)) as u64 - k as u64 * 3;
                        (
                            ok,
                            offered - ok,
                            0,
                            24.0 + wobble * 3.0,
                            60.0 + wobble * 25.0 + k as f64 * 10.0,
                            8,
                            16 + (wobble * 16.0) as u64,
                        )
                    }
                };
                let counts = Counts {
                    offered,
                    sent: offered,
                    ok,
                    rejected_503: rejected,
                    late,
                    with_retry_after: rejected,
                    ..Counts::default()
                };
                totals.add(&counts);
                series.push(SecondReport { second: s, counts, p50_ms: p50, p99_ms: p99 });
                let rss_mib = 40.0 + waiting as f64 * 0.01 + wobble;
                samples.push(Sample {
                    second: s,
                    backend_waiting: waiting,
                    backend_rss_bytes: (rss_mib * MIB) as u64,
                    proxy_queue: queue,
                    proxy_limit: if contestant == "unprotected" { 0 } else { pool as u64 },
                });
            }
            let p = |f: fn(&SecondReport) -> f64| {
                let mut v: Vec<f64> = series.iter().map(f).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let ok_latency = Latency {
                count: totals.ok,
                p50_ms: p(|s| s.p50_ms),
                p90_ms: p(|s| s.p99_ms) * 0.8,
                p99_ms: series.iter().map(|s| s.p99_ms).fold(0.0, f64::max),
                max_ms: series.iter().map(|s| s.p99_ms).fold(0.0, f64::max) * 1.2,
            };
            let rejected = totals.rejected();
            let rejection_latency = Latency {
                count: rejected,
                p50_ms: if rejected > 0 { 0.4 } else { 0.0 },
                p90_ms: if rejected > 0 { 0.9 } else { 0.0 },
                p99_ms: if rejected > 0 { 1.8 + k as f64 * 0.3 } else { 0.0 },
                max_ms: if rejected > 0 { 6.0 } else { 0.0 },
            };
            runs.push(Run {
                contestant: contestant.to_owned(),
                load_multiple: load,
                load: LoadReport {
                    rate: capacity * load,
                    duration_s: seconds as f64,
                    deadline_ms,
                    totals,
                    goodput_per_s: totals.ok as f64 / seconds as f64,
                    ok_latency,
                    rejection_latency,
                    series,
                    ..LoadReport::default()
                },
                samples,
            });
        }
    }
    LabResults {
        scenario: "sample".to_owned(),
        pool,
        service_ms,
        capacity_per_s: capacity,
        deadline_ms,
        seconds,
        runs,
        queue: Some(sample_queue()),
    }
}

/// A plausible queue section for [`sample_results`]: the unbounded consumer's lag grows by the
/// overload each second; flow control's stays under its threshold plus a batch.
fn sample_queue() -> QueueResults {
    let (rate, capacity, payload) = (4000.0, 2000.0, 1024usize);
    let run = |contestant: &str, bounded: bool| {
        let samples: Vec<QueueSample> = (1..=20)
            .map(|i| {
                let t = f64::from(i) * 0.25;
                let backlog = ((rate - capacity) * t) as u64;
                let lag = if bounded { 40 + (i % 5) as u64 * 10 } else { backlog };
                QueueSample {
                    t,
                    lag,
                    lag_bytes: lag * payload as u64,
                    processed_per_s: capacity * 0.98,
                    broker_pending: if bounded { backlog } else { 0 },
                }
            })
            .collect();
        let peak_lag = samples.iter().map(|s| s.lag).max().unwrap_or(0);
        QueueRun {
            contestant: contestant.to_owned(),
            processed: 9800,
            throughput_per_s: capacity * 0.98,
            peak_lag,
            peak_lag_bytes: peak_lag * payload as u64,
            final_lag: samples.last().map_or(0, |s| s.lag),
            pauses: if bounded { 120 } else { 0 },
            samples,
        }
    };
    QueueResults {
        publish_rate: rate,
        capacity_per_s: capacity,
        handlers: 8,
        service_ms: 4,
        payload_bytes: payload,
        seconds: 5,
        runs: vec![run("unbounded", false), run("flow control", true)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(r: &LabResults) -> String {
        let mut out = Vec::new();
        write_html(r, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn axes_have_length_and_whole_ticks() {
        let a = Axis::new(0.0, 0.0);
        assert_eq!((a.min, a.max), (0.0, 1.0));
        let a = Axis::new(7.0, 7.0);
        assert!(a.min <= 0.0 && a.max >= 7.0 && a.max > a.min);
        let a = Axis::new(-3.0, -3.0);
        assert!(a.min <= -3.0 && a.max >= 0.0);
        let a = Axis::new(0.0, 97.0);
        assert_eq!((a.min, a.max, a.step), (0.0, 100.0, 20.0));
        let a = Axis::new(1.0, 4.0);
        assert_eq!((a.min, a.max, a.step), (0.0, 4.0, 1.0));
        assert_eq!(a.ticks().collect::<Vec<_>>(), [0.0, 1.0, 2.0, 3.0, 4.0]);
        for (lo, hi) in [(f64::NAN, 1.0), (0.0, f64::INFINITY), (5.0, 1.0), (-f64::MAX, f64::MAX)] {
            assert_eq!(Axis::new(lo, hi), Axis::UNIT, "{lo} {hi}");
        }
        let a = Axis::new(0.0, 1e-300);
        assert!(a.ticks().all(f64::is_finite) && a.max > a.min);
    }

    #[test]
    fn tick_labels_use_the_decimals_the_step_needs() {
        let a = Axis::new(0.0, 0.9);
        assert_eq!(a.label(0.2), "0.2");
        let a = Axis::new(0.0, 1200.0);
        assert_eq!(
            a.ticks().map(|t| a.label(t)).collect::<Vec<_>>(),
            ["0", "250", "500", "750", "1000", "1250"]
        );
    }

    #[test]
    fn escapes_html() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn loads_print_without_trailing_zeros() {
        assert_eq!(format_load(4.0), "4");
        assert_eq!(format_load(1.5), "1.5");
        assert_eq!(format_load(0.75), "0.75");
        assert_eq!(format_load(f64::NAN), "-");
    }

    #[test]
    fn gaps_break_lines_and_lone_points_get_a_dot() {
        let chart = LineChart {
            name: "t",
            title: "t".into(),
            x_label: "x",
            y_label: "y",
            lines: vec![Line {
                label: "a".into(),
                colour: "#000",
                dash: None,
                points: vec![
                    Some((0.0, 1.0)),
                    Some((1.0, 2.0)),
                    None,
                    Some((3.0, 1.0)),
                    Some((4.0, f64::NAN)),
                ],
            }],
            markers: false,
            reference: None,
        };
        let mut out = Vec::new();
        chart.write_svg(&mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn non_finite_and_empty_series_render_without_nan() {
        let mut r = sample_results();
        r.runs[0].load.series.clear();
        r.runs[0].samples.clear();
        r.runs[1].load_multiple = f64::NAN;
        r.runs[2].load.series[3].p99_ms = f64::INFINITY;
        r.runs[2].load.goodput_per_s = f64::NAN;
        r.capacity_per_s = 0.0;
        let page = html(&r);
        assert!(!page.contains("NaN") && !page.contains("inf"), "{page}");
    }
}
