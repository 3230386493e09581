//! The lab report through its public API: every chart drawn, numbers that are numbers, every
//! contestant in the table, names escaped, and empty results rendered.

use spillway_lab::lab::report::{CHART_NAMES, QUEUE_CHART_NAMES, sample_results, write_html, write_table};
use spillway_lab::lab::{LabResults, Run};

fn html(r: &LabResults) -> String {
    let mut out = Vec::new();
    write_html(r, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn table(r: &LabResults) -> String {
    let mut out = Vec::new();
    write_table(r, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// No NaN or infinity leaked into a coordinate, a label or a cell.
fn assert_finite(s: &str) {
    for bad in ["NaN", "inf"] {
        assert!(!s.contains(bad), "{bad:?} in:\n{s}");
    }
}

#[test]
fn three_contestants_two_loads_ten_seconds() {
    let r = sample_results();
    assert_eq!(r.runs.len(), 6);
    assert!(r.runs.iter().all(|run| run.load.series.len() == 10 && run.samples.len() == 10));

    let page = html(&r);
    assert!(page.starts_with("<!DOCTYPE html>"));
    // The seven HTTP charts and the message-queue section's three.
    assert_eq!(page.matches("data-chart=").count(), 10);
    assert_eq!(page.matches("<svg class=\"chart\"").count(), 10);
    for name in CHART_NAMES.iter().chain(&QUEUE_CHART_NAMES) {
        assert!(page.contains(&format!("data-chart=\"{name}\"")), "{name}");
    }
    // Every chart has a line for each contestant (the goodput one across both loads).
    assert!(page.matches("<polyline").count() >= 7 * 3);
    assert_finite(&page);
    // Self-contained: nothing fetched, nothing run.
    for external in ["<script", "<link", "src=", "@import", "url("] {
        assert!(!page.contains(external), "{external}");
    }
    // One table row per run, and one per queue consumer.
    assert_eq!(page.matches("<td class=\"who\">").count(), 6 + 2);
    assert!(page.contains("Message queue") && page.contains("flow control"));

    let text = table(&r);
    assert_finite(&text);
    for c in ["unprotected", "static", "gradient2"] {
        assert_eq!(text.matches(c).count(), 2, "{c} once per load:\n{text}");
        assert!(page.contains(c));
    }
    // Aligned: every row of the table as wide as the rule under the header, or narrower only by
    // trailing spaces trimmed away (right-aligned numbers end every row).
    // (The message-queue table follows after an empty line.)
    let lines: Vec<&str> = text.lines().skip(2).take_while(|l| !l.is_empty()).collect();
    assert!(text.contains("message queue:") && text.contains("flow control"), "{text}");
    let width = lines[1].chars().count();
    assert!(lines.iter().all(|l| l.chars().count() == width), "{text}");
}

#[test]
fn contestant_names_are_escaped() {
    let mut r = sample_results();
    r.runs[0].contestant = "<script>alert('x')</script> & co".to_owned();
    r.scenario = "\"quoted\"".to_owned();
    let page = html(&r);
    assert!(!page.contains("<script"));
    assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co"));
    assert!(!page.contains("\"quoted\""));
}

#[test]
fn empty_results_render() {
    let r = LabResults::default();
    let page = html(&r);
    assert_eq!(page.matches("data-chart=").count(), 7);
    assert_finite(&page);
    assert!(page.contains("no runs"));
    assert!(page.contains("no data"));
    let text = table(&r);
    assert_finite(&text);
    assert!(text.contains("(no runs)"));
}

#[test]
fn runs_without_series_or_samples_render() {
    let mut r = sample_results();
    r.runs.push(Run { contestant: "haproxy".into(), load_multiple: 4.0, ..Run::default() });
    r.runs.push(Run { contestant: "flat".into(), load_multiple: 8.0, ..Run::default() });
    let page = html(&r);
    assert_finite(&page);
    // At 8× only "flat" ran, with an all-zero goodput and nothing per second.
    assert!(page.contains("at 8× capacity"));
    assert!(table(&r).contains("haproxy"));
}
