//! The page: HTML with inline CSS and hand-written SVG charts (a few line and bar charts and a
//! heat map need no plotting crate). Pure: the same [`ReportData`] gives the same bytes.
//!
//! Every label and text goes through [`escape`]. Charts carry `data-chart` and `data-series`
//! attributes and one element per series (`polyline.series`), bar (`rect.bar`) or cell
//! (`rect.cell`), so tests and browsers can count what was drawn.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::inputs::{ClassRow, Example, ReportData};

/// Classes drawn in the heat map; the rest are listed in a table.
pub const HEATMAP_CLASSES: usize = 30;
/// Classes drawn as F1 bars (the weakest); every class is in the table below them.
pub const BAR_CLASSES: usize = 50;
/// Confused pairs listed, and example texts shown per pair.
pub const TOP_PAIRS: usize = 15;
const EXAMPLES_PER_PAIR: usize = 3;

const PALETTE: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1240px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:16px}.note{color:#666;font-size:.85em}
svg{background:#fff;border:1px solid #eee;margin:4px 0}svg text{font-size:11px;fill:#333}
.axis{stroke:#999;stroke-width:1}.gridline{stroke:#eee;stroke-width:1}
.series{fill:none;stroke-width:2}ul.ex{margin:2px 0 8px 0;padding-left:20px;font-size:.85em}
details{margin:8px 0}summary{cursor:pointer;color:#1f4e79}code{background:#f4f4f4;padding:0 3px}";

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The whole page.
pub fn render(data: &ReportData) -> String {
    let mut html = String::new();
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    html.push_str("<title>txcat training report</title>\n<style>\n");
    html.push_str(CSS);
    html.push_str("\n</style>\n</head>\n<body>\n<h1>txcat training report</h1>\n");
    let _ = writeln!(
        html,
        "<p class=\"note\">{} labels, {} evaluation rows. Built from the job's output files (metrics.json, run_summary.json, log_history.json, eval_examples.json); rebuild with <code>txcat report --output-dir DIR</code>.</p>",
        data.classes.len(),
        data.classes.iter().map(|c| c.support).sum::<u64>()
    );
    section_run(&mut html, data);
    section_scores(&mut html, data);
    section_training(&mut html, data);
    section_evaluations(&mut html, data);
    section_classes(&mut html, data);
    section_confusion(&mut html, data);
    html.push_str("</body>\n</html>\n");
    html
}

/// A number for a table: integers bare, small magnitudes in scientific notation.
fn num(v: f64) -> String {
    if !v.is_finite() {
        format!("{v}")
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.3e}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), num),
        serde_json::Value::Null => "—".into(),
        other => other.to_string(),
    }
}

fn kv_table(html: &mut String, rows: &[(String, String)]) {
    html.push_str("<table>\n");
    for (k, v) in rows {
        let _ = writeln!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(v)
        );
    }
    html.push_str("</table>\n");
}

/// Run summary keys in reading order, with their captions.
const RUN_KEYS: [(&str, &str); 16] = [
    ("train_rows", "training rows"),
    ("eval_rows", "evaluation rows"),
    ("device", "device"),
    ("precision", "precision"),
    ("stop_reason", "stop reason"),
    ("global_steps", "optimizer steps"),
    ("train_loss", "mean training loss"),
    ("train_runtime_seconds", "training seconds"),
    ("train_samples_per_second", "samples / s (whole run)"),
    ("train_steady_samples_per_second", "samples / s (steady)"),
    (
        "train_steady_real_tokens_per_second",
        "real tokens / s (steady)",
    ),
    (
        "padding_efficiency",
        "padding efficiency (real / padded tokens)",
    ),
    ("read_seconds", "reading seconds"),
    ("tokenize_seconds", "tokenizing seconds"),
    ("preprocess_seconds", "preprocessing seconds"),
    ("total_seconds", "total seconds"),
];

fn section_run(html: &mut String, data: &ReportData) {
    html.push_str("<h2>Run</h2>\n<div class=\"grid\">\n<div>\n");
    let mut rows = Vec::new();
    if let Some(model) = &data.log.model {
        rows.push(("model".to_string(), model.clone()));
    }
    rows.push(("labels".into(), data.classes.len().to_string()));
    for (key, caption) in RUN_KEYS {
        if let Some(v) = data.run.get(key) {
            rows.push((caption.to_string(), json_text(v)));
        }
    }
    if let Some(best) = data.run.get("best").and_then(|b| b.as_object()) {
        let get = |k: &str| best.get(k).map(json_text).unwrap_or_default();
        rows.push((
            "best evaluation".into(),
            format!(
                "{} = {} at step {}",
                get("metric"),
                get("value"),
                get("step")
            ),
        ));
    }
    if let Some(v) = data.run.get("restored_best") {
        rows.push(("best weights restored".into(), json_text(v)));
    }
    kv_table(html, &rows);
    html.push_str("</div>\n");
    let hp = &data.log.hyperparameters;
    if !hp.is_empty() {
        html.push_str("<div>\n");
        let key: Vec<(String, String)> = KEY_SETTINGS
            .iter()
            .filter_map(|k| hp.get(*k).map(|v| (k.to_string(), json_text(v))))
            .collect();
        kv_table(html, &key);
        html.push_str("</div>\n");
    }
    html.push_str("</div>\n");
    if !hp.is_empty() {
        let _ = writeln!(
            html,
            "<details><summary>All {} hyperparameters</summary>",
            hp.len()
        );
        let all: Vec<(String, String)> =
            hp.iter().map(|(k, v)| (k.clone(), json_text(v))).collect();
        kv_table(html, &all);
        html.push_str("</details>\n");
    }
}

/// The hyperparameters shown beside the run; the rest are one click away.
const KEY_SETTINGS: [&str; 10] = [
    "epochs",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "weight_decay",
    "train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "metric_for_best_model",
    "seed",
];

/// The encoder's final scores beside every other model scored on the same rows.
fn section_scores(html: &mut String, data: &ReportData) {
    html.push_str("<h2>Final evaluation</h2>\n<table>\n<tr><th>metric</th><th>encoder</th>");
    for block in &data.side {
        let _ = write!(html, "<th>{}</th>", escape(&block.key));
    }
    html.push_str("</tr>\n");
    for (name, value) in &data.final_scalars {
        let _ = write!(
            html,
            "<tr><th>{}</th><td class=\"num\">{}</td>",
            escape(name),
            num(*value)
        );
        for block in &data.side {
            let cell = block.scalars.get(name).map(|v| num(*v)).unwrap_or_default();
            let _ = write!(html, "<td class=\"num\">{cell}</td>");
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
    for block in &data.side {
        if let Some(model) = &block.model {
            let _ = writeln!(
                html,
                "<p class=\"note\"><b>{}</b>: {}</p>",
                escape(&block.key),
                escape(model)
            );
        }
        if let Some(error) = &block.error {
            let _ = writeln!(
                html,
                "<p class=\"note\"><b>{}</b> was not scored: {}</p>",
                escape(&block.key),
                escape(error)
            );
        }
    }
}

fn section_training(html: &mut String, data: &ReportData) {
    html.push_str("<h2>Training</h2>\n");
    let log = &data.log.log_history;
    if log.is_empty() {
        html.push_str(
            "<p class=\"note\">No training log (log_history.json is missing or empty).</p>\n",
        );
        return;
    }
    let loss: Vec<(f64, f64)> = log.iter().map(|r| (r.step as f64, r.loss)).collect();
    let lr: Vec<(f64, f64)> = log
        .iter()
        .map(|r| (r.step as f64, r.learning_rate))
        .collect();
    html.push_str("<div class=\"grid\">\n");
    html.push_str(&line_chart(
        "loss",
        "Training loss by step",
        &[Series {
            name: "loss",
            points: loss,
        }],
    ));
    html.push_str(&line_chart(
        "learning_rate",
        "Learning rate by step",
        &[Series {
            name: "learning_rate",
            points: lr,
        }],
    ));
    html.push_str("</div>\n");
}

/// Evaluation scores (0..1) in one chart, the loss in another.
fn section_evaluations(html: &mut String, data: &ReportData) {
    html.push_str("<h2>Evaluations</h2>\n");
    if data.history.is_empty() {
        html.push_str("<p class=\"note\">No evaluation during training.</p>\n");
        return;
    }
    let series_of = |name: &'static str| Series {
        name,
        points: data
            .history
            .iter()
            .filter_map(|e| e.metrics.get(name).map(|v| (e.step as f64, *v)))
            .collect(),
    };
    let scores: Vec<Series> = ["eval_accuracy", "eval_f1_macro", "eval_f1_weighted"]
        .into_iter()
        .map(series_of)
        .filter(|s| !s.points.is_empty())
        .collect();
    let loss: Vec<Series> = [series_of("eval_loss")]
        .into_iter()
        .filter(|s| !s.points.is_empty())
        .collect();
    html.push_str("<div class=\"grid\">\n");
    if !scores.is_empty() {
        html.push_str(&line_chart(
            "eval_scores",
            "Evaluation scores by step",
            &scores,
        ));
    }
    if !loss.is_empty() {
        html.push_str(&line_chart("eval_loss", "Evaluation loss by step", &loss));
    }
    html.push_str("</div>\n<table>\n<tr><th>step</th><th>epoch</th>");
    let names: Vec<&str> = HISTORY_COLUMNS
        .into_iter()
        .filter(|n| data.history.iter().any(|e| e.metrics.contains_key(*n)))
        .collect();
    for n in &names {
        let _ = write!(html, "<th>{}</th>", escape(n));
    }
    html.push_str("</tr>\n");
    for e in &data.history {
        let _ = write!(
            html,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td>",
            e.step,
            num(e.epoch)
        );
        for n in &names {
            let cell = e.metrics.get(*n).map(|v| num(*v)).unwrap_or_default();
            let _ = write!(html, "<td class=\"num\">{cell}</td>");
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
}

/// Columns of the evaluation table (every scalar of the last one is in the final table).
const HISTORY_COLUMNS: [&str; 6] = [
    "eval_loss",
    "eval_accuracy",
    "eval_f1_macro",
    "eval_f1_weighted",
    "eval_precision_macro",
    "eval_recall_macro",
];

fn section_classes(html: &mut String, data: &ReportData) {
    html.push_str("<h2>Per class</h2>\n");
    if data.classes.is_empty() {
        return;
    }
    let mut order: Vec<usize> = (0..data.classes.len()).collect();
    // Weakest first; ties by support (more rows first), then label.
    order.sort_by(|&a, &b| {
        let (ca, cb) = (&data.classes[a], &data.classes[b]);
        ca.f1
            .total_cmp(&cb.f1)
            .then(cb.support.cmp(&ca.support))
            .then(ca.label.cmp(&cb.label))
    });
    let shown = &order[..order.len().min(BAR_CLASSES)];
    if shown.len() < order.len() {
        let _ = writeln!(
            html,
            "<p class=\"note\">The {} weakest of {} classes by F1; every class is in the table below.</p>",
            shown.len(),
            order.len()
        );
    }
    html.push_str(&class_bars(&data.classes, shown));
    let _ = writeln!(
        html,
        "<details><summary>All {} classes (F1, precision, recall, support)</summary>\n<table>\n<tr><th>label</th><th>F1</th><th>precision</th><th>recall</th><th>support</th></tr>",
        order.len()
    );
    for &c in &order {
        let r = &data.classes[c];
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&r.label),
            num(r.f1),
            num(r.precision),
            num(r.recall),
            r.support
        );
    }
    html.push_str("</table>\n</details>\n");
}

/// An off-diagonal cell of the confusion matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    pub truth: usize,
    pub predicted: usize,
    pub count: u64,
}

/// Off-diagonal cells with a count, largest first (ties by class ids).
pub fn confused_pairs(confusion: &[Vec<u64>]) -> Vec<Pair> {
    let mut pairs: Vec<Pair> = confusion
        .iter()
        .enumerate()
        .flat_map(|(t, row)| {
            row.iter()
                .enumerate()
                .filter(move |&(p, &n)| p != t && n > 0)
                .map(move |(p, &n)| Pair {
                    truth: t,
                    predicted: p,
                    count: n,
                })
        })
        .collect();
    pairs.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.truth.cmp(&b.truth))
            .then(a.predicted.cmp(&b.predicted))
    });
    pairs
}

/// The classes of the heat map, ordered so confused classes sit together: the `limit` classes
/// with the most confusion mass (errors made plus errors received), then greedily, each next
/// class the one most confused (both ways) with the last placed; with none, the heaviest left.
pub fn heatmap_order(confusion: &[Vec<u64>], limit: usize) -> Vec<usize> {
    let n = confusion.len();
    let mass: Vec<u64> = (0..n)
        .map(|c| {
            (0..n)
                .filter(|&o| o != c)
                .map(|o| confusion[c][o] + confusion[o][c])
                .sum()
        })
        .collect();
    let mut chosen: Vec<usize> = (0..n).collect();
    chosen.sort_by(|&a, &b| mass[b].cmp(&mass[a]).then(a.cmp(&b)));
    chosen.truncate(limit);
    let mut left = chosen;
    let mut order: Vec<usize> = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let next = match order.last() {
            Some(&last) => {
                let link = |c: usize| confusion[last][c] + confusion[c][last];
                // Ties: the heavier class, then the lower id.
                let best = left.iter().copied().max_by(|&a, &b| {
                    link(a)
                        .cmp(&link(b))
                        .then(mass[a].cmp(&mass[b]))
                        .then(b.cmp(&a))
                });
                match best {
                    Some(c) if link(c) > 0 => c,
                    _ => left[0],
                }
            }
            None => left[0],
        };
        left.retain(|&c| c != next);
        order.push(next);
    }
    order
}

fn section_confusion(html: &mut String, data: &ReportData) {
    html.push_str("<h2>Confusions</h2>\n");
    let n = data.classes.len();
    if n == 0 {
        return;
    }
    let order = heatmap_order(&data.confusion, HEATMAP_CLASSES);
    if order.len() < n {
        let _ = writeln!(
            html,
            "<p class=\"note\">The heat map shows the {} of {} classes with the most confusion; the others are in the table below it.</p>",
            order.len(),
            n
        );
    }
    html.push_str(&heatmap(data, &order));

    let pairs = confused_pairs(&data.confusion);
    html.push_str("<h3>Most confused pairs</h3>\n");
    if pairs.is_empty() {
        html.push_str(
            "<p class=\"note\">No confusions: every evaluation row was predicted correctly.</p>\n",
        );
    } else {
        let mut examples: BTreeMap<(&str, &str), Vec<&Example>> = BTreeMap::new();
        if let Some(ex) = &data.examples {
            for e in &ex.misclassified {
                examples
                    .entry((e.true_label.as_str(), e.predicted_label.as_str()))
                    .or_default()
                    .push(e);
            }
            let _ = writeln!(
                html,
                "<p class=\"note\">Example texts come from the first {} of {} evaluation rows, predicted with the saved weights.</p>",
                ex.rows_scanned, ex.eval_rows
            );
        }
        html.push_str("<table>\n<tr><th>true label</th><th>predicted as</th><th>rows</th><th>share of true label</th><th>examples</th></tr>\n");
        for pair in pairs.iter().take(TOP_PAIRS) {
            let (t, p) = (&data.classes[pair.truth], &data.classes[pair.predicted]);
            let share = pair.count as f64 / t.support.max(1) as f64;
            let _ = write!(
                html,
                "<tr class=\"pair\"><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}%</td><td>",
                escape(&t.label),
                escape(&p.label),
                pair.count,
                share * 100.0
            );
            if let Some(list) = examples.get(&(t.label.as_str(), p.label.as_str())) {
                html.push_str("<ul class=\"ex\">");
                for e in list.iter().take(EXAMPLES_PER_PAIR) {
                    let _ = write!(html, "<li>{}</li>", escape(&e.text));
                }
                html.push_str("</ul>");
            }
            html.push_str("</td></tr>\n");
        }
        html.push_str("</table>\n");
    }

    if order.len() < n {
        let in_map: std::collections::HashSet<usize> = order.iter().copied().collect();
        html.push_str("<h3>Classes outside the heat map</h3>\n<table class=\"rest\">\n<tr><th>label</th><th>support</th><th>F1</th><th>most often predicted instead</th></tr>\n");
        for c in (0..n).filter(|c| !in_map.contains(c)) {
            let r = &data.classes[c];
            let worst = (0..n)
                .filter(|&p| p != c && data.confusion[c][p] > 0)
                .max_by(|&a, &b| {
                    data.confusion[c][a]
                        .cmp(&data.confusion[c][b])
                        .then(b.cmp(&a))
                });
            let instead = worst
                .map(|p| {
                    format!(
                        "{} ({})",
                        escape(&data.classes[p].label),
                        data.confusion[c][p]
                    )
                })
                .unwrap_or_else(|| "—".into());
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                escape(&r.label),
                r.support,
                num(r.f1),
                instead
            );
        }
        html.push_str("</table>\n");
    }
}

/// A named series of (x, y) points.
pub struct Series {
    pub name: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// Span of `values`, widened when flat so a single point still sits mid-chart.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let pad = if lo.abs() > 0.0 { lo.abs() * 0.1 } else { 1.0 };
        return (lo - pad, hi + pad);
    }
    (lo, hi)
}

/// A line chart with axes, five ticks per axis, a legend, and dots on each point.
pub fn line_chart(id: &str, title: &str, series: &[Series]) -> String {
    const W: f64 = 520.0;
    const H: f64 = 260.0;
    const L: f64 = 64.0;
    const R: f64 = 16.0;
    const T: f64 = 44.0;
    const B: f64 = 40.0;
    let (x0, x1) = span(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y0, y1) = span(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let sx = |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let sy = |y: f64| H - B - (y - y0) / (y1 - y0) * (H - T - B);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg class=\"chart\" data-chart=\"{}\" data-series=\"{}\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        escape(id),
        series.len(),
        escape(title)
    );
    let _ = writeln!(
        svg,
        "<text x=\"{L}\" y=\"16\" style=\"font-weight:bold;font-size:12px\">{}</text>",
        escape(title)
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let (yv, xv) = (y0 + f * (y1 - y0), x0 + f * (x1 - x0));
        let (py, px) = (sy(yv), sx(xv));
        let _ = writeln!(
            svg,
            "<line class=\"gridline\" x1=\"{L}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            W - R,
            L - 4.0,
            py + 4.0,
            tick(yv, y1 - y0),
            H - B + 14.0,
            tick(xv, x1 - x0)
        );
    }
    let _ = writeln!(
        svg,
        "<line class=\"axis\" x1=\"{L}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/><line class=\"axis\" x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">step</text>",
        H - B,
        W - R,
        H - B,
        H - B,
        (L + W - R) / 2.0,
        H - 6.0
    );
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline class=\"series\" data-series=\"{}\" data-points=\"{}\" stroke=\"{color}\" points=\"{}\"/>",
            escape(s.name),
            points.len(),
            points.join(" ")
        );
        if points.len() <= 80 {
            for p in &points {
                let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = write!(
                    svg,
                    "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"2.5\" fill=\"{color}\"/>"
                );
            }
            svg.push('\n');
        }
        let lx = L + 8.0 + i as f64 * 150.0;
        let _ = writeln!(
            svg,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"10\" height=\"3\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            T - 16.0,
            lx + 14.0,
            T - 12.0,
            escape(s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A tick label with as many digits as the axis range needs.
fn tick(v: f64, range: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        return format!("{v:.2e}");
    }
    // Enough decimals that the five ticks (a quarter of the range apart) differ.
    let step = (range.abs() / 4.0).max(1e-12);
    let decimals = ((-step.log10()).ceil().max(0.0) as usize).min(5);
    format!("{v:.decimals$}")
}

/// Horizontal bars: F1 on the left, support on the right, one row per class in `shown` order.
fn class_bars(classes: &[ClassRow], shown: &[usize]) -> String {
    const ROW: f64 = 18.0;
    const LABEL: f64 = 200.0;
    const BAR: f64 = 300.0;
    const GAP: f64 = 70.0;
    const SUP: f64 = 200.0;
    let top = 24.0;
    let w = LABEL + BAR + GAP + SUP + 60.0;
    let h = top + ROW * shown.len() as f64 + 8.0;
    let max_support = shown
        .iter()
        .map(|&c| classes[c].support)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg class=\"chart\" data-chart=\"per_class\" data-series=\"2\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"F1 and support per class\">"
    );
    let _ = writeln!(
        svg,
        "<text x=\"{LABEL}\" y=\"14\" style=\"font-weight:bold\">F1</text><text x=\"{}\" y=\"14\" style=\"font-weight:bold\">support (rows)</text>",
        LABEL + BAR + GAP
    );
    for (i, &c) in shown.iter().enumerate() {
        let r = &classes[c];
        let y = top + i as f64 * ROW;
        let label: String = if r.label.chars().count() > 30 {
            r.label.chars().take(29).collect::<String>() + "…"
        } else {
            r.label.clone()
        };
        let fw = (r.f1.clamp(0.0, 1.0) * BAR).max(0.5);
        let sw = (r.support as f64 / max_support as f64 * SUP).max(0.5);
        let _ = writeln!(
            svg,
            "<g><title>{} — F1 {} · precision {} · recall {} · support {}</title><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><rect class=\"bar f1\" x=\"{LABEL}\" y=\"{:.1}\" width=\"{fw:.1}\" height=\"{:.1}\" fill=\"#1f77b4\"/><text x=\"{:.1}\" y=\"{:.1}\">{:.3}</text><rect class=\"bar support\" x=\"{:.1}\" y=\"{:.1}\" width=\"{sw:.1}\" height=\"{:.1}\" fill=\"#aaa\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text></g>",
            escape(&r.label),
            num(r.f1),
            num(r.precision),
            num(r.recall),
            r.support,
            LABEL - 6.0,
            y + 12.0,
            escape(&label),
            y + 3.0,
            ROW - 5.0,
            LABEL + fw + 4.0,
            y + 12.0,
            r.f1,
            LABEL + BAR + GAP,
            y + 3.0,
            ROW - 5.0,
            LABEL + BAR + GAP + sw + 4.0,
            y + 12.0,
            r.support
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The confusion heat map of the classes in `order`: each cell's shade is its share of the true
/// class's rows (green on the diagonal, red off it).
fn heatmap(data: &ReportData, order: &[usize]) -> String {
    let k = order.len();
    let cell = if k > 20 { 16.0 } else { 24.0 };
    let label_w = 190.0;
    let top = label_w;
    let w = label_w + cell * k as f64 + 20.0;
    let h = top + cell * k as f64 + 10.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg class=\"chart heatmap\" data-chart=\"confusion\" data-series=\"{k}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"confusion matrix heat map\">"
    );
    let short = |s: &str| -> String {
        if s.chars().count() > 28 {
            s.chars().take(27).collect::<String>() + "…"
        } else {
            s.to_string()
        }
    };
    for (i, &c) in order.iter().enumerate() {
        let label = escape(&short(&data.classes[c].label));
        let pos = top + i as f64 * cell + cell * 0.7;
        let x = label_w + i as f64 * cell + cell * 0.7;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{pos:.1}\" text-anchor=\"end\">{label}</text><text transform=\"translate({x:.1},{:.1}) rotate(-60)\">{label}</text>",
            label_w - 4.0,
            top - 4.0
        );
    }
    for (i, &t) in order.iter().enumerate() {
        let support = data.classes[t].support.max(1) as f64;
        for (j, &p) in order.iter().enumerate() {
            let n = data.confusion[t][p];
            let share = n as f64 / support;
            let fill = if n == 0 {
                "#f8f8f8".to_string()
            } else {
                let a = 0.15 + 0.85 * share.clamp(0.0, 1.0);
                if t == p {
                    format!("rgba(44,160,44,{a:.3})")
                } else {
                    format!("rgba(214,39,40,{a:.3})")
                }
            };
            let _ = write!(
                svg,
                "<rect class=\"cell\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\"><title>{} → {}: {n}</title></rect>",
                label_w + j as f64 * cell,
                top + i as f64 * cell,
                cell - 1.0,
                cell - 1.0,
                escape(&data.classes[t].label),
                escape(&data.classes[p].label)
            );
        }
        svg.push('\n');
    }
    svg.push_str("</svg>\n<p class=\"note\">Rows: true label; columns: predicted label; shade: share of the true label's rows (green: correct, red: confused).</p>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::inputs::{EvalExamples, EvalPoint, LogRecord, SideBlock, TrainingLog};

    fn class(label: &str, f1: f64, support: u64) -> ClassRow {
        ClassRow {
            label: label.into(),
            precision: f1,
            recall: f1,
            f1,
            support,
        }
    }

    /// `n` classes where class `i` loses `i % 4` rows to class `(i + 1) % n`.
    fn data(n: usize) -> ReportData {
        let mut confusion = vec![vec![0u64; n]; n];
        for (i, row) in confusion.iter_mut().enumerate() {
            row[i] = 10;
            row[(i + 1) % n] += (i % 4) as u64;
        }
        let classes = (0..n)
            .map(|i| {
                class(
                    &format!("class {i}"),
                    (i % 10) as f64 / 10.0,
                    10 + (i % 4) as u64,
                )
            })
            .collect();
        ReportData {
            classes,
            confusion,
            ..ReportData::default()
        }
    }

    fn count(html: &str, needle: &str) -> usize {
        html.matches(needle).count()
    }

    #[test]
    fn hostile_labels_and_texts_are_escaped() {
        let mut d = data(3);
        d.classes[1].label = "<script>alert(1)</script>".into();
        d.confusion[0][1] = 5;
        d.examples = Some(EvalExamples {
            eval_rows: 30,
            rows_scanned: 30,
            per_pair_limit: 3,
            misclassified: vec![Example {
                row: 0,
                text: "<img src=x onerror=alert(2)> & \"quotes\"".into(),
                true_label: "class 0".into(),
                predicted_label: "<script>alert(1)</script>".into(),
            }],
        });
        d.side.push(SideBlock {
            key: "x<y".into(),
            model: Some("<b>m</b>".into()),
            scalars: BTreeMap::new(),
            error: None,
        });
        let html = render(&d);
        assert!(!html.to_lowercase().contains("<script"), "a raw script tag");
        assert!(!html.contains("<img"), "a raw img tag");
        assert!(!html.contains("<b>m</b>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;img src=x onerror=alert(2)&gt; &amp; &quot;quotes&quot;"));
        assert!(html.contains("x&lt;y"));
        // Self-contained: nothing loaded from elsewhere.
        for needle in ["src=\"", "<link", "http://", "https://", "@import"] {
            assert!(!html.contains(needle), "{needle}");
        }
    }

    #[test]
    fn charts_have_one_element_per_series_and_point() {
        let mut d = data(4);
        d.log = TrainingLog {
            model: Some("tiny".into()),
            hyperparameters: serde_json::Map::new(),
            log_history: (1..=7)
                .map(|s| LogRecord {
                    step: s * 10,
                    epoch: s as f64 / 7.0,
                    loss: 1.0 / s as f64,
                    learning_rate: 5e-5 * (7 - s) as f64 / 7.0,
                })
                .collect(),
        };
        d.history = (1..=3)
            .map(|e| EvalPoint {
                step: e * 20,
                epoch: e as f64,
                metrics: [
                    ("eval_accuracy".to_string(), 0.5 + e as f64 / 10.0),
                    ("eval_f1_macro".to_string(), 0.4 + e as f64 / 10.0),
                    ("eval_loss".to_string(), 1.0 / e as f64),
                ]
                .into_iter()
                .collect(),
            })
            .collect();
        let html = render(&d);
        assert_eq!(count(&html, "data-chart=\"loss\" data-series=\"1\""), 1);
        assert_eq!(
            count(&html, "data-chart=\"learning_rate\" data-series=\"1\""),
            1
        );
        // accuracy and macro F1 (no weighted F1 in this history), and the loss apart.
        assert_eq!(
            count(&html, "data-chart=\"eval_scores\" data-series=\"2\""),
            1
        );
        assert_eq!(
            count(&html, "data-chart=\"eval_loss\" data-series=\"1\""),
            1
        );
        assert_eq!(count(&html, "<polyline class=\"series\""), 5);
        assert_eq!(count(&html, "data-points=\"7\""), 2);
        assert_eq!(count(&html, "data-points=\"3\""), 3);
        assert_eq!(count(&html, "class=\"bar f1\""), 4);
        assert_eq!(count(&html, "class=\"bar support\""), 4);
        assert_eq!(count(&html, "class=\"cell\""), 16);
        assert!(html.contains("data-series=\"eval_f1_macro\""));
    }

    #[test]
    fn two_hundred_labels_truncate_the_heatmap_and_bars() {
        let d = data(200);
        let html = render(&d);
        let k = HEATMAP_CLASSES;
        assert_eq!(count(&html, "class=\"cell\""), k * k);
        assert_eq!(
            count(&html, "data-chart=\"confusion\" data-series=\"30\""),
            1
        );
        assert_eq!(count(&html, "class=\"bar f1\""), BAR_CLASSES);
        // Every class outside the heat map has a row in the rest table.
        let rest = html
            .split("<table class=\"rest\">")
            .nth(1)
            .expect("rest table");
        let rest = rest.split("</table>").next().unwrap();
        assert_eq!(count(rest, "<tr><td>"), 200 - k);
        // And every class in the full per-class table.
        assert!(html.contains("All 200 classes"));
        assert_eq!(count(&html, "<tr class=\"pair\">"), TOP_PAIRS);
    }

    #[test]
    fn heatmap_keeps_the_most_confused_and_chains_them() {
        // 0<->3 confused heavily, 3<->1 a little, 2 not at all.
        let mut c = vec![vec![0u64; 4]; 4];
        c[0][3] = 9;
        c[3][0] = 4;
        c[3][1] = 2;
        c[2][2] = 50;
        assert_eq!(heatmap_order(&c, 3), vec![3, 0, 1]);
        assert_eq!(heatmap_order(&c, 4), vec![3, 0, 1, 2]);
        let pairs = confused_pairs(&c);
        assert_eq!(
            pairs
                .iter()
                .map(|p| (p.truth, p.predicted, p.count))
                .collect::<Vec<_>>(),
            vec![(0, 3, 9), (3, 0, 4), (3, 1, 2)]
        );
    }

    #[test]
    fn the_same_data_gives_the_same_bytes() {
        let d = data(12);
        assert_eq!(render(&d), render(&d));
    }
}
