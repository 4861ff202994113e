#!/usr/bin/env bash
# Refreshes the data files compiled into adtally from their published packages:
#   data/bot-patterns.txt       <- npm crawler-user-agents
#   data/datacenter-ranges.txt  <- PyPI iporigin (see scripts/build_ranges.py), minus every
#                                  IANA special-purpose block (clipped, never kept)
# Needs npm, pip and python3. Bump the versions below, run, review the diff, commit.
set -euo pipefail
CRAWLER_UA_VERSION=${CRAWLER_UA_VERSION:-1.60.0}
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
    f.write("# Regenerate with scripts/refresh-data.sh; adtally's own additions live in crates/adtally-core/src/traffic.rs.\n")
    for e in entries:
        f.write(e["pattern"].replace("\n", " ") + "\n")
PY
mkdir -p pkgs && cd pkgs
pip download --no-deps "iporigin==$IPORIGIN_VERSION" -d . >/dev/null
mkdir -p "iporigin-$IPORIGIN_VERSION" && (cd "iporigin-$IPORIGIN_VERSION" && python3 -m zipfile -e ../iporigin-"$IPORIGIN_VERSION"-py3-none-any.whl .)
cd "$work"
cp "$root/scripts/build_ranges.py" .
python3 build_ranges.py --out "$root/data/datacenter-ranges.txt"
echo "refreshed data/bot-patterns.txt and data/datacenter-ranges.txt"
