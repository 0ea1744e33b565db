//! `doppel bench --plot FILE.svg`: how each runtime's `list` and recovery
//! pass grow with the number of live boxes, as an SVG chart (two log-log
//! panels, one line per runtime). Plain SVG text, no drawing library and
//! no fonts needed to write it; any browser or `rsvg-convert` renders it.

use std::fmt::Write as _;

use crate::bench::{BenchReport, Figure, GROWTH_FIGURES, runtime_names};

/// Line colours, one per runtime in the order given (then repeated).
const COLOURS: [&str; 8] = [
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#1f78b4", "#a6761d", "#666666", "#e6ab02",
];

const PANEL_W: f64 = 440.0;
const PANEL_H: f64 = 300.0;
const MARGIN_L: f64 = 64.0;
const MARGIN_T: f64 = 56.0;
const GAP: f64 = 84.0;
const LEGEND_H: f64 = 24.0;

/// The chart of `reports` (one per box count, the same runtimes in each).
pub fn svg(reports: &[BenchReport]) -> String {
    let names = runtime_names(reports);
    let legend_rows = names.len().div_ceil(4) as f64;
    let width = MARGIN_L + 2.0 * PANEL_W + GAP + 24.0;
    let height = MARGIN_T + PANEL_H + 48.0 + legend_rows * LEGEND_H + 16.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">doppel bench: median latency vs live boxes per runtime (log-log; exec to exit, inside each world)</text>"#,
        width / 2.0
    );
    for (i, (title, pick)) in GROWTH_FIGURES.into_iter().enumerate() {
        let x0 = MARGIN_L + i as f64 * (PANEL_W + GAP);
        panel(&mut s, reports, &names, title, pick, x0);
    }
    let ly = MARGIN_T + PANEL_H + 48.0;
    for (i, name) in names.iter().enumerate() {
        let (row, col) = (i / 4, i % 4);
        let x = MARGIN_L + col as f64 * 230.0;
        let y = ly + row as f64 * LEGEND_H;
        let c = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            x + 24.0,
            x + 30.0,
            y + 4.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Grid values from `lo` to `hi` (whole decades): 1, 2 and 5 times each
/// power of ten, with whether it is a power of ten.
fn ticks(lo: f64, hi: f64) -> Vec<(f64, bool)> {
    let mut out = Vec::new();
    let mut e = lo.log10().floor() as i32;
    while 10f64.powi(e) <= hi * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v <= hi * 1.0001 {
                out.push((v, m == 1.0));
            }
        }
        e += 1;
    }
    out
}

fn panel(
    s: &mut String,
    reports: &[BenchReport],
    names: &[&str],
    title: &str,
    pick: Figure,
    x0: f64,
) {
    let ns: Vec<f64> = reports.iter().map(|r| r.boxes as f64).collect();
    let ms: Vec<f64> = reports
        .iter()
        .flat_map(|r| r.runtimes.iter().map(move |f| pick(f).as_secs_f64() * 1e3))
        .filter(|v| *v > 0.0)
        .collect();
    let (nmin, nmax) = bounds(&ns);
    let (ymin, ymax) = bounds(&ms);
    // Whole decades around the data, so the grid reads at a glance.
    let (x_lo, x_hi) = (
        10f64.powf(nmin.log10().floor()),
        10f64.powf(nmax.log10().ceil()),
    );
    let (y_lo, y_hi) = (
        10f64.powf(ymin.log10().floor()),
        10f64.powf(ymax.log10().ceil()),
    );
    let span = |lo: f64, hi: f64| (hi.log10() - lo.log10()).max(1e-9);
    let px = |n: f64| x0 + (n.log10() - x_lo.log10()) / span(x_lo, x_hi) * PANEL_W;
    let py = |v: f64| MARGIN_T + PANEL_H - (v.log10() - y_lo.log10()) / span(y_lo, y_hi) * PANEL_H;
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{MARGIN_T}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#888"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" font-size="14" text-anchor="middle">{}</text>"#,
        x0 + PANEL_W / 2.0,
        MARGIN_T - 10.0,
        escape(title)
    );
    // Labels on the 2s and 5s too when the axis spans few decades.
    let dense = |lo: f64, hi: f64| span(lo, hi) <= 2.5;
    for (d, major) in ticks(x_lo, x_hi) {
        let x = px(d);
        let grey = if major { "#d0d0d0" } else { "#eeeeee" };
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{MARGIN_T}" x2="{x}" y2="{}" stroke="{grey}"/>"#,
            MARGIN_T + PANEL_H
        );
        if major || dense(x_lo, x_hi) {
            let _ = writeln!(
                s,
                r#"<text x="{x}" y="{}" text-anchor="middle">{d}</text>"#,
                MARGIN_T + PANEL_H + 16.0
            );
        }
    }
    for (d, major) in ticks(y_lo, y_hi) {
        let y = py(d);
        let grey = if major { "#d0d0d0" } else { "#eeeeee" };
        let _ = writeln!(
            s,
            r#"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="{grey}"/>"#,
            x0 + PANEL_W
        );
        if major || dense(y_lo, y_hi) {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                x0 - 6.0,
                y + 4.0,
                label_ms(d)
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">live boxes</text>"#,
        x0 + PANEL_W / 2.0,
        MARGIN_T + PANEL_H + 34.0
    );
    for (i, name) in names.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = reports
            .iter()
            .filter_map(|r| {
                let f = r.runtimes.iter().find(|f| f.name == *name)?;
                let v = pick(f).as_secs_f64() * 1e3;
                (v > 0.0).then(|| (px(r.boxes as f64), py(v)))
            })
            .collect();
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for (x, y) in points {
            let _ = writeln!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{c}"/>"#);
        }
    }
}

fn bounds(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    if lo.is_finite() && hi > 0.0 {
        (lo, hi.max(lo))
    } else {
        (1.0, 10.0)
    }
}

fn label_ms(ms: f64) -> String {
    // Rounded: 0.2 × 1000 is 200.00000000000003 in binary.
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    if ms >= 1000.0 {
        format!("{} s", round(ms / 1000.0))
    } else if ms >= 1.0 {
        format!("{} ms", round(ms))
    } else {
        format!("{} µs", round(ms * 1000.0))
    }
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::RuntimeFigures;
    use std::time::Duration;

    fn report(boxes: usize, list_ms: &[(&str, u64)]) -> BenchReport {
        BenchReport {
            boxes,
            samples: (5, 3),
            runtimes: list_ms
                .iter()
                .map(|(name, ms)| RuntimeFigures {
                    name: name.to_string(),
                    version: None,
                    create: Duration::from_millis(1),
                    state: Duration::from_millis(1),
                    list: Duration::from_millis(*ms),
                    recovery: Duration::from_millis(*ms + 1),
                    recovery_how: "recover".into(),
                    floor: Duration::from_millis(1),
                })
                .collect(),
            load: None,
        }
    }

    #[test]
    fn one_line_per_runtime_through_its_points_on_log_axes() {
        let svg = svg(&[
            report(10, &[("a<b", 1), ("c", 4)]),
            report(100, &[("a<b", 2), ("c", 40)]),
            report(1000, &[("a<b", 20), ("c", 400)]),
        ]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        // Two panels × two runtimes.
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert_eq!(svg.matches("<circle").count(), 12);
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        // Decade grid: 10, 100, 1000 boxes; 1 ms .. 1 s.
        for label in [
            ">10<", ">100<", ">1000<", ">1 ms<", ">10 ms<", ">100 ms<", ">1 s<",
        ] {
            assert!(svg.contains(label), "{label}");
        }
        // c's list at 1000 boxes (400 ms) is higher on the page (smaller y)
        // than a's (20 ms).
        let ys: Vec<f64> = svg
            .lines()
            .filter(|l| l.starts_with("<circle"))
            .map(|l| {
                let v = l.split("cy=\"").nth(1).unwrap();
                v[..v.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        // Order of circles: panel list: a(10,100,1000), c(10,100,1000).
        assert!(ys[5] < ys[2], "{ys:?}");
    }

    #[test]
    fn tick_labels_are_round() {
        assert_eq!(label_ms(0.2), "200 µs");
        assert_eq!(label_ms(0.05), "50 µs");
        assert_eq!(label_ms(2.0), "2 ms");
        assert_eq!(label_ms(5000.0), "5 s");
        let t: Vec<f64> = ticks(0.1, 10.0).into_iter().map(|t| t.0).collect();
        assert_eq!(t.len(), 7, "{t:?}");
    }

    #[test]
    fn a_single_box_count_still_draws() {
        let svg = svg(&[report(100, &[("a", 3)])]);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
}
