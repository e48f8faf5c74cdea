#!/usr/bin/env bash
# Compare otapack delta packages with other binary-diff tools on the firmware pairs in
# testdata/firmware/. Writes benches/compare/results.md. See benches/compare/README.md.
#
#   bash benches/compare/run.sh
#
# Installs what it needs if missing (Debian: bsdiff xdelta3 zstd time; PyPI: detools and
# hdiffpatch, HDiffPatch's Python wrapper, into benches/compare/.venv), builds otapack
# (release), then for every pair and tool measures patch size, diff wall time, apply wall time
# and apply peak RSS, and checks the applied output byte for byte against the new image.
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
FW=$ROOT/testdata/firmware
KEYS=$ROOT/testdata/keys
WORK=$HERE/work
VENV=$HERE/.venv
RESULTS=$HERE/results.md
DETOOLS_VERSION=0.53.0
T_START=$EPOCHREALTIME

log() { printf '[compare] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- 1. peers
need_apt=()
command -v bsdiff >/dev/null && command -v bspatch >/dev/null || need_apt+=(bsdiff)
command -v xdelta3 >/dev/null || need_apt+=(xdelta3)
command -v zstd >/dev/null || need_apt+=(zstd)
if ! { [ -x /usr/bin/time ] && /usr/bin/time --version 2>&1 | grep -q 'GNU'; }; then
    need_apt+=(time)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    log "installing Debian packages: ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

DETOOLS=$VENV/bin/detools
HDIFF=("$VENV/bin/python" "$HERE/hdiff.py")
if ! { [ -x "$DETOOLS" ] && [ "$("$DETOOLS" --version 2>/dev/null)" = "$DETOOLS_VERSION" ] &&
    "$VENV/bin/python" -c 'import hdiffpatch' 2>/dev/null; }; then
    log "installing detools $DETOOLS_VERSION and hdiffpatch into $VENV"
    if python3 -m venv "$VENV" 2>/dev/null; then
        "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
    else
        log "python3 -m venv failed; falling back to pip install --user"
        python3 -m pip install -q --user --disable-pip-version-check -r "$HERE/requirements.txt"
        DETOOLS=$(python3 -m site --user-base)/bin/detools
        HDIFF=(python3 "$HERE/hdiff.py")
    fi
fi

# ---------------------------------------------------------------- 2. otapack
log "building otapack (release)"
(cd "$ROOT" && cargo build --release -q -p otapack-cli)
OTAPACK=$ROOT/target/release/otapack

# ---------------------------------------------------------------- inputs (raw images)
rm -rf "$WORK"
mkdir -p "$WORK/in"
# OpenSBI: the peers get raw load images, like otapack does from an ELF. 0.9 has no .bin in
# testdata, so take its PT_LOAD image through otapack itself (full package, then apply). The
# same route on the 1.1 ELF must give the committed opensbi-1.1-generic-fw_jump.bin.
# Optional third argument: the address range to keep (--address-range).
elf_to_bin() {
    "$OTAPACK" build --new "$1" ${3:+--address-range "$3"} --software-version x --created 0 \
        -o "$WORK/in/elf.pkg" 2>/dev/null >/dev/null
    "$OTAPACK" apply "$WORK/in/elf.pkg" -o "$2" 2>/dev/null >/dev/null
    rm -f "$WORK/in/elf.pkg"
}
elf_to_bin "$FW/opensbi-0.9-generic-fw_jump.elf" "$WORK/in/opensbi-0.9-generic-fw_jump.bin"
elf_to_bin "$FW/opensbi-1.1-generic-fw_jump.elf" "$WORK/in/opensbi-1.1-from-elf.bin"
cmp -s "$WORK/in/opensbi-1.1-from-elf.bin" "$FW/opensbi-1.1-generic-fw_jump.bin" || {
    log "ELF extraction check failed: 1.1 ELF load image differs from opensbi-1.1-generic-fw_jump.bin"
    exit 1
}
# The other ELF and HEX inputs, the same way: TF-A's DRAM piece (its SRAM piece at 0xFF090000
# is a separate flash target), U-Boot's and s390-ccw's single PT_LOAD, and the nRF52 app range
# without the 24-byte version record the HEX files carry at 0x50000.
for v in 2.4 2.8; do
    elf_to_bin "$FW/tf-a-$v-rk3328-bl31.elf" "$WORK/in/tf-a-$v-rk3328-bl31.bin" 0x40000:0x80000
done
for v in 5 5+deb11u3; do
    elf_to_bin "$FW/u-boot-2021.01+dfsg-$v-qemu_arm64.elf" "$WORK/in/u-boot-$v.bin"
done
for v in 10.0.2 10.0.13; do
    elf_to_bin "$FW/qemu-$v-s390-ccw.img" "$WORK/in/qemu-$v-s390-ccw.bin"
done
for v in 4.1.1 4.1.2; do
    elf_to_bin "$FW/nrf52-connectivity-$v-usb-for-s132-5.1.0.hex" "$WORK/in/nrf52-connectivity-$v.bin" 0x23000:0x50000
done

# name|old|new
PAIRS=(
    "microbit-micropython 1.0.0 -> 1.0.1|$FW/microbit-micropython-1.0.0.bin|$FW/microbit-micropython-1.0.1.bin"
    "seabios 1.16.2 -> 1.16.3|$FW/seabios-1.16.2-bios.bin|$FW/seabios-1.16.3-bios.bin"
    "opensbi 0.9 -> 1.1 (fw_jump, raw load image)|$WORK/in/opensbi-0.9-generic-fw_jump.bin|$FW/opensbi-1.1-generic-fw_jump.bin"
    "ovmf 2022.11-6+deb12u1 -> u2 (OVMF_CODE_4M.fd, 3.5 MiB)|$FW/ovmf-2022.11-6+deb12u1-OVMF_CODE_4M.fd|$FW/ovmf-2022.11-6+deb12u2-OVMF_CODE_4M.fd"
    "ESP32 bootloader, IDF 6.1 snapshots (espflash 4.6.0 -> 4.7.0)|$FW/espflash-4.6.0-esp32-bootloader.bin|$FW/espflash-4.7.0-esp32-bootloader.bin"
    "ESP32-C3 bootloader, IDF 5.4.1 -> 5.5.1 (espflash 4.2.0 -> 4.3.0)|$FW/espflash-4.2.0-esp32c3-bootloader.bin|$FW/espflash-4.3.0-esp32c3-bootloader.bin"
    "nRF52840 connectivity app 4.1.1 -> 4.1.2|$WORK/in/nrf52-connectivity-4.1.1.bin|$WORK/in/nrf52-connectivity-4.1.2.bin"
    "ath9k-htc AR9271 Wi-Fi firmware 1.4.0-106 -> 108|$FW/ath9k-htc-9271-1.4.0-106.fw|$FW/ath9k-htc-9271-1.4.0-108.fw"
    "rtw88 RTL8822C Wi-Fi firmware 9.9.14 -> 9.9.15|$FW/rtw8822c-fw-9.9.14.bin|$FW/rtw8822c-fw-9.9.15.bin"
    "TF-A BL31 rk3328 2.4 -> 2.8 (ELF, DRAM piece)|$WORK/in/tf-a-2.4-rk3328-bl31.bin|$WORK/in/tf-a-2.8-rk3328-bl31.bin"
    "U-Boot 2021.01 qemu_arm64 deb11 -> deb11u3 (ELF)|$WORK/in/u-boot-5.bin|$WORK/in/u-boot-5+deb11u3.bin"
    "QEMU s390-ccw BIOS 10.0.2 -> 10.0.13 (ELF, s390x)|$WORK/in/qemu-10.0.2-s390-ccw.bin|$WORK/in/qemu-10.0.13-s390-ccw.bin"
    "SeaVGABIOS stdvga 1.16.2 -> 1.16.3|$FW/seabios-1.16.2-vgabios-stdvga.bin|$FW/seabios-1.16.3-vgabios-stdvga.bin"
)

# ---------------------------------------------------------------- tools
# Each tool: diff_<id> OLD NEW PATCH and apply_<id> OLD PATCH OUT set CMD to the command line
# (run directly under GNU time, so RSS and time are the tool's own, not a wrapper shell's).
# kind: otapack | peer | baseline (baseline ignores OLD).
TOOLS=(
    "otapack|otapack|otapack delta, defaults (64 KiB slices, settings fitted to 64 KiB device RAM, 16-byte segment links)"
    "otapack_fixed|otapack|otapack delta, --zstd-window 8KiB --segment-size 4KiB (fixed settings, the former defaults but with 16-byte links; 52-61 KB device RAM)"
    "otapack_wide|otapack|otapack delta, 32 KiB window, no segments (about 130-160 KB device RAM)"
    "bsdiff|peer|bsdiff 4.3 (bzip2)"
    "xdelta3|peer|xdelta3 -e -9 (secondary: lzma, its default)"
    "zstd_patch|peer|zstd -19 --patch-from"
    "hdiffpatch|peer|HDiffPatch (hdiffpatch 2.6.0 from PyPI), lzma2 level 9, 4 MiB dictionary"
    "detools_lzma|peer|detools -c lzma (sequential, bsdiff)"
    "detools_zstd|peer|detools -c zstd"
    "detools_heatshrink|peer|detools -c heatshrink"
    "zstd_alone|baseline|new image alone, zstd -19 (no delta)"
)

diff_otapack() {
    CMD=("$OTAPACK" build --old "$1" --new "$2" --software-version compare --created 0
        --key "$KEYS/test-ed25519.pem" -o "$3")
}
apply_otapack() { CMD=("$OTAPACK" apply "$2" --base "$1" --key "$KEYS/test-ed25519.pub.pem" -o "$3"); }
diff_otapack_wide() {
    CMD=("$OTAPACK" build --old "$1" --new "$2" --software-version compare --created 0
        --key "$KEYS/test-ed25519.pem" --zstd-window 32KiB --segment-size 0 -o "$3")
}
apply_otapack_wide() { apply_otapack "$@"; }
diff_otapack_fixed() {
    CMD=("$OTAPACK" build --old "$1" --new "$2" --software-version compare --created 0
        --key "$KEYS/test-ed25519.pem" --zstd-window 8KiB --segment-size 4KiB -o "$3")
}
apply_otapack_fixed() { apply_otapack "$@"; }
diff_bsdiff() { CMD=(bsdiff "$1" "$2" "$3"); }
apply_bsdiff() { CMD=(bspatch "$1" "$3" "$2"); }
diff_xdelta3() { CMD=(xdelta3 -e -9 -f -s "$1" "$2" "$3"); }
apply_xdelta3() { CMD=(xdelta3 -d -f -s "$1" "$2" "$3"); }
# Files here are < 1 MiB: zstd sizes the window to cover the whole reference by itself
# (no --long needed; it switches long mode on automatically when the chain log is too small).
diff_zstd_patch() { CMD=(zstd -q -f -19 --patch-from="$1" "$2" -o "$3"); }
apply_zstd_patch() { CMD=(zstd -q -f -d --patch-from="$1" "$2" -o "$3"); }
diff_hdiffpatch() { CMD=("${HDIFF[@]}" diff "$1" "$2" "$3"); }
apply_hdiffpatch() { CMD=("${HDIFF[@]}" apply "$1" "$2" "$3"); }
diff_detools_lzma() { CMD=("$DETOOLS" create_patch -c lzma "$1" "$2" "$3"); }
apply_detools_lzma() { CMD=("$DETOOLS" apply_patch "$1" "$2" "$3"); }
diff_detools_zstd() { CMD=("$DETOOLS" create_patch -c zstd "$1" "$2" "$3"); }
apply_detools_zstd() { apply_detools_lzma "$@"; }
diff_detools_heatshrink() { CMD=("$DETOOLS" create_patch -c heatshrink "$1" "$2" "$3"); }
apply_detools_heatshrink() { apply_detools_lzma "$@"; }
diff_zstd_alone() { CMD=(zstd -q -f -19 "$2" -o "$3"); }
apply_zstd_alone() { CMD=(zstd -q -f -d "$2" -o "$3"); }

# measure LOG cmd... : runs cmd under GNU time; sets M_RC, M_SECS (wall, ms resolution), M_RSS (KiB)
measure() {
    local logf=$1
    shift
    local t0=$EPOCHREALTIME t1
    M_RC=0
    /usr/bin/time -f '%M' -o "$logf.rss" "$@" >"$logf" 2>&1 || M_RC=$?
    t1=$EPOCHREALTIME
    M_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    M_RSS=$(tail -n1 "$logf.rss")
}

# ---------------------------------------------------------------- 3. run
TSV=$WORK/results.tsv
printf 'pair\ttool\tkind\tlabel\tpatch\told\tnew\tdiff_s\tapply_s\trss_kib\tstatus\tpayload\tmanifest\n' >"$TSV"
FAILURES=0
pi=0
for pair in "${PAIRS[@]}"; do
    IFS='|' read -r pname old new <<<"$pair"
    pi=$((pi + 1))
    old_bytes=$(stat -c %s "$old") new_bytes=$(stat -c %s "$new")
    for tool in "${TOOLS[@]}"; do
        IFS='|' read -r tid kind label <<<"$tool"
        d=$WORK/p$pi/$tid
        mkdir -p "$d"
        patch=$d/patch out=$d/out
        status=ok patch_bytes=- diff_s=- apply_s=- rss=- payload=- manifest=-
        "diff_$tid" "$old" "$new" "$patch"
        measure "$d/diff.log" "${CMD[@]}"
        diff_s=$M_SECS
        if [ "$M_RC" -ne 0 ] || [ ! -s "$patch" ]; then
            status="DIFF FAILED (exit $M_RC)"
            log "!!! $pname / $tid: diff failed, see $d/diff.log"
        else
            patch_bytes=$(stat -c %s "$patch")
            "apply_$tid" "$old" "$patch" "$out"
            measure "$d/apply.log" "${CMD[@]}"
            apply_s=$M_SECS rss=$M_RSS
            if [ "$M_RC" -ne 0 ]; then
                status="APPLY FAILED (exit $M_RC)"
                log "!!! $pname / $tid: apply failed, see $d/apply.log"
            elif ! cmp -s "$out" "$new"; then
                status="MISMATCH"
                log "!!! $pname / $tid: OUTPUT DIFFERS FROM THE NEW IMAGE ($out)"
            fi
            if [ "$kind" = otapack ]; then
                read -r payload manifest < <("$OTAPACK" inspect --json "$patch" | python3 -c \
                    'import json,sys; j=json.load(sys.stdin); print(j["payload_len"], j["manifest_len"])')
                payload=${payload:--} manifest=${manifest:--}
            fi
        fi
        [ "$status" = ok ] || FAILURES=$((FAILURES + 1))
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$pname" "$tid" "$kind" "$label" \
            "$patch_bytes" "$old_bytes" "$new_bytes" "$diff_s" "$apply_s" "$rss" "$status" "$payload" "$manifest" >>"$TSV"
        log "$(printf '%-45s %-20s %8s B  diff %6ss  apply %6ss  %6s KiB  %s' \
            "$pname" "$tid" "$patch_bytes" "$diff_s" "$apply_s" "$rss" "$status")"
    done
done

# ---------------------------------------------------------------- 4. report
VERSIONS=$WORK/versions.txt
{
    printf 'otapack\t%s (this tree, release build)\n' "$("$OTAPACK" --version)"
    printf 'bsdiff/bspatch\tDebian bsdiff %s\n' "$(dpkg-query -W -f '${Version}' bsdiff 2>/dev/null || echo '?')"
    printf 'xdelta3\t%s (Debian %s)\n' "$(xdelta3 -V 2>&1 | head -n1 | sed 's/,.*//')" \
        "$(dpkg-query -W -f '${Version}' xdelta3 2>/dev/null || echo '?')"
    printf 'zstd\t%s\n' "$(zstd --version | sed 's/^\*\*\* //; s/ \*\*\*$//; s/, by .*//')"
    printf 'detools\tdetools %s (PyPI; %s)\n' "$("$DETOOLS" --version)" \
        "$("$(dirname "$DETOOLS")/python" --version 2>&1 || python3 --version)"
    printf 'HDiffPatch\thdiffpatch %s (PyPI)\n' "$("${HDIFF[0]}" -c 'import importlib.metadata as m; print(m.version("hdiffpatch"))')"
    printf 'GNU time\t%s\n' "$(dpkg-query -W -f 'Debian time ${Version}' time 2>/dev/null || echo '?')"
} >"$VERSIONS"

ELAPSED=$(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
python3 - "$TSV" "$VERSIONS" "$RESULTS" "$ELAPSED" "$(nproc)" <<'PY'
import csv, math, sys, datetime
tsv, versions, out, elapsed, ncpu = sys.argv[1:6]
rows = list(csv.DictReader(open(tsv), delimiter="\t"))
vers = [l.rstrip("\n").split("\t", 1) for l in open(versions) if l.strip()]
pairs = list(dict.fromkeys(r["pair"] for r in rows))

def num(x):
    return None if x in ("-", "") else float(x)

# Add otapack payload-only pseudo rows right after each otapack row.
full = []
for r in rows:
    full.append(r)
    if r["kind"] == "otapack" and r["payload"] != "-":
        p = dict(r)
        p["tool"] = r["tool"] + "_payload"
        p["kind"] = "otapack_payload"
        p["label"] = "  ↳ same, payload only (no header/manifest/signature/trailer)"
        p["patch"] = r["payload"]
        p["diff_s"] = p["apply_s"] = p["rss_kib"] = "-"
        full.append(p)
rows = full
tools = list(dict.fromkeys(r["tool"] for r in rows))
label = {r["tool"]: r["label"] for r in rows}
kind = {r["tool"]: r["kind"] for r in rows}

L = []
L.append("# otapack delta vs other binary-diff tools")
L.append("")
L.append(f"Generated by `bash benches/compare/run.sh` on {datetime.date.today().isoformat()} "
         f"({ncpu} CPU cores; whole script incl. cargo build: {elapsed} s). "
         "Each measurement is a single run; wall times include process start-up "
         "(the Python interpreter for detools and HDiffPatch's wrapper, about 0.06-0.09 s) and are only rough. "
         "HDiffPatch's own diff time, inside the library, is in `work/p*/hdiffpatch/diff.log`. "
         "Apply peak RSS is the host process's maximum resident set (GNU time `%M`), "
         "not the RAM a device applier needs.")
L.append("")
L.append("otapack packages are signed (Ed25519 test key) and are applied with `otapack apply --base OLD --key PUB`, "
         "which verifies the signature, every slice and the image digest on a simulated flash. "
         "Peers produce raw patches without any of that.")
L.append("")
L.append("Tool versions: " + "; ".join(f"{k}: {v}" for k, v in vers) + ".")
L.append("")

bad = [r for r in rows if r["status"] != "ok"]
if bad:
    L.append("## ⚠️ FAILURES")
    L.append("")
    for r in bad:
        L.append(f"- **{r['pair']} / {r['tool']}: {r['status']}**")
    L.append("")

def fmt_int(x):
    return "—" if x is None else f"{int(x):,}"
def fmt_s(x):
    return "—" if x is None else f"{x:.3f}"

for p in pairs:
    pr = [r for r in rows if r["pair"] == p]
    newb = int(pr[0]["new"])
    L.append(f"## {p}")
    L.append("")
    L.append(f"Old image: {int(pr[0]['old']):,} bytes; new image: {newb:,} bytes.")
    L.append("")
    L.append("| tool | patch bytes | patch/new | diff s | apply s | apply peak RSS KiB | output correct |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in pr:
        pb = num(r["patch"])
        ratio = "—" if pb is None else f"{pb / newb:.4f}"
        if r["kind"] == "otapack_payload":
            ok = "(same package)"
        else:
            ok = "yes" if r["status"] == "ok" else f"**NO: {r['status']}**"
        name = f"`{r['tool']}` {r['label']}" if r["kind"] != "otapack_payload" else r["label"]
        L.append(f"| {name} | {fmt_int(pb)} | {ratio} | {fmt_s(num(r['diff_s']))} | "
                 f"{fmt_s(num(r['apply_s']))} | {fmt_int(num(r['rss_kib']))} | {ok} |")
    L.append("")
    ot = [r for r in pr if r["kind"] == "otapack" and r["payload"] != "-"]
    if ot:
        L.append("otapack package overhead (package − payload: fixed header, manifest with per-slice "
                 "SHA-256s, signature block, MD5 trailer): " +
                 "; ".join(f"`{r['tool']}` {int(r['patch']) - int(r['payload']):,} bytes "
                           f"(manifest {int(r['manifest']):,})" for r in ot) + ".")
        L.append("")

# Summary
L.append("## Summary over all pairs")
L.append("")
L.append("total ratio = Σ patch bytes / Σ new-image bytes; geomean = geometric mean of the per-pair "
         "patch/new ratios. \"× best peer\" divides by the best *peer* (bsdiff, xdelta3, zstd "
         "--patch-from, HDiffPatch, detools; not otapack, not the no-delta baseline) on that measure; < 1 means "
         "smaller than the best peer. A tool that failed or mismatched on any pair gets no summary figure.")
L.append("")
stats = {}
for t in tools:
    tr = [r for r in rows if r["tool"] == t]
    good = all(r["status"] == "ok" for r in tr) and len(tr) == len(pairs)
    if not good:
        stats[t] = None
        continue
    tp = sum(int(r["patch"]) for r in tr)
    tn = sum(int(r["new"]) for r in tr)
    gm = math.exp(sum(math.log(int(r["patch"]) / int(r["new"])) for r in tr) / len(tr))
    rss = [num(r["rss_kib"]) for r in tr if num(r["rss_kib"]) is not None]
    ap = [num(r["apply_s"]) for r in tr if num(r["apply_s"]) is not None]
    stats[t] = dict(tp=tp, tn=tn, total=tp / tn, gm=gm,
                    rss=max(rss) if rss else None, apply=sum(ap) if ap else None)
peers = [t for t in tools if kind[t] == "peer" and stats[t]]
best_total = min(peers, key=lambda t: stats[t]["total"]) if peers else None
best_gm = min(peers, key=lambda t: stats[t]["gm"]) if peers else None
L.append("| tool | Σ patch bytes | Σ new bytes | total ratio | × best peer (total) | geomean ratio | × best peer (geomean) | Σ apply s | max apply RSS KiB |")
L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for t in tools:
    s = stats[t]
    name = f"`{t}`" if kind[t] != "otapack_payload" else f"`{t}` (payload only)"
    if s is None:
        L.append(f"| {name} | **failed on some pair** | | | | | | | |")
        continue
    xt = f"{s['total'] / stats[best_total]['total']:.3f}" if best_total else "—"
    xg = f"{s['gm'] / stats[best_gm]['gm']:.3f}" if best_gm else "—"
    L.append(f"| {name} | {s['tp']:,} | {s['tn']:,} | {s['total']:.4f} | {xt} | {s['gm']:.4f} | {xg} | "
             f"{fmt_s(s['apply'])} | {fmt_int(s['rss'])} |")
L.append("")
if best_total:
    L.append(f"Best peer by total ratio: `{best_total}` ({stats[best_total]['total']:.4f}); "
             f"by geomean: `{best_gm}` ({stats[best_gm]['gm']:.4f}).")
    L.append("")
open(out, "w").write("\n".join(L).rstrip("\n") + "\n")
PY

log "wrote $RESULTS (${ELAPSED}s)"
if [ "$FAILURES" -gt 0 ]; then
    log "!!! $FAILURES tool run(s) FAILED or gave a WRONG OUTPUT: see the FAILURES section of $RESULTS"
    exit 1
fi
