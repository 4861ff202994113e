//! Who a user agent says it is: a bot (general invalid traffic, never charged), a browser
//! or web view that renders ads, an app's own HTTP stack, or some other client; and on
//! what kind of device.
//!
//! Two questions, kept apart:
//! - *Is it a bot?* Published, maintained lists decide: npm crawler-user-agents
//!   (`data/bot-patterns.txt`) and npm isbot (`data/bot-patterns-isbot.txt`); adtally adds
//!   only the empty agent and injection syntax (`<`, `${`). Neither list is matched
//!   against the device model, a browser's own product token with a bot word in it
//!   (`SearchBrowser/`) or an app's reverse-DNS id, because "Spider", "Bot", "Search",
//!   "google" and ".com" occur in those (`… Android 12; Spider X) …`).
//! - *What kind of client is it?* [`AgentClass`]; only [`AgentClass::Bot`] is invalid.
//!   The rule per class:
//!   - browsers (desktop, mobile, web views `; wv)`, in-app browsers, UC, QQ, Yandex,
//!     Sogou and other regional browsers, proxy browsers, feature-phone browsers on
//!     MIDP/CLDC, NetFront, MAUI, Obigo, connected-TV browsers): valid unless a list
//!     names them. isbot's shape-only patterns (`^[^ ]{50,}$`, `\b\w+/1\.0;` …) do not
//!     apply to them, except its contact-address pattern (`@[a-z][\w-]+\.`: no browser
//!     carries an e-mail address); feature-phone and TV browsers, whose agents are full
//!     of words like Java, Proxy or Google (WAP proxy), are judged by
//!     crawler-user-agents' named bots only;
//!   - apps' platform HTTP stacks (okhttp, CFNetwork, Dalvik …), which carry the beacons
//!     of natively drawn ads: valid, even though crawler-user-agents lists okhttp;
//!   - anything else is judged by both lists, shape patterns included: an agent that is
//!     only `Name/version` looks exactly like a script (curl, Go-http-client, scanners),
//!     and 7 points of bot recall depend on that rule. Apps that send such an agent are
//!     counted as bots — the measured cost is in BENCHMARKS.md;
//!   - what no list names is [`AgentClass::Other`]: valid.
//!
//! Device type comes from the agent's platform tokens first (iPad, iPhone, an iPad's Mac
//! agent with iOS tokens, Chrome OS and Android on Chromebooks, Windows touch, Kindle …),
//! then laptop product lines, the layout an app says it chose (Yandex's `/apad`), the
//! makers' tablet numbering ([`TABLET_NUMBERING`], Wi-Fi-only models) and npm
//! mobile-detect's brand and model rules (`data/device-models.txt`) for Android devices,
//! then the `Mobile` token (Chrome omits it on Android tablets).
//!
//! Verdicts are cached per distinct agent ([`UserAgentClassifier::classify`]); the cache is
//! bounded and emptied when full, so a flood of unique agents costs memory once.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use crate::event::Device;

const CRAWLER_PATTERNS: &str = include_str!("../../../../data/bot-patterns.txt");
const ISBOT_PATTERNS: &str = include_str!("../../../../data/bot-patterns-isbot.txt");
const DEVICE_MODELS: &str = include_str!("../../../../data/device-models.txt");

/// Distinct user agents whose verdict is remembered; the cache is emptied when full.
pub const CACHE_ENTRIES: usize = 50_000;

/// Longer agents are classified afresh each time rather than kept: a browser's is under
/// 512 bytes, and this bounds the cache at about 50 000 × 512 bytes.
const MAX_CACHED_LEN: usize = 512;

/// What kind of client sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgentClass {
    /// A crawler, spider, monitor, headless or scripted client named by a published list,
    /// an empty agent, or one carrying injection syntax. General invalid traffic: never
    /// counted, never charged.
    Bot,
    /// A browser, web view or in-app browser that renders ads.
    Browser,
    /// An app's platform HTTP stack (okhttp, CFNetwork, Dalvik …): the beacons of natively
    /// drawn ads. Valid.
    AppHttpStack,
    /// Not a bot on any list and not of a known shape. Valid: shape alone is no proof.
    Other,
}

impl AgentClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bot => "bot",
            Self::Browser => "browser",
            Self::AppHttpStack => "app_http_stack",
            Self::Other => "other",
        }
    }
}

/// The verdict on one user agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agent {
    pub class: AgentClass,
    pub device: Device,
}

impl Agent {
    pub fn is_bot(self) -> bool {
        self.class == AgentClass::Bot
    }
}

/// Platform HTTP stacks of mobile and desktop apps, matched at the start of the agent or
/// after an app's own `Name/version` token. The crawler list names okhttp as a bot; these
/// win over it, because an app that shows ads fires its beacons through exactly these.
const APP_STACKS: &[&str] =
    &["okhttp/", "dalvik/", "cfnetwork/", "androiddownloadmanager/", "cronet/", "nsurlsession", "darwin/"];

/// Markers of browsers that do not send the `Mozilla/5.0 (…)` shape: feature phones
/// (MIDP/CLDC Java phones, NetFront, MAUI, Obigo, Openwave), old proxy and phone browsers.
const BROWSER_MARKERS: &[&str] = &[
    "midp",
    "cldc",
    "netfront",
    "maui",
    "obigo",
    "up.browser",
    "openwave",
    "opera mini",
    "opera/",
    "ucweb",
    "ucbrowser",
    "dorado",
    "blackberry",
    "nokia",
    "sonyericsson",
    "samsung-",
    "kaios",
    "series40",
    "series60",
    "symbian",
    "docomo/",
    "brew",
    "teleca",
    "polaris",
    "mauibrowser",
];

/// Syntax no client sends but injection probes do (`<?php`, `${jndi:…}`, `<script>`).
/// adtally's only addition to the published lists.
const INJECTION_MARKERS: &[&str] = &["<", "${"];

/// Markers of browsers on feature phones and connected TVs. Their agents are full of
/// words that isbot's generic list reads as automation (Java, Proxy, Google WAP Proxy,
/// a TV's "Catcher" firmware), so only the named crawlers of crawler-user-agents judge
/// them: a crawler that poses as one of these still names itself there.
const DEVICE_BROWSER_MARKERS: &[&str] = &[
    "midp",
    "cldc",
    "maui",
    "mre/",
    "netfront",
    "up.browser",
    "obigo",
    "brew/",
    "wap browser",
    "ucweb",
    "ucmini",
    "ucbrowser",
    "bada/",
    "hbbtv",
    "smarttv",
    "smart-tv",
    "nettv",
    "ce-html",
    "googletv",
    "tizen",
    "web0s",
    "webos",
    "crkey",
];

/// Classifies user agents, caching the verdict per distinct agent.
#[derive(Debug)]
pub struct UserAgentClassifier {
    rules: Rules,
    /// Keyed by the agent itself, which the client chooses: std's keyed SipHash (not
    /// `fasthash`) so nobody can aim collisions at it, and the whole string compared so a
    /// bot cannot borrow a browser's verdict through a hash collision. The random hash
    /// key changes no verdict, only where entries sit.
    cache: Mutex<HashMap<Box<str>, Agent>>,
}

impl Default for UserAgentClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl UserAgentClassifier {
    pub fn new() -> Self {
        Self { rules: Rules::new(), cache: Mutex::new(HashMap::new()) }
    }

    /// The verdict on an agent, from the cache when this agent was seen before.
    pub fn classify(&self, user_agent: &str) -> Agent {
        if user_agent.len() > MAX_CACHED_LEN {
            return self.rules.classify(user_agent);
        }
        if let Some(&known) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(user_agent) {
            return known;
        }
        let verdict = self.rules.classify(user_agent);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(user_agent.into(), verdict);
        verdict
    }

    /// The verdict without touching the cache (benchmarks, evaluation).
    pub fn classify_uncached(&self, user_agent: &str) -> Agent {
        self.rules.classify(user_agent)
    }

    #[cfg(test)]
    pub(super) fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    #[cfg(test)]
    pub(super) fn rules_explain(&self, user_agent: &str) -> String {
        self.rules.explain(user_agent)
    }

    /// Whether the agent is a bot (invalid traffic), see [`AgentClass::Bot`].
    pub fn is_bot(&self, user_agent: &str) -> bool {
        self.classify(user_agent).is_bot()
    }

    /// The device class of the agent.
    pub fn device(&self, user_agent: &str) -> Device {
        self.classify(user_agent).device
    }
}

/// The compiled lists.
#[derive(Debug)]
struct Rules {
    /// crawler-user-agents literals (case-sensitive).
    crawler_literals: AhoCorasick,
    /// crawler-user-agents regexes (case-sensitive), one alternation.
    crawler_regex: Regex,
    /// isbot patterns without lookaround that name something, matched on the lower-cased
    /// agent.
    isbot: RegexSet,
    /// isbot patterns that judge by shape alone (`^[^ ]{50,}$`, `\b\w+/1\.0;` …): applied
    /// only to agents that do not have a browser's shape, which they were written for.
    isbot_shape: RegexSet,
    /// isbot patterns with lookaround, evaluated by [`Guarded`].
    isbot_guarded: Vec<Guarded>,
    app_stacks: AhoCorasick,
    browser_markers: AhoCorasick,
    device_browser_markers: AhoCorasick,
    injection: AhoCorasick,
    /// Platform and engine tokens that a real `Mozilla/…` agent names.
    platforms: AhoCorasick,
    /// "android" or UC's "Adr", before the device model.
    android_hint: AhoCorasick,
    /// The device model in an Android agent, to be masked before bot matching.
    android_model: Regex,
    /// A browser's own product token with a bot word in it (`SearchBrowser/1.2`) or an
    /// app's reverse-DNS id (`com.google.GooglePlus`, `air.com.example`), also masked.
    browser_token: Regex,
    tablets: RegexSet,
    phones: RegexSet,
    /// Words in an Android model name that make it a tablet (`… TAB 8`, `MediaPad`, `MID`).
    tablet_model: Regex,
    /// More makers' tablet numbering, matched on the model name without its `Build/…`
    /// (see [`TABLET_NUMBERING`]).
    tablet_numbering: Regex,
    /// Laptop and desktop product lines that run Android (or Android apps).
    computer_model: Regex,
}

impl Rules {
    fn new() -> Self {
        let mut literals = Vec::new();
        let mut regexes = Vec::new();
        for line in patterns(CRAWLER_PATTERNS) {
            match unescape_literal(line) {
                // An app's HTTP stack is not a crawler (see APP_STACKS).
                Some(literal) if literal.eq_ignore_ascii_case("okhttp") => {}
                Some(literal) => literals.push(literal),
                None => regexes.push(format!("(?:{line})")),
            }
        }
        let crawler_literals = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&literals)
            .unwrap_or_else(|e| panic!("bundled crawler literals are valid: {e}"));
        let crawler_regex = RegexBuilder::new(&regexes.join("|"))
            .size_limit(32 << 20)
            .build()
            .unwrap_or_else(|e| panic!("bundled crawler patterns are valid: {e}"));

        let mut plain = Vec::new();
        let mut shape = Vec::new();
        let mut isbot_guarded = Vec::new();
        for line in patterns(ISBOT_PATTERNS) {
            match Guarded::parse(line) {
                Some(g) => isbot_guarded.push(g),
                // isbot's contact-address pattern (`@[a-z][\w-]+\.`) names no word but an
                // address, which no browser sends: it judges browser-shaped agents too.
                None if names_nothing(line) && !line.starts_with('@') => shape.push(from_javascript(line)),
                None => plain.push(from_javascript(line)),
            }
        }
        let compile = |list: &[String]| {
            RegexSetBuilder::new(list)
                .size_limit(32 << 20)
                .build()
                .unwrap_or_else(|e| panic!("bundled isbot patterns are valid: {e}"))
        };
        let (isbot, isbot_shape) = (compile(&plain), compile(&shape));

        let mut tablets = Vec::new();
        let mut phones = Vec::new();
        for line in patterns(DEVICE_MODELS) {
            let mut cols = line.splitn(3, '\t');
            let (Some(kind), Some(_family), Some(regex)) = (cols.next(), cols.next(), cols.next()) else {
                continue;
            };
            match kind {
                "tablet" => tablets.push(regex.to_string()),
                "phone" => phones.push(regex.to_string()),
                _ => {}
            }
        }
        let set = |list: &[String]| {
            RegexSetBuilder::new(list)
                .case_insensitive(true)
                .size_limit(64 << 20)
                .build()
                .unwrap_or_else(|e| panic!("bundled device rules are valid: {e}"))
        };
        let ci = |words: &[&str]| {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .build(words)
                .unwrap_or_else(|e| panic!("word lists are valid: {e}"))
        };
        Self {
            crawler_literals,
            crawler_regex,
            isbot,
            isbot_shape,
            isbot_guarded,
            app_stacks: ci(APP_STACKS),
            browser_markers: ci(BROWSER_MARKERS),
            device_browser_markers: ci(DEVICE_BROWSER_MARKERS),
            injection: ci(INJECTION_MARKERS),
            platforms: ci(PLATFORMS),
            android_hint: ci(&["android", "adr "]),
            // After the version: an optional locale (`en-us`, `zh-Hans-CN`, `fil`) and
            // HarmonyOS's own token, then the model.
            android_model: regex(
                r"(?i)(?:android|adr)[ /]?[\d._]*(?:; *[a-z]{2,3}(?:[-_][a-z]{4})?(?:[-_][a-z]{2})? *)?(?:; *harmonyos)?; *([^;)]+)",
            ),
            browser_token: regex(
                r"\b(?:[A-Za-z]*(?:Search|Spider|Bot|Crawl|Sogou)[A-Za-z]*Browser/|SogouMSE\b|(?:com|net|org|air|io|tv|app|co|de|be|fr|uk|ru|cn|jp)\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+)",
            ),
            tablets: set(&tablets),
            phones: set(&phones),
            // Generic words, then the tablet numbering of the big Android makers: Samsung
            // SM-T/SM-X/SM-P, Lenovo TB-, Huawei/Honor tablet series, Amazon KF….
            tablet_model: regex(concat!(
                // Words: Tab, Pad (not Coolpad, a phone maker), MID, Slide, with or
                // without a number glued on.
                r"(?i)(?:tab(?:\b|[ _-]?\d|_)|tablet|(?:^|[^l])pad(?:\b|\d|_)|\bmid\b|mid\d|^kf[a-z]{2,4}\b|\biplay|slide(?:\b|\d|_)|readboy",
                // Makers' tablet numbering: Samsung, Lenovo, BQ, Huawei/Honor, Alcatel
                // (8xxx/9xxx), Digma (…S1234PL), Prestigio (PMT), Irbis (TZ), Nokia T.
                r"|\bsm-[txp]\d{3}|\btb\d*-?[a-z]?\d{3}|\bbq-?[178]\d{3}",
                r"|^(?:ags\d?|bah\d?|kob\d?|scm|btv|cmr|mrx|dby\d?|bzd|bz[a-z]|hey\d?|jdn\d?|agr|krj\d?|gdi|bg[2o]|cpn|bach\d?|got|hdl|jms|mon|ndl\d?|tgr|web)-[a-z]",
                r"|^[89]\d{3}[a-z]?(?:\b|_)|\b[cnpst]s[178]\d{3}[a-z]{2}\b|\bpmt\d{4}|\btz\d{3}\b|\bnokia t\d{2}\b",
                r")"
            )),
            tablet_numbering: regex(&format!("(?i)(?:{})", TABLET_NUMBERING.join("|"))),
            computer_model: regex(
                r"(?i)\b(?:inspiron|latitude|vostro|optiplex|precision|aspire|travelmate|extensa|satellite|lifebook|thinkpad|thinkcentre|ideapad|ideacentre|pavilion|elitebook|probook|compaq|engage one|vivobook|zenbook|macbook|waydroid|bilimbook|remix mini|2in1)\b",
            ),
        }
    }

    fn classify(&self, user_agent: &str) -> Agent {
        let ua = user_agent.trim();
        // The model is found once (the regex with captures is the costliest step) and
        // serves both the device type and the masking of bot words.
        let models = self.android_models(ua);
        let device = self.device(ua, &models);
        Agent { class: self.class(ua, &models), device }
    }

    /// Where the device model sits in an Android agent, every occurrence (an app may
    /// repeat the platform); empty for agents that do not name Android.
    fn android_models(&self, ua: &str) -> Vec<Range<usize>> {
        if !self.android_hint.is_match(ua) {
            return Vec::new();
        }
        self.android_model.captures_iter(ua).filter_map(|c| c.get(1)).map(|m| m.range()).collect()
    }

    fn class(&self, ua: &str, models: &[Range<usize>]) -> AgentClass {
        if ua.is_empty() || self.injection.is_match(ua) {
            return AgentClass::Bot;
        }
        let masked = self.mask(ua, models);
        if self.crawler_literals.is_match(masked.as_str()) || self.crawler_regex.is_match(&masked) {
            return AgentClass::Bot;
        }
        if self.is_app_stack(ua) {
            return AgentClass::AppHttpStack;
        }
        if self.device_browser_markers.is_match(ua) {
            return AgentClass::Browser;
        }
        let lower = masked.to_ascii_lowercase();
        if self.isbot.is_match(&lower) || self.isbot_guarded.iter().any(|g| g.is_match(&lower)) {
            return AgentClass::Bot;
        }
        let browser = self.is_browser_shaped(ua) || self.browser_markers.is_match(ua);
        if browser {
            AgentClass::Browser
        } else if self.isbot_shape.is_match(&lower) {
            AgentClass::Bot
        } else {
            AgentClass::Other
        }
    }

    /// The agent with its device model, a browser's own `…Browser/` token and an app's
    /// reverse-DNS id replaced by neutral words, so that bot words inside them (Spider,
    /// Bot, Search, google, .com …) do not count. A URL's host is never reverse-DNS
    /// (`www.google.com/bot.html` keeps its words).
    fn mask(&self, ua: &str, models: &[Range<usize>]) -> String {
        let mut out = String::with_capacity(ua.len());
        let mut last = 0;
        for m in models {
            // A bot may name itself where the model goes: keep a model token with a URL.
            if ua[m.clone()].contains("http") {
                continue;
            }
            out.push_str(&ua[last..m.start]);
            out.push_str("model");
            last = m.end;
        }
        out.push_str(&ua[last..]);
        self.browser_token
            .replace_all(&out, |c: &regex::Captures| if c[0].ends_with('/') { "Browser/" } else { "app.id" })
            .into_owned()
    }

    /// Which list made an agent a bot (for tuning).
    #[cfg(test)]
    pub(super) fn explain(&self, ua: &str) -> String {
        let ua = ua.trim();
        let masked = self.mask(ua, &self.android_models(ua));
        let lower = masked.to_ascii_lowercase();
        if let Some(m) = self.crawler_literals.find(masked.as_str()) {
            return format!("crawler literal {:?}", &masked[m.start()..m.end()]);
        }
        if let Some(m) = self.crawler_regex.find(&masked) {
            return format!("crawler regex {:?}", m.as_str());
        }
        let set: Vec<usize> = self.isbot.matches(&lower).into_iter().collect();
        if let Some(&i) = set.first() {
            return format!("isbot {:?}", self.isbot.patterns()[i]);
        }
        for g in &self.isbot_guarded {
            if g.is_match(&lower) {
                return format!("isbot guarded {:?}", g.core.as_str());
            }
        }
        String::new()
    }

    /// `Mozilla/N.N (…` or `Opera/…` naming a platform or an engine, also with the
    /// punctuation a proxy stripped (`Mozilla/5.0 Linux; Android …`).
    fn is_browser_shaped(&self, ua: &str) -> bool {
        let head = ua.get(..8).unwrap_or("");
        (head.eq_ignore_ascii_case("mozilla/") || ua.starts_with("Opera/")) && self.platforms.is_match(ua)
    }

    fn is_app_stack(&self, ua: &str) -> bool {
        self.app_stacks.find_iter(ua).any(|m| {
            // At the start, or right after an app's own `Name/version ` token.
            let before = &ua[..m.start()];
            before.is_empty() || before.ends_with(' ') && !before.contains('(') && before.split(' ').count() <= 3
        })
    }

    fn device(&self, ua: &str, models: &[Range<usize>]) -> Device {
        // Tokens are compared case-insensitively: some proxies and apps lower-case the
        // whole agent.
        let lower = ua.to_ascii_lowercase();
        let has = |s: &str| lower.contains(s);
        if has("ipad") {
            return Device::Tablet;
        }
        if has("iphone") || has("ipod") || has("windows phone") || has("windows mobile") || has("fbios") {
            return Device::Mobile;
        }
        // iPadOS asks for desktop pages with a Mac agent; in-app and third-party browsers
        // still give it away with their iOS tokens.
        if has("macintosh")
            && (has("mobile/") || has("crios/") || has("fxios/") || has("edgios/") || has("opt/") || has("gsa/"))
        {
            return Device::Tablet;
        }
        // Chromebooks, including Android apps and web views on Chrome OS.
        if has("cros ") || has("chromebook") || has("chromebox") {
            return Device::Desktop;
        }
        if has("windows nt") {
            // Windows 8+ tablets (Surface RT and touch convertibles in tablet mode).
            let touch = has("touch;") || has("touch)") || has("tablet pc") || has("; arm;");
            return if touch && !has("windows nt 6.1") { Device::Tablet } else { Device::Desktop };
        }
        let android = has("android") || has("adr ") || has("fb4a");
        if has("kindle") || has("silk/") || has("playbook") || has("tablet") && !has("tablet pc") {
            return Device::Tablet;
        }
        if android || has("linux; u;") || has("midp") {
            let model = match models.first() {
                Some(m) => &ua[m.clone()],
                // Agents without "android" or "adr " (`fb4a`, `Linux; U;`, MIDP).
                None if !self.android_hint.is_match(ua) => {
                    self.android_model.captures(ua).and_then(|c| c.get(1)).map_or("", |m| m.as_str())
                }
                None => "",
            };
            if self.computer_model.is_match(model) {
                return Device::Desktop;
            }
            // Yandex's apps name the layout they chose for the screen, as Chrome does with
            // "Mobile": `YaSearchBrowser/24.42/apad`.
            if has("/apad") {
                return Device::Tablet;
            }
            // The model name alone, without the firmware build that follows it (or, where a
            // proxy stripped the parentheses, the engine).
            let end = ["Build/", "build/", " AppleWebKit/"].iter().filter_map(|b| model.find(b)).min();
            let name = end.map_or(model, |i| &model[..i]).trim();
            if self.tablets.is_match(ua) || self.tablet_model.is_match(model) || self.tablet_numbering.is_match(name) {
                return Device::Tablet;
            }
            let mobile_token = has("mobile") || has("mobi");
            if mobile_token || self.phones.is_match(ua) || !self.is_browser_shaped(ua) {
                return Device::Mobile;
            }
            // Chrome and its kin omit "Mobile" on Android tablets.
            return if android { Device::Tablet } else { Device::Mobile };
        }
        if has("mobi") || self.browser_markers.is_match(ua) || has("opera mini") {
            return Device::Mobile;
        }
        Device::Desktop
    }
}

/// Makers' tablet model numbering beyond [`Rules::tablet_model`], each alternative one
/// maker's convention (or a maker that sells only tablets), matched case-insensitively on
/// the Android model name without its `Build/…`. Learned from the tuning part's misses
/// only, and kept where it named at most one phone there (BENCHMARKS.md, issue 9).
const TABLET_NUMBERING: &[&str] = &[
    // Xiaomi and Redmi Pad: a date code, then `RP` (`23073RPBFL`, `2307BRPDCC`).
    r"^\d{4}[0-9a-z]rp[0-9a-z]{2,3}\b",
    // OPPO and OnePlus Pad (`OPD2304`).
    r"^opd\d{4}",
    // Digma: series letters, the screen size (1 = 10", 7, 8), three digits, two letters
    // (`TS7131MG`, `CS8205PG`, `WS1251PL`), also glued to the series name by `_`.
    r"(?:\b|_)[a-z]{2}[178]\d{3}[a-z]{2}\b",
    // LG G Pad (`LG-V530`, `LGT01`).
    r"\blg-?v[45]\d\d\b|\blgt0\d",
    // Huawei MediaPad X2 and MatePad T (`GEM-703L`, `Kobe3-L09`).
    r"^(?:gem|kobe\d?)-",
    // Children's tablets (`KIDS708`, `Kurio7S`, `… Kid`).
    r"\bkids?\b|kids?\d|kurio",
    // Acer Iconia One B1/B3 (`B1-780`).
    r"\bb[13]-[7-8a]\d\d",
    // Multilaser M7/M8/M9 (`M7-3G QUAD CORE`, `M7SQC_Plus`, `M9_Wifi`).
    r"^m[789](?:s|[-_ ](?:3g|4g|wifi|quad))",
    // RCA (`RC0734H`).
    r"^rc[019]\d{3}[a-z]\b",
    // Nomi C-series: C, then the screen size (`Nomi_C101044`).
    r"^nomi_c\d",
    // onn. (Walmart): nine-digit item numbers (`100015685-E`).
    r"^1000\d{5}",
    // Allview Viva (`Viva_H802_LTE`).
    r"^viva[_ ]?[hi]?\d",
    // HTC A100–A103.
    r"\bhtc a10\d",
    // Teclast M/P/T with a region suffix (`M40Plus_EEA`, `T40 PRO_ROW`).
    r"^[mpt]\d{2}[a-z_ ]*_(?:eea|row)\b",
    // Lenovo Phab and Tab V7 (`PB-6505M`).
    r"\bpb\d?-\d{4}",
    // ZTE K8x tablets (`K87CA`).
    r"\bk8\dc[a-z]\b",
    // Galaxy Note 8.0 without Samsung's prefix (`N5110`).
    r"\b(?:gt-)?n51[01]\d\b",
    // X-TIGI Hope and JOY.
    r"^hope\d|x_tigi_joy",
    // Tecno DroiPad (`TECNO P703`) and Infinix XPad (`Infinix X1101`).
    r"\btecno p7\d\d|\binfinix x11\d\d",
    // Wi-Fi-only models: no phone is (`Honor V6 Wi-Fi`, `M9_Wifi`), nor a Huawei or Honor
    // model whose code ends in W for WLAN (`BVE-W10`, `ROD-W19`, `XYAO-W00`).
    r"wi-?fi|^[a-z]{3,4}\d?-w\d{2}(?:hn)?\b",
    // "My First …" children's tablets of Lexibook and Clementoni (`MFC156FR`), Hometech
    // ALFA (`ALFA_10BS`), Mediacom SmartPad (`M-SP7xGO3G`, `M-MP9S4A3G`).
    r"^mfc\d|^alfa_\d|^m-(?:sp\d|mp[89])",
    // Makers that sell only tablets, and Ginzzu's GT tablets.
    r"^(?:numy|walpad|irulu|vankyo|toscido|hoozo|dragontouch|alldocube|teclast)|\bginzzu[ _]gt-",
];

/// Whether an isbot pattern names no word of three letters or more, i.e. judges by
/// shape alone.
fn names_nothing(pattern: &str) -> bool {
    let mut run = 0;
    let mut escaped = false;
    for c in pattern.chars() {
        if escaped {
            escaped = false;
            run = 0;
            continue;
        }
        if c == '\\' {
            escaped = true;
            run = 0;
        } else if c.is_ascii_alphabetic() {
            run += 1;
            if run >= 3 {
                return false;
            }
        } else {
            run = 0;
        }
    }
    true
}

/// Platform and engine tokens of real browsers' `Mozilla/…` agents.
const PLATFORMS: &[&str] = &[
    "windows",
    "macintosh",
    "mac os",
    "linux",
    "android",
    "iphone",
    "ipad",
    "ipod",
    "x11",
    "cros",
    "blackberry",
    "bb10",
    "symbian",
    "applewebkit",
    "gecko",
    "trident",
    "msie",
    "presto",
    "khtml",
    "mobile",
    "tablet",
    "compatible",
    "nintendo",
    "playstation",
    "xbox",
    "smart-tv",
    "smarttv",
    "tizen",
    "webos",
    "kaios",
    "j2me",
];

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("built-in pattern {pattern:?} is valid: {e}"))
}

/// A JavaScript regex in the `regex` crate's syntax: the one difference the lists use is
/// a `-` right after a class escape inside brackets (`[\w\d-.]`), a literal in JavaScript.
fn from_javascript(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    let (mut in_class, mut escaped, mut after_class_escape) = (false, false, false);
    for c in pattern.chars() {
        if escaped {
            escaped = false;
            after_class_escape = in_class && matches!(c, 'w' | 'W' | 'd' | 'D' | 's' | 'S');
            out.push(c);
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' => in_class = true,
            ']' => in_class = false,
            '-' if in_class && after_class_escape => {
                out.push_str("\\-");
                after_class_escape = false;
                continue;
            }
            _ => {}
        }
        after_class_escape = false;
        out.push(c);
    }
    out
}

/// The pattern lines of a bundled list: no blanks, no `#` comments.
fn patterns(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
}

/// An isbot pattern that uses lookaround, which the `regex` crate does not have:
/// `(?<!A|B)core(?!C)`, evaluated as matches of `core` not preceded by a literal A or B
/// and not followed by a match of C.
#[derive(Debug)]
struct Guarded {
    not_after: Vec<String>,
    core: Regex,
    not_before: Option<Regex>,
}

impl Guarded {
    /// `None` if the pattern has no lookaround (it goes to the plain set).
    fn parse(pattern: &str) -> Option<Self> {
        if !pattern.contains("(?<!") && !pattern.contains("(?!") {
            return None;
        }
        let mut rest = pattern;
        let mut not_after = Vec::new();
        if let Some(after) = rest.strip_prefix("(?<!") {
            let end = after.find(')').unwrap_or_else(|| panic!("isbot pattern {pattern:?}: unclosed lookbehind"));
            not_after = after[..end].split('|').map(str::to_string).collect();
            rest = &after[end + 1..];
        }
        let (core, not_before) = match rest.find("(?!") {
            Some(i) => {
                let ahead = rest[i + 3..]
                    .strip_suffix(')')
                    .unwrap_or_else(|| panic!("isbot pattern {pattern:?}: lookahead not at the end"));
                (&rest[..i], Some(regex(&format!("^(?:{})", from_javascript(ahead)))))
            }
            None => (rest, None),
        };
        Some(Self { not_after, core: regex(&from_javascript(core)), not_before })
    }

    fn is_match(&self, text: &str) -> bool {
        self.core.find_iter(text).any(|m| {
            let before = &text[..m.start()];
            !self.not_after.iter().any(|a| before.ends_with(a.as_str()))
                && !self.not_before.as_ref().is_some_and(|r| r.is_match(&text[m.end()..]))
        })
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
    fn lookaround_patterns_are_evaluated() {
        let g = Guarded::parse(r"(?<! cu)bots?(?:\b|_)").expect("guarded");
        assert!(g.is_match("mybot/1.0"));
        assert!(!g.is_match("mozilla/5.0 (x; cubot note 7)"));
        let g = Guarded::parse(r"(?<! channel/|google/)google(?!(?:wv|app|/google| pixel))").expect("guarded");
        assert!(g.is_match("google-extended"));
        assert!(!g.is_match("googleapp/1.0"));
        assert!(!g.is_match("google pixel 8"));
        assert!(Guarded::parse("crawl").is_none());
    }
}
