//! Numbers for people: thousands separators, money with two decimals, percentages, and
//! the reverse for form fields (an amount typed as `12.50` into micros). API values come
//! in as JSON, so what a page shows is the API's figure, only formatted.

use serde_json::Value;

/// `1234567` as `1,234,567`.
pub fn int(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Micros of the account currency as `1,234.56` (rounded to the cent).
pub fn money(micros: i64) -> String {
    let cents = (i128::from(micros) + if micros < 0 { -5_000 } else { 5_000 }) / 10_000;
    let whole = i64::try_from(cents / 100).unwrap_or(i64::MAX);
    let sign = if cents < 0 && whole == 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", int(whole), (cents % 100).unsigned_abs())
}

/// A JSON integer as [`int`]; `—` for null.
pub fn int_value(v: &Value) -> String {
    v.as_i64().map_or_else(|| "—".to_owned(), int)
}

/// JSON micros as [`money`]; `—` for null (a rate with a zero denominator).
pub fn money_value(v: &Value) -> String {
    v.as_i64().map_or_else(|| "—".to_owned(), money)
}

/// A JSON percentage (the API's rates are percentages) as `12.34%`; `—` for null.
pub fn percent(v: &Value) -> String {
    v.as_f64().map_or_else(|| "—".to_owned(), |p| format!("{p:.2}%"))
}

/// One figure of an alert's evidence, by its name's suffix: `daily_budget_micros` as
/// ("daily budget", "12.50"), `ctr_percent` as ("ctr", "1.23%"), counts with separators.
pub fn evidence(key: &str, v: &Value) -> (String, String) {
    let (name, value) = if let Some(name) = key.strip_suffix("_micros") {
        (name, money_value(v))
    } else if let Some(name) = key.strip_suffix("_percent") {
        (name, percent(v))
    } else if let Some(name) = key.strip_prefix("projected_percent_of_") {
        return (format!("projected, of {name}"), percent(v));
    } else if let Some(n) = v.as_i64() {
        (key, int(n))
    } else if let Some(x) = v.as_f64() {
        (key, format!("{x:.2}"))
    } else {
        (key, v.as_str().unwrap_or("—").to_owned())
    };
    (name.replace('_', " ").replace("ctr", "CTR"), value)
}

/// Micros as a form field shows them: `50`, `12.5`, `0.000001`.
pub fn amount_input(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let (whole, frac) = (micros.unsigned_abs() / 1_000_000, micros.unsigned_abs() % 1_000_000);
    if frac == 0 {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{}", format!("{frac:06}").trim_end_matches('0'))
    }
}

/// An amount typed into a form (`12`, `12.50`, `12,5`: up to six decimals) as micros.
pub fn parse_amount(field: &str, text: &str) -> Result<i64, String> {
    let bad = || format!("{field} must be an amount like 12.50");
    let text = text.trim();
    let (whole, frac) = match text.split_once(['.', ',']) {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    // A decimal comma is fine ("12,5"), but "1,000" is as likely a thousand (the way the
    // dashboard itself prints amounts) as one: refused rather than guessed.
    if text.contains(',') && frac.len() == 3 {
        return Err(format!("{field} must be an amount like 12.50, without thousands separators"));
    }
    if whole.is_empty() || whole.len() > 12 || frac.len() > 6 || !digits(whole) || !digits(frac) {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let frac: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().map_err(|_| bad())? };
    whole.checked_mul(1_000_000).and_then(|w| w.checked_add(frac)).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_reads_its_unit_from_its_name() {
        use serde_json::json;
        assert_eq!(evidence("daily_budget_micros", &json!(12_500_000)), ("daily budget".into(), "12.50".into()));
        assert_eq!(evidence("baseline_ctr_percent", &json!(1.234)), ("baseline CTR".into(), "1.23%".into()));
        assert_eq!(
            evidence("projected_percent_of_remaining", &json!(71.4)),
            ("projected, of remaining".into(), "71.40%".into())
        );
        assert_eq!(evidence("impressions", &json!(12_345)), ("impressions".into(), "12,345".into()));
        assert_eq!(evidence("z", &json!(-4.529)), ("z".into(), "-4.53".into()));
        assert_eq!(evidence("median_spent_at", &json!("14:05")), ("median spent at".into(), "14:05".into()));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1_000), "1,000");
        assert_eq!(int(-1_234_567), "-1,234,567");
        assert_eq!(money(1_234_567_890), "1,234.57");
        assert_eq!(money(5_000), "0.01");
        assert_eq!(money(-50_000), "-0.05");
        assert_eq!(money(0), "0.00");
        assert_eq!(percent(&serde_json::json!(33.3333)), "33.33%");
        assert_eq!(percent(&Value::Null), "—");
    }

    #[test]
    fn amounts_round_trip() {
        for micros in [0, 1, 50_000_000, 12_500_000, 100_000_001] {
            assert_eq!(parse_amount("x", &amount_input(micros)), Ok(micros));
        }
        assert_eq!(parse_amount("bid", "12,5"), Ok(12_500_000));
        assert!(parse_amount("budget", "1,000").is_err(), "a thousand or one? refused");
        assert!(parse_amount("budget", "1,000.00").is_err());
        assert!(parse_amount("bid", "").is_err());
        assert!(parse_amount("bid", "1e5").is_err());
        assert!(parse_amount("bid", "-3").is_err());
        assert!(parse_amount("bid", "1.0000001").is_err());
        assert!(parse_amount("bid", "99999999999999").is_err());
    }
}
