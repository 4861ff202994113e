#!/usr/bin/env python3
"""Builds the labelled user-agent corpora in tests/data/ from published packages and splits
each into a tuning part and a held-out part.

Run by `scripts/refresh-data.sh --corpora`, which downloads the packages; by hand:

    python3 tests/data/build_corpora.py --crawler DIR --matomo DIR --user-agents DIR --top DIR

Sources (none written by us):
  bots-crawler.*      npm crawler-user-agents: the `instances` of every pattern (MIT)
  bots-matomo.*       Matomo device-detector's bot fixtures, from the PyPI `device-detector`
                      port's tests/fixtures/upstream/bots.yml (LGPL-3.0; used as test data only)
  agents-matomo.*     the same fixtures' non-bot agents: device type, client type, agent
  agents-useragents.* npm user-agents (BSD-2-Clause): deviceCategory, agent
  agents-top.*        npm top-user-agents (MIT): desktop or mobile list, agent

The split is by a keyed hash of the agent string with a fixed seed, so an agent lands in
the same part in every corpus and in every refresh: nothing tuned on can leak into the
held-out part by being listed twice. HOLDOUT_PERCENT of each corpus is held out.
"""
import argparse
import glob
import hashlib
import json
import os
from pathlib import Path

import yaml

SEED = b"adtally-ua-split-2026-11"
HOLDOUT_PERCENT = 40
HERE = Path(__file__).resolve().parent

# Matomo device types -> adtally's three classes; the rest (tv, console, car browser,
# camera …) have no class of their own in adtally and are kept as "other".
DEVICE = {
    "desktop": "desktop",
    "smartphone": "mobile",
    "phablet": "mobile",
    "feature phone": "mobile",
    "tablet": "tablet",
}


def held_out(ua):
    digest = hashlib.sha256(SEED + ua.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HOLDOUT_PERCENT


def clean(ua):
    return ua.replace("\t", " ").replace("\r", " ").replace("\n", " ").strip()


def write(name, header, rows):
    """rows: list of tuples, the agent last; deduplicated on the whole row, sorted."""
    rows = sorted(set(rows))
    parts = {"tune": [], "holdout": []}
    for row in rows:
        parts["holdout" if held_out(row[-1]) else "tune"].append("\t".join(row))
    for part, lines in parts.items():
        path = HERE / f"{name}.{part}.tsv"
        path.write_text("".join(f"# {h}\n" for h in header) + "\n".join(lines) + "\n")
        print(f"{path.name}: {len(lines)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crawler", required=True, help="unpacked npm crawler-user-agents")
    ap.add_argument("--matomo", required=True, help="unpacked PyPI device-detector wheel")
    ap.add_argument("--user-agents", required=True, help="unpacked npm user-agents")
    ap.add_argument("--top", required=True, help="unpacked npm top-user-agents")
    ap.add_argument("--versions", default="", help="source versions, for the headers")
    a = ap.parse_args()
    split = f"split: sha256(seed || agent) with seed {SEED.decode()}, {HOLDOUT_PERCENT}% held out"

    entries = json.load(open(os.path.join(a.crawler, "crawler-user-agents.json")))
    bots = [(clean(i),) for e in entries for i in e.get("instances", []) if clean(i)]
    write("bots-crawler", [f"bot agents: npm crawler-user-agents instances {a.versions} (MIT)", split], bots)

    fixtures = os.path.join(a.matomo, "device_detector/tests/fixtures/upstream")
    with open(os.path.join(fixtures, "bots.yml")) as f:
        bots = [(clean(e["user_agent"]),) for e in yaml.load(f, Loader=yaml.CSafeLoader) if clean(e["user_agent"])]
    write("bots-matomo", ["bot agents: Matomo device-detector fixtures bots.yml via PyPI device-detector "
                          f"{a.versions} (LGPL-3.0, test data only)", split], bots)

    rows = []
    for path in sorted(glob.glob(os.path.join(fixtures, "*.yml"))):
        if os.path.basename(path) == "bots.yml":
            continue
        with open(path) as f:
            for e in yaml.load(f, Loader=yaml.CSafeLoader) or []:
                ua = clean(str(e.get("user_agent") or ""))
                if not ua:
                    continue
                device = (e.get("device") or {}).get("type") or ""
                client = e.get("client") if isinstance(e.get("client"), dict) else {}
                client_type = (client or {}).get("type") or "unknown"
                # A fixture with client-hint headers was labelled from headers the agent
                # does not carry (Sec-CH-UA-Model …): its device type is not the agent's.
                label = "hints" if e.get("headers") else DEVICE.get(device, "other")
                rows.append((label, client_type.replace(" ", "_"), ua))
    write("agents-matomo", [
        "device<TAB>client type<TAB>agent: Matomo device-detector fixtures (all but bots.yml) via PyPI "
        f"device-detector {a.versions} (LGPL-3.0, test data only)",
        "device: desktop|mobile|tablet|other (tv, console, car, camera …)|hints (labelled from client hints); client: browser, mobile_app, library …",
        split], rows)

    data = json.load(open(os.path.join(a.user_agents, "dist/user-agents.json")))
    rows = [(e["deviceCategory"], "browser", clean(e["userAgent"])) for e in data]
    write("agents-useragents", [f"device<TAB>client type<TAB>agent: npm user-agents {a.versions} (BSD-2-Clause, (c) Intoli)",
                                split], rows)

    rows = []
    for kind in ("desktop", "mobile"):
        for ua in json.load(open(os.path.join(a.top, f"src/{kind}.json"))):
            # The "mobile" list mixes phones and tablets, so it carries no device label.
            rows.append(("desktop" if kind == "desktop" else "other", "browser", clean(ua)))
    write("agents-top", [f"device<TAB>client type<TAB>agent: npm top-user-agents {a.versions} (MIT)", split], rows)


if __name__ == "__main__":
    main()
