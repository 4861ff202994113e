#!/usr/bin/env bash
# Regenerates crates/adtally-server/assets/tag.min.js, the ad tag the server ships, from
# tag.js beside it. Run after every edit of tag.js and commit both: a unit test in
# crates/adtally-server/src/web.rs fails while the minified file is older than its source.
# Needs Node.js; terser is fetched by npx (the build itself needs neither).
set -euo pipefail
cd "$(dirname "$0")/../crates/adtally-server/assets"
hash=$(python3 -c '
import sys
h = 0xcbf29ce484222325
for b in open("tag.js", "rb").read():
    h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
print(f"{h:016x}")')
{
  echo "/*! adtally ad tag, minified from tag.js (fnv1a64 $hash); source and docs: tag.js */"
  npx --yes terser@5.51.2 tag.js --compress --mangle --comments false
} > tag.min.js.tmp
mv tag.min.js.tmp tag.min.js
echo "tag.min.js: $(wc -c < tag.min.js) bytes, $(gzip -9c tag.min.js | wc -c) gzipped"
