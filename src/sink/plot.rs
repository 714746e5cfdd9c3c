//! Self-contained SVG line chart for `bench netfilter`: latency (y) against
//! rule count (x), one line per backend.
//!
//! Std only. The output has no scripts, fonts or external references and is
//! deterministic for a given input, so saved charts diff cleanly.

use std::fmt::Write as _;

/// One line of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// `(x, y)` points in any order; non-finite ones are skipped.
    pub points: Vec<(f64, f64)>,
}

/// What to draw; all text is XML-escaped on output.
#[derive(Debug, Clone, Copy)]
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
}

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 500.0;
/// Plot area; the right margin holds the legend.
const PLOT_L: f64 = 70.0;
const PLOT_R: f64 = WIDTH - 180.0;
const PLOT_T: f64 = 50.0;
const PLOT_B: f64 = HEIGHT - 60.0;
const X_TICKS: usize = 8;
const Y_TICKS: usize = 6;
/// Smallest non-zero axis span, so tick labels stay distinct at 2 decimals.
const MIN_SPAN: f64 = 0.1;
/// Okabe-Ito colours, without yellow (too faint on white).
const PALETTE: [&str; 7] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
];
/// Dash pattern per round through the palette, so lines stay distinct
/// when there are more series than colours.
const DASHES: [&str; 3] = ["", "6 3", "2 2"];
const POINT_TITLE_X_UNIT: &str = "rules";
const POINT_TITLE_Y_UNIT: &str = "µs";

/// Render `chart` as a complete SVG document.
pub fn svg(chart: &Chart) -> String {
    let lines: Vec<Vec<(f64, f64)>> = chart
        .series
        .iter()
        .map(|s| finite_sorted(&s.points))
        .collect();
    let frame = Frame::new(&lines);
    let mut out = String::new();
    header(&mut out, chart.title);
    frame.grid_and_axes(&mut out);
    axis_labels(&mut out, chart);
    if lines.iter().all(Vec::is_empty) {
        text(
            &mut out,
            (PLOT_L + PLOT_R) / 2.0,
            (PLOT_T + PLOT_B) / 2.0,
            MIDDLE_GREY,
            "no data",
        );
    }
    for (i, (s, pts)) in chart.series.iter().zip(&lines).enumerate() {
        if !pts.is_empty() {
            draw_series(&mut out, &frame, i, &s.name, pts);
        }
    }
    legend(&mut out, chart.series, &lines);
    out.push_str("</svg>\n");
    out
}

/// Tick values at a 1-2-5 step (1, 2 or 5 times a power of ten) covering
/// `[lo, hi]`, at most `max_ticks` of them (at least 3 are always allowed).
///
/// A zero-width range is widened around its value so there is still a scale:
/// `(0, 0)` covers `[0, 1]`, `(5, 5)` covers `[4, 6]`. Non-finite bounds, or
/// ranges too wide to represent, give an empty vector.
pub fn nice_ticks(lo: f64, hi: f64, max_ticks: usize) -> Vec<f64> {
    if !lo.is_finite() || !hi.is_finite() {
        return Vec::new();
    }
    let (lo, hi) = widen(lo.min(hi), lo.max(hi));
    if !(hi - lo).is_finite() {
        return Vec::new();
    }
    // A range straddling 0 needs 3 ticks (-s, 0, s) at any step.
    let max_ticks = max_ticks.max(3) as f64;
    let mut step = Step::at_least((hi - lo) / (max_ticks - 1.0));
    // Rounding the ends out can add ticks beyond max_ticks; take larger steps
    // until it fits, which happens once the step exceeds |lo| and |hi|.
    let (first, last) = loop {
        let (first, last) = step.span(lo, hi);
        if last - first < max_ticks {
            break (first as i64, last as i64);
        }
        step = step.next();
    };
    let ticks: Vec<f64> = (first..=last).map(|k| step.value(k)).collect();
    match (ticks.first(), ticks.last()) {
        (Some(a), Some(b)) if b > a && (b - a).is_finite() => ticks,
        _ => Vec::new(),
    }
}

/// Give an empty range some width, scaled to its value.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else if lo == 0.0 {
        (0.0, 1.0)
    } else {
        let pad = 10f64.powi(lo.abs().log10().floor() as i32);
        (lo - pad, hi + pad)
    }
}

/// A tick step `mantissa * 10^exp` with mantissa 1, 2 or 5; kept in this form
/// so tick values are computed as `k * m / 10^n`, which rounds to the nearest
/// float (0.3, not 0.30000000000000004).
#[derive(Debug, Clone, Copy)]
struct Step {
    mantissa: f64,
    exp: i32,
}

impl Step {
    /// The smallest 1-2-5 step >= `raw` (`raw` > 0 and finite).
    fn at_least(raw: f64) -> Step {
        let exp = raw.log10().floor() as i32;
        let frac = raw / 10f64.powi(exp);
        // The tolerance absorbs log10/division rounding on exact steps.
        match [1.0, 2.0, 5.0]
            .into_iter()
            .find(|m| frac <= m * (1.0 + 1e-9))
        {
            Some(mantissa) => Step { mantissa, exp },
            None => Step {
                mantissa: 1.0,
                exp: exp + 1,
            },
        }
    }

    fn next(self) -> Step {
        match self.mantissa as u8 {
            1 => Step {
                mantissa: 2.0,
                ..self
            },
            2 => Step {
                mantissa: 5.0,
                ..self
            },
            _ => Step {
                mantissa: 1.0,
                exp: self.exp + 1,
            },
        }
    }

    fn value(self, k: i64) -> f64 {
        let scaled = k as f64 * self.mantissa;
        if self.exp >= 0 {
            scaled * 10f64.powi(self.exp)
        } else {
            scaled / 10f64.powi(-self.exp)
        }
    }

    /// Indices (as floats, to avoid integer overflow on extreme inputs) of
    /// the first and last tick covering `[lo, hi]`.
    fn span(self, lo: f64, hi: f64) -> (f64, f64) {
        let size = self.value(1);
        // The slack keeps an end that is already on a tick from growing one step.
        ((lo / size + 1e-9).floor(), (hi / size - 1e-9).ceil())
    }
}

/// Finite points sorted by x, so lines are drawn left to right.
fn finite_sorted(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

/// Both axes' ticks and the data-to-pixel mapping of the plot area.
struct Frame {
    x_ticks: Vec<f64>,
    y_ticks: Vec<f64>,
}

impl Frame {
    fn new(lines: &[Vec<(f64, f64)>]) -> Frame {
        let all = || lines.iter().flatten();
        Frame {
            x_ticks: axis_ticks(all().map(|p| p.0), X_TICKS),
            y_ticks: axis_ticks(all().map(|p| p.1), Y_TICKS),
        }
    }

    fn px(&self, x: f64) -> f64 {
        scale(x, &self.x_ticks, PLOT_L, PLOT_R)
    }

    fn py(&self, y: f64) -> f64 {
        scale(y, &self.y_ticks, PLOT_B, PLOT_T)
    }

    fn grid_and_axes(&self, out: &mut String) {
        out.push_str("<g stroke=\"#dddddd\" stroke-width=\"1\">\n");
        for &x in &self.x_ticks {
            line(out, (self.px(x), PLOT_T), (self.px(x), PLOT_B));
        }
        for &y in &self.y_ticks {
            line(out, (PLOT_L, self.py(y)), (PLOT_R, self.py(y)));
        }
        out.push_str("</g>\n<g stroke=\"#333333\" stroke-width=\"1\">\n");
        line(out, (PLOT_L, PLOT_B), (PLOT_R, PLOT_B));
        line(out, (PLOT_L, PLOT_T), (PLOT_L, PLOT_B));
        for &x in &self.x_ticks {
            line(out, (self.px(x), PLOT_B), (self.px(x), PLOT_B + 5.0));
        }
        for &y in &self.y_ticks {
            line(out, (PLOT_L - 5.0, self.py(y)), (PLOT_L, self.py(y)));
        }
        out.push_str("</g>\n");
        for &x in &self.x_ticks {
            text(out, self.px(x), PLOT_B + 19.0, MIDDLE, &fmt_num(x));
        }
        for &y in &self.y_ticks {
            text(out, PLOT_L - 8.0, self.py(y) + 4.0, END, &fmt_num(y));
        }
    }
}

/// Ticks for one axis: from 0 (or below, for negative data) to a nice bound.
fn axis_ticks(values: impl Iterator<Item = f64>, max_ticks: usize) -> Vec<f64> {
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let hi = if hi - lo > 0.0 && hi - lo < MIN_SPAN {
        lo + MIN_SPAN
    } else {
        hi
    };
    let ticks = nice_ticks(lo, hi, max_ticks);
    // Only absurd ranges (near f64::MAX) get here; keep a usable frame.
    if ticks.len() < 2 {
        return vec![0.0, 1.0];
    }
    ticks
}

/// Map `v` from the ticks' range onto `[from, to]`, clamped so that even
/// values beyond a fallback frame stay inside the plot area.
fn scale(v: f64, ticks: &[f64], from: f64, to: f64) -> f64 {
    let (lo, hi) = (ticks[0], ticks[ticks.len() - 1]);
    let t = (v - lo) / (hi - lo);
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    from + t * (to - from)
}

const MIDDLE: &str = "text-anchor=\"middle\"";
const MIDDLE_GREY: &str = "text-anchor=\"middle\" fill=\"#777777\"";
const END: &str = "text-anchor=\"end\"";

fn header(out: &mut String, title: &str) {
    let _ = writeln!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>",
        w = WIDTH,
        h = HEIGHT
    );
    text(
        out,
        WIDTH / 2.0,
        28.0,
        "text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\"",
        title,
    );
}

fn axis_labels(out: &mut String, chart: &Chart) {
    text(
        out,
        (PLOT_L + PLOT_R) / 2.0,
        PLOT_B + 45.0,
        MIDDLE,
        chart.x_label,
    );
    let (x, y) = (18.0, (PLOT_T + PLOT_B) / 2.0);
    let rotate = format!(
        "{MIDDLE} transform=\"rotate(-90 {} {})\"",
        fmt_num(x),
        fmt_num(y)
    );
    text(out, x, y, &rotate, chart.y_label);
}

/// Stroke attributes of series `i`: colour, plus a dash once colours repeat.
fn stroke(i: usize) -> String {
    let colour = PALETTE[i % PALETTE.len()];
    match DASHES[(i / PALETTE.len()) % DASHES.len()] {
        "" => format!("stroke=\"{colour}\""),
        dash => format!("stroke=\"{colour}\" stroke-dasharray=\"{dash}\""),
    }
}

fn draw_series(out: &mut String, frame: &Frame, i: usize, name: &str, pts: &[(f64, f64)]) {
    let coords: Vec<String> = pts
        .iter()
        .map(|&(x, y)| format!("{},{}", fmt_num(frame.px(x)), fmt_num(frame.py(y))))
        .collect();
    let _ = writeln!(
        out,
        "<g>\n<polyline fill=\"none\" {} stroke-width=\"2\" stroke-linejoin=\"round\" points=\"{}\"/>",
        stroke(i),
        coords.join(" ")
    );
    let colour = PALETTE[i % PALETTE.len()];
    for &(x, y) in pts {
        let tip = format!(
            "{name}: {} {POINT_TITLE_X_UNIT}, {} {POINT_TITLE_Y_UNIT}",
            fmt_num(x),
            fmt_num(y)
        );
        let _ = writeln!(
            out,
            "<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{colour}\"><title>{}</title></circle>",
            fmt_num(frame.px(x)),
            fmt_num(frame.py(y)),
            escape(&tip)
        );
    }
    out.push_str("</g>\n");
}

/// Legend right of the plot area; series without data are listed as such
/// rather than dropped, so a failed backend is visible.
fn legend(out: &mut String, series: &[Series], lines: &[Vec<(f64, f64)>]) {
    out.push_str("<g>\n");
    let x = PLOT_R + 20.0;
    for (i, (s, pts)) in series.iter().zip(lines).enumerate() {
        let y = PLOT_T + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" {} stroke-width=\"2\"/>",
            fmt_num(x),
            fmt_num(y),
            fmt_num(x + 24.0),
            fmt_num(y),
            stroke(i)
        );
        let label = if pts.is_empty() {
            format!("{} (no data)", s.name)
        } else {
            s.name.clone()
        };
        text(out, x + 30.0, y + 4.0, "", &label);
    }
    out.push_str("</g>\n");
}

fn line(out: &mut String, (x1, y1): (f64, f64), (x2, y2): (f64, f64)) {
    let _ = writeln!(
        out,
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>",
        fmt_num(x1),
        fmt_num(y1),
        fmt_num(x2),
        fmt_num(y2)
    );
}

/// A `<text>` element; `attrs` are trusted constants, `content` is escaped.
fn text(out: &mut String, x: f64, y: f64, attrs: &str, content: &str) {
    let sep = if attrs.is_empty() { "" } else { " " };
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\"{sep}{attrs}>{}</text>",
        fmt_num(x),
        fmt_num(y),
        escape(content)
    );
}

/// At most 2 decimals, trailing zeros trimmed, never exponent notation, so
/// 10000 prints as "10000" and 0.25 as "0.25".
fn fmt_num(v: f64) -> String {
    // Callers only pass finite values; never let "NaN"/"inf" reach the SVG.
    if !v.is_finite() {
        return "0".to_string();
    }
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    match s {
        "-0" | "" => "0".to_string(),
        _ => s.to_string(),
    }
}

/// Escape XML markup and drop characters XML 1.0 cannot carry at all
/// (most control characters), which would make the document unparsable.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, points: &[(f64, f64)]) -> Series {
        Series {
            name: name.to_string(),
            points: points.to_vec(),
        }
    }

    fn chart(series: &[Series]) -> String {
        svg(&Chart {
            title: "netfilter",
            x_label: "rules",
            y_label: "latency (µs)",
            series,
        })
    }

    fn backends() -> Vec<Series> {
        let counts = [0.0, 10.0, 100.0, 1000.0, 10000.0];
        [
            "iptables-legacy",
            "iptables-nft",
            "nftables-map",
            "nftables-linear",
        ]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let pts: Vec<(f64, f64)> = counts
                .iter()
                .map(|&n| (n, 3.0 + n * 0.001 * i as f64))
                .collect();
            series(name, &pts)
        })
        .collect()
    }

    /// Parse, failing the test with the document on error.
    fn parse(s: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(s).unwrap_or_else(|e| panic!("{e}\n{s}"))
    }

    fn elements<'a>(doc: &'a roxmltree::Document, tag: &str) -> Vec<roxmltree::Node<'a, 'a>> {
        doc.descendants().filter(|n| n.has_tag_name(tag)).collect()
    }

    fn pairs(poly: &roxmltree::Node) -> Vec<(f64, f64)> {
        poly.attribute("points")
            .unwrap()
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    fn attr(n: &roxmltree::Node, name: &str) -> f64 {
        n.attribute(name).unwrap().parse().unwrap()
    }

    fn texts(doc: &roxmltree::Document) -> Vec<String> {
        elements(doc, "text")
            .iter()
            .filter_map(|n| n.text().map(str::to_string))
            .collect()
    }

    fn inside((x, y): (f64, f64)) -> bool {
        (PLOT_L..=PLOT_R).contains(&x) && (PLOT_T..=PLOT_B).contains(&y)
    }

    /// Inputs that must not break the chart.
    fn degenerate() -> Vec<Vec<Series>> {
        vec![
            vec![],
            vec![series("a", &[]), series("b", &[])],
            vec![series(
                "a",
                &[
                    (f64::NAN, 1.0),
                    (1.0, f64::INFINITY),
                    (f64::NEG_INFINITY, 0.0),
                ],
            )],
            vec![series("a", &[(5.0, 7.0)])],
            vec![series("a", &[(0.0, 0.0)])],
            vec![series("a", &[(100.0, 1.0), (100.0, 2.0), (100.0, 3.0)])],
            vec![series("a", &[(1.0, 0.001), (2.0, 0.002)])],
            vec![series("a", &[(-5.0, -1.0), (5.0, 1.0)])],
            vec![series("a", &[(f64::MAX, f64::MAX), (-f64::MAX, 1.0)])],
        ]
    }

    #[test]
    fn parses_and_draws_one_polyline_per_series() {
        let s = chart(&backends());
        let doc = parse(&s);
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let polys = elements(&doc, "polyline");
        assert_eq!(polys.len(), 4);
        assert!(polys.iter().all(|p| pairs(p).len() == 5));
        assert_eq!(elements(&doc, "circle").len(), 20);
        let t = texts(&doc);
        for want in [
            "netfilter",
            "rules",
            "latency (µs)",
            "nftables-linear",
            "10000",
        ] {
            assert!(t.iter().any(|x| x == want), "missing text {want}");
        }
        assert!(!t.iter().any(|x| x == "no data"));
    }

    #[test]
    fn skips_empty_series_and_non_finite_points() {
        let data = vec![
            series(
                "ok",
                &[
                    (1.0, 2.0),
                    (f64::NAN, 3.0),
                    (3.0, f64::INFINITY),
                    (4.0, 5.0),
                ],
            ),
            series("empty", &[]),
            series("all-nan", &[(f64::NAN, f64::NAN)]),
            series("one", &[(2.0, 2.0)]),
        ];
        let s = chart(&data);
        let doc = parse(&s);
        let polys = elements(&doc, "polyline");
        let counts: Vec<usize> = polys.iter().map(|p| pairs(p).len()).collect();
        assert_eq!(counts, [2, 1]);
        assert_eq!(elements(&doc, "circle").len(), 3);
        assert!(texts(&doc).iter().any(|t| t == "empty (no data)"));
    }

    #[test]
    fn point_titles_and_sorting() {
        let s = chart(&[series(
            "iptables-nft",
            &[(1000.0, 12.345), (10.0, 3.0), (100.0, 4.5)],
        )]);
        let doc = parse(&s);
        let xs: Vec<f64> = pairs(&elements(&doc, "polyline")[0])
            .iter()
            .map(|p| p.0)
            .collect();
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
        let titles: Vec<&str> = elements(&doc, "title")
            .iter()
            .filter_map(|n| n.text())
            .collect();
        assert_eq!(
            titles,
            [
                "iptables-nft: 10 rules, 3 µs",
                "iptables-nft: 100 rules, 4.5 µs",
                "iptables-nft: 1000 rules, 12.35 µs"
            ]
        );
    }

    #[test]
    fn escapes_text() {
        let name = "a<b&\"c\"'";
        let s = svg(&Chart {
            title: "<t>",
            x_label: "x&y",
            y_label: "\"y\"\u{1}",
            series: &[series(name, &[(1.0, 1.0)])],
        });
        assert!(!s.contains("a<b") && !s.contains("<t>"));
        let doc = parse(&s);
        let t = texts(&doc);
        for want in [name, "<t>", "x&y", "\"y\""] {
            assert!(t.iter().any(|x| x == want), "missing text {want}");
        }
        let title = elements(&doc, "title")[0].text().unwrap();
        assert_eq!(title, "a<b&\"c\"': 1 rules, 1 µs");
    }

    #[test]
    fn distinct_series_styles() {
        let many: Vec<String> = (0..PALETTE.len() * 2).map(stroke).collect();
        let mut unique = many.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), many.len());
    }

    #[test]
    fn degenerate_inputs_give_valid_svg() {
        for data in degenerate() {
            let s = chart(&data);
            let doc = parse(&s);
            assert!(!s.contains("NaN") && !s.contains("inf"), "{data:?}\n{s}");
            let has_points = data.iter().any(|d| !finite_sorted(&d.points).is_empty());
            assert_eq!(
                texts(&doc).iter().any(|t| t == "no data"),
                !has_points,
                "{data:?}"
            );
            // Axes and tick labels are always there.
            assert!(elements(&doc, "line").len() >= 4, "{data:?}");
        }
    }

    #[test]
    fn points_fall_inside_plot_area() {
        let mut all = degenerate();
        all.push(backends());
        for data in all {
            let s = chart(&data);
            let doc = parse(&s);
            for c in elements(&doc, "circle") {
                let p = (attr(&c, "cx"), attr(&c, "cy"));
                assert!(inside(p), "{p:?} for {data:?}");
            }
            for poly in elements(&doc, "polyline") {
                assert!(pairs(&poly).into_iter().all(inside), "{data:?}");
            }
        }
    }

    #[test]
    fn axes_start_at_zero_and_cover_data() {
        let s = chart(&[series("a", &[(10.0, 29.6), (20.0, 15.0)])]);
        let doc = parse(&s);
        let labels = texts(&doc);
        // y covers 29.6 with a nice bound, x covers 20; both from 0.
        assert!(labels.iter().any(|t| t == "30"));
        assert!(labels.iter().any(|t| t == "20"));
        assert!(labels.iter().filter(|t| *t == "0").count() >= 2);
        // The highest y point sits below the top of the axis, not on it.
        let top = elements(&doc, "circle")
            .iter()
            .map(|c| attr(c, "cy"))
            .fold(f64::MAX, f64::min);
        assert!(top > PLOT_T);
    }

    #[test]
    fn nice_ticks_cases() {
        assert_eq!(nice_ticks(0.0, 29.6, 6), [0.0, 10.0, 20.0, 30.0]);
        assert_eq!(
            nice_ticks(0.0, 29.6, 8),
            [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
        );
        assert_eq!(nice_ticks(0.0, 1.0, 6), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(
            nice_ticks(0.0, 10000.0, 6),
            [0.0, 2000.0, 4000.0, 6000.0, 8000.0, 10000.0]
        );
        assert_eq!(nice_ticks(0.0, 0.0, 6), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(nice_ticks(5.0, 5.0, 6), [4.0, 4.5, 5.0, 5.5, 6.0]);
        assert_eq!(nice_ticks(0.0, 0.3, 4), [0.0, 0.1, 0.2, 0.3]);
        assert!(nice_ticks(f64::NAN, 1.0, 6).is_empty());
        assert!(nice_ticks(0.0, f64::INFINITY, 6).is_empty());
    }

    #[test]
    fn nice_ticks_cover_range_within_limit() {
        for &(lo, hi) in &[
            (0.9, 10.1),
            (-3.0, 7.0),
            (0.0, 0.07),
            (12.0, 3.0),
            (1e-6, 3e-6),
            (0.0, 123456.0),
        ] {
            for max in [3, 5, 8] {
                let t = nice_ticks(lo, hi, max);
                assert!(t.len() >= 2 && t.len() <= max, "{lo} {hi} {max}: {t:?}");
                assert!(
                    t[0] <= lo.min(hi) && t[t.len() - 1] >= lo.max(hi),
                    "{lo} {hi}: {t:?}"
                );
                assert!(t.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }

    #[test]
    fn number_format() {
        assert_eq!(fmt_num(10000.0), "10000");
        assert_eq!(fmt_num(2.5), "2.5");
        assert_eq!(fmt_num(0.126), "0.13");
        assert_eq!(fmt_num(1.0 / 3.0), "0.33");
        assert_eq!(fmt_num(-0.001), "0");
        assert_eq!(fmt_num(1e20), "100000000000000000000");
        assert_eq!(fmt_num(f64::NAN), "0");
    }

    #[test]
    fn deterministic() {
        assert_eq!(chart(&backends()), chart(&backends()));
    }
}
