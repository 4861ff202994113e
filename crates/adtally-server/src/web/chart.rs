//! The campaign page's daily chart, drawn on the server as SVG (no chart library, no
//! script): impressions as bars and clicks as a line on the left axis, CTR as a line on
//! the right axis, one group per day (`<g data-date>`, with a `<title>` tooltip). Days
//! without traffic are drawn as zero, never skipped. Only numbers and escaped text go
//! into the markup.

use std::fmt::Write;

use super::format::int;

/// One local day of the chart.
pub struct Day {
    pub date: String,
    pub impressions: i64,
    pub clicks: i64,
    /// Percent, as the API gives it; `None` without impressions.
    pub ctr: Option<f64>,
}

const W: f64 = 820.0;
const H: f64 = 260.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 52.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// A round axis maximum at or above `max` whose half is round too: 1, 2 or 4 times a
/// power of ten, at least `least`.
fn nice(max: f64, least: f64) -> f64 {
    if max <= least {
        return least;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 4.0, 10.0].into_iter().map(|m| m * power).find(|v| *v >= max).unwrap_or(10.0 * power)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The chart's SVG (`id="daily-chart"`).
pub fn daily(days: &[Day]) -> String {
    let max_count = days.iter().map(|d| d.impressions.max(d.clicks)).max().unwrap_or(0);
    let left_max = nice(max_count as f64, 2.0);
    let right_max = nice(days.iter().filter_map(|d| d.ctr).fold(0.0, f64::max), 1.0);
    let (plot_w, plot_h) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let slot = plot_w / days.len().max(1) as f64;
    let y_left = |v: f64| TOP + plot_h - v / left_max * plot_h;
    let y_right = |v: f64| TOP + plot_h - v / right_max * plot_h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="daily-chart" class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="daily-chart-title"><title id="daily-chart-title">Impressions, clicks and CTR per day</title>"#
    );
    // Grid and both axes' labels: 0, half, max.
    for step in 0..=2 {
        let f = f64::from(step) / 2.0;
        let y = TOP + plot_h - f * plot_h;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{lx}" y="{ty:.1}" text-anchor="end">{l}</text><text class="axis ctr" x="{rx}" y="{ty:.1}">{r}</text>"#,
            x2 = W - RIGHT,
            lx = LEFT - 6.0,
            rx = W - RIGHT + 6.0,
            ty = y + 4.0,
            l = int((left_max * f).round() as i64),
            r = format_args!("{:.2}%", right_max * f),
        );
    }
    let label_every = days.len().div_ceil(10).max(1);
    let mut ctr_points = Vec::new();
    let mut click_points = Vec::new();
    for (i, d) in days.iter().enumerate() {
        let x = LEFT + slot * i as f64;
        let bar_w = (slot * 0.7).max(1.0);
        let y = y_left(d.impressions as f64);
        let ctr_text = d.ctr.map_or_else(|| "no CTR".to_owned(), |c| format!("{c:.2}% CTR"));
        let _ = write!(
            svg,
            r#"<g data-date="{date}"><title>{date}: {imp} impressions, {clk} clicks, {ctr_text}</title><rect class="imp" x="{bx:.1}" y="{y:.1}" width="{bar_w:.1}" height="{h:.1}"/></g>"#,
            date = escape(&d.date),
            imp = int(d.impressions),
            clk = int(d.clicks),
            bx = x + (slot - bar_w) / 2.0,
            h = TOP + plot_h - y,
        );
        let cx = x + slot / 2.0;
        click_points.push(format!("{cx:.1},{:.1}", y_left(d.clicks as f64)));
        ctr_points.push(format!("{cx:.1},{:.1}", y_right(d.ctr.unwrap_or(0.0))));
        if i % label_every == 0 {
            let _ = write!(
                svg,
                r#"<text class="axis" x="{cx:.1}" y="{ty}" text-anchor="middle">{label}</text>"#,
                ty = H - 8.0,
                label = escape(d.date.get(5..).unwrap_or(&d.date)),
            );
        }
    }
    let _ = write!(svg, r#"<polyline class="clkline" points="{}"/>"#, click_points.join(" "));
    let _ = write!(svg, r#"<polyline class="ctrline" points="{}"/>"#, ctr_points.join(" "));
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_day_is_drawn_and_axes_are_round() {
        let days: Vec<Day> = (1..=7)
            .map(|d| Day {
                date: format!("2026-11-0{d}"),
                impressions: if d == 3 { 0 } else { 1234 },
                clicks: 5,
                ctr: (d != 3).then_some(0.41),
            })
            .collect();
        let svg = daily(&days);
        assert_eq!(svg.matches("<g data-date=").count(), 7);
        assert!(svg.contains("2026-11-03: 0 impressions"));
        assert!(svg.contains(">2,000<"), "{svg}");
        assert_eq!(nice(0.0, 2.0), 2.0);
        assert_eq!(nice(3.0, 2.0), 4.0);
        assert_eq!(nice(0.41, 0.0), 1.0);
        assert_eq!(nice(33.3, 1.0), 40.0);
        assert!(!daily(&[]).contains("data-date"));
    }
}
