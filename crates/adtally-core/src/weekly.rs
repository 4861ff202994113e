//! The weekly email report: when it is due, and what it says. Pure — the server gathers
//! the figures, sends the message and keeps the sent-mail log.
//!
//! Schedule: Monday 08:00 in the advertiser's time zone. A report is due from then until
//! [`GRACE_MS`] later (a server that was down on Monday morning still sends it on
//! restart; one that was down all week skips that week rather than sending stale news).
//! The report covers the seven local days before that Monday against the seven before
//! those. Each report is named by its advertiser and Monday, which the sent-mail log keys
//! on, so that a restart never sends the same report twice.

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::Span;

use crate::clock::{Millis, DAY, HOUR};
use crate::metrics::{Counts, Metrics};
use crate::report::{local_date, start_of_day};

/// Local hour of Monday the report goes out.
pub const SEND_HOUR: i64 = 8;
/// How long after Monday 08:00 a report may still be sent.
pub const GRACE_MS: Millis = 2 * DAY;

/// The Monday whose report is due at `now_ms` in `tz`, if one is.
pub fn due_monday(now_ms: Millis, tz: &TimeZone) -> Option<Date> {
    let today = local_date(now_ms, tz);
    let back = i64::from(today.weekday().to_monday_zero_offset());
    let monday = today.checked_sub(Span::new().days(back)).ok()?;
    let send_at = start_of_day(monday, tz) + SEND_HOUR * HOUR;
    (now_ms >= send_at && now_ms - send_at < GRACE_MS && monday.weekday() == Weekday::Monday).then_some(monday)
}

/// The week a report on `monday` covers, and the week before: inclusive local dates.
pub fn weeks(monday: Date) -> ((Date, Date), (Date, Date)) {
    let day = |n: i64| monday.checked_sub(Span::new().days(n)).unwrap_or(monday);
    ((day(7), day(1)), (day(14), day(8)))
}

/// An ad's week, for the best and worst lists.
#[derive(Debug, Clone, PartialEq)]
pub struct AdLine {
    pub ad_id: i64,
    pub headline: String,
    pub impressions: i64,
    pub clicks: i64,
}

/// An alert to mention.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertLine {
    pub campaign: String,
    pub kind: &'static str,
    pub severity: &'static str,
    pub action: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WeeklyReport {
    pub advertiser: String,
    pub week: (Date, Date),
    pub this_week: Counts,
    pub last_week: Counts,
    /// Best first; only ads with enough impressions to rank.
    pub best_ads: Vec<AdLine>,
    pub worst_ads: Vec<AdLine>,
    pub alerts: Vec<AlertLine>,
    pub dashboard_url: String,
    pub unsubscribe_url: String,
}

/// Ads with at least this many impressions in the week are ranked by CTR.
pub const MIN_RANKED_IMPRESSIONS: i64 = 100;

/// Best and worst (up to three each, never the same ad in both) by CTR.
pub fn rank_ads(mut ads: Vec<AdLine>) -> (Vec<AdLine>, Vec<AdLine>) {
    ads.retain(|a| a.impressions >= MIN_RANKED_IMPRESSIONS);
    // Compare clicks/impressions exactly: a·d vs c·b in i128.
    ads.sort_by(|a, b| {
        (i128::from(b.clicks) * i128::from(a.impressions))
            .cmp(&(i128::from(a.clicks) * i128::from(b.impressions)))
            .then(a.ad_id.cmp(&b.ad_id))
    });
    let best: Vec<AdLine> = ads.iter().take(3).cloned().collect();
    let worst: Vec<AdLine> = ads.iter().rev().take(3.min(ads.len().saturating_sub(best.len()))).cloned().collect();
    (best, worst)
}

/// Money as `1 234.56` (micros rounded to cents); `–` when there is none.
pub fn money(micros: Option<i64>) -> String {
    let Some(m) = micros else { return "–".into() };
    let cents = (i128::from(m) + if m >= 0 { 5_000 } else { -5_000 }) / 10_000;
    let (sign, cents) = if cents < 0 { ("-", -cents) } else { ("", cents) };
    let units = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in units.chars().enumerate() {
        if i > 0 && (units.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{:02}", cents % 100)
}

fn rate(value: Option<f64>, suffix: &str) -> String {
    value.map_or("–".into(), |v| format!("{v:.2}{suffix}"))
}

/// Change from last week, as `+12.5%`; `new` from nothing, `–` when both are nothing.
fn change(this: Option<f64>, last: Option<f64>) -> String {
    match (this, last) {
        (Some(t), Some(l)) if l != 0.0 => format!("{:+.1}%", (t - l) / l * 100.0),
        (Some(t), _) if t != 0.0 => "new".into(),
        _ => "–".into(),
    }
}

/// (label, this week, last week, change) for each figure of the summary.
pub fn summary_rows(this: &Metrics, last: &Metrics) -> Vec<(&'static str, String, String, String)> {
    let int = |n: i64| Some(n as f64);
    let money_f = |m: Option<i64>| m.map(|v| v as f64);
    vec![
        (
            "Impressions",
            this.impressions.to_string(),
            last.impressions.to_string(),
            change(int(this.impressions), int(last.impressions)),
        ),
        ("Clicks", this.clicks.to_string(), last.clicks.to_string(), change(int(this.clicks), int(last.clicks))),
        ("CTR", rate(this.ctr, "%"), rate(last.ctr, "%"), change(this.ctr, last.ctr)),
        (
            "Spend",
            money(Some(this.spend_micros)),
            money(Some(last.spend_micros)),
            change(int(this.spend_micros), int(last.spend_micros)),
        ),
        (
            "Conversions",
            this.conversions.to_string(),
            last.conversions.to_string(),
            change(int(this.conversions), int(last.conversions)),
        ),
        (
            "CPA",
            money(this.cpa_micros),
            money(last.cpa_micros),
            change(money_f(this.cpa_micros), money_f(last.cpa_micros)),
        ),
        ("ROAS", rate(this.roas, "×"), rate(last.roas, "×"), change(this.roas, last.roas)),
    ]
}

fn ctr_of(a: &AdLine) -> String {
    if a.impressions == 0 {
        return "–".into();
    }
    format!("{:.2}%", a.clicks as f64 * 100.0 / a.impressions as f64)
}

/// The plain-text part.
pub fn render_text(r: &WeeklyReport) -> String {
    let (this, last) = (r.this_week.metrics(), r.last_week.metrics());
    let mut out = format!("Weekly report for {}: {} to {}\n\n", r.advertiser, r.week.0, r.week.1);
    out.push_str(&format!("{:<12} {:>14} {:>14} {:>10}\n", "", "this week", "last week", "change"));
    for (label, a, b, c) in summary_rows(&this, &last) {
        out.push_str(&format!("{label:<12} {a:>14} {b:>14} {c:>10}\n"));
    }
    for (title, ads) in [("Best ads", &r.best_ads), ("Weakest ads", &r.worst_ads)] {
        if !ads.is_empty() {
            out.push_str(&format!("\n{title} (by CTR):\n"));
            for a in ads.iter() {
                out.push_str(&format!(
                    "- {} (ad {}): {} impressions, {} clicks, CTR {}\n",
                    a.headline,
                    a.ad_id,
                    a.impressions,
                    a.clicks,
                    ctr_of(a)
                ));
            }
        }
    }
    if !r.alerts.is_empty() {
        out.push_str("\nAlerts:\n");
        for a in &r.alerts {
            out.push_str(&format!("- [{}] {} — {}: {}\n", a.severity, a.campaign, a.kind, a.action));
        }
    }
    out.push_str(&format!("\nDashboard: {}\nUnsubscribe: {}\n", r.dashboard_url, r.unsubscribe_url));
    out
}

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
            c => out.push(c),
        }
    }
    out
}

/// The HTML part; every piece of text is escaped.
pub fn render_html(r: &WeeklyReport) -> String {
    let (this, last) = (r.this_week.metrics(), r.last_week.metrics());
    let mut out = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><h1>Weekly report for {}</h1><p>{} to {}</p>\
         <table><tr><th></th><th>this week</th><th>last week</th><th>change</th></tr>",
        escape(&r.advertiser),
        r.week.0,
        r.week.1
    );
    for (label, a, b, c) in summary_rows(&this, &last) {
        out.push_str(&format!(
            "<tr><td>{label}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&a),
            escape(&b),
            escape(&c)
        ));
    }
    out.push_str("</table>");
    for (title, ads) in [("Best ads", &r.best_ads), ("Weakest ads", &r.worst_ads)] {
        if !ads.is_empty() {
            out.push_str(&format!("<h2>{title} (by CTR)</h2><ul>"));
            for a in ads.iter() {
                out.push_str(&format!(
                    "<li>{} (ad {}): {} impressions, {} clicks, CTR {}</li>",
                    escape(&a.headline),
                    a.ad_id,
                    a.impressions,
                    a.clicks,
                    ctr_of(a)
                ));
            }
            out.push_str("</ul>");
        }
    }
    if !r.alerts.is_empty() {
        out.push_str("<h2>Alerts</h2><ul>");
        for a in &r.alerts {
            out.push_str(&format!(
                "<li><b>{}</b> {} — {}: {}</li>",
                a.severity,
                escape(&a.campaign),
                a.kind,
                escape(&a.action)
            ));
        }
        out.push_str("</ul>");
    }
    out.push_str(&format!(
        "<p><a href=\"{}\">Open the dashboard</a> · <a href=\"{}\">Unsubscribe</a></p></body></html>",
        escape(&r.dashboard_url),
        escape(&r.unsubscribe_url)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Verdict};
    use jiff::civil::date;

    fn at(tz: &TimeZone, d: Date, hour: i64) -> Millis {
        start_of_day(d, tz) + hour * HOUR
    }

    #[test]
    fn due_on_monday_morning_in_the_advertisers_zone_for_two_days() {
        let berlin = TimeZone::get("Europe/Berlin").expect("tzdb");
        let monday = date(2026, 11, 23);
        assert_eq!(monday.weekday(), Weekday::Monday);
        assert_eq!(due_monday(at(&berlin, monday, 7) + 59 * 60_000, &berlin), None);
        assert_eq!(due_monday(at(&berlin, monday, 8), &berlin), Some(monday));
        assert_eq!(due_monday(at(&berlin, date(2026, 11, 25), 7), &berlin), Some(monday));
        assert_eq!(due_monday(at(&berlin, date(2026, 11, 25), 8), &berlin), None, "grace over");
        assert_eq!(due_monday(at(&berlin, date(2026, 11, 29), 23), &berlin), None);
        // 08:00 in Berlin is 07:00 UTC: not yet due in New York.
        let ny = TimeZone::get("America/New_York").expect("tzdb");
        assert_eq!(due_monday(at(&berlin, monday, 8), &ny), None);
        assert_eq!(weeks(monday), ((date(2026, 11, 16), date(2026, 11, 22)), (date(2026, 11, 9), date(2026, 11, 15))));
    }

    #[test]
    fn figures_and_changes() {
        assert_eq!(money(Some(1_234_567_890)), "1 234.57");
        assert_eq!(money(Some(4_999)), "0.00");
        assert_eq!(money(Some(5_000)), "0.01");
        assert_eq!(money(None), "–");
        let mut this = Counts::default();
        this.add(EventKind::Impression, Verdict::Valid, 1_000, 2_000_000, 0);
        this.add(EventKind::Click, Verdict::Valid, 30, 0, 0);
        this.add(EventKind::Conversion, Verdict::Valid, 3, 0, 9_000_000);
        let mut last = Counts::default();
        last.add(EventKind::Impression, Verdict::Valid, 800, 1_600_000, 0);
        last.add(EventKind::Click, Verdict::Valid, 20, 0, 0);
        let rows = summary_rows(&this.metrics(), &last.metrics());
        assert_eq!(rows[0], ("Impressions", "1000".into(), "800".into(), "+25.0%".into()));
        assert_eq!(rows[2], ("CTR", "3.00%".into(), "2.50%".into(), "+20.0%".into()));
        assert_eq!(rows[3], ("Spend", "2.00".into(), "1.60".into(), "+25.0%".into()));
        assert_eq!(rows[5], ("CPA", "0.67".into(), "–".into(), "new".into()));
        assert_eq!(rows[6], ("ROAS", "4.50×".into(), "0.00×".into(), "new".into()));
    }

    #[test]
    fn ranking_and_escaping() {
        let ad =
            |id, impressions, clicks| AdLine { ad_id: id, headline: format!("<b>ad {id}</b>"), impressions, clicks };
        let (best, worst) = rank_ads(vec![ad(1, 1000, 10), ad(2, 1000, 30), ad(3, 50, 40), ad(4, 500, 1)]);
        assert_eq!(best.iter().map(|a| a.ad_id).collect::<Vec<_>>(), [2, 1, 4]);
        assert!(worst.is_empty(), "three ranked ads all fit in best");
        let r = WeeklyReport {
            advertiser: "Acme & <Sons>".into(),
            week: (date(2026, 11, 16), date(2026, 11, 22)),
            this_week: Counts::default(),
            last_week: Counts::default(),
            best_ads: best,
            worst_ads: worst,
            alerts: vec![],
            dashboard_url: "https://ads.example/".into(),
            unsubscribe_url: "https://ads.example/u?t=a&b".into(),
        };
        let html = render_html(&r);
        assert!(html.contains("Acme &amp; &lt;Sons&gt;") && html.contains("&lt;b&gt;ad 2&lt;/b&gt;"));
        assert!(html.contains("href=\"https://ads.example/u?t=a&amp;b\""));
        assert!(!html.contains("<Sons>"));
        let text = render_text(&r);
        assert!(text.starts_with("Weekly report for Acme & <Sons>: 2026-11-16 to 2026-11-22"));
    }
}
