//! SVG charts of bench reports, written by hand (no drawing library, no fonts to load): a run's
//! per-API throughput and latency percentiles over time, and a comparison of several runs.

use std::fmt::Write as _;

use super::report::Report;

const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 56.0;
const GAP: f64 = 70.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// One line of a line chart.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
}

/// The plotting area of one chart.
#[derive(Clone, Copy)]
struct Area {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// About `n` round tick values covering `0..=max`.
fn ticks(max: f64, n: usize) -> Vec<f64> {
    let max = if max > 0.0 && max.is_finite() {
        max
    } else {
        1.0
    };
    let raw = max / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (0..=n + 1)
        .map(|i| i as f64 * step)
        .take_while(|v| *v <= max + step * 0.999)
        .collect()
}

/// Decades covering `min..=max` (both > 0) for a log axis.
fn decades(min: f64, max: f64) -> Vec<f64> {
    let lo = min.max(1e-9).log10().floor() as i32;
    let hi = max.max(min * 10.0).log10().ceil() as i32;
    (lo..=hi).map(|e| 10f64.powi(e)).collect()
}

fn number(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 1.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn header(svg: &mut String, height: f64, title: &str, subtitle: &str) {
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="16" font-weight="bold">{}</text>
<text x="{LEFT}" y="40" fill="#555">{}</text>
"##,
        esc(title),
        esc(subtitle)
    );
}

fn frame(svg: &mut String, a: Area, title: &str, y_label: &str) {
    let _ = write!(
        svg,
        r##"<text x="{}" y="{}" font-weight="bold">{}</text>
<text transform="translate({},{}) rotate(-90)" text-anchor="middle" fill="#555">{}</text>
<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>
"##,
        a.x,
        a.y - 8.0,
        esc(title),
        a.x - 52.0,
        a.y + a.h / 2.0,
        esc(y_label),
        a.x,
        a.y,
        a.w,
        a.h
    );
}

fn legend(svg: &mut String, a: Area, items: &[(&str, &str, bool)]) {
    for (i, (name, color, dashed)) in items.iter().enumerate() {
        let y = a.y + 12.0 + 18.0 * i as f64;
        let x = a.x + a.w + 14.0;
        let dash = if *dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="2.5"{dash}/><text x="{}" y="{}">{}</text>"#,
            x + 24.0,
            x + 30.0,
            y + 4.0,
            esc(name)
        );
    }
}

/// A line chart; `log_y` draws the y axis in decades.
fn line_chart(
    svg: &mut String,
    a: Area,
    title: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) {
    frame(svg, a, title, y_label);
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        .max(1.0);
    let values = || series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let y_max = values().fold(0.0f64, f64::max);
    let y_min = values().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let y_ticks = if log_y {
        decades(if y_min.is_finite() { y_min } else { 1.0 }, y_max)
    } else {
        ticks(y_max, 5)
    };
    let (lo, hi) = (
        y_ticks.first().copied().unwrap_or(0.0),
        y_ticks.last().copied().unwrap_or(1.0),
    );
    let sy = |v: f64| {
        let f = if log_y {
            (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()).max(1e-9)
        } else {
            v / hi.max(1e-9)
        };
        a.y + a.h - f.clamp(0.0, 1.0) * a.h
    };
    let sx = |v: f64| a.x + v / x_max * a.w;
    for t in &y_ticks {
        let y = sy(*t);
        let _ = writeln!(
            svg,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            a.x,
            a.x + a.w,
            a.x - 6.0,
            y + 4.0,
            number(*t)
        );
    }
    for t in ticks(x_max, 8) {
        let x = sx(t);
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
            a.y + a.h + 16.0,
            number(t)
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">seconds</text>"##,
        a.x + a.w / 2.0,
        a.y + a.h + 32.0
    );
    for s in series {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<polyline class="series" data-name="{}" fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
            esc(&s.name),
            s.color,
            pts.join(" ")
        );
    }
    let items: Vec<(&str, &str, bool)> = series
        .iter()
        .map(|s| (s.name.as_str(), s.color, s.dashed))
        .collect();
    legend(svg, a, &items);
}

fn area(i: usize) -> Area {
    Area {
        x: LEFT,
        y: TOP + 20.0 + i as f64 * (PANEL_H + GAP),
        w: WIDTH - LEFT - RIGHT,
        h: PANEL_H,
    }
}

fn height(panels: usize) -> f64 {
    TOP + 20.0 + panels as f64 * (PANEL_H + GAP)
}

/// A run: throughput per API (and in total) over time, then p50 (solid) and p99 (dashed) latency
/// per API on a log scale.
pub fn run_svg(r: &Report) -> String {
    let mut apis: Vec<String> = Vec::new();
    for p in &r.series {
        for a in &p.apis {
            if !apis.contains(&a.api) {
                apis.push(a.api.clone());
            }
        }
    }
    let color = |i: usize| COLORS[i % COLORS.len()];
    let of = |api: &str, f: &dyn Fn(&super::Summary) -> f64| -> Vec<(f64, f64)> {
        r.series
            .iter()
            .filter_map(|p| p.apis.iter().find(|a| a.api == api).map(|a| (p.t, f(a))))
            .collect()
    };
    let mut throughput: Vec<Series> = apis
        .iter()
        .enumerate()
        .map(|(i, api)| Series {
            name: api.clone(),
            color: color(i),
            dashed: false,
            points: of(api, &|s| s.throughput),
        })
        .collect();
    if apis.len() > 1 {
        throughput.push(Series {
            name: "total".into(),
            color: "#000000",
            dashed: true,
            points: r.series.iter().map(|p| (p.t, p.total.throughput)).collect(),
        });
    }
    let mut latency = Vec::new();
    for (i, api) in apis.iter().enumerate() {
        for (q, dashed) in [("p50", false), ("p99", true)] {
            let f: &dyn Fn(&super::Summary) -> f64 = if dashed {
                &|s| s.p99_us as f64 / 1000.0
            } else {
                &|s| s.p50_us as f64 / 1000.0
            };
            latency.push(Series {
                name: format!("{api} {q}"),
                color: color(i),
                dashed,
                points: of(api, f).into_iter().filter(|p| p.1 > 0.0).collect(),
            });
        }
    }
    let c = &r.config;
    let subtitle = format!(
        "{} worker(s){}, {:.1} s, {} requests, {} errors, values {} B{}",
        c["concurrency"],
        c["rate"]
            .as_f64()
            .map_or(String::new(), |r| format!(" at {r} req/s")),
        r.elapsed_secs,
        r.total.count,
        r.total.errors,
        c["value_size"],
        if r.interrupted { " (interrupted)" } else { "" }
    );
    let mut svg = String::new();
    header(&mut svg, height(2), "rcluster bench", &subtitle);
    line_chart(
        &mut svg,
        area(0),
        "Throughput",
        "requests / s",
        &throughput,
        false,
    );
    line_chart(
        &mut svg,
        area(1),
        "Latency (p50 solid, p99 dashed)",
        "ms (log)",
        &latency,
        true,
    );
    svg.push_str("</svg>\n");
    svg
}

/// Grouped bars: one group per API, one bar per run.
fn bar_chart(
    svg: &mut String,
    a: Area,
    title: &str,
    y_label: &str,
    groups: &[String],
    runs: &[(String, Vec<f64>)],
) {
    frame(svg, a, title, y_label);
    let max = runs
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max);
    let y_ticks = ticks(max, 5);
    let hi = y_ticks.last().copied().unwrap_or(1.0).max(1e-9);
    for t in &y_ticks {
        let y = a.y + a.h - t / hi * a.h;
        let _ = writeln!(
            svg,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            a.x,
            a.x + a.w,
            a.x - 6.0,
            y + 4.0,
            number(*t)
        );
    }
    let group_w = a.w / groups.len().max(1) as f64;
    let bar_w = group_w * 0.8 / runs.len().max(1) as f64;
    for (g, name) in groups.iter().enumerate() {
        let gx = a.x + g as f64 * group_w + group_w * 0.1;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            gx + group_w * 0.4,
            a.y + a.h + 16.0,
            esc(name)
        );
        for (k, (run, values)) in runs.iter().enumerate() {
            let v = values.get(g).copied().unwrap_or(0.0);
            let h = v / hi * a.h;
            let _ = writeln!(
                svg,
                r#"<rect class="bar" data-run="{}" data-group="{}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                esc(run),
                esc(name),
                gx + k as f64 * bar_w,
                a.y + a.h - h,
                bar_w * 0.92,
                h,
                COLORS[k % COLORS.len()],
                esc(run),
                number(v)
            );
        }
    }
    let items: Vec<(&str, &str, bool)> = runs
        .iter()
        .enumerate()
        .map(|(k, (run, _))| (run.as_str(), COLORS[k % COLORS.len()], false))
        .collect();
    legend(svg, a, &items);
}

/// Several runs side by side: throughput, p50 and p99 per API.
pub fn compare_svg(runs: &[(String, Report)]) -> String {
    let mut apis: Vec<String> = Vec::new();
    for (_, r) in runs {
        for a in &r.apis {
            if !apis.contains(&a.api) {
                apis.push(a.api.clone());
            }
        }
    }
    let values = |f: &dyn Fn(&super::Summary) -> f64| -> Vec<(String, Vec<f64>)> {
        runs.iter()
            .map(|(name, r)| {
                let v = apis
                    .iter()
                    .map(|api| r.apis.iter().find(|a| &a.api == api).map_or(0.0, f))
                    .collect();
                (name.clone(), v)
            })
            .collect()
    };
    let mut svg = String::new();
    let names: Vec<&str> = runs.iter().map(|(n, _)| n.as_str()).collect();
    header(
        &mut svg,
        height(3),
        "rcluster bench: comparison",
        &names.join(" vs "),
    );
    bar_chart(
        &mut svg,
        area(0),
        "Throughput",
        "requests / s",
        &apis,
        &values(&|s| s.throughput),
    );
    bar_chart(
        &mut svg,
        area(1),
        "Latency p50",
        "ms",
        &apis,
        &values(&|s| s.p50_us as f64 / 1000.0),
    );
    bar_chart(
        &mut svg,
        area(2),
        "Latency p99",
        "ms",
        &apis,
        &values(&|s| s.p99_us as f64 / 1000.0),
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(43_210.0, 5);
        assert_eq!(t[1], 10_000.0);
        assert!(*t.last().unwrap() >= 43_210.0, "{t:?}");
        assert_eq!(
            ticks(0.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(decades(0.35, 42.0), vec![0.1, 1.0, 10.0, 100.0]);
        assert_eq!(number(43_210.0), "43k");
        assert_eq!(esc("a<b&\"c\""), "a&lt;b&amp;&quot;c&quot;");
    }
}
