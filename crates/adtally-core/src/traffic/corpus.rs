//! The labelled-corpus evaluation: published bot and browser user agents, none written by
//! us, each split once into a tuning part and a held-out part (`tests/data/build_corpora.py`,
//! fixed seed). Rules may be tuned by looking at the tuning part only; the targets are
//! asserted on the held-out part only, so the figures say how the classifier does on
//! agents nobody looked at while writing it.

use super::UserAgentClassifier;
use crate::event::Device;

/// Held-out targets (issue 9).
const MIN_BOT_RECALL: f64 = 99.5;
const MAX_BROWSER_FALSE_POSITIVES: f64 = 0.5;
const MIN_DEVICE_ACCURACY: f64 = 97.0;

/// Held-out figures still short of their target, with the floor they must not fall below
/// (the figure when the gap was recorded, rounded down). Each is explained in
/// BENCHMARKS.md; closing one means deleting its line. (corpus and figure, floor %)
const KNOWN_GAPS: &[(&str, f64)] = &[
    // Tablets whose agent says "Mobile" and whose model only Matomo's own (LGPL) device
    // list knows; mobile-detect (MIT) and the makers' numbering name a fraction of them.
    ("matomo: tablet accuracy", 90.0),
    // Apps that send only `Name/version` (podcast players, TV and desktop apps): isbot
    // judges that shape a script's, and bot recall depends on it (see BENCHMARKS.md).
    ("matomo: app false positives", 10.0),
    // Bots that look like a browser and are on neither published list.
    ("matomo bots: bot recall", 99.2),
];

struct Corpus {
    name: &'static str,
    tune: &'static str,
    holdout: &'static str,
}

const BOTS: &[Corpus] = &[
    Corpus {
        name: "crawler-user-agents",
        tune: include_str!("../../../../tests/data/bots-crawler.tune.tsv"),
        holdout: include_str!("../../../../tests/data/bots-crawler.holdout.tsv"),
    },
    Corpus {
        name: "matomo bots",
        tune: include_str!("../../../../tests/data/bots-matomo.tune.tsv"),
        holdout: include_str!("../../../../tests/data/bots-matomo.holdout.tsv"),
    },
];

const AGENTS: &[Corpus] = &[
    Corpus {
        name: "matomo",
        tune: include_str!("../../../../tests/data/agents-matomo.tune.tsv"),
        holdout: include_str!("../../../../tests/data/agents-matomo.holdout.tsv"),
    },
    Corpus {
        name: "user-agents",
        tune: include_str!("../../../../tests/data/agents-useragents.tune.tsv"),
        holdout: include_str!("../../../../tests/data/agents-useragents.holdout.tsv"),
    },
    Corpus {
        name: "top-user-agents",
        tune: include_str!("../../../../tests/data/agents-top.tune.tsv"),
        holdout: include_str!("../../../../tests/data/agents-top.holdout.tsv"),
    },
];

fn rows(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn pct(n: usize, of: usize) -> f64 {
    if of == 0 {
        100.0
    } else {
        n as f64 * 100.0 / of as f64
    }
}

/// One figure that must meet its target, for the report and the assertion.
struct Figure {
    what: String,
    value: f64,
    ok: bool,
}

/// Evaluates every corpus's `part` and prints the figures; with `show_misses`, also the
/// agents it got wrong (only ever used on the tuning part).
fn evaluate(part: fn(&Corpus) -> &'static str, show_misses: bool) -> Vec<Figure> {
    let c = UserAgentClassifier::new();
    let mut figures = Vec::new();
    let mut misses: Vec<String> = Vec::new();
    for corpus in BOTS {
        let agents: Vec<&str> = rows(part(corpus)).collect();
        let missed: Vec<&str> = agents.iter().copied().filter(|ua| !c.classify_uncached(ua).is_bot()).collect();
        let recall = pct(agents.len() - missed.len(), agents.len());
        let what = format!("{}: bot recall {}/{}", corpus.name, agents.len() - missed.len(), agents.len());
        figures.push(Figure { what, value: recall, ok: recall >= MIN_BOT_RECALL });
        misses.extend(missed.iter().map(|ua| format!("missed bot ({}): {ua}", corpus.name)));
    }
    for corpus in AGENTS {
        // People's renderers: browsers (web views and in-app browsers included), and
        // apps, which Matomo labels "mobile app" — in-app browsers of social apps, but
        // also podcast players and TV apps that send only `Name/version`.
        let mut browsers = (0, 0);
        let mut apps = (0, 0);
        let mut devices = [(0usize, 0usize); 3];
        let mut others: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
        for row in rows(part(corpus)) {
            let mut cols = row.splitn(3, '\t');
            let (Some(label), Some(client), Some(ua)) = (cols.next(), cols.next(), cols.next()) else {
                continue;
            };
            let bot = c.classify_uncached(ua).is_bot();
            let tally = match client {
                "browser" => Some(&mut browsers),
                "mobile_app" => Some(&mut apps),
                _ => None,
            };
            match tally {
                Some(t) => {
                    t.1 += 1;
                    if bot {
                        t.0 += 1;
                        let why = c.rules_explain(ua);
                        misses.push(format!("browser flagged ({}, {client}) [{why}]: {ua}", corpus.name));
                    }
                }
                None => {
                    let e = others.entry(client).or_default();
                    e.0 += usize::from(bot);
                    e.1 += 1;
                }
            }
            if let Some(want) = Device::parse(label) {
                let got = c.classify_uncached(ua).device;
                let slot = &mut devices[want.code() as usize];
                slot.1 += 1;
                if got == want {
                    slot.0 += 1;
                } else {
                    misses.push(format!("device {} as {} ({}): {ua}", want.as_str(), got.as_str(), corpus.name));
                }
            }
        }
        for (what, (flagged, all)) in [("browser", browsers), ("app", apps)] {
            if all == 0 {
                continue;
            }
            let fp = pct(flagged, all);
            figures.push(Figure {
                what: format!("{}: {what} false positives {flagged}/{all}", corpus.name),
                value: fp,
                ok: fp <= MAX_BROWSER_FALSE_POSITIVES,
            });
        }
        for device in Device::ALL {
            let (right, all) = devices[device.code() as usize];
            if all == 0 {
                continue;
            }
            let accuracy = pct(right, all);
            figures.push(Figure {
                what: format!("{}: {} accuracy {right}/{all}", corpus.name, device.as_str()),
                value: accuracy,
                ok: accuracy >= MIN_DEVICE_ACCURACY,
            });
        }
        for (client, (flagged, all)) in others {
            // Not targets: feed readers, libraries, media players … reported for the record.
            println!("{}: {client} flagged as bots {flagged}/{all} = {:.2}%", corpus.name, pct(flagged, all));
        }
    }
    for f in &mut figures {
        let gap = KNOWN_GAPS.iter().find(|(name, _)| f.what.starts_with(name));
        let note = match gap {
            Some(_) if f.ok => "  (known gap closed: delete it from KNOWN_GAPS)",
            Some(&(_, floor)) => {
                // A known gap fails only when it grows past its recorded floor.
                f.ok = if f.what.contains("false positives") { f.value <= floor } else { f.value >= floor };
                if f.ok {
                    "  BELOW TARGET (known gap, see BENCHMARKS.md)"
                } else {
                    "  BELOW TARGET AND WORSE THAN ITS KNOWN-GAP FLOOR"
                }
            }
            None if f.ok => "",
            None => "  BELOW TARGET",
        };
        println!("{} = {:.2}%{note}", f.what, f.value);
    }
    if show_misses {
        for m in &misses {
            println!("{m}");
        }
    }
    figures
}

#[test]
fn held_out_figures_meet_the_targets() {
    let figures = evaluate(|c| c.holdout, false);
    assert!(figures.len() >= 12, "every corpus was read");
    let failed: Vec<&str> = figures.iter().filter(|f| !f.ok).map(|f| f.what.as_str()).collect();
    assert!(failed.is_empty(), "below target on held-out data: {failed:?}");
}

/// For tuning rules: the same figures on the tuning part, with every miss listed.
/// `cargo test -p adtally-core tuning_figures -- --ignored --nocapture`
#[test]
#[ignore]
fn tuning_figures() {
    evaluate(|c| c.tune, true);
}
