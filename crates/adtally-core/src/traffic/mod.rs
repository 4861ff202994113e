//! What a single request gives away about who sent it: a bot's user agent, a
//! browser's prefetch, an address in a data centre, the device class. These are the
//! general-invalid-traffic (GIVT) signals the counting rules take as given.
//!
//! The data comes from published, maintained lists compiled into the binary:
//! `data/bot-patterns.txt` (npm crawler-user-agents) and `data/datacenter-ranges.txt`
//! (PyPI iporigin: AWS, Google Cloud, Azure, Oracle, DigitalOcean and more). Both are
//! refreshed by `scripts/refresh-data.sh`.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::{Regex, RegexBuilder};

use crate::event::{Device, Verdict};

mod datacenter;
pub use datacenter::{is_special_purpose, DatacenterRanges};

const BOT_PATTERNS: &str = include_str!("../../../../data/bot-patterns.txt");

/// Words that mark automated clients the published list misses, matched in the
/// lower-cased user agent. Each was added because a labelled bot corpus had a miss and
/// no browser in the browser corpus contains it.
const EXTRA_BOT_WORDS: &[&str] = &[
    "bot/",
    "bot;",
    "bot)",
    "bot ",
    "-bot",
    "_bot",
    "robot",
    "crawl",
    "spider",
    "scrap",
    "slurp",
    "headless",
    "phantomjs",
    "puppeteer",
    "playwright",
    "selenium",
    "webdriver",
    "lighthouse",
    "pagespeed",
    "http client",
    "httpclient",
    "http-client",
    "http_request",
    "python",
    "java/",
    "okhttp",
    "go-http",
    "libwww",
    "lwp::",
    "curl/",
    "wget",
    "axios",
    "node-fetch",
    "undici",
    "got (",
    "ruby",
    "perl",
    "php/",
    "guzzle",
    "scan",
    "monitor",
    "uptime",
    "checker",
    "check_http",
    "validator",
    "fetcher",
    "feed",
    "preview",
    "archiver",
    "indexer",
    "collector",
    "analyzer",
    "search",
    "facebookexternalhit",
    "embedly",
    "sitemap",
    "seo",
    "dataprovider",
    "probe",
    "rss",
    "reader",
    "cloudflare",
    "httrack",
    "nutch",
    "scrapy",
    "zgrab",
    "masscan",
    "nmap",
    "sqlmap",
    "nikto",
    "wordpress",
    "winhttp",
    "qwantify",
    "yahoo! slurp",
    "ia_archiver",
    "http://",
    "https://",
    "www.",
    ".com",
    "+http",
    "google-",
    "health",
    "bench",
    "subscriber",
    "transcoder",
    "${",
    "<?",
    "\"",
    "agent",
    "check",
    "audit",
    "synthetic",
    "proxy",
    "fingerprint",
    "measurement",
    "mutant",
    "recon",
    "finder",
    "extractor",
    "lookup",
    "domain",
];

/// Classifies user agents. Built once at start-up; [`UserAgentClassifier::is_bot`] does a
/// literal multi-pattern scan plus a handful of regexes, no allocation for short agents.
#[derive(Debug)]
pub struct UserAgentClassifier {
    literals: AhoCorasick,
    patterns: Regex,
    words: AhoCorasick,
}

impl Default for UserAgentClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl UserAgentClassifier {
    pub fn new() -> Self {
        let mut literals = Vec::new();
        let mut regexes = Vec::new();
        for line in BOT_PATTERNS.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            match unescape_literal(line) {
                Some(literal) => literals.push(literal),
                None => regexes.push(format!("(?:{line})")),
            }
        }
        let literals = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostFirst)
            .build(&literals)
            .unwrap_or_else(|e| panic!("bundled bot literals are valid: {e}"));
        let patterns = RegexBuilder::new(&regexes.join("|"))
            .size_limit(32 << 20)
            .build()
            .unwrap_or_else(|e| panic!("bundled bot patterns are valid: {e}"));
        let words = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .build(EXTRA_BOT_WORDS)
            .unwrap_or_else(|e| panic!("bot words are valid: {e}"));
        Self { literals, patterns, words }
    }

    /// Whether a user agent belongs to a crawler, spider, headless browser, HTTP library
    /// or other automated client.
    ///
    /// Beyond the published patterns, the shape of the agent counts: every browser that
    /// renders ads sends `Mozilla/… (platform…)` (or the old `Opera/…`), and only old
    /// Internet Explorer says `compatible` without being a bot.
    pub fn is_bot(&self, user_agent: &str) -> bool {
        let ua = user_agent.trim();
        let browser_shaped = (ua.starts_with("Mozilla/") || ua.starts_with("Opera/")) && ua.contains('(');
        let odd_compatible = ua.contains("(compatible") && !ua.contains("MSIE") && !ua.contains("Trident");
        !browser_shaped
            || odd_compatible
            || self.literals.is_match(ua)
            || self.words.is_match(ua)
            || self.patterns.is_match(ua)
    }

    /// Device class from the user agent: tablets first (iPad, Android without
    /// "Mobile", Kindle, "Tablet"), then phones, else desktop.
    pub fn device(&self, user_agent: &str) -> Device {
        classify_device(user_agent)
    }
}

fn classify_device(ua: &str) -> Device {
    let has = |s: &str| ua.contains(s);
    if has("iPad")
        || has("Tablet")
        || has("Kindle")
        || has("Silk/")
        || has("PlayBook")
        || (has("Android") && !has("Mobile"))
    {
        Device::Tablet
    } else if has("Mobi") || has("iPhone") || has("iPod") || has("Android") || has("Windows Phone") || has("Opera Mini")
    {
        Device::Mobile
    } else {
        Device::Desktop
    }
}

/// The pattern as a plain string, if it has no regex syntax beyond escaped punctuation.
fn unescape_literal(pattern: &str) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                c @ ('/' | '.' | '-' | ' ' | '_' | ':' | ';' | '(' | ')' | '+' | '[' | ']' | '?' | '*' | '|') => {
                    out.push(c)
                }
                _ => return None,
            },
            '.' | '[' | ']' | '(' | ')' | '*' | '+' | '?' | '{' | '}' | '|' | '^' | '$' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Headers that mark a request the browser made on speculation, not for a person.
pub fn is_prefetch<'a>(header: impl Fn(&str) -> Option<&'a str>) -> bool {
    ["sec-purpose", "purpose", "x-purpose", "x-moz"]
        .into_iter()
        .any(|name| header(name).is_some_and(purpose_is_prefetch))
}

/// Whether a `Sec-Purpose`/`Purpose`-style value announces a prefetch, prerender or
/// preview (case-insensitive). Also applied to the `purpose` field of imported events.
pub fn purpose_is_prefetch(value: &str) -> bool {
    let contains = |word: &str| value.as_bytes().windows(word.len()).any(|w| w.eq_ignore_ascii_case(word.as_bytes()));
    contains("prefetch") || contains("prerender") || contains("preview")
}

/// The first general-invalid-traffic signal of a request, in rule order.
pub fn givt_verdict(is_bot: bool, is_prefetch: bool, from_datacenter: bool) -> Option<Verdict> {
    if is_bot {
        Some(Verdict::Bot)
    } else if is_prefetch {
        Some(Verdict::Prefetch)
    } else if from_datacenter {
        Some(Verdict::Datacenter)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_recognised() {
        assert_eq!(unescape_literal(r"Googlebot\/"), Some("Googlebot/".into()));
        assert_eq!(unescape_literal(r"^curl"), None);
        assert_eq!(unescape_literal(r"[wW]get"), None);
    }

    #[test]
    fn well_known_agents() {
        let c = UserAgentClassifier::new();
        let check = |ua: &str, bot: bool| assert_eq!(c.is_bot(ua), bot, "{ua}");
        check("", true);
        check("curl/8.5.0", true);
        check("python-requests/2.31.0", true);
        check("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", true);
        check("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36", true);
        check("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", false);
        check("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", false);
    }

    #[test]
    fn devices() {
        let c = UserAgentClassifier::new();
        assert_eq!(c.device("Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X)"), Device::Tablet);
        assert_eq!(c.device("Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari/537.36"), Device::Mobile);
        assert_eq!(c.device("Mozilla/5.0 (Linux; Android 13; SM-X200) Safari/537.36"), Device::Tablet);
        assert_eq!(c.device("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)"), Device::Desktop);
    }

    #[test]
    fn prefetch_headers() {
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        };
        assert!(is_prefetch(headers(&[("sec-purpose", "prefetch;prerender")])));
        assert!(is_prefetch(headers(&[("purpose", "prefetch")])));
        assert!(is_prefetch(headers(&[("x-moz", "prefetch")])));
        assert!(is_prefetch(headers(&[("purpose", "Prefetch")])));
        assert!(!is_prefetch(headers(&[("accept", "image/gif")])));
        assert!(!is_prefetch(headers(&[("sec-purpose", "")])));
    }
}

/// The labelled-corpus check: published bot and browser user agents, none written by us.
#[cfg(test)]
mod corpus {
    use super::*;

    const CRAWLERS: &str = include_str!("../../../../tests/data/bot-uas.txt");
    const MATOMO_BOTS: &str = include_str!("../../../../tests/data/matomo-bot-uas.txt");
    const BROWSERS: &str = include_str!("../../../../tests/data/browser-uas.txt");
    const BROWSER_DEVICES: &str = include_str!("../../../../tests/data/browser-uas-devices.tsv");

    fn share_flagged(c: &UserAgentClassifier, corpus: &str) -> (usize, usize, Vec<String>) {
        let agents: Vec<&str> = corpus.lines().filter(|l| !l.trim().is_empty()).collect();
        let flagged: Vec<&str> = agents.iter().copied().filter(|ua| c.is_bot(ua)).collect();
        let unflagged = agents.iter().filter(|ua| !c.is_bot(ua)).map(|s| s.to_string()).collect();
        (flagged.len(), agents.len(), unflagged)
    }

    #[test]
    fn bot_recall_and_browser_false_positives() {
        let c = UserAgentClassifier::new();
        let (hit, all, _) = share_flagged(&c, CRAWLERS);
        let (mhit, mall, missed) = share_flagged(&c, MATOMO_BOTS);
        let (fp, browsers, _) = share_flagged(&c, BROWSERS);
        let recall = hit as f64 * 100.0 / all as f64;
        let matomo_recall = mhit as f64 * 100.0 / mall as f64;
        let fp_rate = fp as f64 * 100.0 / browsers as f64;
        println!("crawler-user-agents recall: {hit}/{all} = {recall:.2}%");
        println!("matomo bots recall: {mhit}/{mall} = {matomo_recall:.2}%");
        println!("browser false positives: {fp}/{browsers} = {fp_rate:.2}%");
        for ua in missed.iter().take(30) {
            println!("missed: {ua}");
        }
        assert!(recall >= 98.0, "recall {recall:.2}%");
        assert!(matomo_recall >= 98.0, "matomo recall {matomo_recall:.2}%");
        assert!(fp_rate <= 0.5, "false positives {fp_rate:.2}%");
    }

    #[test]
    fn device_classes_match_the_published_labels() {
        let c = UserAgentClassifier::new();
        let (mut right, mut all) = (0, 0);
        for line in BROWSER_DEVICES.lines().filter(|l| !l.starts_with('#')) {
            let Some((label, ua)) = line.split_once('\t') else {
                continue;
            };
            all += 1;
            if c.device(ua).as_str() == label {
                right += 1;
            }
        }
        let accuracy = right as f64 * 100.0 / all as f64;
        println!("device accuracy: {right}/{all} = {accuracy:.2}%");
        assert!(accuracy >= 97.0, "device accuracy {accuracy:.2}%");
    }
}
